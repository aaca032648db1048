//! The endpoint's shortcuts (sessions found by their peer's address, the next deadline kept
//! from the last pass, events taken from the sessions touched) against the full passes
//! over all sessions that they replace, over random traffic from many peers.
use std::net::SocketAddr;

use proptest::prelude::*;
use protocol::endpoint::{AcceptPolicy, Dropped, Endpoint, SessionId};
use protocol::session::{Config, Session, SocketKind};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::{Clock, Command, End, Feedback, Invitation};
use protocol::wire::rtp;

const PEERS: u16 = 6;

#[derive(Clone, Debug)]
enum Op {
    /// Peer `p` invites on both ports; `moved` puts its data port away from control + 1.
    Invite {
        p: u16,
        moved: bool,
    },
    /// Peer `p` restarts: a new token and SSRC, invited again from the same ports.
    Restart {
        p: u16,
    },
    Rtp {
        p: u16,
    },
    Rs {
        p: u16,
    },
    Ck {
        p: u16,
    },
    By {
        p: u16,
    },
    /// The owner closes the session at index `k` of those listed.
    Close {
        k: usize,
    },
    /// Time passes by this many milliseconds.
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PEERS;
    prop_oneof![
        (p.clone(), any::<bool>()).prop_map(|(p, moved)| Op::Invite { p, moved }),
        p.clone().prop_map(|p| Op::Restart { p }),
        p.clone().prop_map(|p| Op::Rtp { p }),
        p.clone().prop_map(|p| Op::Rs { p }),
        p.clone().prop_map(|p| Op::Ck { p }),
        p.prop_map(|p| Op::By { p }),
        (0usize..8).prop_map(|k| Op::Close { k }),
        prop_oneof![1u64..50, 500u64..20_000].prop_map(|ms| Op::Wait { ms }),
    ]
}

/// One simulated peer: its ports, and the token and SSRC of its current invitation.
#[derive(Clone, Copy)]
struct Peer {
    control: SocketAddr,
    data: SocketAddr,
    token: u32,
    ssrc: u32,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn command(c: Command<'_>) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let n = c.emit(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn rtp_packet(ssrc: u32, sequence: u16) -> Vec<u8> {
    let mut buf = vec![0u8; rtp::HEADER_LEN + 1];
    rtp::Header {
        marker: true,
        payload_type: rtp::PAYLOAD_TYPE_MIDI,
        sequence,
        timestamp: 0,
        ssrc,
    }
    .emit(&mut buf[..rtp::HEADER_LEN])
    .unwrap();
    // An empty command section, no journal.
    buf
}

/// The session a datagram from `from` on `port` belongs to, by a pass over all sessions in
/// id order: what `Endpoint::handle_datagram` did before it kept sessions by address.
fn scan(ep: &Endpoint, port: SocketKind, from: SocketAddr, bytes: &[u8]) -> Option<SessionId> {
    let by_ssrc =
        |ssrc: u32| move |s: &Session| s.is_peer(port, from) && s.peer_ssrc() == Some(ssrc);
    let matches: Box<dyn Fn(&Session) -> bool> = match Command::parse(bytes) {
        Ok(Command::End(end)) => Box::new(move |s: &Session| {
            s.is_peer(port, from) && (s.token() == end.token || s.peer_ssrc() == Some(end.ssrc))
        }),
        Ok(Command::Clock(ck)) => Box::new(by_ssrc(ck.ssrc)),
        Ok(Command::Feedback(fb)) => Box::new(by_ssrc(fb.ssrc)),
        Ok(_) => return None,
        Err(_) => Box::new(by_ssrc(rtp::Packet::parse(bytes).ok()?.header.ssrc)),
    };
    ep.sessions()
        .find(|(_, s)| s.peer_control().ip() == from.ip() && matches(s))
        .map(|(id, _)| id)
}

struct Sim {
    ep: Endpoint,
    now: Instant,
    peers: Vec<Peer>,
    next: u32,
    buf: Vec<u8>,
}

impl Sim {
    fn new() -> Sim {
        let peers = (0..PEERS)
            .map(|p| Peer {
                control: addr(7000 + 4 * p),
                data: addr(7000 + 4 * p + 1),
                token: u32::from(p),
                ssrc: 100 + u32::from(p),
            })
            .collect();
        Sim {
            ep: Endpoint::new(Config::default(), AcceptPolicy::default(), 7),
            now: Instant::from_micros(1_000_000),
            peers,
            next: 1000,
            buf: vec![0u8; 1500],
        }
    }

