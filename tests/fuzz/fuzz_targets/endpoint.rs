//! The session state machines behind one endpoint, on a simulated clock, fed a sequence of
//! datagrams (raw, or well-formed commands and RTP that reach a session), timeouts, connects and
//! MIDI to send, all chosen by the input: no panic, every datagram sent fits the MTU, the
//! sessions stay within the accept limit (plus the ones we started), and once nothing more
//! arrives every session ends by its own timeouts.
#![no_main]
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::midi::MidiMessage;
use protocol::session::{Config, SocketKind};
use protocol::time::{Duration, Instant};
use protocol::wire::applemidi::{Clock, Command, End, Invitation};

const MAX_SESSIONS: usize = 4;
const PEERS: [&str; 3] = ["10.0.0.2:5004", "10.0.0.3:5004", "[fe80::2]:6004"];

/// The fuzz input, read a few bytes at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn peer(&mut self) -> SocketAddr {
        let addr: SocketAddr = PEERS[usize::from(self.byte()) % PEERS.len()].parse().unwrap();
        addr
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = Config::default();
    let mtu = config.mtu;
    let policy = AcceptPolicy {
        max_sessions: Some(MAX_SESSIONS),
        ..AcceptPolicy::default()
    };
    let mut ep = Endpoint::new(config, policy, 7);
    let mut now = Instant::from_micros(1_000_000);
    let mut buf = vec![0u8; 2048];
    let mut datagram = vec![0u8; 2048];
    let mut connects = 0;
    while !input.0.is_empty() {
        let port = if input.byte() & 1 == 0 {
            SocketKind::Control
        } else {
            SocketKind::Data
        };
        // A session's token and its peer's SSRC, to forge commands that reach it.
        let known: Vec<(u32, Option<u32>)> = ep
            .sessions()
            .map(|(_, s)| (s.token(), s.peer_ssrc()))
            .collect();
        let pick = known
            .get(usize::from(input.byte()) % known.len().max(1))
            .copied();
        let (token, peer_ssrc) = pick.unwrap_or((0, None));
        let ssrc = peer_ssrc.unwrap_or(0);
        let command = match input.byte() % 10 {
            0 => {
                now += Duration::from_millis(u64::from(input.byte()) * 40);
                ep.handle_timeout(now);
                None
            }
            1 => {
                if let Some(at) = ep.poll_timeout() {
                    now = now.max(at);
                    ep.handle_timeout(now);
                }
                None
            }
            2 => {
                let peer = input.peer();
                ep.connect(now, peer);
                connects += 1;
                None
            }
            3 => {
                let len = usize::from(input.byte());
                let peer = input.peer();
                let raw = input.bytes(len).to_vec();
                let _ = ep.handle_datagram(now, port, peer, &raw);
                None
            }
            4 => Some(Command::Invitation(Invitation {
                token: input.u32(),
                ssrc: input.u32(),
                name: Some("fuzz"),
            })),
            5 => Some(Command::Accept(Invitation {
                token,
                ssrc: input.u32(),
                name: Some("peer"),
            })),
            6 => Some(Command::End(End { token, ssrc })),
            7 => Some(Command::Clock(Clock {
                ssrc,
                count: input.byte() % 4,
                timestamps: [u64::from(input.u32()), u64::from(input.u32()), 0],
            })),
            8 => {
                // RTP with a session's SSRC and a payload from the input.
                let len = usize::from(input.byte());
                let mut packet = vec![0x80, 0x61, input.byte(), input.byte()];
                packet.extend_from_slice(&input.u32().to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                packet.extend_from_slice(input.bytes(len));
                let peer = input.peer();
                let _ = ep.handle_datagram(now, SocketKind::Data, peer, &packet);
                None
            }
            _ => {
                let len = usize::from(input.byte() % 8);
                if let Ok(message) = MidiMessage::from_bytes(input.bytes(len)) {
                    if let Some((_, session)) = ep.sessions_mut().next() {
                        session.send_midi(now, &message);
                    }
                }
                None
            }
        };
        if let Some(command) = command {
            let peer = input.peer();
            if let Ok(len) = command.emit(&mut datagram) {
                let _ = ep.handle_datagram(now, port, peer, &datagram[..len]);
            }
        }
        drain(&mut ep, now, &mut buf, mtu);
        assert!(ep.sessions().count() <= MAX_SESSIONS + connects);
    }
    // Left alone, every session ends: initiators give up inviting or miss their CKs,
    // responders hear nothing.
    let mut rounds = 0;
    while let Some(at) = ep.poll_timeout() {
        now = now.max(at);
        ep.handle_timeout(now);
        drain(&mut ep, now, &mut buf, mtu);
        rounds += 1;
        assert!(rounds < 10_000, "sessions never end");
    }
});

fn drain(ep: &mut Endpoint, now: Instant, buf: &mut [u8], mtu: usize) {
    let mut sent = 0;
    while let Some(t) = ep.poll_transmit(now, buf) {
        assert!(t.len <= mtu, "{} bytes", t.len);
        sent += 1;
        assert!(sent < 100_000);
    }
    while ep.poll_event().is_some() {}
}
