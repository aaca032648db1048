//! Each protocol's sessions driven by a peer endpoint over an in-memory link: no socket, a
//! made-up clock.
use std::net::SocketAddr;

use protocol::admission::AddressFilter;
use protocol::endpoint::{AcceptPolicy, Dropped, Endpoint, SessionId};
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::midi2::endpoint::Endpoint as Midi2Endpoint;
use protocol::midi2::session::{Config as Midi2Config, Event as Midi2Event};
use protocol::midi2::ump::{self, Ump};
use protocol::session::{self, SocketKind};
use protocol::time::Instant;

use super::*;
use crate::router::Ended;

const OURS: &str = "10.0.0.1:5004";
const PEER: &str = "10.0.0.2:6004";
/// The peer's AppleMIDI data port, next to its control port.
const PEER_DATA: &str = "10.0.0.2:6005";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn now() -> Instant {
    Instant::from_micros(1_000_000)
}

fn note_on(key: u8) -> MidiMessage {
    MidiMessage::from_bytes(&[0x90, key, 100]).unwrap()
}

fn happenings(ours: &mut dyn Sessions) -> Vec<(SessionId, Happening)> {
    std::iter::from_fn(|| ours.poll_happening()).collect()
}

/// A Network MIDI 2.0 peer (a client) and our sessions (the host).
struct Midi2Link {
    peer: Midi2Endpoint,
    ours: Midi2,
}

impl Midi2Link {
    fn new(policy: AcceptPolicy) -> Midi2Link {
        let config = |name: &str| Midi2Config {
            name: name.to_string(),
            ..Midi2Config::default()
        };
        Midi2Link {
            peer: Midi2Endpoint::new(config("peer"), Default::default(), 1),
            ours: Midi2::new(config("ours"), policy, 2),
        }
    }

