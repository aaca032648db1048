//! The daemon's shell: the loop's handlers and timers, wiring each OS contact (the listeners'
//! sockets in `net`, the sequencer through `bridge`, the device files in `device`, `mdns`, the
//! resolver, the control socket, the file watch) to the [`Engine`], which decides everything
//! without I/O; this only translates what they say and carries out what it answers.
use std::io;
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use log::{error, info, warn};
use protocol::midi::MidiMessage;
use protocol::session::SocketKind;
use protocol::time::{Duration, Instant};
use reactor::{Context, Interest, Signal};

use crate::bridge::{self, Bridge};
use crate::config;
use crate::config::CommandLine;
use crate::device::Devices;
use crate::engine::{Engine, Local, Step};
use crate::mdns::Mdns;
use crate::net::{Bind, Listeners};
use crate::options::DEFAULT_MIDI2_PORT;
use crate::resolver::Resolver;
use crate::router::{Action, DeviceId, ListenerId, ListenerKind, PeerPortId, Source};
use crate::seq::{SeqAddr, Sequencer};

mod discovery;
mod names;
mod requests;
mod setup;

/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// How often the raw MIDI devices' paths are looked for (a USB device comes and goes with its
/// node).
const DEVICE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the engine and the resolver.
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
    /// Time zero of the engine's clock, and the start of the uptime.
    started: StdInstant,
    /// The command line and the file the settings came from, to reload.
    reload_from: Option<(CommandLine, Option<PathBuf>)>,
    engine: Engine,
    listeners: Listeners<ListenerId>,
    bridge: Option<Bridge<PeerPortId>>,
    /// The `[rawmidi]` devices.
    devices: Devices<DeviceId>,
    mdns: Option<Mdns>,
    resolver: Option<Resolver>,
    seed: u64,
    /// The control socket, while it is open.
    control: Option<crate::control::Server>,
    /// The configuration file's watch, to reload when it is saved.
    watch: Option<crate::reload::Watch>,
    /// Scratch, kept to not allocate per read.
    bridge_actions: Vec<bridge::Action<PeerPortId>>,
    messages: Vec<MidiMessage>,
}

