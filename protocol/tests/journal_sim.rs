//! A sender and a receiver of the recovery journal over a lossy in-memory link, on a simulated
//! clock: random MIDI one to three commands a packet, the journal on every packet, RS
//! confirmations flowing back (lost too), guard packets after the stream ends. When it is
//! over the receiver's MIDI state must equal the sender's: no stuck note, no wrong controller.
use std::collections::VecDeque;

use protocol::journal::wire::JournalHeader;
use protocol::journal::{GuardTimer, JournalReceiver, JournalSender, MidiState};
use protocol::rng::Rng;
use protocol::time::{Duration, Instant};

const MTU: usize = 1400;
const ONE_WAY: Duration = Duration::from_millis(2);
const RS_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
enum Loss {
    Rate(f64),
    /// Bursts: each packet starts one with probability `start`, lasting 2 to `max` packets.
    Bursts {
        start: f64,
        max: u64,
    },
}

struct Link<T> {
    loss: Loss,
    rng: Rng,
    burst_left: u64,
    queue: VecDeque<(Instant, T)>,
    sent: u64,
    dropped: u64,
}

impl<T> Link<T> {
    fn new(loss: Loss, seed: u64) -> Self {
        Link {
            loss,
            rng: Rng::new(seed),
            burst_left: 0,
            queue: VecDeque::new(),
            sent: 0,
            dropped: 0,
        }
    }

    /// Returns false when the item was lost.
    fn send(&mut self, now: Instant, item: T) -> bool {
        self.sent += 1;
        let lost = match self.loss {
            Loss::Rate(p) => self.rng.chance(p),
            Loss::Bursts { start, max } => {
                if self.burst_left > 0 {
                    self.burst_left -= 1;
                    true
                } else if self.rng.chance(start) {
                    self.burst_left = 1 + self.rng.below(max - 1);
                    true
                } else {
                    false
                }
            }
        };
        if lost {
            self.dropped += 1;
        } else {
            self.queue.push_back((now + ONE_WAY, item));
        }
        !lost
    }

    fn poll(&mut self, now: Instant) -> Option<T> {
        if self.queue.front().is_some_and(|(t, _)| *t <= now) {
            self.queue.pop_front().map(|(_, item)| item)
        } else {
            None
        }
    }
}

struct Packet {
    seq: u32,
    commands: Vec<Vec<u8>>,
    journal: Vec<u8>,
    /// The sender's state once this packet was sent: what the receiver must sound like
    /// after it.
    expected: MidiState,
}

/// Random MIDI of every kind the journal covers, keeping track of held notes.
struct Music {
    rng: Rng,
    held: Vec<(u8, u8)>,
    sysex_tail: Option<Vec<u8>>,
}

impl Music {
    fn pick(&mut self, n: u64) -> u8 {
        self.rng.below(n) as u8
    }