    /// A datagram to the endpoint; one that needs a session must reach the one a full
    /// pass finds.
    fn send(&mut self, port: SocketKind, from: SocketAddr, bytes: &[u8]) -> Result<(), String> {
        let expected = scan(&self.ep, port, from, bytes);
        let got = self.ep.handle_datagram(self.now, port, from, bytes);
        let is_invitation = matches!(Command::parse(bytes), Ok(Command::Invitation(_)));
        if !is_invitation {
            match (got, expected) {
                (Ok(id), Some(e)) if id == e => {}
                (Err(Dropped::UnknownSession | Dropped::Late), None) => {}
                other => return Err(format!("{other:?} from {from} on {port:?}")),
            }
        }
        Ok(())
    }

    fn invite(&mut self, p: u16) -> Result<(), String> {
        let peer = self.peers[usize::from(p)];
        let inv = command(Command::Invitation(Invitation {
            token: peer.token,
            ssrc: peer.ssrc,
            name: Some("peer"),
        }));
        self.send(SocketKind::Control, peer.control, &inv)?;
        self.send(SocketKind::Data, peer.data, &inv)
    }

    fn run(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Invite { p, moved } => {
                if moved {
                    self.peers[usize::from(p)].data = addr(7000 + 4 * p + 2);
                }
                self.invite(p)?;
            }
            Op::Restart { p } => {
                self.next += 1;
                self.peers[usize::from(p)].token = self.next;
                self.peers[usize::from(p)].ssrc = self.next;
                self.invite(p)?;
            }
            Op::Rtp { p } => {
                let peer = self.peers[usize::from(p)];
                self.next += 1;
                let packet = rtp_packet(peer.ssrc, self.next as u16);
                self.send(SocketKind::Data, peer.data, &packet)?;
            }
            Op::Rs { p } => {
                let peer = self.peers[usize::from(p)];
                let rs = command(Command::Feedback(Feedback {
                    ssrc: peer.ssrc,
                    seq: 0,
                }));
                self.send(SocketKind::Control, peer.control, &rs)?;
            }
            Op::Ck { p } => {
                let peer = self.peers[usize::from(p)];
                let ck = command(Command::Clock(Clock {
                    ssrc: peer.ssrc,
                    count: 0,
                    timestamps: [1, 0, 0],
                }));
                self.send(SocketKind::Data, peer.data, &ck)?;
            }
            Op::By { p } => {
                let peer = self.peers[usize::from(p)];
                let by = command(Command::End(End {
                    token: peer.token,
                    ssrc: peer.ssrc,
                }));
                self.send(SocketKind::Control, peer.control, &by)?;
            }
            Op::Close { k } => {
                let ids: Vec<SessionId> = self.ep.sessions().map(|(id, _)| id).collect();
                if let Some(&id) = ids.get(k) {
                    self.ep.session_mut(id).unwrap().close();
                }
            }
            Op::Wait { ms } => {
                self.now += Duration::from_millis(ms);
                self.ep.handle_timeout(self.now);
            }
        }
        // The daemon's order at the end of each turn.
        while self.ep.poll_event().is_some() {}
        while self.ep.poll_transmit(self.now, &mut self.buf).is_some() {}
        let deadline = self.ep.poll_timeout();
        let full = self
            .ep
            .sessions()
            .filter_map(|(_, s)| s.poll_timeout())
            .min();
        if self.ep.waiting() == 0 && deadline != full {
            return Err(format!(
                "next deadline {deadline:?}, a full pass says {full:?}"
            ));
        }
        // Everything the sessions had to say was taken, and what ended is gone once drained
        // (its BY sent, and its events taken once more).
        while self.ep.poll_event().is_some() {}
        if let Some((id, _)) = self.ep.sessions().find(|(_, s)| s.is_drained()) {
            return Err(format!("{id:?} drained but kept"));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn shortcuts_agree_with_full_passes(ops in prop::collection::vec(op(), 1..120)) {
        let mut sim = Sim::new();
        for op in &ops {
            if let Err(e) = sim.run(op) {
                return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
            }
        }
    }
}

/// Datagrams from a peer whose data port is not its control port + 1 reach its session once
/// its invitation on that port was accepted, and a later session from the same ports gets
/// them once the first has gone.
#[test]
fn a_data_port_learned_from_the_invitation_is_looked_up() {
    let mut sim = Sim::new();
    sim.run(&Op::Invite { p: 0, moved: true }).unwrap();
    let peer = sim.peers[0];
    let (id, _) = sim.ep.sessions().next().unwrap();
    assert!(sim.ep.session(id).unwrap().is_connected());
    let packet = rtp_packet(peer.ssrc, 1);
    assert_eq!(
        sim.ep
            .handle_datagram(sim.now, SocketKind::Data, peer.data, &packet),
        Ok(id)
    );
    let wrong = addr(7001);
    assert_eq!(
        sim.ep
            .handle_datagram(sim.now, SocketKind::Data, wrong, &packet),
        Err(Dropped::UnknownSession),
        "not from control + 1 any more"
    );
    sim.run(&Op::By { p: 0 }).unwrap();
    assert_eq!(sim.ep.session_count(), 0, "ended and drained: removed");
    sim.run(&Op::Restart { p: 0 }).unwrap();
    let (again, _) = sim.ep.sessions().next().unwrap();
    assert_ne!(again, id);
    let peer = sim.peers[0];
    let packet = rtp_packet(peer.ssrc, 2);
    assert_eq!(
        sim.ep
            .handle_datagram(sim.now, SocketKind::Data, peer.data, &packet),
        Ok(again)
    );
}

/// What a peer sent before it learned that its session ended (a guard packet crossing our BY)
/// is late, not a stranger's, for a few seconds; only from the ended session's own address and
/// SSRC.
#[test]
fn datagrams_of_a_session_that_just_ended_are_late() {
    let mut sim = Sim::new();
    sim.run(&Op::Invite { p: 0, moved: false }).unwrap();
    let peer = sim.peers[0];
    sim.run(&Op::Close { k: 0 }).unwrap();
    assert_eq!(sim.ep.session_count(), 0, "closed and drained: removed");
    let send = |sim: &mut Sim, from: SocketAddr, ssrc: u32| {
        let packet = rtp_packet(ssrc, 1);
        sim.ep
            .handle_datagram(sim.now, SocketKind::Data, from, &packet)
    };
    assert_eq!(send(&mut sim, peer.data, peer.ssrc), Err(Dropped::Late));
    assert_eq!(
        send(&mut sim, peer.data, peer.ssrc + 1),
        Err(Dropped::UnknownSession),
        "another SSRC"
    );
    assert_eq!(
        send(&mut sim, addr(7009), peer.ssrc),
        Err(Dropped::UnknownSession),
        "another address"
    );
    sim.run(&Op::Wait { ms: 4_900 }).unwrap();
    assert_eq!(send(&mut sim, peer.data, peer.ssrc), Err(Dropped::Late));
    sim.run(&Op::Wait { ms: 100 }).unwrap();
    assert_eq!(
        send(&mut sim, peer.data, peer.ssrc),
        Err(Dropped::UnknownSession)
    );
    let drops = sim.ep.drops();
    assert_eq!((drops.late, drops.unknown_session), (2, 3));
}
