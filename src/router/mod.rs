//! The daemon's policy, without I/O: which endpoints exist (listeners and their sessions,
//! connections we keep to peers, discovered peers, the ALSA ports that stand for peers, the
//! local ports exported through `Network`) and the rules between them. The shell in `daemon/`
//! tells it what happened (a session came up or went, a port was subscribed, a peer was
//! discovered, the configuration changed) and does what it answers with [`Action`]s; MIDI is
//! routed with [`Router::route`]. Time is an argument; nothing here reads a clock.
//!
//! The rules:
//! - one ALSA port per peer, whoever started the session: a session a known peer (a
//!   connection, a discovered peer) starts with us shares that peer's port;
//! - a connection's session runs while its port is subscribed (lazy connect), always with
//!   `keep`, and always without ALSA; it reconnects with back-off;
//! - a session replaced by its restarted peer parks its port, which the peer takes back when
//!   it returns within [`PARK_TIME`];
//! - a discovered peer gone from mDNS keeps its port for [`GONE_GRACE`];
//! - a local port connected to `Network` is exported as a listener of its own, whose
//!   sessions exchange MIDI with that port only;
//! - the hub forwards what a session of a hub listener (the main one, the MIDI 2.0 host) sends
//!   to every session of every hub listener but the sender; between hubs each event carries a
//!   tag and a copy that comes back over another path is dropped ([`Router::admit`]);
//! - two daemons connected to each other both ways keep one session;
//! - a peer discovered under both protocols gets one port, its RTP-MIDI one;
//! - a raw MIDI device (`[rawmidi]`) that is there has a listener of its own whose sessions
//!   exchange MIDI with it only, and with a host a connection kept from that listener to the
//!   peer; the device is open while one of those sessions is up; when it goes, they end.
//!
//! A listener is a protocol's session server; the router does not know which protocol, so a
//! second one plugs in as listeners of another [`ListenerKind`] flavour.
mod arena;
mod lookups;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use log::{debug, info, warn};
use protocol::endpoint::SessionId;
use protocol::hubtag::{Seen, Tag};
use protocol::time::{Duration, Instant};

use arena::Arena;
pub use arena::Id;
pub use lookups::Lookups;

use crate::options::{ConnectTarget, DEFAULT_MIDI2_PORT};
use crate::seq::SeqAddr;

pub const RECONNECT_MIN: Duration = Duration::from_secs(1);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long the port of a session that gave way to a restarted peer waits for it.
pub const PARK_TIME: Duration = Duration::from_secs(5);
/// How long a discovered peer that said goodbye (or whose records expired) keeps its port:
/// peers often re-announce at once when they restart.
pub const GONE_GRACE: Duration = Duration::from_secs(10);

pub type ListenerId = Id<Listener>;
pub type ConnectionId = Id<Connection>;
pub type PeerPortId = Id<PeerPort>;
pub type DeviceId = Id<Device>;

/// A session anywhere: the listener it lives on and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub listener: ListenerId,
    pub session: SessionId,
}

/// What kind of session server a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// The main port: its sessions get ALSA ports, meet connections and discovered peers, and
    /// form the hub.
    Main,
    /// A `[listener NAME]`: its sessions get ALSA ports of their own.
    Extra,
    /// A local ALSA port connected to `Network`, offered to the network: its sessions speak
    /// with that port only.
    Export(SeqAddr),
    /// The Network MIDI 2.0 host: like the main port for its protocol (ports, connections,
    /// the hub, which joins it to the main port's sessions).
    Midi2,
    /// A raw MIDI device's: its sessions speak with that device only.
    Device(DeviceId),
}

impl ListenerKind {
    /// Its sessions get ALSA ports of their own (or their connection's).
    fn ports(self) -> bool {
        matches!(
            self,
            ListenerKind::Main | ListenerKind::Extra | ListenerKind::Midi2
        )
    }

    /// Connections and discovered peers of its protocol live here; its sessions form the hub.
    fn shared(self) -> bool {
        matches!(self, ListenerKind::Main | ListenerKind::Midi2)
    }
}

pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
}

/// Where a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line, the file or `ctl connect`: `disconnect` and reloads may remove it.
    Configured,
    /// Found by mDNS; `gone_until` while it is away.
    Discovered { gone_until: Option<Instant> },
    /// A `[rawmidi]` section's, kept from its device's listener while the device is there.
    Device(DeviceId),
}

/// A peer we keep a session with while it is wanted, reconnecting with back-off.
pub struct Connection {
    pub target: ConnectTarget,
    pub origin: Origin,
    /// Its peer's address once known (an IP target, or what the name resolved to).
    pub addr: Option<IpAddr>,
    pub port: Option<PeerPortId>,
    /// Our session with the peer, from the moment the shell started it.
    pub session: Option<SessionKey>,
    /// The shell is starting a session for it ([`Action::Connect`] not answered yet).
    pub opening: bool,
    /// A session the peer started with our main listener: it shares this connection's port.
    pub accepted: Option<SessionKey>,
    /// Kept connected whatever is subscribed to its port.
    pub keep: bool,
    pub wanted: bool,
    pub retry_at: Option<Instant>,
    pub backoff: Duration,
}

