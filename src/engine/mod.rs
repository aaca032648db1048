//! What the daemon decides, in one place and without I/O: the router's graph, every
//! listener's sessions (AppleMIDI or Network MIDI 2.0), the ledger of what they did and the
//! settings in force. The shell (`src/daemon/`) hands it datagrams, what the sequencer and
//! devices said, finished lookups, discovered peers, control requests, reloads and the time;
//! it hands back datagrams per listener ([`Engine::sessions_mut`]'s `poll_transmit`), MIDI for
//! ALSA and devices (through [`Local`]) and the router's actions that need the system
//! ([`Engine::poll_action`]).
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use log::{debug, info, log, trace, warn, LevelFilter};
use protocol::endpoint::Endpoint;
use protocol::hubtag::Tag;
use protocol::mdns::ServiceKind;
use protocol::midi::MidiMessage;
use protocol::resolve::{Failure, LookupId, Stats};
use protocol::session::SocketKind;
use protocol::time::{Duration, Instant};

use crate::answers;
use crate::bridge;
use crate::config::{self, Settings};
use crate::ctl::proto::{PeerRow, Status, Who};
use crate::ledger::Ledger;
use crate::options::{Bind, ConnectTarget, DEFAULT_MIDI2_PORT};
use crate::router::{
    Action, ConnectionId, Dest, DeviceId, ListenerId, ListenerKind, Lookups, PeerPortId, Router,
    SessionKey, Source,
};
use crate::seq::SeqAddr;
use crate::sessions::{self, refusal_text, AppleMidi, DropLog, Happening, Midi2, Sessions};

/// Where MIDI for the local side goes: ALSA ports and raw MIDI devices, in the shell.
pub trait Local {
    /// To peer port `port`'s ALSA port, at once or at `at` (its playout).
    fn to_port(&mut self, port: PeerPortId, message: &MidiMessage, at: Option<Instant>);
    /// To exported local port `local`, through `Network`.
    fn to_exported(&mut self, local: SeqAddr, message: &MidiMessage, at: Option<Instant>);
    fn to_device(&mut self, device: DeviceId, message: &MidiMessage);
}

/// What a shutdown signal asks of the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Every session was told BY: send what is queued, say goodbye on mDNS, stop the loop.
    Close,
    /// A second signal: exit now, with an error status.
    Exit,
}

/// A listener's name and sessions.
struct Served {
    name: String,
    sessions: Box<dyn Sessions>,
}

pub struct Engine {
    pub router: Router,
    /// The settings in force: the start's, then the last reload's.
    settings: Settings,
    listeners: BTreeMap<ListenerId, Served>,
    ledger: Ledger,
    drops: DropLog,
    /// Host lookups under way, for the connections that asked.
    lookups: Lookups,
    /// Scratch for `forward`, kept to not allocate per message.
    dests: Vec<Dest>,
    /// Scratch for `poll_happenings`: the listeners' ids.
    ids: Vec<ListenerId>,
    seed: u64,
    /// Shutdown signals seen.
    signals: u32,
}

