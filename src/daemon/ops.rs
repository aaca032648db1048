//! The daemon's side of operations: what the control socket asks (status, peers, connect,
//! disconnect) and configuration reloads. Kept apart from the session glue in `daemon.rs`.
use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::cli::Options;
use crate::config::{self, Action};

/// State of the control socket, the reload watch and the figures only they show.
#[derive(Default)]
pub struct Ops {
    pub control: Option<crate::control::Server>,
    pub watch: Option<crate::reload::Watch>,
    /// The command line and the file the running settings came from, to reload.
    reload: Option<(Options, Option<PathBuf>)>,
    pub settings: Option<config::Settings>,
    /// Round trip of each session's last CK exchange.
    pub latency: BTreeMap<PeerKey, Duration>,
    /// Clients from the command line, the file or `ctl connect`: the ones `disconnect` and
    /// reloads may remove. (The others stand for peers found by mDNS.)
    managed: BTreeSet<usize>,
    /// Clients removed by `disconnect` or a reload. They keep their slot: the bridge and the
    /// mDNS slots know clients by index.
    removed: BTreeSet<usize>,
    started: Option<StdInstant>,
}

/// For `status`.
pub struct Status {
    pub name: String,
    pub alsa_name: String,
    pub port: u16,
    pub uptime: std::time::Duration,
    pub sessions: usize,
    pub connected: usize,
    pub connections: usize,
    pub exports: usize,
    pub hub: bool,
    pub alsa: bool,
    pub config: Option<PathBuf>,
    pub dropped: protocol::endpoint::DropStats,
}

/// For `peers`: a session, or a connection without one (`id` is `None`).
pub struct Peer {
    pub id: Option<PeerKey>,
    pub name: String,
    /// The name of the configured or requested connection this session serves.
    pub connection: Option<String>,
    pub address: String,
    pub state: &'static str,
    pub role: &'static str,
    pub latency: Option<Duration>,
    pub stats: session::Stats,
}

fn client_name(target: &ConnectTarget) -> String {
    target
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", target.host, target.port))
}

/// A session's id as `ctl` shows it: the session number on the main listener, `L.S` on the
/// listener of an exported port.
pub fn peer_id(key: PeerKey) -> String {
    if key.listener == MAIN {
        key.session.0.to_string()
    } else {
        format!("{}.{}", key.listener, key.session.0)
    }
}

/// The inverse of [`peer_id`].
pub fn parse_peer_id(text: &str) -> Option<PeerKey> {
    let (listener, session) = match text.split_once('.') {
        Some((l, s)) => (l.parse().ok()?, s.parse().ok()?),
        None => (MAIN, text.parse().ok()?),
    };
    Some(PeerKey {
        listener,
        session: SessionId(session),
    })
}

impl Daemon {
    /// Before [`Daemon::start`]: applies the file's session settings and opens the control
    /// socket and the file watch. A control socket asked for explicitly must open; the default
    /// one may fail (no /run/rtpmidid for an ordinary user) with a warning.
    pub fn start_ops(
        &mut self,
        ctx: &mut Ctx,
        options: Options,
        path: Option<PathBuf>,
        settings: config::Settings,
        control_required: bool,
    ) -> Result<(), String> {
        self.set_session_config(&settings);
        // The clients are the file's and the command line's connections, in order: each gets
        // its own keep_connected and ALSA port name.
        for (index, c) in settings.connect.iter().enumerate() {
            if let Some(client) = self.clients.get_mut(index) {
                client.keep = c.keep_connected.unwrap_or(false);
                client.wanted = client.keep || self.bridge.is_none();
                client.retry_at = client.wanted.then_some(Instant::ZERO);
            }
            if let (Some(bridge), Some(name)) = (self.bridge.as_mut(), &c.local_port) {
                bridge.remove_peer(PortKey::Client(index));
                bridge
                    .add_peer(PortKey::Client(index), name)
                    .map_err(|e| format!("cannot create the ALSA port {name:?}: {e}"))?;
            }
        }
        if let Some(bridge) = self.bridge.as_mut() {
            for e in &settings.exports {
                let how = crate::bridge::ExportAs {
                    name: e.name.clone(),
                    port: e.port,
                };
                bridge
                    .add_export_section(crate::bridge::PortMatch::parse(&e.alsa_port), how)
                    .map_err(|e| format!("cannot watch ALSA ports for [export]: {e}"))?;
            }
        } else {
            for e in &settings.exports {
                warn!("[export {}] ignored: the daemon runs without ALSA", e.name);
            }
            if settings.export_auto.is_some() {
                warn!("export_auto ignored: the daemon runs without ALSA");
            }
        }
        for l in &settings.listeners {
            let config = session::Config {
                name: l.name.clone(),
                ..settings.session_config()
            };
            self.add_listener(&l.name, l.port, config).map_err(|e| {
                format!(
                    "[listener {}]: cannot open UDP port {}: {e}",
                    l.name, l.port
                )
            })?;
        }
        self.ops.started = Some(ctx.now());
        self.ops.managed = (0..self.clients.len()).collect();
        match crate::control::Server::start(&settings.control, ctx) {
            Ok(server) => self.ops.control = Some(server),
            Err(e) if control_required => {
                return Err(format!(
                    "cannot open the control socket {}: {e}",
                    settings.control.display()
                ))
            }
            Err(e) => warn!(
                "no control socket: cannot open {}: {e} (set one with --control)",
                settings.control.display()
            ),
        }
        if let Some(path) = &path {
            match crate::reload::Watch::start(path, ctx) {
                Ok(watch) => self.ops.watch = Some(watch),
                Err(e) => warn!("cannot watch {} for changes: {e}", path.display()),
            }
        }
        self.ops.reload = Some((options, path));
        self.ops.settings = Some(settings);
        Ok(())
    }

