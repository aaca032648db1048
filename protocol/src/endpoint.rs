//! Many sessions on one pair of ports: maps each incoming datagram to its session (by initiator
//! token for session commands, by the peer's SSRC for CK, RS and RTP, always with the peer's
//! address), starts responder sessions for new invitations, and answers what has no session.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::admission::{AddressFilter, Refusal};
use crate::rng::Rng;
use crate::session::{self, Challenge, Config, Event, Role, Session, SocketKind, Transmit};
use crate::time::{Duration, Instant};
use crate::wire::applemidi::{self, Command, Invitation};
use crate::wire::rtp;

/// Names a session for as long as the endpoint lives; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Who may start a session with us.
#[derive(Clone, Debug, Default)]
pub struct AcceptPolicy {
    /// Refuse new invitations while this many sessions exist.
    pub max_sessions: Option<usize>,
    /// Refuse new invitations from a host that has this many sessions.
    pub max_sessions_per_host: Option<usize>,
    /// Addresses that may talk to us at all; datagrams from others are dropped.
    pub addresses: AddressFilter,
    /// Refuse peers whose name contains one of these (case-insensitive).
    pub refuse_names: Vec<String>,
    /// Refuse every invitation (a client-only endpoint).
    pub refuse_all: bool,
}

impl AcceptPolicy {
    fn refuses(&self, name: &str, sessions: usize, host_sessions: usize) -> Option<Refusal> {
        let lower = name.to_lowercase();
        if self.refuse_all
            || self
                .refuse_names
                .iter()
                .any(|n| lower.contains(&n.to_lowercase()))
        {
            Some(Refusal::Policy)
        } else if self.max_sessions.is_some_and(|max| sessions >= max) {
            Some(Refusal::Sessions)
        } else if self
            .max_sessions_per_host
            .is_some_and(|max| host_sessions >= max)
        {
            Some(Refusal::HostSessions)
        } else {
            None
        }
    }
}

/// Invitations from one host still waiting for their data-port IN: beyond this, new ones are
/// refused, so a flood of invitations cannot fill memory or slow the routing of the rest.
const MAX_HALF_OPEN_PER_HOST: usize = 8;
/// NO answers owed at once; under a flood of refused invitations the rest go unanswered.
const MAX_PENDING_REJECTS: usize = 64;
/// Invitations from one host beyond its half-open bound wait (without answer) for a slot
/// rather than get NO: a legitimate burst (a patchbay restoring its sessions, many clients
/// on one machine) is answered as fast as it completes, while a flood costs one small entry
/// each, up to this bound; beyond it they are dropped silently and the initiator retries.
const MAX_WAITING_PER_HOST: usize = 1024;
/// All hosts together (a spoofed flood from many addresses).
const MAX_WAITING: usize = 4096;
/// A waiting invitation older than this is forgotten: its initiator retries (every 0.5-1 s
/// in the implementations we know) with the same token, which refreshes it; one that gave
/// up must not take a half-open slot.
const WAITING_FOR: Duration = Duration::from_secs(2);
/// Datagrams a peer sent before it learned that its session ended (a guard packet or a CK
/// crossing our BY) arrive up to a round trip after the end: within this, they are late, not
/// strangers.
const LATE_FOR: Duration = Duration::from_secs(5);
/// Ended sessions remembered for that at most, so churn cannot grow memory.
const MAX_ENDED: usize = 64;

/// An invitation held until its host has a free half-open slot.
struct Waiting {
    from: SocketAddr,
    token: u32,
    ssrc: u32,
    name: String,
    since: Instant,
}

/// A session that ended: whose datagrams are late for [`LATE_FOR`] after.
struct Ended {
    peer_control: SocketAddr,
    peer_data: SocketAddr,
    peer_ssrc: u32,
    at: Instant,
}

/// Datagrams that reached no session, by kind; the daemon logs and shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    pub malformed: u64,
    pub unknown_session: u64,
    pub refused: u64,
    /// From the peer of a session that ended a few seconds ago at most.
    pub late: u64,
}

