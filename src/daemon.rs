//! The daemon's glue: sockets in, the protocol endpoints, events out to the ALSA bridge and the
//! hub, the clients' reconnection and the log.
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant as StdInstant;

use log::{debug, error, info, log, trace, warn, Level};
use protocol::endpoint::{AcceptPolicy, Dropped, Endpoint, SessionId};
use protocol::midi::MidiMessage;
use protocol::session::{self, DisconnectReason, Event, Port};
use protocol::time::{Duration, Instant};
use reactor::{Context, Interest, Signal, SourceId};

use crate::bridge::{Action, AutoExport, Bridge};
use crate::cli::ConnectTarget;
use crate::mdns::{self, Discovered, Mdns, PeerEvent, Slot};
use crate::net::{self, PortPair};
use crate::playout::Playout;
use crate::seq::{SeqAddr, Sequencer};

mod ops;
pub use ops::{parse_peer_id, peer_id, Peer, Status};

/// Datagrams read from one socket (or events from the sequencer) before the loop looks at the
/// others, so one flooding source cannot starve the rest.
const READ_BATCH: usize = 256;
/// Largest datagram we read; RTP-MIDI over UDP is far below it.
const MAX_DATAGRAM: usize = 65_536;
const RECONNECT_MIN: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Dropped datagrams are logged at warn level at most this often.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long the port of a session that gave way to a restarted peer waits for it.
const PARK_TIME: Duration = Duration::from_secs(5);
/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// Export listeners take the first free port pair above the main one, this many tries.
const EXPORT_PORT_TRIES: u16 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the protocol endpoints, the clients' reconnections and parked
    /// ports.
    Protocol,
    /// Retry output the sequencer had no room for.
    SeqFlush,
    /// The nearest deadline of mDNS.
    Mdns,
}

pub type Ctx = Context<Daemon, TimerId>;

/// What the daemon was asked to do, from the command line (and later the config file).
#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub port: u16,
    pub bind: Vec<IpAddr>,
    pub connect: Vec<ConnectTarget>,
    pub hub: bool,
    /// `--connect` sessions stay up with nothing subscribed to their ALSA ports.
    pub keep_connected: bool,
    /// `None` with `--no-mdns`.
    pub mdns: Option<mdns::Config>,
    /// Schedule MIDI from the network on ALSA's queue this long after it was stamped.
    pub playout_delay: Option<Duration>,
    /// `--export-auto`: local ports connected to `Network` as they appear.
    pub export_auto: Option<AutoExport>,
}

/// A session anywhere in the daemon: the listener it lives on and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    pub listener: u32,
    pub session: SessionId,
}

/// What an ALSA port of ours stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKey {
    /// A session a peer started with our main listener.
    Session(PeerKey),
    /// A `--connect` target, whatever session it has at the moment.
    Client(usize),
}

/// UDP ports with their sessions: the main listener, a `[listener NAME]`, or one per exported
/// local port.
struct Listener {
    id: u32,
    endpoint: Endpoint,
    sockets: Vec<PortPair>,
    sources: Vec<SourceId>,
    /// The local ALSA port whose sessions these are.
    export: Option<SeqAddr>,
    name: String,
}

/// A `--connect` target and its session, reconnected with back-off while wanted.
struct Client {
    target: ConnectTarget,
    session: Option<SessionId>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Without ALSA always; with it while something is subscribed to the client's port, or
    /// always with `--keep-connected`.
    wanted: bool,
    /// `--keep-connected`: wanted whatever is subscribed.
    keep: bool,
    /// A session the same peer started with our main listener: it shares this client's port
    /// rather than getting one of its own.
    accepted: Option<SessionId>,
}

impl Client {
    /// Not wanted yet; with `keep` (`--keep-connected`) it will be whatever is subscribed.
    fn new(target: ConnectTarget, keep: bool) -> Client {
        Client {
            target,
            session: None,
            retry_at: None,
            backoff: RECONNECT_MIN,
            wanted: false,
            keep,
            accepted: None,
        }
    }
}

/// Counts dropped datagrams; logs each at debug level and a summary at most every 10 s at warn.
#[derive(Default)]
struct DropLog {
    since_warn: u64,
    total: u64,
    last_warn: Option<Instant>,
}

impl DropLog {
    fn record(&mut self, now: Instant, why: Dropped, from: SocketAddr, len: usize) {
        self.total += 1;
        self.since_warn += 1;
        debug!("dropped a {len}-byte datagram from {from}: {why:?}");
        if self
            .last_warn
            .is_none_or(|at| now.saturating_duration_since(at) >= DROP_WARN_INTERVAL)
        {
            warn!(
                "dropped {} datagram(s) that belong to no session or are malformed \
                 (last from {from}: {why:?}; {} in all)",
                self.since_warn, self.total
            );
            self.since_warn = 0;
            self.last_warn = Some(now);
        }
    }
}

/// Who a connected session is, for the log and for recognising a peer that comes back.
struct PeerInfo {
    name: String,
    ip: IpAddr,
    latency_logged: bool,
}

pub struct Daemon {
    origin: StdInstant,
    settings: Settings,
    listeners: Vec<Listener>,
    next_listener: u32,
    hub: bool,
    clients: Vec<Client>,
    bridge: Option<Bridge<PortKey>>,
    seq_sources: Vec<SourceId>,
    peers: BTreeMap<PeerKey, PeerInfo>,
    /// With `--playout-delay`: each session's schedule.
    playouts: BTreeMap<PeerKey, Playout>,
    /// Ports of sessions replaced by a restarted peer, kept for it until the deadline.
    parked: Vec<(PeerKey, PeerInfo)>,
    parked_until: Option<Instant>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    drops: DropLog,
    actions: Vec<Action<PortKey>>,
    signals_seen: u32,
    mdns: Option<Mdns>,
    mdns_sources: Vec<SourceId>,
    /// Discovered peers that have a client slot (and an ALSA port).
    discovered: Discovered,
    /// Control socket, reload and their figures (see `daemon/ops.rs`).
    pub(crate) ops: ops::Ops,
}

const MAIN: u32 = 0;

impl Daemon {
    pub fn new(
        settings: Settings,
        sequencer: Option<Box<dyn Sequencer>>,
        seed: u64,
    ) -> io::Result<Daemon> {
        let sockets = net::bind_all(&settings.bind, settings.port)?;
        let main = Listener {
            id: MAIN,
            endpoint: Endpoint::new(
                session_config(&settings.name),
                AcceptPolicy::default(),
                seed,
            ),
            sockets,
            sources: Vec::new(),
            export: None,
            name: settings.name.clone(),
        };
        let mut bridge = sequencer.map(Bridge::new).transpose()?;
        if let (Some(bridge), Some(rule)) = (bridge.as_mut(), settings.export_auto.clone()) {
            bridge.set_auto_export(rule)?;
        }
        let mut clients = Vec::new();
        for (index, target) in settings.connect.iter().enumerate() {
            if let Some(bridge) = bridge.as_mut() {
                bridge.add_peer(PortKey::Client(index), &client_port_name(target))?;
            }
            clients.push(Client::new(target.clone(), settings.keep_connected));
        }
        let mut daemon = Daemon {
            origin: StdInstant::now(),
            hub: settings.hub,
            settings,
            listeners: vec![main],
            next_listener: MAIN + 1,
            clients,
            bridge,
            seq_sources: Vec::new(),
            peers: BTreeMap::new(),
            playouts: BTreeMap::new(),
            parked: Vec::new(),
            parked_until: None,
            recv_buf: vec![0; MAX_DATAGRAM],
            send_buf: vec![0; MAX_DATAGRAM],
            drops: DropLog::default(),
            actions: Vec::new(),
            signals_seen: 0,
            mdns: None,
            mdns_sources: Vec::new(),
            discovered: Discovered::default(),
            ops: ops::Ops::default(),
        };
        // Without ALSA nothing subscribes: every target is wanted from the start.
        let no_alsa = daemon.bridge.is_none();
        for client in &mut daemon.clients {
            if no_alsa || client.keep {
                client.wanted = true;
                client.retry_at = Some(Instant::ZERO);
            }
        }
        Ok(daemon)
    }

