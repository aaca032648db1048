//! The lookup state machine. A name is answered at once when it is an IP literal, in the hosts
//! table or `localhost` (RFC 6761 §6.3); a `.local` name (when mDNS is on) goes out as a
//! one-shot mDNS query; any other name as A and AAAA queries to the nameservers, for each name
//! of the search list in turn, each nameserver in turn, `attempts` rounds, like glibc.
//!
//! A reply counts only if it comes from the nameserver asked, carries the id of a query in
//! flight and echoes its question; anything else is dropped and counted in [`Stats`].
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{normalize, valid_name, Event, Failure, Hosts, LookupId, ResolvConf, Target, Transmit};
use crate::mdns::message::{flags, CLASS_IN};
use crate::mdns::{Message, Name, Question, RData, Record, Type, MDNS_PORT};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Lookups in flight at most; more fail with [`Failure::Busy`].
pub const MAX_LOOKUPS: usize = 64;
/// CNAME records followed from the question name at most.
const MAX_CNAME_CHAIN: usize = 8;
/// One-shot mDNS queries: three, a second apart, then give up (RFC 6762 §5.1 leaves it to us).
const MDNS_INTERVAL: Duration = Duration::from_secs(1);
const MDNS_QUERIES: u32 = 3;
/// Source ports hinted: the dynamic range (RFC 6335 §6).
const FIRST_DYNAMIC_PORT: u16 = 49152;
/// DNS rcodes (RFC 1035 §4.1.1).
const NOERROR: u16 = 0;
const NXDOMAIN: u16 = 3;

/// Datagrams dropped, by reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Stats {
    /// Not a DNS message.
    pub malformed: u64,
    /// No query in flight with that id to that address: late, stray or spoofed.
    pub unmatched: u64,
    /// Right id and source but not a response to the question asked: spoofed or broken.
    pub mismatched: u64,
    /// A CNAME chain longer than we follow.
    pub long_chains: u64,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Answer {
    Waiting,
    /// NOERROR, with the addresses found (none: the name has no record of that type).
    Addresses(Vec<IpAddr>),
    NxDomain,
    /// SERVFAIL, REFUSED, truncated without an answer...
    Failed,
}

#[derive(Clone, Debug)]
struct Query {
    qtype: Type,
    id: u16,
    answer: Answer,
}

#[derive(Clone, Debug)]
struct Dns {
    /// The names to try (the search list applied), and the one being tried.
    names: Vec<Name>,
    current: usize,
    /// Tries of the current name so far; try `n` goes to server `start + n`.
    tries: usize,
    start: usize,
    server: SocketAddr,
    queries: [Query; 2],
    deadline: Instant,
    /// How the last try of the current name ended.
    last: Failure,
    /// Some name ran out of tries on server errors.
    servfail: bool,
}

#[derive(Clone, Debug)]
enum State {
    Dns(Dns),
    Mdns {
        name: Name,
        sent: u32,
        deadline: Instant,
    },
}

#[derive(Clone, Debug)]
struct Lookup {
    id: LookupId,
    state: State,
}

impl Lookup {
    fn deadline(&self) -> Instant {
        match &self.state {
            State::Dns(d) => d.deadline,
            State::Mdns { deadline, .. } => *deadline,
        }
    }
}

