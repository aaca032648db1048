//! Option types, their defaults and limits, and the one parser of each kind of value, which the
//! command line and the configuration file both use. The bottom of the crate: it imports no
//! other module of the daemon.
//!
//! A value parser returns why a text is refused, without the text or the option's name: the
//! caller adds those in its own form (`--port` or `file:line: "port"`).
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use protocol::admission::IpNet;
use protocol::midi2::session::ClientAuth;

/// The main control UDP port; the data port is the next one.
pub const DEFAULT_PORT: u16 = 5004;
/// The configuration file read when `-c` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/rtpmidid/rtpmidid.conf";
pub const DEFAULT_CONTROL: &str = "/run/rtpmidid/control.sock";
pub const DEFAULT_ALSA_NAME: &str = "rtpmidid";
/// A playout delay longer than this is surely a mistake (the unit is ms).
pub const MAX_PLAYOUT_DELAY_MS: u32 = 5000;
/// Bytes of a name: an mDNS instance label and an ALSA client or port name take no more.
pub const MAX_NAME: usize = 63;
/// Bytes of a Network MIDI 2.0 secret, user name or password.
pub const MAX_CREDENTIAL: usize = 63;
/// Bytes of a network interface's name (IFNAMSIZ less its NUL).
pub const MAX_INTERFACE: usize = 15;
/// Bytes of a host name (RFC 1035).
pub const MAX_HOST: usize = 253;
/// Shortest duration a timeout may have: the event loop keeps time in milliseconds.
pub const MIN_DURATION: Duration = Duration::from_millis(10);
/// Longest duration a timeout may have.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest clock sync period: peers end a session after 60 s without one.
pub const MAX_CK_INTERVAL: Duration = Duration::from_secs(60);
/// Highest count of tries or missed clock syncs.
pub const MAX_COUNT: u32 = 100;
/// Sessions a listener takes at once by default: more than any rig uses, a few MB at most.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Sessions one host may have with a listener by default.
pub const DEFAULT_MAX_SESSIONS_PER_HOST: usize = 32;
/// The most sessions a listener may be allowed.
pub const MAX_SESSIONS: usize = 100_000;

/// A connection target: `[NAME@]HOST:PORT` for RTP-MIDI, `midi2://[NAME@]HOST:PORT` for
/// Network MIDI 2.0; resolved when the daemon starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    pub name: Option<String>,
    pub host: String,
    pub port: u16,
    pub midi2: bool,
    /// What a Network MIDI 2.0 host that asks us to authenticate gets; `None`: `[midi2]
    /// secret`. Only a `[connect]` section gives them (a command line shows in `ps`).
    pub credentials: Option<ClientAuth>,
}

impl ConnectTarget {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (midi2, text) = match text.strip_prefix(MIDI2_SCHEME) {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (name, rest) = match text.split_once('@') {
            Some((name, rest)) => (Some(self::name(name)?), rest),
            None => (None, text),
        };
        let (host, port) = rest.rsplit_once(':').ok_or("no :PORT")?;
        Ok(ConnectTarget {
            name,
            host: self::host(host)?,
            port: self::port(port)?,
            midi2,
            credentials: None,
        })
    }
}

/// What marks a Network MIDI 2.0 connection target.
pub const MIDI2_SCHEME: &str = "midi2://";
/// The Network MIDI 2.0 host's UDP port (the specification's default).
pub const DEFAULT_MIDI2_PORT: u16 = 5673;

/// What a listener's sockets speak, and on which port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// An AppleMIDI pair on this control port.
    AppleMidi(u16),
    /// An AppleMIDI pair on the first free control port above this one.
    AppleMidiAbove(u16),
    /// A Network MIDI 2.0 host's port.
    Midi2(u16),
}

/// `--export-auto KIND[:PATTERN]`: local ports connected to `Network` as they appear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoExport {
    pub kind: PortKind,
    /// Part of the client or port name, any case; `None` for every name.
    pub pattern: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Devices: USB and other rawmidi ports (port type HARDWARE).
    Hardware,
    /// Applications and kernel software ports (Midi Through, VirMIDI).
    Software,
    All,
}

impl AutoExport {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, pattern) = match text.split_once(':') {
            Some((kind, pattern)) if !pattern.is_empty() => (kind, Some(pattern.to_lowercase())),
            Some(_) => return Err(format!("empty pattern after ':' in {text:?}")),
            None => (text, None),
        };
        let kind = match kind {
            "hardware" => PortKind::Hardware,
            "software" => PortKind::Software,
            "all" => PortKind::All,
            _ => {
                return Err(format!(
                    "bad kind {kind:?} (hardware, software or all, then :PATTERN if wanted)"
                ))
            }
        };
        Ok(AutoExport { kind, pattern })
    }
}

// ---- one parser per kind of value ----

/// A UDP port of a pair: N and N+1 must both exist.
pub fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 && p < u16::MAX => Ok(p),
        _ => Err("a UDP port from 1 to 65534".into()),
    }
}

