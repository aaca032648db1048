//! Raw MIDI devices (`[rawmidi NAME]`): a character device or FIFO that speaks MIDI bytes.
//! Its path is looked for every [`POLL_INTERVAL`] (a USB device comes and goes with its node);
//! the router is told when it appears or goes, and asks for it to be opened while a session
//! uses it. Reads and writes never block the loop: bytes read are split into messages, and
//! messages the device has no room for wait in a bounded queue (`crate::rawmidi`).
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use log::{debug, info, warn};
use protocol::midi::{MidiMessage, MAX_SYSEX};
use protocol::stream::StreamParser;
use reactor::{Interest, SourceId};

use super::{Ctx, Daemon, TimerId};
use crate::rawmidi::{Outbox, Presence};
use crate::router::{DeviceId, Source};

/// How often the devices' paths are looked for.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Reads from one device before the loop looks at the others.
const READ_BATCH: usize = 64;

pub struct Device {
    pub name: String,
    path: PathBuf,
    presence: Presence,
    open: Option<Open>,
}

struct Open {
    file: File,
    source: SourceId,
    readable: bool,
    writable: bool,
    parser: StreamParser,
    out: Outbox,
    /// Whether the loop was asked to say when the device can take more.
    armed: bool,
}

impl Device {
    pub fn new(name: &str, path: PathBuf) -> Device {
        Device {
            name: name.to_string(),
            path,
            presence: Presence::default(),
            open: None,
        }
    }

    /// Opens the device without blocking: read and write if it allows, else the one it
    /// allows (a FIFO may be one or the other for us).
    fn open(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let try_open = |read: bool, write: bool| {
            OpenOptions::new()
                .read(read)
                .write(write)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&self.path)
                .map(|f| (f, read, write))
        };
        let (file, readable, writable) = try_open(true, true)
            .or_else(|_| try_open(true, false))
            .or_else(|_| try_open(false, true))?;
        let interest = if readable {
            Interest::READABLE
        } else {
            Interest::WRITABLE
        };
        let source = ctx.register(file.as_raw_fd(), interest, on_device)?;
        info!(
            "raw MIDI device {:?}: {} opened",
            self.name,
            self.path.display()
        );
        self.open = Some(Open {
            file,
            source,
            readable,
            writable,
            parser: StreamParser::new(MAX_SYSEX),
            out: Outbox::new(&self.name),
            armed: !readable,
        });
        Ok(())
    }

    fn close(&mut self, ctx: &mut Ctx) {
        if let Some(open) = self.open.take() {
            let _ = ctx.deregister(open.source);
            if open.out.dropped() > 0 {
                warn!(
                    "raw MIDI device {:?}: {} message(s) dropped in all: it took them too slowly",
                    self.name,
                    open.out.dropped()
                );
            }
            debug!("raw MIDI device {:?} closed", self.name);
        }
    }

    /// Writes a message, or queues it behind the others.
    pub fn send(&mut self, message: &MidiMessage) {
        if let Some(open) = self.open.as_mut().filter(|o| o.writable) {
            open.out.push(message.as_bytes());
        }
    }

    /// Writes what is queued until the device is full. An error means it is gone.
    fn flush(&mut self) -> io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        while let Some(next) = open.out.next() {
            match open.file.write(next) {
                Ok(n) => open.out.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads a batch of bytes into messages. `Ok(true)`: more may be waiting. EOF or an
    /// error means it is gone.
    fn read(&mut self, buf: &mut [u8], messages: &mut Vec<MidiMessage>) -> io::Result<bool> {
        let Some(open) = self.open.as_mut().filter(|o| o.readable) else {
            return Ok(false);
        };
        for _ in 0..READ_BATCH {
            match open.file.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => open.parser.feed(&buf[..n], |m| messages.push(m)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Daemon {
    /// The router asked for the device: open it, or say it is not there.
    pub(super) fn open_device(&mut self, ctx: &mut Ctx, id: DeviceId) {
        let Some(device) = self.devices.get_mut(&id) else {
            return;
        };
        if let Err(e) = device.open(ctx) {
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
            device.close(ctx);
        }
    }

    /// The device failed: its sessions end, and it is looked for again a while later.
    fn device_failed(&mut self, ctx: &mut Ctx, id: DeviceId) {
        let now = self.now(ctx);
        if let Some(device) = self.devices.get_mut(&id) {
            device.close(ctx);
            device.presence.failed(now);
        }
        self.engine.router.device_present(now, id, false);
    }

    /// Looks for each device's path; the router hears of those that came or went.
    pub(super) fn poll_devices(&mut self, ctx: &mut Ctx) {
        let now = self.now(ctx);
        for (&id, device) in &mut self.devices {
            let path = &device.path;
            let Some(present) = device.presence.look(now, || path.exists()) else {
                continue;
            };
            if !present {
                device.close(ctx);
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
            if let Some(open) = device.open.as_mut() {
                if !open.out.is_empty() && !open.armed {
                    open.armed = true;
                    let interest = if open.readable {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::WRITABLE
                    };
                    let _ = ctx.reregister(open.source, interest);
                }
            }
        }
    }

    /// Writes what the devices have queued (`pump` calls it after routing); true if one
    /// failed (the router has more to say).
    pub(super) fn flush_devices(&mut self, ctx: &mut Ctx) -> bool {
        let failed: Vec<(DeviceId, io::Error)> = self
            .devices
            .iter_mut()
            .filter_map(|(&id, d)| d.flush().err().map(|e| (id, e)))
            .collect();
        for (id, e) in &failed {
            if let Some(d) = self.devices.get(id) {
                warn!("raw MIDI device {:?}: write: {e}", d.name);
            }
            self.device_failed(ctx, *id);
        }
        !failed.is_empty()
    }

    fn read_device(&mut self, ctx: &mut Ctx, event: reactor::Event) {
        let now = self.now(ctx);
        let found = self
            .devices
            .iter_mut()
            .find(|(_, d)| d.open.as_ref().is_some_and(|o| o.source == event.source));
        let Some((&id, device)) = found else {
            return;
        };
        if event.writable {
            if let Some(open) = device.open.as_mut() {
                open.armed = false;
            }
        }
        let mut messages = Vec::new();
        let result = device.read(&mut self.recv_buf, &mut messages);
        for message in messages {
            self.forward(now, Source::Device(id), message);
        }
        match result {
            // Edge-triggered: a batch that ended with data left is reported again.
            Ok(true) => {
                if let Some(open) = self.devices.get_mut(&id).and_then(|d| d.open.as_mut()) {
                    let _ = ctx.reregister(open.source, Interest::READABLE);
                }
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
