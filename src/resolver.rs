//! Host name lookups that never block the event loop and need no NSS: the daemon's side of
//! [`protocol::resolve`]. One non-blocking UDP socket to the nameservers; `/etc/hosts` and
//! `/etc/resolv.conf` read (regular files only) when a lookup starts and they changed.
//!
//! Wiring into the reactor loop:
//! - at start: [`Resolver::new`], then [`Resolver::register`] with a handler that calls
//!   [`Resolver::read`] (and `ctx.reregister` when it returns true: more may be waiting);
//! - [`Resolver::lookup`] instead of `to_socket_addrs`;
//! - after every call into it, set a timer for [`Resolver::poll_timeout`] (cancel it on
//!   `None`) whose handler calls [`Resolver::handle_timeout`], and take the finished lookups
//!   from [`Resolver::poll_done`];
//! - with mDNS running: [`Resolver::set_mdns`]`(true)`, send each [`Resolver::poll_mdns_query`]
//!   payload to both mDNS groups on every interface (from port 5353), and give every datagram
//!   received on UDP 5353 to [`Resolver::handle_mdns_datagram`] too.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata, OpenOptions};
use std::hash::Hash;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use protocol::resolve::{self, Event, Failure, Hosts, LookupId, ResolvConf, Stats, Target};
use protocol::time::Instant;
use reactor::{Context, Handler, Interest, SourceId};
use socket2::{Domain, Protocol, Socket, Type};

use crate::net;

/// Files longer than this are read only this far.
const MAX_FILE: u64 = 1 << 20;
/// DNS over UDP without EDNS0 stays within 512 octets; take more from odd servers.
const MAX_DATAGRAM: usize = 4096;
/// Datagrams read per wakeup, so a flood cannot starve the sessions.
const READ_BATCH: usize = 64;

/// Where the files are, and the port the nameservers listen on (53; tests use others).
#[derive(Clone, Debug)]
pub struct Config {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub dns_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            dns_port: resolve::conf::DNS_PORT,
        }
    }
}

/// A finished lookup: the addresses with the port asked for, IPv4 first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub id: LookupId,
    pub result: Result<Vec<SocketAddr>, Failure>,
}

/// What identifies a version of a file: a change of any of these means read it again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

