//! The responder: owns our service instances `NAME._apple-midi._udp.local` and the host name
//! `HOST.local`; probes for them (RFC 6762 §8.1-8.2), announces them (§8.3), answers queries
//! (§6, §7.1), defends or renames on conflict (§9), announces again on address changes and says
//! goodbye (§10.1).
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::message::{flags, Message, Question, RData, Record, Type, CLASS_ANY, CLASS_IN};
use super::name::{Name, MAX_LABEL_LEN};
use super::{apple_midi_service, Destination, Error, Transmit, MAX_PAYLOAD, MDNS_PORT};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// RFC 6762 §8.1: three probes 250 ms apart, the first after a random 0-250 ms.
const PROBES: u8 = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// RFC 6762 §8.3: at least two announcements one second apart.
const ANNOUNCEMENTS: u8 = 2;
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 6762 §8.2: the loser of a simultaneous probe tie-break waits a second.
const TIEBREAK_DELAY: Duration = Duration::from_secs(1);
/// RFC 6762 §10: records that carry a host name 120 s, the others 75 minutes.
const HOST_TTL: u32 = 120;
const OTHER_TTL: u32 = 4500;
/// RFC 6762 §6.7: TTL cap in legacy unicast replies.
const LEGACY_TTL: u32 = 10;
/// RFC 6762 §6: a record is multicast at most once a second (four times, to defend against a
/// probe).
const MULTICAST_GAP: Duration = Duration::from_secs(1);
const PROBE_DEFENCE_GAP: Duration = Duration::from_millis(250);
/// RFC 6762 §8.1: after 15 conflicts within 10 s, wait 5 s before probing again.
const MAX_CONFLICTS: usize = 15;
const CONFLICT_WINDOW: Duration = Duration::from_secs(10);
const CONFLICT_BACKOFF: Duration = Duration::from_secs(5);
/// The §8.1 rule alone lets a neighbour that answers every probe force a rename every few
/// hundred milliseconds. So per name: after the first renames the new name is probed at once
/// (a real clash is settled in a second or two), after later ones it waits [`RENAME_BACKOFF`]
/// doubled each time, and there are at most [`MAX_RENAMES`] in any [`RENAME_WINDOW`].
const FREE_RENAMES: usize = 3;
const RENAME_BACKOFF: Duration = Duration::from_secs(5);
const MAX_RENAMES: usize = 10;
const RENAME_WINDOW: Duration = Duration::from_secs(3600);
/// Simultaneous-probe tie-breaks (§8.2) lost in a row before we give the name up: a
/// neighbour that keeps probing for it would otherwise keep us from ever announcing
/// (mDNSResponder's MAX_PROBE_RESTARTS does the same).
const MAX_TIEBREAKS_LOST: u32 = 20;
/// RFC 6762 §6: answers made only of shared records wait 20-120 ms (aggregating answers to
/// several queriers); §7.2: 400-500 ms when the query says more known answers follow (TC).
const SHARED_DELAY_MS: (u64, u64) = (20, 120);
/// Records we sent are still ours this long: our own packets, looped back or reflected,
/// may arrive after a rename or an address change made their data stale.
const OWN_ECHO_TIME: Duration = Duration::from_secs(10);
const TRUNCATED_DELAY_MS: (u64, u64) = (400, 500);

/// A service added with [`Responder::add_service`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ServiceId(u32);

/// What the responder tells its owner.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResponderEvent {
    /// Probing succeeded: the service is announced as `instance`.
    Registered { id: ServiceId, instance: String },
    /// Another host owns the name: the service probes again as `to` (RFC 6762 §9).
    Renamed {
        id: ServiceId,
        from: String,
        to: String,
    },
    /// Another host owns our host name: we are now `to`.local.
    HostRenamed { from: String, to: String },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// `sent` probes so far; the next step at `at`.
    Probing {
        sent: u8,
        at: Instant,
    },
    /// `sent` announcements so far; the next at `at`.
    Announcing {
        sent: u8,
        at: Instant,
    },
    Ready,
}

impl Phase {
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Probing { at, .. } | Phase::Announcing { at, .. } => Some(at),
            Phase::Ready => None,
        }
    }

    fn is_probing(self) -> bool {
        matches!(self, Phase::Probing { .. })
    }
}

enum Step {
    Probe { first: bool },
    Announce { after_probe: bool },
}

impl Phase {
    fn step(&mut self, now: Instant) -> Option<Step> {
        match *self {
            Phase::Probing { sent, at } if at <= now => {
                if sent < PROBES {
                    *self = Phase::Probing {
                        sent: sent + 1,
                        at: now + PROBE_INTERVAL,
                    };
                    Some(Step::Probe { first: sent == 0 })
                } else {
                    *self = Phase::Announcing {
                        sent: 1,
                        at: now + ANNOUNCE_INTERVAL,
                    };
                    Some(Step::Announce { after_probe: true })
                }
            }
            Phase::Announcing { sent, at } if at <= now => {
                *self = if sent + 1 >= ANNOUNCEMENTS {
                    Phase::Ready
                } else {
                    Phase::Announcing {
                        sent: sent + 1,
                        at: now + ANNOUNCE_INTERVAL,
                    }
                };
                Some(Step::Announce { after_probe: false })
            }
            _ => None,
        }
    }
}

/// The history of one of our names' conflicts, to keep a neighbour from churning it.
#[derive(Clone, Debug, Default)]
struct Claim {
    /// When it was renamed in the last [`RENAME_WINDOW`] (at most [`MAX_RENAMES`]).
    renames: VecDeque<Instant>,
    /// Simultaneous-probe tie-breaks lost since it was last announced or renamed.
    tiebreaks_lost: u32,
}

impl Claim {
    /// Notes a rename at `now`; returns how long the new name waits before it is probed.
    fn rename(&mut self, now: Instant) -> Duration {
        self.tiebreaks_lost = 0;
        while self
            .renames
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RENAME_WINDOW)
            || self.renames.len() >= MAX_RENAMES
        {
            self.renames.pop_front();
        }
        self.renames.push_back(now);
        let n = self.renames.len();
        let backoff = match n.checked_sub(FREE_RENAMES + 1) {
            None => Duration::ZERO,
            Some(doublings) => RENAME_BACKOFF * (1u32 << doublings.min(16)),
        };
        if n < MAX_RENAMES {
            return backoff;
        }
        // Renames happen only while probing, so holding the probe back until the oldest
        // rename leaves the window keeps every window within the bound.
        let oldest = self.renames.front().copied().unwrap_or(now);
        backoff.max((oldest + RENAME_WINDOW).saturating_duration_since(now))
    }
}

#[derive(Clone, Debug)]
struct Delayed {
    at: Instant,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

#[derive(Clone, Debug)]
struct Service {
    id: ServiceId,
    /// `_apple-midi._udp.local`, `_midi2._udp.local`, ...
    service_type: Name,
    label: String,
    name: Name,
    port: u16,
    txt: Vec<Vec<u8>>,
    phase: Phase,
    claim: Claim,
}

/// Whose unique records: the host's or a service's (by index).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Host,
    Service(usize),
}

/// The mDNS responder for one interface. See the module documentation of [`super`] for how
/// the daemon drives it.
#[derive(Debug)]
pub struct Responder {
    host_label: String,
    host: Name,
    host_phase: Phase,
    host_claim: Claim,
    addresses: Vec<IpAddr>,
    services: Vec<Service>,
    next_id: u32,
    rng: Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ResponderEvent>,
    /// When each record was last multicast (for [`MULTICAST_GAP`]).
    multicast_at: Vec<(Record, Instant)>,
    /// The records we sent in the last [`OWN_ECHO_TIME`], to know our own packets.
    sent: Vec<(Record, Instant)>,
    /// Recent conflicts (for [`MAX_CONFLICTS`]).
    conflicts: VecDeque<Instant>,
    /// A multicast answer of shared records waiting for its random delay.
    delayed: Option<Delayed>,
    closed: bool,
}

impl Responder {
    /// A responder for host `host_label`.local with these addresses; probing for the host
    /// name starts now. A label of its own (say `<hostname>-rtpmidi`) keeps it clear of an
    /// avahi-daemon on the same host, which owns `<hostname>`.local with its own address set.
    pub fn new(
        now: Instant,
        host_label: &str,
        addresses: Vec<IpAddr>,
        seed: u64,
    ) -> Result<Self, Error> {
        let host = local().prepend(host_label.as_bytes())?;
        let mut rng = Rng::new(seed);
        let host_phase = initial_probe(now, &mut rng);
        Ok(Responder {
            host_label: host_label.to_owned(),
            host,
            host_phase,
            host_claim: Claim::default(),
            addresses: sorted(addresses),
            services: Vec::new(),
            next_id: 0,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            multicast_at: Vec::new(),
            sent: Vec::new(),
            conflicts: VecDeque::new(),
            delayed: None,
            closed: false,
        })
    }

