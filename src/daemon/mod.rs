//! The daemon's shell: the loop's handlers and timers, wiring each OS contact (the listeners'
//! sockets in `net`, the sequencer through `bridge`, the device files in `device`, lookups and
//! mDNS in `names`, the control socket, the file watch) to the [`Engine`], which decides
//! everything without I/O; this only translates what they say and carries out what it answers.
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use log::{debug, error, info, warn};
use protocol::session::SocketKind;
use protocol::time::Instant;
use reactor::{Context, Signal};

use crate::config;
use crate::config::CommandLine;
use crate::control::Server;
use crate::ctl::proto::Status;
use crate::device::Device;
use crate::engine::{Engine, Step};
use crate::names::Names;
use crate::net::ListenerSockets;
use crate::options::Bind;
use crate::reload::Watch;
use crate::router::{Action, ListenerId};
use crate::seq::Sequencer;

use self::local::LocalSide;

mod local;
mod names;
mod requests;
#[cfg(test)]
mod tests;

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
}

impl Daemon {
    /// Binds the main port, opens the sequencer's side and the resolver's socket, and builds
    /// the graph the settings describe; nothing runs until [`Daemon::start`].
    pub fn new(
        settings: config::Settings,
        sequencer: Option<Box<dyn Sequencer>>,
        seed: u64,
    ) -> Result<Daemon, String> {
        let clock = Clock(StdInstant::now());
        let local = LocalSide::open(sequencer, &settings, clock)?;
        let mut sockets = ListenerSockets::new();
        let port = settings.port;
        let engine = Engine::new(settings, local.bridge.is_some(), seed);
        let main = (engine.router.main(), &engine.settings().bind);
        sockets
            .bind(main.0, main.1, Bind::AppleMidi(port))
            .map_err(|e| format!("cannot start on UDP port {port}: {e}"))?;
        Ok(Daemon {
            clock,
            engine,
            sockets,
            reload_from: None,
            about: Status::default(),
            local,
            names: Names::open(seed.rotate_left(17))?,
            control: None,
            watch: None,
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
        self.watch_sequencer(ctx)?;
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
            let mut busy = self.flush_devices(ctx, now);
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
        self.local.arm(ctx);
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
            Action::CreatePort { port, name } => return self.create_port(port, &name),
            Action::DeletePort(port) => self.local.delete_port(port),
            Action::OpenDevice(id) => self.open_device(ctx, now, id),
            Action::CloseDevice(id) => self.local.devices.close(ctx, id),
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
        TimerId::SeqFlush => daemon.local.flush_sequencer(),
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
