//! MIDI streams through a target: a sender thread paced by the clock, the receivers read on
//! the calling thread through epoll. The same sockets serve the daemon and its baseline; only
//! the destination (and the RS feedback the daemon's sessions get) differ.
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use crate::peers::Peer;
use crate::sys::{now_ns, sleep_until, Poller};
use crate::wire;

/// Who sends, where to, who receives.
pub struct Route<'a> {
    pub sender: &'a Peer,
    /// The sender's RTP sequence numbers towards this target, going on across runs: the
    /// daemon drops a packet far behind the newest it saw as a duplicate.
    pub seq: &'a AtomicU16,
    pub to: SocketAddr,
    pub receivers: &'a [Peer],
    /// The daemon's control port, for the receivers' RS: without it the daemon's journal to
    /// them would grow and guard packets would go on. None for the baselines.
    pub feedback: Option<SocketAddr>,
}

impl Route<'_> {
    fn next_seq(&self) -> u16 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// How long after the last send the receivers wait for stragglers.
const DRAIN_NS: u64 = 300_000_000;
/// A real peer's RS period.
const FEEDBACK_PERIOD_NS: u64 = 1_000_000_000;

/// Each receiver's RS once a second with the newest sequence number it saw, the receivers
/// spread over the second.
struct Feedback<'a> {
    route: &'a Route<'a>,
    newest: Vec<Option<u16>>,
    due: Vec<u64>,
    next_check: u64,
}

impl<'a> Feedback<'a> {
    fn new(route: &'a Route<'a>) -> Self {
        let n = route.receivers.len() as u64;
        let now = now_ns();
        Feedback {
            route,
            newest: vec![None; n as usize],
            due: (0..n).map(|i| now + FEEDBACK_PERIOD_NS * i / n).collect(),
            next_check: now,
        }
    }

    fn tick(&mut self, now: u64) {
        let Some(to) = self.route.feedback else {
            return;
        };
        if now < self.next_check {
            return;
        }
        self.next_check = now + 10_000_000;
        for (i, p) in self.route.receivers.iter().enumerate() {
            if self.due[i] <= now {
                self.due[i] += FEEDBACK_PERIOD_NS;
                if let Some(seq) = self.newest[i].take() {
                    let _ = p.ctl.send_to(&wire::feedback(p.ssrc, seq), to);
                }
            }
        }
    }

    /// RS from every receiver now, at the end of a run, so that the daemon's guard packets
    /// stop before the next run (the baseline's) starts.
    fn flush(&mut self) {
        self.next_check = 0;
        self.due.fill(0);
        self.tick(now_ns());
    }
}

/// Reads every datagram waiting on the receivers' data sockets that `tokens` name, calling
/// `seen(receiver, arrival ns, packet)` for each RTP-MIDI packet.
fn drain(
    route: &Route,
    tokens: &[u64],
    fb: &mut Feedback,
    seen: &mut impl FnMut(usize, u64, &wire::Midi),
) -> io::Result<()> {
    let mut buf = [0u8; 1500];
    for &t in tokens {
        let i = t as usize;
        loop {
            let len = match route.receivers[i].data.recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            let now = now_ns();
            if let Some(midi) = wire::parse_rtp_midi(&buf[..len]) {
                fb.newest[i] = Some(midi.seq);
                seen(i, now, &midi);
            }
        }
    }
    Ok(())
}

fn poller(route: &Route) -> io::Result<Poller> {
    let poller = Poller::new()?;
    for (i, p) in route.receivers.iter().enumerate() {
        poller.add(&p.data, i as u64)?;
    }
    Ok(poller)
}

/// Latencies of stamped messages: for each, the time from its send to its arrival at the
/// last receiver.
pub struct Stamped {
    pub latencies_ns: Vec<u64>,
    pub lost: usize,
}

