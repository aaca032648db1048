//! Network MIDI 2.0 endpoints end to end on a simulated clock, over a seeded lossy link.
mod pair;

use std::net::SocketAddr;

use protocol::midi2::endpoint::{AcceptPolicy, Endpoint, SessionId};
use protocol::midi2::session::{ClientAuth, Config, DisconnectReason, Event, HostAuth};
use protocol::midi2::ump::Ump;
use protocol::midi2::wire::{self, bye_reason, Command};
use protocol::rng::Rng;
use protocol::time::{Duration, Instant};

use pair::Flights;

const CLIENT: usize = 0;
const HOST: usize = 1;

/// Decides per datagram (sending node, bytes) whether the link drops it.
type Filter = Box<dyn FnMut(usize, &[u8]) -> bool>;

struct Node {
    endpoint: Endpoint,
    addr: SocketAddr,
    events: Vec<(SessionId, Event)>,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    rng: Rng,
    latency: Duration,
    /// Extra delay up to this, drawn per datagram: reorders them.
    jitter: Duration,
    loss: f64,
    blackhole: bool,
    filter: Option<Filter>,
    flights: Flights<(usize, SocketAddr, Vec<u8>)>,
}

fn config(name: &str) -> Config {
    Config {
        name: name.to_string(),
        product_id: format!("{name}-1"),
        ..Config::default()
    }
}

impl Net {
    /// A client node and a host node (more with `add`).
    fn new(seed: u64, client: Config, host: Config, policy: AcceptPolicy) -> Net {
        let mut net = Net {
            now: Instant::from_micros(1_000_000),
            nodes: Vec::new(),
            rng: Rng::new(seed),
            latency: Duration::from_millis(2),
            jitter: Duration::ZERO,
            loss: 0.0,
            blackhole: false,
            filter: None,
            flights: Flights::default(),
        };
        net.add(client, AcceptPolicy::default(), "10.0.0.1:5000");
        net.add(host, policy, "10.0.0.2:5673");
        net
    }

