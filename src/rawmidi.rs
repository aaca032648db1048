//! Raw MIDI devices' rules, without I/O (`src/device.rs` holds the files):
//! when a device's path counts as there, and the bounded queue of what waits for a device
//! that takes MIDI slower than it comes. Time is an argument.
use std::collections::VecDeque;

use log::warn;
use protocol::midi::MAX_SYSEX;
use protocol::time::{Duration, Instant};

/// After a device failed, how long before its path counts again: a node that stays but
/// cannot be used would otherwise open and fail every poll.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);
/// Bytes waiting for a full device, at most: room for the largest SysEx.
pub const MAX_QUEUED: usize = MAX_SYSEX;

/// Whether a device is there, as the router was last told.
#[derive(Default)]
pub struct Presence {
    present: bool,
    /// After a failure, the path is ignored until then.
    quiet_until: Option<Instant>,
}

impl Presence {
    /// The path looked for at `now` (`exists` is asked only when it counts): the news for the
    /// router, if it changed.
    pub fn look(&mut self, now: Instant, exists: impl FnOnce() -> bool) -> Option<bool> {
        if self.quiet_until.is_some_and(|at| now < at) {
            return None;
        }
        self.quiet_until = None;
        let present = exists();
        (present != self.present).then(|| {
            self.present = present;
            present
        })
    }

    /// The device failed at `now`: it is gone, and its path ignored for a while.
    pub fn failed(&mut self, now: Instant) {
        self.present = false;
        self.quiet_until = Some(now + RETRY_AFTER_ERROR);
    }
}

/// Messages not written yet; the first may be written in part. When full the oldest go, never
/// the one written in part, which the device must get whole.
pub struct Outbox {
    /// The device's name, for the log.
    name: String,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// Bytes of the first message written.
    written: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(name: &str) -> Outbox {
        Outbox {
            name: name.to_string(),
            queue: VecDeque::new(),
            queued: 0,
            written: 0,
            dropped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        while self.queued + bytes.len() > MAX_QUEUED {
            let at = usize::from(self.written > 0);
            let Some(old) = self.queue.remove(at) else {
                break;
            };
            self.queued -= old.len();
            self.dropped += 1;
            // Logged each time a power of two is reached: a stuck device is heard of, once.
            if self.dropped.is_power_of_two() {
                warn!(
                    "raw MIDI device {:?} is full: {} message(s) dropped",
                    self.name, self.dropped
                );
            }
        }
        self.queued += bytes.len();
        self.queue.push_back(bytes.to_vec());
    }

    /// What to write next: the rest of the first message.
    pub fn next(&self) -> Option<&[u8]> {
        self.queue.front().map(|m| &m[self.written..])
    }

    /// `n` bytes of [`Outbox::next`] were written.
    pub fn wrote(&mut self, n: usize) {
        let Some(front) = self.queue.front() else {
            return;
        };
        self.written += n;
        if self.written == front.len() {
            self.queued -= front.len();
            self.written = 0;
            self.queue.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages dropped in all.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn a_path_is_news_when_it_comes_or_goes() {
        let mut p = Presence::default();
        assert_eq!(p.look(t(0), || false), None);
        assert_eq!(p.look(t(1000), || true), Some(true));
        assert_eq!(p.look(t(2000), || true), None);
        assert_eq!(p.look(t(3000), || false), Some(false));
    }

    #[test]
    fn a_failed_device_is_not_looked_for_a_while() {
        let mut p = Presence::default();
        assert_eq!(p.look(t(0), || true), Some(true));
        p.failed(t(1000));
        let quiet = t(1000) + RETRY_AFTER_ERROR;
        assert_eq!(p.look(t(2000), || panic!("looked for too soon")), None);
        // Back: the router, told of the failure, hears of it again.
        assert_eq!(p.look(quiet, || true), Some(true));
    }

    #[test]
    fn messages_come_out_whole_in_order_written_in_parts() {
        let mut out = Outbox::new("d");
        out.push(&[0x90, 60, 100]);
        out.push(&[0x80, 60, 0]);
        assert_eq!(out.next(), Some(&[0x90, 60, 100][..]));
        out.wrote(2);
        assert_eq!(out.next(), Some(&[100][..]));
        out.wrote(1);
        assert_eq!(out.next(), Some(&[0x80, 60, 0][..]));
        out.wrote(3);
        assert!(out.is_empty());
        assert_eq!(out.next(), None);
    }

    #[test]
    fn when_full_the_oldest_go_but_not_one_written_in_part() {
        let mut out = Outbox::new("d");
        let big = vec![0; MAX_QUEUED / 2];
        out.push(&[1; 10]);
        out.wrote(4);
        out.push(&big);
        out.push(&big);
        // No room: the first half-written message stays, the oldest whole one goes.
        assert_eq!(out.dropped(), 1);
        assert_eq!(out.next(), Some(&[1; 6][..]));
        out.wrote(6);
        assert_eq!(out.next().map(<[u8]>::len), Some(big.len()));
        out.wrote(big.len());
        assert!(out.is_empty());
    }
}
