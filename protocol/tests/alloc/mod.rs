//! A counting global allocator and a builder of idle sessions, shared by the memory test and the
//! benchmark examples (`#[path]`-included there). Install it with
//! `#[global_allocator] static A: Counting = Counting;` in the binary.
#![allow(dead_code)] // each binary uses its own part

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering::Relaxed};

use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::session::{Config, Event, Port};
use protocol::time::{Duration, Instant};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocations and the bytes held.
pub struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes held now (requested sizes, not the allocator's overhead).
pub fn live_bytes() -> isize {
    LIVE.load(Relaxed)
}

/// Allocations (and reallocations) so far.
pub fn allocations() -> u64 {
    ALLOCS.load(Relaxed)
}

const CONTROL_PORT: u16 = 5004;

fn addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], port))
}

/// Endpoints on a simulated clock with `n` sessions established: `n` client endpoints (one
/// host each: an endpoint takes one invitation per host and name at a time) each invite the
/// server, which holds the `n` responders. Run past the handshake and the first clock rounds,
/// then idle.
pub fn idle_sessions(n: usize) -> (Vec<Endpoint>, Endpoint) {
    let config = Config::default();
    let server_addr = addr(0, CONTROL_PORT);
    let mut server = Endpoint::new(config.clone(), AcceptPolicy::default(), 1);
    let mut now = Instant::from_micros(1_000_000);
    let mut clients: Vec<Endpoint> = (0..n)
        .map(|i| {
            let mut c = Endpoint::new(config.clone(), AcceptPolicy::default(), 2 + i as u64);
            c.connect(now, server_addr);
            c
        })
        .collect();
    let end = now + Duration::from_secs(12);
    while now < end {
        for (i, client) in clients.iter_mut().enumerate() {
            for (_, port, src, bytes) in pump(now, client, addr(i + 1, CONTROL_PORT)) {
                let _ = server.handle_datagram(now, port, src, &bytes);
            }
        }
        for (dst, port, src, bytes) in pump(now, &mut server, server_addr) {
            let _ = clients[index(dst) - 1].handle_datagram(now, port, src, &bytes);
        }
        now += Duration::from_millis(100);
    }
    let connected = |e: &Endpoint| e.sessions().filter(|(_, s)| s.is_connected()).count();
    assert_eq!(connected(&server), n, "handshakes");
    assert!(clients.iter().all(|c| connected(c) == 1), "handshakes");
    (clients, server)
}

fn index(a: SocketAddr) -> usize {
    match a.ip() {
        std::net::IpAddr::V4(v4) => {
            let [_, a, b, c] = v4.octets();
            (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
        }
        std::net::IpAddr::V6(_) => unreachable!(),
    }
}

/// Runs `from`'s timers and returns what it sends: destination, port, source and bytes.
fn pump(
    now: Instant,
    from: &mut Endpoint,
    from_addr: SocketAddr,
) -> Vec<(SocketAddr, Port, SocketAddr, Vec<u8>)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    from.handle_timeout(now);
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        let (port, src) = if t.dst.port() == CONTROL_PORT {
            (Port::Control, from_addr)
        } else {
            (
                Port::Data,
                SocketAddr::new(from_addr.ip(), from_addr.port() + 1),
            )
        };
        out.push((t.dst, port, src, buf[..t.len].to_vec()));
    }
    while let Some((_, e)) = from.poll_event() {
        assert!(!matches!(e, Event::Disconnected { .. }), "{e:?}");
    }
    out
}
