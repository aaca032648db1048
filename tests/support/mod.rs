//! What the daemon's integration tests share: a daemon on loopback (`--no-alsa --no-mdns`,
//! its log in a scratch folder, ended with SIGTERM when dropped), free ports, UDP sockets.
#![allow(dead_code)] // each test binary uses its own part of it
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protocol::midi::{MidiMessage, ShortMessage};

pub const BIN: &str = env!("CARGO_BIN_EXE_rtpmidid");
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A scratch folder removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("rtpmidid-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `count` adjacent free UDP ports on 127.0.0.1, the first even (each call starts further
/// up: tests run in parallel). A pair is left free above them: a daemon's listeners without a
/// port take the first free pair above its own, which must not be another test's. They lie
/// below the kernel's ephemeral range (32768 and up by default), where sockets bound to port
/// 0 land: such a socket could otherwise take one between this check and the daemon's bind,
/// or while a daemon has let a listener's ports go to open them again.
pub fn free_ports(count: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 300) as u16 * 32;
    loop {
        let port = base + NEXT.fetch_add(count.next_multiple_of(2) + 2, Ordering::SeqCst);
        if (0..count).all(|i| UdpSocket::bind(("127.0.0.1", port + i)).is_ok()) {
            return port;
        }
    }
}

/// A non-blocking UDP socket on 127.0.0.1:`port`.
pub fn udp_socket(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Polls `check` until it gives a value; panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn ctl(control: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(args)
        .output()
        .unwrap()
}

pub struct Daemon {
    child: Child,
    pub control: PathBuf,
    pub port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Named `name`, on a free port, with `extra` arguments; returns once it answers `status`.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Daemon {
        let port = free_ports(2);
        let control = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .args([
                "--no-alsa",
                "--no-mdns",
                "-v",
                "-b",
                "127.0.0.1",
                "-n",
                name,
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("--control")
            .arg(&control)
            .args(extra)
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            control,
            port,
            log,
        };
        wait_for("the control socket", || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("{name} exited with {status}: {}", d.log());
            }
            ctl(&d.control, &["status"]).status.success().then_some(())
        });
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ctl peers` as text.
    pub fn peers(&self) -> String {
        String::from_utf8_lossy(&ctl(&self.control, &["peers"]).stdout).into_owned()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then its exit status once it exits (killed after 5 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The protocol crate's `send_note` example, built if needed with the daemon's profile, so it
/// lands next to it in target/PROFILE/examples.
pub fn send_note_example() -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "rtpmidid-protocol",
            "--example",
            "send_note",
        ])
        .args(["--profile", profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --example send_note failed");
    dir.join("examples/send_note")
}

/// A channel or system message from its bytes.
pub fn short(bytes: &[u8]) -> MidiMessage {
    MidiMessage::Short(ShortMessage::from_bytes(bytes).unwrap())
}

/// A SysEx of `len` bytes on the wire, F0 and F7 included.
pub fn sysex(len: usize) -> MidiMessage {
    let mut bytes = vec![0xF0];
    bytes.extend((0..len - 2).map(|i| (i % 128) as u8));
    bytes.push(0xF7);
    MidiMessage::SysEx(bytes)
}
