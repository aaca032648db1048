//! `--playout-delay`: when MIDI from a session should reach ALSA, from its RTP timestamp.
//!
//! RTP-MIDI stamps every command with the sender's 10 kHz clock (RFC 6295 §3: the RTP
//! timestamp, plus the command's delta time). Played out a fixed delay after the moment the
//! sender stamped it, the spacing between events survives network jitter up to that delay.
//! The map from the peer's ticks to our time comes from one of two sources:
//! - the CK clock offset (AppleMIDI clock synchronisation), when our session runs CK rounds
//!   (we invited: `--connect` targets). A round's offset is off by up to half its round trip,
//!   so the round with the shortest round trip is kept (renewed after [`CK_RENEW`] for
//!   drift), and an event that arrives before the time its stamp maps to corrects the map
//!   (it cannot have been sent later than it arrived). A peer's RTP timestamps and CK
//!   timestamps come from the same clock (as Apple's do and ours do); a peer whose don't (more
//!   than [`PLAUSIBLE`] apart) falls back to the second source.
//! - arrivals: the event that arrived earliest relative to its stamp so far stands for the
//!   fastest transit; events are played the delay after their stamp maps to on that basis.
//!   The base is renewed from the best arrival of every [`WINDOW`], so clock drift does not
//!   pile up. Used for sessions a peer started with us (they send CK, we only answer it).
//!
//! Events are never held longer than the delay after they arrived, never scheduled in the
//! past, and never before an earlier event of the same session (so order holds).
use std::collections::BTreeMap;

use log::{trace, warn};
use protocol::time::{Duration, Instant, MICROS_PER_TICK};

use crate::router::{ListenerId, SessionKey};

/// A CK-based time this far from an event's arrival means the peer's RTP clock is not its CK
/// clock.
pub const PLAUSIBLE: Duration = Duration::from_secs(1);
/// A CK round with a longer round trip than the kept one replaces it only after this long.
pub const CK_RENEW: Duration = Duration::from_secs(60);
/// How long one base from arrivals lasts before the best arrival of the window replaces it.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A peer tick and the instant (ours) it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Anchor {
    tick: u32,
    at: i64,
}

impl Anchor {
    /// Our time, in µs, of peer tick `tick` (ticks wrap at 2^32: nearest reading).
    fn map(self, tick: u32) -> i64 {
        let ticks = i64::from(tick.wrapping_sub(self.tick) as i32);
        self.at + ticks * MICROS_PER_TICK as i64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Arrivals,
    Clock,
    /// The CK offset disagreed with arrivals: arrivals from now on.
    ClockUnusable,
}

/// The playout schedule of one session.
#[derive(Debug)]
pub struct Playout {
    delay: i64,
    source: Source,
    anchor: Option<Anchor>,
    /// The best arrival of the current window, and when the window began.
    window_best: Option<Anchor>,
    window_start: Option<i64>,
    /// The round trip of the CK round in use, and when it ended.
    ck_round: Option<(Duration, i64)>,
    last: i64,
}

impl Playout {
    pub fn new(delay: Duration) -> Self {
        Playout {
            delay: delay.as_micros() as i64,
            source: Source::Arrivals,
            anchor: None,
            window_best: None,
            window_start: None,
            ck_round: None,
            last: 0,
        }
    }

    /// A CK round of round trip `rtt` ended at `now`: the session's own clock read
    /// `local_ticks` and the peer's is `offset_ticks` ahead of it (`Event::Latency`).
    pub fn on_clock(&mut self, now: Instant, rtt: Duration, local_ticks: u64, offset_ticks: i64) {
        let better = self.ck_round.is_none_or(|(best, at)| {
            rtt <= best || micros(now) - at >= CK_RENEW.as_micros() as i64
        });
        if self.source == Source::ClockUnusable || !better {
            return;
        }
        self.source = Source::Clock;
        self.ck_round = Some((rtt, micros(now)));
        self.anchor = Some(Anchor {
            tick: (local_ticks as i64).wrapping_add(offset_ticks) as u32,
            at: micros(now),
        });
    }

    /// True once a CK offset is in use.
    pub fn uses_clock(&self) -> bool {
        self.source == Source::Clock
    }

    /// When to deliver an event stamped `tick` that arrived at `now`.
    pub fn schedule(&mut self, now: Instant, tick: u32) -> Instant {
        let now_us = micros(now);
        if self.source == Source::Clock {
            let transit = self.anchor.map_or(0, |a| now_us - a.map(tick));
            if transit.unsigned_abs() > PLAUSIBLE.as_micros() as u64 {
                self.source = Source::ClockUnusable;
                self.anchor = None;
            } else if transit < 0 {
                // Arrived before it was sent, by the map: the map is that much late.
                self.anchor = Some(Anchor { tick, at: now_us });
            }
        }
        if self.source != Source::Clock {
            self.observe(now_us, tick);
        }
        let stamped = self.anchor.map_or(now_us, |a| a.map(tick));
        let at = (stamped + self.delay)
            .clamp(now_us, now_us + self.delay)
            .max(self.last);
        self.last = at;
        Instant::from_micros(at as u64)
    }

