//! How late timers fire: 1000 timers, one after the other, each 0.5-2 ms after the previous
//! one fired. Prints the lateness (time from the deadline to the handler) and how many turns
//! of the loop it took (one per timer means no busy waiting). Prints numbers, asserts nothing.
//!
//! cargo run -p rtpmidid-reactor --example timer_precision
use std::time::{Duration, Instant};

use reactor::{Context, Reactor};

const TIMERS: usize = 1000;

struct Bench {
    deadline: Instant,
    lateness: Vec<Duration>,
}

fn on_timer(bench: &mut Bench, ctx: &mut Context<Bench, ()>, (): ()) {
    let now = Instant::now();
    bench.lateness.push(now - bench.deadline);
    if bench.lateness.len() < TIMERS {
        let gap = 500 + (bench.lateness.len() as u64 * 173) % 1500;
        bench.deadline = now + Duration::from_micros(gap);
        ctx.set_timer((), bench.deadline);
    }
}

fn main() -> std::io::Result<()> {
    let mut reactor = Reactor::new(on_timer)?;
    let mut bench = Bench {
        deadline: Instant::now() + Duration::from_millis(1),
        lateness: Vec::with_capacity(TIMERS),
    };
    reactor.context().set_timer((), bench.deadline);
    let mut turns = 0u32;
    while bench.lateness.len() < TIMERS {
        reactor.run_once(&mut bench, None)?;
        turns += 1;
    }
    let mut late = bench.lateness;
    late.sort();
    let pct = |p: usize| late[(late.len() - 1) * p / 100].as_secs_f64() * 1e6;
    println!(
        "{TIMERS} timers: lateness p50 {:.1} us, p99 {:.1} us, max {:.1} us; {turns} loop turns",
        pct(50),
        pct(99),
        pct(100),
    );
    Ok(())
}
