//! mDNS in the shell: our listeners announced as the engine says, discovered peers handed to
//! it (it applies the `[mdns]` filters), and the datagrams shown to the resolver.
use log::warn;

use super::{Ctx, Daemon, TimerId};
use crate::mdns::{Discovery, Mdns, PeerEvent};
use crate::router::ListenerId;

impl Daemon {
    /// Opens mDNS and announces the listeners.
    pub(super) fn start_mdns(&mut self, ctx: &mut Ctx) {
        let seed = self.started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let settings = &self.engine.settings().mdns;
        self.mdns = Mdns::start(ctx, self.now(ctx), settings, seed, on_mdns);
        if self.mdns.is_none() {
            return;
        }
        if let Some(resolver) = self.resolver.as_mut() {
            resolver.set_mdns(true); // `.local` names through our own querier
        }
        let ids: Vec<ListenerId> = self.engine.listener_ids().collect();
        for id in ids {
            self.announce(ctx, id);
        }
    }

    /// Announces listener `id` under its name on its port.
    pub(super) fn announce(&mut self, ctx: &mut Ctx, id: ListenerId) {
        let now = self.now(ctx);
        let (Some(mdns), Some((name, kind))) = (self.mdns.as_mut(), self.engine.announcement(id))
        else {
            return;
        };
        match self.sockets.port(id) {
            Some(port) => mdns.add_service(now, id.index(), kind, name, port),
            None => warn!("mDNS: cannot announce {name:?}: no local port"),
        }
        self.mdns_events(ctx);
    }

    pub(super) fn mdns_timeout(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.handle_timeout(now);
        }
        self.mdns_events(ctx);
        self.pump(ctx);
    }

    /// Discovered peers to the router, and the mDNS timer re-armed.
    pub(super) fn mdns_events(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        let Some(mdns) = self.mdns.as_mut() else {
            return;
        };
        while let Some(Discovery { midi2, event }) = mdns.poll_event() {
            match event {
                PeerEvent::Appeared { name, addr } | PeerEvent::Changed { name, addr } => {
                    self.engine.discovered(now, &name, addr, midi2)
                }
                PeerEvent::Gone { name } => self.engine.router.discovered_gone(now, &name, midi2),
            }
        }
        let next = mdns.poll_timeout();
        ctx.set_timer(TimerId::Mdns, self.to_std_time(next));
    }
}

fn on_mdns(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let now = daemon.now(ctx);
    if let Some(mdns) = daemon.mdns.as_mut() {
        let resolver = &mut daemon.resolver;
        let mut tap = |from, if_index, bytes: &[u8]| {
            if let Some(resolver) = resolver.as_mut() {
                resolver.handle_mdns_datagram(now, from, if_index, bytes);
            }
        };
        mdns.read(ctx, now, event, &mut tap);
    }
    daemon.finish_lookups(now);
    daemon.mdns_events(ctx);
    daemon.pump(ctx);
}