impl Connection {
    /// The name it goes by: the target's name, else its address.
    pub fn label(&self) -> String {
        target_label(&self.target)
    }
}

/// An IPv6 address goes in brackets, as `ctl connect` takes it, so the port stays apart.
pub fn target_label(target: &ConnectTarget) -> String {
    let (host, port) = (&target.host, target.port);
    match &target.name {
        Some(name) => name.clone(),
        None if host.contains(':') => format!("[{host}]:{port}"),
        None => format!("{host}:{port}"),
    }
}

/// An ALSA port of ours that stands for a peer.
pub struct PeerPort {
    owner: PortOwner,
    subscribed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortOwner {
    Session(SessionKey),
    Connection(ConnectionId),
    /// Left by a replaced session, for its peer (`name` at `ip`) to take back until the
    /// deadline.
    Parked {
        until: Instant,
        name: String,
        ip: IpAddr,
    },
}

/// A `[rawmidi NAME]` device as the rules see it: there or not, used or not.
pub struct Device {
    pub name: String,
    /// Its listener's UDP port (`None`: the next free pair).
    port: Option<u16>,
    /// The peer it is connected to; `None`: offered to the network as session `name`.
    target: Option<ConnectTarget>,
    /// Its listener, while the device is there.
    listener: Option<ListenerId>,
    connection: Option<ConnectionId>,
    /// The shell was asked to open it ([`Action::OpenDevice`]).
    open: bool,
}

/// A session that is up.
struct Peer {
    name: String,
    ip: IpAddr,
    /// The port its MIDI goes to and comes from: its own, or its connection's.
    port: Option<PeerPortId>,
    /// The connection it serves or shares the port of.
    connection: Option<ConnectionId>,
}

/// What the router asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create an ALSA port named `name` for peer port `port`.
    CreatePort {
        port: PeerPortId,
        name: String,
    },
    DeletePort(PeerPortId),
    /// Start a session to the target on the main listener, then tell
    /// [`Router::connecting`] its key (or [`Router::connect_failed`]).
    Connect {
        connection: ConnectionId,
        listener: ListenerId,
        target: ConnectTarget,
    },
    /// End a session (BY).
    Close(SessionKey),
    /// Open a listener on UDP port `port` (`None`: the next free pair), then announce it.
    OpenListener {
        listener: ListenerId,
        name: String,
        port: Option<u16>,
    },
    /// End its sessions and close its sockets; its sessions' ports are deleted already.
    CloseListener(ListenerId),
    /// Announce the listener under its name by mDNS.
    Announce(ListenerId),
    Withdraw(ListenerId),
    /// Open the raw MIDI device (a session uses it), or tell [`Router::device_present`] it
    /// is not there.
    OpenDevice(DeviceId),
    /// Close it: no session uses it any more.
    CloseDevice(DeviceId),
}

/// Where MIDI comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Session(SessionKey),
    /// Written to a peer's ALSA port.
    Port(PeerPortId),
    /// Sent to `Network` by an exported local port.
    Network(SeqAddr),
    /// Read from a raw MIDI device.
    Device(DeviceId),
}

/// Where MIDI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Session(SessionKey),
    /// Every connected session of a listener but `except`.
    Listener {
        listener: ListenerId,
        except: Option<SessionKey>,
    },
    Port(PeerPortId),
    /// To this exported local port, through `Network`.
    Local(SeqAddr),
    /// Written to a raw MIDI device.
    Device(DeviceId),
}

/// How a session ended, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its restarted peer invited us again: the port waits for the new session.
    Replaced,
    Other,
}

pub struct Router {
    name: String,
    alsa: bool,
    hub: bool,
    /// Shutting down: nothing reconnects.
    stopping: bool,
    main: ListenerId,
    /// The Network MIDI 2.0 host, when it runs.
    midi2: Option<ListenerId>,
    listeners: Arena<Listener>,
    connections: Arena<Connection>,
    ports: Arena<PeerPort>,
    devices: Arena<Device>,
    peers: BTreeMap<SessionKey, Peer>,
    actions: VecDeque<Action>,
    /// This daemon as the origin of events in a hub topology, its next event number, and the
    /// events of every origin handled (`protocol::hubtag`).
    origin: u32,
    next_event: u32,
    seen: Seen,
}

impl Router {
    /// `name`: our session name, which exports are named after; `alsa`: ports exist;
    /// `origin`: a number no other hub of the network has (a random one).
    pub fn new(name: &str, alsa: bool, hub: bool, origin: u32) -> Router {
        let mut listeners = Arena::default();
        let main = listeners.insert(Listener {
            name: name.to_string(),
            kind: ListenerKind::Main,
        });
        Router {
            name: name.to_string(),
            alsa,
            hub,
            stopping: false,
            main,
            midi2: None,
            listeners,
            connections: Arena::default(),
            ports: Arena::default(),
            devices: Arena::default(),
            peers: BTreeMap::new(),
            actions: VecDeque::new(),
            origin,
            next_event: 0,
            seen: Seen::default(),
        }
    }

