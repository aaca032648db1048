//! What the control socket asks of the daemon: status, peers, connect, disconnect, export,
//! answered in the control protocol's own types.
use std::time::Instant as StdInstant;

use protocol::endpoint::SessionId;
use reactor::Context;

use super::{Ctx, Daemon, TimerId};
use crate::control::{self, Server};
use crate::ctl::proto::{Dropped, PeerId, PeerRow, Reply, Request, Status, Who};
use crate::options::ConnectTarget;
use crate::router::{target_label, ListenerKind, Origin, SessionKey};
use crate::seq::SeqAddr;

/// The main listener is the router's first, slot 0; the others show their slot.
const MAIN_SLOT: u32 = 0;

fn peer_id(key: SessionKey) -> PeerId {
    PeerId {
        listener: Some(key.listener.index()).filter(|l| *l != MAIN_SLOT),
        session: key.session.0,
    }
}

impl control::Handler for Daemon {
    type Timer = TimerId;

    fn control_server(&mut self) -> Option<&mut Server> {
        self.control.as_mut()
    }

    fn handle(&mut self, ctx: &mut Context<Self, TimerId>, request: Request) -> Reply {
        let done = match request {
            Request::Status => return Reply::Status(self.status()),
            Request::Peers => return Reply::Peers(self.peers()),
            Request::Connect(target) => self.connect_peer(ctx, target).map(Reply::Connecting),
            Request::Disconnect(Who::Id(id)) => {
                self.disconnect_id(ctx, id).map(Reply::Disconnected)
            }
            Request::Disconnect(Who::Name(name)) => {
                self.disconnect_name(ctx, &name).map(Reply::Disconnected)
            }
            Request::Export(port) => self
                .export_local(ctx, port, true)
                .map(|name| Reply::Exported { name, port }),
            Request::Unexport(port) => self
                .export_local(ctx, port, false)
                .map(|name| Reply::Unexported { name, port }),
        };
        done.unwrap_or_else(Reply::Error)
    }
}

impl Daemon {
    fn status(&self) -> Status {
        let rows: Vec<PeerRow> = self
            .listeners
            .values()
            .flat_map(|l| l.sessions().rows())
            .map(|(_, r)| r)
            .collect();
        let s = &self.settings;
        Status {
            name: s.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            alsa_name: s.alsa_name.clone(),
            pid: std::process::id(),
            port: s.port,
            uptime: StdInstant::now().saturating_duration_since(self.started),
            sessions: rows.len() as u64,
            connected: rows.iter().filter(|r| r.state == "connected").count() as u64,
            connections: self
                .router
                .connections()
                .filter(|(_, c)| c.origin == Origin::Configured)
                .count() as u64,
            exports: self
                .listeners
                .keys()
                .filter(|id| self.is_export(**id))
                .count() as u64,
            hub: self.router.hub(),
            alsa: self.bridge.is_some(),
            config: self
                .reload_from
                .as_ref()
                .and_then(|(_, p)| p.as_ref())
                .map(|p| p.display().to_string()),
            dropped: self.listeners.values().fold(Dropped::default(), |sum, l| {
                let d = l.sessions().drops();
                Dropped {
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
            .is_some_and(|l| matches!(l.kind, ListenerKind::Export(_)))
    }

    fn peers(&self) -> Vec<PeerRow> {
        let mut peers = Vec::new();
        for (&listener, l) in &self.listeners {
            for (session, mut row) in l.sessions().rows() {
                let key = SessionKey { listener, session };
                row.id = Some(peer_id(key));
                row.connection = self
                    .router
                    .connection_of(key)
                    .and_then(|c| self.router.connection(c))
                    .map(|c| c.label());
                row.latency = self.latency.get(&key).copied();
                peers.push(row);
            }
        }
        // Connections without a session: ours, and discovered peers (which have a port).
        peers.extend(
            self.router
                .connections()
                .filter(|(_, c)| c.session.is_none())
                .map(|(_, c)| PeerRow {
                    id: None,
                    name: String::new(),
                    connection: Some(c.label()),
                    address: format!("{}:{}", c.target.host, c.target.port),
                    // With ALSA, a connection connects while something subscribes to its port.
                    state: if c.wanted { "waiting" } else { "unused" }.into(),
                    role: "initiator".into(),
                    protocol: if c.target.midi2 { "midi2" } else { "rtp-midi" }.into(),
                    latency: None,
                    sent: 0,
                    received: 0,
                    lost: 0,
                    journal_repairs: 0,
                }),
        );
        peers
    }

    /// Adds a connection kept until `disconnect`; returns its name.
    fn connect_peer(&mut self, ctx: &mut Ctx, target: ConnectTarget) -> Result<String, String> {
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
        let slot = id.listener.unwrap_or(MAIN_SLOT);
        let listener = self.listeners.keys().find(|l| l.index() == slot)?;
        Some(SessionKey {
            listener: *listener,
            session: SessionId(id.session),
        })
    }

    /// Ends a session; if it serves a connection, the connection goes too.
    fn disconnect_id(&mut self, ctx: &mut Ctx, id: PeerId) -> Result<String, String> {
        let missing = || format!("no session with id {id}");
        let key = self.session_key(id).ok_or_else(missing)?;
        let now = self.now(ctx);
        let peer_name = self
            .listeners
            .get_mut(&key.listener)
            .and_then(|l| l.sessions_mut().close(now, key.session))
            .ok_or_else(missing)?;
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
            None if peer_name.is_empty() => peer_id(key).to_string(),
            None => peer_name,
        };
        self.pump(ctx);
        Ok(name)
    }

    /// Ends a connection by its name, or the sessions of peers of that name.
    fn disconnect_name(&mut self, ctx: &mut Ctx, name: &str) -> Result<String, String> {
        if let Some(c) = self.router.configured(name) {
            self.router.remove_connection(c);
            self.pump(ctx);
            return Ok(name.to_string());
        }
        let now = self.now(ctx);
        let mut found = false;
        for listener in self.listeners.values_mut() {
            found |= listener.sessions_mut().close_named(now, name);
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
    fn export_local(&mut self, ctx: &mut Ctx, addr: SeqAddr, on: bool) -> Result<String, String> {
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
