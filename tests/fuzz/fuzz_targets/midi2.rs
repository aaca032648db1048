//! Network MIDI 2.0: arbitrary datagrams into the parser and into host and client state
//! machines. Parsing must not panic and what parses re-emits to the same command; the state
//! machines must not panic, whatever the order, and their output must parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::midi2::endpoint::{AcceptPolicy, Endpoint};
use protocol::midi2::session::{ClientAuth, Config, Event, HostAuth, Session};
use protocol::midi2::ump::{EndpointInfo, StreamResponder, ToMidi1};
use protocol::midi2::wire::{self, Command};
use protocol::time::{Duration, Instant};

fn check_round_trip(bytes: &[u8]) {
    let Some(commands) = wire::commands(bytes) else {
        return;
    };
    for c in commands.flatten() {
        let mut buf = vec![0; c.buffer_len()];
        if c.emit(&mut buf).is_ok() {
            let (back, len) = Command::parse(&buf).expect("re-parses");
            assert_eq!((back, len), (c, buf.len()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let config = Config {
        client_auth: match mode & 3 {
            1 => ClientAuth::Secret("s".into()),
            2 => ClientAuth::User {
                user: "u".into(),
                password: "p".into(),
            },
            _ => ClientAuth::None,
        },
        host_auth: match (mode >> 2) & 3 {
            1 => HostAuth::Secret("s".into()),
            2 => HostAuth::Users(vec![("u".into(), "p".into())]),
            _ => HostAuth::None,
        },
        fec_count: usize::from(mode >> 4 & 3),
        retransmit_buffer: 8,
        ..Config::default()
    };
    let peer = "192.0.2.1:5673".parse().unwrap();
    let mut now = Instant::from_micros(1_000_000);
    let mut host = Endpoint::new(config.clone(), AcceptPolicy::default(), 1);
    let mut client = Session::connect(config, now, peer, 2);
    let mut to_midi1 = ToMidi1::new(256);
    let responder = StreamResponder::new(EndpointInfo::new("fuzz", "f"));
    let mut buf = vec![0u8; 1500];
    // Each step: a time advance, a length, then that many bytes after the signature.
    while let [advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let mut datagram = wire::SIGNATURE.to_vec();
        datagram.extend_from_slice(&tail[..len]);
        rest = &tail[len..];
        now += Duration::from_millis(u64::from(*advance) * 4);

        check_round_trip(&datagram);
        let _ = host.handle_datagram(now, peer, &datagram);
        client.handle_datagram(now, &datagram);
        host.handle_timeout(now);
        client.handle_timeout(now);
        while let Some(t) = host.poll_transmit(now, &mut buf) {
            assert!(wire::commands(&buf[..t.len]).is_some_and(|mut c| c.all(|c| c.is_ok())));
        }
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            assert!(wire::commands(&buf[..t.len]).is_some_and(|mut c| c.all(|c| c.is_ok())));
        }
        let mut events: Vec<Event> = Vec::new();
        while let Some((_, e)) = host.poll_event() {
            events.push(e);
        }
        while let Some(e) = client.poll_event() {
            events.push(e);
        }
        for e in events {
            if let Event::Ump(ump) = e {
                let mut answers = Vec::new();
                if !responder.handle(&ump, &mut answers) {
                    to_midi1.translate(&ump, &mut Vec::new());
                }
                // Echo it back, as a bridge would.
                client.send_ump(ump);
            }
        }
    }
});
