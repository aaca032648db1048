//! rtpmidid: command line and logging; the daemon itself is in `daemon`.
mod answers;
mod bridge;
mod cli;
mod config;
mod control;
mod ctl;
mod daemon;
mod device;
mod engine;
mod json;
mod ledger;
mod mdns;
mod names;
mod net;
mod options;
mod playout;
mod rawmidi;
mod reload;
mod resolver;
mod router;
mod seq;
mod sessions;

use std::process::ExitCode;

use log::{error, LevelFilter};

use crate::cli::Command;
use crate::config::CommandLine;
use crate::daemon::Daemon;

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
        Ok(Command::Ctl(ctl)) => ctl::client::run(&ctl),
        Ok(Command::ConvertConfig(path)) => config::upstream::run(&path),
        Ok(Command::Run(command_line)) => {
            // A broken configuration file: say where, and do not start.
            let (path, file) = match config::load(&command_line) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("rtpmidid: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let settings = config::resolve(&command_line, &file, config::hostname);
            init_logging(settings.log_level);
            if let Some(warning) = path
                .as_deref()
                .and_then(|p| config::exposed_secrets(p, &file))
            {
                log::warn!("{warning}");
            }
            match run(*command_line, path, settings) {
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

/// Logging at `level`, which a reload may change (`log::set_max_level`), unless RUST_LOG rules.
fn init_logging(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) => {
            builder.filter_level(level).parse_filters(&spec);
            builder.init();
        }
        Err(_) => {
            builder.filter_level(LevelFilter::Trace);
            builder.init();
            log::set_max_level(level);
        }
    }
}

fn run(
    command_line: CommandLine,
    path: Option<std::path::PathBuf>,
    config: config::Settings,
) -> Result<(), String> {
    let mut reactor = reactor::Reactor::new(daemon::on_timer)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    reactor
        .watch_signals(&reactor::DAEMON_SIGNALS, daemon::on_signal)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    let sequencer: Option<Box<dyn seq::Sequencer>> = if !config.alsa {
        None
    } else {
        let mut seq = seq::alsa::AlsaSequencer::open(&config.alsa_name).map_err(|e| {
            format!("{e}\n(run with --no-alsa to use rtpmidid without the ALSA sequencer)")
        })?;
        if let Some(rate) = config.sysex_rate {
            seq.set_sysex_rate(rate);
        }
        log::info!(
            "ALSA sequencer client {} ({:?})",
            seq::Sequencer::client(&seq),
            config.alsa_name
        );
        Some(Box::new(seq))
    };
    let mut daemon = Daemon::new(config, sequencer, seed())?;
    daemon.start(reactor.context(), command_line, path)?;
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