/// The resolver. See the module documentation of [`super`] for how the shell drives it.
#[derive(Debug)]
pub struct Resolver {
    conf: ResolvConf,
    servers: Vec<SocketAddr>,
    hosts: Hosts,
    mdns: bool,
    rng: Rng,
    next_id: u64,
    rotation: usize,
    lookups: Vec<Lookup>,
    transmits: VecDeque<(Target, Vec<u8>)>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Resolver {
    /// A resolver with mDNS off (`.local` names go to the nameservers like any other).
    pub fn new(conf: ResolvConf, hosts: Hosts, seed: u64) -> Self {
        Resolver {
            servers: conf.servers(),
            conf,
            hosts,
            mdns: false,
            rng: Rng::new(seed),
            next_id: 0,
            rotation: 0,
            lookups: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// New settings (a changed `/etc/resolv.conf`): lookups in flight use them from their
    /// next try.
    pub fn set_conf(&mut self, conf: ResolvConf) {
        self.servers = conf.servers();
        self.conf = conf;
    }

    pub fn set_hosts(&mut self, hosts: Hosts) {
        self.hosts = hosts;
    }

    /// Whether `.local` names go to mDNS: only when the daemon's mDNS glue sends
    /// [`Target::Mdns`] datagrams and feeds [`Resolver::handle_mdns_datagram`].
    pub fn set_mdns(&mut self, enabled: bool) {
        self.mdns = enabled;
    }

    pub fn conf(&self) -> &ResolvConf {
        &self.conf
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Lookups in flight.
    pub fn in_flight(&self) -> usize {
        self.lookups.len()
    }

    /// A random port of the dynamic range to bind the socket to (port randomisation against
    /// spoofing, RFC 5452 §9.2; the shell falls back to a kernel-chosen port).
    pub fn source_port_hint(&mut self) -> u16 {
        FIRST_DYNAMIC_PORT + self.rng.below(u64::from(u16::MAX - FIRST_DYNAMIC_PORT) + 1) as u16
    }

    /// Starts a lookup of `name`. IP literals, hosts-table names and `localhost` have their
    /// [`Event`] queued at once.
    pub fn resolve(&mut self, now: Instant, name: &str) -> LookupId {
        let id = LookupId(self.next_id);
        self.next_id += 1;
        if let Ok(ip) = name.parse::<IpAddr>() {
            self.events.push_back(Event::Resolved(id, vec![ip]));
            return id;
        }
        if !valid_name(name) {
            self.events.push_back(Event::Failed(id, Failure::BadName));
            return id;
        }
        let listed = self.hosts.lookup(name);
        if !listed.is_empty() {
            self.events.push_back(Event::Resolved(id, listed));
            return id;
        }
        let key = normalize(name);
        if key == "localhost" || key.ends_with(".localhost") {
            let loopback = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
            self.events.push_back(Event::Resolved(id, loopback));
            return id;
        }
        if self.lookups.len() >= MAX_LOOKUPS {
            self.events.push_back(Event::Failed(id, Failure::Busy));
            return id;
        }
        if self.mdns && key.ends_with(".local") {
            let Ok(name) = Name::from_dotted(&key) else {
                self.events.push_back(Event::Failed(id, Failure::BadName));
                return id;
            };
            self.send_mdns(&name);
            self.lookups.push(Lookup {
                id,
                state: State::Mdns {
                    name,
                    sent: 1,
                    deadline: now + MDNS_INTERVAL,
                },
            });
            return id;
        }
        let names = self.candidates(name);
        if names.is_empty() {
            self.events.push_back(Event::Failed(id, Failure::BadName));
            return id;
        }
        if self.servers.is_empty() {
            self.events
                .push_back(Event::Failed(id, Failure::NoNameservers));
            return id;
        }
        let start = if self.conf.rotate {
            self.rotation = (self.rotation + 1) % self.servers.len();
            self.rotation
        } else {
            0
        };
        let query = |qtype| Query {
            qtype,
            id: 0,
            answer: Answer::Waiting,
        };
        let dns = Dns {
            names,
            current: 0,
            tries: 0,
            start,
            server: self.servers[0],
            queries: [query(Type::A), query(Type::AAAA)],
            deadline: now,
            last: Failure::Timeout,
            servfail: false,
        };
        self.next_try(now, id, dns);
        id
    }

    /// Forgets a lookup: no event will come for it. False if it is not in flight.
    pub fn cancel(&mut self, id: LookupId) -> bool {
        let before = self.lookups.len();
        self.lookups.retain(|l| l.id != id);
        self.events.retain(|e| e.id() != id);
        self.lookups.len() != before
    }

    /// A datagram received on the resolver's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let from = canonical(from);
        let found = self
            .lookups
            .iter()
            .enumerate()
            .find_map(|(i, l)| match &l.state {
                State::Dns(d) if same_server(d.server, from) => d
                    .queries
                    .iter()
                    .position(|q| q.id == msg.id && q.answer == Answer::Waiting)
                    .map(|q| (i, q)),
                _ => None,
            });
        let Some((index, q)) = found else {
            self.stats.unmatched += 1;
            return;
        };
        let Lookup { id, state } = self.lookups.swap_remove(index);
        let State::Dns(mut dns) = state else {
            return;
        };
        let name = &dns.names[dns.current];
        let query = &dns.queries[q];
        let echoes = msg.questions.len() == 1
            && msg.questions[0].name == *name
            && msg.questions[0].qtype == query.qtype
            && msg.questions[0].qclass == CLASS_IN;
        if !msg.is_response() || msg.opcode() != 0 || !echoes {
            self.stats.mismatched += 1;
            self.lookups.push(Lookup {
                id,
                state: State::Dns(dns),
            });
            return;
        }
        let answer = match msg.rcode() {
            NOERROR => {
                let addrs = self.addresses(&msg, name, query.qtype);
                // Truncated: only complete if it still holds an answer (we have no TCP).
                if msg.flags & flags::TC != 0 && addrs.is_empty() {
                    Answer::Failed
                } else {
                    Answer::Addresses(addrs)
                }
            }
            NXDOMAIN => Answer::NxDomain,
            _ => Answer::Failed,
        };
        dns.queries[q].answer = answer;
        self.evaluate(now, id, dns);
    }

    /// An mDNS datagram the daemon received on UDP 5353 (any interface).
    pub fn handle_mdns_datagram(&mut self, _now: Instant, from: SocketAddr, bytes: &[u8]) {
        if from.port() != MDNS_PORT || !self.lookups.iter().any(|l| is_mdns(&l.state)) {
            return;
        }
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        // RFC 6762 §18: responses with opcode and rcode 0 only.
        if !msg.is_response() || msg.opcode() != 0 || msg.rcode() != 0 {
            return;
        }
        let records: Vec<&Record> = msg.answers.iter().chain(&msg.additionals).collect();
        let mut i = 0;
        while let Some(lookup) = self.lookups.get(i) {
            let State::Mdns { name, .. } = &lookup.state else {
                i += 1;
                continue;
            };
            let addrs = sorted(
                records
                    .iter()
                    .filter(|r| r.name == *name && r.class == CLASS_IN && r.ttl > 0)
                    .filter_map(|r| address(r, None)),
            );
            if addrs.is_empty() {
                i += 1;
            } else {
                let id = self.lookups.swap_remove(i).id;
                self.events.push_back(Event::Resolved(id, addrs));
            }
        }
    }

    /// Retries or fails the lookups whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|l| l.deadline() <= now)
            .map(|l| l.id)
            .collect();
        for id in due {
            let Some(index) = self.lookups.iter().position(|l| l.id == id) else {
                continue;
            };
            let lookup = self.lookups.swap_remove(index);
            match lookup.state {
                State::Dns(mut dns) => {
                    let addrs = found(&dns);
                    if !addrs.is_empty() {
                        // One family answered, the other did not: take what there is.
                        self.events.push_back(Event::Resolved(id, addrs));
                    } else {
                        dns.last = Failure::Timeout;
                        self.next_try(now, id, dns);
                    }
                }
                State::Mdns { sent, .. } if sent >= MDNS_QUERIES => {
                    self.events.push_back(Event::Failed(id, Failure::Timeout));
                }
                State::Mdns { name, sent, .. } => {
                    self.send_mdns(&name);
                    self.lookups.push(Lookup {
                        id,
                        state: State::Mdns {
                            name,
                            sent: sent + 1,
                            deadline: now + MDNS_INTERVAL,
                        },
                    });
                }
            }
        }
    }

    /// The next deadline for [`Resolver::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lookups.iter().map(Lookup::deadline).min()
    }

    /// The next datagram to send, written to `buf` (cleared first).
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (dst, payload) = self.transmits.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&payload);
        Some(Transmit {
            dst,
            size: payload.len(),
        })
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The names to ask for `name` (resolv.conf(5)): as it is, if it ends in a dot; else the
    /// search list applied, after the name itself if it has `ndots` dots or more, before it
    /// otherwise.
    fn candidates(&self, name: &str) -> Vec<Name> {
        let base = name.strip_suffix('.').unwrap_or(name);
        let as_is = Name::from_dotted(base).ok();
        if name.ends_with('.') {
            return as_is.into_iter().collect();
        }
        let searched = self
            .conf
            .search
            .iter()
            .filter_map(|d| Name::from_dotted(&format!("{base}.{d}")).ok());
        let mut names: Vec<Name> = if base.matches('.').count() >= usize::from(self.conf.ndots) {
            as_is.into_iter().chain(searched).collect()
        } else {
            searched.chain(as_is).collect()
        };
        let mut seen = Vec::new();
        names.retain(|n| {
            let new = !seen.contains(n);
            seen.push(n.clone());
            new
        });
        names
    }

