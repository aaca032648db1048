//! The daemon's shell: it owns the loop's registrations, the sockets, the sequencer, the device
//! files and mDNS, feeds what they say to the [`Engine`] (the router and every listener's
//! sessions, without I/O) and carries out what it answers. Policy lives in the pure modules
//! (`engine`, `router`, `sessions`, `ledger`, `answers`, `rawmidi`, `config`); this only
//! translates.
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use log::{error, info, warn};
use protocol::midi::MidiMessage;
use protocol::session::SocketKind;
use protocol::time::{Duration, Instant};
use reactor::{Context, Interest, Signal, SourceId};

use crate::bridge::{self, Bridge};
use crate::config;
use crate::config::CommandLine;
use crate::device::Device;
use crate::engine::{Engine, Local, Step};
use crate::mdns::Mdns;
use crate::net::{self, Sockets, MAX_DATAGRAM};
use crate::options::DEFAULT_MIDI2_PORT;
use crate::resolver::Resolver;
use crate::router::{Action, DeviceId, ListenerId, ListenerKind, PeerPortId, Source};
use crate::seq::{SeqAddr, Sequencer};

mod discovery;
mod names;
mod rawmidi;
mod requests;
mod setup;

/// Datagrams read from one socket (or events from the sequencer) before the loop looks at the
/// others, so one flooding source cannot starve the rest.
const READ_BATCH: usize = 256;
/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the engine.
    Protocol,
    /// Retry output the sequencer had no room for.
    SeqFlush,
    /// The nearest deadline of mDNS.
    Mdns,
    /// Look for the raw MIDI devices' paths.
    RawMidi,
}

pub type Ctx = Context<Daemon, TimerId>;

/// A listener's sockets and their registrations with the loop.
struct Listener {
    sockets: Sockets,
    sources: Vec<SourceId>,
}

pub struct Daemon {
    origin: StdInstant,
    started: StdInstant,
    settings: config::Settings,
    /// The command line and the file the settings came from, to reload.
    reload_from: Option<(CommandLine, Option<PathBuf>)>,
    engine: Engine,
    listeners: BTreeMap<ListenerId, Listener>,
    bridge: Option<Bridge<PeerPortId>>,
    seq_sources: Vec<SourceId>,
    /// The `[rawmidi]` devices.
    devices: BTreeMap<DeviceId, Device>,
    recv_buf: Vec<u8>,
    bridge_actions: Vec<bridge::Action<PeerPortId>>,
    mdns: Option<Mdns>,
    mdns_sources: Vec<SourceId>,
    resolver: Option<Resolver>,
    seed: u64,
    /// The control socket, while it is open.
    control: Option<crate::control::Server>,
    /// The configuration file's watch, to reload when it is saved.
    watch: Option<crate::reload::Watch>,
}

/// Where the engine's MIDI for the local side goes.
struct Outlets<'a> {
    bridge: Option<&'a mut Bridge<PeerPortId>>,
    devices: &'a mut BTreeMap<DeviceId, Device>,
}

impl Local for Outlets<'_> {
    fn to_port(&mut self, port: PeerPortId, message: &MidiMessage, after: Option<Duration>) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_port(port, message, after);
        }
    }

    fn to_exported(&mut self, local: SeqAddr, message: &MidiMessage, after: Option<Duration>) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_exported(local, message, after);
        }
    }

    fn to_device(&mut self, device: DeviceId, message: &MidiMessage) {
        if let Some(device) = self.devices.get_mut(&device) {
            device.send(message);
        }
    }
}

