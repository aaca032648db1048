//! The command line and the file resolved into [`Settings`]: an option given on the command
//! line wins over the file, which wins over the defaults.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use log::LevelFilter;

use super::{read, Admission, AdmissionKeys, Connection, Error, File, Midi2, Settings};
use crate::options::{
    AutoExport, ConnectTarget, DEFAULT_ALSA_NAME, DEFAULT_CONFIG, DEFAULT_CONTROL, DEFAULT_PORT,
};

/// What the command line asks of the daemon, checked; `None` or empty where it says nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandLine {
    /// 0 = warnings, 1 = info (-v), 2 = debug, 3+ = trace; -q forces errors only.
    pub verbosity: u8,
    pub quiet: bool,
    pub name: Option<String>,
    pub port: Option<u16>,
    pub bind: Vec<IpAddr>,
    pub connect: Vec<ConnectTarget>,
    pub hub: bool,
    pub no_alsa: bool,
    pub keep_connected: bool,
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
    /// `--max-sessions`, `--allow`, `--deny`: over the file's `[general]` keys.
    pub admission: AdmissionKeys,
    pub no_midi2: bool,
    pub midi2_port: Option<u16>,
}

/// The default session name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "rtpmidid".into())
}

/// Reads the file to use: `-c FILE` (which must exist), else [`DEFAULT_CONFIG`] if it exists.
/// Returns the path read, for reloads.
pub fn load(command_line: &CommandLine) -> Result<(Option<PathBuf>, File), Error> {
    let path = match &command_line.config {
        Some(path) => path.clone(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok((None, File::default())),
    };
    let file = read(&path)?;
    Ok((Some(path), file))
}

/// Merges the file with the command line: an option given on the command line wins; `-b`
/// replaces the file's `bind` list; `-C` adds to its `[connect]` sections (replacing one of the
/// same name); `--hub` and `--no-mdns` switch on and off whatever the file says.
pub fn resolve(
    command_line: &CommandLine,
    file: &File,
    hostname: impl FnOnce() -> String,
) -> Settings {
    let log_level = match (command_line.quiet, command_line.verbosity) {
        (true, _) => LevelFilter::Error,
        (false, 0) => file.log_level.unwrap_or(LevelFilter::Warn),
        (false, 1) => LevelFilter::Info,
        (false, 2) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // --keep-connected wins over the file, a section's own key over [general].
    let keep_connected = command_line.keep_connected || file.keep_connected.unwrap_or(false);
    let mut connect = file.connect.clone();
    for c in &mut connect {
        c.keep_connected =
            Some(command_line.keep_connected || c.keep_connected.unwrap_or(keep_connected));
    }
    for target in &command_line.connect {
        let name = target
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", target.host, target.port));
        connect.retain(|c| c.name != name);
        connect.push(Connection {
            name,
            host: target.host.clone(),
            port: target.port,
            alsa_port_name: None,
            keep_connected: Some(keep_connected),
            midi2: target.midi2,
            credentials: target.credentials.clone(),
        });
    }
    let mut mdns = file.mdns.clone();
    mdns.enabled &= !command_line.no_mdns;
    if !command_line.mdns_interfaces.is_empty() {
        mdns.interfaces = command_line.mdns_interfaces.clone();
    }
    Settings {
        name: command_line
            .name
            .clone()
            .or_else(|| file.name.clone())
            .unwrap_or_else(hostname),
        alsa_name: command_line
            .alsa_name
            .clone()
            .or_else(|| file.alsa_name.clone())
            .unwrap_or_else(|| DEFAULT_ALSA_NAME.into()),
        port: command_line.port.or(file.port).unwrap_or(DEFAULT_PORT),
        bind: if command_line.bind.is_empty() {
            file.bind.clone()
        } else {
            command_line.bind.clone()
        },
        log_level,
        control: command_line
            .control
            .clone()
            .or_else(|| file.control.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL)),
        hub: command_line.hub || file.hub.unwrap_or(false),
        connect,
        exports: file.exports.clone(),
        listeners: file.listeners.clone(),
        rawmidi: file.rawmidi.clone(),
        mdns,
        timeouts: file.timeouts.clone(),
        journal: file.journal.unwrap_or(true),
        keep_connected,
        playout_delay: command_line.playout_delay.or(file.playout_delay),
        export_auto: command_line
            .export_auto
            .clone()
            .or_else(|| file.export_auto.clone()),
        sysex_rate: command_line.sysex_rate.or(file.sysex_rate),
        alsa: !command_line.no_alsa,
        control_required: command_line.control.is_some() || file.control.is_some(),
        admission: command_line
            .admission
            .over(&file.admission.over(&Admission::default())),
        midi2: Midi2 {
            enabled: file.midi2.enabled && !command_line.no_midi2,
            port: command_line.midi2_port.or(file.midi2.port),
            ..file.midi2.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::session;

    use protocol::admission::IpNet;

    use super::*;
    use crate::config::command_line;
    use crate::config::{diff, parse, settings, Action};

    #[test]
    fn command_line_overrides_the_file() {
        let file = parse(
            "x",
            "[general]\nname = File\nport = 6000\nbind = 10.0.0.1\nlog_level = info\n\
             control = /tmp/file.sock\n[hub]\nenabled = no\n[mdns]\nenabled = yes\n\
             [connect a]\nhost = h1\n[connect b]\nhost = h2\n",
        )
        .unwrap();
        let s = resolve(&command_line(""), &file, || "host".into());
        assert_eq!((s.name.as_str(), s.port), ("File", 6000));
        assert_eq!(s.log_level, LevelFilter::Info);
        assert_eq!(s.control, PathBuf::from("/tmp/file.sock"));
        assert!(!s.hub && s.mdns.enabled);

        let s = resolve(
            &command_line(
                "-n Cli -p 7000 -b 127.0.0.1 -vv --hub --no-mdns --control /tmp/cli.sock \
                 -C b@h9:9000 -C h3:5004",
            ),
            &file,
            || "host".into(),
        );
        assert_eq!((s.name.as_str(), s.port), ("Cli", 7000));
        assert_eq!(s.bind, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.log_level, LevelFilter::Debug);
        assert_eq!(s.control, PathBuf::from("/tmp/cli.sock"));
        assert!(s.hub && !s.mdns.enabled);
        let names: Vec<_> = s
            .connect
            .iter()
            .map(|c| (c.name.as_str(), c.host.as_str()))
            .collect();
        assert_eq!(names, [("a", "h1"), ("b", "h9"), ("h3:5004", "h3")]);
        assert_eq!(
            resolve(&command_line("-q"), &file, || "h".into()).log_level,
            LevelFilter::Error
        );
    }

    #[test]
    fn options_of_the_command_line_have_keys_too() {
        let file = parse(
            "x",
            "[general]\nkeep_connected = yes\nplayout_delay = 20\nexport_auto = all:Key\n\
             sysex_rate = 3125\n[connect a]\nhost = h1\n[connect b]\nhost = h2\n\
             keep_connected = no\n",
        )
        .unwrap();
        assert_eq!(file.connect[1].keep_connected, Some(false));
        let s = resolve(&command_line("-C c@h3:5004"), &file, || "h".into());
        assert!(s.keep_connected);
        assert_eq!((s.playout_delay, s.sysex_rate), (Some(20), Some(3125)));
        assert_eq!(s.export_auto, Some(AutoExport::parse("all:key").unwrap()));
        // A section's own key wins over [general]; -C connections follow [general].
        let keep: Vec<_> = s.connect.iter().map(|c| c.keep_connected).collect();
        assert_eq!(keep, [Some(true), Some(false), Some(true)]);

        // The command line wins.
        let s = resolve(
            &command_line(
                "--keep-connected --playout-delay 5 --export-auto hardware --sysex-rate 100",
            ),
            &file,
            || "h".into(),
        );
        assert_eq!((s.playout_delay, s.sysex_rate), (Some(5), Some(100)));
        assert_eq!(s.export_auto, Some(AutoExport::parse("hardware").unwrap()));
        assert!(s.connect.iter().all(|c| c.keep_connected == Some(true)));
        // Nothing said anywhere: nothing kept, no delay.
        let s = resolve(&command_line(""), &File::default(), || "h".into());
        assert!(!s.keep_connected && s.playout_delay.is_none() && s.export_auto.is_none());

        // Changing them on reload needs a restart, except keep_connected, which reconnects
        // the connections it changes.
        let old = settings("[connect a]\nhost = h1\n");
        let new = settings(
            "[general]\nplayout_delay = 3\nexport_auto = all\nsysex_rate = 9\n\
             [connect a]\nhost = h1\nkeep_connected = yes\n",
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                Action::Disconnect("a".into()),
                Action::Connect(new.connect[0].clone()),
                Action::NeedsRestart("playout_delay"),
                Action::NeedsRestart("export_auto"),
                Action::NeedsRestart("sysex_rate"),
            ]
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let s = resolve(&command_line(""), &File::default(), || "myhost".into());
        assert_eq!(s.name, "myhost");
        assert_eq!(s.port, DEFAULT_PORT);
        assert_eq!(s.control, PathBuf::from(DEFAULT_CONTROL));
        assert_eq!(s.log_level, LevelFilter::Warn);
        assert!(s.journal && s.mdns.enabled && !s.hub);
        let c = s.session_config();
        assert_eq!(c.ck_interval, session::Config::default().ck_interval);
    }

    #[test]
    fn timeouts_reach_the_session_config() {
        let file = parse(
            "x",
            "[timeouts]\nck_interval = 5\ninvite_attempts = 2\n[journal]\nenabled = no\n",
        )
        .unwrap();
        let c = resolve(&command_line(""), &file, || "h".into()).session_config();
        assert_eq!(c.ck_interval, Duration::from_secs(5));
        assert_eq!(c.invite_attempts, 2);
        assert!(!c.journal);
    }

    #[test]
    fn limits_and_networks_from_the_file_the_command_line_and_a_listener() {
        let text = "[general]\nmax_sessions = 10\nmax_sessions_per_host = 2\n\
                    allow = 10.0.0.0/8, fd00::/8\ndeny = 10.9.9.9\n\
                    [listener drums]\nport = 6000\nallow = 10.1.0.0/16\n";
        let file = parse("x", text).unwrap();
        let s = resolve(&command_line(""), &file, || "h".into());
        let net = |t: &str| t.parse::<IpNet>().unwrap();
        assert_eq!(s.admission.max_sessions, 10);
        assert_eq!(s.admission.max_sessions_per_host, 2);
        assert_eq!(
            s.admission.addresses.allow,
            vec![net("10.0.0.0/8"), net("fd00::/8")]
        );
        assert!(!s.admission.addresses.admits("10.9.9.9".parse().unwrap()));
        // The listener changes the networks it names and keeps [general]'s limits.
        let drums = s.listeners[0].admission.over(&s.admission);
        assert_eq!(drums.addresses.allow, vec![net("10.1.0.0/16")]);
        assert_eq!(drums.addresses.deny, vec![net("10.9.9.9")]);
        assert_eq!(drums.max_sessions_per_host, 2);
        // The command line replaces what it names.
        let cli = command_line("--max-sessions 3 --allow 192.168.0.0/16 --allow ::1");
        let s = resolve(&cli, &file, || "h".into());
        assert_eq!(s.admission.max_sessions, 3);
        assert_eq!(s.admission.max_sessions_per_host, 2);
        assert_eq!(
            s.admission.addresses.allow,
            vec![net("192.168.0.0/16"), net("::1")]
        );
        assert_eq!(s.admission.addresses.deny, vec![net("10.9.9.9")]);
        // Defaults that fit a stage, and a reload that changes them says so.
        let d = resolve(&command_line(""), &File::default(), || "h".into());
        assert_eq!(
            (d.admission.max_sessions, d.admission.max_sessions_per_host),
            (256, 32)
        );
        assert!(d.admission.addresses.admits("203.0.113.1".parse().unwrap()));
        assert!(diff(&d, &resolve(&command_line(""), &file, || "h".into()))
            .contains(&Action::Admission));
    }

    #[test]
    fn bad_limits_and_networks_are_refused_with_their_line() {
        for (text, needle) in [
            (
                "[general]\nmax_sessions = 0\n",
                ":2: bad value \"0\" for \"max_sessions\"",
            ),
            ("[general]\nallow = 10.0.0.0/40\n", ":2: bad value"),
            (
                "[listener l]\nport = 6000\ndeny = nowhere\n",
                ":3: bad value",
            ),
        ] {
            let e = parse("x", text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!(crate::cli::parse(&["--allow".into(), "x/1".into()]).is_err());
    }
}
