//! mDNS in the shell: our listeners announced, discovered peers handed to the router (after
//! the `[mdns]` filters).
use log::warn;

use super::{Ctx, Daemon, TimerId};
use crate::mdns::{self, Discovery, Mdns, PeerEvent, ServiceKind};
use crate::router::{ListenerId, ListenerKind};
use crate::sessions::product_id;

impl Daemon {
    /// Opens mDNS and announces the listeners.
    pub(super) fn start_mdns(&mut self, ctx: &mut Ctx) {
        let settings = &self.engine.settings().mdns;
        if !settings.enabled {
            return;
        }
        let config = mdns::Config {
            interfaces: settings.interfaces.clone(),
        };
        let seed = self.started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        self.mdns = Mdns::start(ctx, self.now(ctx), config, seed, on_mdns);
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
        let Some(mdns) = self.mdns.as_mut() else {
            return;
        };
        let name = self.engine.listener_name(id).unwrap_or_default();
        let Some(port) = self.listeners.port(id) else {
            return warn!("mDNS: cannot announce {name:?}: no local port");
        };
        // A Network MIDI 2.0 host under `_midi2._udp`, with its UMP endpoint's TXT keys.
        let kind = match self.engine.router.listener(id).map(|l| l.kind) {
            Some(ListenerKind::Midi2) => ServiceKind::Midi2 {
                product_id: product_id(name),
            },
            _ => ServiceKind::AppleMidi,
        };
        mdns.add_service(now, id.index(), kind, name, port);
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