impl Daemon {
    /// Binds the main port and builds the graph the settings describe; nothing runs until
    /// [`Daemon::start`].
    pub fn new(
        settings: config::Settings,
        sequencer: Option<Box<dyn Sequencer>>,
        seed: u64,
    ) -> io::Result<Daemon> {
        let sockets = Sockets::apple_midi(net::bind_all(&settings.bind, settings.port)?);
        let mut bridge = sequencer.map(Bridge::new).transpose()?;
        if let (Some(bridge), Some(rule)) = (bridge.as_mut(), settings.export_auto.clone()) {
            bridge.set_auto_export(rule)?;
        }
        let engine = Engine::new(&settings, bridge.is_some(), seed);
        let main = Listener {
            sockets,
            sources: Vec::new(),
        };
        let now = StdInstant::now();
        Ok(Daemon {
            origin: now,
            started: now,
            listeners: BTreeMap::from([(engine.router.main(), main)]),
            engine,
            settings,
            reload_from: None,
            bridge,
            seq_sources: Vec::new(),
            devices: BTreeMap::new(),
            recv_buf: vec![0; MAX_DATAGRAM],
            bridge_actions: Vec::new(),
            mdns: None,
            mdns_sources: Vec::new(),
            resolver: None,
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
        let main = self.engine.router.main();
        if let Some(l) = self.listeners.get_mut(&main) {
            register(l, &self.settings.name, ctx)
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
        self.start_resolver(ctx)?;
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

    /// Datagrams on one of the listeners' sockets (`port`: which AppleMIDI one), each
    /// answered before the next is read.
    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, port: SocketKind) {
        let now = self.now(ctx);
        let Some((&id, l)) = self
            .listeners
            .iter_mut()
            .find(|(_, l)| l.sockets.owns(event.fd))
        else {
            return;
        };
        let mut drained = false;
        for _ in 0..READ_BATCH {
            let Some((len, from)) = l.sockets.receive(event.fd, &mut self.recv_buf) else {
                drained = true;
                break;
            };
            let bytes = &self.recv_buf[..len];
            self.engine.handle_datagram(now, (id, port), from, bytes);
            if let Some(sessions) = self.engine.sessions_mut(id) {
                l.sockets.flush(now, sessions);
            }
        }
        // Edge-triggered: if the batch ended with data left, ask to be told again next turn
        // (only then: it is a system call, and most turns read the socket dry).
        if !drained {
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
            bridge::Action::ToPeer(port, message) => self.forward(now, Source::Port(port), message),
            bridge::Action::FromExported(local, message) => {
                self.forward(now, Source::Network(local), message)
            }
            bridge::Action::PeerWanted(port, on) => {
                self.engine.router.port_subscribed(now, port, on)
            }
            bridge::Action::Export { local, name, on } => {
                let router = &mut self.engine.router;
                match self.bridge.as_ref().and_then(|b| b.export_as(local)) {
                    Some(how) => router.export_changed(local, &how.name, true, how.port, on),
                    None => router.export_changed(local, &name, false, None, on),
                }
            }
        }
    }

    /// MIDI from ALSA or a device, to wherever the router says.
    fn forward(&mut self, now: Instant, from: Source, message: MidiMessage) {
        let mut local = Outlets {
            bridge: self.bridge.as_mut(),
            devices: &mut self.devices,
        };
        self.engine
            .forward(now, from, message, (None, None), &mut local);
    }

    /// Runs the engine until it has nothing more to say: timeouts, datagrams, happenings
    /// (which may queue more datagrams, as the hub does), the router's actions; then re-arms
    /// the loop's timer.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        self.engine.handle_timeout(now);
        self.finish_lookups(now);
        loop {
            // A failure is logged where it happens; the rest goes on.
            let _ = self.run_actions(ctx);
            // A device that failed has its sessions closed by the router.
            let mut busy = self.flush_devices(ctx);
            for (&id, l) in &mut self.listeners {
                if let Some(sessions) = self.engine.sessions_mut(id) {
                    l.sockets.flush(now, sessions);
                }
            }
            let mut local = Outlets {
                bridge: self.bridge.as_mut(),
                devices: &mut self.devices,
            };
            busy |= self.engine.poll_happenings(now, &mut local);
            if !busy {
                break;
            }
        }
        if self.engine.trim_due() {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only releases free memory of the heap; any thread may call it.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        let deadline = self.engine.poll_timeout();
        let lookups = self.resolver.as_ref().and_then(|r| r.poll_timeout());
        match deadline.into_iter().chain(lookups).min() {
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

    /// Carries out what the router asked; the first failure to open a listener is returned
    /// (and logged), the rest goes on.
    fn run_actions(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(action) = self.engine.poll_action(self.now(ctx)) {
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
                        self.engine.router.port_failed(port);
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
            // The engine's own.
            Action::Close(_) => {}
            Action::OpenListener {
                listener,
                name,
                port,
            } => {
                if let Err(e) = self.open_listener(ctx, listener, &name, port) {
                    let why = e.to_string();
                    return self.engine.router.open_failed(listener, &name, port, &why);
                }
            }
            Action::CloseListener(id) => {
                let sessions = self.engine.remove_listener(now, id);
                if let Some(mut l) = self.listeners.remove(&id) {
                    if let Some(mut sessions) = sessions {
                        l.sockets.flush(now, sessions.as_mut());
                    }
                    for source in l.sources.drain(..) {
                        let _ = ctx.deregister(source);
                    }
                }
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

    /// Binds listener `id`'s sockets (`port`: `None` for the first free pair above ours)
    /// and gives it sessions.
    fn open_listener(
        &mut self,
        ctx: &mut Ctx,
        id: ListenerId,
        name: &str,
        port: Option<u16>,
    ) -> io::Result<()> {
        let binds = &self.settings.bind;
        let (sockets, label) = match self.engine.router.listener(id).map(|l| l.kind) {
            Some(ListenerKind::Midi2) => {
                let ports = net::bind_ports(binds, port.unwrap_or(DEFAULT_MIDI2_PORT))?;
                (Sockets::midi2(ports), format!("{name} (MIDI 2.0)"))
            }
            _ => {
                let pairs = match port {
                    Some(port) => net::bind_all(binds, port)?,
                    None => net::bind_free_pair(binds, self.settings.port)?,
                };
                (Sockets::apple_midi(pairs), name.to_string())
            }
        };
        let mut listener = Listener {
            sockets,
            sources: Vec::new(),
        };
        register(&mut listener, &label, ctx)?;
        if let Some(port) = listener.sockets.port() {
            info!("listening as {name:?} on UDP port {port}");
        }
        self.listeners.insert(id, listener);
        self.engine.add_listener(id, name, &self.settings);
        Ok(())
    }

    /// First SIGINT/SIGTERM: BY to every peer, then stop. A second: exit at once.
    fn on_shutdown_signal(&mut self, ctx: &mut Ctx, signal: Signal) {
        if self.engine.shutdown(self.now(ctx)) == Step::Exit {
            warn!("{signal:?} again: exiting at once");
            std::process::exit(1);
        }
        info!("{signal:?}: closing every session");
        self.pump(ctx);
        let now = self.now(ctx);
        if let Some(mdns) = self.mdns.as_mut() {
            info!("mDNS: saying goodbye");
            mdns.shutdown(now);
        }
        ctx.stop();
    }
}

/// Watches a listener's sockets; `label` names it in the log.
fn register(l: &mut Listener, label: &str, ctx: &mut Ctx) -> io::Result<()> {
    for (socket, kind) in l.sockets.each() {
        info!("{label} listening on {}", socket.local_addr()?);
        let on_readable = match kind {
            SocketKind::Control => on_control,
            SocketKind::Data => on_data,
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        l.sources
            .push(ctx.register(fd, Interest::READABLE, on_readable)?);
    }
    Ok(())
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

/// The data socket of a pair, or a Network MIDI 2.0 socket.
fn on_data(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
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
