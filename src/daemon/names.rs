//! Connections' host names looked up without blocking the loop (`crate::resolver`); the engine
//! keeps which connection each lookup is for and starts its session once it is done.
use protocol::time::Instant;
use reactor::Interest;

use super::{Ctx, Daemon};
use crate::options::ConnectTarget;
use crate::resolver::{self, Resolver};
use crate::router::{ConnectionId, ListenerId};

impl Daemon {
    pub(super) fn start_resolver(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let resolver = Resolver::new(resolver::Config::default(), self.seed.rotate_left(17))
            .map_err(|e| format!("cannot open the resolver's socket: {e}"))?;
        resolver
            .register(ctx, on_resolver)
            .map_err(|e| format!("cannot watch the resolver's socket: {e}"))?;
        self.resolver = Some(resolver);
        Ok(())
    }

    /// Starts a session for `connection` once `target`'s host is looked up.
    pub(super) fn look_up(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        listener: ListenerId,
        target: &ConnectTarget,
    ) {
        match self.resolver.as_mut() {
            Some(resolver) => {
                let id = resolver.lookup(now, &target.host, target.port);
                self.engine.looking_up(id, connection, listener);
            }
            None => self.engine.router.connect_failed(now, connection),
        }
        self.finish_lookups(now);
    }

    /// Finished lookups to the engine; `.local` queries go out by mDNS.
    pub(super) fn finish_lookups(&mut self, now: Instant) {
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        self.engine
            .forget_unwanted_lookups(|id| resolver.cancel(id));
        resolver.handle_timeout(now);
        if let Some(mdns) = self.mdns.as_mut() {
            while let Some(query) = resolver.poll_mdns_query() {
                mdns.send_query(&query);
            }
        }
        while let Some(done) = resolver.poll_done() {
            let stats = || resolver.stats();
            self.engine.looked_up(now, (done.id, done.result), stats);
        }
    }
}

fn on_resolver(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let now = daemon.now(ctx);
    let more = daemon.resolver.as_mut().is_some_and(|r| r.read(now));
    if more {
        let _ = ctx.reregister(event.source, Interest::READABLE);
    }
    daemon.finish_lookups(now);
    daemon.pump(ctx);
}
