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
use crate::time::{Duration, Instant};

/// Delay from the last MIDI packet to the first guard packet.
pub const GUARD_FIRST: Duration = Duration::from_millis(25);
/// Longest delay between guard packets.
pub const GUARD_MAX: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default)]
pub struct GuardTimer {
    next: Option<Instant>,
    interval: Duration,
}

impl GuardTimer {
    pub fn new() -> Self {
        GuardTimer::default()
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
            (self.interval * 2).min(GUARD_MAX)
        };
        self.next = Some(now + self.interval);
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
}
