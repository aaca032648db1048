//! Signal delivery through the signalfd. `harness = false`: the test harness runs tests on
//! threads of its own, and a process-directed signal may go to any thread that does not block
//! it; here the only thread blocks the watched signals before anything else happens.
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, raise};
use nix::unistd::getpid;
use reactor::{Context, Reactor, Signal, DAEMON_SIGNALS};

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Timer {
    /// The end of a graceful shutdown.
    Shutdown,
}

/// What the daemon does: count SIGINT/SIGTERM; the first starts a graceful shutdown that ends
/// on a short timer, a second one stops at once. SIGHUP is a reload request.
#[derive(Default)]
struct App {
    received: Vec<Signal>,
    terminations: u32,
    reloads: u32,
    stopped_by: Option<&'static str>,
}

fn on_signal(app: &mut App, ctx: &mut Context<App, Timer>, signal: Signal) {
    app.received.push(signal);
    match signal {
        Signal::SIGHUP => app.reloads += 1,
        _ => {
            app.terminations += 1;
            if app.terminations == 1 {
                let at = ctx.now() + Duration::from_millis(2);
                ctx.set_timer(Timer::Shutdown, at);
            } else {
                app.stopped_by = Some("second signal");
                ctx.stop();
            }
        }
    }
}

fn on_timer(app: &mut App, ctx: &mut Context<App, Timer>, Timer::Shutdown: Timer) {
    app.stopped_by = Some("shutdown timer");
    ctx.stop();
}

/// Turns the loop until `done` holds, failing after five seconds.
fn run_until(reactor: &mut Reactor<App, Timer>, app: &mut App, done: impl Fn(&App) -> bool) {
    let limit = Instant::now() + Duration::from_secs(5);
    while !done(app) {
        let left = limit
            .checked_duration_since(Instant::now())
            .expect("signal not delivered before the deadline");
        reactor.run_once(app, Some(left)).unwrap();
    }
}

fn main() {
    let mut reactor = Reactor::new(on_timer).unwrap();
    reactor.watch_signals(&DAEMON_SIGNALS, on_signal).unwrap();
    let mut app = App::default();

    // Thread-directed.
    raise(Signal::SIGHUP).unwrap();
    run_until(&mut reactor, &mut app, |a| a.reloads == 1);
    assert_eq!(app.received, [Signal::SIGHUP]);
    println!("SIGHUP by raise: delivered");

    // Process-directed, as `kill` from a shell sends it: graceful shutdown on a timer.
    let t0 = Instant::now();
    kill(getpid(), Signal::SIGTERM).unwrap();
    reactor.run(&mut app).unwrap();
    assert_eq!(app.stopped_by, Some("shutdown timer"));
    assert!(t0.elapsed() >= Duration::from_millis(2));
    println!("SIGTERM by kill: graceful shutdown after its timer");

    // A second signal during the graceful shutdown stops at once.
    let mut app = App::default();
    kill(getpid(), Signal::SIGINT).unwrap();
    run_until(&mut reactor, &mut app, |a| a.terminations == 1);
    assert!(reactor.context().timer(&Timer::Shutdown).is_some());
    kill(getpid(), Signal::SIGINT).unwrap();
    reactor.run(&mut app).unwrap();
    assert_eq!(app.stopped_by, Some("second signal"));
    assert_eq!(app.received, [Signal::SIGINT, Signal::SIGINT]);
    println!("second SIGINT: stopped at once");
}