    fn add(&mut self, config: Config, policy: AcceptPolicy, addr: &str) -> usize {
        let seed = self.rng.next_u64();
        self.nodes.push(Node {
            endpoint: Endpoint::new(config, policy, seed),
            addr: addr.parse().unwrap(),
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn connect(&mut self, from: usize, to: usize) -> SessionId {
        let (now, target) = (self.now, self.nodes[to].addr);
        self.nodes[from].endpoint.connect(now, target)
    }

    fn settle(&mut self) {
        let mut buf = vec![0u8; 1500];
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i].endpoint.handle_timeout(now);
            while let Some(t) = self.nodes[i].endpoint.poll_transmit(now, &mut buf) {
                assert!(t.len <= 1400);
                let bytes = buf[..t.len].to_vec();
                self.send(i, t.dst, bytes);
            }
            while let Some(e) = self.nodes[i].endpoint.poll_event() {
                self.nodes[i].events.push(e);
            }
        }
    }

    fn send(&mut self, from: usize, dst: SocketAddr, bytes: Vec<u8>) {
        let Some(to) = self.nodes.iter().position(|n| n.addr == dst) else {
            return;
        };
        let filtered = self.filter.as_mut().is_some_and(|f| f(from, &bytes));
        if self.blackhole || filtered || self.rng.chance(self.loss) {
            return;
        }
        let jitter = self.rng.below(self.jitter.as_micros() as u64 + 1);
        let at = self.now + self.latency + Duration::from_micros(jitter);
        let src = self.nodes[from].addr;
        self.flights.send(at, (to, src, bytes));
    }

    fn step(&mut self, limit: Instant) -> bool {
        self.settle();
        let next_delivery = self.flights.next_at();
        let next_timer = self
            .nodes
            .iter()
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
        while let Some((to, src, bytes)) = self.flights.land(self.now) {
            let now = self.now;
            let _ = self.nodes[to].endpoint.handle_datagram(now, src, &bytes);
        }
        self.settle();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    fn run_until(&mut self, max: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
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

    fn events(&self, node: usize) -> impl Iterator<Item = &Event> {
        self.nodes[node].events.iter().map(|(_, e)| e)
    }

    fn connected(&self, node: usize) -> usize {
        self.events(node)
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count()
    }

    fn disconnect_reason(&self, node: usize) -> Option<DisconnectReason> {
        self.events(node).find_map(|e| match e {
            Event::Disconnected { reason } => Some(*reason),
            _ => None,
        })
    }

    fn umps(&self, node: usize) -> Vec<Ump> {
        self.events(node)
            .filter_map(|e| match e {
                Event::Ump(u) => Some(*u),
                _ => None,
            })
            .collect()
    }

    fn session_id(&self, node: usize) -> SessionId {
        self.nodes[node]
            .endpoint
            .sessions()
            .next()
            .expect("a session")
            .0
    }

    fn send_ump(&mut self, node: usize, ump: Ump) {
        let id = self.session_id(node);
        let session = self.nodes[node].endpoint.session_mut(id).unwrap();
        assert!(session.send_ump(ump));
    }

    fn stats(&self, node: usize) -> protocol::midi2::session::Stats {
        let id = self.session_id(node);
        self.nodes[node].endpoint.session(id).unwrap().stats()
    }
}

fn note_on(n: u8) -> Ump {
    Ump::new(&[0x2090_0064 | (u32::from(n) << 8)]).unwrap()
}

/// True for datagrams that carry at least one UMP (not only FEC of zero-length commands).
fn carries_ump(bytes: &[u8]) -> bool {
    wire::commands(bytes).is_some_and(|mut cs| {
        cs.any(|c| matches!(c, Ok(Command::UmpData { payload, .. }) if !payload.is_empty()))
    })
}

fn connected_net(seed: u64, client: Config, host: Config) -> Net {
    let mut net = Net::new(seed, client, host, AcceptPolicy::default());
    net.connect(CLIENT, HOST);
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.connected(CLIENT) == 1
            && n.connected(HOST) == 1)
    );
    net
}

#[test]
fn handshake_exchanges_names_and_product_ids() {
    let net = connected_net(1, config("Keys"), config("Hub"));
    let seen = |node| {
        net.events(node).find_map(|e| match e {
            Event::Connected { name, product_id } => Some((name.clone(), product_id.clone())),
            _ => None,
        })
    };
    assert_eq!(seen(CLIENT), Some(("Hub".into(), "Hub-1".into())));
    assert_eq!(seen(HOST), Some(("Keys".into(), "Keys-1".into())));
}

#[test]
fn shared_secret_right_and_wrong() {
    let host = Config {
        host_auth: HostAuth::Secret("s3cret".into()),
        ..config("Hub")
    };
    let good = Config {
        client_auth: ClientAuth::Secret("s3cret".into()),
        ..config("Keys")
    };
    connected_net(2, good, host.clone());

    let bad = Config {
        client_auth: ClientAuth::Secret("guess".into()),
        ..config("Keys")
    };
    let mut net = Net::new(3, bad, host.clone(), AcceptPolicy::default());
    net.connect(CLIENT, HOST);
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.disconnect_reason(CLIENT),
        Some(DisconnectReason::AuthFailed)
    );
    assert_eq!(net.connected(HOST), 0);
    assert_eq!(net.connected(CLIENT), 0);

    // A client without credentials cannot offer the method: refused at once.
    let mut net = Net::new(4, config("Keys"), host, AcceptPolicy::default());
    net.connect(CLIENT, HOST);
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.disconnect_reason(CLIENT),
        Some(DisconnectReason::Refused(bye_reason::NO_MATCHING_AUTH))
    );
}

