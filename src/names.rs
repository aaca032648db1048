//! Names on the network: host lookups (`resolver`) and mDNS (`mdns`: ours announced, peers
//! browsed), and what joins them: a `.local` name is asked for by mDNS and its answer read from
//! the mDNS sockets. The daemon sees lookups, services and discovered peers, one deadline.
use std::hash::Hash;

use log::info;
use protocol::mdns::ServiceKind;
use protocol::resolve::{LookupId, Stats};
use protocol::time::Instant;
use reactor::{Context, Event, Handler, Interest};

use crate::config;
use crate::mdns::{Discovery, Mdns};
use crate::resolver::{self, Done, Resolver};

pub struct Names {
    resolver: Resolver,
    /// Without it (`--no-mdns`, or it could not open) nothing is announced or browsed.
    mdns: Option<Mdns>,
    /// mDNS's deadline as of the last call into it, so the loop's every turn need not ask
    /// each interface's state machines.
    mdns_at: Option<Instant>,
}

impl Names {
    /// Opens the resolver's socket; `seed` drives its query ids and source port.
    pub fn open(seed: u64) -> Result<Names, String> {
        let resolver = Resolver::new(resolver::Config::default(), seed)
            .map_err(|e| format!("cannot open the resolver's socket: {e}"))?;
        Ok(Names {
            resolver,
            mdns: None,
            mdns_at: None,
        })
    }

    /// Watches the resolver's socket with `on_resolver` ([`Names::read_resolver`]).
    pub fn watch<S, T: Eq + Hash + Clone>(
        &self,
        ctx: &mut Context<S, T>,
        on_resolver: Handler<S, T>,
    ) -> Result<(), String> {
        self.resolver
            .register(ctx, on_resolver)
            .map(drop)
            .map_err(|e| format!("cannot watch the resolver's socket: {e}"))
    }

    /// Starts mDNS as `settings` say (`seed` seeds its state machines), its sockets watched with
    /// `on_mdns` ([`Names::read_mdns`]); `.local` names are looked up through it from then on.
    pub fn start_mdns<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        settings: &config::Mdns,
        seed: u64,
        on_mdns: Handler<S, T>,
    ) {
        self.mdns = Mdns::start(ctx, now, settings, seed, on_mdns);
        self.resolver.set_mdns(self.mdns.is_some());
        self.mdns_changed();
    }

    /// Starts looking up `host`; the result comes from [`Names::poll_done`].
    pub fn lookup(&mut self, now: Instant, host: &str, port: u16) -> LookupId {
        let id = self.resolver.lookup(now, host, port);
        self.send_mdns_queries();
        id
    }

    pub fn cancel(&mut self, id: LookupId) {
        self.resolver.cancel(id);
    }

    pub fn read_resolver<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        event: Event,
    ) {
        if self.resolver.read(now) {
            let _ = ctx.reregister(event.source, Interest::READABLE);
        }
    }

    /// What an mDNS socket has: to mDNS, and to the resolver for its `.local` lookups.
    pub fn read_mdns<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        event: Event,
    ) {
        let Some(mdns) = self.mdns.as_mut() else {
            return;
        };
        let resolver = &mut self.resolver;
        let mut tap = |from, if_index, bytes: &[u8]| {
            resolver.handle_mdns_datagram(now, from, if_index, bytes);
        };
        mdns.read(ctx, now, event, &mut tap);
        self.mdns_changed();
    }

    /// Runs the retries, timeouts and announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.resolver.handle_timeout(now);
        self.send_mdns_queries();
        if let Some(mdns) = self.mdns.as_mut().filter(|_| self.mdns_at <= Some(now)) {
            mdns.handle_timeout(now);
            self.mdns_changed();
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resolver
            .poll_timeout()
            .into_iter()
            .chain(self.mdns_at)
            .min()
    }

    pub fn poll_done(&mut self) -> Option<Done> {
        self.resolver.poll_done()
    }

    /// The resolver's count of bad replies.
    pub fn stats(&self) -> Stats {
        self.resolver.stats()
    }

    /// The next peer mDNS found, changed or lost.
    pub fn poll_discovery(&mut self) -> Option<Discovery> {
        let event = self.mdns.as_mut()?.poll_event();
        if event.is_none() {
            // This turn's share may be used up with more waiting: the deadline says so.
            self.mdns_changed();
        }
        event
    }

    /// Announces `name` under `key` on UDP `port`.
    pub fn announce(
        &mut self,
        now: Instant,
        key: u32,
        (name, kind): (&str, ServiceKind),
        port: u16,
    ) {
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.add_service(now, key, kind, name, port);
            self.mdns_changed();
        }
    }

    pub fn withdraw(&mut self, now: Instant, key: u32) {
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.remove_service(now, key);
            self.mdns_changed();
        }
    }

    /// Goodbyes for everything announced.
    pub fn shutdown(&mut self, now: Instant) {
        if let Some(mdns) = self.mdns.as_mut() {
            info!("mDNS: saying goodbye");
            mdns.shutdown(now);
        }
    }

    fn mdns_changed(&mut self) {
        self.mdns_at = self.mdns.as_ref().map(Mdns::poll_timeout);
    }

    fn send_mdns_queries(&mut self) {
        while let Some(query) = self.resolver.poll_mdns_query() {
            if let Some(mdns) = self.mdns.as_mut() {
                mdns.send_query(&query);
            }
        }
    }
}
