//! Prints how long the packet path takes: journal encode and decode, and a whole session
//! packet (encode with journal, parse, deliver). A benchmark, not a test: it asserts nothing.
//! Run it optimised: `cargo run --release -p rtpmidid-protocol --example bench_packets`.
use std::time::Instant as Clock;

use protocol::journal::{JournalReceiver, JournalSender};
use protocol::midi::{MidiMessage, ShortMessage};
use protocol::rng::Rng;
use protocol::session::{Config, Port, Session};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::Command;

const ROUNDS: u32 = 200_000;

fn per_op(start: Clock, n: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(n) / 1000.0
}

fn journal() {
    let mut rng = Rng::new(1);
    let mut tx = JournalSender::new();
    let mut rx = JournalReceiver::new();
    let mut buf = [0u8; 1200];
    // A busy state: notes held and controllers set on several channels.
    for seq in 0..64u32 {
        let ch = (seq % 4) as u8;
        tx.record(seq, &[0x90 | ch, 40 + (seq % 40) as u8, 100]);
        tx.record(
            seq,
            &[0xB0 | ch, 1 + (seq % 20) as u8, rng.below(128) as u8],
        );
    }
    let mut seq = 64u32;
    let mut total = 0usize;
    let start = Clock::now();
    for _ in 0..ROUNDS {
        let n = rng.below(128) as u8;
        tx.record(seq, &[0x90, n, 64]);
        total += tx.emit(seq + 1, &mut buf);
        seq += 1;
    }
    let encode = per_op(start, ROUNDS);
    let len = tx.emit(seq, &mut buf);
    let start = Clock::now();
    let mut sink = 0usize;
    for i in 0..ROUNDS {
        // Every other call repairs a loss, so decode and compare run for real.
        let lost = i % 2;
        let _ = rx.recover(seq, &buf[..len], lost, &mut |b: &[u8]| sink += b.len());
    }
    let decode = per_op(start, ROUNDS);
    println!(
        "journal: encode {encode:.3} µs ({} bytes average), decode/repair {decode:.3} µs \
         ({len} bytes, {sink} repair bytes)",
        total / ROUNDS as usize
    );
}

fn session_packets() {
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
    let mut pump = |now: Instant, from: &mut Session, from_addr, to: &mut Session| {
        while let Some(t) = from.poll_transmit(now, &mut buf) {
            let (port, src) = match t.port {
                Port::Control => (Port::Control, from_addr),
                Port::Data => (Port::Data, data(from_addr)),
            };
            to.handle_datagram(now, port, src, &buf[..t.len]);
        }
    };
    for _ in 0..10 {
        pump(now, &mut b, b_addr, &mut a);
        pump(now, &mut a, a_addr, &mut b);
    }
    assert!(a.is_connected() && b.is_connected(), "handshake");
    let start = Clock::now();
    for i in 0..ROUNDS {
        now += Duration::from_micros(500);
        let note = ShortMessage::from_bytes(&[0x90, (i % 128) as u8, 100]).unwrap();
        a.send_midi(now, MidiMessage::Short(note));
        a.handle_timeout(now);
        b.handle_timeout(now);
        pump(now, &mut a, a_addr, &mut b);
        pump(now, &mut b, b_addr, &mut a);
        while b.poll_event().is_some() {}
        while a.poll_event().is_some() {}
    }
    let took = per_op(start, ROUNDS);
    let (sent, received) = (a.stats().packets_sent, b.stats().packets_received);
    println!(
        "session: one note a packet, built with its journal, parsed and delivered: {took:.3} µs \
         ({sent} packets sent, {received} received)"
    );
}

fn main() {
    journal();
    session_packets();
}
