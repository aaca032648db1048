//! Time as the state machines see it: an [`Instant`] the caller hands in, microseconds since an
//! origin of the caller's choosing, and the clocks derived from it.
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in time in microseconds since an arbitrary origin (the daemon uses a monotonic
/// clock, tests a simulated one).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Ticks of a 10 kHz clock (RTP-MIDI timestamps, AppleMIDI CK timestamps: 100 µs units)
    /// elapsed since `origin`.
    pub fn ticks_10khz_since(self, origin: Instant) -> u64 {
        self.saturating_duration_since(origin).as_micros() as u64 / MICROS_PER_TICK
    }
}

/// Microseconds per tick of the 10 kHz RTP-MIDI and CK clocks.
pub const MICROS_PER_TICK: u64 = 100;

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.as_micros() as u64))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an `earlier` that is later gives zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_ticks() {
        let t0 = Instant::from_micros(1_000);
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(t1.as_micros(), 6_000);
        assert_eq!(t1 - t0, Duration::from_millis(5));
        assert_eq!(t0 - t1, Duration::ZERO);
        assert_eq!(t1.ticks_10khz_since(t0), 50);
    }
}