    fn command(&mut self) -> Vec<Vec<u8>> {
        if let Some(tail) = self.sysex_tail.take() {
            return vec![tail];
        }
        let ch = self.pick(4);
        let roll = self.rng.below(1000);
        match roll {
            0..=299 => {
                let note = 36 + self.pick(48);
                self.held.push((ch, note));
                vec![vec![0x90 | ch, note, 1 + self.pick(127)]]
            }
            300..=549 if !self.held.is_empty() => {
                let i = self.rng.below(self.held.len() as u64) as usize;
                let (c, n) = self.held.swap_remove(i);
                if self.rng.chance(0.5) {
                    vec![vec![0x80 | c, n, self.pick(128)]]
                } else {
                    vec![vec![0x90 | c, n, 0]]
                }
            }
            550..=679 => vec![vec![0xB0 | ch, 1 + self.pick(90), self.pick(128)]],
            680..=699 => vec![vec![0xB0 | ch, 64 + self.pick(4), 127 * self.pick(2)]],
            700..=729 => {
                let mut v = Vec::new();
                if self.rng.chance(0.5) {
                    v.push(vec![0xB0 | ch, 0, self.pick(3)]);
                    v.push(vec![0xB0 | ch, 32, self.pick(3)]);
                }
                v.push(vec![0xC0 | ch, self.pick(128)]);
                v
            }
            730..=789 => vec![vec![0xE0 | ch, self.pick(128), self.pick(128)]],
            790..=819 => vec![vec![0xD0 | ch, self.pick(128)]],
            820..=849 if !self.held.is_empty() => {
                let (c, n) = self.held[self.rng.below(self.held.len() as u64) as usize];
                vec![vec![0xA0 | c, n, self.pick(128)]]
            }
            850..=879 => {
                let (m, l) = if self.rng.chance(0.5) {
                    (99, 98)
                } else {
                    (101, 100)
                };
                let mut v = vec![
                    vec![0xB0 | ch, m, 0],
                    vec![0xB0 | ch, l, self.pick(5)],
                    vec![0xB0 | ch, 6, self.pick(128)],
                ];
                if self.rng.chance(0.5) {
                    v.push(vec![0xB0 | ch, 38, self.pick(128)]);
                }
                if self.rng.chance(0.3) {
                    v.push(vec![0xB0 | ch, 101, 127]);
                    v.push(vec![0xB0 | ch, 100, 127]);
                }
                v
            }
            880..=959 => vec![vec![0xF8]],
            960..=974 => vec![vec![[0xFA, 0xFB, 0xFC][self.rng.below(3) as usize]]],
            975..=979 => vec![vec![0xF3, self.pick(16)]],
            980..=989 => {
                let body: Vec<u8> = (0..1 + self.pick(12)).map(|_| self.pick(128)).collect();
                if self.rng.chance(0.5) {
                    // Whole, F0 .. F7.
                    let mut v = vec![0xF0, 0x7D];
                    v.extend(&body);
                    v.push(0xF7);
                    vec![v]
                } else {
                    // Two segments in consecutive packets: F0 .. F0 then F7 .. F7.
                    let mut first = vec![0xF0, 0x7D];
                    first.extend(&body);
                    first.push(0xF0);
                    self.sysex_tail = Some(vec![0xF7, self.pick(128), 0xF7]);
                    vec![first]
                }
            }
            990..=994 => {
                // Mode messages: all notes off, reset all controllers.
                let number = [120, 121, 123][self.rng.below(3) as usize];
                if number != 121 {
                    self.held.retain(|&(c, _)| c != ch);
                }
                vec![vec![0xB0 | ch, number, 0]]
            }
            _ => vec![vec![0xB0 | ch, 7, self.pick(128)]],
        }
    }
}

struct Report {
    packets: u64,
    dropped: u64,
    repairs: u64,
    worst_repair: Duration,
    p99_repair: Duration,
    converged_after: Duration,
}