#[test]
fn user_auth_right_and_wrong() {
    let host = Config {
        host_auth: HostAuth::Users(vec![
            ("bob".into(), "x".into()),
            ("alice".into(), "pw".into()),
        ]),
        ..config("Hub")
    };
    let user = |user: &str, password: &str| Config {
        client_auth: ClientAuth::User {
            user: user.into(),
            password: password.into(),
        },
        ..config("Keys")
    };
    connected_net(5, user("alice", "pw"), host.clone());
    for (seed, (name, password)) in [(6, ("alice", "wrong")), (7, ("mallory", "pw"))] {
        let mut net = Net::new(seed, user(name, password), host.clone(), Default::default());
        net.connect(CLIENT, HOST);
        net.run_for(Duration::from_secs(5));
        assert_eq!(
            net.disconnect_reason(CLIENT),
            Some(DisconnectReason::AuthFailed),
            "{name}"
        );
        assert_eq!(net.connected(HOST), 0);
    }
}

#[test]
fn credentials_of_one_connection_win_over_the_endpoints() {
    let host = Config {
        host_auth: HostAuth::Users(vec![("alice".into(), "pw".into())]),
        ..config("Hub")
    };
    // The endpoint's own credentials (a shared secret) do not fit this host; the
    // connection's user and password do.
    let client = Config {
        client_auth: ClientAuth::Secret("s3cret".into()),
        ..config("Keys")
    };
    let alice = |password: &str| ClientAuth::User {
        user: "alice".into(),
        password: password.into(),
    };
    let mut net = Net::new(9, client.clone(), host.clone(), AcceptPolicy::default());
    let (now, to) = (net.now, net.nodes[HOST].addr);
    net.nodes[CLIENT]
        .endpoint
        .connect_with(now, to, alice("pw"));
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.connected(CLIENT) == 1
            && n.connected(HOST) == 1)
    );

    let mut net = Net::new(10, client, host, AcceptPolicy::default());
    let (now, to) = (net.now, net.nodes[HOST].addr);
    net.nodes[CLIENT]
        .endpoint
        .connect_with(now, to, alice("wrong"));
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.disconnect_reason(CLIENT),
        Some(DisconnectReason::AuthFailed)
    );
    assert_eq!(net.connected(HOST), 0);
}

#[test]
fn debug_output_shows_no_secret_or_password() {
    let shown = format!(
        "{:?} {:?} {:?}",
        ClientAuth::Secret("s3cret".into()),
        ClientAuth::User {
            user: "alice".into(),
            password: "pw-alice".into()
        },
        Config {
            host_auth: HostAuth::Users(vec![("bob".into(), "pw-bob".into())]),
            client_auth: ClientAuth::Secret("s3cret".into()),
            ..config("Hub")
        }
    );
    assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
    for secret in ["s3cret", "pw-alice", "pw-bob"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(
        format!("{:?}", HostAuth::Secret("x".into())),
        "Secret(<hidden>)"
    );
}

#[test]
fn ump_both_ways_in_order() {
    let mut net = connected_net(8, config("Keys"), config("Hub"));
    for n in 0..20 {
        net.send_ump(CLIENT, note_on(n));
        net.send_ump(HOST, note_on(100 + n));
        net.run_for(Duration::from_millis(3));
    }
    // A 128-bit UMP too (a UMP stream message).
    let stream = Ump::new(&[0xF000_0101, 0, 0, 0]).unwrap();
    net.send_ump(CLIENT, stream);
    net.run_for(Duration::from_millis(50));
    let mut want: Vec<Ump> = (0..20).map(note_on).collect();
    want.push(stream);
    assert_eq!(net.umps(HOST), want);
    assert_eq!(
        net.umps(CLIENT),
        (100..120).map(note_on).collect::<Vec<_>>()
    );
}

#[test]
fn a_lost_datagram_is_repaired_by_fec_without_retransmission() {
    let mut net = connected_net(9, config("Keys"), config("Hub"));
    let mut data_seen = 0;
    net.filter = Some(Box::new(move |from, bytes| {
        if from == CLIENT && carries_ump(bytes) {
            data_seen += 1;
            return data_seen == 2;
        }
        false
    }));
    for n in 0..5 {
        net.send_ump(CLIENT, note_on(n));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.umps(HOST), (0..5).map(note_on).collect::<Vec<_>>());
    assert_eq!(net.stats(HOST).retransmit_requests_sent, 0);
    assert_eq!(net.stats(HOST).lost, 0);
}

#[test]
fn the_last_datagram_lost_is_repaired_by_the_zero_length_tail() {
    let mut net = connected_net(10, config("Keys"), config("Hub"));
    net.filter = Some(Box::new(|from, bytes| from == CLIENT && carries_ump(bytes)));
    net.send_ump(CLIENT, note_on(1));
    net.run_for(Duration::from_millis(1));
    net.filter = None;
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.umps(HOST), vec![note_on(1)]);
    assert_eq!(net.stats(HOST).retransmit_requests_sent, 0);
}

