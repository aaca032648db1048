//! What the harness talks to (the daemon or a baseline program) and the AppleMIDI sessions it
//! opens with them as initiator: IN on the control port, IN on the data port, one CK round.
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command as Cmd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{self, now_ns, Poller, Proc};
use crate::wire::{self, Command};

/// A running program to measure: its ports and its process.
pub struct Target {
    pub control: SocketAddr,
    pub data: SocketAddr,
    proc: Proc,
    socket_path: Option<PathBuf>,
}

impl Target {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The release daemon as a hub on loopback, ready once its control socket answers.
    pub fn daemon(cpu: Option<usize>) -> io::Result<Target> {
        let bin = std::env::var("RTPMIDID_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/rtpmidid").into()
        });
        let port = sys::free_port_pair()?;
        let path =
            std::env::temp_dir().join(format!("rtpmidid-bench-{}-{port}.sock", std::process::id()));
        let mut cmd = Cmd::new(&bin);
        // The rows open up to 1000 sessions from this one host: past the stage defaults.
        cmd.args([
            "-q",
            "--no-alsa",
            "--no-mdns",
            "--no-midi2",
            "--hub",
            "-b",
            "127.0.0.1",
        ])
        .args(["--max-sessions", "5000", "--max-sessions-per-host", "5000"])
        .args(["-n", "bench", "-p", &port.to_string(), "--control"])
        .arg(&path);
        let proc = Proc::spawn(cmd, cpu).map_err(|e| io::Error::other(format!("{bin}: {e}")))?;
        let target = Target {
            control: sys::addr(port),
            data: sys::addr(port + 1),
            proc,
            socket_path: Some(path.clone()),
        };
        for _ in 0..500 {
            if status_answers(&path) {
                return Ok(target);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::other(
            "the daemon did not answer on its control socket",
        ))
    }

    /// The null forwarder, sending on to `dests`; it has one port, for data.
    pub fn forwarder(cpu: Option<usize>, dests: &[u16]) -> io::Result<Target> {
        let mut cmd = Cmd::new(std::env::current_exe()?);
        cmd.arg("forward").args(dests.iter().map(u16::to_string));
        let mut target = Target::baseline(cmd, cpu)?;
        target.data = target.control;
        Ok(target)
    }

    /// The null AppleMIDI responder.
    pub fn responder(cpu: Option<usize>) -> io::Result<Target> {
        let mut cmd = Cmd::new(std::env::current_exe()?);
        cmd.arg("respond");
        Target::baseline(cmd, cpu)
    }

    fn baseline(cmd: Cmd, cpu: Option<usize>) -> io::Result<Target> {
        let mut proc = Proc::spawn(cmd, cpu)?;
        let port: u16 = proc
            .read_line()?
            .parse()
            .map_err(|_| io::Error::other("a baseline did not print its port"))?;
        Ok(Target {
            control: sys::addr(port),
            data: sys::addr(port + 1),
            proc,
            socket_path: None,
        })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn status_answers(path: &PathBuf) -> bool {
    let Ok(mut s) = UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    s.write_all(b"{\"cmd\":\"status\"}\n").is_ok()
        && BufReader::new(s).read_line(&mut line).is_ok()
        && line.contains("\"ok\":true")
}

/// One session of ours: its control and data sockets, token and SSRC.
pub struct Peer {
    pub ctl: UdpSocket,
    pub data: UdpSocket,
    pub token: u32,
    pub ssrc: u32,
    /// Unique: the daemon takes a second invitation with the same name from the same host
    /// for a peer that restarted, and ends the first session.
    name: String,
}

/// Numbers the sessions of the whole run, for unique tokens, SSRCs and names.
static NEXT_PEER: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Control,
    Data,
    Clock,
    Done,
}

/// A re-sent invitation after a NO, and any packet after this long without an answer (a
/// real initiator waits longer; shorter here so that a refusal costs little time).
const RETRY_AFTER_NO_NS: u64 = 5_000_000;
const RETRY_SILENT_NS: u64 = 50_000_000;

/// How opening sessions went.
pub struct Opened {
    pub peers: Vec<Peer>,
    pub seconds: f64,
    /// NO answers received, and invitations whose first answer was a NO.
    pub nos: u32,
    pub refused_first: u32,
}

