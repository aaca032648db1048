//! mDNS on the daemon's side: the UDP 5353 sockets, the interfaces and one
//! [`Responder`] + [`Browser`] per interface (see `protocol::mdns` for how they are driven),
//! peers merged over interfaces into [`PeerEvent`]s (the router decides what they get).
//!
//! One socket per family, bound to the wildcard address on 5353 with SO_REUSEADDR and
//! SO_REUSEPORT so that an avahi-daemon on the same host keeps working, joined to the group on
//! every interface we use; IP_PKTINFO / IPV6_RECVPKTINFO tell which interface a datagram came
//! in on.
use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info, warn};
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage,
};
use protocol::mdns::{
    midi2_service, midi2_txt, Browser, BrowserEvent, Destination, Message, Responder,
    ResponderEvent, ServiceId, ServiceKind, Transmit, MDNS_IPV4, MDNS_IPV6, MDNS_PORT,
};
use protocol::time::{Duration, Instant};
use reactor::{Context, Event, Handler, Interest};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockRef, Socket, Type};

use crate::config;

/// Interfaces and their addresses are looked at again this often.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// mDNS messages stay under 9000 bytes (RFC 6762 §17).
const MAX_DATAGRAM: usize = 9000;
/// Datagrams, bytes and time spent on one socket per wakeup, so that a flood cannot starve
/// the sessions: the rest waits for the next turn of the loop (or is dropped by the kernel).
const READ_BATCH: usize = 16;
const READ_BYTES: usize = 16 * 1024;
const READ_TIME: std::time::Duration = std::time::Duration::from_millis(1);
/// Peer events handed to the daemon per wakeup: a flood of services reaches the router a few
/// at a time, between MIDI, not all in one turn.
const PEER_EVENTS_PER_TURN: usize = 16;
/// A withdrawn instance of ours stays ours this long for the browsers, until our own goodbye
/// has flushed it from their caches (one second after it is received, RFC 6762 §10.1).
const RETIRE_TIME: Duration = Duration::from_secs(3);
/// RFC 1035 §2.3.4.
const MAX_LABEL: usize = 63;
const HOST_SUFFIX: &str = "-rtpmidid";

/// A discovered `_apple-midi._udp` peer, merged over interfaces and families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    Appeared { name: String, addr: SocketAddr },
    Changed { name: String, addr: SocketAddr },
    Gone { name: String },
}

/// A peer event of `_apple-midi._udp`, or of `_midi2._udp` (`midi2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    pub midi2: bool,
    pub event: PeerEvent,
}

/// Moves `events` into the paced queue, marked with their protocol.
fn queue(paced: &mut Paced<Discovery>, midi2: bool, events: &mut VecDeque<PeerEvent>) {
    paced
        .queue
        .extend(events.drain(..).map(|event| Discovery { midi2, event }));
}

/// A service we announce, under a key of the daemon's choosing (its listener id).
struct Wanted {
    key: u32,
    name: String,
    port: u16,
    kind: ServiceKind,
}

struct Interface {
    index: u32,
    name: String,
    addresses: Vec<IpAddr>,
    responder: Responder,
    /// `_apple-midi._udp`, and `_midi2._udp` (Network MIDI 2.0 hosts).
    browser: Browser,
    midi2_browser: Browser,
    services: Vec<(u32, ServiceId)>,
}

impl Interface {
    /// The IPv4 address we send multicast from (IP_MULTICAST_IF), if any.
    fn v4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    fn has_v6(&self) -> bool {
        self.addresses.iter().any(IpAddr::is_ipv6)
    }
}

pub struct Mdns {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    /// `--mdns-interface`: only these interfaces (any flags); empty: every multicast one.
    only: Vec<String>,
    host_label: String,
    seed: u64,
    interfaces: Vec<Interface>,
    services: Vec<Wanted>,
    /// Withdrawn instance names, still ours until the time given.
    retired: Vec<(protocol::mdns::Name, Instant)>,
    peers: Peers,
    midi2_peers: Peers,
    events: Paced<Discovery>,
    /// The time of the last input, for a deadline of "at once" while events wait.
    now: Instant,
    rescan_at: Instant,
    buf: Vec<u8>,
}