    /// An arrival: a new base when it beats the current one, or when a window ends.
    fn observe(&mut self, now: i64, tick: u32) {
        let here = Anchor { tick, at: now };
        let beats = |a: Option<Anchor>| a.is_none_or(|a| a.map(tick) > now);
        if beats(self.anchor) {
            self.anchor = Some(here);
        }
        if beats(self.window_best) {
            self.window_best = Some(here);
        }
        let start = *self.window_start.get_or_insert(now);
        if now - start >= WINDOW.as_micros() as i64 {
            self.anchor = self.window_best.take().or(self.anchor);
            self.window_start = Some(now);
        }
    }
}

/// Every session's schedule, made at its first event or CK round.
#[derive(Default)]
pub struct Playouts(BTreeMap<SessionKey, Playout>);

impl Playouts {
    /// How long MIDI stamped `timestamp` by session `key`'s peer, arrived `now`, waits on a
    /// schedule `delay` long.
    pub fn after(
        &mut self,
        now: Instant,
        key: SessionKey,
        timestamp: u32,
        delay: Duration,
    ) -> Duration {
        let playout = self.0.entry(key).or_insert_with(|| Playout::new(delay));
        let was_clock = playout.uses_clock();
        let at = playout.schedule(now, timestamp);
        if was_clock && !playout.uses_clock() {
            warn!(
                "session {}: RTP timestamps far from the CK clock: playout timed by arrivals",
                key.session.0
            );
        }
        trace!("playout of {timestamp} in {:?}", at - now);
        at - now
    }

    /// A CK round of session `key` ended (see [`Playout::on_clock`]): its offset times the
    /// playout from now on.
    pub fn on_clock(
        &mut self,
        now: Instant,
        key: SessionKey,
        delay: Duration,
        (rtt, local_ticks, offset_ticks): (Duration, u64, i64),
    ) {
        self.0
            .entry(key)
            .or_insert_with(|| Playout::new(delay))
            .on_clock(now, rtt, local_ticks, offset_ticks);
    }

    /// Session `key` ended.
    pub fn remove(&mut self, key: SessionKey) {
        self.0.remove(&key);
    }

