//! The recovery journal through real sessions (the `Pair` harness): long random MIDI streams
//! over a seeded lossy link. When the stream ends and the guard packets have gone out, the
//! receiver must sound like the sender: no stuck note, no wrong controller, program, bend,
//! pressure, parameter or transport state.
mod pair;

use pair::{LinkConfig, Pair, A, B};
use protocol::journal::MidiState;
use protocol::midi::MidiMessage;
use protocol::rng::Rng;
use protocol::session::Event;
use protocol::time::{Duration, Instant};

/// Random MIDI of every kind, as a player and a sequencer would send it.
fn random_message(rng: &mut Rng, held: &mut Vec<(u8, u8)>) -> Vec<u8> {
    let ch = rng.below(4) as u8;
    let v = |rng: &mut Rng| rng.below(128) as u8;
    match rng.below(100) {
        0..=29 => {
            let note = 36 + rng.below(48) as u8;
            held.push((ch, note));
            vec![0x90 | ch, note, 1 + rng.below(127) as u8]
        }
        30..=54 if !held.is_empty() => {
            let (c, n) = held.swap_remove(rng.below(held.len() as u64) as usize);
            if rng.chance(0.5) {
                vec![0x80 | c, n, v(rng)]
            } else {
                vec![0x90 | c, n, 0]
            }
        }
        55..=67 => vec![0xB0 | ch, 1 + rng.below(90) as u8, v(rng)],
        68..=71 => vec![0xC0 | ch, v(rng)],
        72..=77 => vec![0xE0 | ch, v(rng), v(rng)],
        78..=80 => vec![0xD0 | ch, v(rng)],
        81..=83 if !held.is_empty() => {
            let (c, n) = held[rng.below(held.len() as u64) as usize];
            vec![0xA0 | c, n, v(rng)]
        }
        84..=86 => vec![
            0xB0 | ch,
            [101, 100, 6, 99, 98][rng.below(5) as usize],
            v(rng),
        ],
        87..=93 => vec![0xF8],
        94..=95 => vec![[0xFA, 0xFB, 0xFC][rng.below(3) as usize]],
        96 => {
            let mut sysex = vec![0xF0, 0x7D];
            sysex.extend((0..1 + rng.below(20)).map(|_| v(rng)));
            sysex.push(0xF7);
            sysex
        }
        _ => vec![0xB0 | ch, 7, v(rng)],
    }
}

fn state_of<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> MidiState {
    let mut state = MidiState::default();
    for (stamp, m) in messages.into_iter().enumerate() {
        if m.first() == Some(&0xF0) {
            state.note_sysex(m);
        } else {
            state.apply_short(m, stamp as u32);
        }
    }
    state
}

struct Outcome {
    lost: u64,
    repairs: u64,
    /// Simulated time from the last MIDI sent until the receiver sounded right.
    settled_after: Duration,
}

fn run(seed: u64, link: LinkConfig, events: usize) -> Outcome {
    let mut p = Pair::new(seed, LinkConfig::default());
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1
        && p.connected(B) == 1));
    p.link = link;
    let a = p.session_id(A);
    let mut rng = Rng::new(seed);
    let mut held = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for _ in 0..events {
        let message = random_message(&mut rng, &mut held);
        let now = p.now;
        let session = p.nodes[A].endpoint.session_mut(a).expect("session");
        session.send_midi(now, &MidiMessage::from_bytes(&message).expect("valid"));
        sent.push(message);
        p.run_for(Duration::from_millis(1 + rng.below(15)));
    }
    let want = state_of(sent.iter().map(Vec::as_slice));
    let stream_end: Instant = p.now;
    let received = |p: &Pair| -> Vec<Vec<u8>> {
        p.events_of(B)
            .filter_map(|e| match e {
                Event::Midi(m) => Some(m.message.as_bytes().to_vec()),
                _ => None,
            })
            .collect()
    };
    let settled = p.run_until(Duration::from_secs(5), |p| {
        state_of(received(p).iter().map(Vec::as_slice)).same_music(&want)
    });
    let settled_after = p.now - stream_end;
    let stats = p.nodes[B]
        .endpoint
        .session(p.session_id(B))
        .expect("session")
        .stats();
    assert!(
        settled,
        "seed {seed}: the receiver does not sound like the sender 5 s after the stream \
         ({} lost, {} repairs)",
        stats.packets_lost, stats.journal_repairs
    );
    // Guards stop once the receiver confirmed everything: the link goes quiet.
    p.run_for(Duration::from_secs(5));
    let before = p.delivered;
    p.run_for(Duration::from_secs(1));
    let ck_and_rs_only = p.delivered - before <= 4;
    assert!(ck_and_rs_only, "guards never stop");
    Outcome {
        lost: stats.packets_lost,
        repairs: stats.journal_repairs,
        settled_after,
    }
}

