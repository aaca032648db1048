//! The daemon's shell: it owns the loop's registrations, the sockets, the sequencer, the device
//! files and mDNS, feeds what they say to the listeners' sessions (`crate::sessions`) and to
//! the [`Router`], and carries out what they answer. Policy lives in the pure modules
//! (`router`, `sessions`, `ledger`, `answers`, `rawmidi`, `shutdown`, `config`); this only
//! translates.
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use log::{error, info, log, trace, warn};
use protocol::endpoint::Endpoint;
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::session::SocketKind;
use protocol::time::{Duration, Instant};
use reactor::{Context, Interest, Signal, SourceId};

use crate::bridge::{self, Bridge};
use crate::config;
use crate::config::CommandLine;
use crate::ledger::Ledger;
use crate::mdns::Mdns;
use crate::net;
use crate::options::DEFAULT_MIDI2_PORT;
use crate::router::{
    Action, Dest, DeviceId, ListenerId, ListenerKind, PeerPortId, Router, SessionKey, Source,
};
use crate::seq::Sequencer;
use crate::sessions::{self, refusal_text, DropLog, Happening};
use crate::shutdown::{Shutdown, Step};

mod discovery;
mod listener;
mod names;
mod rawmidi;
mod requests;
mod setup;

use listener::Listener;

/// Datagrams read from one socket (or events from the sequencer) before the loop looks at the
/// others, so one flooding source cannot starve the rest.
const READ_BATCH: usize = 256;
/// Largest datagram we read; RTP-MIDI over UDP is far below it.
const MAX_DATAGRAM: usize = 65_536;
/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the protocol endpoints and the router.
    Protocol,
    /// Retry output the sequencer had no room for.
    SeqFlush,
    /// The nearest deadline of mDNS.
    Mdns,
    /// Look for the raw MIDI devices' paths.
    RawMidi,
}

pub type Ctx = Context<Daemon, TimerId>;

pub struct Daemon {
    origin: StdInstant,
    started: StdInstant,
    settings: config::Settings,
    /// The command line and the file the settings came from, to reload.
    reload_from: Option<(CommandLine, Option<PathBuf>)>,
    router: Router,
    listeners: BTreeMap<ListenerId, Listener>,
    bridge: Option<Bridge<PeerPortId>>,
    seq_sources: Vec<SourceId>,
    /// The `[rawmidi]` devices.
    devices: BTreeMap<DeviceId, rawmidi::Device>,
    /// What the sessions did, beyond the sessions.
    ledger: Ledger,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    drops: DropLog,
    bridge_actions: Vec<bridge::Action<PeerPortId>>,
    dests: Vec<Dest>,
    /// Scratch for `pump`: the listeners' ids, kept to not allocate per datagram.
    listener_ids: Vec<ListenerId>,
    shutdown: Shutdown,
    mdns: Option<Mdns>,
    mdns_sources: Vec<SourceId>,
    names: Option<names::Names>,
    seed: u64,
    /// The control socket, while it is open.
    control: Option<crate::control::Server>,
    /// The configuration file's watch, to reload when it is saved.
    watch: Option<crate::reload::Watch>,
}

impl Daemon {
    /// Binds the main port and builds the graph the settings describe; nothing runs until
    /// [`Daemon::start`].
    pub fn new(
        settings: config::Settings,
        sequencer: Option<Box<dyn Sequencer>>,
        seed: u64,
    ) -> io::Result<Daemon> {
        let sockets = net::bind_all(&settings.bind, settings.port)?;
        let mut bridge = sequencer.map(Bridge::new).transpose()?;
        if let (Some(bridge), Some(rule)) = (bridge.as_mut(), settings.export_auto.clone()) {
            bridge.set_auto_export(rule)?;
        }
        let router = Router::new(&settings.name, bridge.is_some(), settings.hub, seed as u32);
        let main = Listener::apple_midi(
            &settings.name,
            Endpoint::new(settings.session_config(), settings.admission.policy(), seed),
            sockets,
        );
        // Played out to ALSA only; a new delay takes a restart.
        let playout_delay = settings
            .playout_delay
            .filter(|_| bridge.is_some())
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let now = StdInstant::now();
        Ok(Daemon {
            origin: now,
            started: now,
            listeners: BTreeMap::from([(router.main(), main)]),
            router,
            settings,
            reload_from: None,
            bridge,
            seq_sources: Vec::new(),
            devices: BTreeMap::new(),
            ledger: Ledger::new(playout_delay),
            recv_buf: vec![0; MAX_DATAGRAM],
            send_buf: vec![0; MAX_DATAGRAM],
            drops: DropLog::default(),
            bridge_actions: Vec::new(),
            dests: Vec::new(),
            listener_ids: Vec::new(),
            shutdown: Shutdown::default(),
            mdns: None,
            mdns_sources: Vec::new(),
            names: None,
            seed,
            control: None,
            watch: None,
        })
    }

