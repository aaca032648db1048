//! Sessions end to end through the `Pair` harness on a simulated clock.
mod pair;

use pair::{named, LinkConfig, Pair, A, B};
use protocol::endpoint::AcceptPolicy;
use protocol::midi::{MidiMessage, ShortMessage};
use protocol::session::{DisconnectReason, Event, SocketKind};
use protocol::time::Duration;

fn note(n: u8) -> MidiMessage {
    MidiMessage::Short(ShortMessage::from_bytes(&[0x90, n, 100]).unwrap())
}

fn send(p: &mut Pair, node: usize, message: MidiMessage) {
    let id = p.session_id(node);
    let now = p.now;
    p.nodes[node]
        .endpoint
        .session_mut(id)
        .unwrap()
        .send_midi(now, &message);
}

fn connected_pair(seed: u64, link: LinkConfig) -> Pair {
    let mut p = Pair::new(seed, link);
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1
        && p.connected(B) == 1));
    p
}

fn disconnect_reason(p: &Pair, node: usize) -> Option<DisconnectReason> {
    p.events_of(node).find_map(|e| match e {
        Event::Disconnected { reason } => Some(*reason),
        _ => None,
    })
}

#[test]
fn handshake_both_ways_with_names() {
    for (from, to) in [(A, B), (B, A)] {
        let mut p = Pair::new(1, LinkConfig::default());
        p.connect(from, to);
        assert!(p.run_until(Duration::from_secs(5), |p| p.connected(A) == 1
            && p.connected(B) == 1));
        let name_seen_by = |node| {
            p.events_of(node).find_map(|e| match e {
                Event::Connected { name, .. } => Some(name.clone()),
                _ => None,
            })
        };
        assert_eq!(name_seen_by(A).as_deref(), Some("Bob"));
        assert_eq!(name_seen_by(B).as_deref(), Some("Alice"));
    }
}

#[test]
fn handshake_whatever_the_order_and_parity_of_the_ports() {
    // Initiator below or above the responder, on even or odd control ports.
    for (a, b) in [
        ("10.0.0.1:5004", "10.0.0.2:5004"),
        ("10.0.0.1:40001", "10.0.0.2:5004"),
        ("10.0.0.1:5004", "10.0.0.2:40001"),
    ] {
        for (from, to) in [(A, B), (B, A)] {
            let mut p = Pair::new(21, LinkConfig::default()).at(a, b);
            p.connect(from, to);
            assert!(
                p.run_until(Duration::from_secs(5), |p| p.connected(A) == 1
                    && p.connected(B) == 1),
                "{a} {b} from {from}"
            );
            let id = p.session_id(from);
            let now = p.now;
            let session = p.nodes[from].endpoint.session_mut(id).unwrap();
            session.send_midi(now, &note(9));
            p.run_for(Duration::from_millis(20));
            assert_eq!(p.midi_received(to), vec![note(9).as_bytes().to_vec()]);
        }
    }
}

#[test]
fn handshake_survives_reordered_and_duplicated_datagrams() {
    for seed in 0..20 {
        let link = LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            duplicate: 0.3,
            ..LinkConfig::default()
        };
        let mut p = Pair::new(seed, link);
        p.connect(A, B);
        assert!(
            p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1
                && p.connected(B) == 1),
            "seed {seed}"
        );
    }
}

#[test]
fn refused_invitation_ends_with_rejected() {
    let policy = AcceptPolicy {
        refuse_all: true,
        ..AcceptPolicy::default()
    };
    let mut p = Pair::with_configs(2, LinkConfig::default(), named("A"), named("B"), policy);
    p.connect(A, B);
    assert!(
        p.run_until(Duration::from_secs(5), |p| disconnect_reason(p, A)
            .is_some())
    );
    assert_eq!(disconnect_reason(&p, A), Some(DisconnectReason::Rejected));
    assert_eq!(p.nodes[B].endpoint.drops().refused, 1);
    assert_eq!(p.connected(B), 0);
}