    /// Adds a service `instance._apple-midi._udp.local` on `port` with these TXT strings
    /// (none: one empty string is sent). It is probed, then announced
    /// ([`ResponderEvent::Registered`]).
    pub fn add_service(
        &mut self,
        now: Instant,
        instance: &str,
        port: u16,
        txt: Vec<Vec<u8>>,
    ) -> Result<ServiceId, Error> {
        self.add_service_of_type(now, apple_midi_service(), instance, port, txt)
    }

    /// [`Responder::add_service`] under another service type (`_midi2._udp.local`).
    pub fn add_service_of_type(
        &mut self,
        now: Instant,
        service_type: Name,
        instance: &str,
        port: u16,
        txt: Vec<Vec<u8>>,
    ) -> Result<ServiceId, Error> {
        let (label, name) = self.free_instance(&service_type, instance.to_owned())?;
        let id = ServiceId(self.next_id);
        self.next_id += 1;
        let phase = initial_probe(now, &mut self.rng);
        // As sent (RFC 6763 §6.1), so that our records compare equal to what comes back.
        let txt = if txt.is_empty() {
            vec![Vec::new()]
        } else {
            txt
        };
        self.services.push(Service {
            id,
            service_type,
            label,
            name,
            port,
            txt,
            phase,
            claim: Claim::default(),
        });
        Ok(id)
    }

    /// Withdraws a service, with goodbyes if it was announced. False if unknown.
    pub fn remove_service(&mut self, now: Instant, id: ServiceId) -> bool {
        let Some(i) = self.services.iter().position(|s| s.id == id) else {
            return false;
        };
        let svc = self.services.remove(i);
        if !svc.phase.is_probing() {
            let mut goodbye = self.service_records(&svc, 0);
            let type_left = self
                .services
                .iter()
                .any(|s| !s.phase.is_probing() && s.service_type == svc.service_type);
            if !type_left {
                goodbye.push(services_ptr(&svc.service_type, 0));
            }
            self.queue(
                now,
                Destination::Multicast,
                Message::response(),
                goodbye,
                Vec::new(),
            );
        }
        true
    }

    /// New host addresses: announced again (with cache-flush, RFC 6762 §10.2) if they differ.
    pub fn set_addresses(&mut self, now: Instant, addresses: Vec<IpAddr>) {
        let addresses = sorted(addresses);
        if addresses == self.addresses {
            return;
        }
        self.addresses = addresses;
        if !self.host_phase.is_probing() {
            self.host_phase = Phase::Announcing { sent: 0, at: now };
            self.handle_timeout(now);
        }
    }

    /// Goodbyes (TTL 0) for everything announced; the responder is inert afterwards.
    pub fn shutdown(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let mut goodbye = Vec::new();
        for s in self.services.iter().filter(|s| !s.phase.is_probing()) {
            goodbye.extend(self.service_records(s, 0));
        }
        goodbye.extend(self.services_ptrs(0));
        if !self.host_phase.is_probing() {
            goodbye.extend(self.host_records(0));
        }
        self.queue(
            now,
            Destination::Multicast,
            Message::response(),
            goodbye,
            Vec::new(),
        );
        self.services.clear();
        self.closed = true;
    }

    /// Our host name, `HOST.local`.
    pub fn host_name(&self) -> &Name {
        &self.host
    }