pub struct Resolver {
    socket: UdpSocket,
    /// The socket is IPv6 (dual-stack): IPv4 nameservers are reached as v4-mapped.
    ipv6: bool,
    core: resolve::Resolver,
    config: Config,
    hosts_stamp: Option<Stamp>,
    conf_stamp: Option<Stamp>,
    /// Port and IPv6 scope of each lookup in flight.
    wanted: HashMap<LookupId, (u16, u32)>,
    done: VecDeque<Done>,
    mdns_queries: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl Resolver {
    /// Opens the socket and reads the files. `seed` drives query ids and the source port.
    pub fn new(config: Config, seed: u64) -> io::Result<Resolver> {
        let mut core = resolve::Resolver::new(ResolvConf::default(), Hosts::default(), seed);
        let (socket, ipv6) = open_socket(core.source_port_hint())?;
        let mut resolver = Resolver {
            socket,
            ipv6,
            core,
            config,
            hosts_stamp: None,
            conf_stamp: None,
            wanted: HashMap::new(),
            done: VecDeque::new(),
            mdns_queries: VecDeque::new(),
            buf: vec![0; MAX_DATAGRAM],
        };
        resolver.reload();
        Ok(resolver)
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Registers the socket for reading; `handler` calls [`Resolver::read`].
    pub fn register<S, T: Eq + Hash + Clone>(
        &self,
        ctx: &mut Context<S, T>,
        handler: Handler<S, T>,
    ) -> io::Result<SourceId> {
        ctx.register(self.fd(), Interest::READABLE, handler)
    }

    /// Whether `.local` names go to mDNS (see the module documentation) or to the nameservers.
    pub fn set_mdns(&mut self, enabled: bool) {
        self.core.set_mdns(enabled);
    }

    /// Starts looking up `host` (a name or an IP literal, IPv6 with an optional `%scope`);
    /// the result comes from [`Resolver::poll_done`], at once for literals and hosts-file
    /// names.
    pub fn lookup(&mut self, now: Instant, host: &str, port: u16) -> LookupId {
        self.reload();
        let (name, scope) = match host.split_once('%') {
            Some((ip, scope)) if ip.parse::<Ipv6Addr>().is_ok() => match if_index(scope) {
                Some(index) => (ip, index),
                // Not a scope: let the core say it is not a host name.
                None => ("", 0),
            },
            _ => (host, 0),
        };
        let id = self.core.resolve(now, name);
        self.wanted.insert(id, (port, scope));
        self.flush();
        id
    }

    /// Forgets a lookup: it will not come out of [`Resolver::poll_done`].
    pub fn cancel(&mut self, id: LookupId) {
        self.core.cancel(id);
        self.wanted.remove(&id);
        self.done.retain(|d| d.id != id);
    }

    /// Reads what the socket has (up to a batch); true if it may have more.
    pub fn read(&mut self, now: Instant) -> bool {
        let mut more = true;
        for _ in 0..READ_BATCH {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    let bytes = &self.buf[..len.min(self.buf.len())];
                    self.core.handle_datagram(now, net::canonical(from), bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // An ICMP error for an earlier send (port unreachable): the retry handles it.
                Err(e) => debug!("resolver receive: {e}"),
            }
        }
        self.flush();
        more
    }

    /// Runs the retries and timeouts that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.flush();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    pub fn poll_done(&mut self) -> Option<Done> {
        self.done.pop_front()
    }

    /// A one-shot mDNS query to send to both groups on every mDNS interface.
    pub fn poll_mdns_query(&mut self) -> Option<Vec<u8>> {
        self.mdns_queries.pop_front()
    }

    /// A datagram the daemon's mDNS sockets received on interface `if_index` (the `tap` of
    /// `Mdns::read`): link-local IPv6 addresses in its answers are on that interface.
    pub fn handle_mdns_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        if_index: u32,
        bytes: &[u8],
    ) {
        self.core
            .handle_mdns_datagram(now, net::canonical(from), bytes);
        self.flush_scoped(if_index);
    }