#[test]
fn lost_invitations_are_retried() {
    let mut p = Pair::new(3, LinkConfig::default());
    // Lose the first two invitations on control and the first on data.
    let mut lost = [2, 1];
    p.filter = Some(Box::new(move |from, port, bytes| {
        let is_in = bytes.starts_with(&[0xFF, 0xFF, b'I', b'N']);
        let slot = if port == SocketKind::Control { 0 } else { 1 };
        if from == A && is_in && lost[slot] > 0 {
            lost[slot] -= 1;
            return true;
        }
        false
    }));
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1));
    assert_eq!(p.connected(B), 1);
}

#[test]
fn unanswered_invitations_give_up() {
    let link = LinkConfig {
        blackhole: true,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(4, link);
    p.connect(A, B);
    assert!(
        p.run_until(Duration::from_secs(60), |p| disconnect_reason(p, A)
            .is_some())
    );
    assert_eq!(
        disconnect_reason(&p, A),
        Some(DisconnectReason::InviteTimeout)
    );
}

#[test]
fn clock_sync_measures_latency() {
    let link = LinkConfig {
        latency: Duration::from_millis(7),
        ..LinkConfig::default()
    };
    let mut p = connected_pair(5, link);
    p.run_for(Duration::from_secs(20));
    let rtts: Vec<Duration> = p
        .events_of(A)
        .filter_map(|e| match e {
            Event::Latency { rtt, .. } => Some(*rtt),
            _ => None,
        })
        .collect();
    // Six quick rounds, then one every 10 s.
    assert!(rtts.len() >= 6, "{} rounds", rtts.len());
    for rtt in rtts {
        assert!(
            rtt >= Duration::from_millis(13) && rtt <= Duration::from_millis(15),
            "{rtt:?}"
        );
    }
    // The responder never starts rounds of its own, and never answers CK2.
    assert!(!p.events_of(B).any(|e| matches!(e, Event::Latency { .. })));
}

#[test]
fn silence_ends_the_session_on_both_sides() {
    let mut p = connected_pair(6, LinkConfig::default());
    p.link.blackhole = true;
    assert!(p.run_until(Duration::from_secs(200), |p| {
        disconnect_reason(p, A).is_some() && disconnect_reason(p, B).is_some()
    }));
    assert_eq!(disconnect_reason(&p, A), Some(DisconnectReason::Timeout));
    assert_eq!(disconnect_reason(&p, B), Some(DisconnectReason::Timeout));
}

#[test]
fn bye_ends_the_peer_session() {
    let mut p = connected_pair(7, LinkConfig::default());
    let id = p.session_id(A);
    p.nodes[A].endpoint.session_mut(id).unwrap().close();
    assert!(
        p.run_until(Duration::from_secs(2), |p| disconnect_reason(p, B)
            .is_some())
    );
    assert_eq!(disconnect_reason(&p, A), Some(DisconnectReason::Closed));
    assert_eq!(disconnect_reason(&p, B), Some(DisconnectReason::PeerEnded));
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.nodes[A].endpoint.sessions().count(), 0);
    assert_eq!(p.nodes[B].endpoint.sessions().count(), 0);
}

#[test]
fn midi_arrives_in_order_batched() {
    let mut p = connected_pair(8, LinkConfig::default());
    let sent_before = p.nodes[A]
        .endpoint
        .session(p.session_id(A))
        .unwrap()
        .stats();
    for n in 0..100 {
        send(&mut p, A, note(n));
    }
    p.run_for(Duration::from_millis(50));
    let got = p.midi_received(B);
    let want: Vec<Vec<u8>> = (0..100).map(|n| note(n).as_bytes().to_vec()).collect();
    assert_eq!(got, want);
    // A hundred notes sent at once go out in one packet, not a hundred.
    let sent_after = p.nodes[A]
        .endpoint
        .session(p.session_id(A))
        .unwrap()
        .stats();
    assert!(sent_after.packets_sent - sent_before.packets_sent < 5);
}

#[test]
fn sequence_numbers_wrap_without_loss() {
    let mut p = connected_pair(9, LinkConfig::default());
    // One packet per note, across more than one 16-bit wrap.
    for i in 0..70_000u32 {
        send(&mut p, A, note((i % 128) as u8));
        p.run_for(Duration::from_micros(500));
    }
    p.run_for(Duration::from_millis(20));
    let stats = p.nodes[B]
        .endpoint
        .session(p.session_id(B))
        .unwrap()
        .stats();
    assert_eq!(p.midi_received(B).len(), 70_000);
    assert_eq!(stats.packets_lost, 0);
    assert_eq!(stats.duplicates, 0);
}

