//! The control socket and configuration reload as a user meets them: real daemons on loopback
//! (`--no-alsa --no-mdns`), driven through `rtpmidid ctl`. Every wait polls with a deadline.
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{free_ports, wait_for, Daemon, TempDir, BIN, DEADLINE};

struct Ctl {
    code: i32,
    out: String,
    err: String,
}

fn ctl(control: &Path, args: &[&str]) -> Ctl {
    let out = support::ctl(control, args);
    Ctl {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Daemon {
    fn ctl(&self, args: &[&str]) -> Ctl {
        ctl(&self.control, args)
    }

    /// `ctl --json peers`, as text.
    fn peers_json(&self) -> String {
        let c = self.ctl(&["--json", "peers"]);
        assert_eq!(c.code, 0, "{}", c.err);
        c.out
    }
}

/// The JSON objects of a `peers` answer, one string each (they hold no nested objects).
fn peer_objects(json: &str) -> Vec<String> {
    let list = json.split_once("\"peers\":[").map_or("", |(_, rest)| rest);
    list.split("},")
        .filter(|p| p.contains("\"id\""))
        .map(String::from)
        .collect()
}

fn field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let start = object.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &object[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The peer whose `key` is `value`, if it is connected.
fn connected<'a>(peers: &'a [String], key: &str, value: &str) -> Option<&'a String> {
    peers
        .iter()
        .find(|p| field(p, key) == Some(value) && field(p, "state") == Some("connected"))
}

#[test]
fn every_control_command_between_two_daemons() {
    let dir = TempDir::new("ctl");
    let a = Daemon::start(&dir.0, "Alpha", &[]);
    let b = Daemon::start(&dir.0, "Beta", &[]);

    // The socket is there for the owner and its group only.
    let mode = std::fs::metadata(&a.control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    let s = a.ctl(&["status"]);
    assert_eq!(s.code, 0, "{}", s.err);
    assert!(s.out.contains("name:        Alpha"), "{}", s.out);
    assert!(
        s.out.contains(&format!("port:        {}", a.port)),
        "{}",
        s.out
    );
    let s = a.ctl(&["--json", "status"]);
    assert!(
        s.out.starts_with("{\"ok\":true,\"name\":\"Alpha\""),
        "{}",
        s.out
    );
    assert!(s.out.contains("\"sessions\":0"), "{}", s.out);

    // connect HOST:PORT NAME, then both sides show the session.
    let target = format!("127.0.0.1:{}", b.port);
    let c = a.ctl(&["connect", &target, "beta"]);
    assert_eq!(
        (c.code, c.out.as_str()),
        (0, "connecting: beta\n"),
        "{}",
        c.err
    );
    let a_peer = wait_for("Alpha to connect to Beta", || {
        let peers = peer_objects(&a.peers_json());
        let p = connected(&peers, "name", "Beta")?;
        // Wait for the first clock sync too: it gives the latency.
        (field(p, "latency_ms") != Some("null")).then(|| p.clone())
    });
    assert_eq!(field(&a_peer, "connection"), Some("beta"));
    assert_eq!(field(&a_peer, "role"), Some("initiator"));
    assert_eq!(field(&a_peer, "address"), Some(target.as_str()));
    assert!(field(&a_peer, "sent").unwrap().parse::<u64>().unwrap() > 0);
    for key in ["received", "lost", "journal_repairs"] {
        assert!(field(&a_peer, key).unwrap().parse::<u64>().is_ok(), "{key}");
    }
    let b_peer = wait_for("Beta to see Alpha", || {
        connected(&peer_objects(&b.peers_json()), "name", "Alpha").cloned()
    });
    assert_eq!(field(&b_peer, "role"), Some("responder"));

    // The table.
    let t = a.ctl(&["peers"]);
    let lines: Vec<&str> = t.out.lines().collect();
    assert!(lines[0].starts_with("ID  NAME  ADDRESS"), "{}", t.out);
    assert!(
        lines[0].contains("LATENCY") && lines[0].contains("REPAIRS"),
        "{}",
        t.out
    );
    assert!(
        lines[1].contains("Beta") && lines[1].contains("connected") && lines[1].contains(" ms"),
        "{}",
        t.out
    );

    // Errors: non-zero exit and a message.
    let e = a.ctl(&["connect", &target, "beta"]);
    assert_eq!(e.code, 1);
    assert!(e.err.contains("exists already"), "{}", e.err);
    let e = a.ctl(&["export", "20:0"]);
    assert_eq!(e.code, 1);
    assert!(e.err.contains("runs without ALSA"), "{}", e.err);
    let e = a.ctl(&["--json", "export", "20:0"]);
    assert_eq!(e.code, 1);
    assert!(e.out.starts_with("{\"ok\":false,\"error\":"), "{}", e.out);
    let e = a.ctl(&["unexport", "20:0"]);
    assert!(
        e.code == 1 && e.err.contains("runs without ALSA"),
        "{}",
        e.err
    );
    // A bad ALSA port is a bad command line: refused before it is sent.
    let e = a.ctl(&["export", "synth"]);
    assert!(e.code == 2 && e.err.contains("bad ALSA port"), "{}", e.err);
    let e = a.ctl(&["disconnect", "999"]);
    assert!(
        e.code == 1 && e.err.contains("no session with id 999"),
        "{}",
        e.err
    );
    let e = a.ctl(&["frobnicate"]);
    assert_eq!(e.code, 2, "{}", e.err);
    let e = ctl(&dir.0.join("nothing.sock"), &["status"]);
    assert!(
        e.code == 1 && e.err.contains("cannot reach the daemon"),
        "{}",
        e.err
    );

    // disconnect NAME on the responder's side: Alpha's connection invites again, as a new
    // session.
    let old_id = field(&b_peer, "id").unwrap().to_string();
    let d = b.ctl(&["disconnect", "Alpha"]);
    assert_eq!(
        (d.code, d.out.as_str()),
        (0, "disconnected: Alpha\n"),
        "{}",
        d.err
    );
    wait_for("Alpha to come back as a new session", || {
        let peers = peer_objects(&b.peers_json());
        connected(&peers, "name", "Alpha").filter(|p| field(p, "id") != Some(&old_id))?;
        Some(())
    });

    // disconnect ID on the initiator's side ends the connection for good.
    let id = wait_for("Alpha's session id", || {
        let peers = peer_objects(&a.peers_json());
        connected(&peers, "name", "Beta").and_then(|p| field(p, "id").map(String::from))
    });
    let d = a.ctl(&["disconnect", &id]);
    assert_eq!(
        (d.code, d.out.as_str()),
        (0, "disconnected: beta\n"),
        "{}",
        d.err
    );
    wait_for("both sides to forget the session", || {
        (peer_objects(&a.peers_json()).is_empty() && peer_objects(&b.peers_json()).is_empty())
            .then_some(())
    });

    // An unnamed connection is named HOST:PORT; disconnect by that name.
    assert_eq!(
        a.ctl(&["connect", &target]).out,
        format!("connecting: {target}\n")
    );
    wait_for("the unnamed connection", || {
        connected(&peer_objects(&a.peers_json()), "connection", &target).map(|_| ())
    });
    assert_eq!(a.ctl(&["disconnect", &target]).code, 0);
    wait_for("the unnamed connection to end", || {
        peer_objects(&a.peers_json()).is_empty().then_some(())
    });
}

#[test]
fn bad_clients_do_not_stall_the_daemon() {
    let dir = TempDir::new("ctl-bad");
    let a = Daemon::start(&dir.0, "Alpha", &[]);
    let mut s = UnixStream::connect(&a.control).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"{\"cmd\":\n[1,2]\n{\"cmd\":\"nope\"}\n\n\"\\ud800\"\n")
        .unwrap();
    let mut answers = String::new();
    let mut buf = [0u8; 4096];
    while answers.lines().count() < 4 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {answers}");
        answers += std::str::from_utf8(&buf[..n]).unwrap();
    }
    let lines: Vec<&str> = answers.lines().collect();
    assert!(
        lines[0].starts_with("{\"ok\":false,\"error\":\"bad JSON"),
        "{answers}"
    );
    assert!(lines[1].contains("with a \\\"cmd\\\" string"), "{answers}");
    assert!(lines[2].contains("unknown cmd \\\"nope\\\""), "{answers}");
    assert!(lines[3].contains("bad JSON"), "{answers}");

    // A line over 64 KiB: an error, then the daemon hangs up.
    s.write_all(&vec![b'x'; 70_000]).unwrap();
    // Read to the end; the hang-up may come as a reset since the rest of the line is unread.
    let mut rest = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("request longer than 65536 bytes"), "{rest}");

    // A client that sends and never reads: the daemon keeps answering others, then drops it.
    let control = a.control.clone();
    let flooder = std::thread::spawn(move || {
        let mut s = UnixStream::connect(control).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        let request = b"{\"cmd\":\"status\"}\n".repeat(1000);
        for _ in 0..500 {
            if s.write_all(&request).is_err() {
                return true; // dropped by the daemon
            }
        }
        false
    });
    for _ in 0..5 {
        assert_eq!(a.ctl(&["status"]).code, 0);
    }
    assert!(
        flooder.join().unwrap(),
        "the daemon never dropped the flooding client"
    );
    assert!(a.log().contains("does not read its answers"));
    assert_eq!(a.ctl(&["status"]).code, 0);
}

