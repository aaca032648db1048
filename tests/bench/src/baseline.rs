//! The programs the daemon is measured beside, run as children of the harness (the harness
//! binary started again with `forward` or `respond`): each does the least the same job needs,
//! woken by epoll like the daemon, so a ratio shows what the daemon adds.
use std::io::{self, ErrorKind, Write};
use std::net::UdpSocket;

use crate::sys::{self, Poller};
use crate::wire::{self, Command};

/// The daemon's receive buffer (src/net.rs), so both drop at the same queue length.
const RECV_BUFFER: usize = 1 << 20;

/// Null forwarder: every datagram arriving on its port is sent on to each of `dests` with one
/// sendto each, in order. With one destination it is the hub's baseline; with many, the
/// fan-out's. Prints its port, then runs until killed.
pub fn forward(dests: &[u16]) -> io::Result<()> {
    let dests: Vec<_> = dests.iter().map(|&p| sys::addr(p)).collect();
    let sock = sys::udp()?;
    sys::set_recv_buffer(&sock, RECV_BUFFER);
    announce(&sock)?;
    let mut poller = Poller::new()?;
    poller.add(&sock, 0)?;
    let mut buf = [0u8; 1500];
    loop {
        poller.wait(-1)?;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    for d in &dests {
                        // A full destination buffer drops, as the daemon's sends would.
                        let _ = sock.send_to(&buf[..n], d);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Null AppleMIDI responder on a control/data pair: answers IN with OK and CK0 with CK1 on
/// the port they came to, keeps no state, ignores everything else. Prints its control port,
/// then runs until killed.
pub fn respond() -> io::Result<()> {
    let port = sys::free_port_pair()?;
    let socks = [
        UdpSocket::bind(sys::addr(port))?,
        UdpSocket::bind(sys::addr(port + 1))?,
    ];
    let mut poller = Poller::new()?;
    for (i, s) in socks.iter().enumerate() {
        s.set_nonblocking(true)?;
        sys::set_recv_buffer(s, RECV_BUFFER);
        poller.add(s, i as u64)?;
    }
    announce(&socks[0])?;
    const SSRC: u32 = 0x6e75_6c6c;
    let mut buf = [0u8; 1500];
    loop {
        for token in poller.wait(-1)? {
            let sock = &socks[token as usize];
            loop {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let answer = match wire::parse_command(&buf[..n]) {
                    Some(Command::Session(code, token)) if &code == b"IN" => {
                        wire::invitation(b"OK", token, SSRC, "null")
                    }
                    Some(Command::Clock { count: 0, ts1, .. }) => {
                        wire::clock(SSRC, 1, [ts1, ts1, 0])
                    }
                    _ => continue,
                };
                let _ = sock.send_to(&answer, from);
            }
        }
    }
}

fn announce(sock: &UdpSocket) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", sock.local_addr()?.port())?;
    out.flush()
}
