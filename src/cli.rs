//! The command line: what the user asked for, checked. Each value is read by the parser of its
//! kind in `crate::options`, the one the configuration file uses too.
use std::path::PathBuf;

use getopts::{Matches, Options as Getopts};

use crate::config::{AdmissionKeys, CommandLine};
use crate::ctl::client::{self, CtlOptions};
use crate::options::{self, AutoExport, ConnectTarget};

const CONVERT_USAGE: &str = "rtpmidid convert-config FILE\n\n\
    Prints the C++ rtpmidid's INI file FILE (/etc/rtpmidid/default.ini) as an rtpmidid.conf;\n\
    what cannot carry over is named with FILE:LINE on stderr.\n";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<CommandLine>),
    /// `rtpmidid ctl ...`: talk to a running daemon.
    Ctl(CtlOptions),
    /// `rtpmidid convert-config FILE`: the C++ rtpmidid's INI file in our format.
    ConvertConfig(PathBuf),
    Help(String),
    Version,
}

fn getopts() -> Getopts {
    let mut o = Getopts::new();
    o.optflagmulti(
        "v",
        "verbose",
        "more logging (repeat for more; RUST_LOG also works)",
    );
    o.optflag("q", "quiet", "log errors only");
    o.optopt(
        "n",
        "name",
        "session name announced to peers (default: host name)",
        "NAME",
    );
    o.optopt(
        "p",
        "port",
        "control UDP port; the data port is the next one (default 5004)",
        "PORT",
    );
    o.optmulti(
        "b",
        "bind",
        "address to listen on (repeatable; default: every IPv4 and IPv6 address)",
        "ADDR",
    );
    o.optmulti(
        "C",
        "connect",
        "connect to a peer (repeatable; host names are resolved)",
        "[NAME@]HOST:PORT",
    );
    o.optflag(
        "",
        "hub",
        "forward what each network session sends to every other one",
    );
    o.optflag(
        "",
        "keep-connected",
        "keep --connect sessions up even while nothing is connected to their ALSA ports",
    );
    o.optflag("", "no-alsa", "run without the ALSA sequencer");
    o.optopt(
        "",
        "alsa-name",
        "ALSA sequencer client name (default rtpmidid)",
        "NAME",
    );
    o.optopt(
        "",
        "sysex-rate",
        "pace SysEx to ALSA at this many bytes a second (default 32000; a MIDI cable takes 3125)",
        "BYTES",
    );
    o.optopt(
        "",
        "playout-delay",
        "deliver network MIDI to ALSA this long after its RTP timestamp, so its timing \
         survives network jitter (default: at once)",
        "MS",
    );
    o.optopt(
        "",
        "export-auto",
        "export local ALSA ports of this kind whose client or port name contains PATTERN \
         (any case), now and when they appear",
        "hardware|software|all[:PATTERN]",
    );
    o.optflag("", "no-mdns", "no mDNS announcements or discovery");
    o.optmulti(
        "",
        "mdns-interface",
        "use mDNS only on this interface (repeatable; default: every multicast interface)",
        "NAME",
    );
    o.optflag("", "no-midi2", "no Network MIDI 2.0 host");
    o.optopt(
        "",
        "midi2-port",
        "Network MIDI 2.0 host's UDP port (default 5673)",
        "PORT",
    );
    o.optopt(
        "",
        "max-sessions",
        "sessions a listener takes at once (default 256)",
        "N",
    );
    o.optopt(
        "",
        "max-sessions-per-host",
        "sessions one host may have with a listener (default 32)",
        "N",
    );
    o.optmulti(
        "",
        "allow",
        "take sessions only from this address or network (repeatable; default: any)",
        "NET",
    );
    o.optmulti(
        "",
        "deny",
        "never take sessions from this address or network (repeatable)",
        "NET",
    );
    o.optopt(
        "c",
        "config",
        "configuration file (default: /etc/rtpmidid/rtpmidid.conf if it exists)",
        "FILE",
    );
    o.optopt(
        "",
        "control",
        "control socket (default /run/rtpmidid/control.sock)",
        "PATH",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// The values of option `name`, each read by `parse`; an error names the option.
fn values<T>(
    m: &Matches,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    m.opt_strs(name)
        .iter()
        .map(|v| parse(v).map_err(|why| format!("bad value {v:?} for --{name}: {why}")))
        .collect()
}

/// The last value of option `name`, read by `parse`.
fn value<T>(
    m: &Matches,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    Ok(values(m, name, parse)?.pop())
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().is_some_and(|a| a == "ctl") {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(Command::Help(client::usage()));
        }
        return client::parse(&args[1..]).map(Command::Ctl);
    }
    if args.first().is_some_and(|a| a == "convert-config") {
        return match &args[1..] {
            [h] if h == "-h" || h == "--help" => Ok(Command::Help(CONVERT_USAGE.into())),
            [file] if !file.starts_with('-') => Ok(Command::ConvertConfig(file.into())),
            _ => Err(format!("usage: {CONVERT_USAGE}")),
        };
    }
    let spec = getopts();
    let m = spec.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        let brief = "Usage: rtpmidid [OPTIONS]\n       rtpmidid ctl [--control PATH] [--json] \
                     status|peers|top|connect HOST:PORT [NAME]|disconnect ID|NAME|export C:P|unexport C:P\n\
                     \x20      rtpmidid convert-config FILE\n\n\
                     RTP-MIDI (AppleMIDI) network MIDI daemon.";
        return Ok(Command::Help(spec.usage(brief)));
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let path = |text: &str| Ok(PathBuf::from(text));
    Ok(Command::Run(Box::new(CommandLine {
        verbosity: m.opt_count("verbose").min(u8::MAX as usize) as u8,
        quiet: m.opt_present("quiet"),
        name: value(&m, "name", options::name)?,
        port: value(&m, "port", options::port)?,
        bind: values(&m, "bind", options::address)?,
        connect: values(&m, "connect", ConnectTarget::parse)?,
        hub: m.opt_present("hub"),
        no_alsa: m.opt_present("no-alsa"),
        keep_connected: m.opt_present("keep-connected"),
        alsa_name: value(&m, "alsa-name", options::name)?,
        sysex_rate: value(&m, "sysex-rate", options::sysex_rate)?,
        playout_delay: value(&m, "playout-delay", options::playout_delay)?,
        export_auto: value(&m, "export-auto", AutoExport::parse)?,
        no_mdns: m.opt_present("no-mdns"),
        mdns_interfaces: values(&m, "mdns-interface", options::interface)?,
        config: value(&m, "config", path)?,
        control: value(&m, "control", path)?,
        no_midi2: m.opt_present("no-midi2"),
        midi2_port: value(&m, "midi2-port", options::port)?,
        admission: AdmissionKeys {
            max_sessions: value(&m, "max-sessions", options::sessions)?,
            max_sessions_per_host: value(&m, "max-sessions-per-host", options::sessions)?,
            allow: Some(values(&m, "allow", options::network)?).filter(|l| !l.is_empty()),
            deny: Some(values(&m, "deny", options::network)?).filter(|l| !l.is_empty()),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> CommandLine {
        match parse(&args(s)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run("");
        assert_eq!(o.port, None);
        assert_eq!(o.verbosity, 0);
        assert!(o.bind.is_empty() && o.connect.is_empty() && !o.hub);
    }

    #[test]
    fn every_option() {
        let o = run(
            "-vv -n Stage -p 6000 -b 127.0.0.1 -b ::1 -C piano@10.0.0.2:5004 \
             --connect [::1]:5006 --hub --keep-connected --no-alsa --no-mdns -c /etc/rtpmidid.conf \
             --mdns-interface eth0 --mdns-interface lo \
             --playout-delay 20 --export-auto hardware:launch",
        );
        assert_eq!(o.verbosity, 2);
        assert_eq!(o.name.as_deref(), Some("Stage"));
        assert_eq!(o.port, Some(6000));
        assert_eq!(o.bind.len(), 2);
        assert_eq!(
            o.connect,
            vec![
                ConnectTarget {
                    name: Some("piano".into()),
                    host: "10.0.0.2".into(),
                    port: 5004,
                    midi2: false,
                    credentials: None,
                },
                ConnectTarget {
                    name: None,
                    host: "::1".into(),
                    port: 5006,
                    midi2: false,
                    credentials: None,
                }
            ]
        );
        assert!(o.hub && o.keep_connected && o.no_alsa && o.no_mdns);
        assert_eq!(o.mdns_interfaces, vec!["eth0", "lo"]);
        assert_eq!(o.playout_delay, Some(20));
        assert_eq!(
            o.export_auto,
            Some(AutoExport {
                kind: crate::options::PortKind::Hardware,
                pattern: Some("launch".into())
            })
        );
        assert_eq!(o.config, Some(PathBuf::from("/etc/rtpmidid.conf")));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (line, needle) in [
            ("-p 0", "bad value \"0\" for --port: a UDP port"),
            ("-p 70000", "for --port"),
            ("-C host", "for --connect: no :PORT"),
            ("-C @h:1", "for --connect: must not be empty"),
            ("-b nonsense", "for --bind: not an IP address"),
            ("--playout-delay 0", "for --playout-delay: milliseconds"),
            ("--export-auto usb", "for --export-auto: bad kind"),
            ("--playout-delay 9000", "for --playout-delay"),
            ("--sysex-rate 0", "for --sysex-rate: bytes a second"),
            ("-n \u{1}", "for --name: control characters"),
            ("--bogus", "bogus"),
            ("extra", "unexpected"),
            ("-n", "'n'"),
        ] {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn convert_config_takes_one_file() {
        assert_eq!(
            parse(&args("convert-config /etc/rtpmidid/default.ini")),
            Ok(Command::ConvertConfig("/etc/rtpmidid/default.ini".into()))
        );
        assert!(matches!(
            parse(&args("convert-config -h")),
            Ok(Command::Help(_))
        ));
        for bad in ["convert-config", "convert-config a b", "convert-config --x"] {
            assert!(
                parse(&args(bad)).unwrap_err().starts_with("usage:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse(&args("-h")), Ok(Command::Help(h)) if h.contains("--connect")));
        assert_eq!(parse(&args("-V")), Ok(Command::Version));
    }
}
