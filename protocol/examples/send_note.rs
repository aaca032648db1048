//! A minimal AppleMIDI participant over `std::net::UdpSocket`: invites HOST:PORT, plays middle C
//! NOTES times (default 1, 100 ms apart), says goodbye and exits.
//!
//! Run: `cargo run -p rtpmidid-protocol --example send_note -- 127.0.0.1:5004 [NOTES]`.
//!
//! The [`Endpoint`] does the protocol; this program only moves datagrams between it and two
//! sockets (control, and data), and tells it the time.
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use protocol::endpoint::{AcceptPolicy, Endpoint, SessionId};
use protocol::midi::{status, ShortMessage};
use protocol::session::{Config, Event, SocketKind};
use protocol::time::Instant;

/// How long the peer has to accept the invitation.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
const NOTE_EVERY: Duration = Duration::from_millis(100);
/// A sleep between two rounds of polling: simpler than waiting on both sockets at once, and
/// short enough for MIDI.
const TICK: Duration = Duration::from_millis(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (peer, notes) = match args.as_slice() {
        [peer] => (peer, Ok(1)),
        [peer, notes] => (peer, notes.parse::<u32>()),
        _ => {
            eprintln!("usage: send_note HOST:PORT [NOTES]");
            return ExitCode::FAILURE;
        }
    };
    let peer = peer.to_socket_addrs().ok().and_then(|mut a| a.next());
    match (peer, notes) {
        (Some(peer), Ok(notes)) => match play(peer, notes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("send_note: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("send_note: bad HOST:PORT or NOTES");
            ExitCode::FAILURE
        }
    }
}

/// Our two sockets; the endpoint says which one each datagram leaves from.
struct Sockets {
    control: UdpSocket,
    data: UdpSocket,
}

impl Sockets {
    fn bind(peer: SocketAddr) -> std::io::Result<Sockets> {
        let any: SocketAddr = match peer {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
        };
        let sockets = Sockets {
            control: UdpSocket::bind(any)?,
            data: UdpSocket::bind(any)?,
        };
        sockets.control.set_nonblocking(true)?;
        sockets.data.set_nonblocking(true)?;
        Ok(sockets)
    }

    /// Everything that arrived, to the endpoint.
    fn receive(&self, endpoint: &mut Endpoint, now: Instant) -> std::io::Result<()> {
        let mut buf = [0; 1500];
        for (socket, port) in [
            (&self.control, SocketKind::Control),
            (&self.data, SocketKind::Data),
        ] {
            loop {
                match socket.recv_from(&mut buf) {
                    // What no session takes (a stray datagram) the endpoint counts and drops.
                    Ok((len, from)) => {
                        let _ = endpoint.handle_datagram(now, port, from, &buf[..len]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Everything the endpoint wants sent.
    fn send(&self, endpoint: &mut Endpoint, now: Instant) -> std::io::Result<()> {
        let mut buf = [0; 1500];
        while let Some(t) = endpoint.poll_transmit(now, &mut buf) {
            let socket = match t.port {
                SocketKind::Control => &self.control,
                SocketKind::Data => &self.data,
            };
            socket.send_to(&buf[..t.len], t.dst)?;
        }
        Ok(())
    }
}

fn play(peer: SocketAddr, notes: u32) -> Result<(), String> {
    let sockets = Sockets::bind(peer).map_err(|e| format!("cannot bind: {e}"))?;
    let config = Config {
        name: "send_note".into(),
        ..Config::default()
    };
    let policy = AcceptPolicy {
        refuse_all: true,
        ..AcceptPolicy::default()
    };
    // The seed makes tokens and SSRCs; any varying number does for an example.
    let seed = u64::from(std::process::id());
    let mut endpoint = Endpoint::new(config, policy, seed);
    let start = std::time::Instant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as u64);

    let session = endpoint.connect(now(), peer);
    let step = |endpoint: &mut Endpoint| -> Result<Vec<Event>, String> {
        std::thread::sleep(TICK);
        let io = |e: std::io::Error| e.to_string();
        sockets.receive(endpoint, now()).map_err(io)?;
        endpoint.handle_timeout(now());
        sockets.send(endpoint, now()).map_err(io)?;
        Ok(std::iter::from_fn(|| endpoint.poll_event().map(|(_, e)| e)).collect())
    };

    let mut connected = false;
    while !connected {
        if start.elapsed() > CONNECT_DEADLINE {
            return Err(format!("{peer} did not accept the invitation"));
        }
        for event in step(&mut endpoint)? {
            match event {
                Event::Connected { name, .. } => {
                    println!("connected to {name:?} at {peer}");
                    connected = true;
                }
                Event::Disconnected { reason } => return Err(format!("{peer}: {reason:?}")),
                _ => {}
            }
        }
    }

    let send = |endpoint: &mut Endpoint, kind| {
        let note = ShortMessage::channel(kind, 0, 60, 100);
        session_of(endpoint, session)?.send_short(now(), note);
        Ok::<_, String>(())
    };
    for n in 0..notes {
        send(&mut endpoint, status::NOTE_ON)?;
        step(&mut endpoint)?;
        send(&mut endpoint, status::NOTE_OFF)?;
        let next = start.elapsed() + NOTE_EVERY;
        while start.elapsed() < next {
            step(&mut endpoint)?;
        }
        println!("sent note {}", n + 1);
    }

    // BY to the peer, then the endpoint forgets the session.
    session_of(&mut endpoint, session)?.close();
    while endpoint.sessions().next().is_some() {
        step(&mut endpoint)?;
    }
    Ok(())
}

fn session_of(
    endpoint: &mut Endpoint,
    id: SessionId,
) -> Result<&mut protocol::session::Session, String> {
    endpoint
        .session_mut(id)
        .ok_or_else(|| "the peer ended the session".to_string())
}
