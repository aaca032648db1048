//! The seam between the daemon and the ALSA sequencer.
//!
//! The daemon sees whole MIDI messages ([`MidiMessage`], split once, on the way in) and
//! subscription notices; only `alsa.rs` talks to libasound. `fake.rs` keeps queues in memory so
//! the rest of the daemon is tested in ordinary unit tests.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use protocol::midi::MidiMessage;

pub mod alsa;
#[cfg(test)]
pub mod fake;
mod ready;

/// A port of our own client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u8);

/// A sequencer address, `client:port` (the kernel's `snd_seq_addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqAddr {
    pub client: u8,
    pub port: u8,
}

impl SeqAddr {
    /// `client:port` numbers, as aconnect writes them.
    pub fn parse(text: &str) -> Option<SeqAddr> {
        let (c, p) = text.split_once(':')?;
        Some(SeqAddr {
            client: c.trim().parse().ok()?,
            port: p.trim().parse().ok()?,
        })
    }
}

impl std::fmt::Display for SeqAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.client, self.port)
    }
}

/// What other clients may do with a port. Subscriptions are always allowed for what is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCaps {
    /// Others may read (subscribe to) what we send on it.
    pub read: bool,
    /// Others may write to it; we receive what they send.
    pub write: bool,
}

impl PortCaps {
    pub const DUPLEX: PortCaps = PortCaps {
        read: true,
        write: true,
    };
}

/// Which way a subscription to one of our ports carries events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The peer receives what we send on the port.
    ToPeer,
    /// The peer sends to the port.
    FromPeer,
}

/// A subscription to or from one of our ports, made or removed by anyone but us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub port: PortId,
    pub peer: SeqAddr,
    pub direction: Direction,
    /// The peer's client and port names, when it still exists to be asked.
    pub peer_client_name: Option<String>,
    pub peer_port_name: Option<String>,
}

/// A port of another client, as [`Sequencer::watch_ports`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub addr: SeqAddr,
    pub client_name: String,
    pub port_name: String,
    /// The port stands for a device (its type has `SND_SEQ_PORT_TYPE_HARDWARE`, as USB and
    /// other rawmidi ports do); otherwise it is software.
    pub hardware: bool,
    /// Others may subscribe to what it sends.
    pub readable: bool,
    /// Others may subscribe it to what they send.
    pub writable: bool,
}

/// What [`Sequencer::recv`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqInput {
    /// A MIDI message that arrived on `port` from `source`. One message an input, so that a
    /// short one travels inline, without a heap allocation; a SysEx is whole (at most
    /// [`protocol::midi::MAX_SYSEX`] bytes), however many ALSA events carried it. A 14-bit
    /// controller, NRPN or RPN event comes as the control changes it stands for, one an input.
    Midi {
        port: PortId,
        source: SeqAddr,
        message: MidiMessage,
    },
    Subscribed(Subscription),
    Unsubscribed(Subscription),
    /// With [`Sequencer::watch_ports`]: a port of another client exists (it did when watching
    /// began, or it just started).
    PortStarted(PortInfo),
    /// ... and it is gone.
    PortExited(SeqAddr),
    /// The kernel's input queue for us overflowed: events were lost (and any SysEx being
    /// reassembled with them).
    Overrun,
}

/// The sequencer as the daemon uses it.
///
/// Non-blocking throughout: `recv` returns `Ok(None)` when nothing is waiting, and what the
/// sequencer cannot take yet waits in a bounded backlog until [`flush`](Sequencer::flush).
pub trait Sequencer {
    /// Descriptors to poll, all of them: one is readable while `recv` has input, input that
    /// alsa-lib already read from the kernel included (so a reader may stop after a batch and
    /// poll again); writable when `flush` can make progress.
    fn fds(&self) -> io::Result<Vec<RawFd>>;
    /// Creates a port on our client named `name`.
    fn create_port(&mut self, name: &str, caps: PortCaps) -> io::Result<PortId>;
    fn delete_port(&mut self, port: PortId) -> io::Result<()>;
    /// The next input, or `None` once drained.
    fn recv(&mut self) -> io::Result<Option<SeqInput>>;
    /// Sends `message` (a SysEx of any length) from `port` to its subscribers, or only to `to`
    /// when given, at once. It is taken whole or not at all: when the backlog is full the call
    /// fails with [`io::ErrorKind::WouldBlock`]. Messages ALSA has no event for (F4, F5, F9,
    /// FD) are skipped.
    fn send(&mut self, port: PortId, to: Option<SeqAddr>, message: &MidiMessage) -> io::Result<()>;
    /// Like [`send`](Sequencer::send), but delivered `after` from now by the sequencer's
    /// queue. Messages scheduled for the same time leave in the order they were given; a SysEx
    /// still paced out holds back the non-realtime messages behind it.
    fn send_at(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        after: Duration,
    ) -> io::Result<()>;
    /// Reports the ports of other clients as [`SeqInput::PortStarted`] and
    /// [`SeqInput::PortExited`]: those that exist now, then as they come and go.
    fn watch_ports(&mut self) -> io::Result<()>;
    /// Subscribes `to` to what `from` sends; one of them is ours. The kernel tells both owners
    /// as for anyone's subscription.
    fn connect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()>;
    /// Removes that subscription, whoever made it; the kernel tells the other owner.
    fn disconnect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()>;
    /// Another client's port as [`SeqInput::PortStarted`] would report it; `None` if there is
    /// none at `addr` (or it is ours).
    fn describe_port(&self, addr: SeqAddr) -> Option<PortInfo>;
    /// Our client number.
    fn client(&self) -> u8;
    /// Retries the backlog; call it when `backlog() > 0` and the fds are writable.
    fn flush(&mut self) -> io::Result<()>;
    /// Events waiting for room in the sequencer.
    fn backlog(&self) -> usize;
}

/// The daemon holds its sequencer as a trait object.
impl Sequencer for Box<dyn Sequencer> {
    fn fds(&self) -> io::Result<Vec<RawFd>> {
        (**self).fds()
    }
    fn create_port(&mut self, name: &str, caps: PortCaps) -> io::Result<PortId> {
        (**self).create_port(name, caps)
    }
    fn delete_port(&mut self, port: PortId) -> io::Result<()> {
        (**self).delete_port(port)
    }
    fn recv(&mut self) -> io::Result<Option<SeqInput>> {
        (**self).recv()
    }
    fn send(&mut self, port: PortId, to: Option<SeqAddr>, message: &MidiMessage) -> io::Result<()> {
        (**self).send(port, to, message)
    }
    fn send_at(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        after: Duration,
    ) -> io::Result<()> {
        (**self).send_at(port, to, message, after)
    }
    fn watch_ports(&mut self) -> io::Result<()> {
        (**self).watch_ports()
    }
    fn connect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        (**self).connect(from, to)
    }
    fn disconnect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        (**self).disconnect(from, to)
    }
    fn describe_port(&self, addr: SeqAddr) -> Option<PortInfo> {
        (**self).describe_port(addr)
    }
    fn client(&self) -> u8 {
        (**self).client()
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn backlog(&self) -> usize {
        (**self).backlog()
    }
}