/// Why a datagram was not handed to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    Malformed,
    UnknownSession,
    Refused,
    /// An invitation held until its host has a free half-open slot; answered then.
    Deferred,
    /// From the peer of a session that ended moments ago: expected, not a sign of trouble.
    Late,
}

pub struct Endpoint {
    config: Config,
    policy: AcceptPolicy,
    /// Boxed: a map node has room for eleven entries whether used or not, and a session is
    /// well over a kilobyte inline.
    sessions: BTreeMap<SessionId, Box<Session>>,
    /// Sessions by their peer's control and data addresses, in id order: the session of a CK,
    /// RS, BY or RTP packet is found among those of its sender, not by a pass over all.
    by_peer: HashMap<SocketAddr, Vec<SessionId>>,
    next_id: u64,
    rng: Rng,
    /// NO answers owed: (destination, token of the refused invitation).
    rejects: VecDeque<(SocketAddr, u32)>,
    /// Event order across sessions is kept by polling sessions in id order.
    events: VecDeque<(SessionId, Event)>,
    drops: DropStats,
    /// The last kind of refusal reported, so a flood is reported once; cleared by an accept.
    refusing: Option<Refusal>,
    refusals: VecDeque<(SocketAddr, Refusal)>,
    /// Invitations beyond their host's half-open bound, oldest first.
    waiting: VecDeque<Waiting>,
    /// Sessions that may have something to send: those a datagram, a timer or the owner
    /// (`session_mut`) touched since `poll_transmit` last found them with nothing. Polling
    /// only these keeps a datagram's cost from growing with the number of sessions.
    ready: BTreeSet<SessionId>,
    /// All sessions may have something to send (after `sessions_mut`, `close_all`).
    all_ready: bool,
    /// Where `poll_transmit` last found a datagram while all are ready: the next call starts
    /// there, so sending to N sessions is one pass over them, not N.
    transmit_from: SessionId,
    /// The earliest session deadline as `poll_timeout` last found it, and the sessions touched
    /// since (whose deadlines may have moved; all of them after `sessions_mut`): while that
    /// deadline is not due, `handle_timeout` looks only at those, not at every session.
    next_deadline: Option<Instant>,
    touched: BTreeSet<SessionId>,
    all_touched: bool,
    /// Sessions that may have events, or may have ended and be drained: those touched since
    /// `poll_event` last looked at them, and those it found ended but not yet drained (all
    /// of them after `sessions_mut`, `close_all`).
    eventful: BTreeSet<SessionId>,
    all_eventful: bool,
    /// Sessions that ended lately, oldest first.
    ended: VecDeque<Ended>,
    /// The time of the latest input, for sessions found ended without one.
    now: Instant,
}

impl Endpoint {
    pub fn new(config: Config, policy: AcceptPolicy, seed: u64) -> Self {
        Endpoint {
            config,
            policy,
            sessions: BTreeMap::new(),
            by_peer: HashMap::new(),
            next_id: 1,
            rng: Rng::new(seed),
            rejects: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropStats::default(),
            refusing: None,
            refusals: VecDeque::new(),
            waiting: VecDeque::new(),
            ready: BTreeSet::new(),
            all_ready: false,
            transmit_from: SessionId(0),
            next_deadline: None,
            touched: BTreeSet::new(),
            all_touched: false,
            eventful: BTreeSet::new(),
            all_eventful: false,
            ended: VecDeque::new(),
            now: Instant::default(),
        }
    }

    /// A new kind of refusal since the last one (or since an invitation was accepted): who was
    /// refused and why. Refusals in a row of the same kind are counted, not repeated.
    pub fn poll_refusal(&mut self) -> Option<(SocketAddr, Refusal)> {
        self.refusals.pop_front()
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

    /// Its sessions, whatever their state.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Invitations waiting for a half-open slot of their host.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Starts a session that invites `peer_control`.
    pub fn connect(&mut self, now: Instant, peer_control: SocketAddr) -> SessionId {
        let seed = self.rng.next_u64();
        let session = Session::connect(self.config.clone(), now, peer_control, seed);
        self.insert(session)
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id).map(|s| &**s)
    }

