//! What the control socket asks of the daemon, answered in the control protocol's own types:
//! the engine answers status (with what only the shell knows: the process, the file read),
//! peers, connect and disconnect; here is the ALSA bridge for export, and the engine run after.
use protocol::time::Instant;
use reactor::Context;

use super::{Daemon, TimerId};
use crate::control::{self, Server};
use crate::ctl::proto::{Reply, Request};
use crate::seq::SeqAddr;

impl control::Handler for Daemon {
    type Timer = TimerId;

    fn control_server(&mut self) -> Option<&mut Server> {
        self.control.as_mut()
    }

    fn handle(&mut self, ctx: &mut Context<Self, TimerId>, request: Request) -> Reply {
        let now = self.now(ctx);
        let reply = match request {
            Request::Status => Ok(Reply::Status(self.engine.status(now, &self.about))),
            Request::Peers => Ok(Reply::Peers(self.engine.peers())),
            Request::Connect(target) => self.engine.connect(now, target).map(Reply::Connecting),
            Request::Disconnect(who) => self.engine.disconnect(now, who).map(Reply::Disconnected),
            Request::Export(port) => self
                .export_local(now, port, true)
                .map(|name| Reply::Exported { name, port }),
            Request::Unexport(port) => self
                .export_local(now, port, false)
                .map(|name| Reply::Unexported { name, port }),
        };
        // What the request changed is carried out.
        self.pump(ctx);
        reply.unwrap_or_else(Reply::Error)
    }
}

impl Daemon {
    /// `ctl export` (`on`) and `ctl unexport`: connects local port `addr` to the Network
    /// port both ways, or removes those connections; the export follows as for anyone's
    /// connections. Returns the name the export is announced under.
    fn export_local(&mut self, now: Instant, addr: SeqAddr, on: bool) -> Result<String, String> {
        let verb = if on { "export" } else { "unexport" };
        let Some(bridge) = self.local.bridge.as_mut() else {
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
        let name = self.engine.exported(now, addr, actions, &mut self.local);
        done.map_err(|e| format!("cannot {verb} {addr}: {e}"))?;
        Ok(name)
    }
}
