//! Network MIDI 2.0 sessions on one UDP socket: each peer address has at most one session
//! (M2-124-UM §6.1: a session is named by the peer's address and port). Invitations from new
//! addresses start host sessions up to a limit; past it they are refused with bye 0x40 "too many
//! sessions". Commands from addresses without a session are answered as amidi2net and Zephyr
//! do: ping with ping reply, bye with bye reply, UMP data and session reset with bye "session
//! not established", anything else with NAK "not expected".
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use super::session::{ClientAuth, Config, Event, Session, Transmit};
use super::wire::{self, bye_reason, nak_reason, Command, DatagramWriter, HEADER_LEN};
use crate::admission::AddressFilter;
use crate::rng::Rng;
use crate::time::Instant;

/// Names a session for as long as the endpoint lives; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Who may start a session with us.
#[derive(Clone, Debug)]
pub struct AcceptPolicy {
    /// Refuse invitations while this many sessions exist (bye 0x40).
    pub max_sessions: usize,
    /// Refuse every invitation (a client-only endpoint); refused with bye 0x42.
    pub refuse_all: bool,
    /// Who may talk to us at all: datagrams from elsewhere are dropped unanswered.
    pub addresses: AddressFilter,
}

impl Default for AcceptPolicy {
    fn default() -> Self {
        AcceptPolicy {
            max_sessions: 16,
            refuse_all: false,
            addresses: AddressFilter::default(),
        }
    }
}

/// Replies owed to addresses without a session; under a flood the rest go unanswered.
const MAX_STRAY_REPLIES: usize = 64;

/// Why a datagram was not handed to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// No `MIDI` signature.
    Malformed,
    /// No session for the address and not an invitation.
    UnknownPeer,
    /// An invitation refused by the policy.
    Refused,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    pub malformed: u64,
    pub unknown_peer: u64,
    pub refused: u64,
}

#[derive(Clone, Copy, Debug)]
enum Stray {
    PingReply(u32),
    ByeReply,
    Bye(u8),
    Nak([u8; HEADER_LEN]),
}

pub struct Endpoint {
    config: Config,
    policy: AcceptPolicy,
    sessions: BTreeMap<SessionId, Session>,
    next_id: u64,
    rng: Rng,
    stray: VecDeque<(SocketAddr, Stray)>,
    events: VecDeque<(SessionId, Event)>,
    drops: DropStats,
}

impl Endpoint {
    pub fn new(config: Config, policy: AcceptPolicy, seed: u64) -> Self {
        Endpoint {
            config,
            policy,
            sessions: BTreeMap::new(),
            next_id: 1,
            rng: Rng::new(seed),
            stray: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropStats::default(),
        }
    }

