//! Benchmark of two ALSA-to-ALSA paths on a real kernel sequencer (tests/vm/alsa_bench.sh runs
//! it beside aseqnet and two daemons).
//!
//! A path is a port to write to and a port to read from: what goes into the one comes out of
//! the other (through a network bridge). For each path one port of ours is subscribed to both;
//! the first path is the baseline, the second the one measured against it. Each round measures
//! both paths, baseline first, in this order:
//! - latency: `--latency-count` events paced at `--latency-rate`, the time from just before
//!   each event is handed to the sequencer to when it is read back (CLOCK_MONOTONIC, one
//!   process), p50 and p99;
//! - CPU per event: `--cpu-secs` at `--cpu-rate`, the user + system time the path's bridge
//!   processes (PIDs given with the path) took, from /proc/PID/stat, over the events that
//!   arrived (with `--cpu-only`, the only measurement);
//! - zero-loss rate: trials of `--trial-secs` paced in steps of 1 ms, from `--start-rate`
//!   events/s doubling until a trial fails, then `--bisect` bisection steps. A trial passes
//!   when every event arrived once, no overrun was reported, and both the sending and the
//!   delivery (first send to last arrival) kept within 10% of the rate;
//! - on-time rate: the same search, where a trial also needs a p50 latency of 10 ms at most.
//!
//! Events are note-on/note-off pairs whose channel, note and velocity number them, so each
//! arrival is matched with its send. Prints one line per trial, then a table of medians over
//! the rounds and the ratios measured/baseline.
//!
//! Usage: alsa_bench [OPTIONS] LABEL=TO,FROM,PID... LABEL=TO,FROM,PID...
//!   TO and FROM are `CLIENT:PORT`, numbers or names (a port given by name is waited for, up
//!   to 20 s, after FROM is subscribed: a daemon may create it only then); the PIDs are the
//!   path's bridge processes.

#[path = "../../src/seq/mod.rs"]
#[allow(dead_code)]
mod seq;

use std::collections::HashMap;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use protocol::midi::{MidiMessage, ShortMessage};

use seq::alsa::AlsaSequencer;
use seq::{PortCaps, PortId, SeqAddr, SeqInput, Sequencer};

/// Distinct events before the numbering wraps: pairs of (16 channels, 128 notes, velocities
/// 1-127), a note-on and a note-off each.
const CYCLE: u32 = 2 * 16 * 128 * 127;
/// A trial ends when nothing arrived for this long after its last send.
const QUIET: Duration = Duration::from_millis(300);
/// How long a port named on the command line may take to appear.
const PORT_WAIT: Duration = Duration::from_secs(20);
/// A trial's pass mark: sending and delivery at 90% of the rate or better.
const KEPT_UP: f64 = 0.9;
/// The on-time search's further mark: the median event arrives within 10 ms (musicians
/// notice about that much).
const ON_TIME_P50_US: f64 = 10_000.0;

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alsa_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    rounds: usize,
    latency_rate: f64,
    latency_count: usize,
    start_rate: f64,
    trial_secs: f64,
    bisect: usize,
    cpu_rate: f64,
    cpu_secs: f64,
    cpu_only: bool,
    paths: Vec<PathArg>,
}

/// A path as the command line gives it.
struct PathArg {
    label: String,
    to: String,
    from: String,
    pids: Vec<u32>,
}

