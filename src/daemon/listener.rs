//! A listener's OS side: its UDP port pairs, their registrations with the loop, and the
//! protocol endpoint whose datagrams they carry.
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info};
use protocol::endpoint::Endpoint;
use protocol::session::Port;
use protocol::time::Instant;
use reactor::{Interest, SourceId};

use super::{on_control, on_data, Ctx};
use crate::net::{self, PortPair};

/// Export listeners take the first free port pair above the main one, this many tries.
const FREE_PAIR_TRIES: u16 = 64;

pub struct Listener {
    pub name: String,
    pub endpoint: Endpoint,
    pub sockets: Vec<PortPair>,
    sources: Vec<SourceId>,
}

impl Listener {
    pub fn new(name: &str, endpoint: Endpoint, sockets: Vec<PortPair>) -> Listener {
        Listener {
            name: name.to_string(),
            endpoint,
            sockets,
            sources: Vec::new(),
        }
    }

    /// Watches its sockets, once.
    pub fn register(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        if !self.sources.is_empty() {
            return Ok(());
        }
        for pair in &self.sockets {
            info!(
                "{} listening on {} and {}",
                self.name,
                pair.control.local_addr()?,
                pair.data.local_addr()?
            );
            let control = ctx.register(pair.control.as_raw_fd(), Interest::READABLE, on_control)?;
            self.sources.push(control);
            let data = ctx.register(pair.data.as_raw_fd(), Interest::READABLE, on_data)?;
            self.sources.push(data);
        }
        Ok(())
    }

    pub fn deregister(&mut self, ctx: &mut Ctx) {
        for source in self.sources.drain(..) {
            let _ = ctx.deregister(source);
        }
    }

    /// Its control port (the first pair's).
    pub fn port(&self) -> Option<u16> {
        let pair = self.sockets.first()?;
        pair.control.local_addr().ok().map(|a| a.port())
    }

    /// The index of its pair whose `port` socket is `fd`.
    pub fn pair_of(&self, fd: RawFd, port: Port) -> Option<usize> {
        self.sockets
            .iter()
            .position(|p| socket(p, port).as_raw_fd() == fd)
    }

    /// Sends what its sessions want to send, each from the socket that reaches it.
    pub fn flush(&mut self, now: Instant, buf: &mut [u8]) {
        while let Some(t) = self.endpoint.poll_transmit(now, buf) {
            let Some(pair) = self.sockets.iter().find(|p| p.reaches(&t.dst)) else {
                debug!("no socket can reach {}", t.dst);
                continue;
            };
            if let Err(e) = socket(pair, t.port).send_to(&buf[..t.len], pair.wire_addr(t.dst)) {
                debug!("send to {}: {e}", t.dst);
            }
        }
    }
}

pub fn socket(pair: &PortPair, port: Port) -> &std::net::UdpSocket {
    match port {
        Port::Control => &pair.control,
        Port::Data => &pair.data,
    }
}

/// The first free port pair above `base`.
pub fn bind_free_pair(binds: &[IpAddr], base: u16) -> io::Result<Vec<PortPair>> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port pair");
    for step in 1..=FREE_PAIR_TRIES {
        let Some(port) = base.checked_add(2 * step) else {
            break;
        };
        match net::bind_all(binds, port) {
            Ok(sockets) => return Ok(sockets),
            Err(e) => last = e,
        }
    }
    Err(last)
}