    /// Registers the sockets, the sequencer and the first timer with the loop.
    pub fn start(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        for index in 0..self.listeners.len() {
            self.register_listener(ctx, index)?;
        }
        if let Some(bridge) = &self.bridge {
            for fd in bridge.fds()? {
                self.seq_sources
                    .push(ctx.register(fd, Interest::READABLE, on_sequencer)?);
            }
        }
        self.start_mdns(ctx);
        self.pump(ctx);
        Ok(())
    }

    /// Opens mDNS and announces the main listener; without it the daemon still works.
    fn start_mdns(&mut self, ctx: &mut Ctx) {
        let Some(config) = self.settings.mdns.clone() else {
            return;
        };
        let now = self.now(ctx);
        let seed = self.origin.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let mut mdns = match Mdns::new(now, config, seed) {
            Ok(mdns) => mdns,
            Err(e) => {
                warn!("mDNS off: {e}");
                return;
            }
        };
        for fd in mdns.fds() {
            match ctx.register(fd, Interest::READABLE, on_mdns) {
                Ok(source) => self.mdns_sources.push(source),
                Err(e) => warn!("mDNS: cannot watch a socket: {e}"),
            }
        }
        mdns.add_service(now, MAIN, &self.settings.name, self.settings.port);
        // `[listener NAME]` sections, made before the start.
        for l in self.listeners.iter().filter(|l| l.id != MAIN) {
            match l.sockets.first().map(|s| s.control.local_addr()) {
                Some(Ok(addr)) => mdns.add_service(now, l.id, &l.name, addr.port()),
                _ => warn!("mDNS: cannot announce {:?}: no local port", l.name),
            }
        }
        self.mdns = Some(mdns);
        self.mdns_events(ctx);
    }

