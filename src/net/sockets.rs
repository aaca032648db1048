//! A listener's UDP sockets: AppleMIDI's control/data pair per address or Network MIDI 2.0's
//! one port per address; datagrams read one at a time and sent in batches.
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use log::debug;
use protocol::session::SocketKind;
use protocol::time::Instant;

use super::batch::SendBatch;
use super::{canonical, PortPair, UdpPort};
use crate::sessions::Sessions;

pub struct Sockets {
    kind: Kind,
    batch: SendBatch,
}

enum Kind {
    AppleMidi(Vec<PortPair>),
    Midi2(Vec<UdpPort>),
}

impl Sockets {
    pub fn apple_midi(pairs: Vec<PortPair>) -> Sockets {
        Sockets {
            kind: Kind::AppleMidi(pairs),
            batch: SendBatch::new(),
        }
    }

    pub fn midi2(ports: Vec<UdpPort>) -> Sockets {
        Sockets {
            kind: Kind::Midi2(ports),
            batch: SendBatch::new(),
        }
    }

    /// Each socket, its kind (MIDI 2.0's are `Data`) and local address.
    pub fn each(&self) -> Vec<(&UdpSocket, SocketKind)> {
        match &self.kind {
            Kind::AppleMidi(pairs) => pairs
                .iter()
                .flat_map(|p| {
                    [
                        (&p.control, SocketKind::Control),
                        (&p.data, SocketKind::Data),
                    ]
                })
                .collect(),
            Kind::Midi2(ports) => ports
                .iter()
                .map(|p| (&p.socket, SocketKind::Data))
                .collect(),
        }
    }

    /// Its socket `fd`.
    fn socket(&self, fd: RawFd) -> Option<&UdpSocket> {
        match &self.kind {
            Kind::AppleMidi(pairs) => pairs
                .iter()
                .flat_map(|p| [&p.control, &p.data])
                .find(|s| s.as_raw_fd() == fd),
            Kind::Midi2(ports) => ports
                .iter()
                .map(|p| &p.socket)
                .find(|s| s.as_raw_fd() == fd),
        }
    }

    /// Is `fd` one of its sockets?
    pub fn owns(&self, fd: RawFd) -> bool {
        self.socket(fd).is_some()
    }

    /// Its (control) port.
    pub fn port(&self) -> Option<u16> {
        let (socket, _) = *self.each().first()?;
        socket.local_addr().ok().map(|a| a.port())
    }

    /// A datagram from socket `fd`, its sender as the protocols see it; `None` once drained
    /// (or not its socket).
    pub fn receive(&self, fd: RawFd, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let socket = self.socket(fd)?;
        loop {
            match socket.recv_from(buf) {
                Ok((len, from)) => return Some((len, canonical(from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // ICMP errors from earlier sends surface here; they concern no one datagram.
                Err(e) => debug!("receive: {e}"),
            }
        }
    }

    /// Sends what `sessions` want to send, each from the socket that reaches it.
    pub fn flush(&mut self, now: Instant, sessions: &mut dyn Sessions) {
        while let Some(t) = sessions.poll_transmit(now, self.batch.room()) {
            let found = match &self.kind {
                Kind::AppleMidi(pairs) => pairs.iter().find(|p| p.reaches(&t.dst)).map(|p| {
                    let socket = match t.port {
                        SocketKind::Control => &p.control,
                        SocketKind::Data => &p.data,
                    };
                    (socket.as_raw_fd(), p.wire_addr(t.dst))
                }),
                Kind::Midi2(ports) => ports
                    .iter()
                    .find(|p| p.reaches(&t.dst))
                    .map(|p| (p.socket.as_raw_fd(), p.wire_addr(t.dst))),
            };
            match found {
                Some((fd, to)) => self.batch.push(fd, to, t.len),
                None => debug!("no socket can reach {}", t.dst),
            }
        }
        self.batch.send();
    }
}
