//! Connections' host names looked up without blocking the loop (`crate::resolver`), and the
//! sessions started once they are.
use log::info;
use protocol::time::Instant;
use reactor::Interest;

use super::{Ctx, Daemon};
use crate::options::ConnectTarget;
use crate::resolver::{self, Resolver};
use crate::router::{ConnectionId, ListenerId, Lookups};

/// The resolver and which connection each lookup is for.
pub struct Names {
    pub resolver: Resolver,
    lookups: Lookups,
}

impl Names {
    pub fn new(seed: u64) -> std::io::Result<Names> {
        Ok(Names {
            resolver: Resolver::new(resolver::Config::default(), seed)?,
            lookups: Lookups::default(),
        })
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resolver.poll_timeout()
    }
}

impl Daemon {
    pub(super) fn start_names(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let names = Names::new(self.seed.rotate_left(17))
            .map_err(|e| format!("cannot open the resolver's socket: {e}"))?;
        names
            .resolver
            .register(ctx, on_resolver)
            .map_err(|e| format!("cannot watch the resolver's socket: {e}"))?;
        self.names = Some(names);
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
        match self.names.as_mut() {
            Some(names) => {
                let id = names.resolver.lookup(now, &target.host, target.port);
                names.lookups.insert(id, connection, listener);
            }
            None => self.engine.router.connect_failed(now, connection),
        }
        self.finish_lookups(now);
    }

    /// Finished lookups become sessions (or retries); `.local` queries go out by mDNS.
    pub(super) fn finish_lookups(&mut self, now: Instant) {
        let Some(names) = self.names.as_mut() else {
            return;
        };
        let resolver = &mut names.resolver;
        names
            .lookups
            .forget_unwanted(&self.engine.router, |id| resolver.cancel(id));
        names.resolver.handle_timeout(now);
        if let Some(mdns) = self.mdns.as_mut() {
            while let Some(query) = names.resolver.poll_mdns_query() {
                mdns.send_query(&query);
            }
        }
        while let Some(done) = names.resolver.poll_done() {
            let stats = || names.resolver.stats();
            let result = (done.id, done.result);
            let router = &mut self.engine.router;
            if let Some(dial) = names.lookups.resolved(router, now, result, stats) {
                info!("connecting to {}", dial.addr);
                self.engine.dial(now, dial);
            }
        }
    }
}

fn on_resolver(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let now = daemon.now(ctx);
    let more = daemon.names.as_mut().is_some_and(|n| n.resolver.read(now));
    if more {
        let _ = ctx.reregister(event.source, Interest::READABLE);
    }
    daemon.finish_lookups(now);
    daemon.pump(ctx);
}
