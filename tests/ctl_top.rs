//! `rtpmidid ctl top` as a person sees it: in a real terminal (tmux, read back with
//! `capture-pane`), against a daemon with two sessions, one of them receiving notes; and its
//! plain output into a pipe.
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{send_note_example, wait_for, Daemon, TempDir, BIN};

/// A tmux server of our own (`-L`) with one window, so that the test neither sees nor disturbs
/// any other; the server goes with it.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// None when tmux is not installed (tests/setup-deps.sh installs it), unless
    /// `RTPMIDID_REQUIRE_TMUX` is set, as tests/run-all.sh does.
    fn start(command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("RTPMIDID_REQUIRE_TMUX").is_none(),
                "tmux is not installed, and RTPMIDID_REQUIRE_TMUX is set"
            );
            eprintln!("skipped: tmux is not installed (tests/setup-deps.sh installs it)");
            return None;
        }
        // Tests run in parallel: one server each.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tmux = Tmux {
            socket: format!("rtpmidid-top-{}-{n}", std::process::id()),
        };
        tmux.run(&["new-session", "-d", "-x", "160", "-y", "30", command]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen, trailing blank lines dropped.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"]).trim_end().to_string()
    }

    /// Whether the cursor is shown and whether the alternate screen is on.
    fn cursor_and_alternate(&self) -> (bool, bool) {
        let flags = self.run(&["display-message", "-p", "#{cursor_flag} #{alternate_on}"]);
        let mut flags = flags.split_whitespace().map(|f| f == "1");
        (flags.next() == Some(true), flags.next() == Some(true))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The cells of the row of the session named `name` in a `top` screen.
fn row<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&name))
}

/// RECEIVED and RECEIVED/S of session `name`, once it has a rate.
fn received(screen: &str, name: &str) -> Option<(u64, f64)> {
    let cells = row(screen, name)?;
    let count = cells.get(cells.len() - 5)?.parse().ok()?;
    let rate = cells.last()?.parse().ok()?;
    Some((count, rate))
}