#[test]
fn a_burst_loss_is_repaired_by_retransmission() {
    let mut net = connected_net(11, config("Keys"), config("Hub"));
    let mut data_seen = 0;
    // Five datagrams in a row: more than the three FEC copies cover.
    net.filter = Some(Box::new(move |from, bytes| {
        if from == CLIENT && carries_ump(bytes) {
            data_seen += 1;
            return (3..8).contains(&data_seen);
        }
        false
    }));
    for n in 0..12 {
        net.send_ump(CLIENT, note_on(n));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.umps(HOST), (0..12).map(note_on).collect::<Vec<_>>());
    assert!(net.stats(HOST).retransmit_requests_sent >= 1);
    assert!(net.stats(CLIENT).retransmit_requests_answered >= 1);
    assert_eq!(net.stats(HOST).lost, 0);
}

#[test]
fn a_gap_that_cannot_be_filled_ends_in_a_session_reset_and_loss() {
    let config = Config {
        retransmit_buffer: 4,
        ..config("Keys")
    };
    let mut net = connected_net(12, config, crate::config("Hub"));
    // One that arrives first, so that the host knows where the count stands.
    net.send_ump(CLIENT, note_on(99));
    net.run_for(Duration::from_millis(500));
    // Ten UMPs lost for good, and the sender keeps only four: the gap cannot be filled.
    net.filter = Some(Box::new(|from, bytes| from == CLIENT && carries_ump(bytes)));
    for n in 0..10 {
        net.send_ump(CLIENT, note_on(n));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(1000));
    net.filter = None;
    net.send_ump(CLIENT, note_on(50));
    net.run_for(Duration::from_millis(1000));
    let got = net.umps(HOST);
    assert_eq!(got.last(), Some(&note_on(50)));
    let lost = net.events(HOST).find_map(|e| match e {
        Event::Loss { lost } => Some(*lost),
        _ => None,
    });
    assert!(lost.is_some(), "{:?}", net.nodes[HOST].events);
    assert_eq!(got[0], note_on(99));
    // Ten UMPs and the zero-length commands after them.
    assert!(net.stats(HOST).lost >= 10, "{:?}", net.stats(HOST));
    assert_eq!(got.len(), 2);
    assert!(net.stats(HOST).session_resets >= 1 || net.stats(CLIENT).session_resets >= 1);
    // And the session goes on.
    net.send_ump(CLIENT, note_on(51));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.umps(HOST).last(), Some(&note_on(51)));
}

#[test]
fn random_loss_loses_nothing() {
    for seed in 0..5 {
        let mut net = connected_net(100 + seed, config("Keys"), config("Hub"));
        net.loss = 0.2;
        for n in 0..100u8 {
            net.send_ump(CLIENT, note_on(n));
            net.send_ump(HOST, note_on(n));
            net.run_for(Duration::from_millis(5));
        }
        net.run_for(Duration::from_secs(2));
        let want: Vec<Ump> = (0..100).map(note_on).collect();
        assert_eq!(net.umps(HOST), want, "seed {seed}");
        assert_eq!(net.umps(CLIENT), want, "seed {seed}");
    }
}

