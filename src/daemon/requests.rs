//! What the control socket asks of the daemon, answered in the control protocol's own types:
//! the engine answers status, peers, connect and disconnect; here are what only the shell has
//! (the process, its uptime, the ALSA bridge for export) and the loop run after.
use std::time::Instant as StdInstant;

use reactor::Context;

use super::{Ctx, Daemon, TimerId};
use crate::control::{self, Server};
use crate::ctl::proto::{Reply, Request, Status};
use crate::seq::SeqAddr;

impl control::Handler for Daemon {
    type Timer = TimerId;

    fn control_server(&mut self) -> Option<&mut Server> {
        self.control.as_mut()
    }

    fn handle(&mut self, ctx: &mut Context<Self, TimerId>, request: Request) -> Reply {
        let done = match request {
            Request::Status => return Reply::Status(self.status()),
            Request::Peers => return Reply::Peers(self.engine.peers()),
            Request::Connect(target) => {
                let done = self.engine.connect(self.now(ctx), target);
                self.pump_if_done(ctx, done).map(Reply::Connecting)
            }
            Request::Disconnect(who) => {
                let done = self.engine.disconnect(self.now(ctx), who);
                self.pump_if_done(ctx, done).map(Reply::Disconnected)
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
        let known = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime: StdInstant::now().saturating_duration_since(self.started),
            alsa: self.bridge.is_some(),
            config: self
                .reload_from
                .as_ref()
                .and_then(|(_, p)| p.as_ref())
                .map(|p| p.display().to_string()),
            // The engine's: the settings' names and port, and the counts.
            ..Status::default()
        };
        self.engine.status(known)
    }

    /// What a request changed is carried out, if it did.
    fn pump_if_done<T>(&mut self, ctx: &mut Ctx, done: Result<T, String>) -> Result<T, String> {
        if done.is_ok() {
            self.pump(ctx);
        }
        done
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
        let before = self.engine.export_name(addr);
        self.handle_alsa(self.now(ctx), &mut actions);
        let after = self.engine.export_name(addr);
        self.pump(ctx);
        done.map_err(|e| format!("cannot {verb} {addr}: {e}"))?;
        Ok(after.or(before).unwrap_or_else(|| addr.to_string()))
    }
}