    /// After an answer: finish, wait for the other one, or go on.
    fn evaluate(&mut self, now: Instant, id: LookupId, mut dns: Dns) {
        let waiting = dns.queries.iter().any(|q| q.answer == Answer::Waiting);
        let failed = dns.queries.iter().any(|q| q.answer == Answer::Failed);
        let addrs = found(&dns);
        if !addrs.is_empty() && (failed || !waiting) {
            self.events.push_back(Event::Resolved(id, addrs));
        } else if failed {
            // Like glibc: a server error sends the question to the next server at once.
            dns.last = Failure::ServerFailure;
            self.next_try(now, id, dns);
        } else if !waiting {
            // NXDOMAIN or no address: the next name of the search list.
            self.next_name(now, id, dns);
        } else {
            self.lookups.push(Lookup {
                id,
                state: State::Dns(dns),
            });
        }
    }

    /// Asks the next server about the current name, or moves on when every try is spent.
    fn next_try(&mut self, now: Instant, id: LookupId, mut dns: Dns) {
        let n = self.servers.len();
        if n == 0 {
            self.events
                .push_back(Event::Failed(id, Failure::NoNameservers));
            return;
        }
        if dns.tries >= n * usize::from(self.conf.attempts) {
            if dns.last == Failure::Timeout {
                // Like glibc: servers that do not answer will not answer the next name either.
                self.events.push_back(Event::Failed(id, Failure::Timeout));
                return;
            }
            dns.servfail = true;
            return self.next_name(now, id, dns);
        }
        dns.server = self.servers[(dns.start % n + dns.tries % n) % n];
        dns.tries += 1;
        dns.deadline = now + self.conf.timeout.max(Duration::from_millis(1));
        let name = dns.names[dns.current].clone();
        for i in 0..dns.queries.len() {
            let qid = self.fresh_id(&dns);
            let q = &mut dns.queries[i];
            q.id = qid;
            q.answer = Answer::Waiting;
            let msg = Message {
                id: qid,
                flags: flags::RD,
                questions: vec![Question::new(name.clone(), q.qtype)],
                ..Message::default()
            };
            self.transmits
                .push_back((Target::Nameserver(dns.server), msg.to_bytes()));
        }
        self.lookups.push(Lookup {
            id,
            state: State::Dns(dns),
        });
    }

