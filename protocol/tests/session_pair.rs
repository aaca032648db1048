//! Sessions end to end through the `Pair` harness on a simulated clock.
mod pair;

use pair::{named, LinkConfig, Pair, A, B};
use protocol::endpoint::AcceptPolicy;
use protocol::midi::{MidiMessage, ShortMessage};
use protocol::session::{DisconnectReason, Event, Port};
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
        .send_midi(now, message);
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
            session.send_midi(now, note(9));
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
        let slot = if port == Port::Control { 0 } else { 1 };
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
fn a_flood_of_invitations_is_refused_beyond_a_few_half_open_sessions() {
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
            .handle_datagram(now, Port::Control, from, &buf);
    }
    assert!(p.nodes[B].endpoint.sessions().count() <= 1 + 8);
    assert!(p.nodes[B].endpoint.drops().refused >= 990);
    // The real session still carries MIDI.
    send(&mut p, A, note(1));
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.midi_received(B), vec![note(1).as_bytes().to_vec()]);
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
