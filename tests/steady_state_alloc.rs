//! No heap allocation per packet in steady state: two connected sessions exchange notes (with
//! the journal on, RS flowing back) and, once warmed up, neither sending nor receiving a
//! packet allocates. Counted by a global allocator of this test binary, which takes `unsafe`:
//! that is why this protocol test lives in the daemon crate (protocol/ forbids `unsafe`).
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::midi::{MidiMessage, ShortMessage};
use protocol::session::{Config, Event, Port, Session};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::Command;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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
    let mut buf = [0u8; 1500];
    let mut n = 0;
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        let src = match t.port {
            Port::Control => from_addr,
            Port::Data => data_port(from_addr),
        };
        let port = if t.dst.port() % 2 == 0 {
            Port::Control
        } else {
            Port::Data
        };
        to.handle_datagram(now, port, src, &buf[..t.len]);
        n += 1;
    }
    n
}

#[test]
fn sending_and_receiving_packets_does_not_allocate() {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        (A_CONTROL.parse().unwrap(), B_CONTROL.parse().unwrap());
    let mut now = Instant::from_micros(1_000_000);
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

    let note = |i: u32| {
        let on = if i % 2 == 0 { 0x90 } else { 0x80 };
        MidiMessage::Short(ShortMessage::from_bytes(&[on, 60 + (i % 12) as u8, 100]).unwrap())
    };
    let round = |i: u32, now: Instant, a: &mut Session, b: &mut Session| -> usize {
        a.send_midi(now, note(i));
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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut packets = 0;
    for i in 0..2_000 {
        now += Duration::from_millis(5);
        packets += round(i, now, &mut a, &mut b);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("{packets} packets in steady state, {allocations} allocations");
    assert!(packets >= 2_000);
    assert_eq!(allocations, 0);
}
