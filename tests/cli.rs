//! The binary's command line as a user meets it: help, version, errors and their exit codes.
use std::process::Command;

fn rtpmidid(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rtpmidid"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rtpmidid");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_and_version_exit_zero() {
    let (code, text) = rtpmidid(&["--help"]);
    assert_eq!(code, 0);
    for option in [
        "--connect",
        "--hub",
        "--no-alsa",
        "--no-mdns",
        "--port",
        "--bind",
    ] {
        assert!(text.contains(option), "help lacks {option}");
    }
    let (code, text) = rtpmidid(&["-V"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("rtpmidid "));
}

#[test]
fn bad_arguments_say_what_is_wrong_and_exit_2() {
    for (args, needle) in [
        (&["--port", "x"][..], "bad value \"x\" for --port"),
        (&["--frobnicate"][..], "frobnicate"),
        (&["-C", "nohostport"][..], "no :PORT"),
        (&["-b", "300.1.1.1"][..], "for --bind: not an IP address"),
    ] {
        let (code, text) = rtpmidid(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}

#[test]
fn without_a_sequencer_it_names_the_device_and_module() {
    if std::path::Path::new("/dev/snd/seq").exists() {
        return; // this check is about machines without ALSA; the VM tests cover the other case
    }
    let (code, text) = rtpmidid(&["--no-mdns", "-b", "127.0.0.1", "-p", "47000"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("/dev/snd/seq") && text.contains("snd-seq"),
        "{text}"
    );
}