fn parse_args() -> io::Result<Config> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("", "rounds", "rounds of both paths (3)", "N");
    opts.optopt("", "latency-rate", "events/s of the latency run (200)", "R");
    opts.optopt("", "latency-count", "events of the latency run (1000)", "N");
    opts.optopt("", "start-rate", "first rate tried, events/s (1000)", "R");
    opts.optopt("", "trial-secs", "length of a rate trial (1)", "S");
    opts.optopt("", "bisect", "bisection steps after the doubling (4)", "N");
    opts.optopt("", "cpu-rate", "events/s of the CPU run (4000)", "R");
    opts.optopt("", "cpu-secs", "length of the CPU run (3)", "S");
    opts.optflag("", "cpu-only", "only the CPU runs (to profile them)");
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let m = opts.parse(&args).map_err(|e| bad(e.to_string()))?;
    fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> io::Result<T> {
        match m.opt_str(name) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("bad --{name} {s}"))
            }),
        }
    }
    let paths = m
        .free
        .iter()
        .map(|p| {
            let bad_path = || bad(format!("bad path {p}"));
            let (label, ends) = p.split_once('=').ok_or_else(bad_path)?;
            let mut ends = ends.split(',');
            let (Some(to), Some(from)) = (ends.next(), ends.next()) else {
                return Err(bad_path());
            };
            let pids = ends
                .map(|pid| pid.parse().map_err(|_| bad_path()))
                .collect::<io::Result<Vec<u32>>>()?;
            if pids.is_empty() {
                return Err(bad_path());
            }
            Ok(PathArg {
                label: label.to_owned(),
                to: to.to_owned(),
                from: from.to_owned(),
                pids,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    if paths.len() != 2 {
        return Err(bad("give two paths: the baseline, then the measured".into()));
    }
    let c = Config {
        rounds: num(&m, "rounds", 3)?,
        latency_rate: num(&m, "latency-rate", 200.0)?,
        latency_count: num(&m, "latency-count", 1000)?,
        start_rate: num(&m, "start-rate", 1000.0)?,
        trial_secs: num(&m, "trial-secs", 1.0)?,
        bisect: num(&m, "bisect", 4)?,
        cpu_rate: num(&m, "cpu-rate", 4000.0)?,
        cpu_secs: num(&m, "cpu-secs", 3.0)?,
        cpu_only: m.opt_present("cpu-only"),
        paths,
    };
    if c.latency_count == 0 || c.latency_count > CYCLE as usize / 2 || c.rounds == 0 {
        return Err(bad("counts out of range".into()));
    }
    let positive = [
        c.latency_rate,
        c.start_rate,
        c.trial_secs,
        c.cpu_rate,
        c.cpu_secs,
    ];
    if !positive.iter().all(|&x| x > 0.0) {
        return Err(bad("rates and lengths must be above 0".into()));
    }
    Ok(c)
}

/// Event number `n` (mod CYCLE): a note-on for even numbers, its note-off after it.
fn event(n: u32) -> MidiMessage {
    let pair = (n % CYCLE) / 2;
    let kind = if n % 2 == 0 { 0x90 } else { 0x80 };
    let (channel, note, velocity) = (pair % 16, pair / 16 % 128, 1 + pair / 2048);
    ShortMessage::channel(kind, channel as u8, note as u8, velocity as u8).into()
}

/// The number (mod CYCLE) of an event `event` made.
fn number(message: &MidiMessage) -> Option<u32> {
    let MidiMessage::Short(m) = message else {
        return None;
    };
    let odd = match m.status() & 0xF0 {
        0x90 => 0,
        0x80 => 1,
        _ => return None,
    };
    let velocity = u32::from(m.data2()).checked_sub(1)?;
    let pair = (velocity * 128 + u32::from(m.data1())) * 16 + u32::from(m.channel_number()?);
    Some(pair * 2 + odd)
}

struct Path {
    label: String,
    port: PortId,
    pids: Vec<u32>,
}

/// What one paced run of events did.
struct Outcome {
    rate: f64,
    sent: usize,
    received: usize,
    duplicates: usize,
    /// Arrivals not of this run (late ones of an earlier run).
    strays: usize,
    overruns: usize,
    /// Events/s actually sent and delivered (first send to last send, to last arrival).
    send_rate: f64,
    delivered_rate: f64,
    /// Send-to-arrival times in µs, sorted.
    latencies: Vec<f64>,
}

impl Outcome {
    fn lost(&self) -> usize {
        self.sent - self.received
    }
    /// Whether the trial passed, and with `on_time`, its p50 latency was within the bound.
    fn passed(&self, on_time: bool) -> bool {
        (!on_time || self.percentile(0.5) <= ON_TIME_P50_US)
            && self.lost() == 0
            && self.overruns == 0
            && self.send_rate >= KEPT_UP * self.rate
            && self.delivered_rate >= KEPT_UP * self.rate
    }
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Bench {
    seq: AlsaSequencer,
    poll: Poll,
    events: Events,
    /// The number of the next run's first event.
    next: u32,
    /// Other clients' ports seen so far, by client and port name.
    ports: HashMap<(String, String), SeqAddr>,
}

impl Bench {
    fn open() -> io::Result<Bench> {
        let seq = AlsaSequencer::open("alsa_bench")?;
        let poll = Poll::new()?;
        for (i, fd) in seq.fds()?.iter().enumerate() {
            poll.registry()
                .register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
        }
        Ok(Bench {
            seq,
            poll,
            events: Events::with_capacity(8),
            next: 0,
            ports: HashMap::new(),
        })
    }

    /// A port of ours subscribed from FROM and to TO: FROM first, since a daemon may create
    /// TO only once its port FROM has a reader.
    fn connect(&mut self, arg: &PathArg) -> io::Result<Path> {
        let PathArg {
            label, to, from, ..
        } = arg;
        let port = self.seq.create_port(label, PortCaps::DUPLEX)?;
        let ours = SeqAddr {
            client: self.seq.client(),
            port: port.0,
        };
        let from = self.resolve(from)?;
        self.seq.connect(from, ours)?;
        let to = self.resolve(to)?;
        self.seq.connect(ours, to)?;
        println!("path {label}: writes to {to}, reads from {from}");
        Ok(Path {
            label: label.to_owned(),
            port,
            pids: arg.pids.clone(),
        })
    }

    /// `CLIENT:PORT` as numbers, or as names waited for.
    fn resolve(&mut self, name: &str) -> io::Result<SeqAddr> {
        if let Some(addr) = SeqAddr::parse(name) {
            return Ok(addr);
        }
        let (client, port) = name.rsplit_once(':').ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad port {name}"))
        })?;
        self.seq.watch_ports()?;
        let key = (client.to_owned(), port.to_owned());
        let deadline = Instant::now() + PORT_WAIT;
        loop {
            while let Some(input) = self.seq.recv()? {
                match input {
                    SeqInput::PortStarted(p) => {
                        let key = (p.client_name, p.port_name.trim_end().to_owned());
                        self.ports.insert(key, p.addr);
                    }
                    SeqInput::PortExited(addr) => self.ports.retain(|_, a| *a != addr),
                    _ => {}
                }
            }
            if let Some(&addr) = self.ports.get(&key) {
                return Ok(addr);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no port {name} after {PORT_WAIT:?}"),
                ));
            }
            self.poll.poll(&mut self.events, Some(left))?;
        }
    }

    /// Sends `count` events through `path` paced at `rate`, and collects what comes back.
    fn run(&mut self, path: &Path, rate: f64, count: usize) -> io::Result<Outcome> {
        let base = self.next;
        // Each run starts on a note-on.
        self.next = (base + count as u32).next_multiple_of(2) % CYCLE;
        let mut sent_at: Vec<Instant> = Vec::with_capacity(count);
        let mut arrived: Vec<Option<Instant>> = vec![None; count];
        let (mut received, mut duplicates, mut strays, mut overruns) = (0, 0, 0, 0);
        let start = Instant::now();
        let hard_end = start + Duration::from_secs_f64(count as f64 / rate) + QUIET * 10;
        let mut last_activity = start;
        loop {
            let now = Instant::now();
            let due = ((now - start).as_secs_f64() * rate) as usize + 1;
            if self.seq.backlog() > 0 {
                self.seq.flush()?;
            }
            // A reader whose kernel FIFO is full refuses direct events (EAGAIN): the sender
            // then waits, as a blocking one would, and falls short of the rate.
            while sent_at.len() < due.min(count) && self.seq.backlog() == 0 {
                let n = base + sent_at.len() as u32;
                sent_at.push(Instant::now());
                self.seq.send(path.port, None, &event(n))?;
            }
            while let Some(input) = self.seq.recv()? {
                let t = Instant::now();
                match input {
                    SeqInput::Midi { port, message, .. } if port == path.port => {
                        last_activity = t;
                        let i = number(&message).map(|n| (n + CYCLE - base % CYCLE) % CYCLE);
                        match i.map(|i| i as usize).filter(|&i| i < sent_at.len()) {
                            Some(i) if arrived[i].is_some() => duplicates += 1,
                            Some(i) => {
                                arrived[i] = Some(t);
                                received += 1;
                            }
                            None => strays += 1,
                        }
                    }
                    SeqInput::Overrun => overruns += 1,
                    _ => {}
                }
            }
            let now = Instant::now();
            let all_sent = sent_at.len() == count;
            if all_sent
                && (received == count || now - last_activity.max(sent_at[count - 1]) > QUIET)
                || now > hard_end
            {
                break;
            }
            let wait = if self.seq.backlog() > 0 {
                Duration::from_millis(1)
            } else if all_sent {
                Duration::from_millis(10)
            } else {
                (start + Duration::from_secs_f64(sent_at.len() as f64 / rate))
                    .saturating_duration_since(now)
            };
            self.poll.poll(&mut self.events, Some(wait))?;
        }
        let first = sent_at[0];
        let last_arrival = arrived.iter().flatten().max().copied().unwrap_or(first);
        let span_rate = |n: usize, end: Instant| {
            let secs = (end - first).as_secs_f64();
            if n <= 1 || secs == 0.0 {
                rate
            } else {
                (n - 1) as f64 / secs
            }
        };
        let mut latencies: Vec<f64> = sent_at
            .iter()
            .zip(&arrived)
            .filter_map(|(s, a)| a.map(|a| (a - *s).as_secs_f64() * 1e6))
            .collect();
        latencies.sort_by(f64::total_cmp);
        Ok(Outcome {
            rate,
            sent: sent_at.len(),
            received,
            duplicates,
            strays,
            overruns,
            send_rate: span_rate(sent_at.len(), *sent_at.last().unwrap_or(&first)),
            delivered_rate: span_rate(received, last_arrival),
            latencies,
        })
    }

    fn trial(&mut self, path: &Path, rate: f64, secs: f64, on_time: bool) -> io::Result<Outcome> {
        let count = ((rate * secs) as usize).clamp(2, CYCLE as usize / 2);
        let o = self.run(path, rate, count)?;
        println!(
            "trial {} {} rate {:.0} sent {} received {} lost {} duplicates {} strays {} \
             overruns {} send_rate {:.0} delivered_rate {:.0} p50_us {:.0} p99_us {:.0} {}",
            if on_time { "on-time" } else { "zero-loss" },
            path.label,
            rate,
            o.sent,
            o.received,
            o.lost(),
            o.duplicates,
            o.strays,
            o.overruns,
            o.send_rate,
            o.delivered_rate,
            o.percentile(0.5),
            o.percentile(0.99),
            if o.passed(on_time) { "pass" } else { "fail" }
        );
        Ok(o)
    }

    /// The highest rate that passed, doubling from `start`, then bisecting `steps` times, and
    /// the p50 latency at that rate.
    fn best_rate(&mut self, path: &Path, c: &Config, on_time: bool) -> io::Result<(f64, f64)> {
        let (mut pass, mut fail) = (0.0, f64::INFINITY);
        let mut p50 = f64::NAN;
        let mut rate = c.start_rate;
        // Doubling up from the start rate, or halving down when it fails.
        while fail.is_infinite() || pass == 0.0 {
            let o = self.trial(path, rate, c.trial_secs, on_time)?;
            if o.passed(on_time) {
                pass = rate;
                p50 = o.percentile(0.5);
                if fail.is_infinite() {
                    rate *= 2.0;
                }
            } else {
                fail = rate;
                if pass == 0.0 {
                    rate /= 2.0;
                    if rate < 10.0 {
                        return Ok((0.0, p50));
                    }
                }
            }
            if rate > 1e6 {
                return Ok((pass, p50));
            }
        }
        for _ in 0..c.bisect {
            let mid = ((pass + fail) / 2.0).round();
            let o = self.trial(path, mid, c.trial_secs, on_time)?;
            if o.passed(on_time) {
                pass = mid;
                p50 = o.percentile(0.5);
            } else {
                fail = mid;
            }
        }
        Ok((pass, p50))
    }
}

