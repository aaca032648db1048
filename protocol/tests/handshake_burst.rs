//! Many invitations at once from one host: a legitimate burst connects without a NO, a flood
//! that never follows up stays bounded.
use std::net::SocketAddr;

use protocol::endpoint::{AcceptPolicy, Dropped, Endpoint};
use protocol::session::{Config, DisconnectReason, Event, Session, SocketKind};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::{Command, Invitation};

const RESPONDER: &str = "10.0.0.2:5004";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Our address for `port` of the responder.
fn responder(port: SocketKind) -> SocketAddr {
    let mut a = addr(RESPONDER);
    if port == SocketKind::Data {
        a.set_port(a.port() + 1);
    }
    a
}

/// Initiators on one host, each on its own port pair, and the responder; datagrams are
/// delivered at once and in order.
struct Burst {
    now: Instant,
    endpoint: Endpoint,
    initiators: Vec<(SocketAddr, Session)>,
    rejected: usize,
    /// Every initiator datagram arrives twice (a retry crossing the answer).
    twice: bool,
}

impl Burst {
    fn new(n: u16) -> Burst {
        let now = Instant::from_micros(1_000_000);
        let endpoint = Endpoint::new(Config::default(), AcceptPolicy::default(), 1);
        let initiators = (0..n)
            .map(|i| {
                let ours = addr(&format!("10.0.0.1:{}", 6000 + 2 * i));
                let config = Config {
                    name: format!("initiator {i}"),
                    ..Config::default()
                };
                let session = Session::connect(config, now, addr(RESPONDER), u64::from(i) + 7);
                (ours, session)
            })
            .collect();
        Burst {
            now,
            endpoint,
            initiators,
            rejected: 0,
            twice: false,
        }
    }

