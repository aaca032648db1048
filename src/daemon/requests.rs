//! What the control socket asks of the daemon: status, peers, connect, disconnect, export.
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use protocol::endpoint::{DropStats, SessionId};
use protocol::session;
use protocol::time::Duration;

use super::{Ctx, Daemon};
use crate::cli::ConnectTarget;
use crate::router::{target_label, Origin, SessionKey};
use crate::seq::SeqAddr;

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
    pub dropped: DropStats,
}

/// For `peers`: a session, or a connection without one (`id` is `None`).
pub struct Peer {
    pub id: Option<SessionKey>,
    pub name: String,
    /// The name of the configured or requested connection this session serves.
    pub connection: Option<String>,
    pub address: String,
    pub state: &'static str,
    pub role: &'static str,
    pub latency: Option<Duration>,
    pub stats: session::Stats,
}

/// A session as `ctl` names it: the session number on the main listener, `L.S` on others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerId {
    pub listener: u32,
    pub session: u64,
}

/// The main listener is the router's first, slot 0.
const MAIN_SLOT: u32 = 0;

pub fn peer_id(key: SessionKey) -> String {
    match key.listener.index() {
        MAIN_SLOT => key.session.0.to_string(),
        l => format!("{l}.{}", key.session.0),
    }
}

/// The inverse of [`peer_id`].
pub fn parse_peer_id(text: &str) -> Option<PeerId> {
    let (listener, session) = match text.split_once('.') {
        Some((l, s)) => (l.parse().ok()?, s.parse().ok()?),
        None => (MAIN_SLOT, text.parse().ok()?),
    };
    Some(PeerId { listener, session })
}

impl Daemon {
    pub fn status(&self) -> Status {
        let sessions = || self.listeners.values().flat_map(|l| l.endpoint.sessions());
        let s = &self.settings;
        Status {
            name: s.name.clone(),
            alsa_name: s.alsa_name.clone(),
            port: s.port,
            uptime: StdInstant::now().saturating_duration_since(self.started),
            sessions: sessions().count(),
            connected: sessions().filter(|(_, s)| s.is_connected()).count(),
            connections: self
                .router
                .connections()
                .filter(|(_, c)| c.origin == Origin::Configured)
                .count(),
            exports: self
                .listeners
                .keys()
                .filter(|id| self.is_export(**id))
                .count(),
            hub: self.router.hub(),
            alsa: self.bridge.is_some(),
            config: self.reload_from.as_ref().and_then(|(_, p)| p.clone()),
            dropped: self.listeners.values().fold(Default::default(), |sum, l| {
                let d = l.endpoint.drops();
                DropStats {
                    malformed: sum.malformed + d.malformed,
                    unknown_session: sum.unknown_session + d.unknown_session,
                    refused: sum.refused + d.refused,
                }
            }),
        }
    }

    fn is_export(&self, id: crate::router::ListenerId) -> bool {
        self.router
            .listener(id)
            .is_some_and(|l| matches!(l.kind, crate::router::ListenerKind::Export(_)))
    }

    pub fn peers(&self) -> Vec<Peer> {
        let mut peers = Vec::new();
        for (&listener, l) in &self.listeners {
            for (session, s) in l.endpoint.sessions() {
                let key = SessionKey { listener, session };
                peers.push(Peer {
                    id: Some(key),
                    name: s.peer_name().to_string(),
                    connection: self
                        .router
                        .connection_of(key)
                        .and_then(|c| self.router.connection(c))
                        .map(|c| c.label()),
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
                    latency: self.latency.get(&key).copied(),
                    stats: s.stats(),
                });
            }
        }
        // Connections without a session: ours, and discovered peers (which have a port).
        peers.extend(
            self.router
                .connections()
                .filter(|(_, c)| c.session.is_none())
                .map(|(_, c)| Peer {
                    id: None,
                    name: String::new(),
                    connection: Some(c.label()),
                    address: format!("{}:{}", c.target.host, c.target.port),
                    // With ALSA, a connection connects while something subscribes to its port.
                    state: if c.wanted { "waiting" } else { "unused" },
                    role: "initiator",
                    latency: None,
                    stats: session::Stats::default(),
                }),
        );
        peers
    }

    /// Adds a connection kept until `disconnect`; returns its name.
    pub fn connect_peer(&mut self, ctx: &mut Ctx, target: ConnectTarget) -> Result<String, String> {
        let name = target_label(&target);
        if self.router.configured(&name).is_some() {
            return Err(format!("a connection named {name:?} exists already"));
        }
        // Asked for by hand: it connects now, whether ALSA ports subscribe or not.
        let now = self.now(ctx);
        self.router.add_connection(now, target, true, None);
        self.pump(ctx);
        Ok(name)
    }

    fn session_key(&self, id: PeerId) -> Option<SessionKey> {
        let listener = self.listeners.keys().find(|l| l.index() == id.listener)?;
        Some(SessionKey {
            listener: *listener,
            session: SessionId(id.session),
        })
    }

    /// Ends a session; if it serves a connection, the connection goes too.
    pub fn disconnect_id(&mut self, ctx: &mut Ctx, id: PeerId) -> Result<String, String> {
        let missing = || format!("no session with id {}", text_of(id));
        let key = self.session_key(id).ok_or_else(missing)?;
        let session = self
            .listeners
            .get_mut(&key.listener)
            .and_then(|l| l.endpoint.session_mut(key.session))
            .ok_or_else(missing)?;
        session.close();
        let peer_name = session.peer_name().to_string();
        let name = match self.router.connection_of(key) {
            Some(c) => {
                let name = self
                    .router
                    .connection(c)
                    .map(|c| c.label())
                    .unwrap_or_default();
                self.router.remove_connection(c);
                name
            }
            None if peer_name.is_empty() => peer_id(key),
            None => peer_name,
        };
        self.pump(ctx);
        Ok(name)
    }

    /// Ends a connection by its name, or the sessions of peers of that name.
    pub fn disconnect_name(&mut self, ctx: &mut Ctx, name: &str) -> Result<String, String> {
        if let Some(c) = self.router.configured(name) {
            self.router.remove_connection(c);
            self.pump(ctx);
            return Ok(name.to_string());
        }
        let mut found = false;
        for listener in self.listeners.values_mut() {
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
        let export_name = |d: &Daemon| {
            d.router
                .export_of(addr)
                .and_then(|id| d.router.listener(id))
                .map(|l| l.name.clone())
        };
        let before = export_name(self);
        let now = self.now(ctx);
        for action in actions {
            self.on_bridge_action(now, action);
        }
        let after = export_name(self);
        self.pump(ctx);
        done.map_err(|e| format!("cannot {verb} {addr}: {e}"))?;
        Ok(after.or(before).unwrap_or_else(|| addr.to_string()))
    }
}

fn text_of(id: PeerId) -> String {
    match id.listener {
        MAIN_SLOT => id.session.to_string(),
        l => format!("{l}.{}", id.session),
    }
}