impl Mdns {
    /// Opens the sockets, watched with `handler`, and starts on the interfaces there are now;
    /// `None` if the settings turn mDNS off, or (logged) if it cannot open: the daemon works
    /// without.
    pub fn start<S, T: Eq + Hash + Clone>(
        ctx: &mut Context<S, T>,
        now: Instant,
        settings: &config::Mdns,
        seed: u64,
        handler: Handler<S, T>,
    ) -> Option<Mdns> {
        if !settings.enabled {
            return None;
        }
        let mdns = Mdns::new(now, settings.interfaces.clone(), seed)
            .map_err(|e| warn!("mDNS off: {e}"))
            .ok()?;
        for socket in [&mdns.v4, &mdns.v6].into_iter().flatten() {
            if let Err(e) = ctx.register(socket.as_raw_fd(), Interest::READABLE, handler) {
                warn!("mDNS: cannot watch a socket: {e}");
            }
        }
        Some(mdns)
    }

    fn new(now: Instant, only: Vec<String>, seed: u64) -> io::Result<Mdns> {
        let v4 = open_v4()
            .map_err(|e| warn!("mDNS over IPv4 unavailable: {e}"))
            .ok();
        let v6 = open_v6()
            .map_err(|e| debug!("mDNS over IPv6 unavailable: {e}"))
            .ok();
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::other("cannot open UDP port 5353"));
        }
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let mut mdns = Mdns {
            v4,
            v6,
            only,
            host_label: host_label(&hostname),
            seed,
            interfaces: Vec::new(),
            services: Vec::new(),
            retired: Vec::new(),
            peers: Peers::default(),
            midi2_peers: Peers {
                kind: " (MIDI 2.0)",
                ..Peers::default()
            },
            events: Paced::new(PEER_EVENTS_PER_TURN),
            now,
            rescan_at: now,
            buf: vec![0; MAX_DATAGRAM],
        };
        mdns.rescan(now);
        for name in &mdns.only {
            if !mdns.interfaces.iter().any(|i| i.name == *name) {
                warn!("mDNS: interface {name} is not there, or down, or has no address (yet)");
            }
        }
        if mdns.interfaces.is_empty() {
            warn!("mDNS: no usable interface yet (looking again every few seconds)");
        }
        Ok(mdns)
    }

    /// Announces `name` on `port` on every interface (probing first).
    pub fn add_service(
        &mut self,
        now: Instant,
        key: u32,
        kind: ServiceKind,
        name: &str,
        port: u16,
    ) {
        let wanted = Wanted {
            key,
            name: name.to_owned(),
            port,
            kind,
        };
        for iface in &mut self.interfaces {
            add_to(iface, now, &wanted);
        }
        self.services.push(wanted);
        self.sync_own(now);
        self.flush(now);
    }

    /// Withdraws the service added under `key`, with goodbyes.
    pub fn remove_service(&mut self, now: Instant, key: u32) {
        self.services.retain(|s| s.key != key);
        for iface in &mut self.interfaces {
            if let Some(i) = iface.services.iter().position(|(k, _)| *k == key) {
                let (_, id) = iface.services.swap_remove(i);
                let before = iface.responder.instance_names();
                iface.responder.remove_service(now, id);
                let left = iface.responder.instance_names();
                self.retired.extend(
                    before
                        .into_iter()
                        .filter(|n| !left.contains(n))
                        .map(|n| (n, now + RETIRE_TIME)),
                );
            }
        }
        self.sync_own(now);
        self.flush(now);
    }

    /// Goodbyes for everything, sent now.
    pub fn shutdown(&mut self, now: Instant) {
        for iface in &mut self.interfaces {
            iface.responder.shutdown(now);
        }
        self.flush(now);
    }

    /// Reads what the socket `event` is about has (up to a batch). Every datagram is also
    /// shown to `tap` with the index of the interface it came in on: the resolver's `.local`
    /// lookups take their answers from there.
    pub fn read<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        event: Event,
        tap: &mut dyn FnMut(SocketAddr, u32, &[u8]),
    ) {
        // Edge-triggered: a batch that ended with data left is reported again.
        if self.read_batch(now, event.fd, tap) {
            let _ = ctx.reregister(event.source, Interest::READABLE);
        }
    }

    /// Reads a batch from `fd`; true if it may have more.
    fn read_batch(
        &mut self,
        now: Instant,
        fd: RawFd,
        tap: &mut dyn FnMut(SocketAddr, u32, &[u8]),
    ) -> bool {
        let Some(socket) = [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .find(|s| s.as_raw_fd() == fd)
        else {
            return false;
        };
        self.now = now;
        self.events.next_turn();
        let mut more = true;
        let mut bytes_read = 0;
        let started = std::time::Instant::now();
        for _ in 0..READ_BATCH {
            if bytes_read >= READ_BYTES || started.elapsed() >= READ_TIME {
                break;
            }
            match receive(socket, &mut self.buf) {
                Ok((len, from, index)) => {
                    bytes_read += len;
                    let Some(bytes) = self.buf.get(..len) else {
                        continue;
                    };
                    if let Some(iface) = self.interfaces.iter_mut().find(|i| i.index == index) {
                        if let Ok(msg) = Message::parse(bytes) {
                            iface.responder.handle_message(now, from, &msg);
                            iface.browser.handle_message(now, from, &msg);
                            iface.midi2_browser.handle_message(now, from, &msg);
                        }
                        tap(from, index, bytes);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) => debug!("mDNS receive: {e}"),
            }
        }
        self.flush(now);
        more
    }

    /// Sends a one-shot query (a resolver's `.local` lookup) to both groups on every
    /// interface.
    pub fn send_query(&mut self, payload: &[u8]) {
        let t = Transmit {
            dst: Destination::Multicast,
            payload: payload.to_vec(),
        };
        for iface in &self.interfaces {
            send(&self.v4, &self.v6, iface, &t);
        }
    }

    /// Runs what is due: the state machines' timers and the interface scan.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.events.next_turn();
        if self.rescan_at <= now {
            self.rescan(now);
        }
        if self.retired.iter().any(|(_, until)| *until <= now) {
            self.retired.retain(|(_, until)| *until > now);
            self.sync_own(now);
        }
        for iface in &mut self.interfaces {
            if iface.responder.poll_timeout().is_some_and(|t| t <= now) {
                iface.responder.handle_timeout(now);
            }
            for browser in [&mut iface.browser, &mut iface.midi2_browser] {
                if browser.poll_timeout().is_some_and(|t| t <= now) {
                    browser.handle_timeout(now);
                }
            }
        }
        self.flush(now);
    }

    pub fn poll_timeout(&self) -> Instant {
        let waiting = self.events.waiting().then_some(self.now);
        self.interfaces
            .iter()
            .flat_map(|i| {
                [
                    i.responder.poll_timeout(),
                    i.browser.poll_timeout(),
                    i.midi2_browser.poll_timeout(),
                ]
            })
            .flatten()
            .chain(self.retired.iter().map(|(_, until)| *until))
            .chain(waiting)
            .fold(self.rescan_at, Instant::min)
    }

    /// The next peer event, if this turn's share is not used up (then `poll_timeout` asks
    /// for another turn at once).
    pub fn poll_event(&mut self) -> Option<Discovery> {
        self.events.pop()
    }

    /// Sends what the state machines want sent and collects their events, until quiet.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut renamed = false;
            for iface in &mut self.interfaces {
                while let Some(t) = iface.responder.poll_transmit() {
                    send(&self.v4, &self.v6, iface, &t);
                }
                while let Some(t) = iface.browser.poll_transmit() {
                    send(&self.v4, &self.v6, iface, &t);
                }
                while let Some(t) = iface.midi2_browser.poll_transmit() {
                    send(&self.v4, &self.v6, iface, &t);
                }
                while let Some(event) = iface.responder.poll_event() {
                    renamed = true;
                    match event {
                        ResponderEvent::Registered { instance, .. } => {
                            info!("mDNS: announced as {instance:?} on {}", iface.name)
                        }
                        ResponderEvent::Renamed { from, to, .. } => info!(
                            "mDNS: {from:?} is taken on {}: renamed to {to:?}",
                            iface.name
                        ),
                        ResponderEvent::HostRenamed { from, to } => {
                            info!("mDNS: host name {from}.local is taken: now {to}.local")
                        }
                    }
                }
                let mut found = VecDeque::new();
                while let Some(event) = iface.browser.poll_event() {
                    self.peers.update(iface.index, event, &mut found);
                }
                queue(&mut self.events, false, &mut found);
                while let Some(event) = iface.midi2_browser.poll_event() {
                    self.midi2_peers.update(iface.index, event, &mut found);
                }
                queue(&mut self.events, true, &mut found);
            }
            if !renamed {
                break;
            }
            self.sync_own(now);
        }
    }

    /// Tells every browser our instance names: ours on any interface are ours on all.
    fn sync_own(&mut self, now: Instant) {
        let own: Vec<_> = self
            .interfaces
            .iter()
            .flat_map(|i| i.responder.instance_names())
            .chain(self.retired.iter().map(|(name, _)| name.clone()))
            .collect();
        for iface in &mut self.interfaces {
            iface.browser.set_own_instances(now, own.clone());
            iface.midi2_browser.set_own_instances(now, own.clone());
        }
    }

    /// Starts on new interfaces, stops on vanished ones, gives changed ones their addresses.
    fn rescan(&mut self, now: Instant) {
        self.rescan_at = now + RESCAN_INTERVAL;
        let found = match scan(&self.only) {
            Ok(found) => found,
            Err(e) => {
                warn!("mDNS: cannot list interfaces: {e}");
                return;
            }
        };
        let gone: Vec<usize> = (0..self.interfaces.len())
            .filter(|&i| {
                let iface = &self.interfaces[i];
                !found
                    .iter()
                    .any(|f| f.index == iface.index && f.name == iface.name)
            })
            .collect();
        for i in gone.into_iter().rev() {
            let mut iface = self.interfaces.remove(i);
            info!("mDNS: interface {} went away", iface.name);
            iface.responder.shutdown(now);
            while let Some(t) = iface.responder.poll_transmit() {
                send(&self.v4, &self.v6, &iface, &t);
            }
            self.leave(&iface);
            let mut gone = VecDeque::new();
            self.peers.forget_interface(iface.index, &mut gone);
            queue(&mut self.events, false, &mut gone);
            self.midi2_peers.forget_interface(iface.index, &mut gone);
            queue(&mut self.events, true, &mut gone);
        }
        for f in found {
            if let Some(iface) = self.interfaces.iter_mut().find(|i| i.index == f.index) {
                if iface.addresses != f.addresses {
                    debug!("mDNS: {} now has {:?}", f.name, f.addresses);
                    iface.addresses = f.addresses.clone();
                    iface.responder.set_addresses(now, f.addresses);
                }
                continue;
            }
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let responder =
                match Responder::new(now, &self.host_label, f.addresses.clone(), self.seed) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("mDNS: host label {:?}: {e:?}", self.host_label);
                        return;
                    }
                };
            let mut iface = Interface {
                index: f.index,
                name: f.name,
                addresses: f.addresses,
                responder,
                browser: Browser::new(now, self.seed ^ 0x5a5a),
                midi2_browser: Browser::for_service(now, midi2_service(), self.seed ^ 0xa5a5),
                services: Vec::new(),
            };
            self.join(&iface);
            for s in &self.services {
                add_to(&mut iface, now, s);
            }
            info!(
                "mDNS: on {} ({:?}) as {}",
                iface.name,
                iface.addresses,
                iface.responder.host_name()
            );
            self.interfaces.push(iface);
        }
        self.sync_own(now);
        self.flush(now);
    }

    fn join(&self, iface: &Interface) {
        if let Some(s) = &self.v4 {
            let on = InterfaceIndexOrAddress::Index(iface.index);
            if let Err(e) = SockRef::from(s).join_multicast_v4_n(&MDNS_IPV4, &on) {
                warn!("mDNS: cannot join {MDNS_IPV4} on {}: {e}", iface.name);
            }
        }
        if let Some(s) = &self.v6 {
            if let Err(e) = SockRef::from(s).join_multicast_v6(&MDNS_IPV6, iface.index) {
                debug!("mDNS: cannot join {MDNS_IPV6} on {}: {e}", iface.name);
            }
        }
    }

    fn leave(&self, iface: &Interface) {
        // The interface may be gone already, taking its memberships with it.
        if let Some(s) = &self.v4 {
            let on = InterfaceIndexOrAddress::Index(iface.index);
            let _ = SockRef::from(s).leave_multicast_v4_n(&MDNS_IPV4, &on);
        }
        if let Some(s) = &self.v6 {
            let _ = SockRef::from(s).leave_multicast_v6(&MDNS_IPV6, iface.index);
        }
    }
}