    /// Delivers datagrams both ways until none is left.
    fn settle(&mut self) {
        let mut buf = vec![0; 1500];
        loop {
            let mut moved = false;
            for (ours, session) in &mut self.initiators {
                while let Some(t) = session.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let mut from = *ours;
                    if t.port == SocketKind::Data {
                        from.set_port(from.port() + 1);
                    }
                    let port = if t.dst == responder(SocketKind::Data) {
                        SocketKind::Data
                    } else {
                        SocketKind::Control
                    };
                    for _ in 0..1 + usize::from(self.twice) {
                        let _ = self
                            .endpoint
                            .handle_datagram(self.now, port, from, &buf[..t.len]);
                    }
                }
            }
            while let Some(t) = self.endpoint.poll_transmit(self.now, &mut buf) {
                moved = true;
                let to = self.initiators.iter_mut().find(|(ours, _)| {
                    ours.ip() == t.dst.ip()
                        && (t.dst.port() == ours.port() || t.dst.port() == ours.port() + 1)
                });
                if let Some((ours, session)) = to {
                    let port = if t.dst.port() == ours.port() {
                        SocketKind::Control
                    } else {
                        SocketKind::Data
                    };
                    session.handle_datagram(self.now, port, responder(t.port), &buf[..t.len]);
                }
            }
            while self.endpoint.poll_event().is_some() {}
            for (_, session) in &mut self.initiators {
                while let Some(event) = session.poll_event() {
                    if event
                        == (Event::Disconnected {
                            reason: DisconnectReason::Rejected,
                        })
                    {
                        self.rejected += 1;
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn connected(&self) -> usize {
        self.initiators
            .iter()
            .filter(|(_, s)| s.is_connected())
            .count()
    }
}

#[test]
fn a_burst_of_a_hundred_invitations_from_one_host_all_connect_without_a_no() {
    let mut burst = Burst::new(100);
    // No time passes: nobody needs to retry.
    burst.settle();
    assert_eq!(burst.rejected, 0);
    assert_eq!(burst.connected(), 100);
    assert_eq!(
        burst
            .endpoint
            .sessions()
            .filter(|(_, s)| s.is_connected())
            .count(),
        100
    );
    assert_eq!(burst.endpoint.waiting(), 0);
}

#[test]
fn repeated_invitations_of_a_burst_make_no_second_session() {
    let mut burst = Burst::new(100);
    burst.twice = true;
    burst.settle();
    assert_eq!(burst.rejected, 0);
    assert_eq!(burst.connected(), 100);
    assert_eq!(burst.endpoint.sessions().count(), 100);
    assert_eq!(burst.endpoint.waiting(), 0);
}

#[test]
fn a_flood_from_many_ports_that_never_follows_up_stays_bounded() {
    let mut endpoint = Endpoint::new(Config::default(), AcceptPolicy::default(), 3);
    let now = Instant::from_micros(1_000_000);
    let mut buf = vec![0; 1500];
    let mut deferred = 0;
    for i in 0..5000u32 {
        let name = format!("flood {i}");
        let inv = Command::Invitation(Invitation {
            token: 0xF00D_0000 + i,
            ssrc: i,
            name: Some(&name),
        });
        let len = inv.emit(&mut buf).unwrap();
        let from = addr(&format!("10.0.0.9:{}", 1024 + 2 * (i % 30000)));
        if endpoint.handle_datagram(now, SocketKind::Control, from, &buf[..len])
            == Err(Dropped::Deferred)
        {
            deferred += 1;
        }
    }
    // A few half-open sessions; the rest wait in a bounded queue or are dropped, unanswered.
    assert_eq!(endpoint.sessions().count(), 8);
    assert!(deferred >= 4900);
    assert_eq!(endpoint.waiting(), 1024);
    let mut answers = 0;
    while endpoint.poll_transmit(now, &mut buf).is_some() {
        answers += 1;
    }
    assert_eq!(answers, 8, "an OK for each half-open session, no NO");
    // Initiators that gave up are forgotten after a while.
    let later = now + Duration::from_secs(3);
    assert!(endpoint.poll_timeout().is_some_and(|at| at <= later));
    endpoint.handle_timeout(later);
    assert_eq!(endpoint.waiting(), 0);
    assert_eq!(endpoint.sessions().count(), 8);
}

/// While the earliest deadline `poll_timeout` found is not due, the endpoint's
/// `handle_timeout` looks only at the sessions touched since: one whose deadline a datagram
/// brought forward still fires on time, one nothing touched fires at its own deadline.
#[test]
fn deadlines_fire_on_time_whether_or_not_a_datagram_moved_them() {
    let mut burst = Burst::new(2);
    burst.settle();
    let first = burst.endpoint.poll_timeout().expect("a deadline");
    // A note from initiator 0: its session owes an RS a second later, before any deadline
    // the endpoint had.
    let note = protocol::midi::MidiMessage::from_bytes(&[0x90, 60, 100]).unwrap();
    let now = burst.now;
    burst.initiators[0].1.send_midi(now, &note);
    burst.settle();
    let rs_at = now + Duration::from_secs(1);
    assert!(rs_at < first);
    burst.endpoint.handle_timeout(rs_at);
    let mut buf = vec![0; 1500];
    let t = burst
        .endpoint
        .poll_transmit(rs_at, &mut buf)
        .expect("an RS");
    assert!(matches!(
        Command::parse(&buf[..t.len]),
        Ok(Command::Feedback(_))
    ));
    assert_eq!(t.dst, burst.initiators[0].0);
    assert_eq!(burst.endpoint.poll_transmit(rs_at, &mut buf), None);
    // The next deadline is the one found before (session 1 was not touched): it fires too.
    let next = burst.endpoint.poll_timeout().expect("a deadline");
    assert_eq!(next, first);
    burst.endpoint.handle_timeout(next);
    assert!(burst.endpoint.poll_transmit(next, &mut buf).is_some());
}

/// A session asked for its deadline before it sent what it had queued: sending arms its
/// guard timer, which must still fire on time.
#[test]
fn a_guard_armed_by_a_send_after_poll_timeout_fires_on_time() {
    let mut burst = Burst::new(2);
    burst.settle();
    let now = burst.now;
    let id = burst.endpoint.sessions().next().expect("a session").0;
    let note = protocol::midi::MidiMessage::from_bytes(&[0x90, 60, 100]).unwrap();
    burst
        .endpoint
        .session_mut(id)
        .expect("the session")
        .send_midi(now, &note);
    let before = burst.endpoint.poll_timeout().expect("a deadline");
    let mut buf = vec![0; 1500];
    assert!(
        burst.endpoint.poll_transmit(now, &mut buf).is_some(),
        "the note"
    );
    assert_eq!(burst.endpoint.poll_transmit(now, &mut buf), None);
    let guard_at = now + protocol::journal::GUARD_FIRST;
    assert!(guard_at < before);
    burst.endpoint.handle_timeout(guard_at);
    assert!(
        burst.endpoint.poll_transmit(guard_at, &mut buf).is_some(),
        "a guard packet"
    );
}
