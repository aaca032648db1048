//! The timer table (typed ids, ordered by deadline) and the timerfd that wakes the poll for it.
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// Timers keyed by an application id. Each `set` takes a fresh sequence number, so timers with
/// equal deadlines fire in the order they were set, and a timer set while timers are firing can
/// be held back to the next turn of the loop (see [`TimerQueue::pop_due`]).
pub(crate) struct TimerQueue<T> {
    by_deadline: BTreeMap<(Instant, u64), T>,
    by_id: HashMap<T, (Instant, u64)>,
    next_seq: u64,
}

impl<T: Eq + Hash + Clone> TimerQueue<T> {
    pub(crate) fn new() -> Self {
        TimerQueue {
            by_deadline: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Sets `id` to fire at `at`, moving it if it was already set.
    pub(crate) fn set(&mut self, id: T, at: Instant) {
        let key = (at, self.next_seq);
        self.next_seq += 1;
        if let Some(old) = self.by_id.insert(id.clone(), key) {
            self.by_deadline.remove(&old);
        }
        self.by_deadline.insert(key, id);
    }

    /// Cancels `id`; true if it was set.
    pub(crate) fn cancel(&mut self, id: &T) -> bool {
        match self.by_id.remove(id) {
            Some(key) => {
                self.by_deadline.remove(&key);
                true
            }
            None => false,
        }
    }

    pub(crate) fn deadline(&self, id: &T) -> Option<Instant> {
        self.by_id.get(id).map(|&(at, _)| at)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|(&(at, _), _)| at)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// A mark for [`TimerQueue::pop_due`]: timers set after this call come later.
    pub(crate) fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer if it is due at `now` and was set before `mark`.
    /// Stopping at a timer set after the mark keeps a handler that re-sets its timer to "now"
    /// from looping forever, and keeps deadline order: the loop fires it on its next turn.
    pub(crate) fn pop_due(&mut self, now: Instant, mark: u64) -> Option<T> {
        let (&(at, seq), _) = self.by_deadline.first_key_value()?;
        if at > now || seq >= mark {
            return None;
        }
        let (_, id) = self.by_deadline.pop_first()?;
        self.by_id.remove(&id);
        Some(id)
    }
}

/// A CLOCK_MONOTONIC timerfd armed to the nearest deadline with nanosecond resolution, because
/// `mio::Poll::poll` rounds its timeout up to whole milliseconds.
pub(crate) struct DeadlineTimer {
    fd: TimerFd,
    armed: Option<Instant>,
}

impl DeadlineTimer {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(DeadlineTimer { fd, armed: None })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }

    /// Arms the timer for `at`, which must be later than `now`; nothing to do if it already is.
    ///
    /// The timer is relative: it is armed after `now` was read, on the clock `std::time::Instant`
    /// reads on Linux, so it expires no earlier than `at`. The loop still compares every deadline
    /// with a fresh `Instant::now()` before it fires a timer.
    pub(crate) fn arm(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // A zero TimeSpec would disarm the timer; the caller only arms for a future deadline.
        let wait = at
            .saturating_duration_since(now)
            .max(std::time::Duration::from_nanos(1));
        self.fd.set(
            Expiration::OneShot(TimeSpec::from_duration(wait)),
            TimerSetTimeFlags::empty(),
        )?;
        self.armed = Some(at);
        Ok(())
    }

    pub(crate) fn disarm(&mut self) -> io::Result<()> {
        if self.armed.take().is_some() {
            self.fd.unset()?;
        }
        Ok(())
    }

    /// Consumes the expiry count after the timerfd became readable.
    pub(crate) fn acknowledge(&mut self) -> io::Result<()> {
        self.armed = None;
        let mut count = [0u8; 8];
        match nix::unistd::read(self.raw_fd(), &mut count) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_then_set_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.set('c', t0 + Duration::from_millis(3));
        q.set('a', t0 + Duration::from_millis(1));
        q.set('b', t0 + Duration::from_millis(2));
        q.set('d', t0 + Duration::from_millis(3));
        let mark = q.mark();
        let now = t0 + Duration::from_millis(10);
        let fired: Vec<char> = std::iter::from_fn(|| q.pop_due(now, mark)).collect();
        assert_eq!(fired, ['a', 'b', 'c', 'd']);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn not_due_is_not_popped() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.set(1, t0 + Duration::from_micros(5));
        let mark = q.mark();
        assert_eq!(q.pop_due(t0 + Duration::from_micros(4), mark), None);
        assert_eq!(q.pop_due(t0 + Duration::from_micros(5), mark), Some(1));
    }

    #[test]
    fn reset_moves_and_cancel_removes() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.set(1, t0 + Duration::from_millis(1));
        q.set(2, t0 + Duration::from_millis(2));
        q.set(1, t0 + Duration::from_millis(3));
        assert_eq!(q.len(), 2);
        assert_eq!(q.deadline(&1), Some(t0 + Duration::from_millis(3)));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(2)));
        assert!(q.cancel(&2));
        assert!(!q.cancel(&2));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(3)));
    }

    #[test]
    fn timers_set_after_the_mark_wait_for_the_next_turn() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.set(1, t0);
        q.set(2, t0 + Duration::from_micros(1));
        let mark = q.mark();
        q.set(3, t0);
        let later = t0 + Duration::from_millis(1);
        // 1 fires; 3 is next in deadline order but newer than the mark, so the turn ends there.
        assert_eq!(q.pop_due(later, mark), Some(1));
        assert_eq!(q.pop_due(later, mark), None);
        let mark = q.mark();
        let fired: Vec<u8> = std::iter::from_fn(|| q.pop_due(later, mark)).collect();
        assert_eq!(fired, [3, 2]);
    }
}