fn report(name: &str, outcomes: &[Outcome]) {
    let mut settle: Vec<Duration> = outcomes.iter().map(|o| o.settled_after).collect();
    settle.sort();
    let lost: u64 = outcomes.iter().map(|o| o.lost).sum();
    let repairs: u64 = outcomes.iter().map(|o| o.repairs).sum();
    println!(
        "{name}: {} runs, {lost} packets lost, {repairs} repair commands; receiver right \
         after the stream ended: median {:?}, worst {:?}",
        outcomes.len(),
        settle[settle.len() / 2],
        settle[settle.len() - 1]
    );
    assert!(
        lost > 0,
        "{name}: the link lost nothing; the test proves nothing"
    );
}

fn loss(rate: f64, burst: u32) -> LinkConfig {
    LinkConfig {
        loss: rate,
        burst,
        jitter: Duration::from_millis(1),
        ..LinkConfig::default()
    }
}

#[test]
fn one_percent_loss() {
    let runs: Vec<Outcome> = (0..6).map(|s| run(100 + s, loss(0.01, 1), 1500)).collect();
    report("1% loss", &runs);
}

#[test]
fn five_percent_loss() {
    let runs: Vec<Outcome> = (0..6).map(|s| run(200 + s, loss(0.05, 1), 1500)).collect();
    report("5% loss", &runs);
}

#[test]
fn twenty_percent_loss() {
    let runs: Vec<Outcome> = (0..6).map(|s| run(300 + s, loss(0.20, 1), 1500)).collect();
    report("20% loss", &runs);
}

#[test]
fn bursts_of_loss() {
    let runs: Vec<Outcome> = (0..6).map(|s| run(400 + s, loss(0.02, 8), 1500)).collect();
    report("bursts of 8", &runs);
}

#[test]
fn a_lost_last_note_off_is_repaired_by_a_guard_packet() {
    let mut p = Pair::new(7, LinkConfig::default());
    p.connect(A, B);
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected(A) == 1
        && p.connected(B) == 1));
    let a = p.session_id(A);
    let send = |p: &mut Pair, bytes: &[u8]| {
        let now = p.now;
        let session = p.nodes[A].endpoint.session_mut(a).unwrap();
        session.send_midi(now, &MidiMessage::from_bytes(bytes).unwrap());
    };
    send(&mut p, &[0x90, 60, 100]);
    p.run_for(Duration::from_millis(50));
    // Lose exactly the next RTP packet: the note-off.
    let mut armed = true;
    p.filter = Some(Box::new(move |from, _, bytes| {
        let rtp = from == A && bytes.first() == Some(&0x80);
        let drop = armed && rtp;
        if drop {
            armed = false;
        }
        drop
    }));
    send(&mut p, &[0x80, 60, 0]);
    let sent_at = p.now;
    let released = p.run_until(Duration::from_secs(2), |p| {
        p.events_of(B).any(|e| {
            matches!(e, Event::Midi(m) if m.recovered && matches!(m.message.as_bytes(), [0x80, 60, _] | [0x90, 60, 0]))
        })
    });
    assert!(released, "the note stayed on: {:?}", p.nodes[B].events);
    let took = p.now - sent_at;
    println!("lost note-off repaired after {took:?}");
    assert!(took <= Duration::from_millis(100), "{took:?}");
}
