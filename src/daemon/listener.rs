//! A listener's OS side: its UDP sockets, their registrations with the loop, and the datagrams
//! between them and its sessions (`crate::sessions`) — AppleMIDI (a control/data port pair
//! per address) or Network MIDI 2.0 (one port per address).
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info};
use protocol::endpoint::{Dropped, Endpoint, SessionId};
use protocol::session::SocketKind;
use protocol::time::Instant;
use reactor::{Interest, SourceId};

use super::{on_control, on_data, on_midi2, Ctx};
use crate::net::{self, PortPair, UdpPort};
use crate::sessions::{AppleMidi, Happening, Midi2, Sessions};

/// Datagrams read from one socket before the loop looks at the others, so one flooding source
/// cannot starve the rest.
const READ_BATCH: usize = 256;
/// Export listeners take the first free port pair above the main one, this many tries.
const FREE_PAIR_TRIES: u16 = 64;

pub struct Listener {
    pub name: String,
    server: Server,
    sources: Vec<SourceId>,
}

// A handful per daemon: their sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Server {
    AppleMidi {
        sessions: AppleMidi,
        sockets: Vec<PortPair>,
        batch: SendBatch,
    },
    Midi2 {
        sessions: Midi2,
        sockets: Vec<UdpPort>,
    },
}

impl Listener {
    pub fn apple_midi(name: &str, endpoint: Endpoint, sockets: Vec<PortPair>) -> Listener {
        let server = Server::AppleMidi {
            sessions: AppleMidi::new(endpoint),
            sockets,
            batch: SendBatch::default(),
        };
        Listener::new(name, server)
    }

    pub fn midi2(name: &str, sessions: Midi2, sockets: Vec<UdpPort>) -> Listener {
        Listener::new(name, Server::Midi2 { sessions, sockets })
    }

    fn new(name: &str, server: Server) -> Listener {
        Listener {
            name: name.to_string(),
            server,
            sources: Vec::new(),
        }
    }

    pub fn sessions(&self) -> &dyn Sessions {
        match &self.server {
            Server::AppleMidi { sessions, .. } => sessions,
            Server::Midi2 { sessions, .. } => sessions,
        }
    }

    pub fn sessions_mut(&mut self) -> &mut dyn Sessions {
        match &mut self.server {
            Server::AppleMidi { sessions, .. } => sessions,
            Server::Midi2 { sessions, .. } => sessions,
        }
    }

    // What `pump` asks of every listener, said of the listener.

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sessions_mut().handle_timeout(now)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions().poll_timeout()
    }

    pub fn poll_happening(&mut self) -> Option<(SessionId, Happening)> {
        self.sessions_mut().poll_happening()
    }

    /// Watches its sockets, once.
    pub fn register(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        if !self.sources.is_empty() {
            return Ok(());
        }
        match &self.server {
            Server::AppleMidi { sockets, .. } => {
                for pair in sockets {
                    info!(
                        "{} listening on {} and {}",
                        self.name,
                        pair.control.local_addr()?,
                        pair.data.local_addr()?
                    );
                    let fd = pair.control.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_control)?);
                    let fd = pair.data.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_data)?);
                }
            }
            Server::Midi2 { sockets, .. } => {
                for port in sockets {
                    info!(
                        "{} (MIDI 2.0) listening on {}",
                        self.name,
                        port.socket.local_addr()?
                    );
                    let fd = port.socket.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_midi2)?);
                }
            }
        }
        Ok(())
    }

    pub fn deregister(&mut self, ctx: &mut Ctx) {
        for source in self.sources.drain(..) {
            let _ = ctx.deregister(source);
        }
    }

    /// Is `fd` one of its sockets?
    pub fn owns(&self, fd: RawFd) -> bool {
        [SocketKind::Control, SocketKind::Data]
            .into_iter()
            .any(|port| self.socket(fd, port).is_some())
    }

    /// Its socket `fd`, if it is the `port` kind (MIDI 2.0 sockets are of every kind).
    fn socket(&self, fd: RawFd, port: SocketKind) -> Option<&std::net::UdpSocket> {
        match &self.server {
            Server::AppleMidi { sockets, .. } => sockets
                .iter()
                .map(|p| socket(p, port))
                .find(|s| s.as_raw_fd() == fd),
            Server::Midi2 { sockets, .. } => sockets
                .iter()
                .map(|p| &p.socket)
                .find(|s| s.as_raw_fd() == fd),
        }
    }

    /// Its (control) port.
    pub fn port(&self) -> Option<u16> {
        let addr = match &self.server {
            Server::AppleMidi { sockets, .. } => sockets.first()?.control.local_addr(),
            Server::Midi2 { sockets, .. } => sockets.first()?.socket.local_addr(),
        };
        addr.ok().map(|a| a.port())
    }

    /// Reads up to a batch of datagrams from its socket `fd` (`port`: which AppleMIDI socket),
    /// answering as it goes. Dropped datagrams go to `dropped`.
    pub fn read(
        &mut self,
        now: Instant,
        (fd, port): (RawFd, SocketKind),
        (recv_buf, send_buf): (&mut [u8], &mut [u8]),
        dropped: &mut dyn FnMut(Dropped, SocketAddr, usize),
    ) {
        for _ in 0..READ_BATCH {
            let Some(socket) = self.socket(fd, port) else {
                return;
            };
            let Some((len, from)) = receive(socket, recv_buf) else {
                return;
            };
            let sessions = self.sessions_mut();
            if let Err(why) = sessions.handle_datagram(now, port, from, &recv_buf[..len]) {
                dropped(why, from, len);
            }
            self.flush(now, send_buf);
        }
    }

    /// Sends what its sessions want to send, each from the socket that reaches it.
    pub fn flush(&mut self, now: Instant, buf: &mut [u8]) {
        match &mut self.server {
            Server::AppleMidi {
                sessions,
                sockets,
                batch,
            } => flush_apple_midi(&mut sessions.endpoint, sockets, batch, now, buf),
            Server::Midi2 { sessions, sockets } => {
                flush_midi2(&mut sessions.endpoint, sockets, now, buf)
            }
        }
    }
}