    /// The configuration of sessions started from now on; running ones keep theirs.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    pub fn set_policy(&mut self, policy: AcceptPolicy) {
        self.policy = policy;
    }

    pub fn drops(&self) -> DropStats {
        self.drops
    }

    /// Starts a client session that invites `peer`; one already there for it is closed first.
    pub fn connect(&mut self, now: Instant, peer: SocketAddr) -> SessionId {
        let auth = self.config.client_auth.clone();
        self.connect_with(now, peer, auth)
    }

    /// [`Endpoint::connect`] answering the host's authentication with `auth` rather than the
    /// configuration's: credentials of this one host.
    pub fn connect_with(&mut self, now: Instant, peer: SocketAddr, auth: ClientAuth) -> SessionId {
        if let Some(id) = self.find(peer) {
            if let Some(old) = self.sessions.get_mut(&id) {
                old.close(now);
            }
        }
        let seed = self.rng.next_u64();
        let config = Config {
            client_auth: auth,
            ..self.config.clone()
        };
        let session = Session::connect(config, now, peer, seed);
        self.insert(session)
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    pub fn sessions_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut Session)> {
        self.sessions.iter_mut().map(|(id, s)| (*id, s))
    }

    pub fn close_all(&mut self, now: Instant) {
        self.sessions.values_mut().for_each(|s| s.close(now));
    }

    fn insert(&mut self, session: Session) -> SessionId {
        let id = SessionId(self.next_id);
        self.next_id += 1;
        self.sessions.insert(id, session);
        id
    }

    /// The session of `peer`: the newest active one, else one still closing (it takes its
    /// bye reply).
    fn find(&self, peer: SocketAddr) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| same_peer(s.peer(), peer) && !s.is_drained())
            .max_by_key(|(id, s)| (s.is_active(), **id))
            .map(|(id, _)| *id)
    }

    /// Hands a datagram to its session, or starts one, or answers it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<SessionId, Dropped> {
        if !self.policy.addresses.admits(from.ip()) {
            self.drops.refused += 1;
            return Err(Dropped::Refused);
        }
        let Some(mut commands) = wire::commands(bytes) else {
            self.drops.malformed += 1;
            return Err(Dropped::Malformed);
        };
        if let Some(id) = self.find(from) {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.handle_datagram(now, bytes);
                return Ok(id);
            }
        }
        match commands.next() {
            Some(Ok(Command::Invitation { .. })) => {
                let live = self.sessions.values().filter(|s| !s.is_drained()).count();
                let refusal = if self.policy.refuse_all {
                    Some(bye_reason::NOT_ACCEPTED)
                } else if live >= self.policy.max_sessions {
                    Some(bye_reason::TOO_MANY_SESSIONS)
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    self.drops.refused += 1;
                    self.answer(from, Stray::Bye(reason));
                    return Err(Dropped::Refused);
                }
                let seed = self.rng.next_u64();
                let mut session = Session::accept(self.config.clone(), now, from, seed);
                session.handle_datagram(now, bytes);
                Ok(self.insert(session))
            }
            first => {
                self.drops.unknown_peer += 1;
                let reply = match first {
                    Some(Ok(Command::Ping(id))) => Some(Stray::PingReply(id)),
                    Some(Ok(Command::Bye { .. })) => Some(Stray::ByeReply),
                    Some(Ok(Command::UmpData { .. } | Command::SessionReset)) => {
                        Some(Stray::Bye(bye_reason::NOT_ESTABLISHED))
                    }
                    Some(Ok(
                        Command::ByeReply | Command::Nak { .. } | Command::SessionResetReply,
                    ))
                    | None => None,
                    Some(Ok(_)) => bytes
                        .get(4..8)
                        .map(|h| Stray::Nak([h[0], h[1], h[2], h[3]])),
                    Some(Err(e)) => Some(Stray::Nak(e.header)).filter(|_| {
                        !matches!(e.header[0], wire::code::NAK | wire::code::NAK_AMIDI2NET)
                    }),
                };
                if let Some(reply) = reply {
                    self.answer(from, reply);
                }
                Err(Dropped::UnknownPeer)
            }
        }
    }

    fn answer(&mut self, to: SocketAddr, reply: Stray) {
        if self.stray.len() < MAX_STRAY_REPLIES {
            self.stray.push_back((to, reply));
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for session in self.sessions.values_mut() {
            if session.poll_timeout().is_some_and(|at| at <= now) {
                session.handle_timeout(now);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(Session::poll_timeout)
            .min()
    }

    /// The next datagram of any session (or a reply to a stray one), written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((dst, stray)) = self.stray.pop_front() {
            let command = match stray {
                Stray::PingReply(id) => Command::PingReply(id),
                Stray::ByeReply => Command::ByeReply,
                Stray::Bye(reason) => Command::Bye { reason, text: "" },
                Stray::Nak(header) => Command::Nak {
                    reason: nak_reason::NOT_EXPECTED,
                    header,
                    text: "",
                },
            };
            let mut w = DatagramWriter::new(buf)?;
            if w.push(&command).is_ok() {
                return Some(Transmit { dst, len: w.len() });
            }
        }
        self.sessions
            .values_mut()
            .find_map(|s| s.poll_transmit(now, buf))
    }

    /// The next event of any session; sessions that ended and sent all they had are removed
    /// once their last event was taken.
    pub fn poll_event(&mut self) -> Option<(SessionId, Event)> {
        if self.events.is_empty() {
            for (id, session) in self.sessions.iter_mut() {
                while let Some(event) = session.poll_event() {
                    self.events.push_back((*id, event));
                }
            }
            self.sessions.retain(|_, s| !s.is_drained());
        }
        self.events.pop_front()
    }
}