    /// Carries datagrams both ways until neither side has more.
    fn settle(&mut self) {
        let mut buf = [0; 2048];
        loop {
            let mut moved = false;
            while let Some(t) = self.peer.poll_transmit(now(), &mut buf) {
                let sent =
                    self.ours
                        .handle_datagram(now(), SocketKind::Data, addr(PEER), &buf[..t.len]);
                assert_eq!(sent, Ok(()));
                moved = true;
            }
            while let Some(t) = self.ours.endpoint.poll_transmit(now(), &mut buf) {
                let _ = self.peer.handle_datagram(now(), addr(OURS), &buf[..t.len]);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// The peer connected to us, and our side's session id.
    fn connected() -> (Midi2Link, SessionId) {
        let mut link = Midi2Link::new(AcceptPolicy::default());
        link.peer.connect(now(), addr(OURS));
        link.settle();
        let up = happenings(&mut link.ours);
        let [(id, Happening::Connected { name, addr: from })] = &up[..] else {
            panic!("not connected: {up:?}");
        };
        assert_eq!((name.as_str(), *from), ("peer", addr(PEER)));
        (link, *id)
    }

    fn peer_sends(&mut self, message: &MidiMessage) {
        let (_, session) = self.peer.sessions_mut().next().unwrap();
        session.send_midi1(0, message);
        self.settle();
    }
}

#[test]
fn midi2_umps_come_out_as_midi1_messages() {
    let (mut link, id) = Midi2Link::connected();
    link.peer_sends(&note_on(60));
    // A SysEx longer than one UMP arrives whole.
    let sysex = MidiMessage::SysEx([0xF0].into_iter().chain(1..=20).chain([0xF7]).collect());
    link.peer_sends(&sysex);
    let midi = |message| Happening::Midi {
        message,
        timestamp: None,
        tag: None,
    };
    assert_eq!(
        happenings(&mut link.ours),
        [(id, midi(note_on(60))), (id, midi(sysex))]
    );
    let rows = link.ours.rows();
    let (row_id, row) = &rows[0];
    assert_eq!(*row_id, id);
    assert_eq!((row.name.as_str(), row.address.as_str()), ("peer", PEER));
    assert_eq!(
        (row.state.as_str(), row.role.as_str()),
        ("connected", "responder")
    );
    assert_eq!(row.protocol, "midi2");
}

#[test]
fn midi2_endpoint_discovery_is_answered_not_passed_on() {
    let (mut link, _) = Midi2Link::connected();
    let discovery = (0xF_u32 << 28) | (u32::from(ump::stream::ENDPOINT_DISCOVERY) << 16) | 0x0101;
    let ask = Ump::new(&[discovery, ump::stream::WANT_NAME, 0, 0]).unwrap();
    let (_, session) = link.peer.sessions_mut().next().unwrap();
    session.send_ump(ask);
    link.settle();
    assert_eq!(happenings(&mut link.ours), []);
    // The answers are queued as the UMP is taken, and sent with the rest.
    link.settle();
    let answers = std::iter::from_fn(|| link.peer.poll_event())
        .filter(|(_, e)| {
            let name = u32::from(ump::stream::ENDPOINT_NAME);
            matches!(e, Midi2Event::Ump(u) if (u.words()[0] >> 16) & 0x3FF == name)
        })
        .count();
    assert!(answers > 0, "no endpoint name came back");
}

#[test]
fn midi2_closed_by_the_peer_ends_in_order() {
    let (mut link, id) = Midi2Link::connected();
    link.peer.close_all(now());
    link.settle();
    let ended = happenings(&mut link.ours);
    assert!(matches!(
        &ended[..],
        [(i, Happening::Ended { ended: Ended::Other, orderly: true, .. })] if *i == id
    ));
}

fn allow_only(net: &str) -> AcceptPolicy {
    AcceptPolicy {
        addresses: AddressFilter {
            allow: vec![net.parse().unwrap()],
            deny: Vec::new(),
        },
        ..AcceptPolicy::default()
    }
}

#[test]
fn midi2_refuses_addresses_outside_allow() {
    refuses_the_peer(Midi2Link::new(allow_only("192.168.0.0/16")));
}

#[test]
fn midi2_takes_a_reloads_allow_deny() {
    let mut link = Midi2Link::new(AcceptPolicy::default());
    link.ours.set_policy(allow_only("192.168.0.0/16"));
    refuses_the_peer(link);
}

fn refuses_the_peer(mut link: Midi2Link) {
    link.peer.connect(now(), addr(OURS));
    let mut buf = [0; 2048];
    let t = link.peer.poll_transmit(now(), &mut buf).unwrap();
    let from = addr(PEER);
    let got = link
        .ours
        .handle_datagram(now(), SocketKind::Data, from, &buf[..t.len]);
    assert_eq!(got, Err(Dropped::Refused));
    assert_eq!(link.ours.session_count(), 0);
}

/// An AppleMIDI peer and our sessions, both hubs (their SSRCs marked).
struct AppleLink {
    peer: Endpoint,
    ours: AppleMidi,
}

impl AppleLink {
    fn connected() -> (AppleLink, SessionId) {
        let config = |name: &str| session::Config {
            name: name.to_string(),
            hub_mark: true,
            ..session::Config::default()
        };
        let mut link = AppleLink {
            peer: Endpoint::new(config("peer"), AcceptPolicy::default(), 1),
            ours: AppleMidi::new(Endpoint::new(config("ours"), AcceptPolicy::default(), 2)),
        };
        link.peer.connect(now(), addr(OURS));
        link.settle();
        let up = happenings(&mut link.ours);
        let [(id, Happening::Connected { name, .. })] = &up[..] else {
            panic!("not connected: {up:?}");
        };
        assert_eq!(name, "peer");
        (link, *id)
    }

    /// Carries datagrams both ways until neither side has more; what reaches the peer's
    /// sessions is returned.
    fn settle(&mut self) -> Vec<session::Event> {
        let mut buf = [0; 2048];
        let ours = |port| match port {
            SocketKind::Control => addr(OURS),
            SocketKind::Data => addr("10.0.0.1:5005"),
        };
        let mut events = Vec::new();
        loop {
            let mut moved = false;
            while let Some(t) = self.peer.poll_transmit(now(), &mut buf) {
                let from = match t.port {
                    SocketKind::Control => addr(PEER),
                    SocketKind::Data => addr(PEER_DATA),
                };
                let got = self
                    .ours
                    .handle_datagram(now(), t.port, from, &buf[..t.len]);
                assert_eq!(got, Ok(()));
                moved = true;
            }
            while let Some(t) = self.ours.endpoint.poll_transmit(now(), &mut buf) {
                let _ = self
                    .peer
                    .handle_datagram(now(), t.port, ours(t.port), &buf[..t.len]);
                moved = true;
            }
            events.extend(std::iter::from_fn(|| self.peer.poll_event()).map(|(_, e)| e));
            if !moved {
                return events;
            }
        }
    }
}

#[test]
fn apple_midi_hub_tag_goes_with_the_event_after_it() {
    let (mut link, id) = AppleLink::connected();
    let tag = Tag { origin: 7, seq: 3 };
    let (_, session) = link.peer.sessions_mut().next().unwrap();
    session.send_midi(now(), &MidiMessage::SysEx(tag.emit().to_vec()));
    session.send_midi(now(), &note_on(61));
    link.settle();
    let got = happenings(&mut link.ours);
    assert!(matches!(
        &got[..],
        [(i, Happening::Midi { message, timestamp: Some(_), tag: Some(t) })]
            if *i == id && *message == note_on(61) && *t == tag
    ));
}

#[test]
fn apple_midi_hub_peers_get_the_tag_first() {
    let (mut link, id) = AppleLink::connected();
    let tag = Tag { origin: 9, seq: 1 };
    link.ours.send_midi(now(), id, &note_on(62), tag);
    let midi: Vec<MidiMessage> = link
        .settle()
        .into_iter()
        .filter_map(|e| match e {
            session::Event::Midi(m) => Some(m.message),
            _ => None,
        })
        .collect();
    assert_eq!(midi, [MidiMessage::SysEx(tag.emit().to_vec()), note_on(62)]);
}

#[test]
fn apple_midi_rows_and_close_by_name() {
    let (mut link, id) = AppleLink::connected();
    let rows = link.ours.rows();
    let (row_id, row) = &rows[0];
    assert_eq!(*row_id, id);
    assert_eq!(
        (row.state.as_str(), row.role.as_str()),
        ("connected", "responder")
    );
    assert_eq!(
        (row.address.as_str(), row.protocol.as_str()),
        (PEER, "rtp-midi")
    );
    assert!(!link.ours.close_named(now(), "someone else"));
    assert!(link.ours.close_named(now(), "peer"));
    link.settle();
    assert!(matches!(
        &happenings(&mut link.ours)[..],
        [(_, Happening::Ended { orderly: true, .. })]
    ));
}

#[test]
fn apple_midi_ends_say_whether_the_peer_restarted_and_whether_in_order() {
    use protocol::session::DisconnectReason as Why;
    let end = |reason| match apple_midi::happening(session::Event::Disconnected { reason }) {
        Happening::Ended { ended, orderly, .. } => (ended, orderly),
        other => panic!("{other:?}"),
    };
    assert_eq!(end(Why::Replaced), (Ended::Replaced, false));
    assert_eq!(end(Why::PeerEnded), (Ended::Other, true));
    assert_eq!(end(Why::Closed), (Ended::Other, true));
    assert_eq!(end(Why::Timeout), (Ended::Other, false));
}

#[test]
fn midi2_sessions_take_the_listeners_name_and_the_midi2_sections_keys() {
    let settings = crate::config::settings("[midi2]\nsecret = s3\nfec = 1\n");
    let config = midi2_config("Stage", &settings.midi2);
    assert_eq!(config.name, "Stage");
    assert_eq!(config.product_id, product_id("Stage"));
    assert_eq!(config.fec_count, 1);
    assert_eq!(config.host_auth, settings.midi2.host_auth());
    assert_eq!(config.client_auth, settings.midi2.client_auth());
}