    /// The file's session settings (timeouts, journal) under another name.
    pub(super) fn session_config_for(&self, name: &str) -> session::Config {
        match &self.ops.settings {
            Some(s) => session::Config {
                name: name.to_string(),
                ..s.session_config()
            },
            None => session_config(name),
        }
    }

    /// Name, timeouts and journal switch for new sessions of every listener (the others keep
    /// their names).
    fn set_session_config(&mut self, settings: &config::Settings) {
        for l in &mut self.listeners {
            let name = if l.id == MAIN {
                settings.name.clone()
            } else {
                l.name.clone()
            };
            l.endpoint.set_config(session::Config {
                name,
                ..settings.session_config()
            });
        }
    }

    /// The `[mdns]` include and exclude filters pass this discovered service name.
    pub fn admits_peer(&self, name: &str) -> bool {
        self.ops
            .settings
            .as_ref()
            .is_none_or(|s| s.mdns.admits(name))
    }

    pub fn status(&self) -> Status {
        let settings = self.ops.settings.as_ref();
        let sessions = || self.listeners.iter().flat_map(|l| l.endpoint.sessions());
        Status {
            name: settings.map_or_else(String::new, |s| s.name.clone()),
            alsa_name: settings.map_or_else(String::new, |s| s.alsa_name.clone()),
            port: settings.map_or(0, |s| s.port),
            uptime: self.ops.started.map_or_else(Default::default, |t| {
                StdInstant::now().saturating_duration_since(t)
            }),
            sessions: sessions().count(),
            connected: sessions().filter(|(_, s)| s.is_connected()).count(),
            connections: self.live_clients().count(),
            exports: self.listeners.iter().filter(|l| l.export.is_some()).count(),
            hub: self.hub,
            alsa: self.bridge.is_some(),
            config: self.ops.reload.as_ref().and_then(|(_, p)| p.clone()),
            dropped: self.listeners.iter().fold(Default::default(), |sum, l| {
                let d = l.endpoint.drops();
                protocol::endpoint::DropStats {
                    malformed: sum.malformed + d.malformed,
                    unknown_session: sum.unknown_session + d.unknown_session,
                    refused: sum.refused + d.refused,
                }
            }),
        }
    }

    pub fn peers(&self) -> Vec<Peer> {
        let mut peers = Vec::new();
        for listener in &self.listeners {
            for (id, s) in listener.endpoint.sessions() {
                let key = PeerKey {
                    listener: listener.id,
                    session: id,
                };
                peers.push(Peer {
                    id: Some(key),
                    name: s.peer_name().to_string(),
                    connection: self
                        .client_of(key)
                        .map(|i| client_name(&self.clients[i].target)),
                    address: s.peer_control().to_string(),
                    state: match (s.is_connected(), s.role()) {
                        (true, _) => "connected",
                        (false, session::Role::Initiator) => "inviting",
                        (false, session::Role::Responder) => "accepting",
                    },
                    role: match s.role() {
                        session::Role::Initiator => "initiator",
                        session::Role::Responder => "responder",
                    },
                    latency: self.ops.latency.get(&key).copied(),
                    stats: s.stats(),
                });
            }
        }
        // Clients without a session: ours, and discovered peers that have an ALSA port.
        let listed = |i: usize| {
            self.ops.managed.contains(&i)
                || self
                    .bridge
                    .as_ref()
                    .is_some_and(|b| b.port_of(PortKey::Client(i)).is_some())
        };
        peers.extend(
            self.clients
                .iter()
                .enumerate()
                .filter(|(i, c)| c.session.is_none() && !self.ops.removed.contains(i) && listed(*i))
                .map(|(_, c)| Peer {
                    id: None,
                    name: String::new(),
                    connection: Some(client_name(&c.target)),
                    address: format!("{}:{}", c.target.host, c.target.port),
                    // With ALSA, a client connects while something subscribes to its port.
                    state: if c.wanted { "waiting" } else { "unused" },
                    role: "initiator",
                    latency: None,
                    stats: session::Stats::default(),
                }),
        );
        peers
    }

