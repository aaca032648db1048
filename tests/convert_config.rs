//! `rtpmidid convert-config` on a file in the C++ rtpmidid's format (tests/upstream/default.ini):
//! the result loads, and the daemon starts from it with its connections (loopback only).
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_rtpmidid");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/default.ini");

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().expect("run rtpmidid")
}

/// Ends the daemon even when the test fails.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_converted_file_starts_the_daemon() {
    let out = run(&["convert-config", FIXTURE]);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notes}");
    assert!(!notes.contains("[rawmidi]"), "{notes}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[rawmidi MIDI C4D0]"),
        "the device carries over"
    );

    let dir = std::env::temp_dir().join(format!("rtpmidid-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("rtpmidid.conf");
    std::fs::write(&conf, &out.stdout).unwrap();
    let sock = dir.join("control.sock");
    let port = (41000 + std::process::id() % 1000 * 2).to_string();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let _daemon = Daemon(
        Command::new(EXE)
            .args([
                "-c",
                &path(&conf),
                "--no-alsa",
                "--no-mdns",
                "-b",
                "127.0.0.1",
            ])
            .args(["-p", &port, "--control", &path(&sock)])
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    // Both [connect_to] sections are connections of the running daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    let peers = loop {
        let out = run(&["ctl", "--control", &path(&sock), "--json", "peers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in ["\"connection\":\"DeepMind12D\"", "\"connection\":\"midid\""] {
        assert!(peers.contains(name), "{name} missing: {peers}");
    }
    let status =
        String::from_utf8_lossy(&run(&["ctl", "--control", &path(&sock), "status"]).stdout)
            .into_owned();
    assert!(
        status.contains(&format!("config:      {}", path(&conf))),
        "{status}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
