//! mDNS in the shell: its sockets, announcing our listeners, and discovered peers handed to
//! the router (after the `[mdns]` filters).
use log::{debug, warn};
use reactor::Interest;

use super::{to_std_time, Ctx, Daemon, TimerId};
use crate::mdns::{self, Discovery, Mdns, PeerEvent, ServiceKind};
use crate::router::{ListenerId, ListenerKind};
use crate::sessions::product_id;

impl Daemon {
    /// Opens mDNS and announces the listeners; without it the daemon still works.
    pub(super) fn start_mdns(&mut self, ctx: &mut Ctx) {
        if !self.settings.mdns.enabled {
            return;
        }
        let config = mdns::Config {
            interfaces: self.settings.mdns.interfaces.clone(),
        };
        let now = self.now(ctx);
        let seed = self.origin.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let mdns = match Mdns::new(now, config, seed) {
            Ok(mdns) => mdns,
            Err(e) => {
                warn!("mDNS off: {e}");
                return;
            }
        };
        for fd in mdns.fds() {
            match ctx.register(fd, Interest::READABLE, on_mdns) {
                Ok(source) => self.mdns_sources.push(source),
                Err(e) => warn!("mDNS: cannot watch a socket: {e}"),
            }
        }
        self.mdns = Some(mdns);
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
        let (Some(mdns), Some(listener)) = (self.mdns.as_mut(), self.listeners.get(&id)) else {
            return;
        };
        let name = self.engine.listener_name(id).unwrap_or_default();
        // A Network MIDI 2.0 host under `_midi2._udp`, with its UMP endpoint's TXT keys.
        let kind = match self.engine.router.listener(id).map(|l| l.kind) {
            Some(ListenerKind::Midi2) => ServiceKind::Midi2 {
                product_id: product_id(name),
            },
            _ => ServiceKind::AppleMidi,
        };
        match listener.sockets.port() {
            Some(port) => mdns.add_service(now, id.index(), kind, name, port),
            None => warn!("mDNS: cannot announce {name:?}: no local port"),
        }
        self.mdns_events(ctx);
    }

    fn read_mdns(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            let mut resolver = self.resolver.as_mut();
            let mut tap = |from, if_index, bytes: &[u8]| {
                if let Some(resolver) = resolver.as_mut() {
                    resolver.handle_mdns_datagram(now, from, if_index, bytes);
                }
            };
            if mdns.read_tap(now, event.fd, &mut tap) {
                let _ = ctx.reregister(event.source, Interest::READABLE);
            }
        }
        self.finish_lookups(now);
        self.mdns_events(ctx);
        self.pump(ctx);
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
        let mut events = Vec::new();
        while let Some(event) = mdns.poll_event() {
            events.push(event);
        }
        ctx.set_timer(TimerId::Mdns, to_std_time(self.origin, mdns.poll_timeout()));
        for Discovery { midi2, event } in events {
            match event {
                PeerEvent::Appeared { name, addr } | PeerEvent::Changed { name, addr } => {
                    match self.settings.discovered(&name, addr, midi2) {
                        Ok(target) => self.engine.router.discovered(now, &name, target),
                        Err(why) => debug!("mDNS: {name:?} at {addr} ignored ({why})"),
                    }
                }
                PeerEvent::Gone { name } => self.engine.router.discovered_gone(now, &name, midi2),
            }
        }
    }
}

fn on_mdns(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_mdns(ctx, event);
}
