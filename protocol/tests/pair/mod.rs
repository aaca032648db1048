//! A `Pair` harness: two endpoints in memory on a simulated clock, joined by a link with seeded
//! latency, jitter, loss, duplication and reordering.
#![allow(dead_code)] // each test binary uses its own part of the harness

mod flights;

use std::net::SocketAddr;

use protocol::endpoint::{AcceptPolicy, Endpoint, SessionId};
use protocol::rng::Rng;
use protocol::session::{Config, Event, SocketKind};
use protocol::time::{Duration, Instant};

pub use flights::Flights;

/// Decides per datagram (sending node, destination port, bytes) whether the link drops it.
pub type DropFilter = Box<dyn FnMut(usize, SocketKind, &[u8]) -> bool>;

pub const A: usize = 0;
pub const B: usize = 1;

/// How the link treats each datagram, in both directions.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub latency: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Lose this many datagrams in a row when a loss happens (bursts).
    pub burst: u32,
    /// Drop everything.
    pub blackhole: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(2),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            burst: 1,
            blackhole: false,
        }
    }
}

pub struct Node {
    pub endpoint: Endpoint,
    pub control: SocketAddr,
    pub events: Vec<(SessionId, Event)>,
}

impl Node {
    fn port_addr(&self, port: SocketKind) -> SocketAddr {
        let mut a = self.control;
        if port == SocketKind::Data {
            a.set_port(a.port() + 1);
        }
        a
    }
}

struct InFlight {
    to: usize,
    port: SocketKind,
    from: SocketAddr,
    bytes: Vec<u8>,
}

pub struct Pair {
    pub now: Instant,
    pub nodes: [Node; 2],
    pub link: LinkConfig,
    rng: Rng,
    flights: Flights<InFlight>,
    burst_left: u32,
    pub delivered: u64,
    pub dropped: u64,
    /// Drop every datagram for which this returns true (after the seeded faults).
    pub filter: Option<DropFilter>,
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Pair {
    pub fn new(seed: u64, link: LinkConfig) -> Pair {
        Pair::with_configs(
            seed,
            link,
            named("Alice"),
            named("Bob"),
            AcceptPolicy::default(),
        )
    }

    pub fn with_configs(
        seed: u64,
        link: LinkConfig,
        a: Config,
        b: Config,
        b_policy: AcceptPolicy,
    ) -> Pair {
        let node = |config, control, policy, seed| Node {
            endpoint: Endpoint::new(config, policy, seed),
            control: addr(control),
            events: Vec::new(),
        };
        Pair {
            now: Instant::from_micros(1_000_000),
            nodes: [
                node(a, "10.0.0.1:5004", AcceptPolicy::default(), seed ^ 0xA),
                node(b, "10.0.0.2:6000", b_policy, seed ^ 0xB),
            ],
            link,
            rng: Rng::new(seed),
            flights: Flights::default(),
            burst_left: 0,
            delivered: 0,
            dropped: 0,
            filter: None,
        }
    }

    /// Moves the nodes to other control addresses (the data ports follow, one above).
    pub fn at(mut self, a: &str, b: &str) -> Pair {
        self.nodes[A].control = addr(a);
        self.nodes[B].control = addr(b);
        self
    }

    /// Node `from` invites node `to`.
    pub fn connect(&mut self, from: usize, to: usize) -> SessionId {
        let target = self.nodes[to].control;
        let now = self.now;
        self.nodes[from].endpoint.connect(now, target)
    }

    /// Moves datagrams and events until nothing is left to do at `now`.
    fn settle(&mut self) {
        let mut buf = vec![0u8; 2048];
        for i in 0..2 {
            let now = self.now;
            self.nodes[i].endpoint.handle_timeout(now);
            while let Some(t) = self.nodes[i].endpoint.poll_transmit(now, &mut buf) {
                let from = self.nodes[i].port_addr(t.port);
                let to = if t.dst.ip() == self.nodes[A].control.ip() {
                    A
                } else {
                    B
                };
                let port = if t.dst == self.nodes[to].control {
                    SocketKind::Control
                } else {
                    SocketKind::Data
                };
                self.send(i, to, port, from, buf[..t.len].to_vec());
            }
            while let Some(e) = self.nodes[i].endpoint.poll_event() {
                self.nodes[i].events.push(e);
            }
        }
    }

    fn send(
        &mut self,
        from_node: usize,
        to: usize,
        port: SocketKind,
        from: SocketAddr,
        bytes: Vec<u8>,
    ) {
        if let Some(filter) = self.filter.as_mut() {
            if filter(from_node, port, &bytes) {
                self.dropped += 1;
                return;
            }
        }
        if self.link.blackhole {
            self.dropped += 1;
            return;
        }
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.dropped += 1;
            return;
        }
        if self.rng.chance(self.link.loss) {
            self.burst_left = self.link.burst.saturating_sub(1);
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.link.jitter.as_micros() as u64;
            let delay = self.link.latency + Duration::from_micros(self.rng.below(jitter + 1));
            self.flights.send(
                self.now + delay,
                InFlight {
                    to,
                    port,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// Advances the clock to the next thing that happens (a delivery or a deadline), at most
    /// `limit`; returns false when nothing is scheduled before it.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.settle();
        let next_delivery = self.flights.next_at();
        let next_timer = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.endpoint.poll_timeout())
            .min();
        let Some(next) = next_delivery.into_iter().chain(next_timer).min() else {
            return false;
        };
        if next > limit {
            self.now = limit;
            self.settle();
            return false;
        }
        self.now = self.now.max(next);
        while let Some(f) = self.flights.land(self.now) {
            self.delivered += 1;
            let now = self.now;
            let _ = self.nodes[f.to]
                .endpoint
                .handle_datagram(now, f.port, f.from, &f.bytes);
        }
        self.settle();
        true
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    /// Runs until `done` holds, for at most `max` of simulated time; returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let limit = self.now + max;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    pub fn connected(&self, node: usize) -> usize {
        self.events_of(node)
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count()
    }

    pub fn events_of(&self, node: usize) -> impl Iterator<Item = &Event> {
        self.nodes[node].events.iter().map(|(_, e)| e)
    }

    /// The MIDI bytes node received, in order.
    pub fn midi_received(&self, node: usize) -> Vec<Vec<u8>> {
        self.events_of(node)
            .filter_map(|e| match e {
                Event::Midi(m) => Some(m.message.as_bytes().to_vec()),
                _ => None,
            })
            .collect()
    }

    /// The first connected session of a node.
    pub fn session_id(&self, node: usize) -> SessionId {
        self.nodes[node]
            .endpoint
            .sessions()
            .next()
            .map(|(id, _)| id)
            .expect("a session")
    }
}

pub fn named(name: &str) -> Config {
    Config {
        name: name.to_string(),
        ..Config::default()
    }
}
