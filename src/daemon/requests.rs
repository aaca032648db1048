//! What the control socket asks of the daemon, answered in the control protocol's own types:
//! the engine answers status (with what only the shell knows: the process, the file read),
//! peers, connect and disconnect; the local side exports; the engine runs after.
use reactor::Context;

use super::{Daemon, TimerId};
use crate::control::{self, Server};
use crate::ctl::proto::{Reply, Request};

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