    fn next_name(&mut self, now: Instant, id: LookupId, mut dns: Dns) {
        dns.current += 1;
        dns.tries = 0;
        dns.last = Failure::Timeout;
        if dns.current >= dns.names.len() {
            let failure = if dns.servfail {
                Failure::ServerFailure
            } else {
                Failure::NotFound
            };
            self.events.push_back(Event::Failed(id, failure));
        } else {
            self.next_try(now, id, dns);
        }
    }

    /// A random query id no query in flight (nor the other one of `dns`) uses.
    fn fresh_id(&mut self, dns: &Dns) -> u16 {
        loop {
            let id = self.rng.next_u32() as u16;
            let taken = self
                .lookups
                .iter()
                .filter_map(|l| match &l.state {
                    State::Dns(d) => Some(d),
                    State::Mdns { .. } => None,
                })
                .chain([dns])
                .flat_map(|d| d.queries.iter())
                .any(|q| q.id == id && q.answer == Answer::Waiting);
            if !taken {
                return id;
            }
        }
    }

    /// The addresses of type `qtype` for `name` in the answer section, through CNAMEs.
    fn addresses(&mut self, msg: &Message, name: &Name, qtype: Type) -> Vec<IpAddr> {
        let mut name = name;
        for _ in 0..=MAX_CNAME_CHAIN {
            let records = msg
                .answers
                .iter()
                .filter(|r| r.name == *name && r.class == CLASS_IN);
            let addrs: Vec<IpAddr> = records
                .clone()
                .filter_map(|r| address(r, Some(qtype)))
                .collect();
            if !addrs.is_empty() {
                return addrs;
            }
            match records
                .filter_map(|r| match &r.data {
                    RData::Cname(target) => Some(target),
                    _ => None,
                })
                .next()
            {
                Some(target) => name = target,
                None => return Vec::new(),
            }
        }
        self.stats.long_chains += 1;
        Vec::new()
    }

    fn send_mdns(&mut self, name: &Name) {
        let msg = Message {
            questions: vec![
                Question::new(name.clone(), Type::A),
                Question::new(name.clone(), Type::AAAA),
            ],
            ..Message::query()
        };
        self.transmits.push_back((Target::Mdns, msg.to_bytes()));
    }
}

fn is_mdns(state: &State) -> bool {
    matches!(state, State::Mdns { .. })
}

/// The address in an A or AAAA record (of `qtype` when given).
fn address(r: &Record, qtype: Option<Type>) -> Option<IpAddr> {
    if qtype.is_some_and(|t| t != r.rtype()) {
        return None;
    }
    match r.data {
        RData::A(a) => Some(a.into()),
        RData::Aaaa(a) => Some(a.into()),
        _ => None,
    }
}

/// The addresses both queries of the current try found, IPv4 first.
fn found(dns: &Dns) -> Vec<IpAddr> {
    sorted(dns.queries.iter().flat_map(|q| match &q.answer {
        Answer::Addresses(a) => a.clone(),
        _ => Vec::new(),
    }))
}

/// IPv4 first, then IPv6, each in the order given, without duplicates.
fn sorted(addrs: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out.sort_by_key(IpAddr::is_ipv6);
    out
}

/// A v4-mapped IPv6 source as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The same address and port (a received IPv6 source may carry flow info the configured
/// address has not).
fn same_server(server: SocketAddr, from: SocketAddr) -> bool {
    server.ip() == from.ip() && server.port() == from.port()
}