    /// Listener `id` closed with its sessions.
    pub fn remove_listener(&mut self, id: ListenerId) {
        self.0.retain(|key, _| key.listener != id);
    }
}

fn micros(t: Instant) -> i64 {
    t.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(50);
    const RTT: Duration = Duration::from_micros(400);

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    /// Ticks of `n` ms on a peer clock that read `base` at our time zero.
    fn tick(base: u32, n: u32) -> u32 {
        base.wrapping_add(n * 10)
    }

    #[test]
    fn arrivals_keep_the_senders_spacing_through_jitter() {
        let mut p = Playout::new(DELAY);
        // Stamped every 10 ms; transit 2 ms, except two late by 30 and 45 ms.
        let base = 7_000_000;
        let transit = [2, 2, 32, 2, 47, 2];
        let got: Vec<u64> = transit
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let sent = 10 * i as u64;
                p.schedule(ms(sent + t), tick(base, sent as u32))
                    .as_micros()
                    / 1000
            })
            .collect();
        // First arrival at 2 ms is the base: each plays at its stamp + 2 + 50 ms.
        assert_eq!(got, [52, 62, 72, 82, 92, 102]);
    }

    #[test]
    fn a_faster_arrival_becomes_the_base() {
        let mut p = Playout::new(DELAY);
        assert_eq!(p.schedule(ms(20), tick(0, 0)), ms(70)); // transit 20 ms, as far as we know
        assert_eq!(p.schedule(ms(35), tick(0, 30)), ms(85)); // transit 5 ms: new base
        assert_eq!(p.schedule(ms(60), tick(0, 40)), ms(95)); // 40 + 5 + 50
    }

    #[test]
    fn never_in_the_past_never_later_than_the_delay_never_out_of_order() {
        let mut p = Playout::new(DELAY);
        p.schedule(ms(1000), tick(0, 1000));
        // Later than the delay: at once.
        assert_eq!(p.schedule(ms(1100), tick(0, 1010)), ms(1100));
        // Stamped earlier than the one before: not before it.
        assert_eq!(p.schedule(ms(1100), tick(0, 1005)), ms(1100));
        // A stamp far in the future (a peer's clock jumped): at most the delay.
        assert_eq!(p.schedule(ms(1101), tick(0, 900_000)), ms(1151));
    }

    #[test]
    fn timestamps_wrap() {
        let mut p = Playout::new(DELAY);
        let base = u32::MAX - 5; // wraps half a millisecond in
        assert_eq!(p.schedule(ms(3), tick(base, 0)), ms(53));
        assert_eq!(p.schedule(ms(13), tick(base, 10)), ms(63));
    }

    #[test]
    fn the_clock_offset_maps_stamps_to_our_time() {
        let mut p = Playout::new(DELAY);
        // At our 100 ms the session clock read 1000 ticks; the peer is 5000 ticks ahead, so
        // its tick 6000 was our 100 ms, and tick 6100 our 110 ms.
        p.on_clock(ms(100), RTT, 1000, 5000);
        assert!(p.uses_clock());
        // Arrived 15 ms after it was stamped: played 50 ms after the stamp, not the arrival.
        assert_eq!(p.schedule(ms(125), 6100), ms(160));
        // A later CK round as good moves the map (drift); a worse one does not, unless the
        // one in use is old.
        p.on_clock(ms(200), RTT, 2000, 5010);
        assert_eq!(p.schedule(ms(211), 7110), ms(260));
        p.on_clock(ms(300), RTT * 4, 3000, 5100);
        assert_eq!(p.schedule(ms(312), 8110), ms(360));
        p.on_clock(ms(60_200), RTT * 4, 601_000, 5100);
        assert_eq!(p.schedule(ms(60_212), 606_110), ms(60_251));
    }

    #[test]
    fn an_event_arriving_before_its_mapped_time_corrects_the_clock_map() {
        let mut p = Playout::new(DELAY);
        // The offset came out 30 ms too high (an asymmetric round trip).
        p.on_clock(ms(100), RTT, 1000, 5300);
        // Peer tick 6300 is our 100 ms by the map, so 6500 our 120 ms; an event stamped 6500
        // arrives at 105 ms: the map is at least 15 ms late.
        assert_eq!(p.schedule(ms(105), 6500), ms(155));
        assert!(p.uses_clock());
        assert_eq!(p.schedule(ms(116), 6600), ms(165));
    }

    #[test]
    fn an_implausible_clock_offset_falls_back_to_arrivals() {
        let mut p = Playout::new(DELAY);
        p.on_clock(ms(100), RTT, 1000, 5000);
        // A stamp from a random RTP base: 4 s away from what CK says.
        assert_eq!(p.schedule(ms(120), 46_000), ms(170));
        assert!(!p.uses_clock());
        p.on_clock(ms(300), RTT, 3000, 5000); // ignored from now on
        assert_eq!(p.schedule(ms(130), 46_100), ms(180));
    }

    #[test]
    fn the_base_follows_a_drifting_peer_clock() {
        // Sent and arrived at once every 100 ms for two minutes, the peer's clock 0.1 % slow
        // or fast. A fixed base would lose the whole delay to a slow clock after 50 s; renewed
        // every window, at most two windows of drift (20 ms) are lost.
        for ticks_per_100ms in [999, 1001] {
            let mut p = Playout::new(DELAY);
            for i in 0..1200u64 {
                let ours = ms(i * 100);
                let at = p.schedule(ours, (i * ticks_per_100ms) as u32);
                let lead = (at - ours).as_millis();
                assert!(
                    (30..=50).contains(&lead),
                    "{ticks_per_100ms}: {i}: {lead} ms"
                );
            }
        }
    }

    #[test]
    fn each_session_has_its_own_schedule_until_it_ends() {
        let mut router = crate::router::Router::new("us", true, false, 1);
        let extra = router.add_listener("extra", 5010);
        let key = |listener, n| SessionKey {
            listener,
            session: protocol::endpoint::SessionId(n),
        };
        let (a, b) = (key(router.main(), 1), key(extra, 1));
        let mut p = Playouts::default();
        assert_eq!(p.after(ms(0), a, tick(0, 0), DELAY), DELAY);
        // Another session's clock does not move the first one's schedule.
        assert_eq!(p.after(ms(1), b, tick(90_000, 0), DELAY), DELAY);
        // Stamped 5 ms after a's first event, arrived 30 ms after it: played at 55 ms.
        let late = Duration::from_millis(25);
        assert_eq!(p.after(ms(30), a, tick(0, 5), DELAY), late);
        p.remove_listener(router.main());
        // A new session there starts a new schedule.
        assert_eq!(p.after(ms(40), a, tick(0, 5), DELAY), DELAY);
        p.remove(b);
        assert_eq!(p.after(ms(41), b, tick(90_000, 5), DELAY), DELAY);
    }
}
