//! Datagrams in flight on a simulated link: each lands when its time comes; those due at the
//! same time land in the order they were sent.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use protocol::time::Instant;

pub struct Flights<T> {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    held: HashMap<u64, T>,
    next: u64,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            due: BinaryHeap::new(),
            held: HashMap::new(),
            next: 0,
        }
    }
}

impl<T> Flights<T> {
    pub fn send(&mut self, at: Instant, datagram: T) {
        self.due.push(Reverse((at, self.next)));
        self.held.insert(self.next, datagram);
        self.next += 1;
    }

    /// When the next one lands.
    pub fn next_at(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// The next one due by `now`.
    pub fn land(&mut self, now: Instant) -> Option<T> {
        let &Reverse((at, id)) = self.due.peek()?;
        if at > now {
            return None;
        }
        self.due.pop();
        self.held.remove(&id)
    }
}
