//! `[rawmidi NAME]` on loopback: a pseudo-terminal in raw mode stands for the device (its
//! slave reached through a symlink, so "unplugging" is removing the link and closing the pty),
//! and the protocol crate's AppleMIDI endpoint over real UDP sockets is the network peer.
//! MIDI goes both ways, SysEx included; unplugging ends the session with a BY, plugging in
//! again brings it back. Every wait polls with a deadline.
mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::midi::MidiMessage;
use protocol::session::{Config, Event, SocketKind};
use protocol::time::Instant;
use support::{free_ports, short, sysex, udp_socket as socket, Daemon, TempDir, DEADLINE};

/// A pseudo-terminal as a MIDI device: raw (no echo, no line editing), the test at the master.
struct Pty {
    master: File,
    /// Held so the master does not see a hang-up while the daemon has the device closed.
    _slave: OwnedFd,
}

impl Pty {
    /// A new one, reached at `link`.
    fn plug(link: &Path) -> Pty {
        let pty = openpty(None, None).unwrap();
        let mut raw = tcgetattr(&pty.slave).unwrap();
        cfmakeraw(&mut raw);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).unwrap();
        fcntl(pty.master.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        std::os::unix::fs::symlink(path, link).unwrap();
        Pty {
            master: File::from(pty.master),
            _slave: pty.slave,
        }
    }

    fn read(&mut self, into: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.master.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&buf[..n]);
        }
    }
}

/// The AppleMIDI peer, driven on the wall clock.
struct Peer {
    start: StdInstant,
    endpoint: Endpoint,
    control: UdpSocket,
    data: UdpSocket,
    got: Vec<MidiMessage>,
    up: bool,
    ended: bool,
}

