//! The daemon's glue: sockets in, the protocol endpoint, events out to the hub, the clients'
//! reconnection and the log.
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Instant as StdInstant;

use log::{debug, error, info, log, trace, warn, Level};
use protocol::endpoint::{AcceptPolicy, Dropped, Endpoint, SessionId};
use protocol::session::{self, DisconnectReason, Event, Port};
use protocol::time::{Duration, Instant};
use reactor::{Context, Interest, Signal};

use crate::cli::ConnectTarget;
use crate::net::{self, PortPair};

mod ops;
pub use ops::{Peer, Status};

/// Datagrams read from one socket before the loop looks at the others, so a flooding peer
/// cannot starve the rest.
const READ_BATCH: usize = 256;
/// Largest datagram we read; RTP-MIDI over UDP is far below it.
const MAX_DATAGRAM: usize = 65_536;
const RECONNECT_MIN: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Dropped datagrams are logged at warn level at most this often.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the protocol endpoint or of a client's reconnection.
    Protocol,
}

pub type Ctx = Context<Daemon, TimerId>;

/// What the daemon was asked to do, from the command line (and later the config file).
#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub port: u16,
    pub bind: Vec<std::net::IpAddr>,
    pub connect: Vec<ConnectTarget>,
    pub hub: bool,
}

/// A `--connect` target and its session, reconnected with back-off when it ends.
struct Client {
    target: ConnectTarget,
    session: Option<SessionId>,
    retry_at: Option<Instant>,
    backoff: Duration,
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

pub struct Daemon {
    origin: StdInstant,
    endpoint: Endpoint,
    sockets: Vec<PortPair>,
    hub: bool,
    clients: Vec<Client>,
    /// Peer names by session, for the log.
    names: BTreeMap<SessionId, String>,
    /// Sessions whose clock was synced at least once.
    synced: BTreeSet<SessionId>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    drops: DropLog,
    signals_seen: u32,
    /// Control socket, reload and their figures (see `daemon/ops.rs`).
    pub(crate) ops: ops::Ops,
}

impl Daemon {
    pub fn new(settings: Settings, seed: u64) -> io::Result<Daemon> {
        let sockets = net::bind_all(&settings.bind, settings.port)?;
        for pair in &sockets {
            info!(
                "listening on {} and {}",
                pair.control.local_addr()?,
                pair.data.local_addr()?
            );
        }
        let config = session::Config {
            name: settings.name.clone(),
            ..session::Config::default()
        };
        let clients = settings
            .connect
            .into_iter()
            .map(|target| Client {
                target,
                session: None,
                retry_at: Some(Instant::ZERO),
                backoff: RECONNECT_MIN,
            })
            .collect();
        Ok(Daemon {
            origin: StdInstant::now(),
            endpoint: Endpoint::new(config, AcceptPolicy::default(), seed),
            sockets,
            hub: settings.hub,
            clients,
            names: BTreeMap::new(),
            synced: BTreeSet::new(),
            recv_buf: vec![0; MAX_DATAGRAM],
            send_buf: vec![0; MAX_DATAGRAM],
            drops: DropLog::default(),
            signals_seen: 0,
            ops: ops::Ops::default(),
        })
    }

    /// Registers the sockets and the first timer with the loop.
    pub fn start(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        for pair in &self.sockets {
            ctx.register(pair.control.as_raw_fd(), Interest::READABLE, on_control)?;
            ctx.register(pair.data.as_raw_fd(), Interest::READABLE, on_data)?;
        }
        self.pump(ctx);
        Ok(())
    }