    /// Registers the sockets and the sequencer, opens the file's sections, the control socket,
    /// the file watch and mDNS. A control socket asked for explicitly must open; the default
    /// one may fail (no /run/rtpmidid for an ordinary user) with a warning.
    pub fn start(
        &mut self,
        ctx: &mut Ctx,
        command_line: CommandLine,
        path: Option<PathBuf>,
    ) -> Result<(), String> {
        let main = self.router.main();
        if let Some(l) = self.listeners.get_mut(&main) {
            l.register(ctx)
                .map_err(|e| format!("cannot register sockets: {e}"))?;
        }
        if let Some(bridge) = &self.bridge {
            let fds = bridge
                .fds()
                .map_err(|e| format!("cannot watch the sequencer: {e}"))?;
            for fd in fds {
                let source = ctx
                    .register(fd, Interest::READABLE, on_sequencer)
                    .map_err(|e| format!("cannot watch the sequencer: {e}"))?;
                self.seq_sources.push(source);
            }
        }
        self.start_names(ctx)?;
        self.apply_sections(ctx)?;
        self.open_control(ctx)?;
        if let Some(path) = &path {
            self.watch_file(ctx, path);
        }
        self.reload_from = Some((command_line, path));
        self.start_mdns(ctx);
        self.pump(ctx);
        Ok(())
    }

    fn now(&self, ctx: &Ctx) -> Instant {
        to_protocol_time(self.origin, ctx.now())
    }

