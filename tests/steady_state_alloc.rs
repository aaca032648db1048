//! No heap allocation per packet or per sequencer event in steady state, counted by a global
//! allocator of this test binary:
//! - two connected sessions exchange notes (with the journal on, RS flowing back) and, once
//!   warmed up, neither sending nor receiving a packet allocates;
//! - MIDI from local ports, through the sequencer seam (the fake here; the real one in the
//!   ignored test, which tests/vm/seq_probe.sh runs on a kernel sequencer) and the bridge to
//!   the actions for sessions, allocates nothing per message.
//!
//! A global allocator takes `unsafe` (protocol/ forbids it), and it counts for the whole binary
//! it is in, so it gets a test binary of its own: this one. The daemon is a binary crate, so its
//! sequencer seam and bridge (with the options it uses) are compiled in here from their files,
//! as tests/vm/seq_probe.rs does; their own unit tests come along and run here again. Tests run
//! in parallel threads: each counts its own allocations.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use protocol::midi::{MidiMessage, ShortMessage};
use protocol::session::{Config, Event, Session, SocketKind};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::Command;

#[path = "../src/seq/mod.rs"]
#[allow(dead_code)]
mod seq;

#[path = "../src/options.rs"]
#[allow(dead_code)]
mod options;

#[path = "../src/bridge.rs"]
#[allow(dead_code)]
mod bridge;

use bridge::{Action, Bridge};
use seq::fake::FakeSequencer;
use seq::{PortId, SeqAddr, SeqInput, Sequencer};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

/// Allocations so far by the calling thread.
fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const A_CONTROL: &str = "10.0.0.1:5004";
const B_CONTROL: &str = "10.0.0.2:5004";

