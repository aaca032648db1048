//! The configuration in the shell: the file's sections applied at start (the router's through
//! `Router::configure`, ALSA's and the devices' here), the control socket opened, the file
//! watched, and reloads carried out (`Engine::reconfigure`, then the log).
use std::path::Path;

use log::{debug, error, info, log, warn};
use reactor::Interest;

use super::{Ctx, Daemon};
use crate::bridge::{ExportAs, PortMatch};
use crate::config::{self, Action};
use crate::device::Device;
use crate::reload::Watch;

impl Daemon {
    /// The connections, `[export]`, `[listener]` and `[rawmidi]` sections of the settings. A
    /// listener that cannot open stops the start (a device's waits for it instead).
    pub(super) fn apply_sections(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let now = self.now(ctx);
        for (id, r) in self.engine.router.configure(now, &self.settings) {
            let device = Device::new(&r.name, r.device.clone());
            self.devices.insert(id, device);
        }
        match self.bridge.as_mut() {
            Some(bridge) => {
                for e in &self.settings.exports {
                    let how = ExportAs {
                        name: e.name.clone(),
                        port: e.port,
                    };
                    bridge
                        .add_export_section(PortMatch::parse(&e.alsa_port), how)
                        .map_err(|e| format!("cannot watch ALSA ports for [export]: {e}"))?;
                }
            }
            None => {
                for e in &self.settings.exports {
                    warn!("[export {}] ignored: the daemon runs without ALSA", e.name);
                }
                if self.settings.export_auto.is_some() {
                    warn!("export_auto ignored: the daemon runs without ALSA");
                }
            }
        }
        self.run_actions(ctx)
            .map_err(|e| format!("[listener]: {e}"))?;
        // The devices there now get their listeners at once; the rest are looked for.
        self.poll_devices(ctx);
        Ok(())
    }

    /// A control socket asked for explicitly must open; the default one may fail (no
    /// /run/rtpmidid for an ordinary user) with a warning.
    pub(super) fn open_control(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let path = self.settings.control.clone();
        match crate::control::Server::start::<Daemon>(&path, ctx) {
            Ok(server) => self.control = Some(server),
            Err(e) if self.settings.control_required => {
                return Err(format!(
                    "cannot open the control socket {}: {e}",
                    path.display()
                ))
            }
            Err(e) => warn!(
                "no control socket: cannot open {}: {e} (set one with --control)",
                path.display()
            ),
        }
        Ok(())
    }

    /// Reloads when `path` is saved.
    pub(super) fn watch_file(&mut self, ctx: &mut Ctx, path: &Path) {
        let watch = Watch::new(path).and_then(|w| {
            ctx.register(w.fd(), Interest::READABLE, on_file_change)
                .map(|_| w)
        });
        match watch {
            Ok(watch) => self.watch = Some(watch),
            Err(e) => warn!("cannot watch {} for changes: {e}", path.display()),
        }
    }

    /// Reads the configuration file again and applies what changed; a broken file changes
    /// nothing.
    pub fn reload(&mut self, ctx: &mut Ctx, why: &str) {
        let Some((options, Some(path))) = &self.reload_from else {
            info!("{why}: no configuration file to reload");
            return;
        };
        let file = match config::read(path) {
            Ok(file) => file,
            Err(e) => {
                error!("{why}: configuration refused, the running one stays: {e}");
                return;
            }
        };
        let new = config::resolve(options, &file, config::hostname);
        let actions = config::diff(&self.settings, &new);
        if actions.is_empty() {
            info!("{why}: configuration unchanged");
        } else {
            info!("{why}: configuration reloaded, {} change(s)", actions.len());
        }
        self.settings = new;
        for action in actions {
            self.apply(ctx, action);
        }
        self.pump(ctx);
    }

    fn apply(&mut self, ctx: &mut Ctx, action: Action) {
        let now = self.now(ctx);
        self.engine.reconfigure(now, &action, &self.settings);
        if let Some((level, line)) = action.note() {
            log!(level, "{line}");
        }
        // The log level is the process's; the rest is the engine's, or only a note.
        if let Action::SetLogLevel(level) = action {
            if std::env::var_os("RUST_LOG").is_none() {
                log::set_max_level(level);
            }
        }
    }
}

fn on_file_change(daemon: &mut Daemon, ctx: &mut Ctx, _event: reactor::Event) {
    if daemon.watch.as_ref().is_some_and(Watch::ours) {
        debug!("configuration file changed");
        daemon.reload(ctx, "file changed");
    }
}
