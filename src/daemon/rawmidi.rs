//! Raw MIDI devices in the shell (`crate::device` holds each file): their paths looked for
//! every [`POLL_INTERVAL`] (a USB device comes and goes with its node), the router told when
//! one appears or goes, each opened while a session uses it, and their reads and writes
//! carried out without blocking the loop.
use std::time::Duration;

use log::{info, warn};
use reactor::Interest;

use super::{Ctx, Daemon, TimerId};
use crate::router::{DeviceId, Source};

/// How often the devices' paths are looked for.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

impl Daemon {
    /// The router asked for the device: open it, or say it is not there.
    pub(super) fn open_device(&mut self, ctx: &mut Ctx, id: DeviceId) {
        let Some(device) = self.devices.get_mut(&id) else {
            return;
        };
        if let Err(e) = device.open(|fd, interest| ctx.register(fd, interest, on_device)) {
            warn!(
                "raw MIDI device {:?}: cannot open {}: {e}",
                device.name,
                device.path.display()
            );
            self.device_failed(ctx, id);
        }
    }

    pub(super) fn close_device(&mut self, ctx: &mut Ctx, id: DeviceId) {
        if let Some(device) = self.devices.get_mut(&id) {
            device.close(|source| drop(ctx.deregister(source)));
        }
    }

    /// The device failed: its sessions end, and it is looked for again a while later.
    fn device_failed(&mut self, ctx: &mut Ctx, id: DeviceId) {
        let now = self.now(ctx);
        self.close_device(ctx, id);
        if let Some(device) = self.devices.get_mut(&id) {
            device.failed(now);
        }
        self.engine.router.device_present(now, id, false);
    }

    /// Looks for each device's path; the router hears of those that came or went.
    pub(super) fn poll_devices(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        for (&id, device) in &mut self.devices {
            let Some(present) = device.look(now) else {
                continue;
            };
            if !present {
                device.close(|source| drop(ctx.deregister(source)));
            }
            self.engine.router.device_present(now, id, present);
        }
        if !self.devices.is_empty() {
            ctx.set_timer(TimerId::RawMidi, ctx.now() + POLL_INTERVAL);
        }
        self.pump(ctx);
    }

    /// Asks the loop to say when a device with messages waiting can take more.
    pub(super) fn arm_devices(&mut self, ctx: &mut Ctx) {
        for device in self.devices.values_mut() {
            if let Some((source, interest)) = device.arm() {
                let _ = ctx.reregister(source, interest);
            }
        }
    }

    /// Writes what the devices have queued (`pump` calls it after routing); true if one
    /// failed (the router has more to say).
    pub(super) fn flush_devices(&mut self, ctx: &mut Ctx) -> bool {
        let failed: Vec<DeviceId> = self
            .devices
            .iter_mut()
            .filter_map(|(&id, d)| {
                let e = d.flush().err()?;
                warn!("raw MIDI device {:?}: write: {e}", d.name);
                Some(id)
            })
            .collect();
        for &id in &failed {
            self.device_failed(ctx, id);
        }
        !failed.is_empty()
    }

    fn read_device(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let found = self
            .devices
            .iter_mut()
            .find(|(_, d)| d.watched_by(event.source));
        let Some((&id, device)) = found else {
            return;
        };
        if event.writable {
            device.writable();
        }
        let mut messages = Vec::new();
        let result = device.read(&mut self.recv_buf, &mut messages);
        for message in messages {
            self.forward(now, Source::Device(id), message);
        }
        match result {
            // Edge-triggered: a batch that ended with data left is reported again.
            Ok(true) => {
                let _ = ctx.reregister(event.source, Interest::READABLE);
            }
            Ok(false) => {}
            Err(e) => {
                if let Some(d) = self.devices.get(&id) {
                    info!("raw MIDI device {:?}: read: {e}", d.name);
                }
                self.device_failed(ctx, id);
            }
        }
        self.pump(ctx);
    }
}

fn on_device(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    daemon.read_device(ctx, event);
}