/// IPv4 peers may reach a dual-stack socket as IPv4-mapped IPv6 addresses.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi2::wire::code;

    const PEER: &str = "192.0.2.9:5000";

    fn at(ms: u64) -> Instant {
        Instant::from_micros(1_000_000 + ms * 1000)
    }

    fn datagram(c: Command<'_>) -> Vec<u8> {
        let mut buf = vec![0; 64];
        let mut w = DatagramWriter::new(&mut buf).unwrap();
        w.push(&c).unwrap();
        let len = w.len();
        buf.truncate(len);
        buf
    }

    /// An endpoint under `policy` and a peer whose invitation it refused.
    fn refused_invitation(policy: AcceptPolicy) -> (Endpoint, SocketAddr) {
        let mut e = Endpoint::new(Config::default(), policy, 1);
        let peer: SocketAddr = PEER.parse().unwrap();
        let inv = Command::Invitation {
            caps: 0,
            identity: Default::default(),
        };
        assert_eq!(
            e.handle_datagram(at(0), peer, &datagram(inv)),
            Err(Dropped::Refused)
        );
        (e, peer)
    }

    fn replies(e: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 1500];
        std::iter::from_fn(|| {
            e.poll_transmit(now, &mut buf)
                .map(|t| (t.dst, buf[4..t.len].to_vec()))
        })
        .collect()
    }

    #[test]
    fn strays_are_answered_as_other_implementations_do() {
        let mut e = Endpoint::new(Config::default(), AcceptPolicy::default(), 1);
        let peer: SocketAddr = PEER.parse().unwrap();
        let cases = [
            (
                Command::Ping(5),
                vec![code::PING_REPLY, 1, 0, 0, 0, 0, 0, 5],
            ),
            (
                Command::Bye {
                    reason: 1,
                    text: "",
                },
                vec![code::BYE_REPLY, 0, 0, 0],
            ),
            (
                Command::UmpData {
                    seq: 1,
                    payload: &[0x10, 0xF8, 0, 0],
                },
                vec![code::BYE, 0, bye_reason::NOT_ESTABLISHED, 0],
            ),
            (
                Command::RetransmitRequest { seq: 1, count: 0 },
                vec![code::NAK, 1, nak_reason::NOT_EXPECTED, 0, 0x80, 1, 0, 1],
            ),
        ];
        for (command, reply) in cases {
            assert_eq!(
                e.handle_datagram(at(0), peer, &datagram(command)),
                Err(Dropped::UnknownPeer)
            );
            assert_eq!(replies(&mut e, at(0)), [(peer, reply)], "{command:?}");
        }
        // NAKs and bye replies are not answered; datagrams without signature are dropped.
        let nak = Command::Nak {
            reason: 0,
            header: [0; 4],
            text: "",
        };
        assert!(e.handle_datagram(at(0), peer, &datagram(nak)).is_err());
        assert_eq!(
            e.handle_datagram(at(0), peer, b"RTP!"),
            Err(Dropped::Malformed)
        );
        assert!(replies(&mut e, at(0)).is_empty());
        assert_eq!(e.sessions().count(), 0);
        assert_eq!(e.drops().unknown_peer, 5);
    }

    #[test]
    fn refuse_all_answers_bye_not_accepted() {
        let policy = AcceptPolicy {
            refuse_all: true,
            ..AcceptPolicy::default()
        };
        let (mut e, peer) = refused_invitation(policy);
        assert_eq!(
            replies(&mut e, at(0)),
            [(peer, vec![code::BYE, 0, bye_reason::NOT_ACCEPTED, 0])]
        );
    }

    #[test]
    fn addresses_outside_the_policy_are_dropped_unanswered() {
        let policy = AcceptPolicy {
            addresses: AddressFilter {
                allow: vec!["10.0.0.0/8".parse().unwrap()],
                deny: Vec::new(),
            },
            ..AcceptPolicy::default()
        };
        let (mut e, _) = refused_invitation(policy);
        assert!(replies(&mut e, at(0)).is_empty());
        assert_eq!((e.sessions().count(), e.drops().refused), (0, 1));
    }

    #[test]
    fn a_new_connect_to_the_same_peer_takes_its_datagrams() {
        let mut e = Endpoint::new(Config::default(), AcceptPolicy::default(), 1);
        let peer: SocketAddr = PEER.parse().unwrap();
        let old = e.connect(at(0), peer);
        let new = e.connect(at(1), peer);
        assert_ne!(old, new);
        let accepted = Command::Accepted(Default::default());
        assert_eq!(e.handle_datagram(at(2), peer, &datagram(accepted)), Ok(new));
        assert!(e.session(new).unwrap().is_connected());
        // The old one, closed, no longer gets datagrams; it is gone once its bye is sent.
        assert!(!e.session(old).unwrap().is_active());
        let sent = replies(&mut e, at(3));
        let bye = [code::BYE, 0, bye_reason::INVITATION_CANCELLED, 0];
        assert!(sent.iter().any(|(to, b)| *to == peer && b.ends_with(&bye)));
        while e.poll_event().is_some() {}
        assert!(e.session(old).is_none());
        assert!(e.session(new).is_some());
    }
}
