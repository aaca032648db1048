//! The daemon's Network MIDI 2.0 host bridged to RTP-MIDI through the hub, on loopback: a MIDI
//! 2.0 client and an AppleMIDI initiator (both the protocol crate's state machines over real
//! UDP sockets) exchange notes, controllers and a 10 kB SysEx through a real daemon
//! (`--no-alsa --no-mdns --hub`). Every wait polls with a deadline.
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::midi::MidiMessage;
use protocol::midi2::endpoint::{AcceptPolicy as Midi2Policy, Endpoint as Midi2Endpoint};
use protocol::midi2::session::{ClientAuth, Config as Midi2Config, Event as Midi2Event};
use protocol::midi2::ump::{GroupMessage, ToMidi1};
use protocol::session::{Config, Event, SocketKind};
use protocol::time::Instant;

mod support;

use support::{free_ports, short, sysex, udp_socket as socket, BIN};
const DEADLINE: Duration = Duration::from_secs(20);

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both peers, driven by one loop on the wall clock.
struct Peers {
    start: StdInstant,
    midi2: Midi2Endpoint,
    midi2_socket: UdpSocket,
    apple: Endpoint,
    control: UdpSocket,
    data: UdpSocket,
    apple_port: u16,
    to_midi1: ToMidi1,
    midi2_got: Vec<MidiMessage>,
    apple_got: Vec<MidiMessage>,
    midi2_up: bool,
    apple_up: bool,
}

