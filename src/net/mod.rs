//! UDP sockets: a control/data pair per bound address (AppleMIDI) or one port (Network
//! MIDI 2.0), a listener's set of them ([`Sockets`]), every listener's ([`ListenerSockets`]) and
//! batched sends.
mod batch;
mod listeners;
mod sockets;

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

pub use self::listeners::ListenerSockets;
pub use self::sockets::Sockets;

/// Largest datagram we read or write; RTP-MIDI and Network MIDI 2.0 over UDP are far below.
pub const MAX_DATAGRAM: usize = 65_536;
/// Export listeners take the first free port pair above the main one, this many tries.
const FREE_PAIR_TRIES: u16 = 64;

/// Kernel receive buffer we ask for, so a burst (a long SysEx, many peers) is not dropped before
/// the loop reads it.
const RECV_BUFFER: usize = 1 << 20;

/// The control socket on port N and the data socket on N+1 for one local address.
pub struct PortPair {
    pub control: UdpSocket,
    pub data: UdpSocket,
    /// An IPv6 socket, dual-stack when bound to `::`.
    pub ipv6: bool,
    pub dual_stack: bool,
}

impl PortPair {
    /// Binds `addr:port` and `addr:port+1`. Port 0 is not allowed: the two must be adjacent.
    pub fn bind(addr: IpAddr, port: u16) -> io::Result<PortPair> {
        let data_port = port
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "port too high"))?;
        let dual_stack = addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        Ok(PortPair {
            control: bind_udp(SocketAddr::new(addr, port), dual_stack)?,
            data: bind_udp(SocketAddr::new(addr, data_port), dual_stack)?,
            ipv6: addr.is_ipv6(),
            dual_stack,
        })
    }

    /// Can this pair send to `dst`?
    pub fn reaches(&self, dst: &SocketAddr) -> bool {
        reaches(self.ipv6, self.dual_stack, dst)
    }

    pub fn wire_addr(&self, dst: SocketAddr) -> SocketAddr {
        wire_addr(self.ipv6, dst)
    }
}

/// One UDP socket for one local address (a Network MIDI 2.0 port).
pub struct UdpPort {
    pub socket: UdpSocket,
    ipv6: bool,
    dual_stack: bool,
}

impl UdpPort {
    pub fn reaches(&self, dst: &SocketAddr) -> bool {
        reaches(self.ipv6, self.dual_stack, dst)
    }

    pub fn wire_addr(&self, dst: SocketAddr) -> SocketAddr {
        wire_addr(self.ipv6, dst)
    }
}

fn reaches(ipv6: bool, dual_stack: bool, dst: &SocketAddr) -> bool {
    dual_stack || dst.is_ipv6() == ipv6
}

/// The address to hand the kernel: IPv4 destinations become v4-mapped on an IPv6 socket.
fn wire_addr(ipv6: bool, dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(v4) if ipv6 => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// Binds UDP `port` on `binds`, or on every address when empty, as [`bind_all`] does pairs.
pub fn bind_ports(binds: &[IpAddr], port: u16) -> io::Result<Vec<UdpPort>> {
    let one = |addr: IpAddr| {
        let dual_stack = addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        Ok::<_, io::Error>(UdpPort {
            socket: bind_udp(SocketAddr::new(addr, port), dual_stack)?,
            ipv6: addr.is_ipv6(),
            dual_stack,
        })
    };
    if binds.is_empty() {
        return match one(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Ok(p) => Ok(vec![p]),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
            Err(_) => Ok(vec![one(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))?]),
        };
    }
    binds.iter().map(|&a| one(a)).collect()
}

fn bind_udp(addr: SocketAddr, dual_stack: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    // Best effort: a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds the pairs for `binds`, or for every address when empty: dual-stack `::`, falling back
/// to `0.0.0.0` on hosts without IPv6.
pub fn bind_all(binds: &[IpAddr], port: u16) -> io::Result<Vec<PortPair>> {
    if binds.is_empty() {
        return match PortPair::bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port) {
            Ok(pair) => Ok(vec![pair]),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
            Err(_) => Ok(vec![PortPair::bind(
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                port,
            )?]),
        };
    }
    binds.iter().map(|&a| PortPair::bind(a, port)).collect()
}

/// The first free port pair above `base`.
pub fn bind_free_pair(binds: &[IpAddr], base: u16) -> io::Result<Vec<PortPair>> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port pair");
    for step in 1..=FREE_PAIR_TRIES {
        let Some(port) = base.checked_add(2 * step) else {
            break;
        };
        match bind_all(binds, port) {
            Ok(sockets) => return Ok(sockets),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Source addresses as the protocol sees them: v4-mapped IPv6 shown as IPv4. Other IPv6
/// addresses keep their scope: a link-local peer is reached through its interface.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
