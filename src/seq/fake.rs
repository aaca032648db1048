//! An in-memory sequencer for unit tests of the daemon.
//!
//! Tests push what local applications would send or do (`push_*`) and read what the daemon
//! sent (`take_sent`). The fd is readable while input waits, so a poll loop wakes for it as
//! for the real one.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use protocol::midi::MidiMessage;
use protocol::stream::StreamParser;

use super::ready::ReadyFd;
use super::{PortCaps, PortId, PortInfo, SeqAddr, SeqInput, Sequencer, Subscription};

/// A message given to `send_at`: port, destination, delay, bytes.
pub type Timed = (PortId, Option<SeqAddr>, Duration, Vec<u8>);

pub struct FakeSequencer {
    ports: BTreeMap<PortId, (String, PortCaps)>,
    next_port: u8,
    inbox: VecDeque<SeqInput>,
    sent: Vec<(PortId, Option<SeqAddr>, Vec<u8>)>,
    timed: Vec<Timed>,
    /// Ports other clients have, reported once `watch_ports` is called.
    others: Vec<PortInfo>,
    /// Every port `add_other_port` added, for `describe_port`.
    known: Vec<PortInfo>,
    watching: bool,
    connections: Vec<(SeqAddr, SeqAddr)>,
    /// Messages `send` accepts before it reports a full sequencer.
    room: Option<usize>,
    /// `watch_ports` fails, as when the sequencer's announce port cannot be subscribed to.
    refuse_watch: bool,
    ready: ReadyFd,
}

impl FakeSequencer {
    pub fn new() -> io::Result<Self> {
        Ok(FakeSequencer {
            ports: BTreeMap::new(),
            next_port: 0,
            inbox: VecDeque::new(),
            sent: Vec::new(),
            timed: Vec::new(),
            others: Vec::new(),
            known: Vec::new(),
            watching: false,
            connections: Vec::new(),
            room: None,
            refuse_watch: false,
            ready: ReadyFd::new()?,
        })
    }

    /// Ports that exist, with their names and capabilities.
    pub fn ports(&self) -> &BTreeMap<PortId, (String, PortCaps)> {
        &self.ports
    }

    /// The port named `name`, if any.
    pub fn port(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|(&id, _)| id)
    }

    pub fn push(&mut self, input: SeqInput) {
        self.inbox.push_back(input);
        self.ready.set(true);
    }

    /// What a local application sending `bytes` to `port` makes: one input a message.
    pub fn push_midi(&mut self, port: PortId, source: SeqAddr, bytes: &[u8]) {
        let inbox = &mut self.inbox;
        StreamParser::default().feed(bytes, |message| {
            inbox.push_back(SeqInput::Midi {
                port,
                source,
                message,
            })
        });
        self.ready.set(!self.inbox.is_empty());
    }

    pub fn push_subscribed(&mut self, sub: Subscription) {
        self.push(SeqInput::Subscribed(sub));
    }

    pub fn push_unsubscribed(&mut self, sub: Subscription) {
        self.push(SeqInput::Unsubscribed(sub));
    }

    /// What `send` delivered so far, one entry per message, and forgets it.
    pub fn take_sent(&mut self) -> Vec<(PortId, Option<SeqAddr>, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }

    /// A port of another client: reported by `watch_ports` if it has not been called yet,
    /// else at once.
    pub fn add_other_port(&mut self, info: PortInfo) {
        self.known.push(info.clone());
        if self.watching {
            self.push(SeqInput::PortStarted(info));
        } else {
            self.others.push(info);
        }
    }

    /// The connections `connect` made, and forgets them.
    pub fn take_connections(&mut self) -> Vec<(SeqAddr, SeqAddr)> {
        std::mem::take(&mut self.connections)
    }

    /// What `send_at` delivered so far, one entry per message, and forgets it.
    pub fn take_timed(&mut self) -> Vec<Timed> {
        std::mem::take(&mut self.timed)
    }

    /// The bytes of `message`, or a full sequencer's error when the room is used up.
    fn accept(&mut self, port: PortId, message: &MidiMessage) -> io::Result<Vec<u8>> {
        if !self.ports.contains_key(&port) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such port"));
        }
        match self.room {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "fake sequencer full",
                ))
            }
            Some(room) => self.room = Some(room - 1),
            None => {}
        }
        Ok(message.as_bytes().to_vec())
    }

    /// Makes `watch_ports` fail.
    pub fn refuse_watch(&mut self) {
        self.refuse_watch = true;
    }

    /// Makes `send` accept `messages` more messages, then fail as a full sequencer does;
    /// `None` for no limit.
    pub fn set_room(&mut self, messages: Option<usize>) {
        self.room = messages;
    }
}

