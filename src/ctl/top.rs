//! `rtpmidid ctl top`: the `peers` table with packet rates, asked for again every interval.
//!
//! On a terminal the table is redrawn in place on the alternate screen with the cursor hidden,
//! and `q`, Ctrl-C, SIGTERM or SIGHUP put the terminal back as it was (Ctrl-Z too, until `fg`).
//! Elsewhere (a pipe, a file) each refresh prints a plain table, without escapes, after a blank
//! line.
use std::collections::HashMap;
use std::io::{self, ErrorKind, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use super::client::exchange;
use super::proto::{self, PeerId, PeerRow, Reply, Request, PEER_HEADER};

/// Alternate screen and hidden cursor, then back: the shell's screen comes back untouched.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor to the top left; clear to the end of the line; clear to the end of the screen.
const HOME: &str = "\x1b[H";
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_DOWN: &str = "\x1b[J";

/// Signals that end the view, SIGTSTP (Ctrl-Z) that stops it, SIGWINCH that redraws it.
const SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGTSTP,
    Signal::SIGWINCH,
];

/// `rtpmidid ctl top`: 0 when ended by `q` or a signal, 1 when the daemon cannot be asked at
/// the start (a wrong `--control`); later failures are shown and asked again, so the view
/// outlives a daemon restart.
pub fn run(control: &Path, every: Duration) -> ExitCode {
    let mut rates = Rates::default();
    let first = match peers(control) {
        Ok(rows) => rates.frame(&rows, every, Instant::now()),
        Err(e) => {
            eprintln!("rtpmidid ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match watch(control, every, rates, first) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped (`ctl top | head`) had what it wanted.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpmidid ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn watch(control: &Path, every: Duration, mut rates: Rates, first: String) -> io::Result<()> {
    // Blocked, the signals arrive only through the descriptor, between two refreshes, so the
    // screen is restored by `Screen::drop` rather than left behind by a default handler.
    let mask: SigSet = SIGNALS.into_iter().collect();
    mask.thread_block()?;
    let signals = SignalFd::new(&mask)?;
    let mut screen = Screen::open()?;
    let mut frame = first;
    loop {
        screen.show(&frame)?;
        let next = Instant::now() + every;
        loop {
            match wait(&signals, screen.keys, next)? {
                Wake::Refresh => break,
                Wake::Quit => return Ok(()),
                Wake::Redraw => screen.redraw(&frame)?,
                Wake::Suspend => {
                    // The shell gets its screen and settings back while we are stopped, and
                    // `fg` brings the view back.
                    screen.leave();
                    signal::raise(Signal::SIGSTOP)?;
                    screen.enter()?;
                    screen.redraw(&frame)?;
                }
                Wake::Key => {
                    if let Some(b'q' | b'Q') = screen.read_key()? {
                        return Ok(());
                    }
                }
            }
        }
        let now = Instant::now();
        frame = match peers(control) {
            Ok(rows) => rates.frame(&rows, every, now),
            Err(e) => format!("{e}\n"),
        };
    }
}

fn peers(control: &Path) -> Result<Vec<PeerRow>, String> {
    let answer = exchange(control, &Request::Peers)?;
    match Reply::from_json(&Request::Peers, &answer) {
        Ok(Reply::Peers(rows)) => Ok(rows),
        Ok(Reply::Error(message)) => Err(message),
        Ok(_) => Err(format!("not a peers answer: {answer}")),
        Err(e) => Err(format!(
            "the daemon's answer is not understood ({e}): {answer}"
        )),
    }
}

enum Wake {
    Refresh,
    Quit,
    Suspend,
    Redraw,
    Key,
}

/// Sleeps until `next`, a signal, or a key when `keys`.
fn wait(signals: &SignalFd, keys: bool, next: Instant) -> io::Result<Wake> {
    let stdin = io::stdin();
    let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    if keys {
        fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
    }
    let left = next.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(Wake::Refresh);
    }
    // Rounded up: a timeout rounded down to 0 ms would spin until `next`.
    let timeout =
        PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(Wake::Refresh),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    if ready(&fds[0]) {
        let signal = signals.read_signal()?.map(|s| s.ssi_signo as i32);
        return Ok(match signal.and_then(|s| Signal::try_from(s).ok()) {
            Some(Signal::SIGTSTP) => Wake::Suspend,
            Some(Signal::SIGWINCH) | None => Wake::Redraw,
            Some(_) => Wake::Quit,
        });
    }
    Ok(if fds.get(1).is_some_and(ready) {
        Wake::Key
    } else {
        Wake::Refresh
    })
}

/// Where frames go: a terminal redrawn in place, or plain text.
struct Screen {
    terminal: bool,
    /// Whether keys are read from stdin: a terminal, until it ends.
    keys: bool,
    /// Stdin's settings to put back while we hold the terminal.
    saved: Option<Termios>,
}

impl Screen {
    fn open() -> io::Result<Screen> {
        let terminal = io::stdout().is_terminal();
        let mut screen = Screen {
            terminal,
            keys: terminal && io::stdin().is_terminal(),
            saved: None,
        };
        screen.enter()?;
        Ok(screen)
    }

    /// Takes the terminal: the alternate screen, the cursor hidden, keys one by one and
    /// unechoed (Ctrl-C and Ctrl-Z still raise their signals).
    fn enter(&mut self) -> io::Result<()> {
        if !self.terminal {
            return Ok(());
        }
        if self.keys {
            let stdin = io::stdin();
            let saved = termios::tcgetattr(stdin.as_fd())?;
            let mut raw = saved.clone();
            raw.local_flags
                .remove(LocalFlags::ICANON | LocalFlags::ECHO);
            raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
            raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
            self.saved = Some(saved);
        }
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()
    }

    /// Gives the terminal back as it was before [`Screen::enter`].
    fn leave(&mut self) {
        if self.terminal {
            let mut out = io::stdout().lock();
            let _ = out.write_all(LEAVE.as_bytes()).and_then(|()| out.flush());
        }
        if let Some(saved) = self.saved.take() {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &saved);
        }
    }

    fn show(&mut self, frame: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.terminal {
            let size = window_size().unwrap_or((usize::MAX, usize::MAX));
            out.write_all(draw(frame, size).as_bytes())?;
        } else {
            writeln!(out, "{frame}")?;
        }
        out.flush()
    }

    /// The same frame again on a terminal (after a resize or `fg`); plain output, a record of
    /// refreshes, has it already.
    fn redraw(&mut self, frame: &str) -> io::Result<()> {
        match self.terminal {
            true => self.show(frame),
            false => Ok(()),
        }
    }

    /// One key, or `None` at the end of input, after which keys are no longer read.
    fn read_key(&mut self) -> io::Result<Option<u8>> {
        let mut key = [0];
        match io::stdin().lock().read(&mut key)? {
            0 => {
                self.keys = false;
                Ok(None)
            }
            _ => Ok(Some(key[0])),
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The bytes that draw `frame` from the top left of a window of `rows` x `cols`. A frame
/// taller than the window would scroll it (and the next frame's home would no longer be its
/// top), so it is cut, and so are lines wider than the window, which would wrap. Each line is
/// cleared before it is written, the rows below the last one after it: what a longer line or a
/// session that is gone left there goes.
fn draw(frame: &str, (rows, cols): (usize, usize)) -> String {
    let mut lines: Vec<&str> = frame.lines().collect();
    let more;
    if lines.len() > rows {
        let shown = rows - 1;
        more = format!(
            "({} more lines: a taller window shows them)",
            lines.len() - shown
        );
        lines.truncate(shown);
        lines.push(&more);
    }
    let mut text = String::from(HOME);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            text += "\r\n";
        }
        text += CLEAR_LINE;
        text.extend(line.chars().take(cols));
    }
    if lines.len() < rows {
        text += "\r\n";
        text += CLEAR_DOWN;
    }
    text
}

/// The terminal's rows and columns, if stdout is one that knows them.
fn window_size() -> Option<(usize, usize)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which points to ours.
    let done = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (done && size.ws_row > 0 && size.ws_col > 0)
        .then(|| (usize::from(size.ws_row), usize::from(size.ws_col)))
}

/// Each session's counters at the last refresh, for packets per second since then.
#[derive(Default)]
struct Rates {
    last: HashMap<PeerId, (Instant, u64, u64)>,
}

impl Rates {
    /// A title line and the table, with the rates since the last frame (`-` for a session
    /// seen for the first time).
    fn frame(&mut self, rows: &[PeerRow], every: Duration, now: Instant) -> String {
        let mut last = HashMap::new();
        let header = PEER_HEADER.iter().chain(&["SENT/S", "RECEIVED/S"]);
        let mut table = vec![header.map(|h| h.to_string()).collect()];
        for row in rows {
            let mut cells = row.cells();
            let rates = row.id.and_then(|id| {
                last.insert(id, (now, row.sent, row.received));
                let (then, sent, received) = *self.last.get(&id)?;
                let seconds = now.duration_since(then).as_secs_f64();
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
                (seconds > 0.0).then(|| [rate(row.sent, sent), rate(row.received, received)])
            });
            match rates {
                Some(rates) => cells.extend(rates.map(|r| format!("{r:.1}"))),
                None => cells.extend(["-", "-"].map(String::from)),
            }
            table.push(cells);
        }
        self.last = last;
        let sessions = rows.iter().filter(|r| r.id.is_some()).count();
        format!(
            "rtpmidid: {sessions} session{}, every {:.1} s\n\n{}",
            if sessions == 1 { "" } else { "s" },
            every.as_secs_f64(),
            proto::table(table)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(session: u64, sent: u64, received: u64) -> PeerRow {
        PeerRow {
            id: Some(PeerId {
                listener: None,
                session,
            }),
            name: format!("peer{session}"),
            connection: None,
            address: "127.0.0.1:5004".into(),
            state: "connected".into(),
            role: "listener".into(),
            protocol: "rtp-midi".into(),
            latency: Some(Duration::from_micros(250)),
            sent,
            received,
            lost: 1,
            journal_repairs: 2,
        }
    }

    #[test]
    fn frames_fit_the_window() {
        let frame = "title\n\nheader\nrow one\nrow two\n";
        let k = CLEAR_LINE;
        assert_eq!(
            draw(frame, (10, 80)),
            format!(
                "{HOME}{k}title\r\n{k}\r\n{k}header\r\n{k}row one\r\n{k}row two\r\n{CLEAR_DOWN}"
            )
        );
        // Exactly as tall: nothing below to clear, and no newline that would scroll.
        assert!(draw(frame, (5, 80)).ends_with(&format!("{k}row two")));
        // Too short and too narrow: cut, with the count of lines left out.
        assert_eq!(
            draw(frame, (3, 4)),
            format!("{HOME}{k}titl\r\n{k}\r\n{k}(3 m")
        );
        assert!(draw(frame, (3, 80)).ends_with("(3 more lines: a taller window shows them)"));
    }

    #[test]
    fn rates_are_packets_per_second_between_frames() {
        let every = Duration::from_secs(1);
        let start = Instant::now();
        let mut rates = Rates::default();
        let first = rates.frame(&[row(1, 10, 20)], every, start);
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines[0], "rtpmidid: 1 session, every 1.0 s");
        assert!(lines[2].starts_with("ID  NAME") && lines[2].ends_with("SENT/S  RECEIVED/S"));
        assert!(
            lines[3].ends_with("20        1     2        -       -"),
            "{first}"
        );
        let later = start + Duration::from_secs(2);
        let second = rates.frame(&[row(1, 30, 21), row(2, 5, 5)], every, later);
        let lines: Vec<&str> = second.lines().collect();
        assert!(lines[3].ends_with("10.0    0.5"), "{second}");
        assert!(lines[4].ends_with("-       -"), "{second}");
        assert!(lines[0].contains("2 sessions"));
    }
}