#[test]
fn long_sysex_crosses_many_packets() {
    let mut p = connected_pair(10, LinkConfig::default());
    let mut sysex = vec![0xF0];
    sysex.extend((0..64 * 1024 - 2).map(|i| (i % 128) as u8));
    sysex.push(0xF7);
    send(&mut p, A, MidiMessage::SysEx(sysex.clone()));
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.midi_received(B), vec![sysex]);
    let sent = p.nodes[A]
        .endpoint
        .session(p.session_id(A))
        .unwrap()
        .stats();
    assert!(sent.packets_sent > 40, "{} packets", sent.packets_sent);
}

#[test]
fn duplicates_are_dropped_and_losses_counted() {
    let link = LinkConfig {
        duplicate: 0.2,
        loss: 0.05,
        ..LinkConfig::default()
    };
    let mut p = connected_pair(11, link);
    for i in 0..2000u32 {
        send(&mut p, A, note((i % 128) as u8));
        p.run_for(Duration::from_millis(1));
    }
    p.run_for(Duration::from_millis(20));
    let stats = p.nodes[B]
        .endpoint
        .session(p.session_id(B))
        .unwrap()
        .stats();
    assert!(stats.duplicates > 0);
    assert!(stats.packets_lost > 0);
    let notes_on = p.midi_received(B).iter().filter(|m| m[0] == 0x90).count() as u64;
    assert!(notes_on <= 2000);
}

#[test]
fn unanswered_clock_sync_ends_the_session_quickly() {
    let mut p = connected_pair(12, LinkConfig::default());
    p.run_for(Duration::from_secs(30));
    let cut_at = p.now;
    // The responder vanishes: nothing it would send arrives any more.
    p.filter = Some(Box::new(|from, _, _| from == B));
    assert!(
        p.run_until(Duration::from_secs(60), |p| disconnect_reason(p, A)
            .is_some())
    );
    assert_eq!(disconnect_reason(&p, A), Some(DisconnectReason::Timeout));
    // One regular CK period plus three answer waits, far below the idle timeout.
    assert!(
        p.now - cut_at <= Duration::from_secs(15),
        "{:?}",
        p.now - cut_at
    );
}

#[test]
fn a_restarted_initiator_replaces_its_old_session() {
    let mut p = connected_pair(13, LinkConfig::default());
    let old = p.session_id(B);
    // A restarts: a fresh endpoint (new token, new SSRC) at the same address invites again.
    p.nodes[A].endpoint =
        protocol::endpoint::Endpoint::new(named("Alice"), AcceptPolicy::default(), 99);
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(5), |p| p.connected(B) == 2));
    p.run_for(Duration::from_secs(1));
    let ids: Vec<_> = p.nodes[B].endpoint.sessions().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], old);
    assert!(p.nodes[B].events.iter().any(|(id, e)| *id == old
        && *e
            == Event::Disconnected {
                reason: DisconnectReason::Replaced
            }));
}

#[test]
fn a_flood_of_invitations_is_held_beyond_a_few_half_open_sessions() {
    use protocol::wire::applemidi::{Command, Invitation};
    let mut p = connected_pair(14, LinkConfig::default());
    let now = p.now;
    // A thousand invitations under a thousand names from a thousand ports of one host that
    // never follow up on the data port. (From one address and port, each would replace the
    // one before: that peer restarted.)
    for token in 0..1000u32 {
        let name = format!("flood {token}");
        let inv = Command::Invitation(Invitation {
            token: 0xF00D_0000 + token,
            ssrc: token,
            name: Some(&name),
        });
        let mut buf = vec![0; inv.buffer_len()];
        inv.emit(&mut buf).unwrap();
        let from = pair::addr(&format!("10.0.0.9:{}", 7000 + 2 * token));
        let _ = p.nodes[B]
            .endpoint
            .handle_datagram(now, SocketKind::Control, from, &buf);
    }
    assert!(p.nodes[B].endpoint.sessions().count() <= 1 + 8);
    // The rest wait, unanswered, for a slot that never frees (see handshake_burst.rs).
    assert!(p.nodes[B].endpoint.waiting() >= 990);
    // The real session still carries MIDI.
    send(&mut p, A, note(1));
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.midi_received(B), vec![note(1).as_bytes().to_vec()]);
}

