//! When to send a guard packet: a journal-only packet after the stream goes quiet, so that a
//! lost last command (typically a note-off) is repaired without waiting for more MIDI.
//!
//! RFC 4696 §4.2 describes guard packets; the RFC's author sent the first about 20 ms after
//! the last command and backed off to about 1 s. Here: first after [`GUARD_FIRST`], doubling
//! up to [`GUARD_MAX`], reset by any packet that carried MIDI.
//!
//! Use with a [`JournalSender`](super::JournalSender): when `now >= next_guard()`, if the
//! sender [`has_pending`](super::JournalSender::has_pending) history and its `emit` returns a
//! journal, send a packet with an empty command list and that journal, then call
//! `on_sent(now, false)`; if nothing is pending call [`GuardTimer::stop`].
//!
//! Guards are only useful to a receiver that reads them, and only a receiver that confirms
//! (RS) shows it does. A timer made with [`GuardTimer::bounded`] sends at most a given number
//! of guard packets without a confirmation between them (tell it with
//! [`GuardTimer::on_confirmed`]), then none until one comes: a thousand peers that never
//! answer cost a few guards each, not one a second forever.
use crate::time::{Duration, Instant};

/// Delay from the last MIDI packet to the first guard packet.
pub const GUARD_FIRST: Duration = Duration::from_millis(25);
/// Longest delay between guard packets.
pub const GUARD_MAX: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default)]
pub struct GuardTimer {
    next: Option<Instant>,
    interval: Duration,
    /// Guard packets sent since the receiver last confirmed anything.
    unconfirmed: u32,
    /// Most guard packets sent without a confirmation; `None`: no bound.
    limit: Option<u32>,
}

impl GuardTimer {
    /// Guards for as long as something is unconfirmed.
    pub fn new() -> Self {
        GuardTimer::default()
    }

    /// At most `limit` guard packets in a row without a confirmation in between.
    pub fn bounded(limit: u32) -> Self {
        GuardTimer {
            limit: Some(limit),
            ..GuardTimer::default()
        }
    }

    /// Whether the bound was reached: no guards until the receiver confirms something.
    pub fn is_silenced(&self) -> bool {
        self.limit.is_some_and(|l| self.unconfirmed >= l)
    }

    /// When the next guard packet is due, if one is.
    pub fn next_guard(&self) -> Option<Instant> {
        self.next
    }

    /// A packet went out at `now`: one with MIDI (`had_midi`) restarts the back-off, a guard
    /// packet doubles the delay to the next one.
    pub fn on_sent(&mut self, now: Instant, had_midi: bool) {
        self.interval = if had_midi || self.interval.is_zero() {
            GUARD_FIRST
        } else {
            self.unconfirmed = self.unconfirmed.saturating_add(1);
            (self.interval * 2).min(GUARD_MAX)
        };
        self.next = (!self.is_silenced()).then_some(now + self.interval);
    }

    /// The receiver confirmed something (an RS, whatever it names): it reads what we send, so
    /// guards silenced by the bound resume, after the current delay.
    pub fn on_confirmed(&mut self, now: Instant) {
        let resume = self.is_silenced() && !self.interval.is_zero();
        self.unconfirmed = 0;
        if resume {
            self.next = Some(now + self.interval);
        }
    }

    /// Nothing left to protect (the receiver confirmed everything): no more guards until the
    /// next MIDI packet.
    pub fn stop(&mut self) {
        self.next = None;
        self.interval = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_and_resets() {
        let mut g = GuardTimer::new();
        assert_eq!(g.next_guard(), None);
        let t0 = Instant::from_micros(1_000_000);
        g.on_sent(t0, true);
        assert_eq!(g.next_guard(), Some(t0 + GUARD_FIRST));
        let mut now = t0 + GUARD_FIRST;
        let mut delays = Vec::new();
        for _ in 0..8 {
            g.on_sent(now, false);
            let next = g.next_guard().unwrap();
            delays.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        g.on_sent(now, true);
        assert_eq!(g.next_guard(), Some(now + GUARD_FIRST));
        g.stop();
        assert_eq!(g.next_guard(), None);
        // A guard after a stop starts over at the first delay.
        g.on_sent(now, false);
        assert_eq!(g.next_guard(), Some(now + GUARD_FIRST));
    }

    #[test]
    fn a_bounded_timer_stops_without_confirmations_and_resumes_with_one() {
        let mut g = GuardTimer::bounded(3);
        let mut now = Instant::from_micros(1_000_000);
        g.on_sent(now, true);
        let mut guards = 0;
        while let Some(at) = g.next_guard() {
            now = at;
            g.on_sent(now, false);
            guards += 1;
        }
        assert_eq!(guards, 3);
        assert!(g.is_silenced());
        // More MIDI to a receiver that never confirms: still no guards.
        g.on_sent(now, true);
        assert_eq!(g.next_guard(), None);
        // It confirms: guards go on, after the current delay.
        g.on_confirmed(now);
        assert_eq!(g.next_guard(), Some(now + GUARD_FIRST));
        // A receiver that confirms now and then never hits the bound.
        for _ in 0..10 {
            for _ in 0..2 {
                now = g.next_guard().unwrap();
                g.on_sent(now, false);
            }
            g.on_confirmed(now);
        }
        assert!(g.next_guard().is_some());
    }
}
