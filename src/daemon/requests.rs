//! What the control socket asks of the daemon: status, peers, connect, disconnect, export,
//! answered in the control protocol's own types.
use std::time::Instant as StdInstant;

use reactor::Context;

use super::{Ctx, Daemon, TimerId};
use crate::answers;
use crate::control::{self, Server};
use crate::ctl::proto::{PeerId, PeerRow, Reply, Request, Status, Who};
use crate::options::ConnectTarget;
use crate::router::{target_label, ListenerId};
use crate::seq::SeqAddr;
use crate::sessions::Sessions;

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
        let s = &self.settings;
        let known = Status {
            name: s.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            alsa_name: s.alsa_name.clone(),
            pid: std::process::id(),
            port: s.port,
            uptime: StdInstant::now().saturating_duration_since(self.started),
            alsa: self.bridge.is_some(),
            config: self
                .reload_from
                .as_ref()
                .and_then(|(_, p)| p.as_ref())
                .map(|p| p.display().to_string()),
            // The counts are `answers::status`'s.
            ..Status::default()
        };
        answers::status(known, &self.router, &self.sessions())
    }

    fn peers(&self) -> Vec<PeerRow> {
        answers::peers(&self.router, &self.sessions(), &self.latency)
    }

    /// Each listener's sessions, for `answers`.
    fn sessions(&self) -> Vec<(ListenerId, &dyn Sessions)> {
        self.listeners
            .iter()
            .map(|(id, l)| (*id, l.sessions()))
            .collect()
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

    /// Ends a session; if it serves a connection, the connection goes too.
    fn disconnect_id(&mut self, ctx: &mut Ctx, id: PeerId) -> Result<String, String> {
        let missing = || format!("no session with id {id}");
        let key = answers::session_key(id, self.listeners.keys().copied()).ok_or_else(missing)?;
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
            None if peer_name.is_empty() => answers::peer_id(key).to_string(),
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