/// Two daemons, B connected to A, and the send_note example playing to A for a while.
fn two_sessions(dir: &Path) -> (Daemon, Daemon, std::process::Child) {
    let example = send_note_example();
    let a = Daemon::start(dir, "Alpha", &[]);
    let target = format!("127.0.0.1:{}", a.port);
    let b = Daemon::start(dir, "Beta", &["-C", &target, "--keep-connected"]);
    wait_for("Beta's session with Alpha", || {
        a.peers().contains("Beta").then_some(())
    });
    // 400 notes, 100 ms apart: playing all through the test.
    let notes = Command::new(example)
        .args([&target, "400"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("send_note's session with Alpha", || {
        a.peers().contains("send_note").then_some(())
    });
    (a, b, notes)
}

struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn top_redraws_in_place_and_leaves_the_terminal_clean() {
    let dir = TempDir::new("ctl-top");
    let (a, _b, notes) = two_sessions(&dir.0);
    let _notes = Stop(notes);
    // Two runs in one pane: the first ended with q, the second, started by Enter once the
    // first one's leaving is checked, with Ctrl-C. The shell's trap keeps it alive through the
    // SIGINT (a trap, unlike an ignored signal, is reset for `top`).
    let top = format!(
        "{BIN} ctl --control {} top --interval 0.5",
        a.control.display()
    );
    let script = format!(
        "trap true INT; {top}; echo \"first top: $?\"; read go; {top}; echo \"second top: $?\"; exec sleep 120"
    );
    let Some(tmux) = Tmux::start(&format!("sh -c '{script}'")) else {
        return;
    };

    // The table, with Beta and the notes' sender, both rates going.
    let (count, rate) = wait_for("send_note's row with a rate", || {
        received(&tmux.screen(), "send_note").filter(|(_, rate)| *rate > 0.0)
    });
    let screen = tmux.screen();
    assert!(
        screen.starts_with("rtpmidid: 2 sessions, every 0.5 s"),
        "{screen}"
    );
    assert!(
        screen.contains("LATENCY") && screen.contains("RECEIVED/S"),
        "{screen}"
    );
    assert!(row(&screen, "Beta").is_some(), "{screen}");
    // Notes 100 ms apart, on and off in packets of their own: about 20 packets a second (loose
    // bounds: a loaded machine bunches them).
    assert!((2.0..=80.0).contains(&rate), "{rate} in\n{screen}");
    let later = wait_for("the count to go up", || {
        received(&tmux.screen(), "send_note").filter(|(c, _)| *c > count)
    });
    assert!(later.1 > 0.0);
    assert_eq!(tmux.cursor_and_alternate(), (false, true), "while running");

    // A smaller window: the frame is cut to it rather than scrolling or wrapping.
    tmux.run(&["resize-window", "-x", "40", "-y", "4"]);
    let screen = wait_for("a frame cut to the window", || {
        let s = tmux.screen();
        s.contains("more lines").then_some(s)
    });
    assert!(screen.starts_with("rtpmidid: 2 sessions"), "{screen}");
    assert_eq!(screen.lines().count(), 4, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 40), "{screen}");

    // q: the shell's screen comes back as it was (empty), the cursor shown.
    tmux.run(&["send-keys", "q"]);
    let screen = wait_for("the first top to end", || {
        let s = tmux.screen();
        s.contains("first top:").then_some(s)
    });
    assert_eq!(screen, "first top: 0");
    assert_eq!(tmux.cursor_and_alternate(), (true, false), "after q");

    // Ctrl-C, the same.
    tmux.run(&["send-keys", "Enter"]);
    wait_for("the second top", || {
        tmux.screen().contains("rtpmidid: 2 sessions").then_some(())
    });
    tmux.run(&["send-keys", "C-c"]);
    let screen = wait_for("the second top to end", || {
        let s = tmux.screen();
        s.contains("second top:").then_some(s)
    });
    // The blank line is the Enter that `read` echoed.
    assert_eq!(screen, "first top: 0\n\nsecond top: 0");
    assert_eq!(tmux.cursor_and_alternate(), (true, false), "after Ctrl-C");
}

#[test]
fn top_prints_plain_tables_into_a_pipe_until_sigterm() {
    let dir = TempDir::new("ctl-top-plain");
    let (a, _b, notes) = two_sessions(&dir.0);
    let _notes = Stop(notes);
    let mut top = Command::new(BIN)
        .args(["ctl", "--control"])
        .arg(&a.control)
        .args(["top", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(top.id() as i32), Signal::SIGTERM).unwrap();
    let mut out = String::new();
    top.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(top.wait().unwrap().success(), "{out}");
    assert!(!out.contains('\x1b'), "escapes in plain output: {out:?}");
    let tables = out.split("rtpmidid: 2 sessions, every 0.2 s\n").skip(1);
    let rates: Vec<Option<(u64, f64)>> = tables.map(|t| received(t, "send_note")).collect();
    assert!(rates.len() >= 4, "{out}");
    // The first table has no rate yet; the later ones have.
    assert_eq!(rates[0], None, "{out}");
    assert!(
        rates[1..]
            .iter()
            .all(|r| r.is_some_and(|(_, rate)| rate > 0.0)),
        "{out}"
    );

    // A wrong socket: an error at once, not an empty view.
    let wrong = Command::new(BIN)
        .args(["ctl", "--control"])
        .arg(dir.0.join("none.sock"))
        .arg("top")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("cannot reach the daemon"));
}

#[test]
fn ctrl_z_gives_the_shell_its_screen_until_fg() {
    let dir = TempDir::new("ctl-top-suspend");
    let daemon = Daemon::start(&dir.0, "Alpha", &[]);
    // An interactive shell, for job control.
    let Some(tmux) = Tmux::start("env PS1='$ ' bash --norc --noprofile -i") else {
        return;
    };
    let top = format!(
        "clear; {BIN} ctl --control {} top",
        daemon.control.display()
    );
    tmux.run(&["send-keys", "-l", &top]);
    tmux.run(&["send-keys", "Enter"]);
    let running = || tmux.screen().starts_with("rtpmidid: 0 sessions");
    wait_for("top", || running().then_some(()));
    assert_eq!(tmux.cursor_and_alternate(), (false, true));

    tmux.run(&["send-keys", "C-z"]);
    let screen = wait_for("the shell after Ctrl-Z", || {
        let s = tmux.screen();
        s.contains("Stopped").then_some(s)
    });
    assert!(!screen.contains("RECEIVED/S"), "{screen}");
    assert_eq!(tmux.cursor_and_alternate(), (true, false), "stopped");

    tmux.run(&["send-keys", "fg", "Enter"]);
    wait_for("top again", || running().then_some(()));
    assert_eq!(tmux.cursor_and_alternate(), (false, true), "after fg");
    // Keys are read again: q ends it.
    tmux.run(&["send-keys", "q"]);
    wait_for("the shell after q", || {
        (tmux.cursor_and_alternate() == (true, false)).then_some(())
    });
    assert!(!tmux.screen().contains("RECEIVED/S"));
}
