//! The command line: what the user asked for, checked, as a [`Options`] value.
use std::net::IpAddr;
use std::path::PathBuf;

use getopts::Options as Getopts;

use crate::bridge::AutoExport;

pub const DEFAULT_PORT: u16 = 5004;
/// A playout delay longer than this is surely a mistake (the unit is ms).
pub const MAX_PLAYOUT_DELAY_MS: u32 = 5000;

/// A `--connect` target: `[NAME@]HOST:PORT`, resolved when the daemon starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    pub name: Option<String>,
    pub host: String,
    pub port: u16,
}

impl ConnectTarget {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, rest) = match text.split_once('@') {
            Some((name, rest)) if !name.is_empty() => (Some(name.to_string()), rest),
            Some(_) => return Err(format!("empty name before '@' in {text:?}")),
            None => (None, text),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} has no :PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port = parse_port(port).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(ConnectTarget {
            name,
            host: host.to_string(),
            port,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// 0 = warnings, 1 = info (-v), 2 = debug, 3+ = trace; -q forces errors only.
    pub verbosity: u8,
    pub quiet: bool,
    pub name: Option<String>,
    /// `None`: the configuration file's, or [`DEFAULT_PORT`].
    pub port: Option<u16>,
    pub bind: Vec<IpAddr>,
    pub connect: Vec<ConnectTarget>,
    pub hub: bool,
    pub no_alsa: bool,
    pub keep_connected: bool,
    /// `None`: the configuration file's, or `rtpmidid`.
    pub alsa_name: Option<String>,
    /// SysEx bytes a second sent to ALSA (a MIDI cable takes 3125).
    pub sysex_rate: Option<u32>,
    /// Milliseconds MIDI from the network waits on ALSA's queue after its timestamp.
    pub playout_delay: Option<u32>,
    pub export_auto: Option<AutoExport>,
    pub no_mdns: bool,
    /// `--mdns-interface`: announce and browse only on these interfaces.
    pub mdns_interfaces: Vec<String>,
    pub config: Option<PathBuf>,
    pub control: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Options>),
    /// `rtpmidid ctl ...`: talk to a running daemon.
    Ctl(crate::control::CtlOptions),
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

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 && p < u16::MAX => Ok(p),
        _ => Err(format!("bad port {text:?} (1-65534)")),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().is_some_and(|a| a == "ctl") {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(Command::Help(crate::control::ctl_usage()));
        }
        return crate::control::parse_ctl(&args[1..]).map(Command::Ctl);
    }
    let spec = getopts();
    let m = spec.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        let brief = "Usage: rtpmidid [OPTIONS]\n       rtpmidid ctl [--control PATH] [--json] \
                     status|peers|connect HOST:PORT [NAME]|disconnect ID|NAME|export C:P|unexport C:P\n\n\
                     RTP-MIDI (AppleMIDI) network MIDI daemon.";
        return Ok(Command::Help(spec.usage(brief)));
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let port = m.opt_str("p").map(|p| parse_port(&p)).transpose()?;
    let bind = m
        .opt_strs("b")
        .iter()
        .map(|b| {
            b.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| format!("bad bind address {b:?}"))
        })
        .collect::<Result<_, _>>()?;
    let connect = m
        .opt_strs("C")
        .iter()
        .map(|c| ConnectTarget::parse(c))
        .collect::<Result<_, _>>()?;
    let name = m.opt_str("n");
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err("the name must not be empty".into());
    }
    Ok(Command::Run(Box::new(Options {
        verbosity: m.opt_count("v").min(u8::MAX as usize) as u8,
        quiet: m.opt_present("q"),
        name,
        port,
        bind,
        connect,
        hub: m.opt_present("hub"),
        no_alsa: m.opt_present("no-alsa"),
        keep_connected: m.opt_present("keep-connected"),
        alsa_name: m.opt_str("alsa-name"),
        sysex_rate: m
            .opt_str("sysex-rate")
            .map(|r| match r.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "bad --sysex-rate {r:?} (bytes a second, at least 1)"
                )),
            })
            .transpose()?,
        playout_delay: m
            .opt_str("playout-delay")
            .map(|d| match d.parse::<u32>() {
                Ok(n) if (1..=MAX_PLAYOUT_DELAY_MS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "bad --playout-delay {d:?} (milliseconds, 1-{MAX_PLAYOUT_DELAY_MS})"
                )),
            })
            .transpose()?,
        export_auto: m
            .opt_str("export-auto")
            .map(|r| AutoExport::parse(&r).map_err(|e| format!("--export-auto: {e}")))
            .transpose()?,
        no_mdns: m.opt_present("no-mdns"),
        mdns_interfaces: m.opt_strs("mdns-interface"),
        config: m.opt_str("c").map(PathBuf::from),
        control: m.opt_str("control").map(PathBuf::from),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> Options {
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
                    port: 5004
                },
                ConnectTarget {
                    name: None,
                    host: "::1".into(),
                    port: 5006
                }
            ]
        );
        assert!(o.hub && o.keep_connected && o.no_alsa && o.no_mdns);
        assert_eq!(o.mdns_interfaces, vec!["eth0", "lo"]);
        assert_eq!(o.playout_delay, Some(20));
        assert_eq!(
            o.export_auto,
            Some(AutoExport {
                kind: crate::bridge::PortKind::Hardware,
                pattern: Some("launch".into())
            })
        );
        assert_eq!(o.config, Some(PathBuf::from("/etc/rtpmidid.conf")));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (line, needle) in [
            ("-p 0", "bad port"),
            ("-p 70000", "bad port"),
            ("-C host", "no :PORT"),
            ("-C @h:1", "empty name"),
            ("-b nonsense", "bad bind"),
            ("--playout-delay 0", "bad --playout-delay"),
            ("--export-auto usb", "--export-auto: bad kind"),
            ("--playout-delay 9000", "bad --playout-delay"),
            ("--bogus", "bogus"),
            ("extra", "unexpected"),
            ("-n", "'n'"),
        ] {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse(&args("-h")), Ok(Command::Help(h)) if h.contains("--connect")));
        assert_eq!(parse(&args("-V")), Ok(Command::Version));
    }
}