fn add_to(iface: &mut Interface, now: Instant, s: &Wanted) {
    let added = match &s.kind {
        ServiceKind::AppleMidi => iface
            .responder
            .add_service(now, &s.name, s.port, Vec::new()),
        ServiceKind::Midi2 { product_id } => iface.responder.add_service_of_type(
            now,
            midi2_service(),
            &s.name,
            s.port,
            midi2_txt(&s.name, product_id),
        ),
    };
    match added {
        Ok(id) => iface.services.push((s.key, id)),
        Err(e) => warn!("mDNS: cannot announce {:?}: {e:?}", s.name),
    }
}

fn mdns_socket(domain: Domain) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Shared with an avahi-daemon or another responder on this host (RFC 6762 §15.1).
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn open_v4() -> io::Result<UdpSocket> {
    let socket = mdns_socket(Domain::IPV4)?;
    socket.set_multicast_loop_v4(true)?;
    // RFC 6762 §11: TTL 255 so that receivers can tell link-local traffic.
    socket.set_multicast_ttl_v4(255)?;
    socket.set_ttl(255)?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    Ok(socket.into())
}

fn open_v6() -> io::Result<UdpSocket> {
    let socket = mdns_socket(Domain::IPV6)?;
    socket.set_only_v6(true)?;
    socket.set_multicast_loop_v6(true)?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
    socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    Ok(socket.into())
}

