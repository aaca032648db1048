//! rtpmidid: command line and logging; the daemon itself is in `daemon`.
mod bridge;
mod cli;
mod daemon;
mod mdns;
mod net;
mod playout;
mod seq;

use std::process::ExitCode;

use log::{error, LevelFilter};

use crate::cli::{Command, Options};
use crate::daemon::{Daemon, Settings};

/// Exit status for a bad command line, as getopts users expect.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("rtpmidid {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Run(options)) => {
            init_logging(&options);
            match run(*options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(message) => {
            eprintln!("rtpmidid: {message}\nTry 'rtpmidid --help'.");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn init_logging(options: &Options) {
    let level = match (options.quiet, options.verbosity) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Warn,
        (false, 1) => LevelFilter::Info,
        (false, 2) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.init();
}

fn run(options: Options) -> Result<(), String> {
    let name = match options.name {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "rtpmidid".into()),
    };
    let settings = Settings {
        name,
        port: options.port,
        bind: options.bind,
        connect: options.connect,
        hub: options.hub,
        keep_connected: options.keep_connected,
        mdns: (!options.no_mdns).then_some(mdns::Config {
            interfaces: options.mdns_interfaces,
        }),
        playout_delay: options
            .playout_delay
            .map(|ms| std::time::Duration::from_millis(u64::from(ms))),
        export_auto: options.export_auto,
    };
    let mut reactor = reactor::Reactor::new(daemon::on_timer)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    reactor
        .watch_signals(&reactor::DAEMON_SIGNALS, daemon::on_signal)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    let sequencer: Option<Box<dyn seq::Sequencer>> = if options.no_alsa {
        None
    } else {
        let mut seq = seq::alsa::AlsaSequencer::open(&options.alsa_name).map_err(|e| {
            format!("{e}\n(run with --no-alsa to use rtpmidid without the ALSA sequencer)")
        })?;
        if let Some(rate) = options.sysex_rate {
            seq.set_sysex_rate(rate);
        }
        log::info!(
            "ALSA sequencer client {} ({:?})",
            seq::Sequencer::client(&seq),
            options.alsa_name
        );
        Some(Box::new(seq))
    };
    let mut daemon = Daemon::new(settings, sequencer, seed())
        .map_err(|e| format!("cannot start on UDP port {}: {e}", options.port))?;
    daemon
        .start(reactor.context())
        .map_err(|e| format!("cannot register sockets: {e}"))?;
    reactor
        .run(&mut daemon)
        .map_err(|e| format!("event loop failed: {e}"))
}

/// Seed for SSRCs, tokens and sequence numbers: the kernel's randomness, or the clock.
fn seed() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(e) => {
            log::warn!("cannot read /dev/urandom ({e}); seeding from the clock");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ u64::from(std::process::id())
        }
    }
}