fn socket(pair: &PortPair, port: SocketKind) -> &std::net::UdpSocket {
    match port {
        SocketKind::Control => &pair.control,
        SocketKind::Data => &pair.data,
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

/// A datagram from `socket`, its sender as the protocols see it; `None` once drained.
fn receive(socket: &std::net::UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Ok((len, from)) => return Some((len, net::canonical(from))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // ICMP errors from earlier sends surface here; they concern no one datagram.
            Err(e) => debug!("receive: {e}"),
        }
    }
}

fn flush_apple_midi(
    endpoint: &mut Endpoint,
    sockets: &[PortPair],
    batch: &mut SendBatch,
    now: Instant,
    buf: &mut [u8],
) {
    while let Some(t) = endpoint.poll_transmit(now, buf) {
        let Some(pair) = sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        let fd = socket(pair, t.port).as_raw_fd();
        batch.push(fd, pair.wire_addr(t.dst), &buf[..t.len]);
    }
    batch.send();
}

/// Datagrams sent with one `sendmmsg`.
const SEND_BATCH: usize = 64;

/// Datagrams for one socket, sent together: one system call per batch rather than one per
/// datagram, which counts when the hub sends a message to hundreds of peers.
#[derive(Default)]
struct SendBatch {
    fd: RawFd,
    bytes: Vec<u8>,
    /// Each datagram's start in `bytes`, its length and its destination.
    datagrams: Vec<(usize, usize, socket2::SockAddr)>,
}

impl SendBatch {
    fn push(&mut self, fd: RawFd, dst: SocketAddr, datagram: &[u8]) {
        if self.fd != fd || self.datagrams.len() == SEND_BATCH {
            self.send();
        }
        self.fd = fd;
        self.datagrams
            .push((self.bytes.len(), datagram.len(), dst.into()));
        self.bytes.extend_from_slice(datagram);
    }

    /// Sends what it holds; a datagram that fails is logged and skipped, as with `sendto`.
    fn send(&mut self) {
        let n = self.datagrams.len();
        if n == 0 {
            return;
        }
        // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (start, len, addr)) in self.datagrams.iter().enumerate() {
            iov[i].iov_base = self.bytes[*start..].as_ptr() as *mut libc::c_void;
            iov[i].iov_len = *len;
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = addr.len();
            hdr.msg_iov = &mut iov[i];
            hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            let rest = &mut msgs[done..n];
            // SAFETY: `rest` points at initialized headers whose buffers and addresses
            // (`self.bytes`, `self.datagrams`) outlive the call and are not touched meanwhile.
            let sent = unsafe { libc::sendmmsg(self.fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if sent == 0 || e.kind() != io::ErrorKind::Interrupted {
                // The first datagram left failed (full buffer, ICMP error): it is lost, as a
                // failed `sendto` would lose it; the rest still go.
                debug!("send to {:?}: {e}", self.datagrams[done].2.as_socket());
                done += 1;
            }
        }
        self.bytes.clear();
        self.datagrams.clear();
    }
}

fn flush_midi2(
    endpoint: &mut protocol::midi2::endpoint::Endpoint,
    sockets: &[UdpPort],
    now: Instant,
    buf: &mut [u8],
) {
    while let Some(t) = endpoint.poll_transmit(now, buf) {
        let Some(port) = sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        if let Err(e) = port.socket.send_to(&buf[..t.len], port.wire_addr(t.dst)) {
            debug!("send to {}: {e}", t.dst);
        }
    }
}
