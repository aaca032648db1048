//! The browser: continuous querying for `_apple-midi._udp.local` (RFC 6762 §5.2), a record
//! cache with TTLs, refresh queries (§5.2), goodbyes and cache flushes (§10.1, §10.2), and
//! resolution of each instance through SRV to host addresses (RFC 6763 §12).
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use super::message::{Message, Question, RData, Record, Type, HEADER_LEN};
use super::name::Name;
use super::{apple_midi_service, Destination, Transmit, MAX_PAYLOAD, MDNS_PORT};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// RFC 6762 §5.2: the first query after 20-120 ms, then 1 s, doubling up to an hour.
const FIRST_QUERY_MIN: Duration = Duration::from_millis(20);
const FIRST_QUERY_SPREAD_MS: u64 = 100;
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Queries for missing SRV or address records: 1 s, doubling up to a minute.
const MAX_RESOLVE_INTERVAL: Duration = Duration::from_secs(60);
/// RFC 6762 §5.2: refresh at 80, 85, 90 and 95 % of the TTL, plus up to 2 % at random.
const REFRESH_PERCENT: [u64; 4] = [80, 85, 90, 95];
const REFRESH_JITTER_PERCENT_X100: u64 = 200;
/// RFC 6762 §10.1, §10.2: goodbyes and flushed records go after one second.
const FLUSH_DELAY: Duration = Duration::from_secs(1);
/// Bound on cached records, against floods; when it is reached, records that serve no peer
/// found yet (a flood of names that never resolve) make room for new ones, the oldest first,
/// while peers already found keep theirs.
const MAX_CACHE: usize = 512;
/// A record has this long to become part of a found peer (its SRV and address queries are
/// answered within it) before it may be evicted; also keeps a flood from churning the cache.
const EVICTABLE_AFTER: Duration = Duration::from_secs(10);
/// Records of one message looked at. A real announcement has a handful per service; a
/// 9000-byte message of hundreds would otherwise cost hundreds of cache searches at once.
const MAX_RECORDS_PER_MESSAGE: usize = 64;
/// A question's type and class.
const QUESTION_FIXED_LEN: usize = 4;

/// What the browser found. `instance` is the instance label (the part before
/// `._apple-midi._udp.local`), `host` the SRV target.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BrowserEvent {
    Appeared {
        instance: String,
        host: Name,
        port: u16,
        addresses: Vec<IpAddr>,
    },
    /// Host, port or addresses changed.
    Changed {
        instance: String,
        host: Name,
        port: u16,
        addresses: Vec<IpAddr>,
    },
    /// A goodbye, the TTL ran out, or it no longer resolves.
    Gone { instance: String },
}

#[derive(Clone, Debug)]
struct Entry {
    record: Record,
    received: Instant,
    expires: Instant,
    /// Refresh queries sent for this record (at most four).
    refreshes: usize,
    refresh_at: Option<Instant>,
    /// Part of a reported peer's resolution (as of the last update): not evicted.
    serves: bool,
}

/// A question we keep asking until it is answered.
#[derive(Clone, Debug)]
struct Pending {
    name: Name,
    qtype: Type,
    at: Instant,
    interval: Duration,
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct Resolved {
    host: Name,
    port: u16,
    addresses: Vec<IpAddr>,
}

/// The mDNS browser for one interface. See the module documentation of [`super`] for how the
/// daemon drives it.
#[derive(Debug)]
pub struct Browser {
    service: Name,
    own: Vec<Name>,
    cache: Vec<Entry>,
    next_query: Instant,
    interval: Duration,
    pending: Vec<Pending>,
    reported: Vec<(Name, Resolved)>,
    /// Set by a datagram that added records: what that means for peers is worked out when
    /// events are asked for, once per batch of datagrams rather than per datagram.
    stale: Option<Instant>,
    rng: Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<BrowserEvent>,
}

impl Browser {
    /// Starts browsing `_apple-midi._udp`: the first query goes out 20-120 ms after `now`.
    pub fn new(now: Instant, seed: u64) -> Self {
        Browser::for_service(now, apple_midi_service(), seed)
    }