    /// The current instance label of a service.
    pub fn instance(&self, id: ServiceId) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.label.as_str())
    }

    /// The full names of all our instances (for [`super::Browser::set_own_instances`]).
    pub fn instance_names(&self) -> Vec<Name> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    /// A datagram received on UDP 5353 from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Ok(msg) = Message::parse(bytes) {
            self.handle_message(now, from, &msg);
        }
    }

    /// [`Responder::handle_datagram`] for a message already parsed (the browser of the same
    /// interface needs it too: parsed once).
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        if self.closed {
            return;
        }
        // RFC 6762 §18.3, §18.11: other opcodes and rcodes are ignored.
        if msg.opcode() != 0 || msg.rcode() != 0 {
            return;
        }
        if msg.is_response() {
            // RFC 6762 §11: responses not from port 5353 are ignored. Those from this host's
            // addresses are checked too: another responder here (avahi) may hold our name.
            if from.port() == MDNS_PORT {
                self.check_conflicts(now, msg);
            }
        } else {
            self.check_simultaneous_probe(now, msg);
            self.answer(now, from, msg);
        }
    }

    /// Sends the probes and announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(d) = self.delayed.take_if(|d| d.at <= now) {
            let answers = self.not_recently_multicast(now, d.answers, MULTICAST_GAP);
            self.queue(
                now,
                Destination::Multicast,
                Message::response(),
                answers,
                d.additionals,
            );
        }
        let mut probes = Vec::new();
        let mut announce = Vec::new();
        let mut host_announced = false;
        match self.host_phase.step(now) {
            Some(Step::Probe { first }) => {
                probes.push((
                    probe_question(&self.host, first),
                    self.host_records(HOST_TTL),
                ));
            }
            Some(Step::Announce { after_probe }) => {
                announce.extend(self.host_records(HOST_TTL));
                host_announced = true;
                if after_probe {
                    self.host_claim.tiebreaks_lost = 0;
                }
            }
            None => {}
        }
        let mut any_service = false;
        for i in 0..self.services.len() {
            let Some(step) = self.services[i].phase.step(now) else {
                continue;
            };
            let svc = &self.services[i];
            match step {
                Step::Probe { first } => {
                    let records = self.unique_records(Owner::Service(i), HOST_TTL);
                    probes.push((probe_question(&svc.name, first), records));
                }
                Step::Announce { after_probe } => {
                    announce.extend(self.service_records(svc, HOST_TTL));
                    any_service = true;
                    if after_probe {
                        let ev = ResponderEvent::Registered {
                            id: svc.id,
                            instance: svc.label.clone(),
                        };
                        self.events.push_back(ev);
                        self.services[i].claim.tiebreaks_lost = 0;
                    }
                }
            }
        }
        self.queue_probes(probes);
        if any_service {
            announce.extend(self.services_ptrs(OTHER_TTL));
        }
        if !announce.is_empty() {
            // Addresses ride along as additionals so browsers resolve in one packet.
            let additionals = if host_announced || self.host_phase.is_probing() {
                Vec::new()
            } else {
                self.host_records(HOST_TTL)
            };
            self.queue(
                now,
                Destination::Multicast,
                Message::response(),
                announce,
                additionals,
            );
        }
    }

    /// The next deadline for [`Responder::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let services = self.services.iter().filter_map(|s| s.phase.deadline());
        let delayed = self.delayed.as_ref().map(|d| d.at);
        self.host_phase
            .deadline()
            .into_iter()
            .chain(services)
            .chain(delayed)
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ResponderEvent> {
        self.events.pop_front()
    }

    fn host_records(&self, ttl: u32) -> Vec<Record> {
        let rdata = |a: &IpAddr| match a {
            IpAddr::V4(a) => RData::A(*a),
            IpAddr::V6(a) => RData::Aaaa(*a),
        };
        self.addresses
            .iter()
            .map(|a| Record::new(self.host.clone(), ttl, true, rdata(a)))
            .collect()
    }

    fn srv_txt(&self, svc: &Service, ttl: u32) -> [Record; 2] {
        let srv = RData::Srv {
            priority: 0,
            weight: 0,
            port: svc.port,
            target: self.host.clone(),
        };
        let txt_ttl = if ttl == 0 { 0 } else { OTHER_TTL };
        [
            Record::new(svc.name.clone(), ttl.min(HOST_TTL), true, srv),
            Record::new(svc.name.clone(), txt_ttl, true, RData::Txt(svc.txt.clone())),
        ]
    }

    /// PTR, SRV and TXT of a service; `ttl` 0 for goodbyes, else the standard TTLs.
    fn service_records(&self, svc: &Service, ttl: u32) -> Vec<Record> {
        let ptr_ttl = if ttl == 0 { 0 } else { OTHER_TTL };
        let ptr = Record::new(
            svc.service_type.clone(),
            ptr_ttl,
            false,
            RData::Ptr(svc.name.clone()),
        );
        let mut v = vec![ptr];
        v.extend(self.srv_txt(svc, ttl));
        v
    }

    /// The service type enumeration PTRs of the types we have announced services of.
    fn services_ptrs(&self, ttl: u32) -> Vec<Record> {
        let mut types: Vec<&Name> = Vec::new();
        for s in self.services.iter().filter(|s| !s.phase.is_probing()) {
            if !types.contains(&&s.service_type) {
                types.push(&s.service_type);
            }
        }
        types.into_iter().map(|t| services_ptr(t, ttl)).collect()
    }

    fn unique_records(&self, owner: Owner, ttl: u32) -> Vec<Record> {
        match owner {
            Owner::Host => self.host_records(ttl),
            Owner::Service(i) => self
                .services
                .get(i)
                .map(|s| self.srv_txt(s, ttl).to_vec())
                .unwrap_or_default(),
        }
    }

    fn owners(&self) -> Vec<(Owner, Name, Phase)> {
        let mut v = vec![(Owner::Host, self.host.clone(), self.host_phase)];
        v.extend(
            self.services
                .iter()
                .enumerate()
                .map(|(i, s)| (Owner::Service(i), s.name.clone(), s.phase)),
        );
        v
    }

    /// RFC 6762 §8.1 (while probing) and §9 (afterwards): a response with a record of one of
    /// our unique names whose data is not ours means another responder has it. Our own
    /// packets, looped back, are known by their data (§9: the same data is no conflict): what
    /// we own, or sent lately (stale after an address change or a rename). Another SRV target
    /// or port, or another address for our host name, is a conflict whoever sent it.
    ///
    /// A name is renamed only when its probes are answered; a conflict for an announced name
    /// sends it back to probing under the same name (§9), so that one forged or stale packet
    /// does not take it away. A name not yet probed (waiting to start) is not ours yet: its
    /// holder will answer our probe.
    fn check_conflicts(&mut self, now: Instant, msg: &Message) {
        self.sent
            .retain(|(_, t)| now.saturating_duration_since(*t) < OWN_ECHO_TIME);
        let records: Vec<&Record> = msg
            .answers
            .iter()
            .chain(&msg.authorities)
            .chain(&msg.additionals)
            .collect();
        for (owner, name, phase) in self.owners() {
            let ours = self.unique_records(owner, HOST_TTL);
            let conflict = records.iter().any(|r| {
                r.name == name
                    && !ours.iter().any(|o| o.same_data(r))
                    && !self.sent.iter().any(|(o, _)| o.same_data(r))
                    && match phase {
                        Phase::Probing { sent: 0, .. } => false,
                        Phase::Probing { .. } => true,
                        _ => r.ttl > 0 && ours.iter().any(|o| o.rtype() == r.rtype()),
                    }
            });
            if !conflict {
                continue;
            }
            if phase.is_probing() {
                self.rename(now, owner);
            } else {
                let global = self.note_conflict(now);
                let phase = initial_probe(now + global, &mut self.rng);
                self.set_phase(owner, phase);
            }
        }
    }

    /// RFC 6762 §8.2: another host probes for a name we are probing for; the lexicographically
    /// later record set wins, the loser waits a second and probes again. An identical set is
    /// our own probe looped back. A probe for a name we have announced is no tie: `answer`
    /// defends it.
    fn check_simultaneous_probe(&mut self, now: Instant, msg: &Message) {
        if msg.authorities.is_empty() {
            return;
        }
        for (owner, name, phase) in self.owners() {
            if !phase.is_probing() {
                continue;
            }
            let theirs = sort_key(msg.authorities.iter().filter(|r| r.name == name));
            if theirs.is_empty() {
                continue;
            }
            let ours = sort_key(self.unique_records(owner, HOST_TTL).iter());
            if ours >= theirs {
                continue;
            }
            let Some(claim) = self.claim_mut(owner) else {
                continue;
            };
            claim.tiebreaks_lost += 1;
            if claim.tiebreaks_lost > MAX_TIEBREAKS_LOST {
                self.rename(now, owner);
            } else {
                let phase = Phase::Probing {
                    sent: 0,
                    at: now + TIEBREAK_DELAY,
                };
                self.set_phase(owner, phase);
            }
        }
    }

    fn claim_mut(&mut self, owner: Owner) -> Option<&mut Claim> {
        match owner {
            Owner::Host => Some(&mut self.host_claim),
            Owner::Service(i) => self.services.get_mut(i).map(|s| &mut s.claim),
        }
    }

    fn set_phase(&mut self, owner: Owner, phase: Phase) {
        match owner {
            Owner::Host => self.host_phase = phase,
            Owner::Service(i) => {
                if let Some(s) = self.services.get_mut(i) {
                    s.phase = phase;
                }
            }
        }
    }

    /// Notes a conflict for RFC 6762 §8.1's rate limit; returns the wait it asks for.
    fn note_conflict(&mut self, now: Instant) -> Duration {
        self.conflicts
            .retain(|t| now.saturating_duration_since(*t) < CONFLICT_WINDOW);
        self.conflicts.push_back(now);
        if self.conflicts.len() > MAX_CONFLICTS {
            CONFLICT_BACKOFF
        } else {
            Duration::ZERO
        }
    }

    /// Takes the next name for `owner` and probes it after the back-offs of §8.1 and
    /// [`Claim::rename`].
    fn rename(&mut self, now: Instant, owner: Owner) {
        let global = self.note_conflict(now);
        let Some(claim) = self.claim_mut(owner) else {
            return;
        };
        let phase = Phase::Probing {
            sent: 0,
            at: now + global.max(claim.rename(now)),
        };
        match owner {
            Owner::Host => {
                let to = next_host_label(&self.host_label);
                let Ok(host) = local().prepend(to.as_bytes()) else {
                    return;
                };
                let from = core::mem::replace(&mut self.host_label, to.clone());
                self.host = host;
                self.host_phase = phase;
                // Our SRV records name the host: announce them again.
                for s in self.services.iter_mut().filter(|s| !s.phase.is_probing()) {
                    s.phase = Phase::Announcing { sent: 0, at: now };
                }
                self.events
                    .push_back(ResponderEvent::HostRenamed { from, to });
            }
            Owner::Service(i) => {
                let Some(s) = self.services.get(i) else {
                    return;
                };
                let service_type = s.service_type.clone();
                let Ok((to, name)) =
                    self.free_instance(&service_type, next_instance_label(&s.label))
                else {
                    return;
                };
                let Some(s) = self.services.get_mut(i) else {
                    return;
                };
                let from = core::mem::replace(&mut s.label, to.clone());
                s.name = name;
                s.phase = phase;
                self.events
                    .push_back(ResponderEvent::Renamed { id: s.id, from, to });
            }
        }
    }

    /// `label`, or the first of `label (2)`, `label (3)`, ... that none of our services uses.
    fn free_instance(
        &self,
        service_type: &Name,
        mut label: String,
    ) -> Result<(String, Name), Error> {
        loop {
            let name = service_type.prepend(label.as_bytes())?;
            if !self.services.iter().any(|s| s.name == name) {
                return Ok((label, name));
            }
            label = next_instance_label(&label);
        }
    }

    /// Records we may answer with: everything not still being probed (RFC 6762 §8.1).
    fn answerable(&self) -> Vec<Record> {
        let mut v = Vec::new();
        if !self.host_phase.is_probing() {
            v.extend(self.host_records(HOST_TTL));
        }
        for s in self.services.iter().filter(|s| !s.phase.is_probing()) {
            v.extend(self.service_records(s, HOST_TTL));
        }
        v.extend(self.services_ptrs(OTHER_TTL));
        v
    }

    /// RFC 6762 §6: answer what we own, minus the known answers (§7.1), with the additional
    /// records of RFC 6763 §12; unicast for QU questions (§5.4) and to legacy resolvers
    /// (source port not 5353, §6.7), multicast otherwise.
    fn answer(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        let known = |a: &Record| {
            msg.answers
                .iter()
                .any(|k| k.same_data(a) && k.ttl >= a.ttl / 2)
        };
        if msg.questions.is_empty() {
            // More known answers for a truncated query (RFC 6762 §7.2).
            if let Some(d) = self.delayed.as_mut() {
                d.answers.retain(|a| !known(a));
            }
            return;
        }
        let owned = self.answerable();
        let mut answers: Vec<Record> = Vec::new();
        for q in msg
            .questions
            .iter()
            .filter(|q| q.qclass == CLASS_IN || q.qclass == CLASS_ANY)
        {
            for r in &owned {
                let type_ok = q.qtype == Type::ANY || q.qtype == r.rtype();
                if r.name == q.name && type_ok && !answers.contains(r) {
                    answers.push(r.clone());
                }
            }
        }
        answers.retain(|a| !known(a));
        if answers.is_empty() {
            return;
        }
        let mut additionals: Vec<Record> = Vec::new();
        let add = |r: &Record, answers: &[Record], additionals: &mut Vec<Record>| {
            if !answers.contains(r) && !additionals.contains(r) {
                additionals.push(r.clone());
            }
        };
        for a in &answers {
            let wanted: Vec<&Record> = match &a.data {
                RData::Ptr(target) => owned
                    .iter()
                    .filter(|r| &r.name == target && matches!(r.rtype(), Type::SRV | Type::TXT))
                    .collect(),
                _ => Vec::new(),
            };
            for r in wanted {
                add(r, &answers, &mut additionals);
            }
        }
        let targets: Vec<Name> = answers
            .iter()
            .chain(&additionals)
            .filter_map(|r| match &r.data {
                RData::Srv { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        for r in owned
            .iter()
            .filter(|r| targets.contains(&r.name) && matches!(r.rtype(), Type::A | Type::AAAA))
        {
            add(r, &answers, &mut additionals);
        }
        let legacy = from.port() != MDNS_PORT;
        if legacy {
            let base = Message {
                id: msg.id,
                questions: msg
                    .questions
                    .iter()
                    .map(|q| Question {
                        unicast_response: false,
                        ..q.clone()
                    })
                    .collect(),
                ..Message::response()
            };
            let legacy_ttl = |mut r: Record| {
                r.cache_flush = false;
                r.ttl = r.ttl.min(LEGACY_TTL);
                r
            };
            let answers = answers.into_iter().map(legacy_ttl).collect();
            let additionals = additionals.into_iter().map(legacy_ttl).collect();
            self.queue(now, Destination::Unicast(from), base, answers, additionals);
        } else {
            let unicast = msg.questions.iter().all(|q| q.unicast_response);
            let dst = if unicast {
                Destination::Unicast(from)
            } else {
                let gap = if msg.authorities.is_empty() {
                    MULTICAST_GAP
                } else {
                    PROBE_DEFENCE_GAP
                };
                answers = self.not_recently_multicast(now, answers, gap);
                if !answers.is_empty() && answers.iter().all(|a| !a.cache_flush) {
                    let truncated = msg.flags & flags::TC != 0;
                    self.delay(now, truncated, answers, additionals);
                    return;
                }
                Destination::Multicast
            };
            self.queue(now, dst, Message::response(), answers, additionals);
        }
    }

    /// Queues probes, as few messages as fit in [`MAX_PAYLOAD`]; a name's question and its
    /// proposed records stay in one message (RFC 6762 §8.2 compares them as a set).
    fn queue_probes(&mut self, probes: Vec<(Question, Vec<Record>)>) {
        let mut msg = Message::query();
        for (question, records) in probes {
            let authorities_before = msg.authorities.len();
            msg.questions.push(question);
            msg.authorities.extend(records);
            if msg.questions.len() > 1 && msg.to_bytes().len() > MAX_PAYLOAD {
                let question = msg.questions.pop();
                let records = msg.authorities.split_off(authorities_before);
                self.transmits.push_back(Transmit {
                    dst: Destination::Multicast,
                    payload: msg.to_bytes(),
                });
                msg = Message::query();
                msg.questions.extend(question);
                msg.authorities = records;
            }
        }
        if !msg.questions.is_empty() {
            self.transmits.push_back(Transmit {
                dst: Destination::Multicast,
                payload: msg.to_bytes(),
            });
        }
    }

    /// `answers` without those multicast less than `gap` ago (RFC 6762 §6).
    fn not_recently_multicast(
        &self,
        now: Instant,
        mut answers: Vec<Record>,
        gap: Duration,
    ) -> Vec<Record> {
        answers.retain(|a| {
            !self
                .multicast_at
                .iter()
                .any(|(r, t)| r.same_data(a) && now.saturating_duration_since(*t) < gap)
        });
        answers
    }

    /// Adds shared answers to the delayed multicast, which goes out at the earliest deadline
    /// drawn for any of its queries.
    fn delay(
        &mut self,
        now: Instant,
        truncated: bool,
        answers: Vec<Record>,
        additionals: Vec<Record>,
    ) {
        let (lo, hi) = if truncated {
            TRUNCATED_DELAY_MS
        } else {
            SHARED_DELAY_MS
        };
        let at = now + Duration::from_millis(lo + self.rng.below(hi - lo + 1));
        let d = self.delayed.get_or_insert_with(|| Delayed {
            at,
            answers: Vec::new(),
            additionals: Vec::new(),
        });
        d.at = d.at.min(at);
        for a in answers {
            if !d.answers.contains(&a) {
                d.answers.push(a);
            }
        }
        for a in additionals {
            if !d.additionals.contains(&a) {
                d.additionals.push(a);
            }
        }
    }

    /// Queues `answers` in as many messages as needed to stay under [`MAX_PAYLOAD`];
    /// additionals fill the last one as far as they fit.
    fn queue(
        &mut self,
        now: Instant,
        dst: Destination,
        base: Message,
        answers: Vec<Record>,
        additionals: Vec<Record>,
    ) {
        let mut msg = base.clone();
        for a in answers {
            msg.answers.push(a);
            if msg.answers.len() > 1 && msg.to_bytes().len() > MAX_PAYLOAD {
                let last = msg.answers.pop();
                self.push(now, dst, &msg);
                msg = base.clone();
                msg.answers.extend(last);
            }
        }
        if msg.answers.is_empty() {
            return;
        }
        for a in additionals {
            msg.additionals.push(a);
            if msg.to_bytes().len() > MAX_PAYLOAD {
                msg.additionals.pop();
                break;
            }
        }
        self.push(now, dst, &msg);
    }

    /// Queues one message; notes when its records were sent, and multicast (RFC 6762 §6).
    fn push(&mut self, now: Instant, dst: Destination, msg: &Message) {
        self.transmits.push_back(Transmit {
            dst,
            payload: msg.to_bytes(),
        });
        self.sent
            .retain(|(_, t)| now.saturating_duration_since(*t) < OWN_ECHO_TIME);
        for r in msg.answers.iter().chain(&msg.additionals) {
            match self.sent.iter_mut().find(|(k, _)| k.same_data(r)) {
                Some(entry) => entry.1 = now,
                None => self.sent.push((r.clone(), now)),
            }
        }
        if dst != Destination::Multicast {
            return;
        }
        self.multicast_at
            .retain(|(_, t)| now.saturating_duration_since(*t) < MULTICAST_GAP);
        for r in msg.answers.iter().chain(&msg.additionals) {
            match self.multicast_at.iter_mut().find(|(k, _)| k.same_data(r)) {
                Some(entry) => entry.1 = now,
                None => self.multicast_at.push((r.clone(), now)),
            }
        }
    }
}

fn local() -> Name {
    Name::from_dotted("local").unwrap_or_default()
}

fn sorted(mut addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    addresses.sort();
    addresses.dedup();
    addresses
}

fn initial_probe(now: Instant, rng: &mut Rng) -> Phase {
    let delay = Duration::from_micros(rng.below(PROBE_INTERVAL.as_micros() as u64));
    Phase::Probing {
        sent: 0,
        at: now + delay,
    }
}

/// RFC 6762 §8.1: probes ask for ANY; the first asks for a unicast reply.
fn probe_question(name: &Name, first: bool) -> Question {
    Question {
        unicast_response: first,
        ..Question::new(name.clone(), Type::ANY)
    }
}

/// RFC 6762 §8.2.1: records compared by class, type, then data as raw octets.
fn sort_key<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<(u16, u16, Vec<u8>)> {
    let mut v: Vec<_> = records
        .map(|r| (r.class, r.rtype().0, r.data.canonical_bytes()))
        .collect();
    v.sort();
    v
}

/// Splits a trailing ` (N)` (instances) or `-N` (hosts) off a label.
fn split_counter<'a>(label: &'a str, open: &str, close: &str) -> (&'a str, u32) {
    label
        .strip_suffix(close)
        .and_then(|l| l.rsplit_once(open))
        .and_then(|(base, n)| Some((base, n.parse::<u32>().ok().filter(|&n| n >= 2)?)))
        .unwrap_or((label, 1))
}

/// `base` cut at a character boundary so that `base + suffix` fits in a label.
fn with_suffix(base: &str, suffix: &str) -> String {
    let mut end = base.len().min(MAX_LABEL_LEN.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

/// `NAME` → `NAME (2)` → `NAME (3)` (the DNS-SD convention, RFC 6763 §4.1 and Apple's).
fn next_instance_label(label: &str) -> String {
    let (base, n) = split_counter(label, " (", ")");
    with_suffix(base, &format!(" ({})", n.saturating_add(1)))
}

/// `host` → `host-2` → `host-3`.
fn next_host_label(label: &str) -> String {
    let (base, n) = split_counter(label, "-", "");
    with_suffix(base, &format!("-{}", n.saturating_add(1)))
}

/// `_services._dns-sd._udp.local PTR <service type>` (RFC 6763 §9).
fn services_ptr(service_type: &Name, ttl: u32) -> Record {
    let name = Name::from_dotted("_services._dns-sd._udp.local").unwrap_or_default();
    Record::new(name, ttl, false, RData::Ptr(service_type.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const T0: Instant = Instant::from_micros(10_000_000);
    const PEER: &str = "10.0.0.2:5353";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn studio() -> Name {
        apple_midi_service().prepend(b"Studio").unwrap()
    }

    fn responder() -> (Responder, ServiceId) {
        let mut r = Responder::new(T0, "host", vec![ip("192.168.1.10")], 1).unwrap();
        let id = r
            .add_service(T0, "Studio", 5004, vec![b"x=1".to_vec()])
            .unwrap();
        (r, id)
    }

    /// Runs the timers up to `end`, returning what was sent and when.
    fn run(r: &mut Responder, end: Instant) -> Vec<(Instant, Destination, Message)> {
        let mut out = Vec::new();
        while let Some(t) = r.poll_timeout().filter(|&t| t <= end) {
            r.handle_timeout(t);
            out.extend(drain(r).into_iter().map(|(d, m)| (t, d, m)));
        }
        out
    }

    fn drain(r: &mut Responder) -> Vec<(Destination, Message)> {
        std::iter::from_fn(|| r.poll_transmit())
            .map(|t| (t.dst, Message::parse(&t.payload).unwrap()))
            .collect()
    }

    fn ready() -> (Responder, ServiceId) {
        let (mut r, id) = responder();
        run(&mut r, T0 + ms(5000));
        assert_eq!(r.poll_timeout(), None);
        (r, id)
    }

    fn has(m: &[Record], name: &Name, t: Type) -> bool {
        m.iter().any(|r| &r.name == name && r.rtype() == t)
    }

    #[test]
    fn probe_then_announce_timeline() {
        let (mut r, id) = responder();
        let sent = run(&mut r, T0 + ms(5000));
        let probes: Vec<_> = sent
            .iter()
            .filter(|(_, _, m)| !m.is_response() && m.questions.iter().any(|q| q.name == studio()))
            .collect();
        assert_eq!(probes.len(), 3);
        assert!(probes[0].0 < T0 + ms(250));
        assert_eq!(probes[1].0 - probes[0].0, ms(250));
        assert_eq!(probes[2].0 - probes[1].0, ms(250));
        let (_, dst, first) = probes[0];
        assert_eq!(*dst, Destination::Multicast);
        assert!(first
            .questions
            .iter()
            .all(|q| q.qtype == Type::ANY && q.unicast_response));
        assert!(!probes[1].2.questions[0].unicast_response);
        assert!(
            has(&first.authorities, &studio(), Type::SRV)
                && has(&first.authorities, &studio(), Type::TXT)
        );
        let announcements: Vec<_> = sent
            .iter()
            .filter(|(_, _, m)| m.is_response() && has(&m.answers, &studio(), Type::SRV))
            .collect();
        assert_eq!(announcements.len(), 2);
        assert_eq!(announcements[0].0 - probes[2].0, ms(250));
        assert_eq!(announcements[1].0 - announcements[0].0, ms(1000));
        let a = &announcements[0].2;
        let service = apple_midi_service();
        assert!(a
            .answers
            .iter()
            .any(|r| r.name == service && r.data == RData::Ptr(studio()) && !r.cache_flush));
        let srv = a.answers.iter().find(|r| r.rtype() == Type::SRV).unwrap();
        assert!(srv.cache_flush);
        assert_eq!(
            (srv.ttl, &srv.data),
            (
                120,
                &RData::Srv {
                    priority: 0,
                    weight: 0,
                    port: 5004,
                    target: Name::from_dotted("host.local").unwrap()
                }
            )
        );
        assert!(a
            .answers
            .iter()
            .chain(&a.additionals)
            .any(|r| r.data == RData::A(Ipv4Addr::new(192, 168, 1, 10))));
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Registered {
                id,
                instance: "Studio".into()
            })
        );
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.poll_timeout(), None);
    }

    fn response_with(records: Vec<Record>) -> Vec<u8> {
        Message {
            answers: records,
            ..Message::response()
        }
        .to_bytes()
    }

    fn foreign_srv(name: Name) -> Record {
        let target = Name::from_dotted("other.local").unwrap();
        Record::new(
            name,
            120,
            true,
            RData::Srv {
                priority: 0,
                weight: 0,
                port: 9,
                target,
            },
        )
    }

    /// Another host holds one of our announced names: its announcement sends the name back to
    /// probing (RFC 6762 §9), and it answers our first probe. Returns when it did.
    fn taken(r: &mut Responder, now: Instant, from: SocketAddr, theirs: Record) -> Instant {
        r.handle_datagram(now, from, &response_with(vec![theirs.clone()]));
        let probed = now + ms(250);
        assert!(run(r, probed).iter().any(|(_, _, m)| !m.is_response()));
        r.handle_datagram(probed, from, &response_with(vec![theirs]));
        probed
    }

    #[test]
    fn conflict_while_probing_renames() {
        let (mut r, id) = responder();
        run(&mut r, T0 + ms(300));
        r.handle_datagram(
            T0 + ms(300),
            PEER.parse().unwrap(),
            &response_with(vec![foreign_srv(studio())]),
        );
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Renamed {
                id,
                from: "Studio".into(),
                to: "Studio (2)".into()
            })
        );
        let second = apple_midi_service().prepend(b"Studio (2)").unwrap();
        run(&mut r, T0 + ms(400));
        r.handle_datagram(
            T0 + ms(400),
            PEER.parse().unwrap(),
            &response_with(vec![foreign_srv(second)]),
        );
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Renamed {
                id,
                from: "Studio (2)".into(),
                to: "Studio (3)".into()
            })
        );
        let sent = run(&mut r, T0 + ms(5000));
        let third = apple_midi_service().prepend(b"Studio (3)").unwrap();
        assert_eq!(
            sent.iter()
                .filter(|(_, _, m)| m.questions.iter().any(|q| q.name == third))
                .count(),
            3
        );
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Registered {
                id,
                instance: "Studio (3)".into()
            })
        );
        assert_eq!(r.instance(id), Some("Studio (3)"));
        assert_eq!(r.instance_names(), vec![third]);
    }

    #[test]
    fn own_packets_looped_back_are_no_conflict() {
        let (mut r, _) = responder();
        let mut t = T0;
        while let Some(next) = r.poll_timeout() {
            t = next;
            r.handle_timeout(t);
            for tx in std::iter::from_fn(|| r.poll_transmit()).collect::<Vec<_>>() {
                r.handle_datagram(t, "192.168.1.10:5353".parse().unwrap(), &tx.payload);
            }
        }
        assert!(t < T0 + ms(3000));
        assert!(matches!(
            r.poll_event(),
            Some(ResponderEvent::Registered { .. })
        ));
        assert_eq!(r.poll_event(), None);
    }

    #[test]
    fn conflict_after_announcing_renames_host() {
        let (mut r, _) = ready();
        let other = Record::new(
            Name::from_dotted("host.local").unwrap(),
            120,
            true,
            RData::A(Ipv4Addr::new(10, 0, 0, 2)),
        );
        taken(&mut r, T0 + ms(6000), PEER.parse().unwrap(), other.clone());
        assert!(matches!(
            r.poll_event(),
            Some(ResponderEvent::Registered { .. })
        ));
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::HostRenamed {
                from: "host".into(),
                to: "host-2".into()
            })
        );
        assert_eq!(r.host_name().to_string(), "host-2.local");
        let sent = run(&mut r, T0 + ms(9000));
        // The services are announced again with the new target.
        assert!(sent.iter().any(|(_, _, m)| m.answers.iter().any(
            |r| matches!(&r.data, RData::Srv { target, .. } if target.to_string() == "host-2.local")
        )));
        // A goodbye for a name is no conflict.
        let (mut r, _) = ready();
        r.poll_event();
        r.handle_datagram(
            T0 + ms(6000),
            PEER.parse().unwrap(),
            &response_with(vec![Record { ttl: 0, ..other }]),
        );
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn own_stale_records_and_own_names_do_not_conflict() {
        let (mut r, id) = ready();
        let now = T0 + ms(6000);
        let us: SocketAddr = "192.168.1.10:5353".parse().unwrap();
        // Our address changes; our own packets loop back, the announcement of the new
        // address and one we sent before it with the old: all ours, though one is stale.
        r.set_addresses(now, vec![ip("192.168.1.11")]);
        let mut sent: Vec<Vec<u8>> = drain(&mut r).iter().map(|(_, m)| m.to_bytes()).collect();
        let stale = Record::new(
            Name::from_dotted("host.local").unwrap(),
            120,
            true,
            RData::A(Ipv4Addr::new(192, 168, 1, 10)),
        );
        sent.push(response_with(vec![stale.clone()]));
        for bytes in &sent {
            r.handle_datagram(now + ms(10), us, bytes);
        }
        assert!(matches!(
            r.poll_event(),
            Some(ResponderEvent::Registered { .. })
        ));
        assert_eq!(r.poll_event(), None);
        // An address we never sent for our host name is a conflict, from whatever source.
        let never = Record {
            data: RData::A(Ipv4Addr::new(192, 168, 1, 99)),
            ..stale
        };
        let now = taken(&mut r, now + ms(20), us, never);
        assert!(matches!(
            r.poll_event(),
            Some(ResponderEvent::HostRenamed { .. })
        ));
        // A second service under the same name gets the next free one at once.
        let twin = r.add_service(now, "Studio", 5010, vec![]).unwrap();
        assert_eq!(r.instance(twin), Some("Studio (2)"));
        assert_eq!(r.instance(id), Some("Studio"));
        // A conflict for the first picks a name neither uses.
        run(&mut r, now + ms(5000));
        taken(
            &mut r,
            now + ms(5000),
            PEER.parse().unwrap(),
            foreign_srv(studio()),
        );
        assert_eq!(r.instance(id), Some("Studio (3)"));
    }

    #[test]
    fn another_responder_on_this_host_with_our_name_is_a_conflict() {
        // avahi on the same host holds "Studio": its answer to our probe comes from our own
        // address, with its SRV (another target and port). RFC 6762 §9: a conflict.
        let us: SocketAddr = "192.168.1.10:5353".parse().unwrap();
        let (mut r, id) = responder();
        run(&mut r, T0 + ms(300));
        r.handle_datagram(
            T0 + ms(300),
            us,
            &response_with(vec![foreign_srv(studio())]),
        );
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Renamed {
                id,
                from: "Studio".into(),
                to: "Studio (2)".into()
            })
        );
        // Announced: the same target, another port (a second daemon here) is one too.
        let (mut r, id) = ready();
        r.poll_event();
        let srv = Record::new(
            studio(),
            120,
            true,
            RData::Srv {
                priority: 0,
                weight: 0,
                port: 5010,
                target: Name::from_dotted("host.local").unwrap(),
            },
        );
        taken(&mut r, T0 + ms(6000), us, srv.clone());
        assert_eq!(r.instance(id), Some("Studio (2)"));
        // Our own SRV, from anywhere, is not; nor a goodbye.
        let (mut r, id) = ready();
        let ours = Record {
            data: RData::Srv {
                priority: 0,
                weight: 0,
                port: 5004,
                target: Name::from_dotted("host.local").unwrap(),
            },
            ..srv.clone()
        };
        for from in [us, PEER.parse().unwrap()] {
            r.handle_datagram(T0 + ms(6000), from, &response_with(vec![ours.clone()]));
        }
        r.handle_datagram(
            T0 + ms(6000),
            us,
            &response_with(vec![Record { ttl: 0, ..srv }]),
        );
        assert_eq!(r.instance(id), Some("Studio"));
    }

    #[test]
    fn own_srv_with_the_old_host_name_is_no_conflict() {
        // Our host is renamed; an announcement we sent before (old SRV target) loops back.
        let (mut r, id) = ready();
        let now = T0 + ms(6000);
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(true, vec![]).to_bytes(),
        );
        let old: Vec<Vec<u8>> = drain(&mut r).iter().map(|(_, m)| m.to_bytes()).collect();
        assert!(!old.is_empty());
        let other = Record::new(
            Name::from_dotted("host.local").unwrap(),
            120,
            true,
            RData::A(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let now = taken(&mut r, now, PEER.parse().unwrap(), other);
        assert_eq!(r.host_name().to_string(), "host-2.local");
        for bytes in &old {
            r.handle_datagram(now + ms(5), "192.168.1.10:5353".parse().unwrap(), bytes);
        }
        assert_eq!(r.instance(id), Some("Studio"));
        // Long after, the old data is no longer taken for ours: a conflict.
        let late = now + OWN_ECHO_TIME + ms(10);
        run(&mut r, late);
        assert_eq!(r.poll_timeout(), None);
        r.handle_datagram(late, PEER.parse().unwrap(), &old[0]);
        assert!(r.poll_timeout().is_some_and(|t| t <= late + ms(250)));
        run(&mut r, late + ms(250));
        r.handle_datagram(late + ms(250), PEER.parse().unwrap(), &old[0]);
        assert_eq!(r.instance(id), Some("Studio (2)"));
    }

    #[test]
    fn simultaneous_probe_tiebreak() {
        let probe_with = |port: u16| {
            let target = Name::from_dotted("host.local").unwrap();
            let srv = Record::new(
                studio(),
                120,
                true,
                RData::Srv {
                    priority: 0,
                    weight: 0,
                    port,
                    target,
                },
            );
            // The same TXT as ours: the SRV decides (RFC 6762 §8.2.1 compares sorted sets).
            let txt = Record::new(studio(), 4500, true, RData::Txt(vec![b"x=1".to_vec()]));
            let authorities = vec![srv, txt];
            Message {
                questions: vec![Question::new(studio(), Type::ANY)],
                authorities,
                ..Message::query()
            }
            .to_bytes()
        };
        // Theirs sorts first (lower port): we win and go on.
        let (mut r, _) = responder();
        run(&mut r, T0 + ms(300));
        r.handle_datagram(T0 + ms(300), PEER.parse().unwrap(), &probe_with(1000));
        let sent = run(&mut r, T0 + ms(1200));
        assert!(sent
            .iter()
            .any(|(_, _, m)| has(&m.answers, &studio(), Type::SRV)));
        // Theirs sorts later: we lose, wait one second and probe again from the start.
        let (mut r, _) = responder();
        run(&mut r, T0 + ms(300));
        r.handle_datagram(T0 + ms(300), PEER.parse().unwrap(), &probe_with(9000));
        let sent = run(&mut r, T0 + ms(3000));
        let probes: Vec<_> = sent
            .iter()
            .filter(|(_, _, m)| m.questions.iter().any(|q| q.name == studio()))
            .collect();
        assert_eq!(probes.len(), 3);
        assert_eq!(probes[0].0, T0 + ms(1300));
    }

    fn ptr_query(qu: bool, known: Vec<Record>) -> Message {
        let q = Question {
            unicast_response: qu,
            ..Question::new(apple_midi_service(), Type::PTR)
        };
        Message {
            questions: vec![q],
            answers: known,
            ..Message::query()
        }
    }

    #[test]
    fn answers_multicast_unicast_and_legacy() {
        let (mut r, _) = ready();
        let now = T0 + ms(6000);
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(false, vec![]).to_bytes(),
        );
        // Only shared records answer: 20-120 ms later (RFC 6762 §6).
        assert!(drain(&mut r).is_empty());
        let sent = run(&mut r, now + ms(120));
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0 >= now + ms(20));
        let (_, dst, m) = &sent[0];
        assert_eq!(*dst, Destination::Multicast);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::Ptr(studio()));
        assert!(
            has(&m.additionals, &studio(), Type::SRV) && has(&m.additionals, &studio(), Type::TXT)
        );
        assert!(m.additionals.iter().any(|r| r.rtype() == Type::A));

        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(true, vec![]).to_bytes(),
        );
        assert_eq!(
            drain(&mut r)[0].0,
            Destination::Unicast(PEER.parse().unwrap())
        );

        let legacy: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let query = Message {
            id: 0x1234,
            ..ptr_query(false, vec![])
        };
        r.handle_datagram(now, legacy, &query.to_bytes());
        let sent = drain(&mut r);
        let (dst, m) = &sent[0];
        assert_eq!(*dst, Destination::Unicast(legacy));
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.questions, query.questions);
        assert!(m
            .answers
            .iter()
            .chain(&m.additionals)
            .all(|r| r.ttl <= 10 && !r.cache_flush));

        // Questions for names we do not own get no answer; responses are not answered.
        let q = Message {
            questions: vec![Question::new(
                Name::from_dotted("x.local").unwrap(),
                Type::ANY,
            )],
            ..Message::query()
        };
        r.handle_datagram(now, PEER.parse().unwrap(), &q.to_bytes());
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &Message {
                flags: Message::response().flags,
                ..ptr_query(false, vec![])
            }
            .to_bytes(),
        );
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn known_answer_suppression() {
        let (mut r, _) = ready();
        let now = T0 + ms(6000);
        let known = |ttl| Record::new(apple_midi_service(), ttl, false, RData::Ptr(studio()));
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(false, vec![known(4500)]).to_bytes(),
        );
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(false, vec![known(2250)]).to_bytes(),
        );
        assert!(run(&mut r, now + ms(500)).is_empty());
        // Less than half the true TTL left: answered again (RFC 6762 §7.1).
        r.handle_datagram(
            now + ms(500),
            PEER.parse().unwrap(),
            &ptr_query(false, vec![known(2249)]).to_bytes(),
        );
        assert_eq!(run(&mut r, now + ms(700)).len(), 1);
    }

    #[test]
    fn truncated_query_waits_for_more_known_answers() {
        let (mut r, _) = ready();
        let now = T0 + ms(6000);
        let peer: SocketAddr = PEER.parse().unwrap();
        let query = Message {
            flags: flags::TC,
            ..ptr_query(false, vec![])
        };
        r.handle_datagram(now, peer, &query.to_bytes());
        assert!(run(&mut r, now + ms(399)).is_empty());
        // The continuation carries our PTR as a known answer: nothing left to say.
        let known = Record::new(apple_midi_service(), 4500, false, RData::Ptr(studio()));
        let more = Message {
            answers: vec![known],
            ..Message::query()
        };
        r.handle_datagram(now + ms(399), peer, &more.to_bytes());
        assert!(run(&mut r, now + ms(600)).is_empty());
        // Without a continuation it goes out within 400-500 ms.
        r.handle_datagram(now + ms(2000), peer, &query.to_bytes());
        let sent = run(&mut r, now + ms(3000));
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0 >= now + ms(2400) && sent[0].0 <= now + ms(2500));
    }

    #[test]
    fn large_answers_are_split() {
        let mut r = Responder::new(T0, "host", vec![ip("192.168.1.10")], 1).unwrap();
        for i in 0..40 {
            let name = format!("A rather long instance name for splitting {i:02}");
            r.add_service(T0, &name, 5004 + i, vec![]).unwrap();
        }
        // Probes and announcements go in several messages, each small enough.
        let sizes: Vec<usize> = run(&mut r, T0 + ms(5000))
            .iter()
            .map(|(_, _, m)| m.to_bytes().len())
            .collect();
        assert!(sizes.len() > 10);
        assert!(sizes.iter().all(|&n| n <= MAX_PAYLOAD), "{sizes:?}");
        assert_eq!(r.poll_timeout(), None);
        let now = T0 + ms(6000);
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &ptr_query(true, vec![]).to_bytes(),
        );
        let sent: Vec<Transmit> = std::iter::from_fn(|| r.poll_transmit()).collect();
        assert!(sent.len() > 1);
        assert!(sent.iter().all(|t| t.payload.len() <= MAX_PAYLOAD));
        let ptrs: usize = sent
            .iter()
            .map(|t| Message::parse(&t.payload).unwrap().answers.len())
            .sum();
        assert_eq!(ptrs, 40);
    }

    #[test]
    fn answers_service_type_enumeration() {
        // RFC 6763 §9.
        let (mut r, _) = ready();
        let meta = Name::from_dotted("_services._dns-sd._udp.local").unwrap();
        let q = Message {
            questions: vec![Question::new(meta, Type::PTR)],
            ..Message::query()
        };
        r.handle_datagram(T0 + ms(6000), PEER.parse().unwrap(), &q.to_bytes());
        let sent = run(&mut r, T0 + ms(6200));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].2.answers[0].data, RData::Ptr(apple_midi_service()));
    }

    #[test]
    fn a_midi2_host_is_announced_under_its_own_type_beside_apple_midi() {
        use crate::mdns::{midi2_service, midi2_txt};
        let mut r = Responder::new(T0, "host", vec![ip("192.168.1.10")], 1).unwrap();
        r.add_service(T0, "Studio", 5004, Vec::new()).unwrap();
        let txt = midi2_txt("Studio", "id-1");
        r.add_service_of_type(T0, midi2_service(), "Studio", 5673, txt.clone())
            .unwrap();
        let sent = run(&mut r, T0 + ms(5000));
        let records: Vec<&Record> = sent.iter().flat_map(|(_, _, m)| &m.answers).collect();
        let m2 = midi2_service().prepend(b"Studio").unwrap();
        assert!(records
            .iter()
            .any(|r| r.name == midi2_service() && r.data == RData::Ptr(m2.clone())));
        assert!(records
            .iter()
            .any(|r| r.name == m2 && r.data == RData::Txt(txt.clone())));
        assert!(records
            .iter()
            .any(|r| r.name == m2 && matches!(&r.data, RData::Srv { port: 5673, .. })));
        // The same instance name under both types: no conflict, no rename.
        assert!(records.iter().any(|r| r.name == studio()));
        // Service type enumeration lists both types (RFC 6763 §9).
        let meta = Name::from_dotted("_services._dns-sd._udp.local").unwrap();
        let q = Message {
            questions: vec![Question::new(meta, Type::PTR)],
            ..Message::query()
        };
        r.handle_datagram(T0 + ms(6000), PEER.parse().unwrap(), &q.to_bytes());
        let sent = run(&mut r, T0 + ms(6200));
        let types: Vec<&RData> = sent
            .iter()
            .flat_map(|(_, _, m)| &m.answers)
            .map(|r| &r.data)
            .collect();
        assert!(types.contains(&&RData::Ptr(apple_midi_service())));
        assert!(types.contains(&&RData::Ptr(midi2_service())));
    }

    #[test]
    fn unique_answers_are_not_delayed() {
        let (mut r, _) = ready();
        let q = Message {
            questions: vec![Question::new(studio(), Type::SRV)],
            ..Message::query()
        };
        r.handle_datagram(T0 + ms(6000), PEER.parse().unwrap(), &q.to_bytes());
        let sent = drain(&mut r);
        assert_eq!(sent.len(), 1);
        assert!(has(&sent[0].1.answers, &studio(), Type::SRV));
        assert!(sent[0].1.additionals.iter().any(|r| r.rtype() == Type::A));
    }

    #[test]
    fn multicast_at_most_once_a_second() {
        let (mut r, _) = ready();
        let now = T0 + ms(6000);
        let peer: SocketAddr = PEER.parse().unwrap();
        r.handle_datagram(now, peer, &ptr_query(false, vec![]).to_bytes());
        let sent = run(&mut r, now + ms(120));
        assert_eq!(sent.len(), 1);
        let sent_at = sent[0].0;
        r.handle_datagram(now + ms(500), peer, &ptr_query(false, vec![]).to_bytes());
        assert!(run(&mut r, now + ms(1000)).is_empty());
        // Unicast replies are not limited.
        r.handle_datagram(now + ms(500), peer, &ptr_query(true, vec![]).to_bytes());
        assert_eq!(drain(&mut r)[0].0, Destination::Unicast(peer));
        r.handle_datagram(
            sent_at + ms(1000),
            peer,
            &ptr_query(false, vec![]).to_bytes(),
        );
        assert_eq!(run(&mut r, sent_at + ms(1200)).len(), 1);
    }

    /// A probe for `name` as another host would send it, proposing an SRV on `port`.
    fn probe_for(name: Name, port: u16) -> Vec<u8> {
        let target = Name::from_dotted("host.local").unwrap();
        let srv = RData::Srv {
            priority: 0,
            weight: 0,
            port,
            target,
        };
        Message {
            questions: vec![Question::new(name.clone(), Type::ANY)],
            authorities: vec![Record::new(name, 120, true, srv)],
            ..Message::query()
        }
        .to_bytes()
    }

    /// Runs `r` until `end`, a neighbour answering each datagram it sends with `reply`;
    /// returns when each rename happened.
    fn against(
        r: &mut Responder,
        end: Instant,
        mut reply: impl FnMut(&Message) -> Option<Vec<u8>>,
    ) -> Vec<Instant> {
        let mut renames = Vec::new();
        while let Some(t) = r.poll_timeout().filter(|&t| t <= end) {
            r.handle_timeout(t);
            for (_, m) in drain(r) {
                if let Some(bytes) = reply(&m) {
                    r.handle_datagram(t + ms(1), PEER.parse().unwrap(), &bytes);
                }
            }
            while let Some(e) = r.poll_event() {
                if let ResponderEvent::Renamed { .. } = e {
                    renames.push(t);
                }
            }
        }
        renames
    }

    /// The probe in `m` for one of our service instances, if it is one.
    fn probed_instance(m: &Message) -> Option<Name> {
        let q = m.questions.first().filter(|_| !m.is_response())?;
        (q.name.parent() == apple_midi_service()).then(|| q.name.clone())
    }

    #[test]
    fn a_neighbour_answering_every_probe_gets_few_renames() {
        // RFC 6762 §8.1's 15 conflicts in 10 s alone let it force about 100 renames a minute.
        let (mut r, id) = responder();
        let end = T0 + Duration::from_secs(3 * 3600);
        let renames = against(&mut r, end, |m| {
            Some(response_with(vec![foreign_srv(probed_instance(m)?)]))
        });
        // A real clash is settled at once; then the waits double.
        assert!(renames[FREE_RENAMES] - renames[0] < ms(100), "{renames:?}");
        let wait = |i: usize| renames[i + 1] - renames[i];
        assert!(wait(FREE_RENAMES) >= RENAME_BACKOFF);
        assert!(wait(FREE_RENAMES + 1) >= RENAME_BACKOFF * 2);
        for (i, t) in renames.iter().enumerate() {
            let in_hour = renames[i..]
                .iter()
                .take_while(|&&u| u - *t < RENAME_WINDOW)
                .count();
            assert!(in_hour <= MAX_RENAMES, "{in_hour} renames within an hour");
        }
        // Still trying, in case the neighbour goes.
        assert!(renames.len() >= 2 * MAX_RENAMES, "{}", renames.len());
        assert_eq!(
            r.instance(id),
            Some(format!("Studio ({})", renames.len() + 1).as_str())
        );
    }

    #[test]
    fn many_conflicts_slow_probing_down() {
        // RFC 6762 §8.1: after 15 conflicts in 10 s, 5 s before the next probe (here 16
        // services renamed once each, each within its own free renames).
        let mut r = Responder::new(T0, "host", vec![ip("192.168.1.10")], 1).unwrap();
        for i in 0..16 {
            r.add_service(T0, &format!("S{i}"), 5004, vec![]).unwrap();
        }
        let now = T0 + ms(300);
        run(&mut r, now);
        let taken: Vec<Record> = r.instance_names().into_iter().map(foreign_srv).collect();
        r.handle_datagram(now, PEER.parse().unwrap(), &response_with(taken));
        let renamed = r.instance_names();
        let probed = |sent: &[(Instant, Destination, Message)]| {
            renamed
                .iter()
                .filter(|n| {
                    sent.iter().any(|(_, _, m)| {
                        !m.is_response() && m.questions.iter().any(|q| q.name == **n)
                    })
                })
                .count()
        };
        assert_eq!(probed(&run(&mut r, now + (CONFLICT_BACKOFF - ms(1)))), 15);
        assert_eq!(probed(&run(&mut r, now + CONFLICT_BACKOFF)), 1);
    }

    #[test]
    fn probes_for_an_announced_name_are_answered_not_yielded_to() {
        // RFC 6762 §8.2 ties are for names being probed; one we announced is defended (§9).
        let (mut r, id) = ready();
        let start = T0 + ms(6000);
        let mut defended = 0;
        for i in 0..600 {
            let now = start + ms(100 * i);
            r.handle_datagram(now, PEER.parse().unwrap(), &probe_for(studio(), 9000));
            let sent = drain(&mut r);
            defended += sent
                .iter()
                .filter(|(_, m)| has(&m.answers, &studio(), Type::SRV))
                .count();
        }
        assert_eq!(r.instance(id), Some("Studio"));
        assert!(std::iter::from_fn(|| r.poll_event())
            .all(|e| matches!(e, ResponderEvent::Registered { .. })));
        // At most once per 250 ms (RFC 6762 §6): here every third probe.
        assert_eq!(defended, 200);
    }

    #[test]
    fn one_conflicting_announcement_does_not_take_an_announced_name() {
        let (mut r, id) = ready();
        r.poll_event();
        let now = T0 + ms(6000);
        r.handle_datagram(
            now,
            PEER.parse().unwrap(),
            &response_with(vec![foreign_srv(studio())]),
        );
        // RFC 6762 §9: probed again under the same name; nobody answers, so it is ours.
        assert_eq!(r.instance(id), Some("Studio"));
        let sent = run(&mut r, now + ms(5000));
        let probes = sent
            .iter()
            .filter(|(_, _, m)| probed_instance(m) == Some(studio()))
            .count();
        assert_eq!(probes, 3);
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Registered {
                id,
                instance: "Studio".into()
            })
        );
    }

    #[test]
    fn endless_simultaneous_probes_end_in_a_rename() {
        // A neighbour that probes for our name each time we do, with data that wins the
        // tie-break, would keep us unannounced for ever.
        let (mut r, id) = responder();
        let end = T0 + Duration::from_secs(120);
        let renames = against(&mut r, end, |m| {
            let name = probed_instance(m).filter(|n| *n == studio())?;
            Some(probe_for(name, 9000))
        });
        assert_eq!(renames.len(), 1);
        assert!(renames[0] - T0 >= TIEBREAK_DELAY * MAX_TIEBREAKS_LOST);
        assert_eq!(r.instance(id), Some("Studio (2)"));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn no_answers_while_probing() {
        let (mut r, _) = responder();
        r.handle_datagram(
            T0,
            PEER.parse().unwrap(),
            &ptr_query(false, vec![]).to_bytes(),
        );
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn goodbyes_on_remove_and_shutdown() {
        let (mut r, id) = ready();
        r.add_service(T0 + ms(5000), "Second", 5006, vec![])
            .unwrap();
        run(&mut r, T0 + ms(9000));
        assert!(r.remove_service(T0 + ms(9000), id));
        assert!(!r.remove_service(T0 + ms(9000), id));
        let sent = drain(&mut r);
        assert_eq!(sent.len(), 1);
        let (dst, m) = &sent[0];
        assert_eq!(*dst, Destination::Multicast);
        assert!(m.answers.iter().all(|r| r.ttl == 0));
        assert!(has(&m.answers, &studio(), Type::SRV) && has(&m.answers, &studio(), Type::TXT));
        assert!(m.answers.iter().any(|r| r.data == RData::Ptr(studio())));
        assert!(!m
            .answers
            .iter()
            .any(|r| r.data == RData::Ptr(apple_midi_service())));

        r.shutdown(T0 + ms(10_000));
        let sent = drain(&mut r);
        let m = &sent[0].1;
        assert!(m.answers.iter().all(|r| r.ttl == 0));
        let second_name = apple_midi_service().prepend(b"Second").unwrap();
        assert!(has(&m.answers, &second_name, Type::SRV));
        assert!(m.answers.iter().any(|r| r.rtype() == Type::A));
        assert!(m
            .answers
            .iter()
            .any(|r| r.data == RData::Ptr(apple_midi_service())));
        assert_eq!(r.poll_timeout(), None);
        r.handle_datagram(
            T0 + ms(10_000),
            PEER.parse().unwrap(),
            &ptr_query(false, vec![]).to_bytes(),
        );
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn address_change_is_announced() {
        let (mut r, _) = ready();
        let now = T0 + ms(6000);
        r.set_addresses(now, vec![ip("192.168.1.10")]);
        assert!(drain(&mut r).is_empty());
        r.set_addresses(now, vec![ip("192.168.1.11"), ip("fe80::1")]);
        let sent = run(&mut r, now + ms(5000));
        let mut all = drain(&mut r);
        all.extend(sent.into_iter().map(|(_, d, m)| (d, m)));
        assert_eq!(all.len(), 2);
        for (_, m) in &all {
            assert!(m
                .answers
                .iter()
                .any(|r| r.data == RData::A(Ipv4Addr::new(192, 168, 1, 11)) && r.cache_flush));
            assert!(m.answers.iter().any(|r| r.rtype() == Type::AAAA));
        }
    }

    #[test]
    fn rename_labels() {
        assert_eq!(next_instance_label("Studio"), "Studio (2)");
        assert_eq!(next_instance_label("Studio (2)"), "Studio (3)");
        assert_eq!(next_instance_label("Studio (x)"), "Studio (x) (2)");
        assert_eq!(next_instance_label(&"é".repeat(40)).len(), 62);
        assert_eq!(next_host_label("pi"), "pi-2");
        assert_eq!(next_host_label("pi-2"), "pi-3");
        assert_eq!(next_host_label("my-pi"), "my-pi-2");
    }
}
