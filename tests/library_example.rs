//! The protocol crate as another program embeds it: its `send_note` example, an AppleMIDI
//! participant over `std::net::UdpSocket`, invites a real daemon and plays a note, which the
//! daemon's log (MIDI is logged at trace level, `-vvv`) shows arriving.
mod support;

use std::process::Command;

use support::{send_note_example, wait_for, Daemon, TempDir};

#[test]
fn the_send_note_example_plays_a_note_to_the_daemon() {
    let example = send_note_example();
    let dir = TempDir::new("library-example");
    let daemon = Daemon::start(&dir.0, "Stage", &["-vvv"]);

    let out = Command::new(&example)
        .arg(format!("127.0.0.1:{}", daemon.port))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send_note failed: {stdout}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(stdout.contains("connected to \"Stage\""), "{stdout}");

    // Note on and off of middle C, then the example's goodbye.
    let expected = [
        "session opened: \"send_note\" at 127.0.0.1:",
        "MIDI from send_note: ShortMessage([90, 3C, 64])",
        "MIDI from send_note: ShortMessage([80, 3C, 64])",
        "session closed: send_note: PeerEnded",
    ];
    let log = wait_for("the note and the goodbye in the daemon's log", || {
        let log = daemon.log();
        expected
            .iter()
            .all(|line| log.contains(line))
            .then_some(log)
    });
    let at = |line: &str| log.find(line).unwrap();
    assert!(
        expected.windows(2).all(|pair| at(pair[0]) < at(pair[1])),
        "out of order:\n{log}"
    );
    assert!(!daemon.peers().contains("send_note"));
}