impl Peer {
    fn new(port: u16) -> Peer {
        Peer {
            start: StdInstant::now(),
            endpoint: Endpoint::new(
                Config {
                    name: "peer".into(),
                    ..Config::default()
                },
                AcceptPolicy::default(),
                3,
            ),
            control: socket(port),
            data: socket(port + 1),
            got: Vec::new(),
            up: false,
            ended: false,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn invite(&mut self, port: u16) {
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let now = self.now();
        self.endpoint.connect(now, to);
    }

    fn turn(&mut self) {
        let now = self.now();
        let mut buf = vec![0u8; 65_536];
        for port in [SocketKind::Control, SocketKind::Data] {
            let socket = match port {
                SocketKind::Control => &self.control,
                SocketKind::Data => &self.data,
            };
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let _ = self.endpoint.handle_datagram(now, port, from, &buf[..len]);
            }
        }
        self.endpoint.handle_timeout(now);
        while let Some(t) = self.endpoint.poll_transmit(now, &mut buf) {
            let socket = match t.port {
                SocketKind::Control => &self.control,
                SocketKind::Data => &self.data,
            };
            let _ = socket.send_to(&buf[..t.len], t.dst);
        }
        while let Some((_, event)) = self.endpoint.poll_event() {
            match event {
                Event::Connected { .. } => self.up = true,
                Event::Midi(m) => self.got.push(m.message),
                Event::Disconnected { .. } => {
                    self.up = false;
                    self.ended = true;
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, message: &MidiMessage) {
        let now = self.now();
        let ids: Vec<_> = self.endpoint.sessions().map(|(id, _)| id).collect();
        for id in ids {
            self.endpoint
                .session_mut(id)
                .unwrap()
                .send_midi(now, message);
        }
    }

    /// Turns until `done`, also reading what the device got into `device`.
    fn wait(
        &mut self,
        what: &str,
        pty: &mut Option<Pty>,
        device: &mut Vec<u8>,
        mut done: impl FnMut(&Peer, &[u8]) -> bool,
    ) {
        let end = StdInstant::now() + DEADLINE;
        while !done(self, device) {
            assert!(
                StdInstant::now() < end,
                "timed out waiting for {what}: the peer got {:?}, the device {device:?}",
                self.got
            );
            self.turn();
            if let Some(pty) = pty.as_mut() {
                pty.read(device);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Notes, a controller with running status, and a 3000-byte SysEx between them, both ways.
fn exchange(peer: &mut Peer, pty: &mut Option<Pty>) {
    let sent = sysex(3000);
    let mut bytes = vec![0x90, 60, 100, 62, 90];
    bytes.extend_from_slice(sent.as_bytes());
    bytes.extend_from_slice(&[0xB0, 7, 80]);
    let from_device = [
        short(&[0x90, 60, 100]),
        short(&[0x90, 62, 90]),
        sent.clone(),
        short(&[0xB0, 7, 80]),
    ];
    let before = peer.got.len();
    pty.as_mut().unwrap().master.write_all(&bytes).unwrap();
    let mut device = Vec::new();
    peer.wait("the device's MIDI at the peer", pty, &mut device, |p, _| {
        p.got.len() >= before + from_device.len()
    });
    assert_eq!(peer.got[before..], from_device);

    let to_device = [short(&[0x80, 60, 0]), sysex(2000), short(&[0xE0, 0, 64])];
    for m in &to_device {
        peer.send(m);
    }
    let expected: Vec<u8> = to_device
        .iter()
        .flat_map(|m| m.as_bytes().to_vec())
        .collect();
    peer.wait("the peer's MIDI at the device", pty, &mut device, |_, d| {
        d.len() >= expected.len()
    });
    assert_eq!(device, expected);
}

fn config(dir: &Path, section: &str) -> PathBuf {
    let path = dir.join("rtpmidid.conf");
    std::fs::write(&path, section).unwrap();
    path
}

#[test]
fn a_device_offered_as_a_session_comes_and_goes_with_its_path() {
    let dir = TempDir::new("rawmidi-offered");
    let link = dir.0.join("midi");
    let base = free_ports(4);
    let (device_port, peer_port) = (base, base + 2);
    let conf = config(
        &dir.0,
        &format!(
            "[rawmidi Synth]\ndevice = {}\nport = {device_port}\n",
            link.display()
        ),
    );
    let daemon = Daemon::start(
        &dir.0,
        "rawmidi",
        &["--no-midi2", "-c", conf.to_str().unwrap()],
    );
    let mut pty = Some(Pty::plug(&link));
    let mut peer = Peer::new(peer_port);
    // The device is looked for every second: invite until its session server answers.
    let mut none = Vec::new();
    let end = StdInstant::now() + DEADLINE;
    while !peer.up {
        assert!(StdInstant::now() < end, "no session: {}", daemon.log());
        peer.invite(device_port);
        peer.wait("an answer", &mut pty, &mut none, |p, _| p.up || p.ended);
        peer.ended = false;
    }
    exchange(&mut peer, &mut pty);

    // Unplugged: the session ends with a BY.
    std::fs::remove_file(&link).unwrap();
    pty = None;
    peer.wait("the session's end", &mut pty, &mut none, |p, _| p.ended);

    // Plugged in again: offered again.
    let mut pty = Some(Pty::plug(&link));
    peer.ended = false;
    let end = StdInstant::now() + DEADLINE;
    while !peer.up {
        assert!(
            StdInstant::now() < end,
            "no session again: {}",
            daemon.log()
        );
        peer.invite(device_port);
        peer.wait("an answer", &mut pty, &mut none, |p, _| p.up || p.ended);
        peer.ended = false;
    }
    exchange(&mut peer, &mut pty);
}

#[test]
fn a_device_with_a_host_is_connected_to_it_while_it_is_there() {
    let dir = TempDir::new("rawmidi-connected");
    let link = dir.0.join("midi");
    let peer_port = free_ports(2);
    let conf = config(
        &dir.0,
        &format!(
            "[rawmidi Synth]\ndevice = {}\nhost = 127.0.0.1\nremote_port = {peer_port}\n",
            link.display()
        ),
    );
    let daemon = Daemon::start(
        &dir.0,
        "rawmidi-c",
        &["--no-midi2", "-c", conf.to_str().unwrap()],
    );
    let mut peer = Peer::new(peer_port);
    let mut pty = Some(Pty::plug(&link));
    let mut none = Vec::new();
    peer.wait("the daemon's invitation", &mut pty, &mut none, |p, _| p.up);
    exchange(&mut peer, &mut pty);

    std::fs::remove_file(&link).unwrap();
    pty = None;
    peer.wait("the session's end", &mut pty, &mut none, |p, _| p.ended);
    peer.ended = false;

    let mut pty = Some(Pty::plug(&link));
    peer.wait("the invitation again", &mut pty, &mut none, |p, _| p.up);
    exchange(&mut peer, &mut pty);
    assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
}