/// Opens `n` sessions with `target`, at most `in_flight` handshakes at a time, each on two
/// new sockets; a NO or silence means the same invitation again a little later. Fails if
/// they are not all open within `limit`.
pub fn open(target: &Target, n: usize, in_flight: usize, limit: Duration) -> io::Result<Opened> {
    let start = now_ns();
    let deadline = start + limit.as_nanos() as u64;
    let base = std::process::id().wrapping_mul(2_654_435_761);
    let mut poller = Poller::new()?;
    let mut peers = Vec::with_capacity(n);
    let mut stages = Vec::with_capacity(n);
    let mut retry_at = Vec::with_capacity(n);
    let mut answered = Vec::with_capacity(n);
    let (mut active, mut done, mut nos, mut refused_first) = (0, 0, 0, 0);
    let mut buf = [0u8; 1500];
    while done < n {
        let now = now_ns();
        if now > deadline {
            return Err(io::Error::other(format!(
                "{done} of {n} sessions open after {limit:?}"
            )));
        }
        while active < in_flight && peers.len() < n {
            let i = peers.len();
            let number = NEXT_PEER.fetch_add(1, Ordering::Relaxed);
            let peer = Peer {
                ctl: sys::udp()?,
                data: sys::udp()?,
                token: base.wrapping_add(number),
                ssrc: base.rotate_left(16).wrapping_add(number),
                name: format!("bench {number}"),
            };
            poller.add(&peer.ctl, 2 * i as u64)?;
            poller.add(&peer.data, 2 * i as u64 + 1)?;
            send_stage(&peer, Stage::Control, target)?;
            peers.push(peer);
            stages.push(Stage::Control);
            retry_at.push(now + RETRY_SILENT_NS);
            answered.push(false);
            active += 1;
        }
        for token in poller.wait(1)? {
            let i = (token / 2) as usize;
            let peer = &peers[i];
            let on_data = token % 2 == 1;
            let sock = if on_data { &peer.data } else { &peer.ctl };
            loop {
                let len = match sock.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let now = now_ns();
                let next = match (stages[i], on_data, wire::parse_command(&buf[..len])) {
                    (Stage::Control, false, Some(Command::Session(code, t))) if t == peer.token => {
                        refused_first += u32::from(!answered[i] && &code == b"NO");
                        answered[i] = true;
                        match &code {
                            b"OK" => Stage::Data,
                            b"NO" => {
                                nos += 1;
                                retry_at[i] = now + RETRY_AFTER_NO_NS;
                                continue;
                            }
                            _ => continue,
                        }
                    }
                    (Stage::Data, true, Some(Command::Session(code, t)))
                        if &code == b"OK" && t == peer.token =>
                    {
                        Stage::Clock
                    }
                    (Stage::Clock, true, Some(Command::Clock { count: 1, .. })) => Stage::Done,
                    _ => continue,
                };
                stages[i] = next;
                send_stage(peer, next, target)?;
                retry_at[i] = now + RETRY_SILENT_NS;
                if next == Stage::Done {
                    active -= 1;
                    done += 1;
                }
            }
        }
        let now = now_ns();
        for (i, peer) in peers.iter().enumerate() {
            if stages[i] != Stage::Done && retry_at[i] <= now {
                send_stage(peer, stages[i], target)?;
                retry_at[i] = now + RETRY_SILENT_NS;
            }
        }
    }
    Ok(Opened {
        peers,
        seconds: (now_ns() - start) as f64 / 1e9,
        nos,
        refused_first,
    })
}

/// What a session sends on entering `stage`: IN on control, IN on data, CK0, and CK2 (the
/// end of the round) when done.
fn send_stage(peer: &Peer, stage: Stage, target: &Target) -> io::Result<()> {
    // 100 µs units since some origin, as CK timestamps are.
    let ticks = now_ns() / 100_000;
    let (sock, to, packet) = match stage {
        Stage::Control => (
            &peer.ctl,
            target.control,
            wire::invitation(b"IN", peer.token, peer.ssrc, &peer.name),
        ),
        Stage::Data => (
            &peer.data,
            target.data,
            wire::invitation(b"IN", peer.token, peer.ssrc, &peer.name),
        ),
        Stage::Clock => (
            &peer.data,
            target.data,
            wire::clock(peer.ssrc, 0, [ticks, 0, 0]),
        ),
        Stage::Done => (
            &peer.data,
            target.data,
            wire::clock(peer.ssrc, 2, [ticks, ticks, ticks]),
        ),
    };
    match sock.send_to(&packet, to) {
        Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}

/// Ends the sessions with BY.
pub fn close(target: &Target, peers: Vec<Peer>) {
    for p in &peers {
        let _ = p.ctl.send_to(&wire::end(p.token, p.ssrc), target.control);
    }
}

/// Sessions in a CK round at once.
const CLOCK_IN_FLIGHT: usize = 64;

/// One CK round on every session (CK0, the target's CK1, CK2), as a live initiator does every
/// 10-60 s. A responder checks on a peer silent for a while (rtpmidid after 10 s) with CK0s
/// of its own: without this round, sessions opened more than 10 s before a measurement would
/// be probed inside it, and the idle rows would count those probes. Fails if some session has
/// no answer within `limit`.
pub fn clock_round(target: &Target, peers: &[Peer], limit: Duration) -> io::Result<()> {
    let deadline = now_ns() + limit.as_nanos() as u64;
    let mut poller = Poller::new()?;
    let mut sent_at: Vec<Option<u64>> = vec![None; peers.len()];
    let (mut next, mut done) = (0, 0);
    let mut buf = [0u8; 1500];
    while done < peers.len() {
        let now = now_ns();
        if now > deadline {
            return Err(io::Error::other(format!(
                "{done} of {} sessions answered a CK within {limit:?}",
                peers.len()
            )));
        }
        while next < peers.len() && next - done < CLOCK_IN_FLIGHT {
            poller.add(&peers[next].data, next as u64)?;
            sent_at[next] = Some(now);
            send_stage(&peers[next], Stage::Clock, target)?;
            next += 1;
        }
        for i in poller.wait(1)? {
            let i = i as usize;
            loop {
                let len = match peers[i].data.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                // CK0s the target sent itself (probes) are not the answer.
                let answer = matches!(
                    wire::parse_command(&buf[..len]),
                    Some(Command::Clock { count: 1, .. })
                );
                if answer && sent_at[i].take().is_some() {
                    send_stage(&peers[i], Stage::Done, target)?;
                    done += 1;
                }
            }
        }
        let now = now_ns();
        for (i, at) in sent_at.iter_mut().enumerate() {
            if at.is_some_and(|t| t + RETRY_SILENT_NS <= now) {
                *at = Some(now);
                send_stage(&peers[i], Stage::Clock, target)?;
            }
        }
    }
    Ok(())
}
