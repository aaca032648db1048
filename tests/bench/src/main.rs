//! Benchmarks of rtpmidid (release build, `--no-alsa --no-mdns --hub` on loopback), each row
//! beside a baseline program run in the same invocation, alternating with it, and reported
//! as the median of the rounds and the ratio daemon/baseline. Prints numbers; asserts
//! nothing. `--quick` runs every row at tiny sizes and exits non-zero only if a row produced
//! no number. BENCHMARKS.md says what each row means.
//!
//!   cargo run --release --manifest-path tests/bench/Cargo.toml -- [--quick] [--no-rt]
//!       [--only GROUP,...]
mod baseline;
mod peers;
mod stream;
mod sys;
mod wire;

use std::io;
use std::process::Command;
use std::sync::atomic::AtomicU16;
use std::time::Duration;

use peers::{Peer, Target};
use stream::Route;

/// Sizes of one run: full, or `--quick`.
struct Sizes {
    rounds: usize,
    latency_messages: usize,
    trial_ns: u64,
    search_steps: usize,
    cpu_ns: u64,
    idle_ns: u64,
    /// Sessions held at each step of the idle rows; wake-ups are measured at the steps
    /// other than the second (which is for RSS only).
    idle_levels: [usize; 4],
    handshakes: usize,
    fanout: [usize; 3],
    fanout_messages: usize,
}

const FULL: Sizes = Sizes {
    rounds: 3,
    latency_messages: 5000,
    trial_ns: 500_000_000,
    search_steps: 4,
    cpu_ns: 2_000_000_000,
    idle_ns: 5_000_000_000,
    idle_levels: [0, 10, 100, 1000],
    handshakes: 1000,
    fanout: [10, 100, 1000],
    fanout_messages: 300,
};

const QUICK: Sizes = Sizes {
    rounds: 1,
    latency_messages: 200,
    trial_ns: 50_000_000,
    search_steps: 1,
    cpu_ns: 200_000_000,
    idle_ns: 300_000_000,
    idle_levels: [0, 2, 5, 10],
    handshakes: 20,
    fanout: [2, 5, 10],
    fanout_messages: 20,
};

const GROUPS: [&str; 7] = [
    "latency",
    "throughput",
    "cpu",
    "idle",
    "handshakes",
    "fanout",
    "micro",
];

/// One line of the table: the daemon's figure, the baseline's, a remark.
struct Row {
    name: String,
    daemon: Option<f64>,
    baseline: Option<f64>,
    note: String,
}

