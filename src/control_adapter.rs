//! The daemon's answers to the control socket and its reload watch: `Request`s mapped to the
//! daemon's operations and their results to `Reply`s. The only module besides `daemon` that
//! knows `Daemon`; it moves into the daemon's shell when that is rewritten.
use reactor::Context;

use crate::control::{self, Server};
use crate::ctl::proto::{Dropped, PeerId, PeerRow, Reply, Request, Status, Who};
use crate::daemon::{self, parse_peer_id, peer_id, Daemon, Peer, PeerKey, TimerId};
use crate::reload::{self, Watch};

impl control::Handler for Daemon {
    type Timer = TimerId;

    fn control_server(&mut self) -> Option<&mut Server> {
        self.ops.control.as_mut()
    }

    fn handle(&mut self, ctx: &mut Context<Self, TimerId>, request: Request) -> Reply {
        let done = match request {
            Request::Status => return Reply::Status(status(self)),
            Request::Peers => return Reply::Peers(self.peers().iter().map(row).collect()),
            Request::Connect(target) => self.connect_peer(ctx, target).map(Reply::Connecting),
            Request::Disconnect(Who::Id(id)) => match parse_peer_id(&id.to_string()) {
                Some(key) => self.disconnect_id(ctx, key),
                None => Err(format!("no session with id {id}")),
            }
            .map(Reply::Disconnected),
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

impl reload::Reload for Daemon {
    type Timer = TimerId;

    fn watch(&self) -> Option<&Watch> {
        self.ops.watch.as_ref()
    }

    fn reload(&mut self, ctx: &mut Context<Self, TimerId>, why: &str) {
        Daemon::reload(self, ctx, why);
    }
}

fn status(daemon: &Daemon) -> Status {
    let s: daemon::Status = daemon.status();
    Status {
        name: s.name,
        version: env!("CARGO_PKG_VERSION").into(),
        alsa_name: s.alsa_name,
        pid: std::process::id(),
        port: s.port,
        uptime: s.uptime,
        sessions: s.sessions as u64,
        connected: s.connected as u64,
        connections: s.connections as u64,
        exports: s.exports as u64,
        hub: s.hub,
        alsa: s.alsa,
        config: s.config.map(|p| p.display().to_string()),
        dropped: Dropped {
            malformed: s.dropped.malformed,
            unknown_session: s.dropped.unknown_session,
            refused: s.dropped.refused,
        },
    }
}

fn id(key: PeerKey) -> Option<PeerId> {
    PeerId::parse(&peer_id(key))
}

fn row(p: &Peer) -> PeerRow {
    PeerRow {
        id: p.id.and_then(id),
        name: p.name.clone(),
        connection: p.connection.clone(),
        address: p.address.clone(),
        state: p.state.into(),
        role: p.role.into(),
        latency: p.latency,
        sent: p.stats.packets_sent,
        received: p.stats.packets_received,
        lost: p.stats.packets_lost,
        journal_repairs: p.stats.journal_repairs,
    }
}