/// One datagram: its length, sender and the index of the interface it came in on.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, u32)> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let mut index = 0;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => index = info.ipi_ifindex as u32,
            ControlMessageOwned::Ipv6PacketInfo(info) => index = info.ipi6_ifindex,
            _ => {}
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(|a| match a.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => a
                .as_sockaddr_in()
                .map(|s| SocketAddr::V4(SocketAddrV4::from(*s))),
            Some(nix::sys::socket::AddressFamily::Inet6) => a
                .as_sockaddr_in6()
                .map(|s| SocketAddr::V6(SocketAddrV6::from(*s))),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    Ok((msg.bytes, from, index))
}

fn send(v4: &Option<UdpSocket>, v6: &Option<UdpSocket>, iface: &Interface, t: &Transmit) {
    let result = match t.dst {
        Destination::Multicast => {
            if let (Some(s), Some(addr)) = (v4, iface.v4()) {
                let sent = SockRef::from(s)
                    .set_multicast_if_v4(&addr)
                    .and_then(|()| s.send_to(&t.payload, (MDNS_IPV4, MDNS_PORT)));
                if let Err(e) = sent {
                    debug!("mDNS send on {} (IPv4): {e}", iface.name);
                }
            }
            match v6 {
                Some(s) if iface.has_v6() => s
                    .send_to(
                        &t.payload,
                        SocketAddrV6::new(MDNS_IPV6, MDNS_PORT, 0, iface.index),
                    )
                    .map(drop),
                _ => Ok(()),
            }
        }
        Destination::Unicast(SocketAddr::V4(to)) => match v4 {
            Some(s) => s.send_to(&t.payload, to).map(drop),
            None => Ok(()),
        },
        Destination::Unicast(SocketAddr::V6(mut to)) => match v6 {
            Some(s) => {
                if to.scope_id() == 0 {
                    to.set_scope_id(iface.index);
                }
                s.send_to(&t.payload, to).map(drop)
            }
            None => Ok(()),
        },
    };
    if let Err(e) = result {
        debug!("mDNS send on {}: {e}", iface.name);
    }
}