    fn read_mdns(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            if mdns.read(now, event.fd) {
                let _ = ctx.reregister(event.source, Interest::READABLE);
            }
        }
        self.mdns_events(ctx);
    }

    fn mdns_timeout(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.handle_timeout(now);
        }
        self.expire_discovered(now);
        self.mdns_events(ctx);
        self.pump(ctx);
    }

    /// Discovered peers gone for longer than [`mdns::GONE_GRACE`] lose their port and session.
    fn expire_discovered(&mut self, now: Instant) {
        for slot in self.discovered.expired(now) {
            let accepted = self.clients.get_mut(slot).and_then(|c| c.accepted.take());
            if let Some(bridge) = self.bridge.as_mut() {
                let port = PortKey::Client(slot);
                match accepted {
                    // The session the peer started with us is still up: the port is its now.
                    Some(session) => bridge.rekey(port, PortKey::Session(main_key(session))),
                    None => bridge.remove_peer(port),
                }
            }
            self.set_wanted(now, slot, false);
        }
    }

    /// Discovered peers to the bridge, and the mDNS timer re-armed.
    fn mdns_events(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        let Some(mdns) = self.mdns.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        while let Some(event) = mdns.poll_event() {
            events.push(event);
        }
        let deadline = [Some(mdns.poll_timeout()), self.discovered.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = deadline {
            ctx.set_timer(TimerId::Mdns, to_std_time(self.origin, at));
        }
        for event in events {
            self.on_mdns_peer(now, event);
        }
    }

    /// With ALSA, a discovered peer becomes a client with a port, connected while the port is
    /// subscribed, like a `--connect` target. Without ALSA it is only logged (by `mdns`).
    fn on_mdns_peer(&mut self, now: Instant, event: PeerEvent) {
        if let PeerEvent::Appeared { name, addr } | PeerEvent::Changed { name, addr } = &event {
            if !self.admits_peer(name) {
                debug!("mDNS: {name:?} at {addr} ignored ([mdns] include/exclude)");
                return;
            }
        }
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        let (name, addr) = match event {
            PeerEvent::Appeared { name, addr } | PeerEvent::Changed { name, addr } => (name, addr),
            PeerEvent::Gone { name } => return self.discovered.gone(now, &name),
        };
        let target = ConnectTarget {
            name: Some(name.clone()),
            host: match addr {
                SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                    format!("{}%{}", v6.ip(), v6.scope_id())
                }
                _ => addr.ip().to_string(),
            },
            port: addr.port(),
        };
        let slot = match self.discovered.appeared(&name, self.clients.len()) {
            Slot::New(slot) => {
                self.clients.push(Client::new(target, false));
                slot
            }
            Slot::Kept(slot) => {
                self.clients[slot].target = target;
                return;
            }
            Slot::Recreate(slot) => {
                self.clients[slot].target = target;
                slot
            }
        };
        // A session the peer started with us before it was discovered: its port becomes the
        // discovered peer's.
        let live = self.peers.iter().find(|(key, info)| {
            key.listener == MAIN
                && info.name == name
                && info.ip.to_canonical() == addr.ip().to_canonical()
                && bridge.port_of(PortKey::Session(**key)).is_some()
        });
        if let Some((&key, _)) = live {
            bridge.rekey(PortKey::Session(key), PortKey::Client(slot));
            self.clients[slot].accepted = Some(key.session);
            info!("{name:?} was discovered: its session keeps its ALSA port");
            if bridge.is_subscribed(PortKey::Client(slot)) {
                self.set_wanted(now, slot, true);
            }
        } else if let Err(e) = bridge.add_peer(PortKey::Client(slot), &name) {
            warn!("cannot create an ALSA port for {name:?}: {e}");
        }
    }

    fn register_listener(&mut self, ctx: &mut Ctx, index: usize) -> io::Result<()> {
        let listener = &mut self.listeners[index];
        for pair in &listener.sockets {
            info!(
                "{} listening on {} and {}",
                listener.name,
                pair.control.local_addr()?,
                pair.data.local_addr()?
            );
            listener.sources.push(ctx.register(
                pair.control.as_raw_fd(),
                Interest::READABLE,
                on_control,
            )?);
            listener.sources.push(ctx.register(
                pair.data.as_raw_fd(),
                Interest::READABLE,
                on_data,
            )?);
        }
        Ok(())
    }

    fn now(&self, ctx: &Ctx) -> Instant {
        to_protocol_time(self.origin, ctx.now())
    }

    fn listener_index(&self, id: u32) -> Option<usize> {
        self.listeners.iter().position(|l| l.id == id)
    }

    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, port: Port) {
        let Some((index, pair)) = self.find_socket(event.fd, port) else {
            return;
        };
        let now = self.now(ctx);
        for _ in 0..READ_BATCH {
            let listener = &mut self.listeners[index];
            let pair = &listener.sockets[pair];
            let socket = match port {
                Port::Control => &pair.control,
                Port::Data => &pair.data,
            };
            match socket.recv_from(&mut self.recv_buf) {
                Ok((len, from)) => {
                    let from = net::canonical(from);
                    let bytes = &self.recv_buf[..len];
                    if let Err(why) = listener.endpoint.handle_datagram(now, port, from, bytes) {
                        self.drops.record(now, why, from, len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here; they concern no one datagram.
                Err(e) => debug!("receive on {port:?} socket: {e}"),
            }
            // Answer as we go so a long batch does not delay replies.
            flush_transmits(&mut self.listeners[index], now, &mut self.send_buf);
        }
        // Edge-triggered: if the batch ended with data left, ask to be told again next turn.
        let _ = ctx.reregister(event.source, Interest::READABLE);
        self.pump(ctx);
    }

    fn find_socket(&self, fd: RawFd, port: Port) -> Option<(usize, usize)> {
        self.listeners.iter().enumerate().find_map(|(i, l)| {
            l.sockets
                .iter()
                .position(|p| {
                    let socket = match port {
                        Port::Control => &p.control,
                        Port::Data => &p.data,
                    };
                    socket.as_raw_fd() == fd
                })
                .map(|j| (i, j))
        })
    }

    fn read_sequencer(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        if let Some(bridge) = self.bridge.as_mut() {
            let mut actions = std::mem::take(&mut self.actions);
            for _ in 0..READ_BATCH {
                match bridge.poll(&mut actions) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        warn!("ALSA sequencer input: {e}");
                        break;
                    }
                }
            }
            for action in actions.drain(..) {
                self.on_bridge_action(ctx, now, action);
            }
            self.actions = actions;
        }
        let _ = ctx.reregister(event.source, Interest::READABLE);
        self.pump(ctx);
    }

    fn on_bridge_action(&mut self, ctx: &mut Ctx, now: Instant, action: Action<PortKey>) {
        match action {
            Action::ToPeer(PortKey::Session(key), message) => {
                if let Some(i) = self.listener_index(key.listener) {
                    if let Some(s) = self.listeners[i].endpoint.session_mut(key.session) {
                        s.send_midi(now, message);
                    }
                }
            }
            Action::ToPeer(PortKey::Client(index), message) => {
                self.send_to_client(now, index, message)
            }
            Action::FromExported(local, message) => {
                if let Some(listener) = self.listeners.iter_mut().find(|l| l.export == Some(local))
                {
                    send_to_all(&mut listener.endpoint, now, None, &message);
                }
            }
            Action::PeerWanted(PortKey::Client(index), wanted) => {
                self.set_wanted(now, index, wanted)
            }
            Action::PeerWanted(PortKey::Session(_), _) => {}
            Action::Export { local, name, on } => {
                if on {
                    if let Err(e) = self.add_export(ctx, local, &name) {
                        error!("cannot export {name} ({local}): {e}");
                    }
                } else {
                    self.remove_export(ctx, now, local);
                }
            }
        }
    }

    /// MIDI written to a client's port: to our session with that peer if it is up, else to
    /// the one the peer started with us.
    fn send_to_client(&mut self, now: Instant, index: usize, message: MidiMessage) {
        let Some(client) = self.clients.get(index) else {
            return;
        };
        let endpoint = &mut self.listeners[0].endpoint;
        let up = |id: &SessionId| endpoint.session(*id).is_some_and(|s| s.is_connected());
        let to = client.session.filter(up).or(client.accepted.filter(up));
        if let Some(s) = to.and_then(|id| endpoint.session_mut(id)) {
            s.send_midi(now, message);
        }
    }

    fn set_wanted(&mut self, now: Instant, index: usize, wanted: bool) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        client.wanted = wanted || client.keep;
        if client.wanted {
            client.backoff = RECONNECT_MIN;
            client.retry_at = Some(now);
        } else {
            client.retry_at = None;
            if let Some(id) = client.session.take() {
                info!(
                    "nothing is connected to {}:{} any more: closing its session",
                    client.target.host, client.target.port
                );
                if let Some(s) = self.listeners[0].endpoint.session_mut(id) {
                    s.close();
                }
            }
        }
    }

    /// A local port connected to `Network`: its own listener, named after it (or as its
    /// `[export NAME]` section says, on the section's port).
    fn add_export(&mut self, ctx: &mut Ctx, local: SeqAddr, name: &str) -> io::Result<()> {
        let how = self
            .bridge
            .as_ref()
            .and_then(|b| b.export_as(local))
            .cloned();
        let base = match &how {
            Some(how) => how.name.clone(),
            None => format!("{} {}", self.settings.name, name),
        };
        let mut unique = base.clone();
        let mut n = 2;
        while self.listeners.iter().any(|l| l.name == unique) {
            unique = format!("{base} ({n})");
            n += 1;
        }
        // The section's port goes to the first port it exports; more matches get free pairs.
        let sockets = match how.and_then(|h| h.port) {
            Some(port) if unique == base => net::bind_all(&self.settings.bind, port)?,
            _ => self.bind_free_pair()?,
        };
        let seed = self.next_listener as u64 ^ self.origin.elapsed().as_nanos() as u64;
        let listener = Listener {
            id: self.next_listener,
            endpoint: Endpoint::new(
                self.session_config_for(&unique),
                AcceptPolicy::default(),
                seed,
            ),
            sockets,
            sources: Vec::new(),
            export: Some(local),
            name: unique.clone(),
        };
        self.next_listener += 1;
        info!("exporting ALSA port {local} as {unique:?}");
        self.listeners.push(listener);
        let index = self.listeners.len() - 1;
        self.register_listener(ctx, index)?;
        let port = self.listeners[index].sockets[0]
            .control
            .local_addr()?
            .port();
        let (now, id) = (self.now(ctx), self.listeners[index].id);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.add_service(now, id, &unique, port);
        }
        self.mdns_events(ctx);
        Ok(())
    }

    /// A `[listener NAME]`: sessions on a port of their own, announced as NAME, each with an
    /// ALSA port as on the main port. Before [`Daemon::start`], which registers it.
    pub fn add_listener(
        &mut self,
        name: &str,
        port: u16,
        config: session::Config,
    ) -> io::Result<()> {
        let sockets = net::bind_all(&self.settings.bind, port)?;
        let seed = self.next_listener as u64 ^ self.origin.elapsed().as_nanos() as u64;
        self.listeners.push(Listener {
            id: self.next_listener,
            endpoint: Endpoint::new(config, AcceptPolicy::default(), seed),
            sockets,
            sources: Vec::new(),
            export: None,
            name: name.to_string(),
        });
        self.next_listener += 1;
        info!("listening as {name:?} on UDP port {port}");
        Ok(())
    }

    fn bind_free_pair(&self) -> io::Result<Vec<PortPair>> {
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port pair");
        for step in 1..=EXPORT_PORT_TRIES {
            let Some(port) = self.settings.port.checked_add(2 * step) else {
                break;
            };
            match net::bind_all(&self.settings.bind, port) {
                Ok(sockets) => return Ok(sockets),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The local port's last connection to `Network` went: BY to its sessions, ports closed.
    fn remove_export(&mut self, ctx: &mut Ctx, now: Instant, local: SeqAddr) {
        let Some(index) = self.listeners.iter().position(|l| l.export == Some(local)) else {
            return;
        };
        info!(
            "no longer exporting {local} ({:?})",
            self.listeners[index].name
        );
        self.remove_listener(ctx, now, index);
    }

    /// A `[listener]` opened by a reload: bound, registered and announced at once.
    pub fn open_listener(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        port: u16,
        config: session::Config,
    ) -> io::Result<()> {
        self.add_listener(name, port, config)?;
        let index = self.listeners.len() - 1;
        let id = self.listeners[index].id;
        if let Err(e) = self.register_listener(ctx, index) {
            self.remove_listener(ctx, self.now(ctx), index);
            return Err(e);
        }
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.add_service(now, id, name, port);
        }
        self.mdns_events(ctx);
        Ok(())
    }

    /// Closes a listener other than the main one: BY to its sessions, their ALSA ports
    /// deleted, its sockets closed and its mDNS name withdrawn.
    pub fn remove_listener(&mut self, ctx: &mut Ctx, now: Instant, index: usize) {
        let mut listener = self.listeners.remove(index);
        listener.endpoint.close_all();
        flush_transmits(&mut listener, now, &mut self.send_buf);
        for source in listener.sources {
            let _ = ctx.deregister(source);
        }
        let id = listener.id;
        if let Some(bridge) = self.bridge.as_mut() {
            for key in self.peers.keys().filter(|key| key.listener == id) {
                bridge.remove_peer(PortKey::Session(*key));
            }
        }
        self.peers.retain(|key, _| key.listener != id);
        self.playouts.retain(|key, _| key.listener != id);
        self.ops.latency.retain(|key, _| key.listener != id);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.remove_service(now, id);
        }
        self.mdns_events(ctx);
    }

    /// Runs the protocol until it has nothing more to say: timeouts, datagrams, events (which
    /// may queue more datagrams, as the hub does), then re-arms the loop's timer.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        for listener in &mut self.listeners {
            listener.endpoint.handle_timeout(now);
        }
        self.reconnect_due(now);
        if self.parked_until.is_some_and(|at| at <= now) {
            self.drop_parked();
        }
        loop {
            let mut busy = false;
            for index in 0..self.listeners.len() {
                flush_transmits(&mut self.listeners[index], now, &mut self.send_buf);
                while let Some((id, event)) = self.listeners[index].endpoint.poll_event() {
                    busy = true;
                    let key = PeerKey {
                        listener: self.listeners[index].id,
                        session: id,
                    };
                    self.on_session_event(now, index, key, event);
                }
            }
            if !busy {
                break;
            }
        }
        let deadline = self
            .listeners
            .iter()
            .filter_map(|l| l.endpoint.poll_timeout())
            .chain(self.clients.iter().filter_map(|c| c.retry_at))
            .chain(self.parked_until)
            .min();
        match deadline {
            Some(at) => ctx.set_timer(TimerId::Protocol, to_std_time(self.origin, at)),
            None => {
                ctx.cancel_timer(&TimerId::Protocol);
            }
        }
        if self.bridge.as_ref().is_some_and(|b| b.backlog() > 0) {
            ctx.set_timer(TimerId::SeqFlush, ctx.now() + SEQ_RETRY);
        }
    }

    /// The client whose own session is `key`.
    fn client_of(&self, key: PeerKey) -> Option<usize> {
        self.main_client(key, |c| c.session)
    }

    /// The client whose port session `key` (one the peer started) shares.
    fn shared_client(&self, key: PeerKey) -> Option<usize> {
        self.main_client(key, |c| c.accepted)
    }

    /// Clients live on the main listener: the one whose `session_of` is `key`'s session.
    fn main_client(
        &self,
        key: PeerKey,
        session_of: impl Fn(&Client) -> Option<SessionId>,
    ) -> Option<usize> {
        if key.listener != MAIN {
            return None;
        }
        self.clients
            .iter()
            .position(|c| session_of(c) == Some(key.session))
    }

    /// A client with a port whose peer is `name` at `ip`: a discovered peer, or a `--connect`
    /// target whose port has that name.
    fn matching_client(&self, name: &str, ip: IpAddr) -> Option<usize> {
        let bridge = self.bridge.as_ref()?;
        self.clients.iter().enumerate().position(|(i, c)| {
            client_port_name(&c.target) == name
                && bridge.port_of(PortKey::Client(i)).is_some()
                && resolve(&c.target.host, c.target.port)
                    .is_ok_and(|a| a.ip().to_canonical() == ip.to_canonical())
        })
    }

    fn on_session_event(&mut self, now: Instant, index: usize, key: PeerKey, event: Event) {
        let name = |peers: &BTreeMap<PeerKey, PeerInfo>| {
            peers
                .get(&key)
                .map_or_else(|| format!("session {}", key.session.0), |p| p.name.clone())
        };
        match event {
            Event::Connected { name, ssrc, addr } => {
                info!(
                    "session opened: {name:?} at {addr} (SSRC {ssrc:08X}) on {}",
                    self.listeners[index].name
                );
                self.on_connected(key, &name, addr.ip());
                self.peers.insert(
                    key,
                    PeerInfo {
                        name,
                        ip: addr.ip(),
                        latency_logged: false,
                    },
                );
            }
            Event::Midi(midi) => {
                trace!("MIDI from {}: {:?}", name(&self.peers), midi.message);
                let after = self.playout_after(now, key, midi.timestamp);
                self.deliver(now, index, key, midi.message, after);
            }
            Event::Latency { rtt, offset_ticks } => {
                self.playout_clock(now, index, key, rtt, offset_ticks);
                // The first measurement of a session at info level, the rest at debug.
                let first = self
                    .peers
                    .get_mut(&key)
                    .is_some_and(|p| !std::mem::replace(&mut p.latency_logged, true));
                self.ops.latency.insert(key, rtt);
                log!(
                    if first { Level::Info } else { Level::Debug },
                    "clock sync with {}: round trip {:.2} ms, offset {} ticks",
                    name(&self.peers),
                    rtt.as_secs_f64() * 1000.0,
                    offset_ticks
                );
            }
            Event::Loss { lost } => {
                info!("{} packet(s) from {} lost", lost, name(&self.peers));
            }
            Event::Disconnected { reason } => self.on_disconnected(now, key, reason),
        }
    }

    /// Gives a newly connected session its ALSA port: the port of the discovered peer or
    /// `--connect` target it is (one port per peer, whoever connected), the one a replaced
    /// session of the same peer left, or a new one. Client sessions use their client's port.
    fn on_connected(&mut self, key: PeerKey, name: &str, ip: IpAddr) {
        if let Some(index) = self.client_of(key) {
            self.clients[index].backoff = RECONNECT_MIN;
            return;
        }
        let exported = self
            .listener_index(key.listener)
            .is_some_and(|i| self.listeners[i].export.is_some());
        if self.bridge.is_none() || exported {
            return; // without ALSA no ports; an export's session speaks through Network
        }
        let matching = (key.listener == MAIN)
            .then(|| self.matching_client(name, ip))
            .flatten();
        if let Some(index) = matching {
            self.clients[index].accepted = Some(key.session);
            info!("{name:?} connected to us: its session shares the peer's ALSA port");
            return;
        }
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        let parked = self
            .parked
            .iter()
            .position(|(_, p)| p.name == name && p.ip.to_canonical() == ip.to_canonical());
        if let Some(i) = parked {
            let (old, _) = self.parked.swap_remove(i);
            if bridge.adopt(PortKey::Session(old), PortKey::Session(key)) {
                info!("{name:?} came back: it keeps its ALSA port");
                return;
            }
        }
        if let Err(e) = bridge.add_peer(PortKey::Session(key), name) {
            warn!("cannot create an ALSA port for {name:?}: {e}");
        }
    }

    fn on_disconnected(&mut self, now: Instant, key: PeerKey, reason: DisconnectReason) {
        let info = self.peers.remove(&key);
        self.ops.latency.remove(&key);
        self.playouts.remove(&key);
        let who = info
            .as_ref()
            .map_or_else(|| format!("session {}", key.session.0), |p| p.name.clone());
        match reason {
            DisconnectReason::Closed | DisconnectReason::PeerEnded => {
                info!("session closed: {who}: {reason:?}")
            }
            _ => warn!("session closed: {who}: {reason:?}"),
        }
        if let Some(index) = self.shared_client(key) {
            // The port is the discovered peer's or the target's: it stays.
            self.clients[index].accepted = None;
        } else if let Some(bridge) = self.bridge.as_mut() {
            let port = PortKey::Session(key);
            match (reason, info) {
                (DisconnectReason::Replaced, Some(info)) => {
                    bridge.park_peer(port);
                    self.parked.push((key, info));
                    self.parked_until.get_or_insert(now + PARK_TIME);
                }
                _ => bridge.remove_peer(port),
            }
        }
        if self.signals_seen > 0 {
            return;
        }
        if let Some(index) = self.client_of(key) {
            let client = &mut self.clients[index];
            client.session = None;
            if client.wanted {
                client.retry_at = Some(now + client.backoff);
                info!(
                    "reconnecting to {}:{} in {:?}",
                    client.target.host, client.target.port, client.backoff
                );
                client.backoff = (client.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }

    fn drop_parked(&mut self) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.drop_parked();
        }
        self.parked.clear();
        self.parked_until = None;
    }

    /// MIDI from a session: to its ALSA port (or its export's local port), and with the hub on,
    /// to every other session of the main listener, never back to its sender.
    fn deliver(
        &mut self,
        now: Instant,
        index: usize,
        key: PeerKey,
        message: MidiMessage,
        after: Option<Duration>,
    ) {
        let client = self.client_of(key).or_else(|| self.shared_client(key));
        if let Some(bridge) = self.bridge.as_mut() {
            match (self.listeners[index].export, client) {
                (Some(local), _) => bridge.send_to_exported(local, &message, after),
                (None, Some(client)) => {
                    bridge.send_to_port(PortKey::Client(client), &message, after)
                }
                (None, None) => bridge.send_to_port(PortKey::Session(key), &message, after),
            }
        }
        if self.hub && key.listener == MAIN {
            send_to_all(
                &mut self.listeners[index].endpoint,
                now,
                Some(key.session),
                &message,
            );
        }
    }

    /// With `--playout-delay`: how long MIDI stamped `timestamp` by session `key`'s peer
    /// waits before ALSA delivers it (see `playout`).
    fn playout_after(&mut self, now: Instant, key: PeerKey, timestamp: u32) -> Option<Duration> {
        let delay = self.settings.playout_delay?;
        self.bridge.as_ref()?;
        let playout = self
            .playouts
            .entry(key)
            .or_insert_with(|| Playout::new(delay));
        let was_clock = playout.uses_clock();
        let at = playout.schedule(now, timestamp);
        if was_clock && !playout.uses_clock() {
            warn!(
                "session {}: RTP timestamps far from the CK clock: playout timed by arrivals",
                key.session.0
            );
        }
        trace!("playout of {timestamp} in {:?}", at - now);
        Some(at - now)
    }

    /// A CK round of session `key` ended: its offset times the playout from now on.
    fn playout_clock(
        &mut self,
        now: Instant,
        index: usize,
        key: PeerKey,
        rtt: Duration,
        offset_ticks: i64,
    ) {
        let Some(delay) = self.settings.playout_delay else {
            return;
        };
        let Some(session) = self.listeners[index].endpoint.session(key.session) else {
            return;
        };
        let local_ticks = session.clock_ticks(now);
        self.playouts
            .entry(key)
            .or_insert_with(|| Playout::new(delay))
            .on_clock(now, rtt, local_ticks, offset_ticks);
    }

    fn reconnect_due(&mut self, now: Instant) {
        for client in &mut self.clients {
            if client.session.is_some()
                || !client.wanted
                || client.retry_at.is_none_or(|at| at > now)
            {
                continue;
            }
            let target = &client.target;
            match resolve(&target.host, target.port) {
                Ok(addr) => {
                    info!("connecting to {addr}");
                    client.session = Some(self.listeners[0].endpoint.connect(now, addr));
                    client.retry_at = None;
                }
                Err(e) => {
                    warn!("cannot resolve {}: {e}", target.host);
                    client.retry_at = Some(now + client.backoff);
                    client.backoff = (client.backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// First SIGINT/SIGTERM: BY to every peer, then stop. A second: exit at once.
    fn on_shutdown_signal(&mut self, ctx: &mut Ctx, signal: Signal) {
        self.signals_seen += 1;
        if self.signals_seen > 1 {
            warn!("{signal:?} again: exiting at once");
            std::process::exit(1);
        }
        info!("{signal:?}: closing every session");
        for listener in &mut self.listeners {
            listener.endpoint.close_all();
        }
        self.pump(ctx);
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            info!("mDNS: saying goodbye");
            mdns.shutdown(now);
        }
        ctx.stop();
    }
}

/// The name of a client's ALSA port: the target's name, else its address.
fn client_port_name(target: &ConnectTarget) -> String {
    target
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", target.host, target.port))
}

fn main_key(session: SessionId) -> PeerKey {
    PeerKey {
        listener: MAIN,
        session,
    }
}

fn session_config(name: &str) -> session::Config {
    session::Config {
        name: name.to_string(),
        ..session::Config::default()
    }
}

/// Sends what the listener's sessions want to send, each from the socket that reaches it.
fn flush_transmits(listener: &mut Listener, now: Instant, buf: &mut [u8]) {
    while let Some(t) = listener.endpoint.poll_transmit(now, buf) {
        let Some(pair) = listener.sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        let socket = match t.port {
            Port::Control => &pair.control,
            Port::Data => &pair.data,
        };
        if let Err(e) = socket.send_to(&buf[..t.len], pair.wire_addr(t.dst)) {
            debug!("send to {}: {e}", t.dst);
        }
    }
}

/// Queues `message` for every connected session of `endpoint` but `except`.
fn send_to_all(
    endpoint: &mut Endpoint,
    now: Instant,
    except: Option<SessionId>,
    message: &MidiMessage,
) {
    for (id, session) in endpoint.sessions_mut() {
        if Some(id) != except && session.is_connected() {
            session.send_midi(now, message.clone());
        }
    }
}

/// Host names are resolved with the system resolver; the first address wins.
fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .map(net::canonical)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

fn to_protocol_time(origin: StdInstant, t: StdInstant) -> Instant {
    Instant::from_micros(t.saturating_duration_since(origin).as_micros() as u64)
}

fn to_std_time(origin: StdInstant, t: Instant) -> StdInstant {
    origin + std::time::Duration::from_micros(t.as_micros())
}

fn on_control(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_socket(ctx, event, Port::Control);
}

fn on_data(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_socket(ctx, event, Port::Data);
}

fn on_sequencer(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_sequencer(ctx, event);
}

fn on_mdns(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_mdns(ctx, event);
}

pub fn on_timer(daemon: &mut Daemon, ctx: &mut Ctx, timer: TimerId) {
    if timer == TimerId::Mdns {
        return daemon.mdns_timeout(ctx);
    }
    if timer == TimerId::SeqFlush {
        if let Some(bridge) = daemon.bridge.as_mut() {
            bridge.flush();
        }
    }
    daemon.pump(ctx);
}

pub fn on_signal(daemon: &mut Daemon, ctx: &mut Ctx, signal: Signal) {
    match signal {
        Signal::SIGHUP => daemon.reload(ctx, "SIGHUP"),
        Signal::SIGINT | Signal::SIGTERM => daemon.on_shutdown_signal(ctx, signal),
        other => error!("unexpected signal {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::fake::FakeSequencer;
    use crate::seq::PortId;

    fn daemon_with_fake_alsa() -> Daemon {
        daemon(true)
    }

    fn daemon(alsa: bool) -> Daemon {
        daemon_connecting(alsa, Vec::new(), false)
    }

    fn daemon_connecting(alsa: bool, connect: Vec<ConnectTarget>, keep: bool) -> Daemon {
        let fake = || Box::new(FakeSequencer::new().unwrap()) as Box<dyn Sequencer>;
        daemon_on(|| alsa.then(fake), connect, keep)
    }

    fn daemon_on(
        seq: impl Fn() -> Option<Box<dyn Sequencer>>,
        connect: Vec<ConnectTarget>,
        keep: bool,
    ) -> Daemon {
        for port in (47_600..47_700).step_by(2) {
            let settings = Settings {
                name: "Test".into(),
                port,
                bind: vec![IpAddr::from([127, 0, 0, 1])],
                connect: connect.clone(),
                hub: false,
                keep_connected: keep,
                mdns: None,
                playout_delay: None,
                export_auto: None,
            };
            if let Ok(daemon) = Daemon::new(settings, seq(), 1) {
                return daemon;
            }
        }
        panic!("no free port pair");
    }

    fn port_of(daemon: &Daemon, slot: usize) -> Option<PortId> {
        daemon
            .bridge
            .as_ref()
            .unwrap()
            .port_of(PortKey::Client(slot))
    }

    #[test]
    fn connect_targets_follow_their_port_subscriptions_unless_kept() {
        let target = ConnectTarget::parse("piano@192.0.2.1:5004").unwrap();
        let now = Instant::from_micros(1_000_000);
        let mut lazy = daemon_connecting(true, vec![target.clone()], false);
        assert!(!lazy.clients[0].wanted);
        lazy.set_wanted(now, 0, true);
        assert!(lazy.clients[0].wanted && lazy.clients[0].retry_at == Some(now));
        lazy.set_wanted(now, 0, false);
        assert!(!lazy.clients[0].wanted && lazy.clients[0].retry_at.is_none());

        let mut kept = daemon_connecting(true, vec![target.clone()], true);
        assert!(kept.clients[0].wanted && kept.clients[0].retry_at.is_some());
        kept.set_wanted(now, 0, false);
        assert!(kept.clients[0].wanted, "--keep-connected keeps it wanted");

        let no_alsa = daemon_connecting(false, vec![target], false);
        assert!(no_alsa.clients[0].wanted);
    }

    #[test]
    fn discovered_peers_get_one_port_each_and_keep_it_when_they_come_back() {
        let mut d = daemon_with_fake_alsa();
        let t0 = Instant::from_micros(1_000_000);
        let studio = |addr: &str| PeerEvent::Appeared {
            name: "Studio".into(),
            addr: addr.parse().unwrap(),
        };
        d.on_mdns_peer(t0, studio("169.254.0.1:5004"));
        d.on_mdns_peer(
            t0,
            PeerEvent::Appeared {
                name: "Keys".into(),
                addr: "[fe80::2%3]:5006".parse().unwrap(),
            },
        );
        let port = port_of(&d, 0).expect("a port for Studio");
        assert!(port_of(&d, 1).is_some());
        assert_eq!(d.clients.len(), 2);
        assert_eq!(d.clients[1].target.host, "fe80::2%3");
        // The system resolver keeps the scope (the interface the peer was seen on).
        let addr = resolve("fe80::2%1", 5006).unwrap();
        assert!(matches!(addr, SocketAddr::V6(v6) if v6.scope_id() == 1 && v6.port() == 5006));
        // Not connected until something subscribes to the port.
        assert!(!d.clients[0].wanted && d.clients[0].session.is_none());

        // A change of address: the same port, the new address.
        d.on_mdns_peer(
            t0,
            PeerEvent::Changed {
                name: "Studio".into(),
                addr: "169.254.0.9:5004".parse().unwrap(),
            },
        );
        assert_eq!(port_of(&d, 0), Some(port));
        assert_eq!(d.clients[0].target.host, "169.254.0.9");

        // Gone and back within the grace: still the same port.
        let gone = || PeerEvent::Gone {
            name: "Studio".into(),
        };
        d.on_mdns_peer(t0, gone());
        d.expire_discovered(t0 + mdns::GONE_GRACE / 2);
        assert_eq!(port_of(&d, 0), Some(port));
        d.on_mdns_peer(t0, studio("169.254.0.9:5004"));
        d.expire_discovered(t0 + mdns::GONE_GRACE * 2);
        assert_eq!(port_of(&d, 0), Some(port));

        // Gone for good: the port goes; back later: one port again, in the same slot.
        d.on_mdns_peer(t0, gone());
        d.expire_discovered(t0 + mdns::GONE_GRACE);
        assert_eq!(port_of(&d, 0), None);
        d.on_mdns_peer(t0, studio("169.254.0.9:5004"));
        assert!(port_of(&d, 0).is_some());
        assert_eq!(d.clients.len(), 2);
        assert!(port_of(&d, 2).is_none());
    }

    #[test]
    fn discovered_peers_the_mdns_filters_refuse_get_no_port() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let file =
            crate::config::parse("x", "[mdns]\ninclude = Stage*, Studio\nexclude = *test*\n")
                .unwrap();
        let Ok(crate::cli::Command::Run(options)) = crate::cli::parse(&[]) else {
            panic!("no options");
        };
        d.ops.settings = Some(crate::config::resolve(&options, &file, || "h".into()));
        for (name, ip) in [
            ("Stage Left", 1),
            ("studio", 2),
            ("Stage test", 3),
            ("Ana's iPad", 4),
        ] {
            d.on_mdns_peer(
                Instant::ZERO,
                PeerEvent::Appeared {
                    name: name.into(),
                    addr: SocketAddr::from(([169, 254, 0, ip], 5004)),
                },
            );
        }
        let names: Vec<_> = d.clients.iter().map(|c| c.target.name.clone()).collect();
        assert_eq!(names, [Some("Stage Left".into()), Some("studio".into())]);
        assert_eq!(ports_named(&fake, "Stage Left"), 1);
        assert_eq!(ports_named(&fake, "Stage test"), 0);
        assert_eq!(ports_named(&fake, "Ana's iPad"), 0);
        // Gone for a name never taken changes nothing.
        d.on_mdns_peer(
            Instant::ZERO,
            PeerEvent::Gone {
                name: "Ana's iPad".into(),
            },
        );
        assert_eq!(d.clients.len(), 2);
    }

    #[test]
    fn ctl_export_connects_a_local_port_to_network_and_unexport_undoes_it() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        let ctx = reactor.context();
        let keystep = SeqAddr {
            client: 24,
            port: 0,
        };
        fake.borrow_mut().add_other_port(crate::seq::PortInfo {
            addr: keystep,
            client_name: "KeyStep".into(),
            port_name: "KeyStep MIDI 1".into(),
            hardware: true,
            readable: true,
            writable: true,
        });
        let network = SeqAddr {
            client: 128,
            port: fake.borrow().port(crate::bridge::NETWORK_PORT).unwrap().0,
        };

        let name = d.export_local(ctx, keystep, true).unwrap();
        assert_eq!(name, "Test KeyStep KeyStep MIDI 1");
        assert_eq!(d.status().exports, 1);
        assert!(d.listeners.iter().any(|l| l.export == Some(keystep)));
        let err = d.export_local(ctx, keystep, true).unwrap_err();
        assert!(err.contains("exported already"), "{err}");
        let err = d
            .export_local(
                ctx,
                SeqAddr {
                    client: 99,
                    port: 0,
                },
                true,
            )
            .unwrap_err();
        assert!(err.contains("no ALSA port 99:0"), "{err}");

        // Both ways through the seam; unexport takes both connections away.
        assert_eq!(d.export_local(ctx, keystep, false).unwrap(), name);
        assert_eq!(d.status().exports, 0);
        assert!(fake.borrow_mut().take_connections().is_empty());
        let err = d.export_local(ctx, keystep, false).unwrap_err();
        assert!(err.contains("not exported"), "{err}");

        d.export_local(ctx, keystep, true).unwrap();
        let mut links = fake.borrow_mut().take_connections();
        links.sort();
        let mut want = vec![(keystep, network), (network, keystep)];
        want.sort();
        assert_eq!(links, want);

        let mut plain = daemon(false);
        let err = plain.export_local(ctx, keystep, true).unwrap_err();
        assert!(err.contains("runs without ALSA"), "{err}");
    }

    #[test]
    fn an_export_section_names_its_session_and_uses_its_port() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        let ctx = reactor.context();
        let keys = SeqAddr {
            client: 24,
            port: 0,
        };
        let info = |addr, client_name: &str| crate::seq::PortInfo {
            addr,
            client_name: client_name.into(),
            port_name: "MIDI 1".into(),
            hardware: true,
            readable: true,
            writable: true,
        };
        fake.borrow_mut()
            .add_other_port(info(keys, "Arturia KeyStep"));
        let own_port = d.settings.port + 40;
        let bridge = d.bridge.as_mut().unwrap();
        bridge
            .add_export_section(
                crate::bridge::PortMatch::parse("keystep"),
                crate::bridge::ExportAs {
                    name: "Keys".into(),
                    port: Some(own_port),
                },
            )
            .unwrap();
        let mut actions = Vec::new();
        while bridge.poll(&mut actions).unwrap() {}
        // One appearing later is connected too.
        let later = SeqAddr {
            client: 30,
            port: 0,
        };
        fake.borrow_mut().add_other_port(info(later, "KeyStep Pro"));
        while d.bridge.as_mut().unwrap().poll(&mut actions).unwrap() {}
        for action in actions {
            d.on_bridge_action(ctx, Instant::ZERO, action);
        }
        let exports: Vec<_> = d
            .listeners
            .iter()
            .filter_map(|l| {
                Some((
                    l.export?,
                    l.name.as_str(),
                    l.sockets[0].control.local_addr().ok()?.port(),
                ))
            })
            .collect();
        assert_eq!(exports[0], (keys, "Keys", own_port));
        assert_eq!((exports[1].0, exports[1].1), (later, "Keys (2)"));
        assert_ne!(exports[1].2, own_port);
    }

    #[test]
    fn sessions_of_an_extra_listener_get_alsa_ports_as_on_the_main_port() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let port = d.settings.port + 20;
        d.add_listener("Drums", port, session_config("Drums"))
            .unwrap();
        let t0 = Instant::from_micros(1_000_000);
        let mut remote = Remote::new("Pad", "169.254.0.1:5004");
        remote.listener = 1;
        let theirs = remote.endpoint.connect(t0, US.parse().unwrap());
        remote.settle(&mut d, t0);
        let session = remote.endpoint.session(theirs).unwrap();
        assert!(session.is_connected());
        assert_eq!(session.peer_name(), "Drums");
        assert_eq!(ports_named(&fake, "Pad"), 1);
        let key = PeerKey {
            listener: d.listeners[1].id,
            session: d.listeners[1].endpoint.sessions().next().unwrap().0,
        };
        // Its MIDI comes out of its port.
        let pad = d
            .bridge
            .as_ref()
            .unwrap()
            .port_of(PortKey::Session(key))
            .unwrap();
        fake.borrow_mut().take_sent();
        remote
            .endpoint
            .session_mut(theirs)
            .unwrap()
            .send_midi(t0, note());
        remote.settle(&mut d, t0);
        assert_eq!(
            fake.borrow_mut().take_sent(),
            vec![(pad, None, vec![0x90, 60, 100])]
        );
        assert_eq!(d.status().exports, 0);
        // It ends, and the port goes.
        remote.endpoint.session_mut(theirs).unwrap().close();
        remote.settle(&mut d, t0);
        assert_eq!(ports_named(&fake, "Pad"), 0);
    }

    /// The file's sections as `main` hands them over: what `start_ops` does with them.
    #[test]
    fn start_ops_applies_the_files_connections_exports_and_listeners() {
        let target = |name: &str, port| ConnectTarget {
            name: Some(name.into()),
            host: "127.0.0.1".into(),
            port,
        };
        let (mut d, fake) = daemon_sharing(vec![target("a", 9), target("b", 11)]);
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        let ctx = reactor.context();
        let dir = std::env::temp_dir().join(format!("rtpmidid-start-ops-{}", std::process::id()));
        let text = format!(
            "[general]\nport = {}\n[connect a]\nhost = 127.0.0.1\nport = 9\n\
             local_port = Piano In\nkeep_connected = yes\n[connect b]\nhost = 127.0.0.1\n\
             port = 11\n[export keys]\nalsa_port = keystep\n[listener drums]\nport = {}\n\
             [timeouts]\nck_interval = 3\n",
            d.settings.port,
            d.settings.port + 20
        );
        let file = crate::config::parse("x", &text).unwrap();
        let args = [
            "--control".to_string(),
            dir.join("c.sock").display().to_string(),
        ];
        let Ok(crate::cli::Command::Run(options)) = crate::cli::parse(&args) else {
            panic!("no options");
        };
        let settings = crate::config::resolve(&options, &file, || "h".into());
        d.start_ops(ctx, *options, None, settings, true).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        // [connect a] has its own port name and is kept up; b waits for a subscriber.
        assert_eq!(ports_named(&fake, "Piano In"), 1);
        assert_eq!(ports_named(&fake, "a"), 0);
        assert_eq!(ports_named(&fake, "b"), 1);
        assert!(d.clients[0].keep && d.clients[0].wanted);
        assert!(!d.clients[1].keep && !d.clients[1].wanted);
        // [listener drums], with the file's timeouts.
        let drums = d.listeners.iter().find(|l| l.name == "drums").unwrap();
        assert_eq!(drums.export, None);
        assert_eq!(
            drums.sockets[0].control.local_addr().unwrap().port(),
            d.settings.port + 20
        );
        assert_eq!(
            d.session_config_for("x").ck_interval,
            Duration::from_secs(3)
        );
        // [export keys]: a KeyStep appearing is exported as "keys".
        fake.borrow_mut().add_other_port(crate::seq::PortInfo {
            addr: SeqAddr {
                client: 24,
                port: 0,
            },
            client_name: "Arturia KeyStep".into(),
            port_name: "MIDI 1".into(),
            hardware: true,
            readable: true,
            writable: true,
        });
        let mut actions = Vec::new();
        while d.bridge.as_mut().unwrap().poll(&mut actions).unwrap() {}
        for action in actions {
            d.on_bridge_action(ctx, Instant::ZERO, action);
        }
        assert!(d
            .listeners
            .iter()
            .any(|l| l.name == "keys" && l.export.is_some()));
    }

    #[test]
    fn without_alsa_discovered_peers_are_not_connected() {
        let mut d = daemon(false);
        d.on_mdns_peer(
            Instant::ZERO,
            PeerEvent::Appeared {
                name: "Studio".into(),
                addr: "169.254.0.1:5004".parse().unwrap(),
            },
        );
        assert!(d.clients.is_empty());
    }

    /// A fake sequencer the test can look into while the daemon owns it.
    struct Shared(std::rc::Rc<std::cell::RefCell<FakeSequencer>>);

    impl Sequencer for Shared {
        fn fds(&self) -> io::Result<Vec<RawFd>> {
            self.0.borrow().fds()
        }
        fn create_port(&mut self, name: &str, caps: crate::seq::PortCaps) -> io::Result<PortId> {
            self.0.borrow_mut().create_port(name, caps)
        }
        fn delete_port(&mut self, port: PortId) -> io::Result<()> {
            self.0.borrow_mut().delete_port(port)
        }
        fn recv(&mut self) -> io::Result<Option<crate::seq::SeqInput>> {
            self.0.borrow_mut().recv()
        }
        fn send(&mut self, port: PortId, to: Option<SeqAddr>, midi: &[u8]) -> io::Result<()> {
            self.0.borrow_mut().send(port, to, midi)
        }
        fn send_at(
            &mut self,
            port: PortId,
            to: Option<SeqAddr>,
            midi: &[u8],
            after: std::time::Duration,
        ) -> io::Result<()> {
            self.0.borrow_mut().send_at(port, to, midi, after)
        }
        fn watch_ports(&mut self) -> io::Result<()> {
            self.0.borrow_mut().watch_ports()
        }
        fn connect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
            self.0.borrow_mut().connect(from, to)
        }
        fn disconnect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
            self.0.borrow_mut().disconnect(from, to)
        }
        fn describe_port(&self, addr: SeqAddr) -> Option<crate::seq::PortInfo> {
            self.0.borrow().describe_port(addr)
        }
        fn client(&self) -> u8 {
            self.0.borrow().client()
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.borrow_mut().flush()
        }
        fn backlog(&self) -> usize {
            self.0.borrow().backlog()
        }
    }

    type Fake = std::rc::Rc<std::cell::RefCell<FakeSequencer>>;

    fn daemon_sharing(connect: Vec<ConnectTarget>) -> (Daemon, Fake) {
        let fake = Fake::new(FakeSequencer::new().unwrap().into());
        let seq = || {
            *fake.borrow_mut() = FakeSequencer::new().unwrap();
            Some(Box::new(Shared(fake.clone())) as Box<dyn Sequencer>)
        };
        (daemon_on(seq, connect, false), fake)
    }

    fn ports_named(fake: &Fake, name: &str) -> usize {
        fake.borrow()
            .ports()
            .values()
            .filter(|(n, _)| n == name)
            .count()
    }

    const US: &str = "169.254.0.2:5004";

    /// A remote RTP-MIDI endpoint at `control` (data one above), talking to the daemon's main
    /// listener without sockets.
    struct Remote {
        endpoint: Endpoint,
        control: SocketAddr,
        events: Vec<(SessionId, Event)>,
        /// Index of the daemon's listener it talks to.
        listener: usize,
    }

    impl Remote {
        fn new(name: &str, control: &str) -> Remote {
            Remote {
                endpoint: Endpoint::new(session_config(name), AcceptPolicy::default(), 7),
                control: control.parse().unwrap(),
                events: Vec::new(),
                listener: 0,
            }
        }

        /// Datagrams both ways and the daemon's events, until both are quiet.
        fn settle(&mut self, d: &mut Daemon, now: Instant) {
            let with_port = |mut addr: SocketAddr, port: Port| {
                if port == Port::Data {
                    addr.set_port(addr.port() + 1);
                }
                addr
            };
            let us: SocketAddr = US.parse().unwrap();
            let mut buf = vec![0; MAX_DATAGRAM];
            loop {
                let mut busy = false;
                while let Some(t) = self.endpoint.poll_transmit(now, &mut buf) {
                    busy = true;
                    let from = with_port(self.control, t.port);
                    let ours = &mut d.listeners[self.listener].endpoint;
                    let _ = ours.handle_datagram(now, t.port, from, &buf[..t.len]);
                }
                while let Some(t) = d.listeners[self.listener]
                    .endpoint
                    .poll_transmit(now, &mut buf)
                {
                    busy = true;
                    let from = with_port(us, t.port);
                    let _ = self
                        .endpoint
                        .handle_datagram(now, t.port, from, &buf[..t.len]);
                }
                let listener = d.listeners[self.listener].id;
                while let Some((session, event)) = d.listeners[self.listener].endpoint.poll_event()
                {
                    busy = true;
                    let key = PeerKey { listener, session };
                    d.on_session_event(now, self.listener, key, event);
                }
                while let Some(event) = self.endpoint.poll_event() {
                    busy = true;
                    self.events.push(event);
                }
                if !busy {
                    break;
                }
            }
        }

        fn midi_on(&mut self, session: SessionId) -> Vec<MidiMessage> {
            let mut midi = Vec::new();
            self.events.retain(|(id, event)| match event {
                Event::Midi(m) if *id == session => {
                    midi.push(m.message.clone());
                    false
                }
                _ => true,
            });
            midi
        }
    }

    fn note() -> MidiMessage {
        MidiMessage::from_bytes(&[0x90, 60, 100]).unwrap()
    }

    #[test]
    fn a_discovered_peer_that_connects_to_us_keeps_one_port() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let t0 = Instant::from_micros(1_000_000);
        let studio = || PeerEvent::Appeared {
            name: "Studio".into(),
            addr: "169.254.0.1:5004".parse().unwrap(),
        };
        d.on_mdns_peer(t0, studio());
        let port = port_of(&d, 0).unwrap();

        // Studio invites us: its session uses Studio's port, no second one.
        let mut remote = Remote::new("Studio", "169.254.0.1:5004");
        let theirs = remote.endpoint.connect(t0, US.parse().unwrap());
        remote.settle(&mut d, t0);
        assert!(remote.endpoint.session(theirs).unwrap().is_connected());
        assert_eq!(ports_named(&fake, "Studio"), 1);
        let accepted = d.clients[0]
            .accepted
            .expect("shared with the discovered peer");

        // Its MIDI comes out of that port; what is written to the port goes to it.
        let sent = |fake: &Fake| fake.borrow_mut().take_sent();
        sent(&fake);
        remote
            .endpoint
            .session_mut(theirs)
            .unwrap()
            .send_midi(t0, note());
        remote.settle(&mut d, t0);
        assert_eq!(sent(&fake), vec![(port, None, vec![0x90, 60, 100])]);
        d.send_to_client(t0, 0, note());
        remote.settle(&mut d, t0);
        assert_eq!(remote.midi_on(theirs), vec![note()]);

        // With our own session to Studio up too, ours is preferred; MIDI from either comes out
        // of the one port.
        let ours = d.listeners[0].endpoint.connect(t0, remote.control);
        d.clients[0].session = Some(ours);
        remote.settle(&mut d, t0);
        assert_eq!(ports_named(&fake, "Studio"), 1);
        d.send_to_client(t0, 0, note());
        remote.settle(&mut d, t0);
        assert!(remote.midi_on(theirs).is_empty());
        let (ours_there, _) = remote
            .endpoint
            .sessions()
            .find(|(id, _)| *id != theirs)
            .unwrap();
        assert_eq!(remote.midi_on(ours_there), vec![note()]);
        remote
            .endpoint
            .session_mut(ours_there)
            .unwrap()
            .send_midi(t0, note());
        remote.settle(&mut d, t0);
        assert_eq!(sent(&fake), vec![(port, None, vec![0x90, 60, 100])]);

        // Studio ends its session: the port stays, the discovered peer's.
        remote.endpoint.session_mut(theirs).unwrap().close();
        remote.settle(&mut d, t0);
        assert!(d.listeners[0].endpoint.session(accepted).is_none());
        assert_eq!(d.clients[0].accepted, None);
        assert_eq!(port_of(&d, 0), Some(port));
        assert_eq!(ports_named(&fake, "Studio"), 1);
    }

    #[test]
    fn a_session_that_came_first_gives_its_port_to_the_discovered_peer() {
        let (mut d, fake) = daemon_sharing(Vec::new());
        let t0 = Instant::from_micros(1_000_000);
        let mut remote = Remote::new("Studio", "169.254.0.1:5004");
        let theirs = remote.endpoint.connect(t0, US.parse().unwrap());
        remote.settle(&mut d, t0);
        let port = fake.borrow().port("Studio").unwrap();
        d.on_mdns_peer(
            t0,
            PeerEvent::Appeared {
                name: "Studio".into(),
                addr: "169.254.0.1:5004".parse().unwrap(),
            },
        );
        assert_eq!(port_of(&d, 0), Some(port));
        assert_eq!(ports_named(&fake, "Studio"), 1);
        assert!(d.clients[0].accepted.is_some());
        // Gone from mDNS for good while its session is up: the session keeps the port.
        d.on_mdns_peer(
            t0,
            PeerEvent::Gone {
                name: "Studio".into(),
            },
        );
        d.expire_discovered(t0 + mdns::GONE_GRACE);
        assert_eq!(port_of(&d, 0), None);
        assert_eq!(ports_named(&fake, "Studio"), 1);
        remote
            .endpoint
            .session_mut(theirs)
            .unwrap()
            .send_midi(t0, note());
        fake.borrow_mut().take_sent();
        remote.settle(&mut d, t0);
        assert_eq!(
            fake.borrow_mut().take_sent(),
            vec![(port, None, vec![0x90, 60, 100])]
        );
        // And it goes with the session.
        remote.endpoint.session_mut(theirs).unwrap().close();
        remote.settle(&mut d, t0);
        assert_eq!(ports_named(&fake, "Studio"), 0);
    }

    #[test]
    fn a_connect_target_that_connects_to_us_keeps_one_port() {
        let target = ConnectTarget::parse("Studio@169.254.0.1:5004").unwrap();
        let (mut d, fake) = daemon_sharing(vec![target]);
        let t0 = Instant::from_micros(1_000_000);
        let port = port_of(&d, 0).unwrap();
        let mut remote = Remote::new("Studio", "169.254.0.1:5004");
        remote.endpoint.connect(t0, US.parse().unwrap());
        remote.settle(&mut d, t0);
        assert_eq!(ports_named(&fake, "Studio"), 1);
        assert!(d.clients[0].accepted.is_some());
        assert_eq!(port_of(&d, 0), Some(port));
        // The same name from another host is another peer, with a port of its own.
        let mut other = Remote::new("Studio", "169.254.0.9:5004");
        other.endpoint.connect(t0, US.parse().unwrap());
        other.settle(&mut d, t0);
        assert_eq!(ports_named(&fake, "Studio"), 2);
    }
}