    pub fn main(&self) -> ListenerId {
        self.main
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
        if let Some(main) = self.listeners.get_mut(self.main) {
            main.name = name.to_string();
        }
    }

    pub fn set_hub(&mut self, on: bool) {
        self.hub = on;
    }

    pub fn hub(&self) -> bool {
        self.hub
    }

    pub fn listener(&self, id: ListenerId) -> Option<&Listener> {
        self.listeners.get(id)
    }

    pub fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.get(id)
    }

    pub fn connections(&self) -> impl Iterator<Item = (ConnectionId, &Connection)> {
        self.connections.iter()
    }

    /// The connection whose own session `key` is.
    pub fn connection_of(&self, key: SessionKey) -> Option<ConnectionId> {
        self.connections
            .iter()
            .find(|(_, c)| c.session == Some(key))
            .map(|(id, _)| id)
    }

    /// A configured connection by its label.
    pub fn configured(&self, label: &str) -> Option<ConnectionId> {
        self.connections
            .iter()
            .find(|(_, c)| c.origin == Origin::Configured && c.label() == label)
            .map(|(id, _)| id)
    }

    // ----- listeners

    /// The Network MIDI 2.0 host on `port` (`None`: the default, given up with a warning if
    /// taken), opened and announced.
    pub fn add_midi2_listener(&mut self, port: Option<u16>) -> ListenerId {
        let id = self.listeners.insert(Listener {
            name: self.name.clone(),
            kind: ListenerKind::Midi2,
        });
        self.midi2 = Some(id);
        self.actions.push_back(Action::OpenListener {
            listener: id,
            name: self.name.clone(),
            port,
        });
        self.actions.push_back(Action::Announce(id));
        id
    }

    /// A `[listener NAME]` on `port`, opened and announced.
    pub fn add_listener(&mut self, name: &str, port: u16) -> ListenerId {
        let id = self.listeners.insert(Listener {
            name: name.to_string(),
            kind: ListenerKind::Extra,
        });
        self.actions.push_back(Action::OpenListener {
            listener: id,
            name: name.to_string(),
            port: Some(port),
        });
        self.actions.push_back(Action::Announce(id));
        id
    }

    /// Closes a listener other than the main one: its sessions' ports go, it is withdrawn.
    pub fn remove_listener(&mut self, id: ListenerId) {
        if id == self.main || self.listeners.remove(id).is_none() {
            return;
        }
        if self.midi2 == Some(id) {
            self.midi2 = None;
        }
        let keys: Vec<SessionKey> = self
            .peers
            .keys()
            .filter(|k| k.listener == id)
            .copied()
            .collect();
        for key in keys {
            self.forget_session(key);
        }
        self.actions.push_back(Action::Withdraw(id));
        self.actions.push_back(Action::CloseListener(id));
    }

    /// The extra listener named `name`.
    pub fn extra_listener(&self, name: &str) -> Option<ListenerId> {
        self.listeners
            .iter()
            .find(|(_, l)| l.kind == ListenerKind::Extra && l.name == name)
            .map(|(id, _)| id)
    }

    /// The shell could not open listener `id` named `name` on `port` (`None`: its default one)
    /// for `why`: it is gone ([`Router::listener_failed`]). The error is worth stopping for,
    /// except for the default MIDI 2.0 port, which may be another daemon's: a warning then.
    pub fn open_failed(
        &mut self,
        id: ListenerId,
        name: &str,
        port: Option<u16>,
        why: &str,
    ) -> Result<(), String> {
        let midi2 = self.midi2 == Some(id);
        self.listener_failed(id);
        if midi2 && port.is_none() {
            warn!("no Network MIDI 2.0 host: UDP port {DEFAULT_MIDI2_PORT}: {why}");
            return Ok(());
        }
        let port = port.map_or_else(
            || "a free UDP port".to_string(),
            |p| format!("UDP port {p}"),
        );
        Err(format!("{name:?}: cannot open {port}: {why}"))
    }

    /// The shell could not open listener `id` (its port is taken): it is gone.
    pub fn listener_failed(&mut self, id: ListenerId) {
        if id != self.main {
            self.listeners.remove(id);
            if self.midi2 == Some(id) {
                self.midi2 = None;
            }
            self.actions
                .retain(|a| *a != Action::Announce(id) && *a != Action::Withdraw(id));
            // A device waits to be plugged in again.
            let device = self
                .devices
                .iter()
                .find(|(_, d)| d.listener == Some(id))
                .map(|(d, _)| d);
            if let Some(d) = device.and_then(|d| self.devices.get_mut(d)) {
                d.listener = None;
                if let Some(c) = d.connection.take() {
                    self.remove_connection(c);
                }
            }
        }
    }

    /// A local port's connections to `Network` began (`on`) or all went. `name`: what to call
    /// it (an `[export NAME]` section's name, else its ALSA names after ours); `port`: the
    /// section's UDP port.
    pub fn export_changed(
        &mut self,
        local: SeqAddr,
        name: &str,
        section: bool,
        port: Option<u16>,
        on: bool,
    ) {
        let existing = self
            .listeners
            .iter()
            .find(|(_, l)| l.kind == ListenerKind::Export(local))
            .map(|(id, _)| id);
        match (on, existing) {
            (true, None) => {
                let base = if section {
                    name.to_string()
                } else {
                    format!("{} {name}", self.name)
                };
                let unique = self.unique_listener_name(&base);
                // The section's port goes to the first port it exports; more get free pairs.
                let port = port.filter(|_| unique == base);
                info!("exporting ALSA port {local} as {unique:?}");
                let id = self.listeners.insert(Listener {
                    name: unique.clone(),
                    kind: ListenerKind::Export(local),
                });
                self.actions.push_back(Action::OpenListener {
                    listener: id,
                    name: unique,
                    port,
                });
                self.actions.push_back(Action::Announce(id));
            }
            (false, Some(id)) => {
                info!("no longer exporting {local}");
                self.remove_listener(id);
            }
            _ => {}
        }
    }

    /// The listener that exports `local`.
    pub fn export_of(&self, local: SeqAddr) -> Option<ListenerId> {
        self.listeners
            .iter()
            .find(|(_, l)| l.kind == ListenerKind::Export(local))
            .map(|(id, _)| id)
    }

    fn unique_listener_name(&self, base: &str) -> String {
        let taken = |n: &str| self.listeners.iter().any(|(_, l)| l.name == n);
        let mut unique = base.to_string();
        let mut n = 2;
        while taken(&unique) {
            unique = format!("{base} ({n})");
            n += 1;
        }
        unique
    }

    // ----- raw MIDI devices

    /// A `[rawmidi NAME]` device: nothing happens until [`Router::device_present`] says it is
    /// there. `port`: its listener's; `target`: the peer to connect to, else it is offered to
    /// the network.
    pub fn add_device(
        &mut self,
        name: &str,
        port: Option<u16>,
        target: Option<ConnectTarget>,
    ) -> DeviceId {
        self.devices.insert(Device {
            name: name.to_string(),
            port,
            target,
            listener: None,
            connection: None,
            open: false,
        })
    }

    /// The device appeared (`present`), or it went or failed: it gets its listener (and
    /// connection) or loses them, which ends their sessions.
    pub fn device_present(&mut self, now: Instant, id: DeviceId, present: bool) {
        let Some(d) = self.devices.get(id) else {
            return;
        };
        match (present, d.listener) {
            (true, None) => {
                let (name, port, target) = (d.name.clone(), d.port, d.target.clone());
                info!("raw MIDI device {name:?} is there");
                let listener = self.listeners.insert(Listener {
                    name: name.clone(),
                    kind: ListenerKind::Device(id),
                });
                self.actions.push_back(Action::OpenListener {
                    listener,
                    name,
                    port,
                });
                let connection = match target {
                    None => {
                        self.actions.push_back(Action::Announce(listener));
                        None
                    }
                    // Kept connected while the device is there; no ALSA port stands for it.
                    Some(target) => {
                        let c = self.insert_connection(target, Origin::Device(id), true);
                        self.set_wanted(now, c, false);
                        Some(c)
                    }
                };
                let d = self.devices.get_mut(id).expect("found above");
                d.listener = Some(listener);
                d.connection = connection;
            }
            (false, Some(listener)) => {
                info!("raw MIDI device {:?} is gone: its sessions end", d.name);
                let d = self.devices.get_mut(id).expect("found above");
                d.listener = None;
                if let Some(c) = d.connection.take() {
                    self.remove_connection(c);
                }
                self.remove_listener(listener);
                self.device_use(id);
            }
            _ => {}
        }
    }

    /// Opens the device when a session of its listener came up, closes it when none is left.
    fn device_use(&mut self, id: DeviceId) {
        let Some(d) = self.devices.get(id) else {
            return;
        };
        let used = d
            .listener
            .is_some_and(|l| self.peers.keys().any(|k| k.listener == l));
        if used != d.open {
            self.devices.get_mut(id).expect("found above").open = used;
            self.actions.push_back(match used {
                true => Action::OpenDevice(id),
                false => Action::CloseDevice(id),
            });
        }
    }

    // ----- connections

    /// A connection kept until removed: its port at once, its session when wanted.
    /// `keep`: wanted whatever is subscribed; `port_name`: its port's name if not its label.
    pub fn add_connection(
        &mut self,
        now: Instant,
        target: ConnectTarget,
        keep: bool,
        port_name: Option<&str>,
    ) -> ConnectionId {
        let name = port_name.map_or_else(|| target_label(&target), str::to_string);
        let id = self.insert_connection(target, Origin::Configured, keep);
        if self.alsa {
            self.new_port(PortOwner::Connection(id), &name);
        }
        self.set_wanted(now, id, false);
        id
    }

    fn insert_connection(
        &mut self,
        target: ConnectTarget,
        origin: Origin,
        keep: bool,
    ) -> ConnectionId {
        let addr = host_ip(&target.host);
        self.connections.insert(Connection {
            target,
            origin,
            addr,
            port: None,
            session: None,
            opening: false,
            accepted: None,
            keep,
            wanted: false,
            retry_at: None,
            backoff: RECONNECT_MIN,
        })
    }

    /// Removes a connection: its session ends, its port goes (a session the peer started
    /// keeps going without a port of its own until it ends).
    pub fn remove_connection(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(id) else {
            return;
        };
        if let Some(key) = connection.session {
            self.actions.push_back(Action::Close(key));
        }
        for key in [connection.session, connection.accepted]
            .into_iter()
            .flatten()
        {
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.port = None;
                peer.connection = None;
            }
        }
        if let Some(port) = connection.port {
            self.delete_port(port);
        }
    }

    /// Whether the connection should have a session: its port is subscribed (`subscribed`),
    /// it is kept, or there is no ALSA to subscribe.
    fn set_wanted(&mut self, now: Instant, id: ConnectionId, subscribed: bool) {
        let alsa = self.alsa;
        let Some(c) = self.connections.get_mut(id) else {
            return;
        };
        let wanted = subscribed || c.keep || !alsa;
        c.wanted = wanted;
        if wanted {
            c.backoff = RECONNECT_MIN;
            if c.session.is_none() && !c.opening {
                c.retry_at = Some(now);
            }
        } else {
            c.retry_at = None;
            if let Some(key) = c.session.take() {
                info!(
                    "nothing is connected to {}:{} any more: closing its session",
                    c.target.host, c.target.port
                );
                self.actions.push_back(Action::Close(key));
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.connection = None;
                    peer.port = None;
                }
            }
        }
    }

    /// The shell started the session `key` for connection `id` (after resolving its host to
    /// `ip`).
    pub fn connecting(&mut self, id: ConnectionId, key: SessionKey, ip: IpAddr) {
        match self.connections.get_mut(id) {
            Some(c) if c.wanted && c.opening => {
                c.opening = false;
                c.session = Some(key);
                c.addr = Some(ip);
            }
            // Unwanted or removed meanwhile.
            _ => self.actions.push_back(Action::Close(key)),
        }
    }

    /// The shell could not start a session for connection `id` (its host did not resolve):
    /// try again after the back-off.
    pub fn connect_failed(&mut self, now: Instant, id: ConnectionId) {
        if let Some(c) = self.connections.get_mut(id) {
            c.opening = false;
            if c.wanted {
                c.retry_at = Some(now + c.backoff);
                c.backoff = (c.backoff * 2).min(RECONNECT_MAX);
            }
        }
    }

    // ----- discovery

    /// A peer found by mDNS (or its address changed). With ALSA it gets a port and connects
    /// while the port is subscribed, like a `--connect` target.
    pub fn discovered(&mut self, now: Instant, name: &str, target: ConnectTarget) {
        // Without ALSA no ports to connect by; without our MIDI 2.0 side no way to reach a
        // MIDI 2.0 host.
        if !self.alsa || (target.midi2 && self.midi2.is_none()) {
            return;
        }
        let known = self.connections.iter_mut().find(|(_, c)| {
            matches!(c.origin, Origin::Discovered { .. })
                && c.target.name.as_deref() == Some(name)
                && c.target.midi2 == target.midi2
        });
        if let Some((_, c)) = known {
            c.addr = host_ip(&target.host);
            c.target = target;
            c.origin = Origin::Discovered { gone_until: None };
            return;
        }
        let ip = host_ip(&target.host);
        // A peer that offers both protocols under one name (rtpmidid does) gets one port, its
        // RTP-MIDI one: the protocol every peer of ours speaks.
        let other = self
            .connections
            .iter()
            .find(|(_, c)| {
                matches!(c.origin, Origin::Discovered { .. })
                    && c.target.name.as_deref() == Some(name)
                    && c.target.midi2 != target.midi2
                    && c.addr.map(|a| a.to_canonical()) == ip.map(|a| a.to_canonical())
            })
            .map(|(id, _)| id);
        match other {
            Some(_) if target.midi2 => return,
            Some(midi2) => self.remove_connection(midi2),
            None => {}
        }
        let main = if target.midi2 {
            self.midi2.unwrap_or(self.main)
        } else {
            self.main
        };
        let id = self.insert_connection(target, Origin::Discovered { gone_until: None }, false);
        // A session the peer started with us before it was discovered: its port becomes the
        // discovered peer's.
        let live = self.peers.iter_mut().find(|(key, p)| {
            key.listener == main
                && p.connection.is_none()
                && p.port.is_some()
                && p.name == name
                && ip.is_some_and(|ip| same_ip(ip, p.ip))
        });
        match live {
            Some((&key, peer)) => {
                let port = peer.port.expect("filtered on a port");
                peer.connection = Some(id);
                info!("{name:?} was discovered: its session keeps its ALSA port");
                let subscribed = self.ports.get(port).is_some_and(|p| p.subscribed);
                if let Some(p) = self.ports.get_mut(port) {
                    p.owner = PortOwner::Connection(id);
                }
                if let Some(c) = self.connections.get_mut(id) {
                    c.port = Some(port);
                    c.accepted = Some(key);
                }
                self.set_wanted(now, id, subscribed);
            }
            None => {
                self.new_port(PortOwner::Connection(id), name);
            }
        }
    }

    /// A discovered peer (of `_midi2._udp` if `midi2`) left mDNS: its port goes after
    /// [`GONE_GRACE`] unless it returns.
    pub fn discovered_gone(&mut self, now: Instant, name: &str, midi2: bool) {
        for (_, c) in self.connections.iter_mut() {
            if c.origin == (Origin::Discovered { gone_until: None })
                && c.target.name.as_deref() == Some(name)
                && c.target.midi2 == midi2
            {
                c.origin = Origin::Discovered {
                    gone_until: Some(now + GONE_GRACE),
                };
            }
        }
    }

    fn expire_discovered(&mut self, now: Instant) {
        let expired: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| matches!(c.origin, Origin::Discovered { gone_until: Some(at) } if at <= now))
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            let Some(c) = self.connections.get(id) else {
                continue;
            };
            debug!("{} left mDNS", c.label());
            let (accepted, port) = (c.accepted, c.port);
            // The session the peer started with us is still up: the port is its now.
            if let (Some(key), Some(port)) = (accepted, port) {
                if let Some(c) = self.connections.get_mut(id) {
                    c.accepted = None;
                    c.port = None;
                }
                if let Some(p) = self.ports.get_mut(port) {
                    p.owner = PortOwner::Session(key);
                }
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.connection = None;
                }
            }
            self.remove_connection(id);
        }
    }

    // ----- sessions

    /// A session came up: it gets its port. One port per peer, whoever connected: a
    /// connection's own session uses the connection's; a session its known peer started shares
    /// it; a returning peer takes back the port its replaced session parked.
    pub fn session_up(&mut self, key: SessionKey, name: &str, ip: IpAddr) {
        self.attach(key, name, ip);
        self.merge_twins(key);
        if let Some(ListenerKind::Device(id)) = self.listener(key.listener).map(|l| l.kind) {
            self.device_use(id);
        }
    }

    fn attach(&mut self, key: SessionKey, name: &str, ip: IpAddr) {
        let mut peer = Peer {
            name: name.to_string(),
            ip,
            port: None,
            connection: None,
        };
        if let Some(id) = self.connection_of(key) {
            let c = self.connections.get_mut(id).expect("found above");
            c.backoff = RECONNECT_MIN;
            peer.port = c.port;
            peer.connection = Some(id);
            self.peers.insert(key, peer);
            return;
        }
        let kind = self.listeners.get(key.listener).map(|l| l.kind);
        if !self.alsa || !kind.is_some_and(ListenerKind::ports) {
            // Without ALSA no ports; an export's sessions speak through `Network`.
            self.peers.insert(key, peer);
            return;
        }
        if kind.is_some_and(ListenerKind::shared) {
            // The peer is known by the connection's name, or by the name its session with
            // us gave.
            let known_as = |c: &Connection| {
                c.label() == name
                    || c.session
                        .and_then(|k| self.peers.get(&k))
                        .is_some_and(|p| p.name == name)
            };
            let matching = self
                .connections
                .iter()
                .find(|(_, c)| {
                    c.port.is_some()
                        && c.accepted.is_none()
                        && known_as(c)
                        && c.addr.is_some_and(|a| same_ip(a, ip))
                })
                .map(|(id, _)| id);
            if let Some((id, c)) = matching.and_then(|id| Some((id, self.connections.get_mut(id)?)))
            {
                info!("{name:?} connected to us: its session shares the peer's ALSA port");
                c.accepted = Some(key);
                peer.port = c.port;
                peer.connection = Some(id);
                self.peers.insert(key, peer);
                return;
            }
        }
        let parked = self.ports.iter().find(|(_, p)| {
            matches!(&p.owner, PortOwner::Parked { name: n, ip: i, .. } if n == name && same_ip(*i, ip))
        });
        let port = match parked.map(|(id, _)| id) {
            Some(port) => {
                info!("{name:?} came back: it keeps its ALSA port");
                self.ports.get_mut(port).expect("found above").owner = PortOwner::Session(key);
                port
            }
            None => self.new_port(PortOwner::Session(key), name),
        };
        peer.port = Some(port);
        self.peers.insert(key, peer);
    }

    /// Two daemons that connect to each other (A `--connect`s B while B `--connect`s A) get
    /// two sessions between them; with hubs on both sides each would forward the other's MIDI
    /// back in a loop. One is kept: the one the daemon whose name sorts first started, which
    /// both sides agree on; the connection of the other side is satisfied by it and does not
    /// reconnect while it lasts. (Equal names cannot be ordered: both stay.)
    fn merge_twins(&mut self, key: SessionKey) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let (name, ip) = (peer.name.clone(), peer.ip);
        if name == self.name {
            return;
        }
        let twin = self
            .peers
            .iter()
            .find(|(k, p)| {
                **k != key && k.listener == key.listener && p.name == name && same_ip(p.ip, ip)
            })
            .map(|(k, _)| *k);
        let Some(twin) = twin else {
            return;
        };
        let (ours, theirs, id) = match (self.connection_of(key), self.connection_of(twin)) {
            (Some(id), None) => (key, twin, id),
            (None, Some(id)) => (twin, key, id),
            _ => return,
        };
        info!("{name:?} and we connected to each other: one session is kept");
        if self.name.as_str() < name.as_str() {
            self.actions.push_back(Action::Close(theirs));
            if let Some(c) = self.connections.get_mut(id) {
                c.accepted = c.accepted.filter(|k| *k != theirs);
            }
        } else {
            self.actions.push_back(Action::Close(ours));
            let port = self.connections.get_mut(id).and_then(|c| {
                c.accepted = Some(theirs);
                c.port
            });
            if let Some(p) = self.peers.get_mut(&theirs) {
                p.connection = Some(id);
                p.port = port.or(p.port);
            }
        }
    }

    /// The session the peer started with us for connection `id` is up.
    fn accepted_up(&self, c: &Connection) -> bool {
        c.accepted.is_some_and(|k| self.peers.contains_key(&k))
    }

    /// A session ended (or failed to start).
    pub fn session_down(&mut self, now: Instant, key: SessionKey, ended: Ended) {
        let peer = self.peers.remove(&key);
        if let Some(ListenerKind::Device(id)) = self.listener(key.listener).map(|l| l.kind) {
            self.device_use(id);
        }
        // A connection's session, whether it came up or not.
        if let Some(id) = self.connection_of(key) {
            let stopping = self.stopping;
            let twin_up = self
                .connections
                .get(id)
                .is_some_and(|c| self.accepted_up(c));
            let c = self.connections.get_mut(id).expect("found above");
            c.session = None;
            if c.wanted && !stopping && !twin_up {
                c.retry_at = Some(now + c.backoff);
                info!(
                    "reconnecting to {}:{} in {:?}",
                    c.target.host, c.target.port, c.backoff
                );
                c.backoff = (c.backoff * 2).min(RECONNECT_MAX);
            }
            return;
        }
        let Some(peer) = peer else {
            return;
        };
        if let Some(id) = peer.connection {
            let stopping = self.stopping;
            if let Some(c) = self.connections.get_mut(id) {
                if c.accepted == Some(key) {
                    c.accepted = None; // the port is the connection's: it stays
                                       // It stood in for our own session: ours comes back.
                    if c.wanted && c.session.is_none() && !c.opening && !stopping {
                        c.retry_at = Some(now);
                    }
                }
            }
            return;
        }
        let Some(port) = peer.port else {
            return;
        };
        match ended {
            Ended::Replaced => {
                if let Some(p) = self.ports.get_mut(port) {
                    p.owner = PortOwner::Parked {
                        until: now + PARK_TIME,
                        name: peer.name,
                        ip: peer.ip,
                    };
                }
            }
            Ended::Other => self.delete_port(port),
        }
    }

    /// Forgets a session whose listener closed: its own port goes.
    fn forget_session(&mut self, key: SessionKey) {
        if let Some(peer) = self.peers.remove(&key) {
            if peer.connection.is_none() {
                if let Some(port) = peer.port {
                    self.delete_port(port);
                }
            }
        }
    }

    /// SIGTERM: sessions end and nothing reconnects.
    pub fn stop(&mut self) {
        self.stopping = true;
        for (_, c) in self.connections.iter_mut() {
            c.retry_at = None;
        }
    }

    /// The peer name of a session that is up.
    pub fn peer_name(&self, key: SessionKey) -> Option<&str> {
        self.peers.get(&key).map(|p| p.name.as_str())
    }

    // ----- ALSA ports

    fn new_port(&mut self, owner: PortOwner, name: &str) -> PeerPortId {
        let port = self.ports.insert(PeerPort {
            owner: owner.clone(),
            subscribed: false,
        });
        if let PortOwner::Connection(id) = owner {
            if let Some(c) = self.connections.get_mut(id) {
                c.port = Some(port);
            }
        }
        self.actions.push_back(Action::CreatePort {
            port,
            name: name.to_string(),
        });
        port
    }

    fn delete_port(&mut self, port: PeerPortId) {
        if self.ports.remove(port).is_some() {
            self.actions.push_back(Action::DeletePort(port));
        }
    }

    /// The shell could not create the port: nothing stands for it.
    pub fn port_failed(&mut self, port: PeerPortId) {
        self.ports.remove(port);
        for (_, c) in self.connections.iter_mut() {
            if c.port == Some(port) {
                c.port = None;
            }
        }
        for peer in self.peers.values_mut() {
            if peer.port == Some(port) {
                peer.port = None;
            }
        }
    }

    /// The first subscription to a peer port appeared (`on`) or the last one went: a
    /// connection's session follows it.
    pub fn port_subscribed(&mut self, now: Instant, port: PeerPortId, on: bool) {
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        p.subscribed = on;
        if let PortOwner::Connection(id) = p.owner {
            self.set_wanted(now, id, on);
        }
    }

    // ----- time

    /// Reconnections due, parked ports and departed discovered peers expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.retry_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id)
            .collect();
        for id in due {
            let twin_up = self
                .connections
                .get(id)
                .is_some_and(|c| self.accepted_up(c));
            let c = self.connections.get_mut(id).expect("listed above");
            c.retry_at = None;
            if c.wanted && c.session.is_none() && !c.opening && !self.stopping && !twin_up {
                c.opening = true;
                let listener = match c.origin {
                    // There while the device is: so is its connection.
                    Origin::Device(d) => self.devices.get(d).and_then(|d| d.listener),
                    _ if c.target.midi2 => self.midi2,
                    _ => Some(self.main),
                };
                match listener {
                    Some(listener) => self.actions.push_back(Action::Connect {
                        connection: id,
                        listener,
                        target: c.target.clone(),
                    }),
                    None => {
                        c.opening = false;
                        warn!("{}: Network MIDI 2.0 is off (--no-midi2)", c.label());
                    }
                }
            }
        }
        let parked: Vec<PeerPortId> = self
            .ports
            .iter()
            .filter(|(_, p)| matches!(p.owner, PortOwner::Parked { until, .. } if until <= now))
            .map(|(id, _)| id)
            .collect();
        for port in parked {
            self.delete_port(port);
        }
        self.expire_discovered(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = self.connections.iter().filter_map(|(_, c)| c.retry_at);
        let gone = self.connections.iter().filter_map(|(_, c)| match c.origin {
            Origin::Discovered { gone_until } => gone_until,
            Origin::Configured | Origin::Device(_) => None,
        });
        let parked = self.ports.iter().filter_map(|(_, p)| match p.owner {
            PortOwner::Parked { until, .. } => Some(until),
            _ => None,
        });
        retries.chain(gone).chain(parked).min()
    }

    // ----- MIDI

    /// An event arrived (`tag`: what the hub it came from called it): the tag it travels on
    /// with, or `None` for a copy that reached us over another path of a hub topology with
    /// cycles, to be dropped (it was handled when the first copy came). An untagged event
    /// enters the topology here and gets a tag of ours.
    pub fn admit(&mut self, tag: Option<Tag>) -> Option<Tag> {
        let tag = tag.unwrap_or_else(|| {
            self.next_event = self.next_event.wrapping_add(1);
            Tag {
                origin: self.origin,
                seq: self.next_event,
            }
        });
        self.seen.first(tag).then_some(tag)
    }

    /// Where MIDI from `from` goes, into `out` (cleared first).
    pub fn route(&self, from: Source, out: &mut Vec<Dest>) {
        out.clear();
        match from {
            Source::Session(key) => {
                let kind = self.listeners.get(key.listener).map(|l| l.kind);
                match kind {
                    Some(ListenerKind::Export(local)) => out.push(Dest::Local(local)),
                    Some(ListenerKind::Device(id)) => out.push(Dest::Device(id)),
                    Some(_) => {
                        if let Some(port) = self.peers.get(&key).and_then(|p| p.port) {
                            out.push(Dest::Port(port));
                        }
                    }
                    None => return,
                }
                if self.hub && kind.is_some_and(ListenerKind::shared) {
                    // Every protocol's shared listener: the hub bridges them.
                    for listener in [Some(self.main), self.midi2].into_iter().flatten() {
                        out.push(Dest::Listener {
                            listener,
                            except: Some(key).filter(|k| k.listener == listener),
                        });
                    }
                }
            }
            Source::Port(port) => match self.ports.get(port).map(|p| &p.owner) {
                Some(PortOwner::Session(key)) => out.push(Dest::Session(*key)),
                Some(PortOwner::Connection(id)) => {
                    // Our session with the peer if it is up, else the one it started.
                    let c = self
                        .connections
                        .get(*id)
                        .expect("ports and connections agree");
                    let up = [c.session, c.accepted]
                        .into_iter()
                        .flatten()
                        .find(|key| self.peers.contains_key(key));
                    if let Some(key) = up {
                        out.push(Dest::Session(key));
                    }
                }
                Some(PortOwner::Parked { .. }) | None => {}
            },
            Source::Network(local) => {
                if let Some(listener) = self.export_of(local) {
                    out.push(Dest::Listener {
                        listener,
                        except: None,
                    });
                }
            }
            Source::Device(id) => {
                if let Some(listener) = self.devices.get(id).and_then(|d| d.listener) {
                    out.push(Dest::Listener {
                        listener,
                        except: None,
                    });
                }
            }
        }
    }
}

/// The address in a target's host, if it is one (an IPv6 scope after `%` is not part of it).
fn host_ip(host: &str) -> Option<IpAddr> {
    host.split('%').next()?.parse().ok()
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