fn simulate(loss: Loss, seed: u64, packets: usize) -> Report {
    let mut rng = Rng::new(seed);
    let mut music = Music {
        rng: Rng::new(seed ^ 0x5EED),
        held: Vec::new(),
        sysex_tail: None,
    };
    let mut forward: Link<Packet> = Link::new(loss, seed.wrapping_add(1));
    let mut back: Link<u32> = Link::new(loss, seed.wrapping_add(2));
    let mut tx = JournalSender::new();
    let mut rx = JournalReceiver::new();
    let mut guard = GuardTimer::new();
    let mut buf = vec![0u8; MTU];

    // Start near the 16-bit wrap so the checkpoint field wraps during the run.
    let mut seq: u32 = 65_000 + rng.below(500) as u32;
    let mut now = Instant::from_micros(1_000_000);
    let mut next_send = now;
    let mut sent_music = 0usize;
    let mut releasing = false;
    let mut stream_end: Option<Instant> = None;
    let mut converged: Option<Instant> = None;
    let mut rx_highest: Option<u32> = None;
    let mut next_rs = now + RS_EVERY;
    // Times at which packets with MIDI were lost, waiting for a repair.
    let mut unrepaired: Vec<(u32, Instant)> = Vec::new();
    let mut repair_delays: Vec<Duration> = Vec::new();
    let deadline = now + Duration::from_secs(600);

    loop {
        // Sender: music, then the release of every held note, then silence.
        if stream_end.is_none() && now >= next_send {
            let mut commands = Vec::new();
            if sent_music < packets {
                for _ in 0..1 + rng.below(3) {
                    commands.extend(music.command());
                }
                sent_music += 1;
            } else if let Some(tail) = music.sysex_tail.take() {
                commands.push(tail);
            } else if !releasing || !music.held.is_empty() {
                releasing = true;
                // Three note-offs a packet until nothing is held.
                let k = music.held.len().min(3);
                for (c, n) in music.held.drain(..k) {
                    commands.push(vec![0x80 | c, n, 64]);
                }
            }
            if commands.is_empty() {
                stream_end = Some(now);
            } else {
                for c in &commands {
                    tx.record(seq, c);
                }
                let used: usize = commands.iter().map(|c| c.len() + 1).sum();
                let n = tx.emit(seq, &mut buf[..MTU - 16 - used]);
                let journal = buf[..n].to_vec();
                if !forward.send(
                    now,
                    Packet {
                        seq,
                        commands,
                        journal,
                        expected: tx.state().clone(),
                    },
                ) {
                    unrepaired.push((seq, now));
                }
                seq = seq.wrapping_add(1);
                guard.on_sent(now, true);
                next_send = now + Duration::from_micros(1_000 + rng.below(9_000));
            }
        }
        // Guard packets whenever the stream is quiet.
        if guard.next_guard().is_some_and(|t| now >= t) {
            let n = if tx.has_pending() {
                tx.emit(seq, &mut buf)
            } else {
                0
            };
            if n > 0 {
                forward.send(
                    now,
                    Packet {
                        seq,
                        commands: Vec::new(),
                        journal: buf[..n].to_vec(),
                        expected: tx.state().clone(),
                    },
                );
                seq = seq.wrapping_add(1);
                guard.on_sent(now, false);
            } else {
                guard.stop();
            }
        }
        // Receiver: journal first (it describes the stream before this packet), then the
        // packet's own commands.
        while let Some(p) = forward.poll(now) {
            let lost = match rx_highest {
                Some(h) => p.seq.wrapping_sub(h).wrapping_sub(1),
                // The first packet seen: what came before it is lost from its checkpoint on.
                None => JournalHeader::parse(&p.journal)
                    .map_or(0, |h| u32::from((p.seq as u16).wrapping_sub(h.checkpoint))),
            };
            assert!(lost < 10_000, "no reordering on this link");
            rx_highest = Some(p.seq);
            if !p.journal.is_empty() {
                let used = rx
                    .recover(p.seq, &p.journal, lost, &mut |_: &[u8]| {})
                    .expect("our own journals parse");
                assert_eq!(used, p.journal.len());
            }
            if lost > 0 {
                // Every packet lost so far came before this one (no reordering here).
                repair_delays.extend(unrepaired.drain(..).map(|(_, t)| now - t));
            }
            for c in &p.commands {
                rx.observe(c);
            }
            assert!(
                rx.state().same_music(&p.expected),
                "after packet {} (lost before it: {lost}, {loss:?} seed {seed}): {}",
                p.seq,
                differences(&p.expected, rx.state())
            );
        }
        // Receiver feedback (RS) every 100 ms.
        if now >= next_rs {
            if let Some(h) = rx_highest {
                back.send(now, h);
            }
            next_rs = now + RS_EVERY;
        }
        while let Some(confirmed) = back.poll(now) {
            tx.confirm(confirmed);
        }
        if let Some(end) = stream_end {
            if converged.is_none() && rx.state().same_music(tx.state()) && unrepaired.is_empty() {
                converged = Some(now);
            } else if converged.is_some() && !rx.state().same_music(tx.state()) {
                panic!("state diverged after converging");
            }
            if !tx.has_pending() && forward.queue.is_empty() {
                break;
            }
            assert!(
                now < deadline,
                "no convergence {:?} after the end",
                now - end
            );
        }
        now += Duration::from_micros(500);
    }

    assert!(
        rx.state().same_music(tx.state()),
        "receiver differs from sender ({loss:?}, seed {seed}, {} journals cut down): {}",
        tx.truncated(),
        differences(tx.state(), rx.state())
    );
    for (ch, state) in rx.state().channels.iter().enumerate() {
        assert!(
            state.notes.iter().all(|n| !n.on),
            "stuck note on channel {ch}"
        );
    }
    assert!(unrepaired.is_empty(), "lost MIDI never repaired");
    repair_delays.sort();
    let p99 = repair_delays
        .get(repair_delays.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    Report {
        packets: forward.sent,
        dropped: forward.dropped,
        repairs: rx.repairs(),
        worst_repair: repair_delays.last().copied().unwrap_or_default(),
        p99_repair: p99,
        converged_after: converged
            .zip(stream_end)
            .map(|(c, e)| c - e)
            .unwrap_or_default(),
    }
}

/// What differs between the sender's and the receiver's state, for failure messages.
fn differences(a: &MidiState, b: &MidiState) -> String {
    let mut out = String::new();
    for (ch, (x, y)) in a.channels.iter().zip(b.channels.iter()).enumerate() {
        for n in 0..128 {
            if x.notes[n].on != y.notes[n].on {
                out += &format!("ch{ch} note {n}: {:?} vs {:?}; ", x.notes[n], y.notes[n]);
            }
            let v = |c: &Option<protocol::journal::Stamped<u8>>| c.map(|s| s.value);
            if v(&x.controllers[n]) != v(&y.controllers[n]) {
                out += &format!(
                    "ch{ch} cc {n}: {:?} vs {:?}; ",
                    x.controllers[n], y.controllers[n]
                );
            }
            if v(&x.poly[n]) != v(&y.poly[n]) {
                out += &format!("ch{ch} poly {n}: {:?} vs {:?}; ", x.poly[n], y.poly[n]);
            }
        }
        if x.program.map(|p| p.value) != y.program.map(|p| p.value) {
            out += &format!("ch{ch} program {:?} vs {:?}; ", x.program, y.program);
        }
        if x.bend.map(|p| p.value) != y.bend.map(|p| p.value) {
            out += &format!("ch{ch} bend; ");
        }
        if x.pressure.map(|p| p.value) != y.pressure.map(|p| p.value) {
            out += &format!("ch{ch} pressure; ");
        }
        if x.selection.current() != y.selection.current() {
            out += &format!("ch{ch} selection {:?} vs {:?}; ", x.selection, y.selection);
        }
        for p in x.params.iter().flatten() {
            if y.param(p.id).map(|q| (q.msb, q.lsb)) != Some((p.msb, p.lsb)) {
                out += &format!("ch{ch} param {:?} vs {:?}; ", p, y.param(p.id));
            }
        }
    }
    out += &format!(
        "song {:?}/{:?} seq {:?}/{:?} sysex {:02X?}/{:02X?}",
        a.system.song_select,
        b.system.song_select,
        a.system.sequencer,
        b.system.sequencer,
        a.last_sysex,
        b.last_sysex
    );
    out
}

/// Three seeds per loss pattern; `JOURNAL_SIM_SEEDS=n` runs n.
fn check(name: &str, loss: Loss, first_seed: u64) {
    let n: u64 = std::env::var("JOURNAL_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for seed in first_seed..first_seed + n {
        let r = simulate(loss, seed, 3_000);
        println!(
            "{name} seed {seed}: {} packets, {} lost, {} repairs; repair delay p99 {:.1} ms, \
             worst {:.1} ms; receiver equal {:.1} ms after the stream ended",
            r.packets,
            r.dropped,
            r.repairs,
            r.p99_repair.as_secs_f64() * 1e3,
            r.worst_repair.as_secs_f64() * 1e3,
            r.converged_after.as_secs_f64() * 1e3,
        );
        if r.dropped > 0 {
            assert!(r.repairs > 0, "losses but no repair");
        }
    }
}

#[test]
fn loss_1_percent() {
    check("1% loss", Loss::Rate(0.01), 0);
}

#[test]
fn loss_5_percent() {
    check("5% loss", Loss::Rate(0.05), 1000);
}

#[test]
fn loss_20_percent() {
    check("20% loss", Loss::Rate(0.20), 2000);
}

#[test]
fn loss_in_bursts() {
    check(
        "bursts",
        Loss::Bursts {
            start: 0.02,
            max: 12,
        },
        3000,
    );
}

#[test]
fn no_loss_no_repair() {
    let r = simulate(Loss::Rate(0.0), 99, 1_000);
    assert_eq!((r.dropped, r.repairs), (0, 0));
}

/// The classic case: the last note-off is lost and nothing else is played. The first guard
/// packet repairs it.
#[test]
fn lost_last_note_off_repaired_by_first_guard() {
    let mut tx = JournalSender::new();
    let mut rx = JournalReceiver::new();
    let mut guard = GuardTimer::new();
    let mut buf = [0u8; MTU];
    let t0 = Instant::from_micros(5_000_000);
    tx.record(100, &[0x90, 60, 100]);
    rx.observe(&[0x90, 60, 100]);
    guard.on_sent(t0, true);
    // Packet 101 with the note-off is lost.
    tx.record(101, &[0x80, 60, 0]);
    guard.on_sent(t0 + Duration::from_millis(300), true);
    let due = guard.next_guard().unwrap();
    assert_eq!(due - t0, Duration::from_millis(325));
    assert!(tx.has_pending());
    let n = tx.emit(102, &mut buf);
    let mut got = Vec::new();
    rx.recover(102, &buf[..n], 1, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    // The release velocity comes from chapter E.
    assert_eq!(got, [vec![0x80, 60, 0]]);
    assert!(rx.state().channels[0].notes.iter().all(|n| !n.on));
    guard.on_sent(due, false);
    tx.confirm(102);
    assert!(!tx.has_pending());
    println!(
        "lost last note-off repaired {:.0} ms after it was sent",
        (due - (t0 + Duration::from_millis(300))).as_secs_f64() * 1e3 + ONE_WAY.as_secs_f64() * 1e3
    );
}