fn write_config(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
}

#[test]
fn reload_keeps_untouched_sessions_and_refuses_broken_files() {
    let dir = TempDir::new("reload");
    let b = Daemon::start(&dir.0, "Beta", &[]);
    let c = Daemon::start(&dir.0, "Gamma", &[]);
    let conf = dir.0.join("rtpmidid.conf");
    let one = format!("[connect one]\nhost = 127.0.0.1\nport = {}\n", b.port);
    let two = format!("[connect two]\nhost = 127.0.0.1\nport = {}\n", c.port);
    write_config(&conf, &format!("[general]\nname = Alpha\n{one}"));
    let a = Daemon::start(&dir.0, "Alpha", &["-c", conf.to_str().unwrap()]);
    let id_one = wait_for("connection one", || {
        connected(&peer_objects(&a.peers_json()), "connection", "one")
            .and_then(|p| field(p, "id").map(String::from))
    });

    // Add a connection and switch the hub on.
    write_config(
        &conf,
        &format!("[general]\nname = Alpha\n[hub]\nenabled = yes\n{one}{two}"),
    );
    a.signal(Signal::SIGHUP);
    wait_for("connection two after SIGHUP", || {
        connected(&peer_objects(&a.peers_json()), "connection", "two").map(|_| ())
    });
    // The signal was seen (the file watch may have applied the change first).
    wait_for("SIGHUP in the log", || {
        a.log().contains("SIGHUP: configuration").then_some(())
    });
    let peers = peer_objects(&a.peers_json());
    assert_eq!(
        connected(&peers, "connection", "one").and_then(|p| field(p, "id")),
        Some(id_one.as_str()),
        "the untouched session was replaced: {peers:?}"
    );
    assert!(a.ctl(&["status"]).out.contains("hub:         true"));

    // A broken edit is refused; everything keeps running.
    write_config(
        &conf,
        &format!("[general]\nname = Alpha\n{one}{two}[connect three]\nhots = x\n"),
    );
    a.signal(Signal::SIGHUP);
    wait_for("the refusal in the log", || {
        let log = a.log();
        (log.contains("SIGHUP: configuration refused")
            && log.contains("rtpmidid.conf:10: unknown key \"hots\" in [connect three]"))
        .then_some(())
    });
    let peers = peer_objects(&a.peers_json());
    assert!(
        connected(&peers, "connection", "one").is_some(),
        "{peers:?}"
    );
    assert!(
        connected(&peers, "connection", "two").is_some(),
        "{peers:?}"
    );
    assert!(a.ctl(&["status"]).out.contains("hub:         true"));

    // Remove one and fix the file: saving it is enough (inotify), no signal needed.
    write_config(&conf, &format!("[general]\nname = Alpha\n{one}"));
    wait_for("connection two to go", || {
        let peers = peer_objects(&a.peers_json());
        (peers.len() == 1).then_some(())
    });
    let peers = peer_objects(&a.peers_json());
    assert_eq!(
        connected(&peers, "connection", "one").and_then(|p| field(p, "id")),
        Some(id_one.as_str())
    );
    assert!(a.ctl(&["status"]).out.contains("hub:         false"));
    wait_for("Gamma to see the session end", || {
        peer_objects(&c.peers_json()).is_empty().then_some(())
    });

    // An editor that saves by renaming a new file into place is seen too.
    let new = dir.0.join("rtpmidid.conf.new");
    write_config(&new, &format!("[general]\nname = Alpha\n{one}{two}"));
    std::fs::rename(&new, &conf).unwrap();
    wait_for("connection two after a rename", || {
        connected(&peer_objects(&a.peers_json()), "connection", "two").map(|_| ())
    });
    let peers = peer_objects(&a.peers_json());
    assert_eq!(
        connected(&peers, "connection", "one").and_then(|p| field(p, "id")),
        Some(id_one.as_str())
    );
}