impl Engine {
    /// The graph `settings` start with, but for its sections ([`Engine::configure`]), and the
    /// main listener's sessions; `alsa`: whether there is a sequencer.
    pub fn new(settings: Settings, alsa: bool, seed: u64) -> Engine {
        let router = Router::new(&settings.name, alsa, settings.hub, seed as u32);
        let endpoint = Endpoint::new(settings.session_config(), settings.admission.policy(), seed);
        let main = Served {
            name: settings.name.clone(),
            sessions: Box::new(AppleMidi::new(endpoint)),
        };
        // Played out to ALSA only; a new delay takes a restart.
        let playout_delay = settings
            .playout_delay
            .filter(|_| alsa)
            .map(|ms| Duration::from_millis(u64::from(ms)));
        Engine {
            listeners: BTreeMap::from([(router.main(), main)]),
            router,
            settings,
            ledger: Ledger::new(playout_delay),
            drops: DropLog::default(),
            lookups: Lookups::default(),
            dests: Vec::new(),
            ids: Vec::new(),
            seed,
            signals: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The sections of the settings for the router ([`Router::configure`]); the raw MIDI
    /// devices it made, for the shell to look for.
    pub fn configure(&mut self, now: Instant) -> Vec<(DeviceId, &config::RawMidi)> {
        self.router.configure(now, &self.settings)
    }

    pub fn listener_ids(&self) -> impl Iterator<Item = ListenerId> + '_ {
        self.listeners.keys().copied()
    }

    pub fn listener_name(&self, id: ListenerId) -> Option<&str> {
        self.listeners.get(&id).map(|l| l.name.as_str())
    }

    /// Listener `id`'s sessions, to send what they queued.
    pub fn sessions_mut(&mut self, id: ListenerId) -> Option<&mut dyn Sessions> {
        Some(self.listeners.get_mut(&id)?.sessions.as_mut())
    }

    /// Sessions for the router's listener `id` (its sockets are open), of its protocol.
    pub fn add_listener(&mut self, id: ListenerId, name: &str) {
        let settings = &self.settings;
        let seed = self.seed ^ u64::from(id.index()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let policy = self.router.admission_of(id, settings).policy();
        let sessions: Box<dyn Sessions> = match self.router.listener(id).map(|l| l.kind) {
            Some(ListenerKind::Midi2) => {
                let config = sessions::midi2_config(name, &settings.midi2);
                Box::new(Midi2::new(config, policy, seed))
            }
            _ => {
                let config = self.router.session_config(id, settings);
                Box::new(AppleMidi::new(Endpoint::new(config, policy, seed)))
            }
        };
        let name = name.to_string();
        self.listeners.insert(id, Served { name, sessions });
    }

    /// Where listener `id` opens, for [`Action::OpenListener`]'s `port`: with none, a MIDI 2.0
    /// host takes the default port and any other the first free pair above the main port.
    pub fn bind_of(&self, id: ListenerId, port: Option<u16>) -> Bind {
        match self.router.listener(id).map(|l| l.kind) {
            Some(ListenerKind::Midi2) => Bind::Midi2(port.unwrap_or(DEFAULT_MIDI2_PORT)),
            _ => port.map_or(Bind::AppleMidiAbove(self.settings.port), Bind::AppleMidi),
        }
    }

    /// Listener `id` goes: its sessions are ended (BY queued) and handed back, for the shell
    /// to send what they queued before it closes the sockets.
    pub fn remove_listener(&mut self, now: Instant, id: ListenerId) -> Option<Box<dyn Sessions>> {
        self.ledger.listener_closed(id);
        let mut served = self.listeners.remove(&id)?;
        served.sessions.close_all(now);
        Some(served.sessions)
    }

    /// A datagram `from` a peer to listener `id`'s `port` socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        (id, port): (ListenerId, SocketKind),
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let Some(l) = self.listeners.get_mut(&id) else {
            return;
        };
        if let Err(why) = l.sessions.handle_datagram(now, port, from, bytes) {
            self.drops.record(now, why, from, bytes.len());
        }
        while let Some((from, why)) = l.sessions.poll_refusal() {
            warn!(
                "{}: refusing invitations ({}), first from {from}; the rest are counted",
                l.name,
                refusal_text(why)
            );
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for l in self.listeners.values_mut() {
            l.sessions.handle_timeout(now);
        }
        self.router.handle_timeout(now);
    }

    /// The nearest deadline of the sessions and the router.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let sessions = self.listeners.values_mut();
        let nearest = sessions.filter_map(|l| l.sessions.poll_timeout()).min();
        nearest.into_iter().chain(self.router.poll_timeout()).min()
    }

    /// The router's next action for the shell; those on sessions are carried out here.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        loop {
            match self.router.poll_action()? {
                Action::Close(key) => {
                    if let Some(l) = self.listeners.get_mut(&key.listener) {
                        l.sessions.close(now, key.session);
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// What the sessions did since the last call: the router and ledger told, MIDI routed.
    /// True if there was anything (the sessions may have more to send).
    pub fn poll_happenings(&mut self, now: Instant, local: &mut dyn Local) -> bool {
        let mut busy = false;
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(self.listeners.keys().copied());
        for &listener in &ids {
            while let Some((session, happening)) = self
                .listeners
                .get_mut(&listener)
                .and_then(|l| l.sessions.poll_happening())
            {
                busy = true;
                let key = SessionKey { listener, session };
                self.on_happening(now, key, happening, local);
            }
        }
        self.ids = ids;
        busy
    }

    fn on_happening(
        &mut self,
        now: Instant,
        key: SessionKey,
        happening: Happening,
        local: &mut dyn Local,
    ) {
        let Some(l) = self.listeners.get(&key.listener) else {
            return;
        };
        let from = (l.name.as_str(), l.sessions.as_ref());
        let mut say = |level, line| log!(level, "{line}");
        let route =
            self.ledger
                .on_happening(&mut self.router, from, (now, key), happening, &mut say);
        if let Some(r) = route {
            let from = Source::Session(key);
            self.forward(now, from, r.message, (r.after, r.tag), local);
        }
    }

    /// MIDI from `from` to wherever the router says; `after`: the playout delay of MIDI from
    /// the network on its way to ALSA; `tag`: what another hub said it is.
    pub fn forward(
        &mut self,
        now: Instant,
        from: Source,
        message: MidiMessage,
        (after, tag): (Option<Duration>, Option<Tag>),
        local: &mut dyn Local,
    ) {
        let Some(tag) = self.router.admit(tag) else {
            trace!("a copy of {tag:?} came back over another hub: dropped");
            return;
        };
        let mut dests = std::mem::take(&mut self.dests);
        self.router.route(from, &mut dests);
        let at = after.map(|after| now + after);
        for dest in &dests {
            match *dest {
                Dest::Port(port) => local.to_port(port, &message, at),
                Dest::Local(addr) => local.to_exported(addr, &message, at),
                Dest::Device(id) => local.to_device(id, &message),
                Dest::Session(key) => {
                    if let Some(l) = self.listeners.get_mut(&key.listener) {
                        l.sessions.send_midi(now, key.session, &message, tag);
                    }
                }
                Dest::Listener { listener, except } => {
                    if let Some(l) = self.listeners.get_mut(&listener) {
                        let except = except.map(|k| k.session);
                        l.sessions.send_to_all(now, except, &message, tag);
                    }
                }
            }
        }
        self.dests = dests;
    }

    /// What the sequencer said: MIDI from a peer's port or an exported one routed on, the
    /// router told of subscriptions and exports.
    pub fn handle_alsa(
        &mut self,
        now: Instant,
        action: bridge::Action<PeerPortId>,
        local: &mut dyn Local,
    ) {
        let router = &mut self.router;
        match action {
            bridge::Action::ToPeer(port, message) => {
                self.forward(now, Source::Port(port), message, (None, None), local)
            }
            bridge::Action::FromExported(addr, message) => {
                self.forward(now, Source::Network(addr), message, (None, None), local)
            }
            bridge::Action::PeerWanted(port, on) => router.port_subscribed(now, port, on),
            bridge::Action::Export {
                local: addr,
                name,
                section,
                on,
            } => match section {
                Some(how) => router.export_changed(addr, &how.name, true, how.port, on),
                None => router.export_changed(addr, &name, false, None, on),
            },
        }
    }

    /// What listener `id` is announced as: its name, and its service.
    pub fn announcement(&self, id: ListenerId) -> Option<(&str, ServiceKind)> {
        let name = self.listener_name(id)?;
        // A Network MIDI 2.0 host under `_midi2._udp`, with its UMP endpoint's TXT keys.
        let kind = match self.router.listener(id)?.kind {
            ListenerKind::Midi2 => ServiceKind::Midi2 {
                product_id: sessions::product_id(name),
            },
            _ => ServiceKind::AppleMidi,
        };
        Some((name, kind))
    }

    /// What the bridge said of `ctl export` or `ctl unexport` of local port `addr`
    /// (`actions`), carried out; the name the export is, or was, announced under.
    pub fn exported(
        &mut self,
        now: Instant,
        addr: SeqAddr,
        actions: Vec<bridge::Action<PeerPortId>>,
        local: &mut dyn Local,
    ) -> String {
        let before = self.export_name(addr);
        for action in actions {
            self.handle_alsa(now, action, local);
        }
        let after = self.export_name(addr);
        after.or(before).unwrap_or_else(|| addr.to_string())
    }

    /// The name local port `addr` is exported under, if it is.
    pub fn export_name(&self, addr: SeqAddr) -> Option<String> {
        let id = self.router.export_of(addr)?;
        Some(self.router.listener(id)?.name.clone())
    }

    /// Lookup `id` is for `connection`'s session on `listener` ([`Action::Connect`]).
    pub fn looking_up(&mut self, id: LookupId, connection: ConnectionId, listener: ListenerId) {
        self.lookups.insert(id, connection, listener);
    }

    /// Forgets the lookups no connection waits for any more; `cancel` gets each.
    pub fn forget_unwanted_lookups(&mut self, cancel: impl FnMut(LookupId)) {
        self.lookups.forget_unwanted(&self.router, cancel);
    }

    /// Lookup `id` ended with `result`: the session starts at the first address, or the
    /// connection retries (`dropped`: the resolver's count of bad replies, for the log).
    pub fn looked_up(
        &mut self,
        now: Instant,
        (id, result): (LookupId, Result<Vec<SocketAddr>, Failure>),
        dropped: impl FnOnce() -> Stats,
    ) {
        let found = (id, result);
        let Some(dial) = self.lookups.resolved(&mut self.router, now, found, dropped) else {
            return;
        };
        info!("connecting to {}", dial.addr);
        if let Some(l) = self.listeners.get_mut(&dial.listener) {
            let session = l.sessions.connect(now, dial.addr, dial.credentials);
            let key = SessionKey {
                listener: dial.listener,
                session,
            };
            self.router.connecting(dial.connection, key, dial.addr.ip());
        }
    }

    /// SIGINT or SIGTERM: the first stops reconnecting and ends every session; a second asks
    /// to exit at once.
    pub fn shutdown(&mut self, now: Instant) -> Step {
        self.signals += 1;
        if self.signals > 1 {
            return Step::Exit;
        }
        self.router.stop();
        for l in self.listeners.values_mut() {
            l.sessions.close_all(now);
        }
        Step::Close
    }

    /// Whether to give freed memory back to the system now (`Ledger::trim_due`).
    pub fn trim_due(&mut self) -> bool {
        let listeners = &self.listeners;
        let left = || listeners.values().map(|l| l.sessions.session_count()).sum();
        self.ledger.trim_due(left)
    }

    /// A reload: `new` settings in force, what changed carried out and logged (`why`: what
    /// asked). Returns the log level if it changed: that is the process's.
    pub fn reload(&mut self, now: Instant, new: Settings, why: &str) -> Option<LevelFilter> {
        let actions = config::diff(&self.settings, &new);
        if actions.is_empty() {
            info!("{why}: configuration unchanged");
        } else {
            info!("{why}: configuration reloaded, {} change(s)", actions.len());
        }
        self.settings = new;
        let mut level = None;
        for action in &actions {
            self.reconfigure(now, action);
            if let Some((level, line)) = action.note() {
                log!(level, "{line}");
            }
            if let config::Action::SetLogLevel(new) = action {
                level = Some(*new);
            }
        }
        level
    }

    /// A reload's change, for the router and the sessions.
    fn reconfigure(&mut self, now: Instant, action: &config::Action) {
        let settings = &self.settings;
        self.router.reconfigure(now, action);
        match action {
            config::Action::SessionConfig => {
                self.router.set_name(&settings.name);
                for (id, l) in &mut self.listeners {
                    let config = self.router.session_config(*id, settings);
                    l.sessions.set_session_config(config);
                }
            }
            config::Action::Admission => {
                for (id, l) in &mut self.listeners {
                    let policy = self.router.admission_of(*id, settings).policy();
                    l.sessions.set_policy(policy);
                }
            }
            // The router's, the process's (the log level) or only a note.
            config::Action::PeerFilter
            | config::Action::Bridge(_)
            | config::Action::NeedsRestart(_)
            | config::Action::RemoveListener(_)
            | config::Action::AddListener(_)
            | config::Action::Disconnect(_)
            | config::Action::Connect(_)
            | config::Action::SetHub(_)
            | config::Action::SetLogLevel(_) => {}
        }
    }

    /// `ctl status`: `about` (what only the shell knows: the process, the file read) with the
    /// settings' names and port, the uptime (our clock starts with the daemon) and the counts.
    pub fn status(&self, now: Instant, about: &Status) -> Status {
        let s = &self.settings;
        let known = Status {
            name: s.name.clone(),
            alsa_name: s.alsa_name.clone(),
            port: s.port,
            uptime: std::time::Duration::from_micros(now.as_micros()),
            ..about.clone()
        };
        answers::status(known, &self.router, &self.sessions())
    }

    /// A peer mDNS found: the router hears of it unless the settings leave it alone.
    pub fn discovered(&mut self, now: Instant, name: &str, addr: SocketAddr, midi2: bool) {
        match self.settings.discovered(name, addr, midi2) {
            Ok(target) => self.router.discovered(now, name, target),
            Err(why) => debug!("mDNS: {name:?} at {addr} ignored ({why})"),
        }
    }

    /// `ctl peers`.
    pub fn peers(&self) -> Vec<PeerRow> {
        answers::peers(&self.router, &self.sessions(), self.ledger.latency())
    }

    /// `ctl connect`.
    pub fn connect(&mut self, now: Instant, target: ConnectTarget) -> Result<String, String> {
        answers::connect(&mut self.router, now, target)
    }

    /// `ctl disconnect`.
    pub fn disconnect(&mut self, now: Instant, who: Who) -> Result<String, String> {
        let mut listeners: Vec<(ListenerId, &mut dyn Sessions)> = self
            .listeners
            .iter_mut()
            .map(|(id, l)| (*id, l.sessions.as_mut() as &mut dyn Sessions))
            .collect();
        answers::disconnect(&mut self.router, &mut listeners, now, who)
    }

    fn sessions(&self) -> Vec<(ListenerId, &dyn Sessions)> {
        self.listeners
            .iter()
            .map(|(id, l)| (*id, l.sessions.as_ref()))
            .collect()
    }
}