    /// [`Browser::new`] for another service type (`_midi2._udp.local`).
    pub fn for_service(now: Instant, service: Name, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let first = FIRST_QUERY_MIN + Duration::from_millis(rng.below(FIRST_QUERY_SPREAD_MS + 1));
        Browser {
            service,
            own: Vec::new(),
            cache: Vec::new(),
            next_query: now + first,
            interval: FIRST_INTERVAL,
            pending: Vec::new(),
            reported: Vec::new(),
            stale: None,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Our own instance names (from [`super::Responder::instance_names`]): never reported.
    pub fn set_own_instances(&mut self, now: Instant, names: Vec<Name>) {
        self.own = names;
        self.update(now);
    }

    /// A datagram received on UDP 5353 from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Ok(msg) = Message::parse(bytes) {
            self.handle_message(now, from, &msg);
        }
    }

    /// [`Browser::handle_datagram`] for a message already parsed.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        // RFC 6762 §11, §18.3, §18.11: only responses from port 5353 with opcode and rcode 0.
        if !msg.is_response() || from.port() != MDNS_PORT || msg.opcode() != 0 || msg.rcode() != 0 {
            return;
        }
        let records = || {
            msg.answers
                .iter()
                .chain(&msg.authorities)
                .chain(&msg.additionals)
        };
        let named: Vec<&Record> = records()
            .filter(|r| !is_address(r) && self.wanted(r))
            .take(MAX_RECORDS_PER_MESSAGE)
            .collect();
        let mut added = false;
        for r in &named {
            added |= self.insert(now, r);
        }
        // Addresses last: they are cached only for hosts an SRV names, which takes a search
        // of the cache each, so they count against the bound whether wanted or not.
        let addresses = records()
            .filter(|r| is_address(r))
            .take(MAX_RECORDS_PER_MESSAGE - named.len());
        for r in addresses {
            if self.wanted(r) {
                added |= self.insert(now, r);
            }
        }
        if added {
            self.stale = Some(now);
        }
    }

