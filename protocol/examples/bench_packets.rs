//! Prints how long the packet path takes: journal encode and decode, and a whole session
//! packet (encode with journal, parse, deliver). A benchmark, not a test: it checks only that
//! the work was done. Run it optimised:
//! `cargo run --release -p rtpmidid-protocol --example bench_packets`.
//! Each figure is nanoseconds per operation, the best of a few runs (the machine is shared;
//! the best is the least disturbed), and heap allocations per operation (a counting global
//! allocator; the most of the runs).
#[path = "../tests/alloc/mod.rs"]
mod alloc;

use std::time::Instant as Clock;

use alloc::{allocations, Counting};

use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::journal::{JournalReceiver, JournalSender};
use protocol::midi::{MidiMessage, ShortMessage};
use protocol::rng::Rng;
use protocol::session::{Config, Session, SocketKind};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::{Command, Feedback, Invitation};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Operations per run, and runs of each benchmark (the fastest is reported); `BENCH_ROUNDS`
/// and `BENCH_RUNS` override them (e.g. small for `valgrind --tool=callgrind`, which counts
/// instructions repeatably on a busy machine).
fn rounds() -> u32 {
    env_or("BENCH_ROUNDS", 200_000)
}
fn runs() -> u32 {
    env_or("BENCH_RUNS", 5)
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Time and allocations per operation of one run.
#[derive(Clone, Copy)]
struct Cost {
    nanos: f64,
    allocs: f64,
}

impl Cost {
    fn since(start: Clock, allocs: u64, n: u32) -> Cost {
        Cost {
            nanos: start.elapsed().as_nanos() as f64 / f64::from(n),
            allocs: (allocations() - allocs) as f64 / f64::from(n),
        }
    }

    fn best(runs: impl IntoIterator<Item = Cost>) -> Cost {
        runs.into_iter()
            .reduce(|a, b| Cost {
                nanos: a.nanos.min(b.nanos),
                allocs: a.allocs.max(b.allocs),
            })
            .expect("a run")
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:7.0} ns/op {:5.2} allocs/op", self.nanos, self.allocs)
    }
}

/// A sender with a busy state: notes held and controllers set on several channels, and no
/// confirmation, so every journal carries all of it (381 bytes).
fn busy_sender(rng: &mut Rng) -> (JournalSender, u32) {
    let mut tx = JournalSender::new();
    for seq in 0..64u32 {
        let ch = (seq % 4) as u8;
        tx.record(seq, &[0x90 | ch, 40 + (seq % 40) as u8, 100]);
        tx.record(
            seq,
            &[0xB0 | ch, 1 + (seq % 20) as u8, rng.below(128) as u8],
        );
    }
    // Then notes on channel 0, as the encode benchmark plays them.
    let mut seq = 64;
    for _ in 0..1000 {
        tx.record(seq, &[0x90, rng.below(128) as u8, 64]);
        seq += 1;
    }
    (tx, seq)
}

#[inline(never)]
/// Journal encode: record one note, emit the journal of the next packet.
fn encode() -> (Cost, usize) {
    let mut rng = Rng::new(1);
    let (mut tx, mut seq) = busy_sender(&mut rng);
    let mut buf = [0u8; 1200];
    let mut total = 0usize;
    let (start, allocs) = (Clock::now(), allocations());
    for _ in 0..rounds() {
        let n = rng.below(128) as u8;
        tx.record(seq, &[0x90, n, 64]);
        total += tx.emit(seq + 1, &mut buf);
        seq += 1;
    }
    (
        Cost::since(start, allocs, rounds()),
        total / rounds() as usize,
    )
}

#[inline(never)]
/// Journal decode: parse the busy journal, and every other time repair a loss with it.
fn decode() -> (Cost, usize) {
    let mut rng = Rng::new(1);
    let (mut tx, seq) = busy_sender(&mut rng);
    let mut buf = [0u8; 1200];
    let len = tx.emit(seq, &mut buf);
    let mut rx = JournalReceiver::new();
    let mut sink = 0usize;
    let (start, allocs) = (Clock::now(), allocations());
    for i in 0..rounds() {
        // Every other call repairs a loss, so decode and compare run for real.
        let lost = i % 2;
        let _ = rx.recover(seq, &buf[..len], lost, &mut |b: &[u8]| sink += b.len());
    }
    assert!(sink > 0, "repairs ran");
    (Cost::since(start, allocs, rounds()), len)
}

/// Costs of the session packet path: A sends one note a packet (send_midi, then poll_transmit
/// builds the packet with its journal), B takes it (handle_datagram parses the packet and its
/// journal and queues the event, poll_event takes it); B's RS goes back to A once a second of
/// simulated time, so A's journal holds about a second of notes. The RS and clock traffic
/// is counted in `round` only.
struct SessionCosts {
    send: Cost,
    receive: Cost,
    round: Cost,
    journal_len: usize,
}

