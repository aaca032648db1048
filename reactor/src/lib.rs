//! A single-threaded `mio::Poll` loop that owns nothing of the application but calls it.
//!
//! The application state `S` is passed as `&mut S` to plain function handlers, together with a
//! [`Context`] through which they register and deregister fds, set and cancel timers and stop
//! the loop. No `Rc<RefCell>`: the loop copies a handler out of its slot in the dispatcher table
//! and calls it; a slot carries a generation, so an event queued for a source that was
//! deregistered (and whose slot may already serve another fd) is dropped.
//!
//! Fds are registered edge-triggered: a handler must drain its fd until `WouldBlock` (see
//! [`Event`]).
//!
//! Timers have an application-chosen id `T` (an enum, say); setting an id that is set moves it.
//! One timer handler, given to [`Reactor::new`], receives the id. A timer never fires before its
//! deadline, timers due together fire in deadline order, and the loop sleeps until the nearest
//! deadline on a timerfd with nanosecond resolution (mio alone rounds up to milliseconds).
//!
//! Signals come through a signalfd ([`Reactor::watch_signals`]).
//!
//! Each turn of the loop: arm the timerfd for the nearest deadline, poll, call the handlers of
//! the fd events of this wakeup (signals included), then fire the timers that are due. Handlers
//! must not block: everything runs on one thread.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use reactor::{Context, Reactor};
//!
//! #[derive(Clone, PartialEq, Eq, Hash, Debug)]
//! enum Timer { Tick }
//!
//! fn on_timer(ticks: &mut u32, ctx: &mut Context<u32, Timer>, _id: Timer) {
//!     *ticks += 1;
//!     if *ticks == 3 {
//!         ctx.stop();
//!     } else {
//!         let next = ctx.now() + Duration::from_micros(200);
//!         ctx.set_timer(Timer::Tick, next);
//!     }
//! }
//!
//! let mut reactor = Reactor::new(on_timer).unwrap();
//! reactor.context().set_timer(Timer::Tick, Instant::now());
//! let mut ticks = 0;
//! reactor.run(&mut ticks).unwrap();
//! assert_eq!(ticks, 3);
//! ```
mod context;
mod timers;

use std::hash::Hash;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Poll, Token};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub use context::{Context, Event, Handler, SourceId};
pub use mio::Interest;
pub use nix::sys::signal::Signal;

use timers::DeadlineTimer;

/// The timer handler: called with the id of a timer whose deadline has passed.
pub type TimerHandler<S, T> = fn(&mut S, &mut Context<S, T>, T);

/// The signal handler: called once per signal received.
pub type SignalHandler<S, T> = fn(&mut S, &mut Context<S, T>, Signal);

/// The signals the daemon watches: SIGINT and SIGTERM (shut down), SIGHUP (reload).
pub const DAEMON_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Tokens of the loop's own fds; slot tokens stay below them.
const TIMERFD_TOKEN: Token = Token(usize::MAX);
const SIGNALFD_TOKEN: Token = Token(usize::MAX - 1);

const EVENTS_CAPACITY: usize = 256;

/// The loop. `S` is the application state, `T` the timer id.
pub struct Reactor<S, T> {
    poll: Poll,
    events: Events,
    ctx: Context<S, T>,
    deadline_timer: DeadlineTimer,
    on_timer: TimerHandler<S, T>,
    signals: Option<(SignalFd, SignalHandler<S, T>)>,
}

