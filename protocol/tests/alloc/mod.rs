//! A counting global allocator and a builder of idle sessions, shared by the memory test and the
//! benchmark examples (`#[path]`-included there). Install it with
//! `#[global_allocator] static A: Counting = Counting;` in the binary.
#![allow(dead_code)] // each binary uses its own part

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::session::{Config, Event, SocketKind};
use protocol::time::{Duration, Instant};

// Per thread: the test harness allocates on its own thread while a test runs.
thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: isize, allocs: u64) {
    // `try_with`: nothing to count in a thread being torn down.
    let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
    let _ = ALLOCS.try_with(|a| a.set(a.get() + allocs));
}

/// The system allocator, counting per thread the allocations and the bytes held.
pub struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), 0);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, 1);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes this thread holds now (requested sizes, not the allocator's overhead; what it
/// freed of other threads' counts against it).
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Allocations (and reallocations) this thread made so far.
pub fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

const CONTROL_PORT: u16 = 5004;

fn addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], port))
}

/// Endpoints on a simulated clock joined by a perfect link: `n` client endpoints (one host
/// each: an endpoint takes one invitation per host and name at a time) and the server, which
/// holds a session with each.
pub struct Net {
    pub clients: Vec<Endpoint>,
    pub server: Endpoint,
    pub now: Instant,
    /// MIDI events taken (only the clients send any); other events are checked and dropped.
    pub server_midi: usize,
}

impl Net {
    /// Runs every endpoint's timers and delivers what they send, in 10 ms steps, for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let now = self.now;
            for (i, client) in self.clients.iter_mut().enumerate() {
                for (_, port, src, bytes) in pump(now, client, addr(i + 1, CONTROL_PORT)) {
                    let _ = self.server.handle_datagram(now, port, src, &bytes);
                }
            }
            for (dst, port, src, bytes) in pump(now, &mut self.server, addr(0, CONTROL_PORT)) {
                let _ = self.clients[index(dst) - 1].handle_datagram(now, port, src, &bytes);
            }
            for endpoint in self.clients.iter_mut().chain([&mut self.server]) {
                while let Some((_, e)) = endpoint.poll_event() {
                    assert!(!matches!(e, Event::Disconnected { .. }), "{e:?}");
                    self.server_midi += usize::from(matches!(e, Event::Midi(_)));
                }
            }
            self.now += Duration::from_millis(10);
        }
    }
}

/// `n` sessions established through the Endpoint handshake, past their first clock rounds,
/// idle.
pub fn idle_sessions(n: usize) -> Net {
    let config = Config::default();
    let mut server = Endpoint::new(config.clone(), AcceptPolicy::default(), 1);
    let now = Instant::from_micros(1_000_000);
    let clients: Vec<Endpoint> = (0..n)
        .map(|i| {
            let mut c = Endpoint::new(config.clone(), AcceptPolicy::default(), 2 + i as u64);
            c.connect(now, addr(0, CONTROL_PORT));
            c
        })
        .collect();
    server.set_config(config);
    let mut net = Net {
        clients,
        server,
        now,
        server_midi: 0,
    };
    net.run_for(Duration::from_secs(12));
    let connected = |e: &Endpoint| e.sessions().filter(|(_, s)| s.is_connected()).count();
    assert_eq!(connected(&net.server), n, "handshakes");
    assert!(net.clients.iter().all(|c| connected(c) == 1), "handshakes");
    net
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
) -> Vec<(SocketAddr, SocketKind, SocketAddr, Vec<u8>)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    from.handle_timeout(now);
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        let (port, src) = if t.dst.port() == CONTROL_PORT {
            (SocketKind::Control, from_addr)
        } else {
            (
                SocketKind::Data,
                SocketAddr::new(from_addr.ip(), from_addr.port() + 1),
            )
        };
        out.push((t.dst, port, src, buf[..t.len].to_vec()));
    }
    out
}