/// An interface as listed by the system.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    name: String,
    index: u32,
    addresses: Vec<IpAddr>,
}

/// The interfaces to use: up, with an address, multicast-capable and not loopback, or named in
/// `only` (then only those, whatever their flags, so tests can use `lo`).
fn scan(only: &[String]) -> io::Result<Vec<Found>> {
    let mut entries = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let addr = ifa.address.as_ref().and_then(|a| {
            if let Some(s) = a.as_sockaddr_in() {
                Some(IpAddr::V4(*SocketAddrV4::from(*s).ip()))
            } else {
                a.as_sockaddr_in6()
                    .map(|s| IpAddr::V6(*SocketAddrV6::from(*s).ip()))
            }
        });
        entries.push((ifa.interface_name, ifa.flags, addr));
    }
    Ok(select(entries, only)
        .into_iter()
        .filter_map(|(name, addresses)| {
            let index = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
            Some(Found {
                name,
                index,
                addresses,
            })
        })
        .collect())
}

/// The pure part of [`scan`]: which interfaces, with which addresses, in first-seen order.
fn select(
    entries: Vec<(String, InterfaceFlags, Option<IpAddr>)>,
    only: &[String],
) -> Vec<(String, Vec<IpAddr>)> {
    let mut out: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for (name, flags, addr) in entries {
        let usable = if only.is_empty() {
            flags.contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_MULTICAST)
                && !flags.contains(InterfaceFlags::IFF_LOOPBACK)
        } else {
            only.contains(&name) && flags.contains(InterfaceFlags::IFF_UP)
        };
        let Some(addr) = addr.filter(|_| usable) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, addrs)) => {
                if !addrs.contains(&addr) {
                    addrs.push(addr)
                }
            }
            None => out.push((name, vec![addr])),
        }
    }
    for (_, addrs) in &mut out {
        addrs.sort();
    }
    out
}