impl<S, T: Eq + Hash + Clone> Reactor<S, T> {
    /// A loop whose timers are all handled by `on_timer`.
    pub fn new(on_timer: TimerHandler<S, T>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let ctx = Context::new(poll.registry().try_clone()?);
        let deadline_timer = DeadlineTimer::new()?;
        poll.registry().register(
            &mut SourceFd(&deadline_timer.raw_fd()),
            TIMERFD_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            ctx,
            deadline_timer,
            on_timer,
            signals: None,
        })
    }

    /// Blocks `signals` in the calling thread and delivers them to `on_signal` through a
    /// signalfd. Call it from the main thread before any other thread starts: threads inherit
    /// the mask, and a process-directed signal is otherwise delivered to some thread that does
    /// not block it (running its default action, which for these signals ends the process).
    /// Children started later inherit the blocked mask too.
    ///
    /// The loop does not interpret signals. For the daemon: the first SIGINT/SIGTERM starts a
    /// graceful shutdown (send BYE, perhaps set a short timer, then [`Context::stop`]); the
    /// handler counts them in `S` and exits at once on the second. Call it once: a second call
    /// replaces the signalfd, but signals blocked by the first stay blocked.
    pub fn watch_signals(
        &mut self,
        signals: &[Signal],
        on_signal: SignalHandler<S, T>,
    ) -> io::Result<()> {
        let mut mask = SigSet::empty();
        for &signal in signals {
            mask.add(signal);
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        if let Some((old, _)) = self.signals.take() {
            self.poll
                .registry()
                .deregister(&mut SourceFd(&old.as_raw_fd()))?;
        }
        self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            SIGNALFD_TOKEN,
            Interest::READABLE,
        )?;
        self.signals = Some((fd, on_signal));
        Ok(())
    }

    /// The context, to register sources and set timers before (or between) runs.
    pub fn context(&mut self) -> &mut Context<S, T> {
        &mut self.ctx
    }

    /// Runs until a handler calls [`Context::stop`].
    pub fn run(&mut self, state: &mut S) -> io::Result<()> {
        self.ctx.stop = false;
        while !self.ctx.stop {
            self.turn(state, None)?;
        }
        Ok(())
    }

    /// One turn of the loop: wait for readiness or the nearest timer, but no longer than
    /// `max_wait` (`None`: no limit of its own), then dispatch fd events and fire due timers.
    /// Returns true if a handler asked to stop (the request is cleared for the next call).
    pub fn run_once(&mut self, state: &mut S, max_wait: Option<Duration>) -> io::Result<bool> {
        self.turn(state, max_wait)?;
        Ok(std::mem::take(&mut self.ctx.stop))
    }

    fn turn(&mut self, state: &mut S, max_wait: Option<Duration>) -> io::Result<()> {
        let timeout = self.prepare_timeout(max_wait)?;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ctx.now = Instant::now();
        for event in self.events.iter() {
            match event.token() {
                TIMERFD_TOKEN => self.deadline_timer.acknowledge()?,
                SIGNALFD_TOKEN => {
                    if let Some((fd, on_signal)) = &self.signals {
                        while let Some(info) = fd.read_signal()? {
                            match Signal::try_from(info.ssi_signo as i32) {
                                Ok(signal) => on_signal(state, &mut self.ctx, signal),
                                Err(_) => log::warn!("unknown signal {}", info.ssi_signo),
                            }
                        }
                    }
                }
                token => match self.ctx.lookup(token) {
                    Some((id, fd, handler)) => {
                        handler(state, &mut self.ctx, Event::new(id, fd, event));
                    }
                    None => log::trace!("event for a stale source dropped: {token:?}"),
                },
            }
        }
        self.fire_timers(state);
        Ok(())
    }

    /// Arms the timerfd for the nearest deadline and returns the poll timeout: zero when a
    /// timer is already due, else `max_wait` (the timerfd wakes the poll for the deadline).
    fn prepare_timeout(&mut self, max_wait: Option<Duration>) -> io::Result<Option<Duration>> {
        let Some(next) = self.ctx.timers.next_deadline() else {
            self.deadline_timer.disarm()?;
            return Ok(max_wait);
        };
        let now = Instant::now();
        if next <= now {
            return Ok(Some(Duration::ZERO));
        }
        self.deadline_timer.arm(next, now)?;
        Ok(max_wait)
    }

    fn fire_timers(&mut self, state: &mut S) {
        self.ctx.now = Instant::now();
        let mark = self.ctx.timers.mark();
        while !self.ctx.stop {
            let Some(id) = self.ctx.timers.pop_due(self.ctx.now, mark) else {
                break;
            };
            (self.on_timer)(state, &mut self.ctx, id);
        }
    }
}