/// An address to listen on, IPv6 with or without brackets.
pub fn address(text: &str) -> Result<IpAddr, String> {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| "not an IP address".into())
}

/// A name shown to people or peers: a session, an ALSA client or port, an interface.
pub fn name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    if text.len() > MAX_NAME {
        return Err(format!(
            "at most {MAX_NAME} bytes (mDNS and ALSA take no more)"
        ));
    }
    Ok(text.to_string())
}

/// A shared secret, user name or password of Network MIDI 2.0 authentication. The error
/// never quotes it.
pub fn credential(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    if text.len() > MAX_CREDENTIAL {
        return Err(format!(
            "at most {MAX_CREDENTIAL} bytes (amidi2net takes no more)"
        ));
    }
    Ok(text.to_string())
}

/// A network interface's name, as `ip link` shows it.
pub fn interface(text: &str) -> Result<String, String> {
    if text.len() > MAX_INTERFACE {
        return Err(format!(
            "an interface name has at most {MAX_INTERFACE} bytes"
        ));
    }
    name(text)
}

/// A host name or address, IPv6 with or without brackets.
pub fn host(text: &str) -> Result<String, String> {
    let host = text.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("no host".into());
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("a host name has no spaces".into());
    }
    if host.len() > MAX_HOST {
        return Err(format!("a host name has at most {MAX_HOST} bytes"));
    }
    Ok(host.to_string())
}

pub fn playout_delay(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|ms| (1..=MAX_PLAYOUT_DELAY_MS).contains(ms))
        .ok_or_else(|| format!("milliseconds from 1 to {MAX_PLAYOUT_DELAY_MS}"))
}

pub fn sysex_rate(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "bytes a second, at least 1".into())
}

pub fn log_level(text: &str) -> Result<LevelFilter, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return Err("use error, warn, info, debug or trace".into()),
    })
}

/// A path (the control socket's, a device's): absolute, since the daemon's working folder is
/// no one's business.
pub fn path(text: &str) -> Result<PathBuf, String> {
    if !text.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    Ok(PathBuf::from(text))
}

pub fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err("use yes or no".into()),
    }
}

/// Tries or missed clock syncs.
pub fn count(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_COUNT).contains(n))
        .ok_or_else(|| format!("a count from 1 to {MAX_COUNT}"))
}

/// `10`, `10s`, `2.5s`, `500ms`: from [`MIN_DURATION`] to [`MAX_DURATION`].
/// An address or a network: `192.168.1.0/24`, `fe80::/10`, `10.0.0.5`.
pub fn network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>().map_err(|e| e.to_string())
}

/// A number of sessions, from 1 to [`MAX_SESSIONS`].
pub fn sessions(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_SESSIONS).contains(n))
        .ok_or_else(|| format!("a number of sessions from 1 to {MAX_SESSIONS}"))
}

pub fn duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 0.001),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|secs| (MIN_DURATION.as_secs_f64()..=MAX_DURATION.as_secs_f64()).contains(secs))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "a duration such as 10, 2.5s or 500ms, from 10ms to 1 hour".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets() {
        assert_eq!(
            ConnectTarget::parse("piano@[::1]:5006"),
            Ok(ConnectTarget {
                name: Some("piano".into()),
                host: "::1".into(),
                port: 5006,
                midi2: false,
                credentials: None,
            })
        );
        for (bad, why) in [
            ("host", "no :PORT"),
            ("@h:1", "must not be empty"),
            (":5004", "no host"),
            ("h:0", "UDP port"),
            ("a b:5004", "no spaces"),
        ] {
            let e = ConnectTarget::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn values_and_their_limits() {
        assert_eq!(port("65534"), Ok(65534));
        assert!(port("0").is_err() && port("65535").is_err() && port("x").is_err());
        assert_eq!(
            address("[::1]"),
            Ok(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert!(address("1.2.3").is_err());
        assert!(name("").is_err() && name("  ").is_err() && name("a\u{1}").is_err());
        assert_eq!(playout_delay("5000"), Ok(5000));
        assert!(playout_delay("0").is_err() && playout_delay("5001").is_err());
        assert!(sysex_rate("0").is_err());
        assert_eq!(log_level("WARNING"), Ok(LevelFilter::Warn));
        assert!(path("run/x").is_err());
        assert_eq!(boolean("On"), Ok(true));
        assert!(count("0").is_err() && count("101").is_err());
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert!(duration("0").is_err() && duration("3601").is_err() && duration("soon").is_err());
        assert_eq!(duration("10ms"), Ok(MIN_DURATION));
        for tiny in ["0.000000001", "1e-9", "9ms", "-1", "NaN", "inf"] {
            assert!(duration(tiny).is_err(), "{tiny}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        assert!(name(&long).unwrap_err().contains("at most 63 bytes"));
        assert!(name(&long[1..]).is_ok());
        assert!(interface("a-very-long-ifname").is_err() && interface("eth0").is_ok());
        assert!(host(&"h".repeat(MAX_HOST + 1)).is_err());
    }
}
