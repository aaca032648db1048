//! The daemon's shell: the loop's handlers and timers, wiring each OS contact (the listeners'
//! sockets in `net`, the sequencer through `bridge`, the device files in `device`, lookups and
//! mDNS in `names`, the control socket, the file watch) to the [`Engine`], which decides
//! everything without I/O; this only translates what they say and carries out what it answers.
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use log::{debug, error, info, warn};
use protocol::midi::MidiMessage;
use protocol::session::SocketKind;
use protocol::time::{Duration, Instant};
use reactor::{Context, Signal};

use crate::bridge::{self, Bridge, ExportAs, PortMatch};
use crate::config;
use crate::config::CommandLine;
use crate::control::Server;
use crate::ctl::proto::Status;
use crate::device::{Device, Devices};
use crate::engine::{Engine, Local, Step};
use crate::names::Names;
use crate::net::ListenerSockets;
use crate::options::Bind;
use crate::reload::Watch;
use crate::router::{Action, DeviceId, ListenerId, PeerPortId, Source};
use crate::seq::{SeqAddr, Sequencer};

mod names;
mod requests;
#[cfg(test)]
mod tests;

/// Retry period while the sequencer's output is full.
const SEQ_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// How often the raw MIDI devices' paths are looked for (a USB device comes and goes with its
/// node).
const DEVICE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The nearest deadline of the engine, the lookups and mDNS.
    Protocol,
    /// Retry output the sequencer had no room for.
    SeqFlush,
    /// Look for the raw MIDI devices' paths.
    RawMidi,
}

pub type Ctx = Context<Daemon, TimerId>;

/// The engine's clock: time since the daemon started (its uptime).
#[derive(Clone, Copy)]
struct Clock(StdInstant);

impl Clock {
    fn at(self, t: StdInstant) -> Instant {
        Instant::from_micros(t.saturating_duration_since(self.0).as_micros() as u64)
    }

    fn to_std(self, t: Instant) -> StdInstant {
        self.0 + std::time::Duration::from_micros(t.as_micros())
    }
}

pub struct Daemon {
    clock: Clock,
    /// The command line and the file the settings came from, to reload.
    reload_from: Option<(CommandLine, Option<PathBuf>)>,
    /// What `ctl status` says that only the shell knows.
    about: Status,
    engine: Engine,
    sockets: ListenerSockets<ListenerId>,
    local: LocalSide,
    names: Names,
    /// The control socket, if it opened.
    control: Option<Server>,
    /// The configuration file's watch, to reload when it is saved.
    watch: Option<Watch>,
    /// Scratch, kept to not allocate per read.
    bridge_actions: Vec<bridge::Action<PeerPortId>>,
    messages: Vec<MidiMessage>,
}

/// This machine's side: the ALSA bridge (without `--no-alsa`) and the raw MIDI devices, where
/// the engine's MIDI for it goes.
struct LocalSide {
    bridge: Option<Bridge<PeerPortId>>,
    devices: Devices<DeviceId>,
    clock: Clock,
}

impl LocalSide {
    /// How long until `at`, from the clock read now: what the turn took before this send (a
    /// long turn, as after a stall) must not delay the playout.
    fn after(&self, at: Option<Instant>) -> Option<Duration> {
        at.map(|at| at.saturating_duration_since(self.clock.at(StdInstant::now())))
    }
}

impl Local for LocalSide {
    fn to_port(&mut self, port: PeerPortId, message: &MidiMessage, at: Option<Instant>) {
        let after = self.after(at);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_port(port, message, after);
        }
    }

    fn to_exported(&mut self, local: SeqAddr, message: &MidiMessage, at: Option<Instant>) {
        let after = self.after(at);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.send_to_exported(local, message, after);
        }
    }

    fn to_device(&mut self, device: DeviceId, message: &MidiMessage) {
        self.devices.send(device, message);
    }
}

