//! A raw MIDI device file (`[rawmidi NAME]`): a character device or FIFO that speaks MIDI
//! bytes, opened without blocking; bytes read are split into messages, and messages it has no
//! room for wait in a bounded queue (`crate::rawmidi`). [`Devices`] holds them all and their
//! registrations in the loop.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::Hash;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use log::{debug, info, warn};
use protocol::midi::{MidiMessage, MAX_SYSEX};
use protocol::stream::StreamParser;
use protocol::time::Instant;
use reactor::{Context, Event, Handler, Interest, SourceId};

use crate::rawmidi::{Outbox, Presence};

/// Reads from one device before the loop looks at the others.
const READ_BATCH: usize = 64;
/// Bytes one read takes.
const READ_BUFFER: usize = 64 * 1024;

pub struct Device {
    pub name: String,
    pub path: PathBuf,
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

    /// Opens the device without blocking, read and write if it allows, else the one it
    /// allows (a FIFO may be one or the other for us); `register` watches its fd.
    pub fn open(
        &mut self,
        register: impl FnOnce(RawFd, Interest) -> io::Result<SourceId>,
    ) -> io::Result<()> {
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
        let source = register(file.as_raw_fd(), interest)?;
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

    /// Closes it; `deregister` forgets its fd.
    pub fn close(&mut self, deregister: impl FnOnce(SourceId)) {
        if let Some(open) = self.open.take() {
            deregister(open.source);
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

    /// Whether it is open and its fd is `source`.
    pub fn watched_by(&self, source: SourceId) -> bool {
        self.open.as_ref().is_some_and(|o| o.source == source)
    }

    /// Its path looked for at `now`: whether it came (`Some(true)`) or went.
    pub fn look(&mut self, now: Instant) -> Option<bool> {
        let path = &self.path;
        self.presence.look(now, || path.exists())
    }

    /// It failed at `now`: it counts as gone for a while.
    pub fn failed(&mut self, now: Instant) {
        self.presence.failed(now);
    }

    /// Writes a message, or queues it behind the others.
    pub fn send(&mut self, message: &MidiMessage) {
        if let Some(open) = self.open.as_mut().filter(|o| o.writable) {
            open.out.push(message.as_bytes());
        }
    }

    /// Writes what is queued until the device is full. An error means it is gone.
    pub fn flush(&mut self) -> io::Result<()> {
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

    /// With messages waiting and the loop not yet asked to say when it can take more: its
    /// registration and the interest to ask for (marked asked).
    pub fn arm(&mut self) -> Option<(SourceId, Interest)> {
        let open = self.open.as_mut()?;
        if open.out.is_empty() || open.armed {
            return None;
        }
        open.armed = true;
        let interest = if open.readable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        Some((open.source, interest))
    }

    /// The loop said it can take more.
    pub fn writable(&mut self) {
        if let Some(open) = self.open.as_mut() {
            open.armed = false;
        }
    }

    /// Reads a batch of bytes into messages. `Ok(true)`: more may be waiting. EOF or an
    /// error means it is gone.
    pub fn read(&mut self, buf: &mut [u8], messages: &mut Vec<MidiMessage>) -> io::Result<bool> {
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

/// The `[rawmidi]` devices by id, with their registrations in the loop. A device that fails
/// is closed and counts as gone for a while; the caller tells the router.
pub struct Devices<K> {
    by_id: BTreeMap<K, Device>,
    buf: Vec<u8>,
}

impl<K: Ord + Copy> Devices<K> {
    pub fn new() -> Self {
        Devices {
            by_id: BTreeMap::new(),
            buf: vec![0; READ_BUFFER],
        }
    }

    pub fn insert(&mut self, id: K, device: Device) {
        self.by_id.insert(id, device);
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Opens device `id`, watched with `handler`; false if it failed (it counts as gone).
    pub fn open<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        id: K,
        handler: Handler<S, T>,
    ) -> bool {
        let Some(device) = self.by_id.get_mut(&id) else {
            return true;
        };
        let Err(e) = device.open(|fd, interest| ctx.register(fd, interest, handler)) else {
            return true;
        };
        let path = device.path.display();
        warn!("raw MIDI device {:?}: cannot open {path}: {e}", device.name);
        device.failed(now);
        false
    }

    pub fn close<S, T: Eq + Hash + Clone>(&mut self, ctx: &mut Context<S, T>, id: K) {
        if let Some(device) = self.by_id.get_mut(&id) {
            device.close(|source| drop(ctx.deregister(source)));
        }
    }

    /// Looks for each device's path; `changed` hears of those that came or went.
    pub fn look<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        mut changed: impl FnMut(K, bool),
    ) {
        for (&id, device) in &mut self.by_id {
            let Some(present) = device.look(now) else {
                continue;
            };
            if !present {
                device.close(|source| drop(ctx.deregister(source)));
            }
            changed(id, present);
        }
    }

    /// Writes what the devices have queued; `failed` hears of each that failed.
    pub fn flush<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        mut failed: impl FnMut(K),
    ) {
        for (&id, device) in &mut self.by_id {
            if let Err(e) = device.flush() {
                warn!("raw MIDI device {:?}: write: {e}", device.name);
                device.close(|source| drop(ctx.deregister(source)));
                device.failed(now);
                failed(id);
            }
        }
    }

    /// Asks the loop to say when a device with messages waiting can take more.
    pub fn arm<S, T: Eq + Hash + Clone>(&mut self, ctx: &mut Context<S, T>) {
        for device in self.by_id.values_mut() {
            if let Some((source, interest)) = device.arm() {
                let _ = ctx.reregister(source, interest);
            }
        }
    }

    /// The device `event` is about became writable, or has bytes: a batch of them read into
    /// `messages`. Its id, and whether it failed.
    pub fn ready<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        now: Instant,
        event: Event,
        messages: &mut Vec<MidiMessage>,
    ) -> Option<(K, bool)> {
        let found = self
            .by_id
            .iter_mut()
            .find(|(_, d)| d.watched_by(event.source));
        let (&id, device) = found?;
        if event.writable {
            device.writable();
        }
        match device.read(&mut self.buf, messages) {
            // Edge-triggered: a batch that ended with data left is reported again.
            Ok(true) => {
                let _ = ctx.reregister(event.source, Interest::READABLE);
                Some((id, false))
            }
            Ok(false) => Some((id, false)),
            Err(e) => {
                info!("raw MIDI device {:?}: read: {e}", device.name);
                device.close(|source| drop(ctx.deregister(source)));
                device.failed(now);
                Some((id, true))
            }
        }
    }

    /// Writes a message to device `id`, or queues it behind the others.
    pub fn send(&mut self, id: K, message: &MidiMessage) {
        if let Some(device) = self.by_id.get_mut(&id) {
            device.send(message);
        }
    }
}