impl Row {
    fn new(name: impl Into<String>, daemon: Option<f64>, baseline: Option<f64>) -> Row {
        Row {
            name: name.into(),
            daemon,
            baseline,
            note: String::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("forward") => {
            let dests: Vec<u16> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
            exit_on_error(baseline::forward(&dests));
        }
        Some("respond") => exit_on_error(baseline::respond()),
        _ => {}
    }
    let mut quick = false;
    let mut rt = true;
    let mut only = GROUPS.to_vec();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.clone().next()) {
            ("--quick", _) => quick = true,
            ("--no-rt", _) => rt = false,
            ("--only", Some(list)) if list.split(',').all(|g| GROUPS.contains(&g)) => {
                only = list.split(',').collect();
                rest.next();
            }
            _ => {
                eprintln!(
                    "usage: bench [--quick] [--no-rt] [--only GROUP,...]; groups: {GROUPS:?}"
                );
                std::process::exit(2);
            }
        }
    }
    let sizes = if quick { &QUICK } else { &FULL };

    sys::raise_fd_limit();
    sys::precise_timers();
    let allowed = sys::allowed_cpus();
    // With two CPUs: the harness (sender and receivers) on one, the program measured (the
    // daemon or a baseline) on the other.
    let cpu = (allowed.len() >= 2 && sys::pin(allowed[1]).is_ok()).then(|| allowed[0]);
    // The machine is shared with busy compilers: under the normal scheduler a woken thread
    // may wait milliseconds for a CPU. Real-time priority for the harness, the daemon and
    // the baselines alike (children inherit it) measures the programs, not that queue.
    let rt = rt && sys::realtime(10).is_ok();
    print_machine(&allowed, cpu, rt);

    let mut rows = Vec::new();
    let mut micro = None;
    for group in only {
        eprintln!("bench: {group} ...");
        let result = match group {
            "latency" => latency(sizes, cpu),
            "throughput" => throughput(sizes, cpu),
            "cpu" => cpu_cost(sizes, cpu),
            "idle" => idle(sizes, cpu),
            "handshakes" => handshakes(sizes, cpu),
            "fanout" => fanout(sizes, cpu),
            "micro" => {
                micro = Some(micro_benchmarks());
                continue;
            }
            _ => continue,
        };
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench: {group}: {e}");
                rows.push(Row::new(group, None, None).note(format!("error: {e}")));
            }
        }
    }
    let ok = print_table(&rows);
    let micro_ok = match micro {
        Some(Ok(out)) => {
            println!("\nProtocol micro-benchmarks (bench_packets, no baseline):\n\n{out}");
            true
        }
        Some(Err(e)) => {
            println!("\nProtocol micro-benchmarks failed: {e}");
            false
        }
        None => true,
    };
    println!("\nload average at the end: {}", load_average());
    std::process::exit(if ok && micro_ok { 0 } else { 1 });
}