impl Daemon {
    /// Binds the main port, opens the sequencer's side and the resolver's socket, and builds
    /// the graph the settings describe; nothing runs until [`Daemon::start`].
    pub fn new(
        settings: config::Settings,
        sequencer: Option<Box<dyn Sequencer>>,
        seed: u64,
    ) -> Result<Daemon, String> {
        let bridge = sequencer.map(Bridge::new).transpose();
        let mut bridge = bridge.map_err(|e| format!("ALSA sequencer: {e}"))?;
        if let Some(bridge) = bridge.as_mut() {
            let watch = |e| format!("cannot watch ALSA ports to export: {e}");
            if let Some(rule) = settings.export_auto.clone() {
                bridge.set_auto_export(rule).map_err(watch)?;
            }
            for e in &settings.exports {
                let how = ExportAs {
                    name: e.name.clone(),
                    port: e.port,
                };
                let ports = PortMatch::parse(&e.alsa_port);
                bridge.add_export_section(ports, how).map_err(watch)?;
            }
        }
        let mut sockets = ListenerSockets::new();
        let port = settings.port;
        let engine = Engine::new(settings, bridge.is_some(), seed);
        let main = (engine.router.main(), &engine.settings().bind);
        sockets
            .bind(main.0, main.1, Bind::AppleMidi(port))
            .map_err(|e| format!("cannot start on UDP port {port}: {e}"))?;
        let clock = Clock(StdInstant::now());
        Ok(Daemon {
            clock,
            engine,
            sockets,
            reload_from: None,
            about: Status::default(),
            local: LocalSide {
                bridge,
                devices: Devices::new(),
                clock,
            },
            names: Names::open(seed.rotate_left(17))?,
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
        self.sockets
            .watch(ctx, main, name, ON_SOCKETS)
            .map_err(|e| format!("cannot register sockets: {e}"))?;
        if let Some(bridge) = &self.local.bridge {
            bridge
                .watch(ctx, |d, ctx, e| d.read_sequencer(ctx, e))
                .map_err(|e| format!("cannot watch the sequencer: {e}"))?;
        }
        self.names.watch(ctx, names::on_resolver)?;
        // The connections, `[listener]` and `[rawmidi]` sections: a listener that cannot open
        // stops the start (a device's waits for it instead).
        for (id, r) in self.engine.configure(self.now(ctx)) {
            let device = Device::new(&r.name, r.device.clone());
            self.local.devices.insert(id, device);
        }
        self.run_actions(ctx)
            .map_err(|e| format!("[listener]: {e}"))?;
        // The devices there now get their listeners at once; the rest are looked for.
        self.look_for_devices(ctx);
        let s = self.engine.settings();
        self.control = Server::open(&s.control.clone(), s.control_required, ctx)?;
        if let Some(path) = &path {
            self.watch = Watch::start(ctx, path, on_file_change);
        }
        self.about = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            alsa: self.local.bridge.is_some(),
            config: path.as_ref().map(|p| p.display().to_string()),
            ..Status::default()
        };
        self.reload_from = Some((command_line, path));
        self.start_mdns(ctx);
        self.pump(ctx);
        Ok(())
    }

    fn now(&self, ctx: &Ctx) -> Instant {
        self.clock.at(ctx.now())
    }

    /// Datagrams on one of the listeners' `kind` sockets, each answered before the next.
    fn read_socket(&mut self, ctx: &mut Ctx, event: reactor::Event, kind: SocketKind) {
        let now = self.now(ctx);
        let engine = &mut self.engine;
        self.sockets.read(ctx, event, |id, from, bytes, sockets| {
            engine.handle_datagram(now, (id, kind), from, bytes);
            if let Some(sessions) = engine.sessions_mut(id) {
                sockets.flush(now, sessions);
            }
        });
        self.pump(ctx);
    }

    /// What the sequencer has, to the engine.
    fn read_sequencer(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut actions = std::mem::take(&mut self.bridge_actions);
        if let Some(bridge) = self.local.bridge.as_mut() {
            bridge.read(ctx, event, &mut actions);
        }
        for action in actions.drain(..) {
            self.engine.handle_alsa(now, action, &mut self.local);
        }
        self.bridge_actions = actions;
        self.pump(ctx);
    }

    /// A device became writable or has bytes: its MIDI to wherever the router says.
    fn read_device(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let mut messages = std::mem::take(&mut self.messages);
        let ready = self.local.devices.ready(ctx, now, event, &mut messages);
        if let Some((id, failed)) = ready {
            for message in messages.drain(..) {
                let from = Source::Device(id);
                self.engine
                    .forward(now, from, message, (None, None), &mut self.local);
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
        self.local.devices.look(ctx, now, changed);
        if !self.local.devices.is_empty() {
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
        self.names_events(now);
        loop {
            // A failure is logged where it happens; the rest goes on.
            let _ = self.run_actions(ctx);
            // A device that failed has its sessions closed by the router.
            let mut busy = false;
            let router = &mut self.engine.router;
            self.local.devices.flush(ctx, now, |id| {
                router.device_present(now, id, false);
                busy = true;
            });
            for (id, sockets) in self.sockets.each_mut() {
                if let Some(sessions) = self.engine.sessions_mut(id) {
                    sockets.flush(now, sessions);
                }
            }
            busy |= self.engine.poll_happenings(now, &mut self.local);
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
        let names = self.names.poll_timeout();
        match self.engine.poll_timeout().into_iter().chain(names).min() {
            Some(at) => ctx.set_timer(TimerId::Protocol, self.clock.to_std(at)),
            None => {
                ctx.cancel_timer(&TimerId::Protocol);
            }
        }
        if self.local.bridge.as_ref().is_some_and(|b| b.backlog() > 0) {
            ctx.set_timer(TimerId::SeqFlush, ctx.now() + SEQ_RETRY);
        }
        self.local.devices.arm(ctx);
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
                let bridge = self.local.bridge.as_mut();
                if let Some(Err(e)) = bridge.map(|b| b.add_peer(port, &name)) {
                    self.engine.router.port_failed(port);
                    return Err(format!("cannot create an ALSA port for {name:?}: {e}"));
                }
            }
            Action::DeletePort(port) => {
                if let Some(bridge) = self.local.bridge.as_mut() {
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
                let bind = self.engine.bind_of(listener, port);
                let binds = (self.engine.settings().bind.as_slice(), bind);
                match self.sockets.open(ctx, listener, binds, &name, ON_SOCKETS) {
                    Ok(()) => self.engine.add_listener(listener, &name),
                    Err(e) => {
                        let why = e.to_string();
                        return self.engine.router.open_failed(listener, &name, port, &why);
                    }
                }
            }
            Action::CloseListener(id) => {
                let mut sessions = self.engine.remove_listener(now, id);
                let last = |sockets: &mut crate::net::Sockets| {
                    if let Some(sessions) = sessions.as_mut() {
                        sockets.flush(now, sessions.as_mut());
                    }
                };
                self.sockets.close(ctx, id, last);
            }
            Action::Announce(id) => self.announce(now, id),
            Action::OpenDevice(id) => {
                if !self
                    .local
                    .devices
                    .open(ctx, now, id, |d, ctx, e| d.read_device(ctx, e))
                {
                    self.engine.router.device_present(now, id, false);
                }
            }
            Action::CloseDevice(id) => self.local.devices.close(ctx, id),
            Action::Withdraw(id) => self.names.withdraw(now, id.index()),
        }
        Ok(())
    }

    /// Reads the configuration file again and applies what changed; a broken file changes
    /// nothing.
    fn reload(&mut self, ctx: &mut Ctx, why: &str) {
        let Some((options, Some(path))) = &self.reload_from else {
            info!("{why}: no configuration file to reload");
            return;
        };
        let new = match config::read(path) {
            Ok(file) => config::resolve(options, &file, config::hostname),
            Err(e) => {
                error!("{why}: configuration refused, the running one stays: {e}");
                return;
            }
        };
        let level = self.engine.reload(self.now(ctx), new, why);
        // The log level is the process's.
        if let Some(level) = level.filter(|_| std::env::var_os("RUST_LOG").is_none()) {
            log::set_max_level(level);
        }
        self.pump(ctx);
    }

    /// First SIGINT/SIGTERM: BY to every peer, then stop. A second: exit at once.
    fn on_shutdown_signal(&mut self, ctx: &mut Ctx, signal: Signal) {
        if self.engine.shutdown(self.now(ctx)) == Step::Exit {
            warn!("{signal:?} again: exiting at once");
            std::process::exit(1);
        }
        info!("{signal:?}: closing every session");
        self.pump(ctx);
        self.names.shutdown(self.now(ctx));
        ctx.stop();
    }
}

/// A listener's control sockets, then its data sockets (a Network MIDI 2.0 socket's kind).
const ON_SOCKETS: [reactor::Handler<Daemon, TimerId>; 2] = [
    |d, ctx, event| d.read_socket(ctx, event, SocketKind::Control),
    |d, ctx, event| d.read_socket(ctx, event, SocketKind::Data),
];

pub fn on_timer(daemon: &mut Daemon, ctx: &mut Ctx, timer: TimerId) {
    match timer {
        TimerId::RawMidi => return daemon.look_for_devices(ctx),
        TimerId::SeqFlush => {
            if let Some(bridge) = daemon.local.bridge.as_mut() {
                bridge.flush();
            }
        }
        TimerId::Protocol => {}
    }
    daemon.pump(ctx);
}

fn on_file_change(daemon: &mut Daemon, ctx: &mut Ctx, _event: reactor::Event) {
    if daemon.watch.as_ref().is_some_and(Watch::ours) {
        debug!("configuration file changed");
        daemon.reload(ctx, "file changed");
    }
}

pub fn on_signal(daemon: &mut Daemon, ctx: &mut Ctx, signal: Signal) {
    match signal {
        Signal::SIGHUP => daemon.reload(ctx, "SIGHUP"),
        Signal::SIGINT | Signal::SIGTERM => daemon.on_shutdown_signal(ctx, signal),
        other => error!("unexpected signal {other:?}"),
    }
}