#[test]
fn reordering_with_loss_delivers_everything_once_in_order() {
    for seed in 0..5 {
        let mut net = connected_net(300 + seed, config("Keys"), config("Hub"));
        net.loss = 0.1;
        net.jitter = Duration::from_millis(15);
        for n in 0..100u8 {
            net.send_ump(CLIENT, note_on(n));
            net.run_for(Duration::from_millis(4));
        }
        net.run_for(Duration::from_secs(2));
        let want: Vec<Ump> = (0..100).map(note_on).collect();
        assert_eq!(net.umps(HOST), want, "seed {seed}");
        assert_eq!(net.stats(HOST).lost, 0);
    }
}

#[test]
fn midi1_in_and_out_through_the_session() {
    use protocol::midi::MidiMessage;
    use protocol::midi2::ump::ToMidi1;
    let mut net = connected_net(16, config("Keys"), config("Hub"));
    let sysex = MidiMessage::SysEx([&[0xF0][..], &[0x42; 40], &[0xF7]].concat());
    let note = MidiMessage::from_bytes(&[0x91, 60, 100]).unwrap();
    let id = net.session_id(CLIENT);
    let session = net.nodes[CLIENT].endpoint.session_mut(id).unwrap();
    assert!(session.send_midi1(0, &note));
    assert!(session.send_midi1(0, &sysex));
    net.run_for(Duration::from_millis(50));
    let mut to_midi1 = ToMidi1::new(1024);
    let mut got = Vec::new();
    to_midi1.translate_all(&net.umps(HOST), &mut got);
    let got: Vec<MidiMessage> = got.into_iter().map(|g| g.message).collect();
    assert_eq!(got, [note, sysex]);
}

#[test]
fn pings_keep_an_idle_session_and_end_a_dead_one() {
    let mut net = connected_net(13, config("Keys"), config("Hub"));
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.disconnect_reason(CLIENT), None);
    assert_eq!(net.disconnect_reason(HOST), None);
    assert!(net
        .events(CLIENT)
        .any(|e| matches!(e, Event::Latency { rtt } if *rtt == Duration::from_millis(4))));
    net.blackhole = true;
    let dead_at = net.now;
    assert!(net.run_until(Duration::from_secs(30), |n| n
        .disconnect_reason(CLIENT)
        .is_some()
        && n.disconnect_reason(HOST).is_some()));
    assert_eq!(
        net.disconnect_reason(CLIENT),
        Some(DisconnectReason::Timeout)
    );
    assert_eq!(net.disconnect_reason(HOST), Some(DisconnectReason::Timeout));
    // Idle 5 s, then three pings 0.5 s apart.
    let took = net.now - dead_at;
    assert!(took <= Duration::from_secs(7), "{took:?}");
}

#[test]
fn bye_ends_both_sides_and_frees_the_sessions() {
    let mut net = connected_net(14, config("Keys"), config("Hub"));
    let id = net.session_id(CLIENT);
    let now = net.now;
    net.nodes[CLIENT]
        .endpoint
        .session_mut(id)
        .unwrap()
        .close(now);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.disconnect_reason(CLIENT),
        Some(DisconnectReason::Closed)
    );
    assert_eq!(
        net.disconnect_reason(HOST),
        Some(DisconnectReason::PeerBye(bye_reason::TERMINATED))
    );
    assert_eq!(net.nodes[CLIENT].endpoint.sessions().count(), 0);
    assert_eq!(net.nodes[HOST].endpoint.sessions().count(), 0);
}

#[test]
fn too_many_sessions_are_refused_with_bye_0x40() {
    let policy = AcceptPolicy {
        max_sessions: 1,
        ..AcceptPolicy::default()
    };
    let mut net = Net::new(15, config("Keys"), config("Hub"), policy);
    let third = net.add(config("Pads"), AcceptPolicy::default(), "10.0.0.3:5000");
    net.connect(CLIENT, HOST);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(HOST) == 1));
    net.connect(third, HOST);
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.disconnect_reason(third),
        Some(DisconnectReason::Refused(bye_reason::TOO_MANY_SESSIONS))
    );
    assert_eq!(net.nodes[HOST].endpoint.drops().refused, 1);
    assert_eq!(net.disconnect_reason(CLIENT), None);
}

