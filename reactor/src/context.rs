//! What a handler may do to the loop: (de)register fds, set and cancel timers, read the time,
//! stop. The dispatcher table of fd slots lives here.
use std::hash::Hash;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::timers::TimerQueue;

/// An fd handler: called with the application state, the loop's context and what the fd is
/// ready for. Sources are edge-triggered: see [`Event`].
pub type Handler<S, T> = fn(&mut S, &mut Context<S, T>, Event);

/// Identifies a registered fd. It goes stale when the fd is deregistered: a later source that
/// reuses the slot gets a different `SourceId`, and events still queued for the old one are
/// dropped instead of reaching the new handler.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SourceId {
    index: usize,
    generation: usize,
}

/// Half of a token holds the slot index, the other half the slot's generation.
const HALF_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << HALF_BITS) - 1;
/// Slots stop below the tokens the loop keeps for its own fds.
const MAX_SLOTS: usize = INDEX_MASK - 1;

impl SourceId {
    fn token(self) -> Token {
        Token(((self.generation & INDEX_MASK) << HALF_BITS) | self.index)
    }

    fn from_token(token: Token) -> Self {
        SourceId {
            index: token.0 & INDEX_MASK,
            generation: token.0 >> HALF_BITS,
        }
    }
}

/// Readiness of a registered fd, as the poll reported it.
///
/// Registration is edge-triggered (mio): a handler that is told `readable` must read until
/// the call returns `WouldBlock`, or it will not be told again until new data arrives; the same
/// goes for `writable` and writes. To bound the work done for one fd per wakeup (so one flooding
/// peer cannot starve the others), read a batch and then call [`Context::reregister`]: if data is
/// left, the fd is reported again on the next turn of the loop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    pub source: SourceId,
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its end (read or write side), or the fd hung up.
    pub hup: bool,
    /// An error is pending on the fd (for a socket, read it with `SO_ERROR` or a receive).
    pub error: bool,
}

impl Event {
    pub(crate) fn new(source: SourceId, fd: RawFd, ev: &mio::event::Event) -> Self {
        Event {
            source,
            fd,
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            hup: ev.is_read_closed() || ev.is_write_closed(),
            error: ev.is_error(),
        }
    }
}

struct Slot<S, T> {
    generation: usize,
    entry: Option<(RawFd, Handler<S, T>)>,
}

/// The loop as a handler sees it. [`crate::Reactor::context`] gives the same before and
/// between runs, to register the first sources and timers.
pub struct Context<S, T> {
    registry: Registry,
    slots: Vec<Slot<S, T>>,
    free: Vec<usize>,
    pub(crate) timers: TimerQueue<T>,
    pub(crate) now: Instant,
    pub(crate) stop: bool,
}

impl<S, T: Eq + Hash + Clone> Context<S, T> {
    pub(crate) fn new(registry: Registry) -> Self {
        Context {
            registry,
            slots: Vec::new(),
            free: Vec::new(),
            timers: TimerQueue::new(),
            now: Instant::now(),
            stop: false,
        }
    }

    /// Registers `fd` for `interest`, to be handled by `handler`. The caller keeps owning the
    /// fd and must [`deregister`](Self::deregister) it before closing it.
    pub fn register(
        &mut self,
        fd: RawFd,
        interest: Interest,
        handler: Handler<S, T>,
    ) -> io::Result<SourceId> {
        let index = match self.free.last() {
            Some(&index) => index,
            None if self.slots.len() < MAX_SLOTS => self.slots.len(),
            None => return Err(io::Error::other("reactor: too many registered fds")),
        };
        let generation = self.slots.get(index).map_or(0, |slot| slot.generation);
        let id = SourceId { index, generation };
        self.registry
            .register(&mut SourceFd(&fd), id.token(), interest)?;
        let slot = Slot {
            generation,
            entry: Some((fd, handler)),
        };
        if index == self.slots.len() {
            self.slots.push(slot);
        } else {
            self.free.pop();
            self.slots[index] = slot;
        }
        Ok(id)
    }

    /// Changes the interest of a registered fd. It also re-reports the fd on the next turn if
    /// it is still ready, which a handler can use to yield after a bounded batch of work.
    pub fn reregister(&mut self, id: SourceId, interest: Interest) -> io::Result<()> {
        let fd = self.fd(id).ok_or_else(stale)?;
        self.registry
            .reregister(&mut SourceFd(&fd), id.token(), interest)
    }

    /// Removes a source; events still queued for it are dropped. The slot is freed even if the
    /// poll reports an error (for example when the fd was closed first).
    pub fn deregister(&mut self, id: SourceId) -> io::Result<()> {
        let fd = self.fd(id).ok_or_else(stale)?;
        let slot = &mut self.slots[id.index];
        slot.entry = None;
        slot.generation = slot.generation.wrapping_add(1) & INDEX_MASK;
        self.free.push(id.index);
        self.registry.deregister(&mut SourceFd(&fd))
    }

    /// The fd of a live source.
    pub fn fd(&self, id: SourceId) -> Option<RawFd> {
        self.live(id).map(|(fd, _)| fd)
    }

    /// The handler to call for an event with `token`, unless the token is stale.
    pub(crate) fn lookup(&self, token: Token) -> Option<(SourceId, RawFd, Handler<S, T>)> {
        let id = SourceId::from_token(token);
        self.live(id).map(|(fd, handler)| (id, fd, handler))
    }

    fn live(&self, id: SourceId) -> Option<(RawFd, Handler<S, T>)> {
        let slot = self.slots.get(id.index)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry
    }

    /// Sets timer `id` to fire at `at`, moving it if it is already set. The timer handler is
    /// called once with `id`, never before `at`.
    pub fn set_timer(&mut self, id: T, at: Instant) {
        self.timers.set(id, at);
    }

    /// Cancels timer `id`; true if it was set.
    pub fn cancel_timer(&mut self, id: &T) -> bool {
        self.timers.cancel(id)
    }

    /// The deadline of timer `id`, if it is set.
    pub fn timer(&self, id: &T) -> Option<Instant> {
        self.timers.deadline(id)
    }

    /// How many timers are set.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// The time the loop last woke up, read again before timers fire; in a timer handler it is
    /// at or after the timer's deadline.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Asks the loop to stop: `run` returns once the fd events of the current wakeup have been
    /// handled. Timers that are due but not fired yet stay set.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn stopping(&self) -> bool {
        self.stop
    }
}

fn stale() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "reactor: stale SourceId")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_keeps_index_and_generation() {
        let id = SourceId {
            index: 7,
            generation: 3,
        };
        assert_eq!(SourceId::from_token(id.token()), id);
        assert_ne!(
            id.token(),
            SourceId {
                index: 7,
                generation: 4
            }
            .token()
        );
    }
}