    pub fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.touch(id);
        self.sessions.get_mut(&id).map(|s| &mut **s)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, &**s))
    }

    pub fn sessions_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut Session)> {
        self.touch_all();
        self.sessions.iter_mut().map(|(id, s)| (*id, &mut **s))
    }

    pub fn close_all(&mut self) {
        self.touch_all();
        self.sessions.values_mut().for_each(|s| s.close());
    }

    fn insert(&mut self, session: Session) -> SessionId {
        let id = SessionId(self.next_id);
        self.next_id += 1;
        for addr in [session.peer_control(), session.peer_data()] {
            index_peer(&mut self.by_peer, addr, id);
        }
        self.sessions.insert(id, Box::new(session));
        self.touch(id);
        id
    }

    /// Session `id` may have something to send and new deadlines.
    fn touch(&mut self, id: SessionId) {
        self.ready.insert(id);
        self.touched.insert(id);
        self.eventful.insert(id);
    }

    fn touch_all(&mut self) {
        self.all_ready = true;
        self.all_touched = true;
        self.all_eventful = true;
    }

    /// Hands a datagram to its session, or starts one, or answers it. Returns the session that
    /// took it, or why none did.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<SessionId, Dropped> {
        self.now = self.now.max(now);
        if !self.policy.addresses.admits(from.ip()) {
            return self.refuse(from, Refusal::Address);
        }
        // The sender's SSRC, for a datagram of a session that just ended.
        let mut ssrc = None;
        let found = if applemidi::is_applemidi(bytes) {
            match Command::parse(bytes) {
                Ok(Command::Invitation(inv)) => {
                    match self.find(from.ip(), |s| s.token() == inv.token) {
                        Some(id) => Some(id),
                        None if port == SocketKind::Control => {
                            return self.invited(now, from, &inv)
                        }
                        None => None,
                    }
                }
                Ok(Command::Accept(inv) | Command::Reject(inv)) => {
                    self.find(from.ip(), |s| s.token() == inv.token)
                }
                // Only the session's own peer address and port may end it, sync its clock or
                // confirm its packets: a forged source on the same host reaches nothing.
                Ok(Command::End(end)) => {
                    ssrc = Some(end.ssrc);
                    self.find_peer(port, from, |s| {
                        s.token() == end.token || s.peer_ssrc() == Some(end.ssrc)
                    })
                }
                Ok(Command::Clock(ck)) => {
                    ssrc = Some(ck.ssrc);
                    self.find_peer(port, from, |s| s.peer_ssrc() == Some(ck.ssrc))
                }
                Ok(Command::Feedback(fb)) => {
                    ssrc = Some(fb.ssrc);
                    self.find_peer(port, from, |s| s.peer_ssrc() == Some(fb.ssrc))
                }
                Err(_) => return self.drop(Dropped::Malformed),
            }
        } else {
            match rtp::Packet::parse(bytes) {
                Ok(packet) if port == SocketKind::Data => {
                    ssrc = Some(packet.header.ssrc);
                    self.find_peer(port, from, |s| s.peer_ssrc() == ssrc)
                }
                _ => return self.drop(Dropped::Malformed),
            }
        };
        let Some(id) = found else {
            let why = match ssrc {
                Some(ssrc) if self.ended_lately(now, port, from, ssrc) => Dropped::Late,
                _ => Dropped::UnknownSession,
            };
            return self.drop(why);
        };
        let mut freed = false;
        if let Some(session) = self.sessions.get_mut(&id) {
            let was_half_open = session.is_half_open();
            let data = session.peer_data();
            session.handle_datagram(now, port, from, bytes);
            freed = was_half_open && !session.is_half_open();
            // The data port is learned from the peer's invitation on it.
            if session.peer_data() != data {
                if data != session.peer_control() {
                    unindex_peer(&mut self.by_peer, data, id);
                }
                index_peer(&mut self.by_peer, session.peer_data(), id);
            }
            self.touch(id);
        }
        if freed {
            self.admit_waiting(now);
        }
        Ok(id)
    }

    /// Accepts waiting invitations of hosts that have free half-open slots, oldest first.
    fn admit_waiting(&mut self, now: Instant) {
        self.waiting
            .retain(|w| now.saturating_duration_since(w.since) < WAITING_FOR);
        let mut hosts: Vec<IpAddr> = Vec::new();
        for w in &self.waiting {
            if !hosts.contains(&w.from.ip()) {
                hosts.push(w.from.ip());
            }
        }
        for host in hosts {
            let mut free = MAX_HALF_OPEN_PER_HOST.saturating_sub(self.half_open(host));
            while free > 0 {
                let Some(at) = self.waiting.iter().position(|w| w.from.ip() == host) else {
                    break;
                };
                let Some(w) = self.waiting.remove(at) else {
                    break;
                };
                // Its retry may have found a free slot first: it has its session already.
                if self.find(host, |s| s.token() == w.token).is_some() {
                    continue;
                }
                free -= 1;
                let inv = Invitation {
                    token: w.token,
                    ssrc: w.ssrc,
                    name: Some(&w.name),
                };
                // Policy, limits and restarts are judged now, as for a new invitation.
                let _ = self.invited(now, w.from, &inv);
            }
        }
    }

    fn half_open(&self, host: IpAddr) -> usize {
        self.sessions
            .values()
            .filter(|s| s.is_half_open() && same_host(s.peer_control().ip(), host))
            .count()
    }

    /// Holds an invitation refused for want of a half-open slot, or refreshes it if its
    /// initiator sent it again; drops it silently when the queue is full.
    fn defer(&mut self, now: Instant, from: SocketAddr, inv: &Invitation<'_>, name: String) {
        if let Some(w) = self
            .waiting
            .iter_mut()
            .find(|w| w.from == from && w.token == inv.token)
        {
            w.since = now;
            return;
        }
        let of_host = self
            .waiting
            .iter()
            .filter(|w| same_host(w.from.ip(), from.ip()))
            .count();
        if of_host < MAX_WAITING_PER_HOST && self.waiting.len() < MAX_WAITING {
            self.waiting.push_back(Waiting {
                from,
                token: inv.token,
                ssrc: inv.ssrc,
                name,
                since: now,
            });
        }
    }

    fn invited(
        &mut self,
        now: Instant,
        from: SocketAddr,
        inv: &Invitation<'_>,
    ) -> Result<SessionId, Dropped> {
        let name = session::sanitize_name(inv.name.unwrap_or(""));
        // One pass: with a thousand sessions, each pass over them is much of an
        // invitation's cost.
        let (mut half_open, mut host_sessions, mut live) = (0, 0, 0);
        for s in self.sessions.values().filter(|s| !s.is_closed()) {
            live += 1;
            if same_host(s.peer_control().ip(), from.ip()) {
                half_open += usize::from(s.is_half_open());
                // A restarted peer's own session does not count against it: it is about to go.
                host_sessions += usize::from(s.peer_control() != from);
            }
        }
        let refusal = self.policy.refuses(&name, live, host_sessions);
        if refusal.is_none() && half_open >= MAX_HALF_OPEN_PER_HOST {
            self.defer(now, from, inv, name);
            return Err(Dropped::Deferred);
        }
        if let Some(why) = refusal {
            if self.rejects.len() < MAX_PENDING_REJECTS {
                self.rejects.push_back((from, inv.token));
            }
            return self.refuse(from, why);
        }
        // A peer that restarted invites again with a new token: its old session goes, so it
        // never shows up twice. From its old control port that is certain; from another port
        // of the same host under the same name it may be anyone on the LAN, so the old session
        // must first fail a liveness check (the claimant's retries wait for it).
        let mut replaced = Vec::new();
        for (id, old) in self.sessions.iter_mut() {
            if old.role() != Role::Responder || old.is_closed() {
                continue;
            }
            if old.peer_control() == from {
                replaced.push(*id);
            } else if same_host(old.peer_control().ip(), from.ip())
                && !name.is_empty()
                && old.peer_name() == name
            {
                self.ready.insert(*id);
                self.touched.insert(*id);
                self.eventful.insert(*id);
                match old.challenge(now) {
                    Challenge::Silent => replaced.push(*id),
                    Challenge::Pending => return self.drop(Dropped::Refused),
                    Challenge::Alive => {
                        if self.rejects.len() < MAX_PENDING_REJECTS {
                            self.rejects.push_back((from, inv.token));
                        }
                        return self.drop(Dropped::Refused);
                    }
                }
            }
        }
        for id in replaced {
            if let Some(old) = self.sessions.get_mut(&id) {
                old.replace();
                self.touch(id);
            }
        }
        let seed = self.rng.next_u64();
        let session = Session::accept(self.config.clone(), now, from, inv, seed);
        self.refusing = None;
        Ok(self.insert(session))
    }

    fn refuse(&mut self, from: SocketAddr, why: Refusal) -> Result<SessionId, Dropped> {
        if self.refusing != Some(why) {
            self.refusing = Some(why);
            self.refusals.push_back((from, why));
        }
        self.drop(Dropped::Refused)
    }

    fn drop(&mut self, why: Dropped) -> Result<SessionId, Dropped> {
        match why {
            Dropped::Malformed => self.drops.malformed += 1,
            Dropped::UnknownSession => self.drops.unknown_session += 1,
            Dropped::Refused => self.drops.refused += 1,
            Dropped::Late => self.drops.late += 1,
            Dropped::Deferred => {}
        }
        Err(why)
    }

    /// Did a session of the peer at `from` with this SSRC end within [`LATE_FOR`]?
    fn ended_lately(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        ssrc: u32,
    ) -> bool {
        while self
            .ended
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) >= LATE_FOR)
        {
            self.ended.pop_front();
        }
        self.ended.iter().any(|e| {
            let addr = match port {
                SocketKind::Control => e.peer_control,
                SocketKind::Data => e.peer_data,
            };
            addr == from && e.peer_ssrc == ssrc
        })
    }

    fn find(&self, ip: IpAddr, matches: impl Fn(&Session) -> bool) -> Option<SessionId> {
        self.sessions
            .iter()
            .find(|(_, s)| same_host(s.peer_control().ip(), ip) && matches(s))
            .map(|(id, _)| *id)
    }

    /// [`find`](Self::find) for a session whose peer sent `from` to `port`: among the
    /// sessions of that address only.
    fn find_peer(
        &self,
        port: SocketKind,
        from: SocketAddr,
        matches: impl Fn(&Session) -> bool,
    ) -> Option<SessionId> {
        self.by_peer.get(&from)?.iter().copied().find(|id| {
            self.sessions.get(id).is_some_and(|s| {
                same_host(s.peer_control().ip(), from.ip()) && s.is_peer(port, from) && matches(s)
            })
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let due = |s: &Session| s.poll_timeout().is_some_and(|at| at <= now);
        if self.all_touched || self.next_deadline.is_some_and(|at| at <= now) {
            for (id, session) in self.sessions.iter_mut() {
                // Guard packets are due by time alone: a session whose deadline passed is
                // polled.
                if due(session) {
                    session.handle_timeout(now);
                    self.ready.insert(*id);
                    self.touched.insert(*id);
                    self.eventful.insert(*id);
                }
            }
        } else {
            // The others' deadlines are where `poll_timeout` found them: not due yet.
            for id in &self.touched {
                if let Some(session) = self.sessions.get_mut(id).filter(|s| due(s)) {
                    session.handle_timeout(now);
                    self.ready.insert(*id);
                    self.eventful.insert(*id);
                }
            }
        }
        // Half-open sessions may have timed out or been closed by the owner.
        if !self.waiting.is_empty() {
            self.admit_waiting(now);
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_deadline = self
            .sessions
            .values()
            .filter_map(|s| s.poll_timeout())
            .min();
        // Sessions not yet polled for their datagrams move their deadlines when they send
        // them: they stay touched (the daemon polls them all before it asks).
        let ready = &self.ready;
        self.touched.retain(|id| ready.contains(id));
        self.all_touched = self.all_ready;
        // Waiting invitations are looked at again when the oldest expires, in case no
        // datagram frees a slot before then.
        let expiry = self.waiting.front().map(|w| w.since + WAITING_FOR);
        self.next_deadline.into_iter().chain(expiry).min()
    }

    /// The next datagram from any session (or a NO), written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.now = self.now.max(now);
        while let Some((dst, token)) = self.rejects.pop_front() {
            let inv = Invitation {
                token,
                ssrc: 0,
                name: None,
            };
            let ssrc = self.rng.next_u32();
            if let Some(len) = Session::reject(&self.config.name, &inv, ssrc, buf) {
                return Some(Transmit {
                    port: SocketKind::Control,
                    dst,
                    len,
                });
            }
        }
        if !self.all_ready {
            while let Some(&id) = self.ready.first() {
                let session = self.sessions.get_mut(&id);
                if let Some(t) = session.and_then(|s| s.poll_transmit(now, buf)) {
                    return Some(t);
                }
                self.ready.pop_first();
            }
            return None;
        }
        let from = self.transmit_from;
        let mut poll =
            |(id, s): (&SessionId, &mut Box<Session>)| s.poll_transmit(now, buf).map(|t| (*id, t));
        let found = match self.sessions.range_mut(from..).find_map(&mut poll) {
            Some(found) => Some(found),
            None => self.sessions.range_mut(..from).find_map(&mut poll),
        };
        let Some((id, t)) = found else {
            // A whole pass found nothing: none is ready any more.
            self.all_ready = false;
            self.ready.clear();
            return None;
        };
        self.transmit_from = id;
        Some(t)
    }

    /// The next event of any session; sessions that ended and sent all they had are removed
    /// after their last event was taken.
    pub fn poll_event(&mut self) -> Option<(SessionId, Event)> {
        if self.events.is_empty() {
            // Sessions that ended but have datagrams left to send are looked at again.
            let mut ending = Vec::new();
            let mut drained = false;
            let mut take = |id: SessionId, session: &mut Session| {
                while let Some(event) = session.poll_event() {
                    self.events.push_back((id, event));
                }
                drained |= session.is_drained();
                if session.is_closed() && !session.is_drained() {
                    ending.push(id);
                }
            };
            if self.all_eventful {
                self.all_eventful = false;
                self.eventful.clear();
                for (id, session) in self.sessions.iter_mut() {
                    take(*id, session);
                }
            } else {
                while let Some(id) = self.eventful.pop_first() {
                    if let Some(session) = self.sessions.get_mut(&id) {
                        take(id, session);
                    }
                }
            }
            self.eventful.extend(ending);
            if drained {
                self.remove_drained();
            }
            // Memory taken by a burst of events goes back once they are taken.
            self.events.shrink_to(16);
        }
        self.events.pop_front()
    }

    fn remove_drained(&mut self) {
        let (by_peer, ended, at) = (&mut self.by_peer, &mut self.ended, self.now);
        self.sessions.retain(|id, s| {
            if s.is_drained() {
                unindex_peer(by_peer, s.peer_control(), *id);
                unindex_peer(by_peer, s.peer_data(), *id);
                if let Some(peer_ssrc) = s.peer_ssrc() {
                    if ended.len() == MAX_ENDED {
                        ended.pop_front();
                    }
                    ended.push_back(Ended {
                        peer_control: s.peer_control(),
                        peer_data: s.peer_data(),
                        peer_ssrc,
                        at,
                    });
                }
            }
            !s.is_drained()
        });
    }
}

/// Adds session `id` to those of peer address `addr`, in id order.
fn index_peer(by_peer: &mut HashMap<SocketAddr, Vec<SessionId>>, addr: SocketAddr, id: SessionId) {
    let ids = by_peer.entry(addr).or_default();
    if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}

fn unindex_peer(
    by_peer: &mut HashMap<SocketAddr, Vec<SessionId>>,
    addr: SocketAddr,
    id: SessionId,
) {
    if let Some(ids) = by_peer.get_mut(&addr) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            by_peer.remove(&addr);
        }
    }
}

/// IPv4 peers may reach a dual-stack socket as IPv4-mapped IPv6 addresses.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