    fn now(&self, ctx: &Ctx) -> Instant {
        to_protocol_time(self.origin, ctx.now())
    }

    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, port: Port) {
        let Some(index) = self.sockets.iter().position(|p| {
            let socket = match port {
                Port::Control => &p.control,
                Port::Data => &p.data,
            };
            socket.as_raw_fd() == event.fd
        }) else {
            return;
        };
        let now = self.now(ctx);
        for _ in 0..READ_BATCH {
            let pair = &self.sockets[index];
            let socket = match port {
                Port::Control => &pair.control,
                Port::Data => &pair.data,
            };
            match socket.recv_from(&mut self.recv_buf) {
                Ok((len, from)) => {
                    let from = net::canonical(from);
                    let bytes = &self.recv_buf[..len];
                    if let Err(why) = self.endpoint.handle_datagram(now, port, from, bytes) {
                        self.drops.record(now, why, from, len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here; they concern no one datagram.
                Err(e) => debug!("receive on {port:?} socket: {e}"),
            }
            // Answer as we go so a long batch does not delay replies.
            self.flush_transmits(now);
        }
        // Edge-triggered: if the batch ended with data left, ask to be told again next turn.
        let _ = ctx.reregister(event.source, Interest::READABLE);
        self.pump(ctx);
    }

    /// Runs the protocol until it has nothing more to say: timeouts, datagrams, events (which
    /// may queue more datagrams, as the hub does), then re-arms the loop's timer.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        self.endpoint.handle_timeout(now);
        self.reconnect_due(now);
        loop {
            self.flush_transmits(now);
            let Some((id, event)) = self.endpoint.poll_event() else {
                break;
            };
            self.on_session_event(now, id, event);
        }
        let deadline = self
            .endpoint
            .poll_timeout()
            .into_iter()
            .chain(self.clients.iter().filter_map(|c| c.retry_at))
            .min();
        match deadline {
            Some(at) => ctx.set_timer(TimerId::Protocol, to_std_time(self.origin, at)),
            None => {
                ctx.cancel_timer(&TimerId::Protocol);
            }
        }
    }

    fn flush_transmits(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.send_buf) {
            let Some(pair) = self.sockets.iter().find(|p| p.reaches(&t.dst)) else {
                debug!("no socket can reach {}", t.dst);
                continue;
            };
            let socket = match t.port {
                Port::Control => &pair.control,
                Port::Data => &pair.data,
            };
            if let Err(e) = socket.send_to(&self.send_buf[..t.len], pair.wire_addr(t.dst)) {
                debug!("send to {}: {e}", t.dst);
            }
        }
    }

    fn on_session_event(&mut self, now: Instant, id: SessionId, event: Event) {
        let name = |names: &BTreeMap<SessionId, String>| {
            names.get(&id).cloned().unwrap_or_else(|| format!("{id:?}"))
        };
        match event {
            Event::Connected { name, ssrc, addr } => {
                info!("session opened: {name:?} at {addr} (SSRC {ssrc:08X})");
                self.names.insert(id, name);
                if let Some(client) = self.clients.iter_mut().find(|c| c.session == Some(id)) {
                    client.backoff = RECONNECT_MIN;
                }
            }
            Event::Midi(midi) => {
                trace!("MIDI from {}: {:?}", name(&self.names), midi.message);
                if self.hub {
                    self.forward(now, id, midi.message);
                }
            }
            Event::Latency { rtt, offset_ticks } => {
                // The first measurement of a session at info level, the rest at debug.
                let first = self.synced.insert(id);
                self.ops.latency.insert(id, rtt);
                log!(
                    if first { Level::Info } else { Level::Debug },
                    "clock sync with {}: round trip {:.2} ms, offset {} ticks",
                    name(&self.names),
                    rtt.as_secs_f64() * 1000.0,
                    offset_ticks
                );
            }
            Event::Loss { lost } => {
                info!("{} packet(s) from {} lost", lost, name(&self.names));
            }
            Event::Disconnected { reason } => {
                let who = name(&self.names);
                match reason {
                    DisconnectReason::Closed | DisconnectReason::PeerEnded => {
                        info!("session closed: {who}: {reason:?}")
                    }
                    _ => warn!("session closed: {who}: {reason:?}"),
                }
                self.names.remove(&id);
                self.synced.remove(&id);
                self.ops.latency.remove(&id);
                if self.signals_seen > 0 {
                    return;
                }
                if let Some(client) = self.clients.iter_mut().find(|c| c.session == Some(id)) {
                    client.session = None;
                    client.retry_at = Some(now + client.backoff);
                    info!(
                        "reconnecting to {}:{} in {:?}",
                        client.target.host, client.target.port, client.backoff
                    );
                    client.backoff = (client.backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Hub: what one session sends goes to every other connected session, never back.
    fn forward(&mut self, now: Instant, from: SessionId, message: protocol::midi::MidiMessage) {
        let targets: Vec<SessionId> = self
            .endpoint
            .sessions()
            .filter(|(id, s)| *id != from && s.is_connected())
            .map(|(id, _)| id)
            .collect();
        for id in targets {
            if let Some(session) = self.endpoint.session_mut(id) {
                session.send_midi(now, message.clone());
            }
        }
    }

    fn reconnect_due(&mut self, now: Instant) {
        for client in &mut self.clients {
            if client.session.is_some() || client.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            let target = &client.target;
            match resolve(&target.host, target.port) {
                Ok(addr) => {
                    info!("connecting to {addr}");
                    client.session = Some(self.endpoint.connect(now, addr));
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
        self.endpoint.close_all();
        self.pump(ctx);
        ctx.stop();
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

pub fn on_timer(daemon: &mut Daemon, ctx: &mut Ctx, _timer: TimerId) {
    daemon.pump(ctx);
}

pub fn on_signal(daemon: &mut Daemon, ctx: &mut Ctx, signal: Signal) {
    match signal {
        Signal::SIGHUP => daemon.reload(ctx, "SIGHUP"),
        Signal::SIGINT | Signal::SIGTERM => daemon.on_shutdown_signal(ctx, signal),
        other => error!("unexpected signal {other:?}"),
    }
}