fn exit_on_error(r: io::Result<()>) -> ! {
    if let Err(e) = r {
        eprintln!("bench baseline: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn print_machine(allowed: &[usize], cpu: Option<usize>, rt: bool) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("?");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {} CPUs ({model}), kernel {}, load average {}",
        allowed.len(),
        kernel.trim(),
        load_average()
    );
    match cpu {
        Some(t) => println!(
            "pinned: daemon and baselines on CPU {t}, harness on CPU {}",
            allowed[1]
        ),
        None => println!("pinned: no (fewer than two CPUs)"),
    }
    if rt {
        println!("scheduling: SCHED_FIFO 10 for the harness, the daemon and the baselines");
    } else {
        println!("scheduling: normal");
    }
    println!();
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the rows as a Markdown table; false if a row has no daemon figure.
fn print_table(rows: &[Row]) -> bool {
    println!("| row | rtpmidid | baseline | ratio | |");
    println!("|---|---:|---:|---:|---|");
    let mut ok = true;
    for r in rows {
        ok &= r.daemon.is_some();
        let ratio = match (r.daemon, r.baseline) {
            (Some(d), Some(b)) if b > 0.0 => format!("{:.2}x", d / b),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            num(r.daemon),
            num(r.baseline),
            ratio,
            r.note
        );
    }
    ok
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "none".into(),
        Some(v) if v.abs() >= 100.0 || v == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The nearest-rank percentile `p` (0-100) of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// The two sides of each row, run in turn in every round: baseline first, then the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Daemon,
}

/// Each side's results, in run order.
struct Runs<T> {
    baseline: Vec<T>,
    daemon: Vec<T>,
}

/// Runs `f` for both sides, `rounds` times alternating.
fn alternate<T>(rounds: usize, mut f: impl FnMut(Side) -> io::Result<T>) -> io::Result<Runs<T>> {
    let mut runs = Runs {
        baseline: Vec::new(),
        daemon: Vec::new(),
    };
    for _ in 0..rounds {
        runs.baseline.push(f(Side::Baseline)?);
        runs.daemon.push(f(Side::Daemon)?);
    }
    Ok(runs)
}

/// The median over rounds of `figure`: the daemon's, the baseline's.
fn medians<T>(runs: &Runs<T>, figure: impl Fn(&T) -> f64) -> (Option<f64>, Option<f64>) {
    let m = |v: &Vec<T>| median(v.iter().map(&figure).collect());
    (m(&runs.daemon), m(&runs.baseline))
}

/// A daemon with one sending session and `receivers` receiving ones, and a null forwarder
/// to the same receivers: the set-up of the stream rows.
struct Hub {
    daemon: Target,
    forwarder: Target,
    sender: Peer,
    receivers: Vec<Peer>,
    /// The sender's sequence numbers towards the forwarder and the daemon.
    seqs: [AtomicU16; 2],
}

impl Hub {
    fn new(cpu: Option<usize>, receivers: usize) -> io::Result<Hub> {
        let daemon = Target::daemon(cpu)?;
        let mut peers = peers::open(&daemon, receivers + 1, 8, Duration::from_secs(30))?.peers;
        let sender = peers.remove(0);
        let ports: Vec<u16> = peers
            .iter()
            .map(|p| p.data.local_addr().map(|a| a.port()))
            .collect::<io::Result<_>>()?;
        Ok(Hub {
            forwarder: Target::forwarder(cpu, &ports)?,
            daemon,
            sender,
            receivers: peers,
            seqs: Default::default(),
        })
    }

    fn route(&self, side: Side) -> Route<'_> {
        let (to, feedback, seq) = match side {
            Side::Baseline => (self.forwarder.data, None, &self.seqs[0]),
            Side::Daemon => (self.daemon.data, Some(self.daemon.control), &self.seqs[1]),
        };
        Route {
            sender: &self.sender,
            seq,
            to,
            receivers: &self.receivers,
            feedback,
        }
    }

    fn pid(&self, side: Side) -> u32 {
        match side {
            Side::Baseline => self.forwarder.pid(),
            Side::Daemon => self.daemon.pid(),
        }
    }
}

/// Latency percentiles of stamped streams, one row per percentile, in µs.
fn latency_rows(what: &str, runs: &Runs<stream::Stamped>) -> Vec<Row> {
    let lost: usize = runs.daemon.iter().map(|s| s.lost).sum();
    let lost_base: usize = runs.baseline.iter().map(|s| s.lost).sum();
    [50.0, 99.0, 99.9]
        .iter()
        .map(|&p| {
            let (d, b) = medians(runs, |s| {
                let mut v = s.latencies_ns.clone();
                v.sort_unstable();
                percentile(&v, p) / 1000.0
            });
            let row = Row::new(format!("{what} p{p} (µs)"), d, b);
            if p == 50.0 {
                row.note(format!("lost: {lost} (baseline {lost_base})"))
            } else {
                row
            }
        })
        .collect()
}

/// Hub hop latency: one stamped message a millisecond, sender -> hub -> receiver.
fn latency(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let hub = Hub::new(cpu, 1)?;
    let runs = alternate(sizes.rounds, |side| {
        stream::stamped(&hub.route(side), 1_000_000, sizes.latency_messages)
    })?;
    Ok(latency_rows("hub hop latency at 1 kHz", &runs))
}

/// Zero-loss throughput: the rate doubles from 10k packets/s until events are lost or the
/// sender cannot go faster, then bisects; each trial lasts `trial_ns`. Returns the best
/// lossless rate and the fastest the sender went, in events a second.
fn zero_loss(sizes: &Sizes, route: &Route, per_packet: usize) -> io::Result<(f64, f64)> {
    let (mut good, mut bad) = (0.0f64, f64::INFINITY);
    let (mut best, mut sender_max) = (0.0f64, 0.0f64);
    let mut rate = 10_000.0;
    let mut step = 0;
    while step < sizes.search_steps {
        let f = stream::flood(route, rate, per_packet, sizes.trial_ns)?;
        sender_max = sender_max.max(f.rate);
        if f.received_events >= f.sent_events {
            best = best.max(f.rate);
            good = rate;
            // Short of the asked rate by more than 10% and no loss: the sender is the limit.
            if f.rate < 0.9 * rate * per_packet as f64 {
                break;
            }
        } else {
            bad = rate;
        }
        if bad.is_infinite() {
            rate *= 2.0;
        } else {
            rate = (good + bad) / 2.0;
            step += 1;
        }
    }
    Ok((best, sender_max))
}

fn throughput(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let hub = Hub::new(cpu, 1)?;
    // A deep queue at the receiver: the harness's reads must not be what loses.
    sys::set_recv_buffer(&hub.receivers[0].data, 4 << 20);
    let mut rows = Vec::new();
    for per_packet in [1, 16] {
        let runs = alternate(sizes.rounds, |side| {
            zero_loss(sizes, &hub.route(side), per_packet)
        })?;
        let (d, b) = medians(&runs, |r| r.0);
        let (ds, bs) = medians(&runs, |r| r.1);
        rows.push(
            Row::new(
                format!("zero-loss throughput, {per_packet} note(s)/packet (events/s)"),
                d,
                b,
            )
            .note(format!(
                "the sender's fastest: {} (baseline runs {})",
                num(ds),
                num(bs)
            )),
        );
    }
    Ok(rows)
}

/// CPU per forwarded event: a steady stream well below the limits, the target's CPU time
/// (utime + stime) over it divided by the events that arrived.
fn cpu_cost(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let hub = Hub::new(cpu, 1)?;
    sys::set_recv_buffer(&hub.receivers[0].data, 4 << 20);
    let mut rows = Vec::new();
    for (per_packet, packets_per_s) in [(1, 20_000.0), (16, 5_000.0)] {
        let runs = alternate(sizes.rounds, |side| {
            let before = sys::cpu_seconds(hub.pid(side))?;
            let f = stream::flood(&hub.route(side), packets_per_s, per_packet, sizes.cpu_ns)?;
            let used = sys::cpu_seconds(hub.pid(side))? - before;
            Ok(used * 1e6 / f.received_events.max(1) as f64)
        })?;
        let (d, b) = medians(&runs, |&us| us);
        rows.push(Row::new(
            format!(
                "CPU per forwarded event, {per_packet} note(s)/packet at {}k packets/s (µs)",
                packets_per_s / 1000.0
            ),
            d,
            b,
        ));
    }
    Ok(rows)
}

/// What one target looked like at each level of idle sessions.
struct IdleFigures {
    rss_kb: Vec<f64>,
    wakeups_per_s: Vec<Option<f64>>,
    rss_after_kb: f64,
}

/// Sessions opened step by step up to each level and left idle: RSS at each, context
/// switches over `idle_ns` at the levels that measure them; then all end with BY.
fn idle_figures(sizes: &Sizes, target: &Target) -> io::Result<IdleFigures> {
    let pid = target.pid();
    let mut held = Vec::new();
    let mut fig = IdleFigures {
        rss_kb: Vec::new(),
        wakeups_per_s: Vec::new(),
        rss_after_kb: 0.0,
    };
    for (step, &level) in sizes.idle_levels.iter().enumerate() {
        let more = level - held.len();
        held.extend(peers::open(target, more, 8, Duration::from_secs(30))?.peers);
        // Let the last handshakes' packets and timers settle.
        std::thread::sleep(Duration::from_millis(200));
        fig.rss_kb.push(sys::rss_kb(pid)? as f64);
        fig.wakeups_per_s.push(if step == 1 {
            None
        } else {
            // Live sessions that say nothing, not sessions the target must check on.
            peers::clock_round(target, &held, Duration::from_secs(30))?;
            std::thread::sleep(Duration::from_millis(200));
            let before = sys::context_switches(pid)?;
            std::thread::sleep(Duration::from_nanos(sizes.idle_ns));
            let n = sys::context_switches(pid)? - before;
            Some(n as f64 / (sizes.idle_ns as f64 / 1e9))
        });
    }
    peers::close(target, held);
    std::thread::sleep(Duration::from_millis(500));
    fig.rss_after_kb = sys::rss_kb(pid)? as f64;
    Ok(fig)
}

/// Idle wake-ups and memory, beside the null responder holding the same sessions.
fn idle(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let base = idle_figures(sizes, &Target::responder(cpu)?)?;
    let daemon = idle_figures(sizes, &Target::daemon(cpu)?)?;
    let levels = sizes.idle_levels;
    let mut rows = Vec::new();
    for (i, &level) in levels.iter().enumerate() {
        if let (Some(d), Some(b)) = (daemon.wakeups_per_s[i], base.wakeups_per_s[i]) {
            rows.push(Row::new(
                format!("wake-ups/s idle, {level} sessions"),
                Some(d),
                Some(b),
            ));
        }
    }
    rows.push(Row::new(
        "RSS idle, no session (kB)",
        Some(daemon.rss_kb[0]),
        Some(base.rss_kb[0]),
    ));
    for (i, &level) in levels.iter().enumerate().skip(1) {
        let per = |f: &IdleFigures| (f.rss_kb[i] - f.rss_kb[0]) / level as f64;
        rows.push(Row::new(
            format!("RSS per idle session at {level} sessions (kB)"),
            Some(per(&daemon)),
            Some(per(&base)),
        ));
    }
    rows.push(Row::new(
        format!("RSS after the {} sessions ended (kB)", levels[3]),
        Some(daemon.rss_after_kb),
        Some(base.rss_after_kb),
    ));
    Ok(rows)
}

/// Handshakes a second: IN/OK on both ports and a CK round, 1, 8 or all at a time.
fn handshakes(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let daemon = Target::daemon(cpu)?;
    let responder = Target::responder(cpu)?;
    let n = sizes.handshakes;
    let mut rows = Vec::new();
    for (what, in_flight) in [("1 at a time", 1), ("8 in flight", 8), ("all at once", n)] {
        let runs = alternate(sizes.rounds, |side| {
            let target = if side == Side::Daemon {
                &daemon
            } else {
                &responder
            };
            let opened = peers::open(target, n, in_flight, Duration::from_secs(60))?;
            let figures = (n as f64 / opened.seconds, opened.nos, opened.refused_first);
            peers::close(target, opened.peers);
            // The BYs are handled before the next run starts.
            std::thread::sleep(Duration::from_millis(200));
            Ok(figures)
        })?;
        let (d, b) = medians(&runs, |r| r.0);
        let last = runs.daemon.last().expect("a round");
        rows.push(
            Row::new(format!("handshakes/s, {n} sessions, {what}"), d, b).note(format!(
                "NO answers: {} ({} invitations refused first), last round",
                last.1, last.2
            )),
        );
    }
    Ok(rows)
}

/// Fan-out: latency from the send of a stamped message to its arrival at the last of N
/// receivers; the baseline is the null forwarder with N destinations (a sendto per peer).
fn fanout(sizes: &Sizes, cpu: Option<usize>) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n in sizes.fanout {
        let hub = Hub::new(cpu, n)?;
        // Room between messages for the slowest side to finish each one.
        let period_ns = (n as u64 * 20_000).max(5_000_000);
        let runs = alternate(sizes.rounds, |side| {
            stream::stamped(&hub.route(side), period_ns, sizes.fanout_messages)
        })?;
        rows.extend(latency_rows(
            &format!("fan-out to the last of {n} peers"),
            &runs,
        ));
    }
    Ok(rows)
}

/// The protocol crate's micro-benchmarks, run by cargo from the top folder; their output.
fn micro_benchmarks() -> Result<String, String> {
    let top = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut cmd = Command::new("cargo");
    cmd.args(["run", "--release", "-q", "-p", "rtpmidid-protocol"])
        .args(["--example", "bench_packets"])
        .current_dir(top);
    // Seconds of computing: not at real-time priority on a shared machine.
    sys::normal_priority(&mut cmd);
    let out = cmd.output().map_err(|e| format!("cargo: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && text.chars().any(|c| c.is_ascii_digit()) {
        Ok(text)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