/// A datagram with `cmd` in it.
fn datagram(cmd: &protocol::wire::applemidi::Command<'_>) -> Vec<u8> {
    let mut buf = vec![0; cmd.buffer_len()];
    cmd.emit(&mut buf).unwrap();
    buf
}

#[test]
fn forged_bye_clock_and_rtp_from_another_port_of_the_peers_host_reach_nothing() {
    use protocol::wire::applemidi::{Clock, Command, End};
    let mut p = connected_pair(15, LinkConfig::default());
    let (id_b, now) = (p.session_id(B), p.now);
    let session = p.nodes[B].endpoint.session(id_b).unwrap();
    let (token, a_ssrc) = (session.token(), session.peer_ssrc().unwrap());
    // Alice's host, another port: a third party forging Alice's address.
    let forged = pair::addr("10.0.0.1:7777");
    let bye = datagram(&Command::End(End {
        token,
        ssrc: a_ssrc,
    }));
    let ck0 = datagram(&Command::Clock(Clock {
        ssrc: a_ssrc,
        count: 0,
        timestamps: [1, 0, 0],
    }));
    // A real RTP packet of Alice's, taken before it left, replayed from the forger's port.
    let rtp_from_a = {
        let (id_a, mut buf) = (p.session_id(A), vec![0; 1500]);
        let session = p.nodes[A].endpoint.session_mut(id_a).unwrap();
        session.send_midi(now, &note(10));
        let t = session.poll_transmit(now, &mut buf).expect("an RTP packet");
        buf[..t.len].to_vec()
    };
    let drops = p.nodes[B].endpoint.drops().unknown_session;
    for (port, bytes) in [
        (SocketKind::Control, &bye),
        (SocketKind::Data, &bye),
        (SocketKind::Data, &ck0),
        (SocketKind::Data, &rtp_from_a),
    ] {
        let got = p.nodes[B]
            .endpoint
            .handle_datagram(now, port, forged, bytes);
        assert!(got.is_err(), "{port:?} {bytes:02X?}");
    }
    assert_eq!(p.nodes[B].endpoint.drops().unknown_session, drops + 4);
    p.run_for(Duration::from_millis(50));
    assert_eq!(disconnect_reason(&p, B), None, "the session survived");
    assert!(p.midi_received(B).is_empty(), "no injected notes");
    // Alice herself is still heard.
    send(&mut p, A, note(1));
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.midi_received(B), vec![note(1).as_bytes().to_vec()]);
}

/// An IN for `name` from `from`, handed to node B.
fn invite_b(p: &mut Pair, from: &str, token: u32, name: &str) -> bool {
    use protocol::wire::applemidi::{Command, Invitation};
    let bytes = datagram(&Command::Invitation(Invitation {
        token,
        ssrc: token ^ 0x5555,
        name: Some(name),
    }));
    let now = p.now;
    p.nodes[B]
        .endpoint
        .handle_datagram(now, SocketKind::Control, pair::addr(from), &bytes)
        .is_ok()
}

#[test]
fn an_invitation_in_a_live_peers_name_from_another_port_does_not_replace_it() {
    let mut p = connected_pair(16, LinkConfig::default());
    let old = p.session_id(B);
    // The first claim only starts a liveness check; Alice answers it.
    assert!(!invite_b(&mut p, "10.0.0.1:7000", 0xBAD, "Alice"));
    p.run_for(Duration::from_millis(100));
    // The claimant's retry is refused: Alice is alive.
    assert!(!invite_b(&mut p, "10.0.0.1:7000", 0xBAD, "Alice"));
    p.run_for(Duration::from_secs(3));
    assert_eq!(disconnect_reason(&p, B), None);
    assert_eq!(p.session_id(B), old);
    assert_eq!(p.nodes[B].endpoint.sessions().count(), 1);
}