impl Peers {
    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// One turn: datagrams in, timers, datagrams out, events.
    fn turn(&mut self) {
        let now = self.now();
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = self.midi2_socket.recv_from(&mut buf) {
            let _ = self.midi2.handle_datagram(now, from, &buf[..len]);
        }
        for port in [SocketKind::Control, SocketKind::Data] {
            let socket = if port == SocketKind::Control {
                &self.control
            } else {
                &self.data
            };
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let _ = self.apple.handle_datagram(now, port, from, &buf[..len]);
            }
        }
        self.midi2.handle_timeout(now);
        self.apple.handle_timeout(now);
        while let Some(t) = self.midi2.poll_transmit(now, &mut buf) {
            let _ = self.midi2_socket.send_to(&buf[..t.len], t.dst);
        }
        while let Some(t) = self.apple.poll_transmit(now, &mut buf) {
            let socket = if t.port == SocketKind::Control {
                &self.control
            } else {
                &self.data
            };
            let _ = socket.send_to(&buf[..t.len], t.dst);
        }
        while let Some((_, event)) = self.midi2.poll_event() {
            match event {
                Midi2Event::Connected { .. } => self.midi2_up = true,
                Midi2Event::Ump(ump) => {
                    let mut out: Vec<GroupMessage> = Vec::new();
                    self.to_midi1.translate(&ump, &mut out);
                    self.midi2_got.extend(out.into_iter().map(|m| m.message));
                }
                _ => {}
            }
        }
        while let Some((_, event)) = self.apple.poll_event() {
            match event {
                Event::Connected { .. } => self.apple_up = true,
                Event::Midi(m) => self.apple_got.push(m.message),
                _ => {}
            }
        }
    }

    fn wait(&mut self, what: &str, mut done: impl FnMut(&Peers) -> bool) {
        let end = StdInstant::now() + DEADLINE;
        while !done(self) {
            assert!(
                StdInstant::now() < end,
                "timed out waiting for {what}: got {:?} at MIDI 2.0, {:?} at RTP-MIDI",
                self.midi2_got,
                self.apple_got
            );
            self.turn();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn send_from_midi2(&mut self, message: &MidiMessage) {
        let ids: Vec<_> = self.midi2.sessions().map(|(id, _)| id).collect();
        for id in ids {
            assert!(self.midi2.session_mut(id).unwrap().send_midi1(0, message));
        }
    }

    fn send_from_apple(&mut self, message: MidiMessage) {
        let now = self.now();
        let ids: Vec<_> = self.apple.sessions().map(|(id, _)| id).collect();
        for id in ids {
            self.apple.session_mut(id).unwrap().send_midi(now, &message);
        }
    }
}

fn start(args: &[&str]) -> Daemon {
    let child = Command::new(BIN)
        .args(["--no-alsa", "--no-mdns", "-b", "127.0.0.1", "-q"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child)
}

fn peers(midi2_port: u16, rtp_port: u16, apple_port: u16, auth: ClientAuth) -> Peers {
    let start = StdInstant::now();
    let now = Instant::ZERO;
    let mut midi2 = Midi2Endpoint::new(
        Midi2Config {
            name: "m2client".into(),
            client_auth: auth,
            ..Midi2Config::default()
        },
        Midi2Policy {
            refuse_all: true,
            ..Midi2Policy::default()
        },
        1,
    );
    let daemon_midi2: SocketAddr = ([127, 0, 0, 1], midi2_port).into();
    midi2.connect(now, daemon_midi2);
    let mut apple = Endpoint::new(
        Config {
            name: "applepeer".into(),
            ..Config::default()
        },
        AcceptPolicy::default(),
        2,
    );
    apple.connect(now, ([127, 0, 0, 1], rtp_port).into());
    Peers {
        start,
        midi2,
        midi2_socket: socket(0),
        apple,
        control: socket(apple_port),
        data: socket(apple_port + 1),
        apple_port,
        to_midi1: ToMidi1::new(protocol::midi::MAX_SYSEX),
        midi2_got: Vec::new(),
        apple_got: Vec::new(),
        midi2_up: false,
        apple_up: false,
    }
}

#[test]
fn midi2_and_rtp_midi_sessions_meet_in_the_hub() {
    let base = free_ports(8);
    let (rtp, midi2, apple, control) = (base, base + 2, base + 4, base + 6);
    let control = std::env::temp_dir().join(format!("rtpmidid-midi2-{control}.sock"));
    let _daemon = start(&[
        "--hub",
        "-p",
        &rtp.to_string(),
        "--midi2-port",
        &midi2.to_string(),
        "--control",
        control.to_str().unwrap(),
    ]);
    let mut p = peers(midi2, rtp, apple, ClientAuth::None);
    assert_eq!(p.apple_port, apple);
    p.wait("both sessions", |p| p.midi2_up && p.apple_up);

    // MIDI 2.0 -> hub -> RTP-MIDI.
    let notes = [
        short(&[0x90, 60, 100]),
        short(&[0xB0, 7, 80]),
        short(&[0x80, 60, 0]),
    ];
    for n in &notes {
        p.send_from_midi2(n);
    }
    p.wait("the notes at the RTP-MIDI peer", |p| {
        p.apple_got.len() >= notes.len()
    });
    assert_eq!(p.apple_got, notes);

    // RTP-MIDI -> hub -> MIDI 2.0, a 10 kB SysEx among notes.
    let back = [short(&[0xE0, 0, 64]), sysex(10_000), short(&[0x91, 40, 1])];
    for m in &back {
        p.send_from_apple(m.clone());
    }
    p.wait("the messages at the MIDI 2.0 client", |p| {
        p.midi2_got.len() >= back.len()
    });
    assert_eq!(p.midi2_got, back);
    // Nothing came back to its sender.
    assert_eq!(p.apple_got, notes);
    let _ = std::fs::remove_file(control);
}

#[test]
fn a_midi2_host_with_a_secret_refuses_clients_without_it() {
    let base = free_ports(8);
    let (rtp, midi2, apple) = (base, base + 2, base + 4);
    let dir = std::env::temp_dir().join(format!("rtpmidid-midi2-auth-{base}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rtpmidid.conf");
    std::fs::write(
        &config,
        format!("[midi2]\nport = {midi2}\nsecret = s3cret\n"),
    )
    .unwrap();
    let control = dir.join("control.sock");
    let _daemon = start(&[
        "--hub",
        "-p",
        &rtp.to_string(),
        "-c",
        config.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
    ]);
    let mut good = peers(midi2, rtp, apple, ClientAuth::Secret("s3cret".into()));
    good.wait("the client with the secret", |p| p.midi2_up && p.apple_up);
    let mut bad = peers(
        midi2,
        rtp,
        free_ports(2),
        ClientAuth::Secret("wrong".into()),
    );
    let end = StdInstant::now() + Duration::from_secs(3);
    while StdInstant::now() < end {
        bad.turn();
        good.turn();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!bad.midi2_up, "a wrong secret got a session");
    let _ = std::fs::remove_dir_all(dir);
}