#[test]
fn lost_handshake_datagrams_are_retried() {
    for seed in 0..10 {
        let mut net = Net::new(
            200 + seed,
            Config {
                client_auth: ClientAuth::Secret("k".into()),
                ..config("Keys")
            },
            Config {
                host_auth: HostAuth::Secret("k".into()),
                ..config("Hub")
            },
            AcceptPolicy::default(),
        );
        net.loss = 0.3;
        net.connect(CLIENT, HOST);
        assert!(
            net.run_until(Duration::from_secs(10), |n| n.connected(CLIENT) == 1
                && n.connected(HOST) == 1),
            "seed {seed}: {:?}",
            net.nodes[CLIENT].events
        );
    }
}

#[test]
fn a_long_sysex_queued_at_once_arrives_whole_after_what_came_before() {
    use protocol::midi::MidiMessage;
    use protocol::midi2::ump::ToMidi1;
    let mut net = connected_net(17, config("Keys"), config("Hub"));
    // ~1700 UMPs queued before anything is sent: more than the retransmit buffer holds.
    let sysex = MidiMessage::SysEx([&[0xF0][..], &[0x11; 9_998], &[0xF7]].concat());
    let note = MidiMessage::from_bytes(&[0x91, 60, 100]).unwrap();
    let id = net.session_id(CLIENT);
    let session = net.nodes[CLIENT].endpoint.session_mut(id).unwrap();
    assert!(session.send_midi1(0, &note));
    assert!(session.send_midi1(0, &sysex));
    net.run_for(Duration::from_secs(2));
    let mut to_midi1 = ToMidi1::new(protocol::midi::MAX_SYSEX);
    let mut got = Vec::new();
    to_midi1.translate_all(&net.umps(HOST), &mut got);
    let got: Vec<MidiMessage> = got.into_iter().map(|g| g.message).collect();
    assert_eq!(got, [note, sysex]);
}

#[test]
fn a_150_kb_sysex_queued_at_once_arrives_whole() {
    use protocol::midi::MidiMessage;
    use protocol::midi2::ump::ToMidi1;
    let mut net = connected_net(18, config("Keys"), config("Hub"));
    let sysex = MidiMessage::SysEx([&[0xF0][..], &vec![0x22; 150_000], &[0xF7]].concat());
    let note = MidiMessage::from_bytes(&[0x91, 61, 100]).unwrap();
    let id = net.session_id(CLIENT);
    let session = net.nodes[CLIENT].endpoint.session_mut(id).unwrap();
    assert!(session.send_midi1(0, &sysex));
    assert!(session.send_midi1(0, &note));
    net.run_for(Duration::from_secs(2));
    let mut to_midi1 = ToMidi1::new(protocol::midi::MAX_SYSEX);
    let mut got = Vec::new();
    to_midi1.translate_all(&net.umps(HOST), &mut got);
    let got: Vec<MidiMessage> = got.into_iter().map(|g| g.message).collect();
    assert_eq!(got, [sysex, note]);
}

#[test]
fn data_datagrams_are_paced_after_a_burst() {
    use protocol::midi::MidiMessage;
    let mut net = connected_net(19, config("Keys"), config("Hub"));
    let sysex = MidiMessage::SysEx([&[0xF0][..], &vec![0x22; 100_000], &[0xF7]].concat());
    let (id, now) = (net.session_id(CLIENT), net.now);
    let session = net.nodes[CLIENT].endpoint.session_mut(id).unwrap();
    assert!(session.send_midi1(0, &sysex));
    let mut buf = vec![0u8; 1500];
    let burst = std::iter::from_fn(|| session.poll_transmit(now, &mut buf)).count();
    assert_eq!(burst, 16, "the burst, then nothing until the next slot");
    assert_eq!(
        session.poll_timeout(),
        Some(now + Duration::from_micros(500))
    );
    let later = now + Duration::from_micros(1600);
    let more = std::iter::from_fn(|| session.poll_transmit(later, &mut buf)).count();
    assert_eq!(more, 3, "one datagram per 500 us since");
}
