//! Probe of the sequencer seam on a real kernel sequencer (tests/vm/seq_probe.sh runs it).
//!
//! Opens the sequencer as client `seq_probe`, creates the port `probe`, prints
//! `ready CLIENT:PORT`, then one line per input: `midi SOURCE len N HEX...`,
//! `subscribed|unsubscribed PORT PEER to-peer|from-peer client 'NAME' port 'NAME'`, `overrun`.
//! With `--echo` it sends every MIDI input back out of the port it came in on; with
//! `--sysex N` it sends a SysEx of N bytes (F0, 01 02 .. 7F 00 01 .., F7) to each new reader;
//! with `--time` each `midi` line ends with `at SECONDS` (since the probe started, when it was
//! read); with `--watch` it prints `port started ADDR 'CLIENT' 'PORT' KIND [readable]
//! [writable]` and `port exited ADDR` for other clients' ports.
//!
//! Usage: seq_probe [--echo] [--sysex N] [--time] [--watch]

#[path = "../../src/seq/mod.rs"]
#[allow(dead_code)]
mod seq;

use std::io::{self, Write};
use std::process::ExitCode;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use protocol::midi::MidiMessage;

use seq::alsa::AlsaSequencer;
use seq::{Direction, PortCaps, SeqInput, Sequencer, Subscription};

#[cfg_attr(test, allow(dead_code))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let echo = args.iter().any(|a| a == "--echo");
    let sysex = match args.iter().position(|a| a == "--sysex") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n >= 2 => Some(n),
            _ => {
                eprintln!("seq_probe: --sysex needs a length of 2 or more");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let time = args.iter().any(|a| a == "--time");
    let watch = args.iter().any(|a| a == "--watch");
    match run(echo, sysex, time, watch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seq_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg_attr(test, allow(dead_code))]
fn run(echo: bool, sysex_len: Option<usize>, time: bool, watch: bool) -> io::Result<()> {
    let start = std::time::Instant::now();
    let mut seq = AlsaSequencer::open("seq_probe")?;
    let port = seq.create_port("probe", PortCaps::DUPLEX)?;
    if watch {
        seq.watch_ports()?;
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready {}:{}", seq.client(), port.0)?;
    out.flush()?;

    let mut poll = Poll::new()?;
    for (i, fd) in seq.fds()?.iter().enumerate() {
        poll.registry().register(
            &mut SourceFd(fd),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    let mut events = Events::with_capacity(8);
    loop {
        poll.poll(&mut events, None)?;
        if seq.backlog() > 0 {
            seq.flush()?;
        }
        // Edge-triggered: drain everything that waits.
        while let Some(input) = seq.recv()? {
            match input {
                SeqInput::Midi {
                    port,
                    source,
                    message,
                } => {
                    let bytes = message.as_bytes();
                    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
                    write!(out, "midi {source} len {} {}", bytes.len(), hex.join(" "))?;
                    if time {
                        write!(out, " at {:.6}", start.elapsed().as_secs_f64())?;
                    }
                    writeln!(out)?;
                    if echo {
                        match seq.send(port, None, &message) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                writeln!(out, "dropped {} bytes: {e}", bytes.len())?
                            }
                            r => r?,
                        }
                    }
                }
                SeqInput::Subscribed(s) => {
                    writeln!(out, "subscribed {}", describe(&s))?;
                    if let (Some(n), Direction::ToPeer) = (sysex_len, s.direction) {
                        let mut sysex: Vec<u8> = (0..n).map(|i| (i % 128) as u8).collect();
                        sysex[0] = 0xF0;
                        sysex[n - 1] = 0xF7;
                        seq.send(s.port, None, &MidiMessage::SysEx(sysex))?;
                        writeln!(out, "sent sysex {n} (backlog {})", seq.backlog())?;
                    }
                }
                SeqInput::Unsubscribed(s) => writeln!(out, "unsubscribed {}", describe(&s))?,
                SeqInput::PortStarted(p) => writeln!(
                    out,
                    "port started {} '{}' '{}' {}{}{}",
                    p.addr,
                    p.client_name,
                    p.port_name,
                    if p.hardware { "hardware" } else { "software" },
                    if p.readable { " readable" } else { "" },
                    if p.writable { " writable" } else { "" },
                )?,
                SeqInput::PortExited(addr) => writeln!(out, "port exited {addr}")?,
                SeqInput::Overrun => writeln!(out, "overrun")?,
            }
        }
        out.flush()?;
    }
}

#[cfg_attr(test, allow(dead_code))]
fn describe(s: &Subscription) -> String {
    let direction = match s.direction {
        Direction::ToPeer => "to-peer",
        Direction::FromPeer => "from-peer",
    };
    format!(
        "{} {} {direction} client '{}' port '{}'",
        s.port.0,
        s.peer,
        s.peer_client_name.as_deref().unwrap_or("?"),
        s.peer_port_name.as_deref().unwrap_or("?"),
    )
}