/// Sends `count` stamp SysEx messages `period_ns` apart, one a packet.
pub fn stamped(route: &Route, period_ns: u64, count: usize) -> io::Result<Stamped> {
    let mut poller = poller(route)?;
    let mut fb = Feedback::new(route);
    let receivers = route.receivers.len();
    // Stamp -> (receivers that have it, arrival at the latest).
    let mut partial: HashMap<u64, (usize, u64)> = HashMap::new();
    let mut latencies_ns = Vec::with_capacity(count);
    let finished = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let start = now_ns() + 1_000_000;
            let mut result = Ok(());
            for k in 0..count {
                sleep_until(start + k as u64 * period_ns);
                let stamp = wire::stamp_list(now_ns());
                let p = wire::rtp_midi(route.next_seq(), route.sender.ssrc, &stamp);
                if let Err(e) = route.sender.data.send_to(&p, route.to) {
                    result = Err(e);
                    break;
                }
            }
            finished.store(true, Ordering::Release);
            result
        });
        let mut drain_until = None;
        while latencies_ns.len() < count && drain_until.is_none_or(|t| now_ns() < t) {
            let tokens = poller.wait(10)?;
            drain(route, &tokens, &mut fb, &mut |_, now, midi| {
                for &stamp in &midi.stamps {
                    let e = partial.entry(stamp).or_insert((0, 0));
                    *e = (e.0 + 1, now);
                    if e.0 == receivers {
                        latencies_ns.push(now - stamp);
                        partial.remove(&stamp);
                    }
                }
            })?;
            let now = now_ns();
            fb.tick(now);
            if drain_until.is_none() && finished.load(Ordering::Acquire) {
                drain_until = Some(now + DRAIN_NS);
            }
        }
        fb.flush();
        sender.join().expect("sender thread")
    })?;
    Ok(Stamped {
        lost: count - latencies_ns.len(),
        latencies_ns,
    })
}

/// What a flood delivered.
pub struct Flood {
    pub sent_events: u64,
    pub received_events: u64,
    /// Events a second the sender achieved.
    pub rate: f64,
}

/// The sender's pacing step: each wake-up sends what is due since the last.
const TICK_NS: u64 = 100_000;

/// Sends packets of `per_packet` notes at `packets_per_s` for `duration_ns` to the first
/// receiver and counts the notes that arrive.
pub fn flood(
    route: &Route,
    packets_per_s: f64,
    per_packet: usize,
    duration_ns: u64,
) -> io::Result<Flood> {
    let mut poller = poller(route)?;
    let mut fb = Feedback::new(route);
    let total = (packets_per_s * duration_ns as f64 / 1e9).max(1.0) as u64;
    let finished = AtomicBool::new(false);
    let mut received_events = 0u64;
    let (sent, elapsed_ns) = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let start = now_ns();
            let mut sent = 0u64;
            let mut result = Ok(());
            while sent < total {
                let now = now_ns();
                let due = (((now - start) as f64 * packets_per_s / 1e9) as u64).min(total);
                while sent < due {
                    let list = wire::notes_list(sent * per_packet as u64, per_packet);
                    let p = wire::rtp_midi(route.next_seq(), route.sender.ssrc, &list);
                    match route.sender.data.send_to(&p, route.to) {
                        Ok(_) => sent += 1,
                        // The socket's buffer is full: the sender is the limit; go on later.
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if result.is_err() {
                    break;
                }
                sleep_until(now + TICK_NS);
            }
            let elapsed = now_ns() - start;
            finished.store(true, Ordering::Release);
            result.map(|()| (sent, elapsed))
        });
        let mut last_arrival = now_ns();
        loop {
            let tokens = poller.wait(10)?;
            drain(route, &tokens, &mut fb, &mut |_, now, midi| {
                received_events += u64::from(midi.notes);
                last_arrival = now;
            })?;
            let now = now_ns();
            fb.tick(now);
            // Done when all arrived, or nothing came for a while after the sender finished.
            if finished.load(Ordering::Acquire)
                && (received_events >= total * per_packet as u64
                    || now - last_arrival > DRAIN_NS / 3)
            {
                break;
            }
        }
        fb.flush();
        sender.join().expect("sender thread")
    })?;
    let sent_events = sent * per_packet as u64;
    Ok(Flood {
        sent_events,
        received_events,
        rate: sent_events as f64 / (elapsed_ns as f64 / 1e9),
    })
}