    /// Our clients not removed, with their index.
    fn live_clients(&self) -> impl Iterator<Item = (usize, &Client)> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(i, _)| self.ops.managed.contains(i) && !self.ops.removed.contains(i))
    }

    fn client_index(&self, name: &str) -> Option<usize> {
        self.live_clients()
            .find(|(_, c)| client_name(&c.target) == name)
            .map(|(i, _)| i)
    }

    /// Adds a client (and its ALSA port). `keep`: it connects at once and stays connected,
    /// whatever is subscribed to its port (always so without ALSA).
    /// `port_name`: its ALSA port's name if not the connection's.
    fn add_client(&mut self, target: ConnectTarget, keep: bool, port_name: Option<&str>) {
        let wanted = keep || self.bridge.is_none();
        let index = self.clients.len();
        if let Some(bridge) = self.bridge.as_mut() {
            let name = port_name.map_or_else(|| client_name(&target), str::to_string);
            if let Err(e) = bridge.add_peer(PortKey::Client(index), &name) {
                warn!("cannot create an ALSA port {name:?}: {e}");
            }
        }
        let mut client = Client::new(target, keep);
        client.wanted = wanted;
        client.retry_at = wanted.then_some(Instant::ZERO);
        self.clients.push(client);
        self.ops.managed.insert(index);
    }

    /// Adds a connection kept until `disconnect`; returns its name.
    pub fn connect_peer(&mut self, ctx: &mut Ctx, target: ConnectTarget) -> Result<String, String> {
        let name = client_name(&target);
        if self.client_index(&name).is_some() {
            return Err(format!("a connection named {name:?} exists already"));
        }
        // Asked for by hand: it connects now, whether ALSA ports subscribe or not.
        self.add_client(target, true, None);
        self.pump(ctx);
        Ok(name)
    }

    /// Ends a session; if it serves a connection, the connection goes too.
    pub fn disconnect_id(&mut self, ctx: &mut Ctx, key: PeerKey) -> Result<String, String> {
        let session = self
            .listeners
            .iter_mut()
            .find(|l| l.id == key.listener)
            .and_then(|l| l.endpoint.session_mut(key.session))
            .ok_or_else(|| format!("no session with id {}", peer_id(key)))?;
        session.close();
        let name = match self.client_of(key) {
            Some(i) => {
                let name = client_name(&self.clients[i].target);
                self.remove_client(&name);
                name
            }
            None => self
                .peers
                .get(&key)
                .map_or_else(|| peer_id(key), |p| p.name.clone()),
        };
        self.pump(ctx);
        Ok(name)
    }

    /// Ends a connection by its name, or the sessions of peers of that name.
    pub fn disconnect_name(&mut self, ctx: &mut Ctx, name: &str) -> Result<String, String> {
        if self.remove_client(name) {
            self.pump(ctx);
            return Ok(name.to_string());
        }
        let mut found = false;
        for listener in &mut self.listeners {
            for (_, s) in listener.endpoint.sessions_mut() {
                if s.peer_name() == name {
                    s.close();
                    found = true;
                }
            }
        }
        if !found {
            return Err(format!("no connection or peer named {name:?}"));
        }
        self.pump(ctx);
        Ok(name.to_string())
    }

    /// `ctl export` (`on`) and `ctl unexport`: connects local port `addr` to the Network
    /// port both ways, or removes those connections; the export follows as for anyone's
    /// connections. Returns the name the export is announced under.
    pub fn export_local(
        &mut self,
        ctx: &mut Ctx,
        addr: SeqAddr,
        on: bool,
    ) -> Result<String, String> {
        let verb = if on { "export" } else { "unexport" };
        let Some(bridge) = self.bridge.as_mut() else {
            return Err(format!(
                "cannot {verb} {addr}: the daemon runs without ALSA (--no-alsa)"
            ));
        };
        let mut actions = Vec::new();
        let done = if on {
            bridge.export(addr, &mut actions)
        } else {
            bridge.unexport(addr, &mut actions)
        };
        // Before the error: a half-made export is still started or ended.
        let name = self
            .listeners
            .iter()
            .find(|l| l.export == Some(addr))
            .map(|l| l.name.clone());
        let now = self.now(ctx);
        for action in actions {
            self.on_bridge_action(ctx, now, action);
        }
        self.pump(ctx);
        done.map_err(|e| format!("cannot {verb} {addr}: {e}"))?;
        let exported = self.listeners.iter().find(|l| l.export == Some(addr));
        Ok(exported
            .map(|l| l.name.clone())
            .or(name)
            .unwrap_or_else(|| addr.to_string()))
    }

    /// Drops the connection named `name`, its ALSA port and its session.
    fn remove_client(&mut self, name: &str) -> bool {
        let Some(i) = self.client_index(name) else {
            return false;
        };
        self.ops.removed.insert(i);
        let client = &mut self.clients[i];
        client.wanted = false;
        client.retry_at = None;
        if let Some(id) = client.session.take() {
            let main = self.listeners.iter_mut().find(|l| l.id == MAIN);
            if let Some(s) = main.and_then(|l| l.endpoint.session_mut(id)) {
                s.close();
            }
        }
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.remove_peer(PortKey::Client(i));
        }
        true
    }

    /// Reads the configuration file again and applies what changed; a broken file changes
    /// nothing.
    pub fn reload(&mut self, ctx: &mut Ctx, why: &str) {
        let Some((options, Some(path))) = &self.ops.reload else {
            info!("{why}: no configuration file to reload");
            return;
        };
        let file = match config::read(path) {
            Ok(file) => file,
            Err(e) => {
                error!("{why}: configuration refused, the running one stays: {e}");
                return;
            }
        };
        let Some(old) = self.ops.settings.take() else {
            return;
        };
        let new = config::resolve(options, &file, config::hostname);
        let actions = config::diff(&old, &new);
        if actions.is_empty() {
            info!("{why}: configuration unchanged");
        } else {
            info!("{why}: configuration reloaded, {} change(s)", actions.len());
        }
        for action in actions {
            self.apply(ctx, &new, action);
        }
        self.ops.settings = Some(new);
        self.pump(ctx);
    }

    fn apply(&mut self, ctx: &mut Ctx, new: &config::Settings, action: Action) {
        match action {
            Action::RemoveListener(name) => {
                info!("reload: closing [listener {name}]");
                let index = self
                    .listeners
                    .iter()
                    .position(|l| l.id != MAIN && l.export.is_none() && l.name == name);
                if let Some(index) = index {
                    let now = self.now(ctx);
                    self.remove_listener(ctx, now, index);
                }
            }
            Action::AddListener(l) => {
                info!(
                    "reload: opening [listener {}] on UDP port {}",
                    l.name, l.port
                );
                let config = session::Config {
                    name: l.name.clone(),
                    ..new.session_config()
                };
                if let Err(e) = self.open_listener(ctx, &l.name, l.port, config) {
                    error!(
                        "reload: [listener {}]: cannot open UDP port {}: {e}",
                        l.name, l.port
                    );
                }
            }
            Action::Disconnect(name) => {
                info!("reload: closing connection {name:?}");
                self.remove_client(&name);
            }
            Action::Connect(c) => {
                info!(
                    "reload: new connection {:?} to {}:{}",
                    c.name, c.host, c.port
                );
                // A connection of that name made over the control socket gives way.
                self.remove_client(&c.name);
                // Like --connect: with ALSA, wanted once something subscribes to its port,
                // unless kept connected.
                let keep = c.keep_connected.unwrap_or(false);
                self.add_client(c.target(), keep, c.local_port.as_deref());
            }
            Action::SetHub(on) => {
                info!("reload: hub {}", if on { "on" } else { "off" });
                self.hub = on;
            }
            Action::SessionConfig => {
                info!("reload: new name, timeouts or journal setting apply to new sessions");
                self.set_session_config(new);
            }
            Action::SetLogLevel(level) => {
                if std::env::var_os("RUST_LOG").is_none() {
                    log::set_max_level(level);
                }
            }
            Action::PeerFilter => {
                info!("reload: new [mdns] filters apply to peers discovered from now on")
            }
            Action::Bridge(what) => {
                warn!("reload: {what} changed; it takes effect at the next start")
            }
            Action::NeedsRestart(what) => {
                warn!("reload: {what} changed; restart rtpmidid to apply it")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::fake::FakeSequencer;

    fn target(name: &str, port: u16) -> ConnectTarget {
        ConnectTarget {
            name: Some(name.into()),
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// A daemon on loopback with a fake sequencer and two `--connect` targets.
    fn daemon() -> Daemon {
        let connect = vec![target("a", 9), target("b", 11)];
        for port in (47_300..47_400).step_by(2) {
            let settings = Settings {
                name: "t".into(),
                port,
                bind: vec![IpAddr::from([127, 0, 0, 1])],
                connect: connect.clone(),
                hub: false,
                mdns: None,
                playout_delay: None,
                export_auto: None,
                keep_connected: false,
            };
            let fake: Box<dyn Sequencer> = Box::new(FakeSequencer::new().unwrap());
            if let Ok(d) = Daemon::new(settings, Some(fake), 1) {
                return d;
            }
        }
        panic!("no free port pair");
    }

    fn port_of(d: &Daemon, index: usize) -> bool {
        d.bridge
            .as_ref()
            .is_some_and(|b| b.port_of(PortKey::Client(index)).is_some())
    }

    #[test]
    fn clients_come_and_go_without_moving_the_others_ports() {
        let mut d = daemon();
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        let ctx = reactor.context();
        d.ops.managed = (0..d.clients.len()).collect();
        assert!(port_of(&d, 0) && port_of(&d, 1));

        assert_eq!(d.disconnect_name(ctx, "a"), Ok("a".into()));
        assert!(
            !port_of(&d, 0) && port_of(&d, 1),
            "b keeps its port and index"
        );
        assert!(d.disconnect_name(ctx, "a").is_err(), "gone");
        let names: Vec<_> = d.peers().into_iter().filter_map(|p| p.connection).collect();
        assert_eq!(names, ["b"]);

        // A new one gets a new slot and port, and is invited at once.
        assert_eq!(d.connect_peer(ctx, target("c", 13)), Ok("c".into()));
        assert!(port_of(&d, 2));
        assert!(
            d.connect_peer(ctx, target("c", 15)).is_err(),
            "names are unique"
        );
        assert_eq!(d.status().connections, 2);
        assert!(d.clients[2].session.is_some());

        // A reload that drops b and adds a again.
        let Ok(crate::cli::Command::Run(options)) = crate::cli::parse(&[]) else {
            panic!("no options");
        };
        let new = config::resolve(&options, &config::File::default(), || "t".into());
        d.apply(ctx, &new, Action::Disconnect("b".into()));
        d.apply(
            ctx,
            &new,
            Action::Connect(config::Connection {
                name: "a".into(),
                host: "127.0.0.1".into(),
                port: 9,
                local_port: None,
                keep_connected: Some(false),
            }),
        );
        assert!(!port_of(&d, 1) && port_of(&d, 3));
        let mut names: Vec<_> = d.peers().into_iter().filter_map(|p| p.connection).collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
        // With ALSA, a configured connection waits for a subscriber to its port.
        assert!(!d.clients[3].wanted);
    }

    #[test]
    fn reloads_open_and_close_listeners() {
        let mut d = daemon();
        let mut reactor = reactor::Reactor::new(on_timer).unwrap();
        let ctx = reactor.context();
        let Ok(crate::cli::Command::Run(options)) = crate::cli::parse(&[]) else {
            panic!("no options");
        };
        let new = config::resolve(&options, &config::File::default(), || "t".into());
        let port = d.settings.port + 30;
        let drums = config::Listener {
            name: "drums".into(),
            port,
        };
        d.apply(ctx, &new, Action::AddListener(drums));
        let l = d.listeners.iter().find(|l| l.name == "drums").unwrap();
        assert_eq!(l.sockets[0].control.local_addr().unwrap().port(), port);
        assert_eq!(l.sources.len(), 2, "control and data registered");
        let bound = || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        assert!(!bound());

        d.apply(ctx, &new, Action::RemoveListener("drums".into()));
        assert!(d.listeners.iter().all(|l| l.name != "drums"));
        assert_eq!(d.listeners.len(), 1, "the main listener stays");
        assert!(bound(), "its port is free again");
        // Removing one that is not there changes nothing.
        d.apply(ctx, &new, Action::RemoveListener("t".into()));
        assert_eq!(d.listeners.len(), 1);
    }

    #[test]
    fn peer_ids_round_trip() {
        for (listener, session, text) in [(MAIN, 7, "7"), (2, 3, "2.3")] {
            let key = PeerKey {
                listener,
                session: SessionId(session),
            };
            assert_eq!(peer_id(key), text);
            assert_eq!(parse_peer_id(text), Some(key));
        }
        assert_eq!(parse_peer_id("x"), None);
        assert_eq!(parse_peer_id("1.x"), None);
    }
}