    /// Sends the queries that are due and expires records.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.cache.retain(|e| e.expires > now);
        let mut questions: Vec<Question> = Vec::new();
        let mut ask = |name: &Name, qtype: Type| {
            if !questions
                .iter()
                .any(|q| &q.name == name && q.qtype == qtype)
            {
                questions.push(Question::new(name.clone(), qtype));
            }
        };
        if self.next_query <= now {
            ask(&self.service, Type::PTR);
            self.next_query = now + self.interval;
            self.interval = (self.interval * 2).min(MAX_INTERVAL);
        }
        for i in 0..self.cache.len() {
            let due = self
                .cache
                .get(i)
                .and_then(|e| e.refresh_at)
                .is_some_and(|t| t <= now);
            if due {
                let jitter = self.rng.below(REFRESH_JITTER_PERCENT_X100 + 1);
                if let Some(e) = self.cache.get_mut(i) {
                    ask(&e.record.name, e.record.rtype());
                    e.refreshes += 1;
                    e.refresh_at = refresh_time(e, jitter);
                }
            }
        }
        for p in self.pending.iter_mut().filter(|p| p.at <= now) {
            ask(&p.name, p.qtype);
            p.at = now + p.interval;
            p.interval = (p.interval * 2).min(MAX_RESOLVE_INTERVAL);
        }
        // As many messages as the questions need (a flood leaves many names to resolve);
        // sizes counted uncompressed, an upper bound.
        let mut messages: Vec<Message> = Vec::new();
        let mut size = HEADER_LEN;
        for q in questions {
            let len = q.name.wire_len() + QUESTION_FIXED_LEN;
            match messages.last_mut() {
                Some(m) if size + len <= MAX_PAYLOAD => m.questions.push(q),
                _ => {
                    size = HEADER_LEN;
                    messages.push(Message {
                        questions: vec![q],
                        ..Message::query()
                    });
                }
            }
            size += len;
        }
        // The PTR question, asked first, carries the known answers (RFC 6762 §7.1: as far as
        // they fit, no multi-packet TC queries).
        let service = &self.service;
        if let Some(msg) = messages.first_mut().filter(|m| {
            m.questions
                .iter()
                .any(|q| q.name == *service && q.qtype == Type::PTR)
        }) {
            for k in self.known_answers(now) {
                msg.answers.push(k);
                if msg.to_bytes().len() > MAX_PAYLOAD {
                    msg.answers.pop();
                    break;
                }
            }
        }
        for msg in messages {
            self.transmits.push_back(Transmit {
                dst: Destination::Multicast,
                payload: msg.to_bytes(),
            });
        }
        self.update(now);
    }

    /// The next deadline for [`Browser::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cache = self
            .cache
            .iter()
            .flat_map(|e| [Some(e.expires), e.refresh_at])
            .flatten();
        let pending = self.pending.iter().map(|p| p.at);
        cache
            .chain(pending)
            .chain(self.stale)
            .chain([self.next_query])
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<BrowserEvent> {
        if let Some(now) = self.stale {
            self.update(now);
        }
        self.events.pop_front()
    }

    /// Is `r` a record the browser needs: a PTR of the service, an instance's SRV, or the
    /// address of a host some cached SRV names? (TXT is not used for `_apple-midi`.)
    fn wanted(&self, r: &Record) -> bool {
        match &r.data {
            RData::Ptr(target) => r.name == self.service && target.parent() == self.service,
            RData::Srv { .. } => r.name.parent() == self.service,
            RData::A(_) | RData::Aaaa(_) => self
                .cache
                .iter()
                .any(|e| matches!(&e.record.data, RData::Srv { target, .. } if *target == r.name)),
            _ => false,
        }
    }

    /// Caches `r`; true if that added a record (what changes a peer's resolution: a refresh
    /// of a known record does not, and expiries are worked out by `handle_timeout`).
    fn insert(&mut self, now: Instant, r: &Record) -> bool {
        if r.cache_flush {
            // RFC 6762 §10.2: the rest of this record set goes in one second (unless it was
            // itself received within the last second: part of the same announcement).
            for e in self.cache.iter_mut().filter(|e| {
                e.record.name == r.name && e.record.rtype() == r.rtype() && e.record.data != r.data
            }) {
                if now.saturating_duration_since(e.received) > FLUSH_DELAY {
                    e.expires = e.expires.min(now + FLUSH_DELAY);
                    e.refresh_at = None;
                }
            }
        }
        let existing = self.cache.iter().position(|e| e.record.same_data(r));
        if r.ttl == 0 {
            // RFC 6762 §10.1: a goodbye.
            if let Some(e) = existing.and_then(|i| self.cache.get_mut(i)) {
                e.expires = e.expires.min(now + FLUSH_DELAY);
                e.refresh_at = None;
            }
            return false;
        }
        let jitter = self.rng.below(REFRESH_JITTER_PERCENT_X100 + 1);
        let mut entry = Entry {
            record: r.clone(),
            received: now,
            expires: now + Duration::from_secs(u64::from(r.ttl)),
            refreshes: 0,
            refresh_at: None,
            serves: false,
        };
        entry.refresh_at = refresh_time(&entry, jitter);
        if let Some(e) = existing.and_then(|i| self.cache.get_mut(i)) {
            entry.serves = e.serves;
            *e = entry;
            false
        } else if self.cache.len() < MAX_CACHE || self.evict_one(now) {
            self.cache.push(entry);
            true
        } else {
            false
        }
    }

    /// Drops the oldest record that serves no reported peer and had its chance to; false if
    /// there is none.
    fn evict_one(&mut self, now: Instant) -> bool {
        let victim = self
            .cache
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                !e.serves && now.saturating_duration_since(e.received) >= EVICTABLE_AFTER
            })
            .min_by_key(|(_, e)| e.received)
            .map(|(i, _)| i);
        victim.map(|i| self.cache.swap_remove(i)).is_some()
    }

    /// Cached PTRs of the service with more than half their TTL left (RFC 6762 §7.1), with
    /// the TTL that remains.
    fn known_answers(&self, now: Instant) -> Vec<Record> {
        self.cache
            .iter()
            .filter(|e| e.record.rtype() == Type::PTR && e.refresh_at.is_some())
            .filter_map(|e| {
                let left = e.expires.saturating_duration_since(now).as_secs();
                let left = u32::try_from(left).ok()?;
                (left > e.record.ttl / 2).then(|| Record {
                    ttl: left,
                    ..e.record.clone()
                })
            })
            .collect()
    }

    /// Works out each instance's resolution, reports differences and schedules queries for
    /// what is missing; in time linear in the cache.
    fn update(&mut self, now: Instant) {
        self.stale = None;
        let (current, want, uses) = self.resolve();
        let mut uses = uses.into_iter();
        self.cache.retain_mut(|e| match uses.next() {
            Some(Some(serves)) => {
                e.serves = serves;
                true
            }
            Some(None) => false,
            None => true,
        });
        let wanted: HashSet<(&Name, Type)> = want.iter().map(|(n, t)| (n, *t)).collect();
        self.pending
            .retain(|p| wanted.contains(&(&p.name, p.qtype)));
        let asked: HashSet<(&Name, Type)> =
            self.pending.iter().map(|p| (&p.name, p.qtype)).collect();
        let new: Vec<Pending> = want
            .iter()
            .filter(|(n, t)| !asked.contains(&(n, *t)))
            .map(|(name, qtype)| Pending {
                name: name.clone(),
                qtype: *qtype,
                at: now,
                interval: FIRST_INTERVAL,
            })
            .collect();
        self.pending.extend(new);
        let after: HashSet<&Name> = current.iter().map(|(n, _)| n).collect();
        for (name, _) in &self.reported {
            if !after.contains(name) {
                self.events.push_back(BrowserEvent::Gone {
                    instance: label(name),
                });
            }
        }
        let before: HashMap<&Name, &Resolved> = self.reported.iter().map(|(n, r)| (n, r)).collect();
        for (name, new) in &current {
            let (instance, host, port, addresses) = (
                label(name),
                new.host.clone(),
                new.port,
                new.addresses.clone(),
            );
            match before.get(name) {
                None => self.events.push_back(BrowserEvent::Appeared {
                    instance,
                    host,
                    port,
                    addresses,
                }),
                Some(old) if *old != new => self.events.push_back(BrowserEvent::Changed {
                    instance,
                    host,
                    port,
                    addresses,
                }),
                Some(_) => {}
            }
        }
        self.reported = current;
    }

    /// Each instance's resolution from the cache, what is missing for the rest, and what
    /// each cache entry (by index) is for: `None` if nothing (an SRV of a vanished instance, an
    /// address no SRV names), else whether it serves a resolved instance.
    #[allow(clippy::type_complexity)]
    fn resolve(&self) -> (Vec<(Name, Resolved)>, Vec<(Name, Type)>, Vec<Option<bool>>) {
        let mut instances: Vec<&Name> = Vec::new();
        let mut seen: HashSet<&Name> = HashSet::new();
        let mut srvs: HashMap<&Name, (&Name, u16, Instant)> = HashMap::new();
        let mut host_addresses: HashMap<&Name, Vec<IpAddr>> = HashMap::new();
        for e in &self.cache {
            match &e.record.data {
                RData::Ptr(target)
                    if e.record.name == self.service
                        && !self.own.contains(target)
                        && seen.insert(target) =>
                {
                    instances.push(target);
                }
                // The newest SRV of an instance wins.
                RData::Srv { port, target, .. } => {
                    let srv = srvs
                        .entry(&e.record.name)
                        .or_insert((target, *port, e.received));
                    if e.received >= srv.2 {
                        *srv = (target, *port, e.received);
                    }
                }
                RData::A(a) => host_addresses
                    .entry(&e.record.name)
                    .or_default()
                    .push(IpAddr::V4(*a)),
                RData::Aaaa(a) => host_addresses
                    .entry(&e.record.name)
                    .or_default()
                    .push(IpAddr::V6(*a)),
                _ => {}
            }
        }
        let mut current = Vec::new();
        let mut want = Vec::new();
        let mut hosts: HashSet<&Name> = HashSet::new();
        let mut resolved_hosts: HashSet<&Name> = HashSet::new();
        let mut resolved: HashSet<&Name> = HashSet::new();
        for inst in instances {
            let Some(&(host, port, _)) = srvs.get(inst) else {
                want.push((inst.clone(), Type::SRV));
                continue;
            };
            hosts.insert(host);
            let mut addresses = host_addresses.get(host).cloned().unwrap_or_default();
            addresses.sort();
            addresses.dedup();
            if addresses.is_empty() {
                want.push((host.clone(), Type::A));
                want.push((host.clone(), Type::AAAA));
                continue;
            }
            resolved.insert(inst);
            resolved_hosts.insert(host);
            let r = Resolved {
                host: host.clone(),
                port,
                addresses,
            };
            current.push((inst.clone(), r));
        }
        let uses = self
            .cache
            .iter()
            .map(|e| match &e.record.data {
                RData::Ptr(target) => Some(resolved.contains(target)),
                RData::Srv { .. } => seen
                    .contains(&e.record.name)
                    .then(|| resolved.contains(&e.record.name)),
                _ => hosts
                    .contains(&e.record.name)
                    .then(|| resolved_hosts.contains(&e.record.name)),
            })
            .collect();
        (current, want, uses)
    }
}