fn data_port(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

/// Delivers everything `from` wants to send to `to`; returns how many datagrams.
fn exchange(now: Instant, from: &mut Session, from_addr: SocketAddr, to: &mut Session) -> usize {
    exchange_counting(now, from, from_addr, to).0
}

/// [`exchange`], and the allocations `from` made writing the datagrams (not those of `to`
/// taking them).
fn exchange_counting(
    now: Instant,
    from: &mut Session,
    from_addr: SocketAddr,
    to: &mut Session,
) -> (usize, u64) {
    let mut buf = [0u8; 1500];
    let (mut n, mut allocated) = (0, 0);
    loop {
        let before = allocations();
        let transmit = from.poll_transmit(now, &mut buf);
        allocated += allocations() - before;
        let Some(t) = transmit else {
            return (n, allocated);
        };
        let src = match t.port {
            SocketKind::Control => from_addr,
            SocketKind::Data => data_port(from_addr),
        };
        let port = if t.dst.port() % 2 == 0 {
            SocketKind::Control
        } else {
            SocketKind::Data
        };
        to.handle_datagram(now, port, src, &buf[..t.len]);
        n += 1;
    }
}

/// Sessions A and B connected to each other at `now`.
fn connected_pair(now: Instant) -> (Session, Session) {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        (A_CONTROL.parse().unwrap(), B_CONTROL.parse().unwrap());
    let mut a = Session::connect(Config::default(), now, b_addr, 1);
    // B answers A's first IN like an endpoint would.
    let mut buf = [0u8; 1500];
    let t = a.poll_transmit(now, &mut buf).expect("IN");
    let Ok(Command::Invitation(inv)) = Command::parse(&buf[..t.len]) else {
        panic!("no IN");
    };
    let mut b = Session::accept(Config::default(), now, a_addr, &inv, 2);
    for _ in 0..10 {
        exchange(now, &mut b, b_addr, &mut a);
        exchange(now, &mut a, a_addr, &mut b);
    }
    assert!(a.is_connected() && b.is_connected());
    (a, b)
}

#[test]
fn sending_and_receiving_packets_does_not_allocate() {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        (A_CONTROL.parse().unwrap(), B_CONTROL.parse().unwrap());
    let mut now = Instant::from_micros(1_000_000);
    let (mut a, mut b) = connected_pair(now);

    let note = |i: u32| {
        let on = if i % 2 == 0 { 0x90 } else { 0x80 };
        MidiMessage::Short(ShortMessage::from_bytes(&[on, 60 + (i % 12) as u8, 100]).unwrap())
    };
    let round = |i: u32, now: Instant, a: &mut Session, b: &mut Session| -> usize {
        a.send_midi(now, &note(i));
        a.handle_timeout(now);
        b.handle_timeout(now);
        let packets = exchange(now, a, a_addr, b) + exchange(now, b, b_addr, a);
        while let Some(e) = b.poll_event() {
            assert!(!matches!(e, Event::Disconnected { .. }));
        }
        while a.poll_event().is_some() {}
        packets
    };
    // Warm-up: queues and journal tables reach their working size.
    for i in 0..2_000 {
        now += Duration::from_millis(5);
        round(i, now, &mut a, &mut b);
    }
    let before = allocations();
    let mut packets = 0;
    for i in 0..2_000 {
        now += Duration::from_millis(5);
        packets += round(i, now, &mut a, &mut b);
    }
    let allocated = allocations() - before;
    println!("{packets} packets in steady state, {allocated} allocations");
    assert!(packets >= 2_000);
    assert_eq!(allocated, 0);
}

/// A hub sends each SysEx it forwards to every peer: queueing copies it into the session's own
/// buffer (no copy of the message per peer) and its packets and journals (which log the SysEx
/// until the peer's RS confirms it) allocate nothing once their buffers have grown.
#[test]
fn sending_sysex_does_not_allocate() {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        (A_CONTROL.parse().unwrap(), B_CONTROL.parse().unwrap());
    let mut now = Instant::from_micros(1_000_000);
    let (mut a, mut b) = connected_pair(now);
    let sysex =
        MidiMessage::from_bytes(&[0xF0, 0x7D, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xF7]).unwrap();
    let mut sending = 0;
    for i in 0..2_000 {
        now += Duration::from_millis(5);
        let before = allocations();
        a.send_midi(now, &sysex);
        a.handle_timeout(now);
        let queued = allocations() - before;
        let (_, sent) = exchange_counting(now, &mut a, a_addr, &mut b);
        if i >= 1_000 {
            sending += queued + sent;
        }
        b.handle_timeout(now);
        exchange(now, &mut b, b_addr, &mut a);
        while b.poll_event().is_some() {}
        while a.poll_event().is_some() {}
    }
    assert_eq!(sending, 0);
}

/// The i-th of a run of note-ons and note-offs over all channels and notes.
fn event(i: usize) -> [u8; 3] {
    let status = if i % 2 == 0 { 0x90 } else { 0x80 };
    [
        status | (i / 2 % 16) as u8,
        (i / 2 % 128) as u8,
        1 + (i % 100) as u8,
    ]
}

#[test]
fn midi_from_local_ports_through_the_bridge_does_not_allocate() {
    const N: usize = 2_000;
    let mut fake = FakeSequencer::new().unwrap();
    let source = SeqAddr {
        client: 20,
        port: 0,
    };
    // Network is port 0, the peer's port 1. The inputs wait in the fake up front: filling
    // its queue is the kernel's work, not the daemon's.
    for i in 0..2 * N {
        fake.push_midi(PortId(1), source, &event(i));
    }
    let mut bridge: Bridge<u32, FakeSequencer> = Bridge::new(fake).unwrap();
    bridge.add_peer(7, "peer").unwrap();
    let mut out = Vec::new();
    let mut round = |first: usize| {
        for i in first..first + N {
            assert!(bridge.poll(&mut out).unwrap());
            let want = MidiMessage::from_bytes(&event(i)).unwrap();
            assert_eq!(out.pop(), Some(Action::ToPeer(7, want)));
        }
    };
    round(0);
    let before = allocations();
    round(N);
    let allocated = allocations() - before;
    println!("{N} messages in steady state, {allocated} allocations");
    assert_eq!(allocated, 0);
}

#[test]
#[ignore = "needs a kernel sequencer: tests/vm/seq_probe.sh runs it"]
fn midi_from_the_kernel_sequencer_does_not_allocate() {
    // More than alsa-lib reads from the kernel at once (500 events): its buffer is emptied
    // and refilled within a round.
    const N: usize = 1_000;
    let mut rx = seq::alsa::AlsaSequencer::open("rx").unwrap();
    let rx_port = rx.create_port("in", seq::PortCaps::DUPLEX).unwrap();
    let mut tx = seq::alsa::AlsaSequencer::open("tx").unwrap();
    let tx_port = tx.create_port("out", seq::PortCaps::DUPLEX).unwrap();
    let at = |client, port: PortId| SeqAddr {
        client,
        port: port.0,
    };
    tx.connect(at(tx.client(), tx_port), at(rx.client(), rx_port))
        .unwrap();
    while rx.recv().unwrap().is_some() {} // the subscription notice
    let mut round = |first: usize| {
        for i in first..first + N {
            let message = MidiMessage::from_bytes(&event(i)).unwrap();
            tx.send(tx_port, None, &message).unwrap();
        }
        assert_eq!(tx.backlog(), 0);
        // Direct events are in rx's kernel queue once sent: only rx's reads are counted.
        let before = allocations();
        let mut got = 0;
        while let Some(input) = rx.recv().unwrap() {
            let SeqInput::Midi { message, .. } = input else {
                panic!("not MIDI: {input:?}");
            };
            assert_eq!(message.as_bytes(), event(first + got));
            got += 1;
        }
        assert_eq!(got, N);
        allocations() - before
    };
    round(0);
    let allocated = round(N);
    println!("{N} events from the kernel in steady state, {allocated} allocations");
    assert_eq!(allocated, 0);
}