/// `<hostname>-rtpmidid` as one valid DNS host label (RFC 1035 §2.3.1: letters, digits and
/// inner hyphens, at most 63 octets); a host name of its own keeps us clear of an avahi-daemon
/// that owns `<hostname>.local` with its own address set.
pub fn host_label(hostname: &str) -> String {
    let first = hostname.split('.').next().unwrap_or_default();
    let mut label = String::new();
    for c in first.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (label.is_empty() || label.ends_with('-'))) {
            label.push(c);
        }
    }
    label.truncate(MAX_LABEL - HOST_SUFFIX.len());
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        "rtpmidid".to_owned()
    } else {
        format!("{label}{HOST_SUFFIX}")
    }
}

/// A queue handed out at most `per_turn` items per turn.
struct Paced<T> {
    queue: VecDeque<T>,
    per_turn: usize,
    left: usize,
}

impl<T> Paced<T> {
    fn new(per_turn: usize) -> Self {
        Paced {
            queue: VecDeque::new(),
            per_turn,
            left: per_turn,
        }
    }

    fn next_turn(&mut self) {
        self.left = self.per_turn;
    }

    fn pop(&mut self) -> Option<T> {
        self.left = self.left.checked_sub(1)?;
        let item = self.queue.pop_front();
        if item.is_none() {
            self.left += 1;
        }
        item
    }

    /// Items held back for a later turn.
    fn waiting(&self) -> bool {
        self.left == 0 && !self.queue.is_empty()
    }
}

/// Peers as the browsers of each interface report them, merged by instance name.
#[derive(Default)]
struct Peers {
    seen: BTreeMap<String, Vec<Sighting>>,
    reported: BTreeMap<String, SocketAddr>,
    /// Says in the log which kind of peer these are ("" for RTP-MIDI).
    kind: &'static str,
}