/// `[listener NAME]` and `[connect]` keys from the file, on a real daemon: a peer connecting
/// to the listener's port meets a session named NAME there.
#[test]
fn a_listener_section_serves_sessions_under_its_name() {
    let dir = TempDir::new("listener");
    let conf = dir.0.join("rtpmidid.conf");
    let drums = free_ports(2);
    write_config(
        &conf,
        &format!("[general]\nkeep_connected = yes\nsysex_rate = 3125\n[listener Drums]\nport = {drums}\n"),
    );
    let a = Daemon::start(&dir.0, "Alpha", &["-c", conf.to_str().unwrap()]);
    let b = Daemon::start(&dir.0, "Beta", &[]);
    let c = b.ctl(&["connect", &format!("127.0.0.1:{drums}"), "drums"]);
    assert_eq!(c.code, 0, "{}", c.err);
    let b_peer = wait_for("Beta to connect to Drums", || {
        connected(&peer_objects(&b.peers_json()), "name", "Drums").cloned()
    });
    assert_eq!(field(&b_peer, "connection"), Some("drums"));
    // On Alpha the session lives on the listener: its id is "L.S".
    let a_peer = wait_for("Alpha to see Beta", || {
        connected(&peer_objects(&a.peers_json()), "name", "Beta").cloned()
    });
    assert!(field(&a_peer, "id").unwrap().contains('.'), "{a_peer}");
    assert!(a.log().contains("listening as \"Drums\""));
}