    /// Datagrams on one of the listeners' sockets (`port`: which AppleMIDI one).
    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, port: SocketKind) {
        let now = self.now(ctx);
        let drops = &mut self.drops;
        let mut dropped = |why, from, len| drops.record(now, why, from, len);
        let bufs = (&mut self.recv_buf[..], &mut self.send_buf[..]);
        let Some(listener) = self.listeners.values_mut().find(|l| l.owns(event.fd)) else {
            return;
        };
        let more = listener.read(now, (event.fd, port), bufs, &mut dropped);
        while let Some((from, why)) = listener.sessions_mut().poll_refusal() {
            warn!(
                "{}: refusing invitations ({}), first from {from}; the rest are counted",
                listener.name,
                refusal_text(why)
            );
        }
        // Edge-triggered: if the batch ended with data left, ask to be told again next turn
        // (only then: it is a system call, and most turns read the socket dry).
        if more {
            let _ = ctx.reregister(event.source, Interest::READABLE);
        }
        self.pump(ctx);
    }

    fn read_sequencer(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut actions = std::mem::take(&mut self.bridge_actions);
        if let Some(bridge) = self.bridge.as_mut() {
            for _ in 0..READ_BATCH {
                match bridge.poll(&mut actions) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        warn!("ALSA sequencer input: {e}");
                        break;
                    }
                }
            }
        }
        for action in actions.drain(..) {
            self.on_bridge_action(now, action);
        }
        self.bridge_actions = actions;
        let _ = ctx.reregister(event.source, Interest::READABLE);
        self.pump(ctx);
    }

    fn on_bridge_action(&mut self, now: Instant, action: bridge::Action<PeerPortId>) {
        match action {
            bridge::Action::ToPeer(port, message) => {
                self.forward(now, Source::Port(port), message, None, None)
            }
            bridge::Action::FromExported(local, message) => {
                self.forward(now, Source::Network(local), message, None, None)
            }
            bridge::Action::PeerWanted(port, on) => self.router.port_subscribed(now, port, on),
            bridge::Action::Export { local, name, on } => {
                let section = self.bridge.as_ref().and_then(|b| b.export_as(local));
                match section {
                    Some(how) => {
                        let (name, port) = (how.name.clone(), how.port);
                        self.router.export_changed(local, &name, true, port, on)
                    }
                    None => self.router.export_changed(local, &name, false, None, on),
                }
            }
        }
    }

    /// Runs the protocol and the router until they have nothing more to say: timeouts,
    /// datagrams, events (which may queue more datagrams, as the hub does), the router's
    /// actions; then re-arms the loop's timer.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        for listener in self.listeners.values_mut() {
            listener.handle_timeout(now);
        }
        self.router.handle_timeout(now);
        self.finish_lookups(now);
        loop {
            // A failure is logged where it happens; the rest goes on.
            let _ = self.run_actions(ctx);
            // A device that failed has its sessions closed by the router.
            let mut busy = self.flush_devices(ctx);
            let mut ids = std::mem::take(&mut self.listener_ids);
            ids.clear();
            ids.extend(self.listeners.keys().copied());
            for &id in &ids {
                if let Some(listener) = self.listeners.get_mut(&id) {
                    listener.flush(now, &mut self.send_buf);
                }
                while let Some((session, event)) =
                    self.listeners.get_mut(&id).and_then(|l| l.poll_happening())
                {
                    busy = true;
                    self.on_happening(
                        now,
                        SessionKey {
                            listener: id,
                            session,
                        },
                        event,
                    );
                }
            }
            self.listener_ids = ids;
            if !busy {
                break;
            }
        }
        self.trim_heap();
        let deadline = self
            .listeners
            .values_mut()
            .filter_map(|l| l.poll_timeout())
            .chain(self.router.poll_timeout())
            .chain(self.names.as_ref().and_then(|n| n.poll_timeout()))
            .min();
        match deadline {
            Some(at) => ctx.set_timer(TimerId::Protocol, to_std_time(self.origin, at)),
            None => {
                ctx.cancel_timer(&TimerId::Protocol);
            }
        }
        if self.bridge.as_ref().is_some_and(|b| b.backlog() > 0) {
            ctx.set_timer(TimerId::SeqFlush, ctx.now() + SEQ_RETRY);
        }
        self.arm_devices(ctx);
    }

    /// Gives freed memory back to the system when the ledger says (`Ledger::trim_due`).
    fn trim_heap(&mut self) {
        let listeners = &self.listeners;
        let left = || {
            listeners
                .values()
                .map(|l| l.sessions().session_count())
                .sum()
        };
        if self.ledger.trim_due(left) {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only releases free memory of the heap; any thread may call it.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn on_happening(&mut self, now: Instant, key: SessionKey, happening: Happening) {
        let Some(l) = self.listeners.get(&key.listener) else {
            return;
        };
        let from = (l.name.as_str(), l.sessions());
        let mut say = |level, line| log!(level, "{line}");
        let happened = (now, key);
        let route = self
            .ledger
            .on_happening(&mut self.router, from, happened, happening, &mut say);
        if let Some(r) = route {
            self.forward(now, Source::Session(key), r.message, r.after, r.tag);
        }
    }

    /// MIDI from `from` to wherever the router says; `after`: the playout delay of MIDI
    /// from the network on its way to ALSA.
    fn forward(
        &mut self,
        now: Instant,
        from: Source,
        message: MidiMessage,
        after: Option<Duration>,
        tag: Option<Tag>,
    ) {
        let Some(tag) = self.router.admit(tag) else {
            trace!("a copy of {tag:?} came back over another hub: dropped");
            return;
        };
        let mut dests = std::mem::take(&mut self.dests);
        self.router.route(from, &mut dests);
        for dest in &dests {
            match *dest {
                Dest::Port(port) => {
                    if let Some(bridge) = self.bridge.as_mut() {
                        bridge.send_to_port(port, &message, after);
                    }
                }
                Dest::Local(local) => {
                    if let Some(bridge) = self.bridge.as_mut() {
                        bridge.send_to_exported(local, &message, after);
                    }
                }
                Dest::Device(id) => {
                    if let Some(device) = self.devices.get_mut(&id) {
                        device.send(&message);
                    }
                }
                Dest::Session(key) => {
                    if let Some(l) = self.listeners.get_mut(&key.listener) {
                        l.sessions_mut().send_midi(now, key.session, &message, tag);
                    }
                }
                Dest::Listener { listener, except } => {
                    if let Some(l) = self.listeners.get_mut(&listener) {
                        l.sessions_mut()
                            .send_to_all(now, except.map(|k| k.session), &message, tag);
                    }
                }
            }
        }
        self.dests = dests;
    }

    /// Carries out what the router asked; the first failure to open a listener is returned
    /// (and logged), the rest goes on.
    fn run_actions(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(action) = self.router.poll_action() {
            if let Err(e) = self.run_action(ctx, action) {
                error!("{e}");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    fn run_action(&mut self, ctx: &mut Ctx, action: Action) -> Result<(), String> {
        let now = self.now(ctx);
        match action {
            Action::CreatePort { port, name } => {
                if let Some(bridge) = self.bridge.as_mut() {
                    if let Err(e) = bridge.add_peer(port, &name) {
                        self.router.port_failed(port);
                        return Err(format!("cannot create an ALSA port for {name:?}: {e}"));
                    }
                }
            }
            Action::DeletePort(port) => {
                if let Some(bridge) = self.bridge.as_mut() {
                    bridge.remove_peer(port);
                }
            }
            Action::Connect {
                connection,
                listener,
                target,
            } => self.look_up(now, connection, listener, &target),
            Action::Close(key) => {
                if let Some(l) = self.listeners.get_mut(&key.listener) {
                    l.sessions_mut().close(now, key.session);
                }
            }
            Action::OpenListener {
                listener,
                name,
                port,
            } => {
                if let Err(e) = self.open_listener(ctx, listener, &name, port) {
                    let why = e.to_string();
                    return self.router.open_failed(listener, &name, port, &why);
                }
            }
            Action::CloseListener(id) => {
                if let Some(mut l) = self.listeners.remove(&id) {
                    l.sessions_mut().close_all(now);
                    l.flush(now, &mut self.send_buf);
                    l.deregister(ctx);
                }
                self.ledger.listener_closed(id);
            }
            Action::Announce(id) => self.announce(ctx, id),
            Action::OpenDevice(id) => self.open_device(ctx, id),
            Action::CloseDevice(id) => self.close_device(ctx, id),
            Action::Withdraw(id) => {
                if let Some(mdns) = self.mdns.as_mut() {
                    mdns.remove_service(now, id.index());
                }
                self.mdns_events(ctx);
            }
        }
        Ok(())
    }

    fn open_listener(
        &mut self,
        ctx: &mut Ctx,
        id: ListenerId,
        name: &str,
        port: Option<u16>,
    ) -> io::Result<()> {
        let seed = self.seed ^ u64::from(id.index()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let policy = self.router.admission_of(id, &self.settings).policy();
        let kind = self.router.listener(id).map(|l| l.kind);
        let mut listener = if kind == Some(ListenerKind::Midi2) {
            let port = port.unwrap_or(DEFAULT_MIDI2_PORT);
            let sockets = net::bind_ports(&self.settings.bind, port)?;
            let config = sessions::midi2_config(name, &self.settings.midi2);
            let sessions = sessions::Midi2::new(config, policy, seed);
            Listener::midi2(name, sessions, sockets)
        } else {
            let sockets = match port {
                Some(port) => net::bind_all(&self.settings.bind, port)?,
                None => listener::bind_free_pair(&self.settings.bind, self.settings.port)?,
            };
            let config = self.router.session_config(id, &self.settings);
            Listener::apple_midi(name, Endpoint::new(config, policy, seed), sockets)
        };
        listener.register(ctx)?;
        if let Some(port) = listener.port() {
            info!("listening as {name:?} on UDP port {port}");
        }
        self.listeners.insert(id, listener);
        Ok(())
    }

    /// First SIGINT/SIGTERM: BY to every peer, then stop. A second: exit at once.
    fn on_shutdown_signal(&mut self, ctx: &mut Ctx, signal: Signal) {
        if self.shutdown.on_signal() == Step::Exit {
            warn!("{signal:?} again: exiting at once");
            std::process::exit(1);
        }
        info!("{signal:?}: closing every session");
        self.router.stop();
        let now = self.now(ctx);
        for listener in self.listeners.values_mut() {
            listener.sessions_mut().close_all(now);
        }
        self.pump(ctx);
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            info!("mDNS: saying goodbye");
            mdns.shutdown(now);
        }
        ctx.stop();
    }
}

fn to_protocol_time(origin: StdInstant, t: StdInstant) -> Instant {
    Instant::from_micros(t.saturating_duration_since(origin).as_micros() as u64)
}

fn to_std_time(origin: StdInstant, t: Instant) -> StdInstant {
    origin + std::time::Duration::from_micros(t.as_micros())
}

fn on_control(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_socket(ctx, event, SocketKind::Control);
}

fn on_data(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_socket(ctx, event, SocketKind::Data);
}

/// A Network MIDI 2.0 socket (its listener ignores the AppleMIDI socket kind).
fn on_midi2(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_socket(ctx, event, SocketKind::Data);
}

fn on_sequencer(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_sequencer(ctx, event);
}

pub fn on_timer(daemon: &mut Daemon, ctx: &mut Ctx, timer: TimerId) {
    match timer {
        TimerId::Mdns => return daemon.mdns_timeout(ctx),
        TimerId::RawMidi => return daemon.poll_devices(ctx),
        TimerId::SeqFlush => {
            if let Some(bridge) = daemon.bridge.as_mut() {
                bridge.flush();
            }
        }
        TimerId::Protocol => {}
    }
    daemon.pump(ctx);
}

pub fn on_signal(daemon: &mut Daemon, ctx: &mut Ctx, signal: Signal) {
    match signal {
        Signal::SIGHUP => daemon.reload(ctx, "SIGHUP"),
        Signal::SIGINT | Signal::SIGTERM => daemon.on_shutdown_signal(ctx, signal),
        other => error!("unexpected signal {other:?}"),
    }
}
