//! What the listeners refuse, for the log: datagrams dropped (a summary at most every
//! [`WARN_INTERVAL`]) and why invitations are refused.
use std::net::SocketAddr;

use log::{debug, warn};
use protocol::admission::Refusal;
use protocol::endpoint::Dropped;
use protocol::time::{Duration, Instant};

/// Dropped datagrams are logged at warn level at most this often.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Counts dropped datagrams; logs each at debug level and a summary of all but late ones at
/// most every [`WARN_INTERVAL`] at warn.
#[derive(Default)]
pub struct DropLog {
    since_warn: u64,
    total: u64,
    last_warn: Option<Instant>,
}

impl DropLog {
    /// A `len`-byte datagram from `from` dropped at `now`.
    pub fn record(&mut self, now: Instant, why: Dropped, from: SocketAddr, len: usize) {
        debug!("dropped a {len}-byte datagram from {from}: {why:?}");
        // The tail of a session that ended is expected.
        if why == Dropped::Late {
            return;
        }
        self.total += 1;
        self.since_warn += 1;
        if self
            .last_warn
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_INTERVAL)
        {
            warn!(
                "dropped {} datagram(s) that belong to no session or are malformed \
                 (last from {from}: {why:?}; {} in all)",
                self.since_warn, self.total
            );
            self.since_warn = 0;
            self.last_warn = Some(now);
        }
    }
}

/// Why invitations are refused, in the configuration's terms.
pub fn refusal_text(why: Refusal) -> &'static str {
    match why {
        Refusal::Address => "address not allowed: see allow/deny",
        Refusal::Sessions => "max_sessions reached",
        Refusal::HostSessions => "max_sessions_per_host reached",
        Refusal::HalfOpen => "too many half-open invitations from one host",
        Refusal::Policy => "refused by policy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_up_at_most_every_interval() {
        let from: SocketAddr = "10.0.0.2:5004".parse().unwrap();
        let at = |s: u64| Instant::from_micros(s * 1_000_000);
        let mut log = DropLog::default();
        let warned: Vec<bool> = [0, 1, 9, 10, 15, 21]
            .into_iter()
            .map(|s| {
                log.record(at(s), Dropped::Malformed, from, 4);
                log.since_warn == 0
            })
            .collect();
        assert_eq!(warned, [true, false, false, true, false, true]);
        assert_eq!(log.total, 6);
    }

    #[test]
    fn late_datagrams_are_not_warned_of() {
        let from: SocketAddr = "10.0.0.2:5005".parse().unwrap();
        let mut log = DropLog::default();
        log.record(Instant::from_micros(0), Dropped::Late, from, 20);
        assert_eq!((log.total, log.last_warn), (0, None));
    }
}
