//! The daemon's side of operations: what the control socket asks (status, peers, connect,
//! disconnect) and configuration reloads. Kept apart from the session glue in `daemon.rs`.
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
    settings: Option<config::Settings>,
    /// Round trip of each session's last CK exchange.
    pub latency: BTreeMap<SessionId, Duration>,
    started: Option<StdInstant>,
}

/// For `status`.
pub struct Status {
    pub name: String,
    pub port: u16,
    pub uptime: std::time::Duration,
    pub sessions: usize,
    pub connected: usize,
    pub connections: usize,
    pub hub: bool,
    pub alsa: bool,
    pub config: Option<PathBuf>,
    pub dropped: protocol::endpoint::DropStats,
}

/// For `peers`: a session, or a connection waiting to reconnect (`id` is `None`).
pub struct Peer {
    pub id: Option<u64>,
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
        self.endpoint.set_config(settings.session_config());
        self.ops.started = Some(ctx.now());
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

    pub fn status(&self) -> Status {
        let settings = self.ops.settings.as_ref();
        Status {
            name: settings.map_or_else(String::new, |s| s.name.clone()),
            port: settings.map_or(0, |s| s.port),
            uptime: self.ops.started.map_or_else(Default::default, |t| {
                StdInstant::now().saturating_duration_since(t)
            }),
            sessions: self.endpoint.sessions().count(),
            connected: self
                .endpoint
                .sessions()
                .filter(|(_, s)| s.is_connected())
                .count(),
            connections: self.clients.len(),
            hub: self.hub,
            alsa: self.ops.reload.as_ref().is_some_and(|(o, _)| !o.no_alsa),
            config: self.ops.reload.as_ref().and_then(|(_, p)| p.clone()),
            dropped: self.endpoint.drops(),
        }
    }

    pub fn peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .endpoint
            .sessions()
            .map(|(id, s)| Peer {
                id: Some(id.0),
                name: s.peer_name().to_string(),
                connection: self
                    .clients
                    .iter()
                    .find(|c| c.session == Some(id))
                    .map(|c| client_name(&c.target)),
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
                latency: self.ops.latency.get(&id).copied(),
                stats: s.stats(),
            })
            .collect();
        peers.extend(
            self.clients
                .iter()
                .filter(|c| c.session.is_none())
                .map(|c| Peer {
                    id: None,
                    name: String::new(),
                    connection: Some(client_name(&c.target)),
                    address: format!("{}:{}", c.target.host, c.target.port),
                    state: "waiting",
                    role: "initiator",
                    latency: None,
                    stats: session::Stats::default(),
                }),
        );
        peers
    }

    /// Adds a connection kept until `disconnect`; returns its name.
    pub fn connect_peer(&mut self, ctx: &mut Ctx, target: ConnectTarget) -> Result<String, String> {
        let name = client_name(&target);
        if self.clients.iter().any(|c| client_name(&c.target) == name) {
            return Err(format!("a connection named {name:?} exists already"));
        }
        self.clients.push(Client {
            target,
            session: None,
            retry_at: Some(Instant::ZERO),
            backoff: RECONNECT_MIN,
        });
        self.pump(ctx);
        Ok(name)
    }

    /// Ends session `id`; if it serves a connection, the connection goes too.
    pub fn disconnect_id(&mut self, ctx: &mut Ctx, id: u64) -> Result<String, String> {
        let id = SessionId(id);
        let session = self
            .endpoint
            .session_mut(id)
            .ok_or_else(|| format!("no session with id {}", id.0))?;
        session.close();
        let name = match self.clients.iter().position(|c| c.session == Some(id)) {
            Some(i) => client_name(&self.clients.remove(i).target),
            None => self
                .names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| id.0.to_string()),
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
        let ids: Vec<SessionId> = self
            .endpoint
            .sessions()
            .filter(|(_, s)| s.peer_name() == name)
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Err(format!("no connection or peer named {name:?}"));
        }
        for id in ids {
            if let Some(s) = self.endpoint.session_mut(id) {
                s.close();
            }
        }
        self.pump(ctx);
        Ok(name.to_string())
    }

    /// Drops the connection named `name` and closes its session.
    fn remove_client(&mut self, name: &str) -> bool {
        let Some(i) = self
            .clients
            .iter()
            .position(|c| client_name(&c.target) == name)
        else {
            return false;
        };
        if let Some(id) = self.clients.remove(i).session {
            if let Some(s) = self.endpoint.session_mut(id) {
                s.close();
            }
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
            self.apply(&new, action);
        }
        self.ops.settings = Some(new);
        self.pump(ctx);
    }

    fn apply(&mut self, new: &config::Settings, action: Action) {
        match action {
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
                self.clients.push(Client {
                    target: c.target(),
                    session: None,
                    retry_at: Some(Instant::ZERO),
                    backoff: RECONNECT_MIN,
                });
            }
            Action::SetHub(on) => {
                info!("reload: hub {}", if on { "on" } else { "off" });
                self.hub = on;
            }
            Action::SessionConfig => {
                info!("reload: new name, timeouts or journal setting apply to new sessions");
                self.endpoint.set_config(new.session_config());
            }
            Action::SetLogLevel(level) => {
                if std::env::var_os("RUST_LOG").is_none() {
                    log::set_max_level(level);
                }
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
