//! The configuration in the shell: the file's sections applied at start (the router's through
//! `Engine::configure`, ALSA's and the devices' here), the control socket opened, the file
//! watched, and reloads carried out (`Engine::reload`).
use std::path::Path;

use log::{debug, error, info};

use super::{Ctx, Daemon};
use crate::bridge::{ExportAs, PortMatch};
use crate::config;
use crate::control::Server;
use crate::device::Device;
use crate::reload::Watch;

impl Daemon {
    /// The connections, `[export]`, `[listener]` and `[rawmidi]` sections of the settings. A
    /// listener that cannot open stops the start (a device's waits for it instead).
    pub(super) fn apply_sections(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let now = self.now(ctx);
        for (id, r) in self.engine.configure(now) {
            self.local
                .devices
                .insert(id, Device::new(&r.name, r.device.clone()));
        }
        if let Some(bridge) = self.local.bridge.as_mut() {
            let exports = &self.engine.settings().exports;
            let add = |e: &config::Export| {
                let how = ExportAs {
                    name: e.name.clone(),
                    port: e.port,
                };
                bridge.add_export_section(PortMatch::parse(&e.alsa_port), how)
            };
            exports
                .iter()
                .try_for_each(add)
                .map_err(|e| format!("cannot watch ALSA ports for [export]: {e}"))?;
        }
        self.run_actions(ctx)
            .map_err(|e| format!("[listener]: {e}"))?;
        // The devices there now get their listeners at once; the rest are looked for.
        self.look_for_devices(ctx);
        Ok(())
    }

    /// The control socket ([`Server::open`]: one asked for must open).
    pub(super) fn open_control(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let s = self.engine.settings();
        self.control = Server::open(&s.control.clone(), s.control_required, ctx)?;
        Ok(())
    }

    /// Reloads when `path` is saved.
    pub(super) fn watch_file(&mut self, ctx: &mut Ctx, path: &Path) {
        self.watch = Watch::start(ctx, path, on_file_change);
    }

    /// Reads the configuration file again and applies what changed; a broken file changes
    /// nothing.
    pub fn reload(&mut self, ctx: &mut Ctx, why: &str) {
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
}

fn on_file_change(daemon: &mut Daemon, ctx: &mut Ctx, _event: reactor::Event) {
    if daemon.watch.as_ref().is_some_and(Watch::ours) {
        debug!("configuration file changed");
        daemon.reload(ctx, "file changed");
    }
}