#[test]
fn a_restarted_initiator_on_another_port_replaces_its_silent_session() {
    let mut p = connected_pair(17, LinkConfig::default());
    let old = p.session_id(B);
    // Alice's old process is gone: nothing of it arrives any more.
    p.filter = Some(Box::new(|from, _, _| from == A));
    p.run_for(Duration::from_millis(100));
    assert!(!invite_b(&mut p, "10.0.0.1:7000", 0xF00D, "Alice"));
    p.run_for(Duration::from_secs(2));
    // The retry after the unanswered check is accepted and the old session gives way.
    assert!(invite_b(&mut p, "10.0.0.1:7000", 0xF00D, "Alice"));
    p.run_for(Duration::from_millis(10));
    assert!(p.nodes[B].events.iter().any(|(id, e)| *id == old
        && *e
            == Event::Disconnected {
                reason: DisconnectReason::Replaced
            }));
}

#[test]
fn a_responder_notices_a_silent_initiator_within_seconds() {
    let mut p = connected_pair(18, LinkConfig::default());
    p.run_for(Duration::from_secs(30));
    let cut_at = p.now;
    // The initiator dies without BY.
    p.filter = Some(Box::new(|from, _, _| from == A));
    assert!(
        p.run_until(Duration::from_secs(90), |p| disconnect_reason(p, B)
            .is_some())
    );
    assert_eq!(disconnect_reason(&p, B), Some(DisconnectReason::Timeout));
    // Silence since the last CK (at most one CK period, 10 s), the probe delay (10 s) and three
    // unanswered probes (4.5 s): far below the 90 s idle timeout.
    let took = p.now - cut_at;
    assert!(took <= Duration::from_secs(25), "{took:?}");
}

#[test]
fn a_responder_that_probes_an_idle_but_live_initiator_keeps_the_session() {
    let mut config = named("Alice");
    // An initiator that syncs rarely (every 60 s, as Apple allows).
    config.ck_interval = Duration::from_secs(60);
    let mut p = Pair::with_configs(
        19,
        LinkConfig::default(),
        config,
        named("Bob"),
        AcceptPolicy::default(),
    );
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(B) == 1));
    p.run_for(Duration::from_secs(300));
    assert_eq!(disconnect_reason(&p, A), None);
    assert_eq!(disconnect_reason(&p, B), None);
}

#[test]
fn invitations_beyond_the_limits_get_no_and_are_reported_once() {
    use protocol::admission::Refusal;
    let policy = AcceptPolicy {
        max_sessions: Some(4),
        max_sessions_per_host: Some(2),
        ..AcceptPolicy::default()
    };
    let mut p = Pair::with_configs(
        20,
        LinkConfig::default(),
        named("Alice"),
        named("Bob"),
        policy,
    );
    // Alice's host: two sessions, then refused.
    for port in [7000u32, 7002] {
        assert!(invite_b(
            &mut p,
            &format!("10.0.0.1:{port}"),
            port,
            &format!("a{port}")
        ));
    }
    for port in [7004u32, 7006, 7008] {
        assert!(!invite_b(
            &mut p,
            &format!("10.0.0.1:{port}"),
            port,
            &format!("a{port}")
        ));
    }
    // Other hosts fill the listener up to its limit.
    assert!(invite_b(&mut p, "10.0.0.3:7000", 1, "c"));
    assert!(invite_b(&mut p, "10.0.0.4:7000", 2, "d"));
    assert!(!invite_b(&mut p, "10.0.0.5:7000", 3, "e"));
    assert!(!invite_b(&mut p, "10.0.0.6:7000", 4, "f"));
    let reported: Vec<_> = std::iter::from_fn(|| p.nodes[B].endpoint.poll_refusal()).collect();
    assert_eq!(
        reported,
        vec![
            (pair::addr("10.0.0.1:7004"), Refusal::HostSessions),
            (pair::addr("10.0.0.5:7000"), Refusal::Sessions)
        ]
    );
    assert_eq!(p.nodes[B].endpoint.drops().refused, 5);
    // Each refused invitation was answered with NO.
    let mut buf = vec![0; 1500];
    let now = p.now;
    let mut noes = 0;
    while let Some(t) = p.nodes[B].endpoint.poll_transmit(now, &mut buf) {
        if let Ok(protocol::wire::applemidi::Command::Reject(_)) =
            protocol::wire::applemidi::Command::parse(&buf[..t.len])
        {
            noes += 1;
        }
    }
    assert_eq!(noes, 5);
}

