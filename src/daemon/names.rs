//! Names in the shell: connections' hosts looked up (the engine keeps which connection each
//! lookup is for and starts its session once it is done), our listeners announced as the
//! engine says, and the peers mDNS finds handed to it (it applies the `[mdns]` filters).
use log::warn;
use protocol::time::Instant;

use super::{Ctx, Daemon};
use crate::mdns::{Discovery, PeerEvent};
use crate::options::ConnectTarget;
use crate::router::{ConnectionId, ListenerId};

impl Daemon {
    /// Starts mDNS and announces the listeners.
    pub(super) fn start_mdns(&mut self, ctx: &mut Ctx) {
        let seed = self.clock.0.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let now = self.now(ctx);
        let settings = &self.engine.settings().mdns;
        self.names.start_mdns(ctx, now, settings, seed, on_mdns);
        let ids: Vec<ListenerId> = self.engine.listener_ids().collect();
        for id in ids {
            self.announce(now, id);
        }
    }

    /// Announces listener `id` under its name on its port.
    pub(super) fn announce(&mut self, now: Instant, id: ListenerId) {
        let Some(what) = self.engine.announcement(id) else {
            return;
        };
        match self.sockets.port(id) {
            Some(port) => self.names.announce(now, id.index(), what, port),
            None => warn!("mDNS: cannot announce {:?}: no local port", what.0),
        }
    }

    /// Starts a session for `connection` once `target`'s host is looked up.
    pub(super) fn look_up(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        listener: ListenerId,
        target: &ConnectTarget,
    ) {
        let id = self.names.lookup(now, &target.host, target.port);
        self.engine.looking_up(id, connection, listener);
        self.names_events(now);
    }

    /// Finished lookups and discovered peers, to the engine.
    pub(super) fn names_events(&mut self, now: Instant) {
        let names = &mut self.names;
        self.engine.forget_unwanted_lookups(|id| names.cancel(id));
        names.handle_timeout(now);
        while let Some(done) = names.poll_done() {
            let stats = || names.stats();
            self.engine.looked_up(now, (done.id, done.result), stats);
        }
        while let Some(Discovery { midi2, event }) = names.poll_discovery() {
            match event {
                PeerEvent::Appeared { name, addr } | PeerEvent::Changed { name, addr } => {
                    self.engine.discovered(now, &name, addr, midi2)
                }
                PeerEvent::Gone { name } => self.engine.router.discovered_gone(now, &name, midi2),
            }
        }
    }
}

pub(super) fn on_resolver(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let now = daemon.now(ctx);
    daemon.names.read_resolver(ctx, now, event);
    daemon.pump(ctx);
}

fn on_mdns(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let now = daemon.now(ctx);
    daemon.names.read_mdns(ctx, now, event);
    daemon.pump(ctx);
}