#[test]
fn a_broken_file_stops_the_start_with_file_and_line() {
    let dir = TempDir::new("badconf");
    let conf = dir.0.join("rtpmidid.conf");
    write_config(&conf, "[general]\nname = x\n\n# c\nprot = 5004\n");
    let out = Command::new(BIN)
        .args(["--no-alsa", "--no-mdns", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rtpmidid.conf:5: unknown key \"prot\" in [general]"),
        "{err}"
    );
    for (body, want) in [
        (
            "[listener l]\nport = 7000\nalsa_port = 20:0\n",
            "rtpmidid.conf:3: \"alsa_port\" in [listener l] is not supported yet",
        ),
        (
            "[general]\nexport_auto = usb\n",
            "rtpmidid.conf:2: bad value \"usb\" for \"export_auto\"",
        ),
    ] {
        write_config(&conf, body);
        let out = Command::new(BIN)
            .args(["--no-alsa", "--no-mdns", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let out = Command::new(BIN)
        .args(["--no-alsa", "--no-mdns", "-c"])
        .arg(dir.0.join("missing.conf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.conf: cannot read"));
    // A control socket asked for that cannot be made stops the start too.
    let out = Command::new(BIN)
        .args(["--no-alsa", "--no-mdns", "-b", "127.0.0.1", "-p"])
        .arg(free_ports(2).to_string())
        .args(["--control", "/proc/rtpmidid/control.sock"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot open the control socket /proc/rtpmidid"),
        "{err}"
    );
}

#[test]
fn ctl_help_and_usage_errors() {
    let out = Command::new(BIN).args(["ctl", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text.contains("disconnect ID|NAME") && text.contains("--json"),
        "{text}"
    );
    for args in [
        &["ctl"][..],
        &["ctl", "connect"],
        &["ctl", "--bogus", "status"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// A FIFO given as the file, at start or renamed into place on reload, is refused at once.
#[test]
fn a_fifo_as_the_file_does_not_hang_start_or_reload() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut child = Command::new(BIN)
        .args(["--no-alsa", "--no-mdns", "-c"])
        .arg(&fifo)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the start hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("fifo.conf: cannot read: a FIFO, not a regular file"),
        "{err}"
    );

    let conf = dir.0.join("rtpmidid.conf");
    write_config(&conf, "[general]\nname = Alpha\n");
    let a = Daemon::start(&dir.0, "Alpha", &["-c", conf.to_str().unwrap()]);
    std::fs::rename(&fifo, &conf).unwrap();
    a.signal(Signal::SIGHUP);
    wait_for("the refusal in the log", || {
        let log = a.log();
        (log.contains("configuration refused") && log.contains("a FIFO")).then_some(())
    });
    assert_eq!(a.ctl(&["status"]).code, 0, "the daemon still answers");
}

/// `rtpmidid ctl peers | head`: a reader that stops early is no error; `disconnect ''` is refused.
#[test]
fn ctl_survives_a_closed_pipe_and_refuses_an_empty_name() {
    let dir = TempDir::new("ctl-pipe");
    let a = Daemon::start(&dir.0, "Alpha", &[]);
    for command in ["peers", "status"] {
        let mut child = Command::new(BIN)
            .arg("ctl")
            .arg("--control")
            .arg(&a.control)
            .arg(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the answer comes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command}: {err}");
        assert!(!err.contains("panicked"), "{command}: {err}");
    }
    let e = a.ctl(&["disconnect", ""]);
    assert!(e.code == 2 && e.err.contains("empty name"), "{}", e.err);
    let mut s = UnixStream::connect(&a.control).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"{\"cmd\":\"disconnect\",\"name\":\"\"}\n")
        .unwrap();
    let mut answer = [0u8; 256];
    let n = s.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.contains("an empty name"), "{answer}");
}

#[test]
fn a_burst_longer_than_a_read_batch_is_read_whole() {
    // The daemon reads at most a batch (256) from one socket per turn. Stopped while a burst
    // queues, it must come back for the rest with no further datagram to wake it.
    const BURST: usize = 600;
    let dir = TempDir::new("ctl-burst");
    let a = Daemon::start(&dir.0, "burst", &["--no-midi2"]);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.signal(Signal::SIGSTOP);
    for _ in 0..BURST {
        sender.send_to(b"xx", ("127.0.0.1", a.port + 1)).unwrap();
    }
    a.signal(Signal::SIGCONT);
    let malformed = || {
        let status = a.ctl(&["--json", "status"]).out;
        field(&status, "malformed").and_then(|n| n.parse::<usize>().ok())
    };
    wait_for("every datagram of the burst counted", || {
        (malformed() == Some(BURST)).then_some(())
    });
}

#[test]
fn what_a_peer_sent_after_its_session_ended_is_late_not_unknown() {
    use protocol::wire::applemidi::{Command as Apple, End, Invitation};
    use protocol::wire::rtp;
    use support::udp_socket;

    let dir = TempDir::new("ctl-late");
    let a = Daemon::start(&dir.0, "late", &["--no-midi2"]);
    let ours = free_ports(2);
    let (control, data) = (udp_socket(ours), udp_socket(ours + 1));
    let (token, ssrc) = (0x1234_5678, 0xCAFE_0001);
    let send = |socket: &std::net::UdpSocket, to: u16, command: Apple<'_>| {
        let mut buf = [0u8; 64];
        let n = command.emit(&mut buf).unwrap();
        socket.send_to(&buf[..n], ("127.0.0.1", to)).unwrap();
    };
    // An RTP-MIDI packet with an empty command section, from our data port.
    let rtp_from = |ssrc: u32| {
        let mut buf = vec![0u8; rtp::HEADER_LEN + 1];
        let header = rtp::Header {
            marker: true,
            payload_type: rtp::PAYLOAD_TYPE_MIDI,
            sequence: 1,
            timestamp: 0,
            ssrc,
        };
        header.emit(&mut buf[..rtp::HEADER_LEN]).unwrap();
        data.send_to(&buf, ("127.0.0.1", a.port + 1)).unwrap();
    };
    let invitation = Invitation {
        token,
        ssrc,
        name: Some("raw"),
    };
    for (socket, to) in [(&control, a.port), (&data, a.port + 1)] {
        wait_for("an OK to our invitation", || {
            send(socket, to, Apple::Invitation(invitation));
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 128];
            let n = socket.recv(&mut buf).ok()?;
            matches!(Apple::parse(&buf[..n]), Ok(Apple::Accept(_))).then_some(())
        });
    }
    wait_for("the session from raw", || {
        a.peers().contains("raw").then_some(())
    });
    send(&control, a.port, Apple::End(End { token, ssrc }));
    wait_for("the session to end", || {
        (!a.peers().contains("raw")).then_some(())
    });
    let dropped = |key: &str| {
        let status = a.ctl(&["--json", "status"]).out;
        field(&status, key).and_then(|n| n.parse::<u64>().ok())
    };
    rtp_from(ssrc);
    wait_for("the late packet counted", || {
        (dropped("late") == Some(1)).then_some(())
    });
    assert_eq!(dropped("unknown_session"), Some(0));
    assert!(
        !a.log().contains("dropped"),
        "late, yet warned of: {}",
        a.log()
    );
    // Another SSRC from the same port is a stranger's.
    rtp_from(ssrc + 1);
    wait_for("the unknown packet counted", || {
        (dropped("unknown_session") == Some(1)).then_some(())
    });
    assert!(a.log().contains("UnknownSession"), "{}", a.log());
}