    /// Replies dropped as malformed, stray or spoofed.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    fn flush(&mut self) {
        self.flush_scoped(0);
    }

    /// Sends what the core wants sent and collects its events; link-local IPv6 addresses
    /// without a scope of their own get `link_scope` (the interface an mDNS answer came in
    /// on, 0 if none).
    fn flush_scoped(&mut self, link_scope: u32) {
        let mut payload = Vec::new();
        while let Some(t) = self.core.poll_transmit(&mut payload) {
            let bytes = &payload[..t.size];
            match t.dst {
                Target::Mdns => self.mdns_queries.push_back(bytes.to_vec()),
                Target::Nameserver(ns) => {
                    let dst = match ns {
                        SocketAddr::V4(v4) if self.ipv6 => {
                            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
                        }
                        SocketAddr::V6(_) if !self.ipv6 => {
                            debug!("resolver: no IPv6 socket for nameserver {ns}");
                            continue;
                        }
                        other => other,
                    };
                    // A full send buffer or an unreachable network: the retry timer covers it.
                    if let Err(e) = self.socket.send_to(bytes, dst) {
                        debug!("resolver: cannot send to {ns}: {e}");
                    }
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            let id = event.id();
            let Some((port, mut scope)) = self.wanted.remove(&id) else {
                continue;
            };
            if scope == 0 {
                scope = link_scope;
            }
            let result = match event {
                Event::Resolved(_, addrs) => Ok(addrs
                    .into_iter()
                    .map(|ip| match ip {
                        IpAddr::V6(v6) if scope != 0 && v6.is_unicast_link_local() => {
                            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
                        }
                        ip => SocketAddr::new(ip, port),
                    })
                    .collect()),
                Event::Failed(_, failure) => Err(failure),
            };
            self.done.push_back(Done { id, result });
        }
    }

    /// Reads the files again if they changed since last time.
    fn reload(&mut self) {
        let path = self.config.hosts.clone();
        if let Some(text) = read_if_changed(&path, &mut self.hosts_stamp) {
            let (hosts, errors) = Hosts::parse(&text);
            log_errors(&path, &errors);
            self.core.set_hosts(hosts);
        }
        let path = self.config.resolv_conf.clone();
        if let Some(text) = read_if_changed(&path, &mut self.conf_stamp) {
            let (mut conf, errors) = ResolvConf::parse_with(&text, if_index);
            log_errors(&path, &errors);
            for ns in &mut conf.nameservers {
                ns.set_port(self.config.dns_port);
            }
            if conf.nameservers.is_empty() {
                conf.nameservers = conf.servers();
                for ns in &mut conf.nameservers {
                    ns.set_port(self.config.dns_port);
                }
            }
            self.core.set_conf(conf);
        }
    }
}

/// The socket: IPv6 dual-stack if the host has IPv6, else IPv4; on port `hint` if it is
/// free, else one the kernel picks.
fn open_socket(hint: u16) -> io::Result<(UdpSocket, bool)> {
    let mut last = io::Error::other("no socket");
    for port in [hint, 0] {
        for ip in [
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED.into(),
        ] {
            match bind(SocketAddr::new(ip, port)) {
                Ok(socket) => return Ok((socket, ip.is_ipv6())),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The file's octets if it is a regular file whose stamp differs from `stamp` (updated).
/// A missing file reads as empty; any other problem keeps what was read before.
fn read_if_changed(path: &Path, stamp: &mut Option<Stamp>) -> Option<Vec<u8>> {
    match read_regular(path, *stamp) {
        Ok(Some((new, text))) => {
            *stamp = Some(new);
            Some(text)
        }
        Ok(None) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("{}: {e}", path.display());
            *stamp = None;
            Some(Vec::new())
        }
        Err(e) => {
            warn!("{}: {e}", path.display());
            None
        }
    }
}

/// Opens without blocking (a FIFO would block an `open` for reading without O_NONBLOCK) and
/// reads only a regular file; `None` if its stamp is still `old`.
fn read_regular(path: &Path, old: Option<Stamp>) -> io::Result<Option<(Stamp, Vec<u8>)>> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let stamp = Stamp::of(&meta);
    if old == Some(stamp) {
        return Ok(None);
    }
    let mut text = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut text)?;
    Ok(Some((stamp, text)))
}

fn log_errors(path: &Path, errors: &[resolve::ParseError]) {
    for e in errors {
        debug!("{}: {e}, skipped", path.display());
    }
}

/// An interface index: a number, or an interface name (a syscall on a local socket, no NSS).
fn if_index(scope: &str) -> Option<u32> {
    scope
        .parse()
        .ok()
        .or_else(|| nix::net::if_::if_nametoindex(scope).ok())
        .filter(|&i| i != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::mdns::message::flags;
    use protocol::mdns::{Message, RData, Record, Type};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant as StdInstant};

    /// A scratch directory with the two files.
    struct Dir(PathBuf);

    impl Dir {
        fn new(hosts: &str, resolv_conf: &str) -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rtpmidid-resolver-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("hosts"), hosts).unwrap();
            std::fs::write(dir.join("resolv.conf"), resolv_conf).unwrap();
            Dir(dir)
        }

        fn config(&self, dns_port: u16) -> Config {
            Config {
                hosts: self.0.join("hosts"),
                resolv_conf: self.0.join("resolv.conf"),
                dns_port,
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A nameserver on 127.0.0.1 that answers every A query with 192.0.2.44 and every other
    /// with no data, until `stop` datagrams are answered.
    fn fake_server(answers: usize) -> (u16, std::thread::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..answers {
                let (len, from) = socket.recv_from(&mut buf).unwrap();
                let query = Message::parse(&buf[..len]).unwrap();
                let q = &query.questions[0];
                let answers = if q.qtype == Type::A {
                    let a = RData::A("192.0.2.44".parse().unwrap());
                    vec![Record::new(q.name.clone(), 60, false, a)]
                } else {
                    vec![]
                };
                let reply = Message {
                    id: query.id,
                    flags: flags::QR | flags::RD | flags::RA,
                    questions: query.questions.clone(),
                    answers,
                    ..Message::default()
                };
                socket.send_to(&reply.to_bytes(), from).unwrap();
            }
        });
        (port, thread)
    }

    fn now(origin: StdInstant) -> Instant {
        Instant::from_micros(origin.elapsed().as_micros() as u64)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct Timer;

    struct State {
        resolver: Resolver,
        origin: StdInstant,
        done: Vec<Done>,
    }

    type Ctx = Context<State, Timer>;

    fn rearm(s: &mut State, ctx: &mut Ctx) {
        match s.resolver.poll_timeout() {
            Some(t) => ctx.set_timer(Timer, s.origin + Duration::from_micros(t.as_micros())),
            None => {
                ctx.cancel_timer(&Timer);
            }
        }
        s.done.extend(std::iter::from_fn(|| s.resolver.poll_done()));
        if !s.done.is_empty() {
            ctx.stop();
        }
    }

    fn on_readable(s: &mut State, ctx: &mut Ctx, event: reactor::Event) {
        if s.resolver.read(now(s.origin)) {
            ctx.reregister(event.source, Interest::READABLE).unwrap();
        }
        rearm(s, ctx);
    }

    fn on_timer(s: &mut State, ctx: &mut Ctx, _: Timer) {
        s.resolver.handle_timeout(now(s.origin));
        rearm(s, ctx);
    }

    #[test]
    fn resolves_in_the_reactor_loop() {
        let (port, server) = fake_server(2);
        let dir = Dir::new(
            "10.9.8.7 synth\n",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        let origin = StdInstant::now();
        let resolver = Resolver::new(dir.config(port), 5).unwrap();
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        resolver.register(reactor.context(), on_readable).unwrap();
        let mut state = State {
            resolver,
            origin,
            done: Vec::new(),
        };
        // From the hosts file and literals: at once.
        let t = now(origin);
        let synth = state.resolver.lookup(t, "synth", 5004);
        let scoped = state.resolver.lookup(t, "fe80::2%1", 5006);
        let bad_scope = state.resolver.lookup(t, "fe80::2%no-such-if0", 5006);
        let done: Vec<Done> = std::iter::from_fn(|| state.resolver.poll_done()).collect();
        assert_eq!(
            done,
            [
                Done {
                    id: synth,
                    result: Ok(vec![sa("10.9.8.7:5004")])
                },
                Done {
                    id: scoped,
                    result: Ok(vec![sa("[fe80::2%1]:5006")])
                },
                Done {
                    id: bad_scope,
                    result: Err(Failure::BadName)
                },
            ]
        );
        // From the fake nameserver.
        let id = state.resolver.lookup(now(origin), "studio.example.", 5004);
        rearm(&mut state, reactor.context());
        while state.done.is_empty() {
            reactor
                .run_once(&mut state, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(origin.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(
            state.done,
            [Done {
                id,
                result: Ok(vec![sa("192.0.2.44:5004")])
            }]
        );
        assert_eq!(state.resolver.stats(), Stats::default());
        server.join().unwrap();
    }

    #[test]
    fn silent_nameserver_fails_without_blocking() {
        // Bound but never read: the queries vanish.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let dir = Dir::new("", "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n");
        let origin = StdInstant::now();
        let mut resolver = Resolver::new(dir.config(port), 6).unwrap();
        let mut calls = Vec::new();
        let mut timed = |f: &mut dyn FnMut()| {
            let start = StdInstant::now();
            f();
            calls.push(start.elapsed());
        };
        let mut id = None;
        timed(&mut || id = Some(resolver.lookup(now(origin), "nowhere.example.", 5004)));
        let done = loop {
            timed(&mut || {
                resolver.read(now(origin));
            });
            timed(&mut || resolver.handle_timeout(now(origin)));
            if let Some(done) = resolver.poll_done() {
                break done;
            }
            assert!(origin.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = origin.elapsed();
        assert_eq!(done.id, id.unwrap());
        assert_eq!(done.result, Err(Failure::Timeout));
        // Two tries of one second each.
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        calls.sort();
        let median = calls[calls.len() / 2];
        let max = *calls.last().unwrap();
        eprintln!("{} calls: median {median:?}, max {max:?}", calls.len());
        // A call that blocked would wait out the one-second timeout; the bound leaves room for
        // a loaded machine's preemption, which is not what this test is about.
        assert!(max < Duration::from_millis(500), "max {max:?}");
        drop(silent);
    }

    #[test]
    fn files_are_read_again_when_they_change_and_only_if_regular() {
        // Queries go to a socket that never answers, never to a real nameserver.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let dir = Dir::new("10.0.0.1 synth\n", "nameserver 127.0.0.1\n");
        let mut resolver = Resolver::new(dir.config(port), 7).unwrap();
        let t = Instant::from_micros(0);
        resolver.lookup(t, "synth", 1);
        let first = resolver.poll_done().unwrap().result;
        assert_eq!(first, Ok(vec![sa("10.0.0.1:1")]));
        std::fs::write(dir.0.join("hosts"), "10.0.0.2  synth  # moved\n").unwrap();
        resolver.lookup(t, "synth", 1);
        assert_eq!(
            resolver.poll_done().unwrap().result,
            Ok(vec![sa("10.0.0.2:1")])
        );
        // A FIFO in place of the file: not opened for a blocking read, the old table stays.
        std::fs::remove_file(dir.0.join("hosts")).unwrap();
        nix::unistd::mkfifo(&dir.0.join("hosts"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let start = StdInstant::now();
        resolver.lookup(t, "synth", 1);
        assert!(start.elapsed() < Duration::from_millis(100));
        assert_eq!(
            resolver.poll_done().unwrap().result,
            Ok(vec![sa("10.0.0.2:1")])
        );
        // Gone: an empty table.
        std::fs::remove_file(dir.0.join("hosts")).unwrap();
        let id = resolver.lookup(t, "synth", 1);
        assert!(resolver.poll_done().is_none());
        resolver.cancel(id);
        assert_eq!(resolver.poll_timeout(), None);
    }

    #[test]
    fn local_names_become_mdns_queries() {
        let dir = Dir::new("", "");
        let mut resolver = Resolver::new(dir.config(53), 8).unwrap();
        resolver.set_mdns(true);
        let t = Instant::from_micros(0);
        let id = resolver.lookup(t, "studio.local", 5004);
        let query = Message::parse(&resolver.poll_mdns_query().unwrap()).unwrap();
        assert_eq!(query.questions.len(), 2);
        let answer = Message {
            answers: vec![Record::new(
                query.questions[0].name.clone(),
                120,
                true,
                RData::A("192.168.1.30".parse().unwrap()),
            )],
            ..Message::response()
        };
        resolver.handle_mdns_datagram(t, sa("192.168.1.30:5353"), 3, &answer.to_bytes());
        assert_eq!(
            resolver.poll_done(),
            Some(Done {
                id,
                result: Ok(vec![sa("192.168.1.30:5004")])
            })
        );
        // A link-local IPv6 answer is on the interface it came in on.
        let id = resolver.lookup(t, "studio.local", 5004);
        let aaaa = |a: &str| {
            let data = RData::Aaaa(a.parse().unwrap());
            Record::new(query.questions[0].name.clone(), 120, true, data)
        };
        let answer = Message {
            answers: vec![aaaa("fe80::30"), aaaa("2001:db8::30")],
            ..Message::response()
        };
        resolver.handle_mdns_datagram(t, sa("[fe80::30%3]:5353"), 3, &answer.to_bytes());
        let both = vec![sa("[fe80::30%3]:5004"), sa("[2001:db8::30]:5004")];
        assert_eq!(
            resolver.poll_done(),
            Some(Done {
                id,
                result: Ok(both)
            })
        );
    }
}