#[inline(never)]
fn session_packets() -> SessionCosts {
    let a_addr = "10.0.0.1:5004".parse().unwrap();
    let b_addr = "10.0.0.2:5004".parse().unwrap();
    let mut now = Instant::from_micros(1_000_000);
    let mut a = Session::connect(Config::default(), now, b_addr, 1);
    let mut buf = [0u8; 1500];
    let t = a.poll_transmit(now, &mut buf).expect("IN");
    let Ok(Command::Invitation(inv)) = Command::parse(&buf[..t.len]) else {
        panic!("no IN");
    };
    let mut b = Session::accept(Config::default(), now, a_addr, &inv, 2);
    let data = |addr: std::net::SocketAddr| std::net::SocketAddr::new(addr.ip(), addr.port() + 1);
    let pump = |now: Instant, from: &mut Session, from_addr, to: &mut Session, buf: &mut [u8]| {
        while let Some(t) = from.poll_transmit(now, buf) {
            let (port, src) = match t.port {
                SocketKind::Control => (SocketKind::Control, from_addr),
                SocketKind::Data => (SocketKind::Data, data(from_addr)),
            };
            to.handle_datagram(now, port, src, &buf[..t.len]);
        }
    };
    for _ in 0..10 {
        pump(now, &mut b, b_addr, &mut a, &mut buf);
        pump(now, &mut a, a_addr, &mut b, &mut buf);
    }
    assert!(a.is_connected() && b.is_connected(), "handshake");
    let (mut send, mut receive) = (
        Cost {
            nanos: 0.0,
            allocs: 0.0,
        },
        Cost {
            nanos: 0.0,
            allocs: 0.0,
        },
    );
    let mut journal_len = 0usize;
    let b_data = data(a_addr);
    let (start, allocs) = (Clock::now(), allocations());
    for i in 0..rounds() {
        now += Duration::from_micros(500);
        let note = ShortMessage::from_bytes(&[0x90, (i % 128) as u8, 100]).unwrap();
        let (t0, n0) = (Clock::now(), allocations());
        a.send_midi(now, &MidiMessage::Short(note));
        a.handle_timeout(now);
        let mut sent = [0usize; 4];
        let mut k = 0;
        while let Some(t) = a.poll_transmit(now, &mut buf[k * 1500 / 4..]) {
            // Rarely more than the note's packet (a CK round); room for four.
            sent[k] = t.len;
            k = (k + 1).min(3);
        }
        let (t1, n1) = (Clock::now(), allocations());
        for (j, &len) in sent.iter().enumerate().take(k.max(1)) {
            let bytes = &buf[j * 1500 / 4..j * 1500 / 4 + len];
            b.handle_datagram(now, SocketKind::Data, b_data, bytes);
        }
        while b.poll_event().is_some() {}
        let (t2, n2) = (Clock::now(), allocations());
        send.nanos += (t1 - t0).as_nanos() as f64;
        send.allocs += (n1 - n0) as f64;
        receive.nanos += (t2 - t1).as_nanos() as f64;
        receive.allocs += (n2 - n1) as f64;
        journal_len += sent[0].saturating_sub(16);
        b.handle_timeout(now);
        pump(now, &mut b, b_addr, &mut a, &mut buf);
        while a.poll_event().is_some() {}
    }
    let round = Cost::since(start, allocs, rounds());
    let n = f64::from(rounds());
    let per = |c: Cost| Cost {
        nanos: c.nanos / n,
        allocs: c.allocs / n,
    };
    assert!(
        b.stats().packets_received >= u64::from(rounds()),
        "every note arrived"
    );
    SessionCosts {
        send: per(send),
        receive: per(receive),
        round,
        journal_len: journal_len / rounds() as usize,
    }
}

/// Sessions of the fan-out benchmark.
const FANOUT: u32 = 1000;

/// Peer `i`'s address on `port` in the fan-out benchmarks.
fn fanout_peer(i: u32, port: SocketKind) -> std::net::SocketAddr {
    let control = 6000 + 2 * i as u16;
    let port = if port == SocketKind::Data {
        control + 1
    } else {
        control
    };
    std::net::SocketAddr::from(([10, 0, 0, 1], port))
}

/// An endpoint with `FANOUT` sessions, each invited by its peer and connected.
fn fanout_endpoint(now: Instant, buf: &mut [u8]) -> Endpoint {
    let mut ep = Endpoint::new(Config::default(), AcceptPolicy::default(), 1);
    for i in 0..FANOUT {
        let name = format!("peer {i}");
        let inv = Command::Invitation(Invitation {
            token: i,
            ssrc: 1000 + i,
            name: Some(&name),
        });
        let len = inv.emit(buf).unwrap();
        let datagram = buf[..len].to_vec();
        for port in [SocketKind::Control, SocketKind::Data] {
            ep.handle_datagram(now, port, fanout_peer(i, port), &datagram)
                .unwrap();
            while ep.poll_transmit(now, buf).is_some() {}
        }
    }
    while ep.poll_event().is_some() {}
    ep
}

/// An RS from peer `i` confirming `seq`.
fn feedback(i: u32, seq: u16) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let fb = Command::Feedback(Feedback {
        ssrc: 1000 + i,
        seq,
    });
    let len = fb.emit(&mut buf).unwrap();
    buf[..len].to_vec()
}