#[test]
fn datagrams_from_addresses_not_allowed_are_dropped_unanswered() {
    use protocol::admission::{AddressFilter, Refusal};
    let policy = AcceptPolicy {
        addresses: AddressFilter {
            allow: vec!["10.0.0.0/24".parse().unwrap()],
            deny: vec!["10.0.0.66".parse().unwrap()],
        },
        ..AcceptPolicy::default()
    };
    let mut p = Pair::with_configs(
        21,
        LinkConfig::default(),
        named("Alice"),
        named("Bob"),
        policy,
    );
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(B) == 1));
    assert!(!invite_b(&mut p, "10.0.0.66:7000", 9, "denied"));
    assert!(!invite_b(&mut p, "192.0.2.1:7000", 10, "outsider"));
    assert_eq!(
        p.nodes[B].endpoint.poll_refusal(),
        Some((pair::addr("10.0.0.66:7000"), Refusal::Address))
    );
    let (mut buf, now, alice) = (vec![0; 1500], p.now, p.nodes[A].control.ip());
    while let Some(t) = p.nodes[B].endpoint.poll_transmit(now, &mut buf) {
        assert_eq!(t.dst.ip(), alice, "nothing goes to a refused address");
    }
    assert_eq!(p.nodes[B].endpoint.sessions().count(), 1);
}

/// Counts the RTP packets node A sends and drops B's RS when `rs_from_b` is false.
fn count_rtp_from_a(p: &mut Pair, rs_from_b: bool) -> std::rc::Rc<std::cell::Cell<u64>> {
    let rtp = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let seen = rtp.clone();
    p.filter = Some(Box::new(move |from, _, bytes| {
        if from == A && bytes.first().is_some_and(|b| b & 0xC0 == 0x80) {
            seen.set(seen.get() + 1);
        }
        from == B && !rs_from_b && bytes.starts_with(b"\xFF\xFFRS")
    }));
    rtp
}

#[test]
fn guards_stop_for_a_peer_that_never_confirms() {
    let mut p = connected_pair(41, LinkConfig::default());
    let rtp = count_rtp_from_a(&mut p, false);
    for n in 0..3 {
        send(&mut p, A, note(60 + n));
        p.run_for(Duration::from_secs(20));
    }
    // Three notes in a minute: three packets and a bounded number of guards, not one guard a
    // second for as long as the session lasts.
    let limit = 3 + u64::from(named("A").guards_unconfirmed);
    assert!(rtp.get() <= limit, "{} RTP packets", rtp.get());
    assert_eq!(p.midi_received(B).len(), 3);
    assert_eq!(p.connected(A), 1, "the session is still up");
    assert!(disconnect_reason(&p, A).is_none());
}

#[test]
fn guards_go_on_for_a_peer_that_confirms() {
    let mut p = connected_pair(42, LinkConfig::default());
    let rtp = count_rtp_from_a(&mut p, true);
    let notes = 10;
    for n in 0..notes {
        send(&mut p, A, note(60 + n as u8));
        p.run_for(Duration::from_secs(5));
    }
    // Each note is followed by guards until B's RS confirms it (about a second).
    let guards = rtp.get() - notes;
    assert!(guards >= 3 * notes, "{guards} guard packets");
    // And they stop once confirmed: at most one guard interval after the last RS.
    let before = rtp.get();
    p.run_for(Duration::from_secs(10));
    assert_eq!(rtp.get(), before, "guards after everything was confirmed");
}

#[test]
fn only_sessions_between_two_hubs_carry_hub_tags() {
    for (a_hub, b_hub) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut a = named("Alice");
        a.hub_mark = a_hub;
        let mut b = named("Bob");
        b.hub_mark = b_hub;
        let mut p = Pair::with_configs(22, LinkConfig::default(), a, b, AcceptPolicy::default());
        p.connect(A, B);
        assert!(p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1
            && p.connected(B) == 1));
        for node in [A, B] {
            let id = p.session_id(node);
            let links = p.nodes[node].endpoint.session(id).unwrap().links_hubs();
            assert_eq!(links, a_hub && b_hub, "{a_hub} {b_hub}");
        }
    }
}