#[derive(Clone, Debug)]
struct Sighting {
    index: u32,
    port: u16,
    addresses: Vec<IpAddr>,
}

impl Peers {
    fn update(&mut self, index: u32, event: BrowserEvent, out: &mut VecDeque<PeerEvent>) {
        let name = match event {
            BrowserEvent::Appeared {
                instance,
                port,
                addresses,
                ..
            }
            | BrowserEvent::Changed {
                instance,
                port,
                addresses,
                ..
            } => {
                let seen = self.seen.entry(instance.clone()).or_default();
                seen.retain(|s| s.index != index);
                seen.push(Sighting {
                    index,
                    port,
                    addresses,
                });
                instance
            }
            BrowserEvent::Gone { instance } => {
                if let Some(seen) = self.seen.get_mut(&instance) {
                    seen.retain(|s| s.index != index);
                }
                instance
            }
        };
        self.report(name, out);
    }

    fn forget_interface(&mut self, index: u32, out: &mut VecDeque<PeerEvent>) {
        let names: Vec<String> = self.seen.keys().cloned().collect();
        for name in names {
            if let Some(seen) = self.seen.get_mut(&name) {
                seen.retain(|s| s.index != index);
            }
            self.report(name, out);
        }
    }

    /// Logs and queues what changed for `name`.
    fn report(&mut self, name: String, out: &mut VecDeque<PeerEvent>) {
        let best = self.seen.get(&name).and_then(|s| best_address(s));
        if best.is_none() {
            self.seen.remove(&name);
        }
        let before = self.reported.get(&name).copied();
        match (before, best) {
            (None, Some(addr)) => {
                info!("mDNS: peer {name:?}{} appeared at {addr}", self.kind);
                self.reported.insert(name.clone(), addr);
                out.push_back(PeerEvent::Appeared { name, addr });
            }
            (Some(old), Some(addr)) if old != addr => {
                info!("mDNS: peer {name:?}{} changed: now at {addr}", self.kind);
                self.reported.insert(name.clone(), addr);
                out.push_back(PeerEvent::Changed { name, addr });
            }
            (Some(_), None) => {
                info!("mDNS: peer {name:?}{} gone", self.kind);
                self.reported.remove(&name);
                out.push_back(PeerEvent::Gone { name });
            }
            _ => {}
        }
    }
}