/// A hub's fan-out: an endpoint with `FANOUT` connected sessions gets each message (a 12-byte
/// SysEx, as the daemon's benchmark sends) for all of them, then sends each its packet;
/// every peer answers with an RS about once a second of simulated time (a message every 20
/// ms, a fiftieth of the peers after each), so each journal holds about a second of SysEx.
/// Cost per peer and message, after a second of simulated time (buffers grown).
#[inline(never)]
fn fanout() -> Cost {
    let mut now = Instant::from_micros(1_000_000);
    let mut buf = [0u8; 1500];
    let mut ep = fanout_endpoint(now, &mut buf);
    let sysex =
        MidiMessage::from_bytes(&[0xF0, 0x7D, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xF7]).unwrap();
    // Each peer's newest sequence number, for its RS.
    let mut newest = vec![None; FANOUT as usize];
    let messages = (rounds() / FANOUT).max(1);
    let warm_up = 50;
    let (mut nanos, mut allocs, mut sent) = (0u128, 0u64, 0u64);
    for m in 0..warm_up + messages {
        now += Duration::from_millis(20);
        let (t0, n0) = (Clock::now(), allocations());
        for (_, s) in ep.sessions_mut() {
            s.send_midi(now, &sysex);
        }
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            let i = u32::from(t.dst.port() - 6001) / 2;
            newest[i as usize] = Some(u16::from_be_bytes([buf[2], buf[3]]));
            sent += 1;
        }
        if m >= warm_up {
            nanos += t0.elapsed().as_nanos();
            allocs += allocations() - n0;
        }
        for i in (m % 50..FANOUT).step_by(50) {
            if let Some(seq) = newest[i as usize].take() {
                let peer = fanout_peer(i, SocketKind::Control);
                ep.handle_datagram(now, SocketKind::Control, peer, &feedback(i, seq))
                    .unwrap();
            }
        }
        ep.handle_timeout(now);
        while ep.poll_transmit(now, &mut buf).is_some() {}
        ep.poll_timeout();
    }
    assert_eq!(
        sent,
        u64::from((warm_up + messages) * FANOUT),
        "a packet to every peer"
    );
    let n = f64::from(messages * FANOUT);
    Cost {
        nanos: nanos as f64 / n,
        allocs: allocs as f64 / n,
    }
}

/// An RS from one of `FANOUT` peers, handled as the daemon's loop does each datagram: the
/// datagram to its session, the events, timers and datagrams that follow, the next deadline.
#[inline(never)]
fn feedback_among_many() -> Cost {
    let mut now = Instant::from_micros(1_000_000);
    let mut buf = [0u8; 1500];
    let mut ep = fanout_endpoint(now, &mut buf);
    let datagrams: Vec<Vec<u8>> = (0..FANOUT).map(|i| feedback(i, 0)).collect();
    let n = rounds().min(20 * FANOUT);
    let (t0, n0) = (Clock::now(), allocations());
    for k in 0..n {
        now += Duration::from_micros(100);
        // Peers in a scattered order, as a second's RS arrive.
        let i = k.wrapping_mul(7919) % FANOUT;
        let peer = fanout_peer(i, SocketKind::Control);
        ep.handle_datagram(now, SocketKind::Control, peer, &datagrams[i as usize])
            .unwrap();
        while ep.poll_event().is_some() {}
        ep.handle_timeout(now);
        while ep.poll_transmit(now, &mut buf).is_some() {}
        ep.poll_timeout();
    }
    Cost::since(t0, n0, n)
}

fn main() {
    let all: Vec<_> = (0..runs()).map(|_| encode()).collect();
    let bytes = all[0].1;
    println!(
        "journal encode (busy, {bytes} bytes):          {}",
        Cost::best(all.into_iter().map(|r| r.0))
    );
    let all: Vec<_> = (0..runs()).map(|_| decode()).collect();
    let bytes = all[0].1;
    println!(
        "journal decode/repair ({bytes} bytes):         {}",
        Cost::best(all.into_iter().map(|r| r.0))
    );
    let all: Vec<_> = (0..runs()).map(|_| session_packets()).collect();
    let bytes = all[0].journal_len;
    println!(
        "session send (send_midi..poll_transmit):  {}  (journal {bytes} bytes average)",
        Cost::best(all.iter().map(|r| r.send))
    );
    println!(
        "session receive (handle_datagram, event): {}",
        Cost::best(all.iter().map(|r| r.receive))
    );
    println!(
        "session whole round (both, RS and CK):    {}",
        Cost::best(all.iter().map(|r| r.round))
    );
    let all: Vec<_> = (0..runs()).map(|_| fanout()).collect();
    println!(
        "hub fan-out, {FANOUT} sessions (per peer):    {}  (12-byte SysEx, send_midi..poll_transmit)",
        Cost::best(all)
    );
    let all: Vec<_> = (0..runs()).map(|_| feedback_among_many()).collect();
    println!(
        "RS among {FANOUT} sessions (per RS):          {}  (handle_datagram..poll_timeout)",
        Cost::best(all)
    );
}