/// Where the engine's MIDI for the local side goes.
struct Outlets<'a> {
    bridge: Option<&'a mut Bridge<PeerPortId>>,
    devices: &'a mut Devices<DeviceId>,
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
        self.devices.send(device, message);
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
        let mut bridge = sequencer.map(Bridge::new).transpose()?;
        if let (Some(bridge), Some(rule)) = (bridge.as_mut(), settings.export_auto.clone()) {
            bridge.set_auto_export(rule)?;
        }
        let mut listeners = Listeners::new();
        let main = Bind::AppleMidi(settings.port);
        let engine = Engine::new(settings, bridge.is_some(), seed);
        listeners.bind(engine.router.main(), &engine.settings().bind, main)?;
        Ok(Daemon {
            started: StdInstant::now(),
            engine,
            listeners,
            reload_from: None,
            bridge,
            devices: Devices::new(),
            mdns: None,
            resolver: None,
            seed,
            control: None,
            watch: None,
            bridge_actions: Vec::new(),
            messages: Vec::new(),
        })
    }

    /// Registers the sockets and the sequencer, opens the file's sections, the control socket,
    /// the file watch and mDNS.
    pub fn start(
        &mut self,
        ctx: &mut Ctx,
        command_line: CommandLine,
        path: Option<PathBuf>,
    ) -> Result<(), String> {
        let (main, name) = (self.engine.router.main(), &self.engine.settings().name);
        self.listeners
            .watch(ctx, main, name, [on_control, on_data])
            .map_err(|e| format!("cannot register sockets: {e}"))?;
        let mut watch = |fd| ctx.register(fd, Interest::READABLE, on_sequencer).map(drop);
        let fds = self.bridge.as_ref().map_or(Ok(Vec::new()), |b| b.fds());
        fds.and_then(|fds| fds.into_iter().try_for_each(&mut watch))
            .map_err(|e| format!("cannot watch the sequencer: {e}"))?;
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
        let since = ctx.now().saturating_duration_since(self.started);
        Instant::from_micros(since.as_micros() as u64)
    }

    fn to_std_time(&self, t: Instant) -> StdInstant {
        self.started + std::time::Duration::from_micros(t.as_micros())
    }

    /// Datagrams on one of the listeners' `kind` sockets, each answered before the next.
    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, kind: SocketKind) {
        let now = self.now(ctx);
        let engine = &mut self.engine;
        self.listeners.read(ctx, event, |id, from, bytes, sockets| {
            engine.handle_datagram(now, (id, kind), from, bytes);
            if let Some(sessions) = engine.sessions_mut(id) {
                sockets.flush(now, sessions);
            }
        });
        self.pump(ctx);
    }

    /// What the sequencer has, to the engine.
    fn read_sequencer(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let mut actions = std::mem::take(&mut self.bridge_actions);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.read(ctx, event, &mut actions);
        }
        self.handle_alsa(self.now(ctx), &mut actions);
        self.bridge_actions = actions;
        self.pump(ctx);
    }

    fn handle_alsa(&mut self, now: Instant, actions: &mut Vec<bridge::Action<PeerPortId>>) {
        let mut local = Outlets {
            bridge: self.bridge.as_mut(),
            devices: &mut self.devices,
        };
        for action in actions.drain(..) {
            self.engine.handle_alsa(now, action, &mut local);
        }
    }

    /// A device became writable or has bytes: its MIDI to wherever the router says.
    fn read_device(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut messages = std::mem::take(&mut self.messages);
        let ready = self.devices.ready(ctx, now, event, &mut messages);
        if let Some((id, failed)) = ready {
            let mut local = Outlets {
                bridge: self.bridge.as_mut(),
                devices: &mut self.devices,
            };
            for message in messages.drain(..) {
                let from = Source::Device(id);
                self.engine
                    .forward(now, from, message, (None, None), &mut local);
            }
            if failed {
                self.engine.router.device_present(now, id, false);
            }
        }
        self.messages = messages;
        self.pump(ctx);
    }

    /// Looks for the devices' paths; the router hears of those that came or went.
    fn look_for_devices(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        let router = &mut self.engine.router;
        let changed = |id, present| router.device_present(now, id, present);
        self.devices.look(ctx, now, changed);
        if !self.devices.is_empty() {
            ctx.set_timer(TimerId::RawMidi, ctx.now() + DEVICE_POLL);
        }
        self.pump(ctx);
    }

    /// Runs the engine until it has nothing more to say: timeouts, datagrams, happenings
    /// (which may queue more datagrams, as the hub does), the router's actions; then re-arms
    /// the loop's timers.
    fn pump(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        self.engine.handle_timeout(now);
        self.finish_lookups(now);
        loop {
            // A failure is logged where it happens; the rest goes on.
            let _ = self.run_actions(ctx);
            // A device that failed has its sessions closed by the router.
            let mut busy = false;
            let router = &mut self.engine.router;
            self.devices.flush(ctx, now, |id| {
                router.device_present(now, id, false);
                busy = true;
            });
            for (id, sockets) in self.listeners.each_mut() {
                if let Some(sessions) = self.engine.sessions_mut(id) {
                    sockets.flush(now, sessions);
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
            Some(at) => ctx.set_timer(TimerId::Protocol, self.to_std_time(at)),
            None => {
                ctx.cancel_timer(&TimerId::Protocol);
            }
        }
        if self.bridge.as_ref().is_some_and(|b| b.backlog() > 0) {
            ctx.set_timer(TimerId::SeqFlush, ctx.now() + SEQ_RETRY);
        }
        self.devices.arm(ctx);
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
                let bridge = self.bridge.as_mut();
                if let Some(Err(e)) = bridge.map(|b| b.add_peer(port, &name)) {
                    self.engine.router.port_failed(port);
                    return Err(format!("cannot create an ALSA port for {name:?}: {e}"));
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
                let mut sessions = self.engine.remove_listener(now, id);
                let last = |sockets: &mut crate::net::Sockets| {
                    if let Some(sessions) = sessions.as_mut() {
                        sockets.flush(now, sessions.as_mut());
                    }
                };
                self.listeners.close(ctx, id, last);
            }
            Action::Announce(id) => self.announce(ctx, id),
            Action::OpenDevice(id) => {
                if !self.devices.open(ctx, now, id, on_device) {
                    self.engine.router.device_present(now, id, false);
                }
            }
            Action::CloseDevice(id) => self.devices.close(ctx, id),
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
        let settings = self.engine.settings();
        let midi2 = self.engine.router.listener(id).map(|l| l.kind) == Some(ListenerKind::Midi2);
        let (bind, label) = match (midi2, port) {
            (true, _) => (
                Bind::Midi2(port.unwrap_or(DEFAULT_MIDI2_PORT)),
                format!("{name} (MIDI 2.0)"),
            ),
            (false, Some(port)) => (Bind::AppleMidi(port), name.to_string()),
            (false, None) => (Bind::AppleMidiAbove(settings.port), name.to_string()),
        };
        self.listeners.bind(id, &settings.bind, bind)?;
        if let Err(e) = self.listeners.watch(ctx, id, &label, [on_control, on_data]) {
            self.listeners.close(ctx, id, |_| {});
            return Err(e);
        }
        if let Some(port) = self.listeners.port(id) {
            info!("listening as {name:?} on UDP port {port}");
        }
        self.engine.add_listener(id, name);
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

fn on_device(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_device(ctx, event);
}

pub fn on_timer(daemon: &mut Daemon, ctx: &mut Ctx, timer: TimerId) {
    match timer {
        TimerId::Mdns => return daemon.mdns_timeout(ctx),
        TimerId::RawMidi => return daemon.look_for_devices(ctx),
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