impl Sequencer for FakeSequencer {
    fn fds(&self) -> io::Result<Vec<RawFd>> {
        Ok(vec![self.ready.fd()])
    }

    fn create_port(&mut self, name: &str, caps: PortCaps) -> io::Result<PortId> {
        let id = PortId(self.next_port);
        self.next_port = self.next_port.checked_add(1).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "fake sequencer out of ports")
        })?;
        self.ports.insert(id, (name.to_owned(), caps));
        Ok(id)
    }

    fn delete_port(&mut self, port: PortId) -> io::Result<()> {
        self.ports
            .remove(&port)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such port"))
    }

    fn recv(&mut self) -> io::Result<Option<SeqInput>> {
        let input = self.inbox.pop_front();
        self.ready.set(!self.inbox.is_empty());
        Ok(input)
    }

    fn send(&mut self, port: PortId, to: Option<SeqAddr>, message: &MidiMessage) -> io::Result<()> {
        let bytes = self.accept(port, message)?;
        self.sent.push((port, to, bytes));
        Ok(())
    }

    fn send_at(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        after: Duration,
    ) -> io::Result<()> {
        let bytes = self.accept(port, message)?;
        self.timed.push((port, to, after, bytes));
        Ok(())
    }

    fn watch_ports(&mut self) -> io::Result<()> {
        if self.refuse_watch {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.watching = true;
        for info in std::mem::take(&mut self.others) {
            self.push(SeqInput::PortStarted(info));
        }
        Ok(())
    }

    fn connect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        self.connections.push((from, to));
        Ok(())
    }

    /// Forgets a connection `connect` made and not yet taken; others are an error, as for
    /// the kernel.
    fn disconnect(&mut self, from: SeqAddr, to: SeqAddr) -> io::Result<()> {
        match self.connections.iter().position(|c| *c == (from, to)) {
            Some(i) => {
                self.connections.remove(i);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, "not connected")),
        }
    }

    fn describe_port(&self, addr: SeqAddr) -> Option<PortInfo> {
        self.known.iter().find(|p| p.addr == addr).cloned()
    }

    /// The fake is client 128, the first a user gets.
    fn client(&self) -> u8 {
        128
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn backlog(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::Direction;
    use super::*;

    #[test]
    fn fd_is_readable_exactly_while_input_waits() {
        let mut seq = FakeSequencer::new().unwrap();
        let fd = seq.fds().unwrap()[0];
        let readable = |fd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(fd));
        let port = seq.create_port("a", PortCaps::DUPLEX).unwrap();
        let src = SeqAddr {
            client: 20,
            port: 0,
        };
        seq.push_midi(port, src, &[0x90, 60, 1]);
        seq.push_subscribed(Subscription {
            port,
            peer: src,
            direction: Direction::FromPeer,
            peer_client_name: Some("x".into()),
            peer_port_name: None,
        });
        assert!(readable(fd));
        assert!(matches!(seq.recv().unwrap(), Some(SeqInput::Midi { .. })));
        assert!(matches!(seq.recv().unwrap(), Some(SeqInput::Subscribed(_))));
        assert!(!readable(fd));
        assert_eq!(seq.recv().unwrap(), None);
    }

    #[test]
    fn send_records_messages_and_can_be_full() {
        let mut seq = FakeSequencer::new().unwrap();
        let port = seq.create_port("a", PortCaps::DUPLEX).unwrap();
        assert_eq!(seq.port("a"), Some(port));
        let message = |bytes: &[u8]| MidiMessage::from_bytes(bytes).unwrap();
        seq.set_room(Some(2));
        seq.send(port, None, &message(&[0x90, 60, 1])).unwrap();
        seq.send(port, None, &message(&[0x90, 61, 1])).unwrap();
        let err = seq.send(port, None, &message(&[0xF8])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            seq.take_sent(),
            [
                (port, None, vec![0x90, 60, 1]),
                (port, None, vec![0x90, 61, 1])
            ]
        );
        seq.set_room(None);
        seq.send_at(port, None, &message(&[0xF8]), Duration::from_millis(3))
            .unwrap();
        assert_eq!(
            seq.take_timed(),
            [(port, None, Duration::from_millis(3), vec![0xF8])]
        );
        seq.delete_port(port).unwrap();
        assert!(seq.send(port, None, &message(&[0xF8])).is_err());
    }
}
