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

use super::{on_control, on_data, on_midi2, Ctx, MAX_DATAGRAM};
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
            batch: SendBatch::new(),
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

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.sessions_mut().poll_timeout()
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
    /// answering as it goes. Dropped datagrams go to `dropped`. True when the batch ran out
    /// before the socket did: more may be waiting.
    pub fn read(
        &mut self,
        now: Instant,
        (fd, port): (RawFd, SocketKind),
        (recv_buf, send_buf): (&mut [u8], &mut [u8]),
        dropped: &mut dyn FnMut(Dropped, SocketAddr, usize),
    ) -> bool {
        for _ in 0..READ_BATCH {
            let Some(socket) = self.socket(fd, port) else {
                return false;
            };
            let Some((len, from)) = receive(socket, recv_buf) else {
                return false;
            };
            let sessions = self.sessions_mut();
            if let Err(why) = sessions.handle_datagram(now, port, from, &recv_buf[..len]) {
                dropped(why, from, len);
            }
            self.flush(now, send_buf);
        }
        true
    }

    /// Sends what its sessions want to send, each from the socket that reaches it.
    pub fn flush(&mut self, now: Instant, buf: &mut [u8]) {
        match &mut self.server {
            Server::AppleMidi {
                sessions,
                sockets,
                batch,
            } => flush_apple_midi(&mut sessions.endpoint, sockets, batch, now),
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
) {
    while let Some(t) = endpoint.poll_transmit(now, batch.room()) {
        let Some(pair) = sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        let fd = socket(pair, t.port).as_raw_fd();
        batch.push(fd, pair.wire_addr(t.dst), t.len);
    }
    batch.send();
}

/// Datagrams sent with one `sendmmsg` at most.
const SEND_BATCH: usize = 64;

/// Datagrams sent together: one system call per batch and socket rather than one per
/// datagram, which counts when the hub sends a message to hundreds of peers. Sessions write
/// their datagrams in place, in `bytes`, one after the other.
struct SendBatch {
    /// Room for a batch and one more datagram of the largest size; its pages are touched
    /// only as far as datagrams reach.
    bytes: Vec<u8>,
    /// Bytes of `bytes` the datagrams take.
    used: usize,
    /// Each datagram's socket, start in `bytes`, length and destination.
    datagrams: Vec<(RawFd, usize, usize, socket2::SockAddr)>,
    /// The system call's headers for a run, kept: zeroing arrays for a whole batch at each
    /// call costs more than sending a lone datagram.
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    fn new() -> Self {
        SendBatch {
            bytes: vec![0; 2 * MAX_DATAGRAM],
            used: 0,
            datagrams: Vec::with_capacity(SEND_BATCH),
            iov: Vec::with_capacity(SEND_BATCH),
            msgs: Vec::with_capacity(SEND_BATCH),
        }
    }

    /// Where the next datagram is written: room for the largest, after those held (sent
    /// first if the batch is full).
    fn room(&mut self) -> &mut [u8] {
        if self.datagrams.len() == SEND_BATCH || self.bytes.len() - self.used < MAX_DATAGRAM {
            self.send();
        }
        &mut self.bytes[self.used..]
    }

    /// The `len` bytes last written at [`Self::room`] go to `dst` from socket `fd`.
    fn push(&mut self, fd: RawFd, dst: SocketAddr, len: usize) {
        self.datagrams.push((fd, self.used, len, dst.into()));
        self.used += len;
    }

    /// Sends what it holds, a `sendmmsg` for each run of datagrams from one socket; a datagram
    /// that fails is logged and skipped, as with `sendto`.
    fn send(&mut self) {
        let mut start = 0;
        while let Some(&(fd, ..)) = self.datagrams.get(start) {
            let run = self.datagrams[start..]
                .iter()
                .take_while(|d| d.0 == fd)
                .count();
            self.send_run(fd, start..start + run);
            start += run;
        }
        self.used = 0;
        self.datagrams.clear();
    }

    fn send_run(&mut self, fd: RawFd, run: std::ops::Range<usize>) {
        let datagrams = &self.datagrams[run];
        let n = datagrams.len();
        self.iov.clear();
        self.iov
            .extend(datagrams.iter().map(|(_, start, len, _)| libc::iovec {
                iov_base: self.bytes[*start..].as_ptr() as *mut libc::c_void,
                iov_len: *len,
            }));
        self.msgs.clear();
        for ((.., addr), iov) in datagrams.iter().zip(self.iov.iter_mut()) {
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = addr.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            self.msgs.push(msg);
        }
        let mut done = 0;
        while done < n {
            let rest = &mut self.msgs[done..n];
            // SAFETY: `rest` points at initialized headers whose buffers and addresses
            // (`self.bytes`, `self.iov`, `self.datagrams`) outlive the call and are not touched
            // meanwhile.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if sent == 0 || e.kind() != io::ErrorKind::Interrupted {
                // The first datagram left failed (full buffer, ICMP error): it is lost, as a
                // failed `sendto` would lose it; the rest still go.
                debug!("send to {:?}: {e}", datagrams[done].3.as_socket());
                done += 1;
            }
        }
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
