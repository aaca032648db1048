//! The browser: continuous querying for `_apple-midi._udp.local` (RFC 6762 §5.2), a record
//! cache with TTLs, refresh queries (§5.2), goodbyes and cache flushes (§10.1, §10.2), and
//! resolution of each instance through SRV to host addresses (RFC 6763 §12).
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::message::{Message, Question, RData, Record, Type};
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
/// Bound on cached records, against floods.
const MAX_CACHE: usize = 512;

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
    rng: Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<BrowserEvent>,
}

impl Browser {
    /// Starts browsing: the first query goes out 20-120 ms after `now`.
    pub fn new(now: Instant, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let first = FIRST_QUERY_MIN + Duration::from_millis(rng.below(FIRST_QUERY_SPREAD_MS + 1));
        Browser {
            service: apple_midi_service(),
            own: Vec::new(),
            cache: Vec::new(),
            next_query: now + first,
            interval: FIRST_INTERVAL,
            pending: Vec::new(),
            reported: Vec::new(),
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
        let Ok(msg) = Message::parse(bytes) else {
            return;
        };
        // RFC 6762 §11, §18.3, §18.11: only responses from port 5353 with opcode and rcode 0.
        if !msg.is_response() || from.port() != MDNS_PORT || msg.opcode() != 0 || msg.rcode() != 0 {
            return;
        }
        let records: Vec<&Record> = msg
            .answers
            .iter()
            .chain(&msg.authorities)
            .chain(&msg.additionals)
            .collect();
        // Addresses last: they are cached only for hosts an SRV names.
        for r in records.iter().filter(|r| !is_address(r)) {
            if self.wanted(r) {
                self.insert(now, r);
            }
        }
        for r in records.iter().filter(|r| is_address(r)) {
            if self.wanted(r) {
                self.insert(now, r);
            }
        }
        self.update(now);
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
        if !questions.is_empty() {
            let asks_ptr = questions
                .iter()
                .any(|q| q.name == self.service && q.qtype == Type::PTR);
            let known = if asks_ptr {
                self.known_answers(now)
            } else {
                Vec::new()
            };
            let mut msg = Message {
                questions,
                ..Message::query()
            };
            // RFC 6762 §7.1: known answers as far as they fit (no multi-packet TC queries).
            for k in known {
                msg.answers.push(k);
                if msg.to_bytes().len() > MAX_PAYLOAD {
                    msg.answers.pop();
                    break;
                }
            }
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
        cache.chain(pending).chain([self.next_query]).min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<BrowserEvent> {
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

    fn insert(&mut self, now: Instant, r: &Record) {
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
            return;
        }
        let jitter = self.rng.below(REFRESH_JITTER_PERCENT_X100 + 1);
        let mut entry = Entry {
            record: r.clone(),
            received: now,
            expires: now + Duration::from_secs(u64::from(r.ttl)),
            refreshes: 0,
            refresh_at: None,
        };
        entry.refresh_at = refresh_time(&entry, jitter);
        if let Some(e) = existing.and_then(|i| self.cache.get_mut(i)) {
            *e = entry;
        } else if self.cache.len() < MAX_CACHE {
            self.cache.push(entry);
        }
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
    /// what is missing.
    fn update(&mut self, now: Instant) {
        let mut instances: Vec<Name> = Vec::new();
        for e in &self.cache {
            if let RData::Ptr(target) = &e.record.data {
                if e.record.name == self.service
                    && !self.own.contains(target)
                    && !instances.contains(target)
                {
                    instances.push(target.clone());
                }
            }
        }
        let mut current: Vec<(Name, Resolved)> = Vec::new();
        let mut want: Vec<(Name, Type)> = Vec::new();
        for inst in &instances {
            let srv = self.cache.iter().rev().find_map(|e| match &e.record.data {
                RData::Srv { port, target, .. } if e.record.name == *inst => {
                    Some((target.clone(), *port))
                }
                _ => None,
            });
            let Some((host, port)) = srv else {
                want.push((inst.clone(), Type::SRV));
                continue;
            };
            let mut addresses: Vec<IpAddr> = self
                .cache
                .iter()
                .filter(|e| e.record.name == host)
                .filter_map(|e| match e.record.data {
                    RData::A(a) => Some(IpAddr::V4(a)),
                    RData::Aaaa(a) => Some(IpAddr::V6(a)),
                    _ => None,
                })
                .collect();
            addresses.sort();
            addresses.dedup();
            if addresses.is_empty() {
                want.push((host.clone(), Type::A));
                want.push((host, Type::AAAA));
                continue;
            }
            current.push((
                inst.clone(),
                Resolved {
                    host,
                    port,
                    addresses,
                },
            ));
        }
        // Drop records nobody needs any more (an SRV of a vanished instance, say).
        let hosts: Vec<Name> = current.iter().map(|(_, r)| r.host.clone()).collect();
        self.cache.retain(|e| match &e.record.data {
            RData::Srv { .. } => instances.contains(&e.record.name),
            RData::A(_) | RData::Aaaa(_) => {
                hosts.contains(&e.record.name) || want.iter().any(|(n, _)| *n == e.record.name)
            }
            _ => true,
        });
        self.pending
            .retain(|p| want.iter().any(|(n, t)| *n == p.name && *t == p.qtype));
        for (name, qtype) in want {
            if !self
                .pending
                .iter()
                .any(|p| p.name == name && p.qtype == qtype)
            {
                self.pending.push(Pending {
                    name,
                    qtype,
                    at: now,
                    interval: FIRST_INTERVAL,
                });
            }
        }
        for (name, _) in &self.reported {
            if !current.iter().any(|(n, _)| n == name) {
                self.events.push_back(BrowserEvent::Gone {
                    instance: label(name),
                });
            }
        }
        for (name, new) in &current {
            let (instance, host, port, addresses) = (
                label(name),
                new.host.clone(),
                new.port,
                new.addresses.clone(),
            );
            match self.reported.iter().find(|(n, _)| n == name) {
                None => self.events.push_back(BrowserEvent::Appeared {
                    instance,
                    host,
                    port,
                    addresses,
                }),
                Some((_, old)) if old != new => self.events.push_back(BrowserEvent::Changed {
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
}