/// Where to reach a peer: IPv4 first (any interface), then IPv6, link-local ones scoped to the
/// interface they were seen on.
fn best_address(seen: &[Sighting]) -> Option<SocketAddr> {
    let v4 = seen.iter().find_map(|s| {
        s.addresses
            .iter()
            .find(|a| a.is_ipv4())
            .map(|a| SocketAddr::new(*a, s.port))
    });
    v4.or_else(|| {
        seen.iter().find_map(|s| {
            s.addresses.iter().find_map(|a| match a {
                IpAddr::V6(v6) => {
                    let link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
                    let scope = if link_local { s.index } else { 0 };
                    Some(SocketAddr::V6(SocketAddrV6::new(*v6, s.port, 0, scope)))
                }
                IpAddr::V4(_) => None,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_valid_dns_labels() {
        assert_eq!(host_label("studio"), "studio-rtpmidid");
        assert_eq!(host_label("studio.example.org"), "studio-rtpmidid");
        assert_eq!(host_label("Mac Book_Pro!"), "Mac-Book-Pro-rtpmidid");
        assert_eq!(host_label("-x--y-"), "x-y-rtpmidid");
        assert_eq!(host_label(""), "rtpmidid");
        assert_eq!(host_label("ééé"), "rtpmidid");
        let long = host_label(&"a".repeat(100));
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-rtpmidid"));
        // A cut that ends in a hyphen does not leave "--".
        let cut = host_label(&format!("{}-b", "a".repeat(53)));
        assert_eq!(cut, format!("{}-rtpmidid", "a".repeat(53)));
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn interfaces_are_chosen_by_flags_or_by_name() {
        use InterfaceFlags as F;
        let up = F::IFF_UP | F::IFF_MULTICAST;
        let entries = vec![
            (
                "lo".to_string(),
                F::IFF_UP | F::IFF_LOOPBACK,
                ip("127.0.0.1"),
            ),
            ("eth0".to_string(), up, None),
            ("eth0".to_string(), up, ip("192.168.1.5")),
            ("eth0".to_string(), up, ip("fe80::1")),
            ("eth0".to_string(), up, ip("192.168.1.5")),
            ("down0".to_string(), F::IFF_MULTICAST, ip("10.0.0.1")),
            ("tun0".to_string(), F::IFF_UP, ip("10.8.0.1")),
            ("noaddr".to_string(), up, None),
        ];
        assert_eq!(
            select(entries.clone(), &[]),
            vec![(
                "eth0".to_string(),
                vec![ip("192.168.1.5").unwrap(), ip("fe80::1").unwrap()]
            )]
        );
        assert_eq!(
            select(entries, &["lo".to_string(), "down0".to_string()]),
            vec![("lo".to_string(), vec![ip("127.0.0.1").unwrap()])]
        );
    }

    fn appeared(instance: &str, port: u16, addrs: &[&str]) -> BrowserEvent {
        BrowserEvent::Appeared {
            instance: instance.into(),
            host: protocol::mdns::Name::from_dotted("h.local").unwrap(),
            port,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn gone(instance: &str) -> BrowserEvent {
        BrowserEvent::Gone {
            instance: instance.into(),
        }
    }

    #[test]
    fn peers_merge_over_interfaces_and_prefer_ipv4() {
        let mut peers = Peers::default();
        let mut out = VecDeque::new();
        peers.update(3, appeared("Studio", 5004, &["fe80::2"]), &mut out);
        let v6: SocketAddr = "[fe80::2%3]:5004".parse().unwrap();
        assert_eq!(
            out.pop_front(),
            Some(PeerEvent::Appeared {
                name: "Studio".into(),
                addr: v6
            })
        );
        // The same peer on another interface with IPv4: one peer, now at its IPv4 address.
        peers.update(4, appeared("Studio", 5004, &["169.254.0.1"]), &mut out);
        assert_eq!(
            out.pop_front(),
            Some(PeerEvent::Changed {
                name: "Studio".into(),
                addr: "169.254.0.1:5004".parse().unwrap()
            })
        );
        // The same again: nothing to say.
        peers.update(4, appeared("Studio", 5004, &["169.254.0.1"]), &mut out);
        assert!(out.is_empty());
        peers.update(4, gone("Studio"), &mut out);
        assert_eq!(
            out.pop_front(),
            Some(PeerEvent::Changed {
                name: "Studio".into(),
                addr: v6
            })
        );
        peers.forget_interface(3, &mut out);
        assert_eq!(
            out.pop_front(),
            Some(PeerEvent::Gone {
                name: "Studio".into()
            })
        );
        assert!(out.is_empty() && peers.seen.is_empty());
        // A global IPv6 address needs no scope; a peer without addresses is not reported.
        peers.update(3, appeared("Keys", 5006, &["2001:db8::1"]), &mut out);
        peers.update(3, appeared("Empty", 5008, &[]), &mut out);
        assert_eq!(
            out.drain(..).collect::<Vec<_>>(),
            vec![PeerEvent::Appeared {
                name: "Keys".into(),
                addr: "[2001:db8::1]:5006".parse().unwrap()
            }]
        );
        // A goodbye for something never seen is ignored.
        peers.update(3, gone("Nobody"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn peer_events_are_paced() {
        let mut events = Paced::new(16);
        events.queue.extend(0..100);
        let mut turns = Vec::new();
        while !events.queue.is_empty() {
            events.next_turn();
            turns.push(std::iter::from_fn(|| events.pop()).count());
            assert_eq!(events.waiting(), !events.queue.is_empty());
        }
        assert_eq!(turns, vec![16, 16, 16, 16, 16, 16, 4]);
        // Within its share, an event queued later in the turn still goes out in it.
        events.queue.push_back(1);
        assert_eq!(events.pop(), Some(1));
    }
}