/// User + system time of processes `pids` so far, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> io::Result<u64> {
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The fields after the command name, which may hold spaces, in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat")))?;
        }
    }
    Ok(ticks)
}

/// One side's figures per round.
#[derive(Default)]
struct Figures {
    rate: Vec<f64>,
    /// p50 latency of the trial at the zero-loss rate.
    rate_p50: Vec<f64>,
    /// The zero-loss rate with a p50 latency of 10 ms at most.
    on_time: Vec<f64>,
    cpu: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    lost: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn run(c: Config) -> io::Result<()> {
    let mut bench = Bench::open()?;
    let paths = c
        .paths
        .iter()
        .map(|p| bench.connect(p))
        .collect::<io::Result<Vec<_>>>()?;
    let tick_us = 1e6
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
    // Under emulation a code path runs slowly the first time (it is translated then).
    for p in &paths {
        let o = bench.run(p, 1000.0, 500)?;
        println!("warm-up {}: {} of {} arrived", p.label, o.received, o.sent);
        if o.received == 0 {
            return Err(io::Error::other(format!(
                "nothing came through {}",
                p.label
            )));
        }
    }
    let mut figures: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    for round in 1..=c.rounds {
        println!("round {round}");
        for (p, f) in paths.iter().zip(&mut figures).filter(|_| !c.cpu_only) {
            let o = bench.run(p, c.latency_rate, c.latency_count)?;
            println!(
                "latency {} rate {:.0} sent {} received {} p50_us {:.0} p99_us {:.0}",
                p.label,
                c.latency_rate,
                o.sent,
                o.received,
                o.percentile(0.5),
                o.percentile(0.99)
            );
            f.p50.push(o.percentile(0.5));
            f.p99.push(o.percentile(0.99));
            f.lost += o.lost();
        }
        for (p, f) in paths.iter().zip(&mut figures) {
            let before = cpu_ticks(&p.pids)?;
            let count = (c.cpu_rate * c.cpu_secs) as usize;
            let o = bench.run(p, c.cpu_rate, count.clamp(2, CYCLE as usize / 2))?;
            let ticks = cpu_ticks(&p.pids)? - before;
            let per_event = ticks as f64 * tick_us / o.received.max(1) as f64;
            println!(
                "cpu {} rate {:.0} sent {} received {} ticks {ticks} per_event_us {per_event:.1}",
                p.label, c.cpu_rate, o.sent, o.received
            );
            f.cpu.push(per_event);
            f.lost += o.lost();
        }
        for (p, f) in paths.iter().zip(&mut figures).filter(|_| !c.cpu_only) {
            let (rate, p50) = bench.best_rate(p, &c, false)?;
            println!("zero-loss {} {rate:.0} events/s p50_us {p50:.0}", p.label);
            f.rate.push(rate);
            f.rate_p50.push(p50);
        }
        for (p, f) in paths.iter().zip(&mut figures).filter(|_| !c.cpu_only) {
            let (rate, _) = bench.best_rate(p, &c, true)?;
            println!("on-time {} {rate:.0} events/s", p.label);
            f.on_time.push(rate);
        }
    }
    let (base, subject) = (&figures[0], &figures[1]);
    let (bl, sl) = (&paths[0].label, &paths[1].label);
    println!();
    println!("| row | {sl} | {bl} | ratio |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, s: &[f64], b: &[f64]| {
        if s.is_empty() || b.is_empty() {
            return;
        }
        let (s, b) = (median(s), median(b));
        println!("| {what} | {s:.0} | {b:.0} | {:.2}x |", s / b);
    };
    let at = format!("at {:.0} events/s", c.latency_rate);
    row(&format!("latency {at} p50 (µs)"), &subject.p50, &base.p50);
    row(&format!("latency {at} p99 (µs)"), &subject.p99, &base.p99);
    let at = format!("at {:.0} events/s", c.cpu_rate);
    row(
        &format!("CPU per event of the bridge processes {at} (µs)"),
        &subject.cpu,
        &base.cpu,
    );
    row("zero-loss rate (events/s)", &subject.rate, &base.rate);
    row(
        "latency p50 at the zero-loss rate (µs)",
        &subject.rate_p50,
        &base.rate_p50,
    );
    row(
        "on-time rate: zero loss and p50 <= 10 ms (events/s)",
        &subject.on_time,
        &base.on_time,
    );
    println!(
        "| events lost in the latency and CPU runs | {} | {} | |",
        subject.lost, base.lost
    );
    println!("medians of {} round(s); per round:", c.rounds);
    for (label, f) in [(sl, subject), (bl, base)] {
        println!(
            "  {label}: zero-loss {:?}, on time {:?}, CPU per event {:?}",
            f.rate,
            f.on_time,
            f.cpu.iter().map(|c| c.round()).collect::<Vec<_>>()
        );
    }
    Ok(())
}