fn is_address(r: &Record) -> bool {
    matches!(r.rtype(), Type::A | Type::AAAA)
}

fn label(name: &Name) -> String {
    String::from_utf8_lossy(name.first_label().unwrap_or_default()).into_owned()
}

/// The next refresh point of `e` after `e.refreshes` refreshes: 80/85/90/95 % of the TTL plus
/// `jitter` hundredths of a percent.
fn refresh_time(e: &Entry, jitter: u64) -> Option<Instant> {
    let percent = *REFRESH_PERCENT.get(e.refreshes)?;
    let ttl_us = u64::from(e.record.ttl) * 1_000_000;
    Some(e.received + Duration::from_micros(ttl_us / 10_000 * (percent * 100 + jitter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const T0: Instant = Instant::from_micros(10_000_000);
    const PEER: &str = "10.0.0.2:5353";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn name(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    fn studio() -> Name {
        apple_midi_service().prepend(b"Studio").unwrap()
    }

    fn ptr(ttl: u32) -> Record {
        Record::new(apple_midi_service(), ttl, false, RData::Ptr(studio()))
    }

    fn srv(ttl: u32, port: u16) -> Record {
        Record::new(
            studio(),
            ttl,
            true,
            RData::Srv {
                priority: 0,
                weight: 0,
                port,
                target: name("host.local"),
            },
        )
    }

    fn a(ttl: u32, last: u8) -> Record {
        Record::new(
            name("host.local"),
            ttl,
            true,
            RData::A(Ipv4Addr::new(192, 168, 1, last)),
        )
    }

    fn response(records: Vec<Record>) -> Vec<u8> {
        Message {
            answers: records,
            ..Message::response()
        }
        .to_bytes()
    }

    fn feed(b: &mut Browser, now: Instant, records: Vec<Record>) {
        b.handle_datagram(now, PEER.parse().unwrap(), &response(records));
    }

    fn run(b: &mut Browser, end: Instant) -> Vec<(Instant, Message)> {
        let mut out = Vec::new();
        while let Some(t) = b.poll_timeout().filter(|&t| t <= end) {
            b.handle_timeout(t);
            while let Some(tx) = b.poll_transmit() {
                assert_eq!(tx.dst, Destination::Multicast);
                out.push((t, Message::parse(&tx.payload).unwrap()));
            }
        }
        out
    }

    fn events(b: &mut Browser) -> Vec<BrowserEvent> {
        std::iter::from_fn(|| b.poll_event()).collect()
    }

    fn appeared(port: u16, last: &[u8]) -> BrowserEvent {
        let addresses = last
            .iter()
            .map(|&l| IpAddr::V4(Ipv4Addr::new(192, 168, 1, l)))
            .collect();
        BrowserEvent::Appeared {
            instance: "Studio".into(),
            host: name("host.local"),
            port,
            addresses,
        }
    }

    #[test]
    fn continuous_query_backs_off() {
        let mut b = Browser::new(T0, 5);
        let sent = run(&mut b, T0 + secs(6 * 3600));
        let first = sent[0].0 - T0;
        assert!(first >= Duration::from_millis(20) && first <= Duration::from_millis(120));
        let q = &sent[0].1.questions[0];
        assert_eq!(
            (&q.name, q.qtype, q.unicast_response),
            (&apple_midi_service(), Type::PTR, false)
        );
        let gaps: Vec<u64> = sent
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_secs())
            .collect();
        assert_eq!(
            &gaps[..13],
            &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600]
        );
        assert!(gaps[13..].iter().all(|&g| g == 3600));
    }

    #[test]
    fn announcement_appears_and_becomes_known_answer() {
        let mut b = Browser::new(T0, 5);
        run(&mut b, T0 + secs(1));
        feed(
            &mut b,
            T0 + secs(1),
            vec![ptr(4500), srv(120, 5004), a(120, 10)],
        );
        assert_eq!(events(&mut b), vec![appeared(5004, &[10])]);
        let sent = run(&mut b, T0 + secs(4));
        let query = &sent.last().unwrap().1;
        assert_eq!(query.answers.len(), 1);
        assert_eq!(query.answers[0].data, RData::Ptr(studio()));
        assert!(query.answers[0].ttl <= 4500 && query.answers[0].ttl > 4490);
        // The same announcement again changes nothing.
        feed(
            &mut b,
            T0 + secs(4),
            vec![ptr(4500), srv(120, 5004), a(120, 10)],
        );
        assert!(events(&mut b).is_empty());
    }

    #[test]
    fn resolves_what_is_missing() {
        let mut b = Browser::new(T0, 5);
        let now = T0 + Duration::from_millis(500);
        run(&mut b, now);
        feed(&mut b, now, vec![ptr(4500)]);
        assert!(events(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), Some(now));
        let sent = run(&mut b, now);
        assert!(sent.iter().any(|(_, m)| m
            .questions
            .iter()
            .any(|q| q.name == studio() && q.qtype == Type::SRV)));
        feed(&mut b, now, vec![srv(120, 5004)]);
        let sent = run(&mut b, now);
        let asked: Vec<Type> = sent
            .iter()
            .flat_map(|(_, m)| m.questions.iter().map(|q| q.qtype))
            .collect();
        assert!(asked.contains(&Type::A) && asked.contains(&Type::AAAA));
        // Unanswered, asked again after 1 s, then 2 s.
        let sent = run(&mut b, now + secs(3));
        let times: Vec<Instant> = sent
            .iter()
            .filter(|(_, m)| m.questions.iter().any(|q| q.qtype == Type::A))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(times, vec![now + secs(1), now + secs(3)]);
        feed(&mut b, now + secs(3), vec![a(120, 10)]);
        assert_eq!(events(&mut b), vec![appeared(5004, &[10])]);
        assert!(b.pending.is_empty());
    }

    #[test]
    fn goodbye_is_gone_after_one_second() {
        let mut b = Browser::new(T0, 5);
        let now = T0 + secs(1);
        feed(&mut b, now, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        events(&mut b);
        feed(&mut b, now + secs(5), vec![ptr(0), srv(0, 5004)]);
        assert!(events(&mut b).is_empty());
        run(&mut b, now + secs(5) + Duration::from_millis(999));
        assert!(events(&mut b).is_empty());
        run(&mut b, now + secs(6));
        assert_eq!(
            events(&mut b),
            vec![BrowserEvent::Gone {
                instance: "Studio".into()
            }]
        );
    }

    #[test]
    fn refresh_queries_then_expiry() {
        let mut b = Browser::new(T0, 5);
        run(&mut b, T0 + secs(1));
        let now = T0 + secs(1);
        feed(&mut b, now, vec![ptr(100), srv(100, 5004), a(100, 10)]);
        events(&mut b);
        let sent = run(&mut b, now + secs(99));
        let srv_refresh: Vec<u64> = sent
            .iter()
            .filter(|(_, m)| m.questions.iter().any(|q| q.qtype == Type::SRV))
            .map(|(t, _)| (*t - now).as_millis() as u64)
            .collect();
        assert_eq!(srv_refresh.len(), 4);
        for (t, pct) in srv_refresh.iter().zip([80, 85, 90, 95]) {
            assert!(
                *t >= pct * 1000 && *t <= (pct + 2) * 1000,
                "{t} ms for {pct} %"
            );
        }
        assert!(events(&mut b).is_empty());
        run(&mut b, now + secs(100));
        assert_eq!(
            events(&mut b),
            vec![BrowserEvent::Gone {
                instance: "Studio".into()
            }]
        );
    }

    #[test]
    fn cache_flush_changes_addresses() {
        let mut b = Browser::new(T0, 5);
        let now = T0 + secs(1);
        feed(&mut b, now, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        events(&mut b);
        feed(&mut b, now + secs(10), vec![a(120, 11)]);
        let changed = |last: &[u8]| BrowserEvent::Changed {
            instance: "Studio".into(),
            host: name("host.local"),
            port: 5004,
            addresses: last
                .iter()
                .map(|&l| IpAddr::V4(Ipv4Addr::new(192, 168, 1, l)))
                .collect(),
        };
        assert_eq!(events(&mut b), vec![changed(&[10, 11])]);
        run(&mut b, now + secs(11));
        assert_eq!(events(&mut b), vec![changed(&[11])]);
        // A new port.
        feed(&mut b, now + secs(20), vec![srv(120, 6000)]);
        run(&mut b, now + secs(22));
        let evs = events(&mut b);
        assert!(
            matches!(evs.last(), Some(BrowserEvent::Changed { port: 6000, .. })),
            "{evs:?}"
        );
    }

    #[test]
    fn zeroconf_announcement_and_goodbye() {
        use crate::mdns::message::tests::{hex, ZEROCONF_ANNOUNCEMENT, ZEROCONF_GOODBYE};
        let mut b = Browser::new(T0, 5);
        let from: SocketAddr = "169.254.0.1:5353".parse().unwrap();
        b.handle_datagram(T0, from, &hex(ZEROCONF_ANNOUNCEMENT));
        assert_eq!(
            events(&mut b),
            vec![BrowserEvent::Appeared {
                instance: "Studio".into(),
                host: name("hosta.local"),
                port: 5004,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(169, 254, 0, 1))],
            }]
        );
        b.handle_datagram(T0 + secs(4), from, &hex(ZEROCONF_GOODBYE));
        run(&mut b, T0 + secs(5));
        assert_eq!(
            events(&mut b),
            vec![BrowserEvent::Gone {
                instance: "Studio".into()
            }]
        );
    }

    #[test]
    fn ignores_own_instances_queries_and_foreign_ports() {
        let mut b = Browser::new(T0, 5);
        b.set_own_instances(T0, vec![studio()]);
        feed(&mut b, T0, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        assert!(events(&mut b).is_empty());
        let mut b = Browser::new(T0, 5);
        let records = vec![ptr(4500), srv(120, 5004), a(120, 10)];
        b.handle_datagram(
            T0,
            "10.0.0.2:40000".parse().unwrap(),
            &response(records.clone()),
        );
        let query = Message {
            answers: records,
            ..Message::query()
        };
        b.handle_datagram(T0, PEER.parse().unwrap(), &query.to_bytes());
        b.handle_datagram(T0, PEER.parse().unwrap(), &[1, 2, 3]);
        assert!(events(&mut b).is_empty());
        assert!(b.cache.is_empty());
        // Other services' records are not cached.
        let other = Record::new(
            name("_http._tcp.local"),
            4500,
            false,
            RData::Ptr(name("x._http._tcp.local")),
        );
        feed(&mut b, T0, vec![other, a(120, 1)]);
        assert!(b.cache.is_empty());
    }

    /// Instance `Flood N` on host `fN.local`: PTR, SRV and A.
    fn flood_service(i: usize) -> Vec<Record> {
        let inst = apple_midi_service()
            .prepend(format!("Flood {i}").as_bytes())
            .unwrap();
        let host = name(&format!("f{i}.local"));
        let srv = RData::Srv {
            priority: 0,
            weight: 0,
            port: 5004,
            target: host.clone(),
        };
        vec![
            Record::new(apple_midi_service(), 4500, false, RData::Ptr(inst.clone())),
            Record::new(inst, 120, true, srv),
            Record::new(host, 120, true, RData::A(Ipv4Addr::new(10, 1, 0, 1))),
        ]
    }

    #[test]
    fn a_flood_of_services_is_bounded_and_found_peers_stay() {
        let mut b = Browser::new(T0, 5);
        let now = T0 + secs(1);
        feed(&mut b, now, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        assert_eq!(events(&mut b), vec![appeared(5004, &[10])]);
        let mut appeared = 0;
        // In batches, as the daemon reads them.
        for batch in 0..10_000 / 64 {
            for i in 0..64 {
                feed(&mut b, now, flood_service(batch * 64 + i));
            }
            for e in events(&mut b) {
                assert!(matches!(e, BrowserEvent::Appeared { .. }), "{e:?}");
                appeared += 1;
            }
            assert!(b.cache.len() <= MAX_CACHE);
        }
        assert!(appeared < MAX_CACHE / 3, "{appeared}");
        // The queries that go out stay within the payload size.
        let sent = run(&mut b, now + secs(10));
        assert!(sent.iter().all(|(_, m)| m.to_bytes().len() <= MAX_PAYLOAD));
        assert!(events(&mut b).is_empty());
    }

    #[test]
    fn names_that_never_resolve_make_room_for_a_real_peer() {
        let mut b = Browser::new(T0, 5);
        let now = T0 + secs(1);
        for i in 0..10_000 {
            let junk = apple_midi_service()
                .prepend(format!("Junk {i}").as_bytes())
                .unwrap();
            let ptr = Record::new(apple_midi_service(), 4500, false, RData::Ptr(junk));
            feed(&mut b, now, vec![ptr]);
        }
        assert_eq!(b.cache.len(), MAX_CACHE);
        // Asking for all their SRVs takes several messages, each small enough.
        let sent = run(&mut b, now);
        let asked: usize = sent.iter().map(|(_, m)| m.questions.len()).sum();
        assert!(asked >= MAX_CACHE && sent.len() > 1);
        assert!(sent.iter().all(|(_, m)| m.to_bytes().len() <= MAX_PAYLOAD));
        // Not before they had their chance to resolve.
        let soon = now + (EVICTABLE_AFTER - secs(1));
        feed(&mut b, soon, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        assert!(events(&mut b).is_empty());
        let later = now + EVICTABLE_AFTER;
        feed(&mut b, later, vec![ptr(4500), srv(120, 5004), a(120, 10)]);
        assert_eq!(events(&mut b), vec![appeared(5004, &[10])]);
    }

    #[test]
    fn records_looked_at_per_message_are_bounded() {
        let mut b = Browser::new(T0, 5);
        let records: Vec<Record> = (0..1000).map(|i| flood_service(i).remove(0)).collect();
        feed(&mut b, T0, records);
        assert_eq!(b.cache.len(), MAX_RECORDS_PER_MESSAGE);
    }
}
