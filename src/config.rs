//! The configuration file: an INI-like text read at start and on reload, checked line by line,
//! merged with the command line into [`Settings`], and compared with the running settings into
//! a list of [`Action`]s.
//!
//! Format: `[section]` or `[section NAME]` headers, `key = value` lines, full-line comments
//! starting with `#` or `;`. Values are taken as written (outer whitespace trimmed, surrounding
//! double quotes removed). Every option is documented in `contrib/rtpmidid.conf.example`.
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use protocol::session;

use crate::bridge::AutoExport;
use crate::cli::{ConnectTarget, Options, DEFAULT_PORT, MAX_PLAYOUT_DELAY_MS};

/// Read when `-c` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/rtpmidid/rtpmidid.conf";
pub const DEFAULT_CONTROL: &str = "/run/rtpmidid/control.sock";
pub const DEFAULT_ALSA_NAME: &str = "rtpmidid";

/// What is wrong with a configuration file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub kind: ErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Read(String),
    /// Neither a header, a `key = value` nor a comment.
    Syntax(String),
    UnknownSection(String),
    /// `[connect]` without its name, or `[general x]` with one.
    SectionName {
        section: String,
        wants_name: bool,
    },
    DuplicateSection(String),
    KeyOutsideSection(String),
    UnknownKey {
        key: String,
        section: String,
    },
    DuplicateKey {
        key: String,
        section: String,
    },
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    MissingKey {
        key: String,
        section: String,
    },
    /// A key the format knows that the daemon cannot apply yet.
    NotSupported {
        key: String,
        section: String,
        why: &'static str,
    },
    /// Two things want the same UDP port (each session port pair is N and N+1).
    PortClash {
        what: String,
        port: u16,
        other: String,
        other_port: u16,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file, self.line)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        match &self.kind {
            ErrorKind::Read(e) => write!(f, "cannot read: {e}"),
            ErrorKind::Syntax(text) => {
                write!(f, "expected [section] or key = value, found {text:?}")
            }
            ErrorKind::UnknownSection(s) => write!(f, "unknown section [{s}]"),
            ErrorKind::SectionName {
                section,
                wants_name: true,
            } => write!(f, "[{section}] needs a name: [{section} NAME]"),
            ErrorKind::SectionName { section, .. } => write!(f, "[{section}] takes no name"),
            ErrorKind::DuplicateSection(s) => write!(f, "section [{s}] appears twice"),
            ErrorKind::KeyOutsideSection(k) => write!(f, "key {k:?} before any [section]"),
            ErrorKind::UnknownKey { key, section } => {
                write!(f, "unknown key {key:?} in [{section}]")
            }
            ErrorKind::DuplicateKey { key, section } => {
                write!(f, "key {key:?} appears twice in [{section}]")
            }
            ErrorKind::NotSupported { key, section, why } => {
                write!(f, "{key:?} in [{section}] is not supported yet: {why}")
            }
            ErrorKind::BadValue { key, value, why } => {
                write!(f, "bad value {value:?} for {key:?}: {why}")
            }
            ErrorKind::MissingKey { key, section } => {
                write!(f, "[{section}] needs a {key:?} key")
            }
            ErrorKind::PortClash {
                what,
                port,
                other,
                other_port,
            } => write!(
                f,
                "{what}: UDP port {port} clashes with {other} (port {other_port}); \
                 each session server uses ports N and N+1"
            ),
        }
    }
}

/// A static connection: the daemon invites this peer and reconnects when the session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The section name, or `HOST:PORT` for an unnamed `--connect`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Name of the ALSA port for this connection (default: `name`).
    pub local_port: Option<String>,
    /// Connected whatever is subscribed to its ALSA port. In a [`File`], `None` where the
    /// section says nothing; [`resolve`] fills it in from `[general]` and the command line.
    pub keep_connected: Option<bool>,
}

impl Connection {
    pub fn target(&self) -> ConnectTarget {
        ConnectTarget {
            name: Some(self.name.clone()),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// `[export NAME]`: a local ALSA port offered to the network as session NAME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub name: String,
    /// `client:port` numbers or a case-insensitive substring of `client name:port name`.
    pub alsa_port: String,
    /// UDP port of its own; `None` shares the main port.
    pub port: Option<u16>,
}

/// `[listener NAME]`: an RTP-MIDI server on a port of its own, announced as NAME, each of its
/// sessions with an ALSA port of its own as on the main port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mdns {
    pub enabled: bool,
    /// Network interfaces to announce and browse on; empty means all.
    pub interfaces: Vec<String>,
    /// Name patterns (`*` and `?` wildcards, case-insensitive) of discovered peers to show;
    /// empty means all. `exclude` wins over `include`.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Mdns {
    /// True if a discovered peer of this service name is to be used.
    pub fn admits(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        let matches = |p: &String| wildcard(&p.to_lowercase(), &name);
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

/// `*` any run of characters, `?` one character, anything else itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Default for Mdns {
    fn default() -> Self {
        Mdns {
            enabled: true,
            interfaces: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// `[timeouts]`: the session tunables a user may want to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub invite_interval: Duration,
    pub invite_attempts: u32,
    pub ck_interval: Duration,
    pub ck_max_missed: u32,
    pub initiator_timeout: Duration,
    pub responder_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let d = session::Config::default();
        Timeouts {
            invite_interval: d.invite_interval,
            invite_attempts: d.invite_attempts,
            ck_interval: d.ck_interval,
            ck_max_missed: d.ck_max_missed,
            initiator_timeout: d.initiator_timeout,
            responder_timeout: d.responder_timeout,
        }
    }
}

/// What the file says; `None` where it says nothing, so the command line and the defaults can
/// fill in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct File {
    pub name: Option<String>,
    pub alsa_name: Option<String>,
    pub port: Option<u16>,
    pub bind: Vec<IpAddr>,
    pub log_level: Option<LevelFilter>,
    pub control: Option<PathBuf>,
    pub hub: Option<bool>,
    pub connect: Vec<Connection>,
    pub exports: Vec<Export>,
    pub listeners: Vec<Listener>,
    pub mdns: Mdns,
    pub timeouts: Timeouts,
    pub journal: Option<bool>,
    pub keep_connected: Option<bool>,
    /// Milliseconds.
    pub playout_delay: Option<u32>,
    pub export_auto: Option<AutoExport>,
    /// Bytes a second.
    pub sysex_rate: Option<u32>,
}

/// The daemon's effective settings: the file, overridden by the command line, with defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub alsa_name: String,
    pub port: u16,
    pub bind: Vec<IpAddr>,
    pub log_level: LevelFilter,
    pub control: PathBuf,
    pub hub: bool,
    pub connect: Vec<Connection>,
    pub exports: Vec<Export>,
    pub listeners: Vec<Listener>,
    pub mdns: Mdns,
    pub timeouts: Timeouts,
    pub journal: bool,
    /// The default of the connections; each [`Connection`] has its own, filled in.
    pub keep_connected: bool,
    pub playout_delay: Option<u32>,
    pub export_auto: Option<AutoExport>,
    pub sysex_rate: Option<u32>,
}

impl Settings {
    /// The protocol's session tunables for these settings.
    pub fn session_config(&self) -> session::Config {
        let t = &self.timeouts;
        session::Config {
            name: self.name.clone(),
            invite_interval: t.invite_interval,
            invite_attempts: t.invite_attempts,
            ck_interval: t.ck_interval,
            ck_max_missed: t.ck_max_missed,
            initiator_timeout: t.initiator_timeout,
            responder_timeout: t.responder_timeout,
            journal: self.journal,
            ..session::Config::default()
        }
    }
}

/// The default session name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "rtpmidid".into())
}

/// Reads the file to use: `-c FILE` (which must exist), else [`DEFAULT_PATH`] if it exists.
/// Returns the path read, for reloads.
pub fn load(options: &Options) -> Result<(Option<PathBuf>, File), Error> {
    let path = match &options.config {
        Some(path) => path.clone(),
        None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
        None => return Ok((None, File::default())),
    };
    let file = read(&path)?;
    Ok((Some(path), file))
}

pub fn read(path: &Path) -> Result<File, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: shown.clone(),
        line: 0,
        kind: ErrorKind::Read(e.to_string()),
    })?;
    parse(&shown, &text)
}

/// Merges the file with the command line: an option given on the command line wins; `-b`
/// replaces the file's `bind` list; `-C` adds to its `[connect]` sections (replacing one of the
/// same name); `--hub` and `--no-mdns` switch on and off whatever the file says.
pub fn resolve(options: &Options, file: &File, hostname: impl FnOnce() -> String) -> Settings {
    let log_level = match (options.quiet, options.verbosity) {
        (true, _) => LevelFilter::Error,
        (false, 0) => file.log_level.unwrap_or(LevelFilter::Warn),
        (false, 1) => LevelFilter::Info,
        (false, 2) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // --keep-connected wins over the file, a section's own key over [general].
    let keep_connected = options.keep_connected || file.keep_connected.unwrap_or(false);
    let mut connect = file.connect.clone();
    for c in &mut connect {
        c.keep_connected =
            Some(options.keep_connected || c.keep_connected.unwrap_or(keep_connected));
    }
    for target in &options.connect {
        let name = target
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", target.host, target.port));
        connect.retain(|c| c.name != name);
        connect.push(Connection {
            name,
            host: target.host.clone(),
            port: target.port,
            local_port: None,
            keep_connected: Some(keep_connected),
        });
    }
    let mut mdns = file.mdns.clone();
    mdns.enabled &= !options.no_mdns;
    if !options.mdns_interfaces.is_empty() {
        mdns.interfaces = options.mdns_interfaces.clone();
    }
    Settings {
        name: options
            .name
            .clone()
            .or_else(|| file.name.clone())
            .unwrap_or_else(hostname),
        alsa_name: options
            .alsa_name
            .clone()
            .or_else(|| file.alsa_name.clone())
            .unwrap_or_else(|| DEFAULT_ALSA_NAME.into()),
        port: options.port.or(file.port).unwrap_or(DEFAULT_PORT),
        bind: if options.bind.is_empty() {
            file.bind.clone()
        } else {
            options.bind.clone()
        },
        log_level,
        control: options
            .control
            .clone()
            .or_else(|| file.control.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL)),
        hub: options.hub || file.hub.unwrap_or(false),
        connect,
        exports: file.exports.clone(),
        listeners: file.listeners.clone(),
        mdns,
        timeouts: file.timeouts.clone(),
        journal: file.journal.unwrap_or(true),
        keep_connected,
        playout_delay: options.playout_delay.or(file.playout_delay),
        export_auto: options
            .export_auto
            .clone()
            .or_else(|| file.export_auto.clone()),
        sysex_rate: options.sysex_rate.or(file.sysex_rate),
    }
}

/// One change that takes `old` settings to `new` ones, as the daemon applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close the session of this connection and stop reconnecting.
    Disconnect(String),
    Connect(Connection),
    SetHub(bool),
    /// New name, timeouts or journal switch: sessions started from now on use them.
    SessionConfig,
    SetLogLevel(LevelFilter),
    /// Close the `[listener]` of this name.
    RemoveListener(String),
    AddListener(Listener),
    /// Changes the ALSA bridge or mDNS applies when it is there (exports, client name, mDNS
    /// settings).
    Bridge(&'static str),
    /// New `[mdns]` include/exclude filters: they apply to peers discovered from now on.
    PeerFilter,
    /// A change that needs a restart (ports, bound addresses, control socket); it is ignored.
    NeedsRestart(&'static str),
}

/// What to do to go from `old` to `new`: removals before additions, so a connection whose
/// host changed is closed and opened again, and nothing else is touched.
pub fn diff(old: &Settings, new: &Settings) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in &old.connect {
        if !new.connect.contains(c) {
            actions.push(Action::Disconnect(c.name.clone()));
        }
    }
    for c in &new.connect {
        if !old.connect.contains(c) {
            actions.push(Action::Connect(c.clone()));
        }
    }
    if old.hub != new.hub {
        actions.push(Action::SetHub(new.hub));
    }
    if old.session_config_fields() != new.session_config_fields() {
        actions.push(Action::SessionConfig);
    }
    if old.log_level != new.log_level {
        actions.push(Action::SetLogLevel(new.log_level));
    }
    if old.alsa_name != new.alsa_name {
        actions.push(Action::Bridge("alsa_name"));
    }
    if old.exports != new.exports {
        actions.push(Action::Bridge("[export]"));
    }
    for l in &old.listeners {
        if !new.listeners.contains(l) {
            actions.push(Action::RemoveListener(l.name.clone()));
        }
    }
    for l in &new.listeners {
        if !old.listeners.contains(l) {
            actions.push(Action::AddListener(l.clone()));
        }
    }
    if (old.mdns.enabled, &old.mdns.interfaces) != (new.mdns.enabled, &new.mdns.interfaces) {
        actions.push(Action::Bridge("[mdns]"));
    }
    if (&old.mdns.include, &old.mdns.exclude) != (&new.mdns.include, &new.mdns.exclude) {
        actions.push(Action::PeerFilter);
    }
    if old.port != new.port {
        actions.push(Action::NeedsRestart("port"));
    }
    if old.bind != new.bind {
        actions.push(Action::NeedsRestart("bind"));
    }
    if old.control != new.control {
        actions.push(Action::NeedsRestart("control"));
    }
    if old.playout_delay != new.playout_delay {
        actions.push(Action::NeedsRestart("playout_delay"));
    }
    if old.export_auto != new.export_auto {
        actions.push(Action::NeedsRestart("export_auto"));
    }
    if old.sysex_rate != new.sysex_rate {
        actions.push(Action::NeedsRestart("sysex_rate"));
    }
    actions
}

impl Settings {
    fn session_config_fields(&self) -> (&str, &Timeouts, bool) {
        (&self.name, &self.timeouts, self.journal)
    }
}

// ---- parsing ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    General,
    Hub,
    Connect,
    Export,
    Listener,
    Mdns,
    Timeouts,
    Journal,
}

impl Section {
    fn from_name(name: &str) -> Option<Section> {
        Some(match name {
            "general" => Section::General,
            "hub" => Section::Hub,
            "connect" => Section::Connect,
            "export" => Section::Export,
            "listener" => Section::Listener,
            "mdns" => Section::Mdns,
            "timeouts" => Section::Timeouts,
            "journal" => Section::Journal,
            _ => return None,
        })
    }

    fn named(self) -> bool {
        matches!(self, Section::Connect | Section::Export | Section::Listener)
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Section::General => &[
                "name",
                "alsa_name",
                "port",
                "bind",
                "log_level",
                "control",
                "keep_connected",
                "playout_delay",
                "export_auto",
                "sysex_rate",
            ],
            Section::Hub | Section::Journal => &["enabled"],
            Section::Connect => &["host", "port", "local_port", "keep_connected"],
            Section::Export | Section::Listener => &["alsa_port", "port"],
            Section::Mdns => &["enabled", "interfaces", "include", "exclude"],
            Section::Timeouts => &[
                "invite_interval",
                "invite_attempts",
                "ck_interval",
                "ck_max_missed",
                "initiator_timeout",
                "responder_timeout",
            ],
        }
    }
}

/// A named section being read: its keys are checked when it ends.
struct Pending {
    kind: Section,
    name: String,
    line: usize,
    host: Option<String>,
    port: Option<u16>,
    local_port: Option<String>,
    alsa_port: Option<String>,
    keep_connected: Option<bool>,
}

struct Parser<'a> {
    file: &'a str,
    line: usize,
    out: File,
}

impl Parser<'_> {
    fn err(&self, kind: ErrorKind) -> Error {
        self.at(self.line, kind)
    }

    fn at(&self, line: usize, kind: ErrorKind) -> Error {
        Error {
            file: self.file.to_string(),
            line,
            kind,
        }
    }

    fn bad(&self, key: &str, value: &str, why: impl Into<String>) -> Error {
        self.err(ErrorKind::BadValue {
            key: key.into(),
            value: value.into(),
            why: why.into(),
        })
    }

    fn finish(&mut self, pending: Option<Pending>) -> Result<(), Error> {
        let Some(p) = pending else { return Ok(()) };
        let missing = |key: &str, section: &str| {
            self.at(
                p.line,
                ErrorKind::MissingKey {
                    key: key.into(),
                    section: format!("{section} {}", p.name),
                },
            )
        };
        match p.kind {
            Section::Connect => {
                let host = p.host.ok_or_else(|| missing("host", "connect"))?;
                self.out.connect.push(Connection {
                    name: p.name,
                    host,
                    port: p.port.unwrap_or(DEFAULT_PORT),
                    local_port: p.local_port,
                    keep_connected: p.keep_connected,
                });
            }
            Section::Export => {
                let alsa_port = p.alsa_port.ok_or_else(|| missing("alsa_port", "export"))?;
                self.out.exports.push(Export {
                    name: p.name,
                    alsa_port,
                    port: p.port,
                });
            }
            Section::Listener => {
                let port = p.port.ok_or_else(|| missing("port", "listener"))?;
                self.out.listeners.push(Listener { name: p.name, port });
            }
            _ => {}
        }
        Ok(())
    }

    fn set(
        &mut self,
        section: Section,
        p: Option<&mut Pending>,
        key: &str,
        value: &str,
    ) -> Result<(), Error> {
        match (section, key) {
            (Section::General, "name") => self.out.name = Some(self.name(key, value)?),
            (Section::General, "alsa_name") => self.out.alsa_name = Some(self.name(key, value)?),
            (Section::General, "port") => self.out.port = Some(self.port(key, value)?),
            (Section::General, "bind") => {
                self.out.bind = list(value)
                    .map(|a| {
                        a.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<IpAddr>()
                            .map_err(|_| self.bad(key, a, "not an IP address"))
                    })
                    .collect::<Result<_, _>>()?
            }
            (Section::General, "log_level") => {
                self.out.log_level = Some(match value.to_ascii_lowercase().as_str() {
                    "error" => LevelFilter::Error,
                    "warn" | "warning" => LevelFilter::Warn,
                    "info" => LevelFilter::Info,
                    "debug" => LevelFilter::Debug,
                    "trace" => LevelFilter::Trace,
                    _ => return Err(self.bad(key, value, "use error, warn, info, debug or trace")),
                })
            }
            (Section::General, "control") => {
                if !value.starts_with('/') {
                    return Err(self.bad(key, value, "must be an absolute path"));
                }
                self.out.control = Some(PathBuf::from(value));
            }
            (Section::General, "keep_connected") => {
                self.out.keep_connected = Some(self.bool(key, value)?)
            }
            (Section::General, "playout_delay") => {
                self.out.playout_delay = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|ms| (1..=MAX_PLAYOUT_DELAY_MS).contains(ms))
                        .ok_or_else(|| {
                            self.bad(
                                key,
                                value,
                                format!("milliseconds from 1 to {MAX_PLAYOUT_DELAY_MS}"),
                            )
                        })?,
                )
            }
            (Section::General, "export_auto") => {
                self.out.export_auto =
                    Some(AutoExport::parse(value).map_err(|e| self.bad(key, value, e))?)
            }
            (Section::General, "sysex_rate") => {
                self.out.sysex_rate = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| self.bad(key, value, "bytes a second, at least 1"))?,
                )
            }
            (Section::Connect, "keep_connected") => {
                let keep = self.bool(key, value)?;
                if let Some(p) = p {
                    p.keep_connected = Some(keep);
                }
            }
            (Section::Hub, "enabled") => self.out.hub = Some(self.bool(key, value)?),
            (Section::Journal, "enabled") => self.out.journal = Some(self.bool(key, value)?),
            (Section::Mdns, "enabled") => self.out.mdns.enabled = self.bool(key, value)?,
            (Section::Mdns, "interfaces") => self.out.mdns.interfaces = self.names(key, value)?,
            (Section::Mdns, "include") => self.out.mdns.include = self.names(key, value)?,
            (Section::Mdns, "exclude") => self.out.mdns.exclude = self.names(key, value)?,
            (Section::Timeouts, _) => self.timeout(key, value)?,
            (_, "host") => {
                let host = self.name(key, value)?;
                if host.contains(char::is_whitespace) {
                    return Err(self.bad(key, value, "a host name has no spaces"));
                }
                if let Some(p) = p {
                    p.host = Some(host.trim_start_matches('[').trim_end_matches(']').into());
                }
            }
            (_, "port") => {
                let port = self.port(key, value)?;
                if let Some(p) = p {
                    p.port = Some(port);
                }
            }
            (_, "local_port") => {
                let name = self.name(key, value)?;
                if let Some(p) = p {
                    p.local_port = Some(name);
                }
            }
            (_, "alsa_port") => {
                let name = self.name(key, value)?;
                if let Some(p) = p {
                    p.alsa_port = Some(name);
                }
            }
            // Section::keys() lists exactly the keys handled above.
            _ => {}
        }
        Ok(())
    }

    fn timeout(&mut self, key: &str, value: &str) -> Result<(), Error> {
        match key {
            "invite_attempts" | "ck_max_missed" => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| self.bad(key, value, "a count from 1 to 100"))?;
                let t = &mut self.out.timeouts;
                if key == "invite_attempts" {
                    t.invite_attempts = n;
                } else {
                    t.ck_max_missed = n;
                }
            }
            _ => {
                let d = duration(value).ok_or_else(|| {
                    self.bad(
                        key,
                        value,
                        "a duration such as 10, 2.5s or 500ms, up to 1 hour",
                    )
                })?;
                let t = &mut self.out.timeouts;
                match key {
                    "invite_interval" => t.invite_interval = d,
                    "ck_interval" if d > Duration::from_secs(60) => {
                        return Err(self.bad(key, value, "at most 60 s (peers expect it)"))
                    }
                    "ck_interval" => t.ck_interval = d,
                    "initiator_timeout" => t.initiator_timeout = d,
                    _ => t.responder_timeout = d,
                }
            }
        }
        Ok(())
    }

    fn name(&self, key: &str, value: &str) -> Result<String, Error> {
        if value.is_empty() {
            return Err(self.bad(key, value, "must not be empty"));
        }
        if value.chars().any(char::is_control) {
            return Err(self.bad(key, value, "control characters are not allowed"));
        }
        Ok(value.to_string())
    }

    fn names(&self, key: &str, value: &str) -> Result<Vec<String>, Error> {
        list(value).map(|v| self.name(key, v)).collect()
    }

    fn port(&self, key: &str, value: &str) -> Result<u16, Error> {
        match value.parse::<u16>() {
            Ok(p) if p > 0 && p < u16::MAX => Ok(p),
            _ => Err(self.bad(key, value, "a UDP port from 1 to 65534")),
        }
    }

    fn bool(&self, key: &str, value: &str) -> Result<bool, Error> {
        match value.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true),
            "no" | "false" | "off" | "0" => Ok(false),
            _ => Err(self.bad(key, value, "use yes or no")),
        }
    }
}

/// Items of a list value: separated by commas and/or whitespace.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// `10`, `10s`, `2.5s`, `500ms`: greater than zero, at most an hour.
fn duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    let secs = number.trim().parse::<f64>().ok()? * scale;
    (secs > 0.0 && secs <= 3600.0).then(|| Duration::from_secs_f64(secs))
}

/// Parses the text of a configuration file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<File, Error> {
    let mut parser = Parser {
        file,
        line: 0,
        out: File::default(),
    };
    let mut section: Option<(Section, String)> = None;
    let mut pending: Option<Pending> = None;
    let mut seen_sections = BTreeSet::new();
    let mut seen_keys = BTreeSet::new();
    // Editors on other systems may add a byte-order mark and CR LF line ends.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        parser.line = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header
                .strip_suffix(']')
                .ok_or_else(|| parser.err(ErrorKind::Syntax(line.into())))?
                .trim();
            let (kind, name) = match header.split_once(char::is_whitespace) {
                Some((kind, name)) => (kind, unquote(name.trim())),
                None => (header, ""),
            };
            let found = Section::from_name(kind)
                .ok_or_else(|| parser.err(ErrorKind::UnknownSection(kind.into())))?;
            if found.named() == name.is_empty() {
                return Err(parser.err(ErrorKind::SectionName {
                    section: kind.into(),
                    wants_name: found.named(),
                }));
            }
            // A name may appear once per kind; `[export x]` and `[connect x]` may coexist.
            let label = if name.is_empty() {
                kind.to_string()
            } else {
                format!("{kind} {name}")
            };
            if !seen_sections.insert(label.clone()) {
                return Err(parser.err(ErrorKind::DuplicateSection(label)));
            }
            parser.finish(pending.take())?;
            if found.named() {
                parser.name("section name", name)?;
                pending = Some(Pending {
                    kind: found,
                    name: name.to_string(),
                    line: parser.line,
                    host: None,
                    port: None,
                    local_port: None,
                    alsa_port: None,
                    keep_connected: None,
                });
            }
            section = Some((found, label));
            seen_keys.clear();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(parser.err(ErrorKind::Syntax(line.into())));
        };
        let (key, value) = (key.trim(), unquote(value.trim()));
        let Some((kind, label)) = &section else {
            return Err(parser.err(ErrorKind::KeyOutsideSection(key.into())));
        };
        if !kind.keys().contains(&key) {
            return Err(parser.err(ErrorKind::UnknownKey {
                key: key.into(),
                section: label.clone(),
            }));
        }
        if *kind == Section::Listener && key == "alsa_port" {
            return Err(parser.err(ErrorKind::NotSupported {
                key: key.into(),
                section: label.clone(),
                why: "its sessions get ALSA ports of their own, as on the main port",
            }));
        }
        if !seen_keys.insert(key.to_string()) {
            return Err(parser.err(ErrorKind::DuplicateKey {
                key: key.into(),
                section: label.clone(),
            }));
        }
        parser.set(*kind, pending.as_mut(), key, value)?;
    }
    parser.line = text.lines().count();
    parser.finish(pending.take())?;
    check_ports(&parser)?;
    Ok(parser.out)
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Every session server needs ports N and N+1 to itself.
fn check_ports(parser: &Parser<'_>) -> Result<(), Error> {
    let out = &parser.out;
    let mut used = vec![(
        out.port.unwrap_or(DEFAULT_PORT),
        "[general] port".to_string(),
    )];
    let own = out
        .exports
        .iter()
        .filter_map(|e| e.port.map(|p| (p, format!("[export {}]", e.name))))
        .chain(
            out.listeners
                .iter()
                .map(|l| (l.port, format!("[listener {}]", l.name))),
        );
    for (port, what) in own {
        if let Some((other_port, other)) = used.iter().find(|(p, _)| port.abs_diff(*p) < 2) {
            return Err(parser.at(
                0,
                ErrorKind::PortClash {
                    what,
                    port,
                    other: other.clone(),
                    other_port: *other_port,
                },
            ));
        }
        used.push((port, what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Error {
        parse("rtpmidid.conf", text).expect_err(text)
    }

    fn options(args: &str) -> Options {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        match crate::cli::parse(&args) {
            Ok(crate::cli::Command::Run(o)) => *o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_file() {
        let f = parse(
            "x",
            "# comment\n; another\n[general]\nname = \"Stage Left\"\nalsa_name = rtp\nport = 6000\n\
             bind = 127.0.0.1, ::1\nlog_level = debug\ncontrol = /tmp/c.sock\n\
             [hub]\nenabled = yes\n[connect piano]\nhost = 10.0.0.2\nport = 5008\n\
             local_port = Piano In\n[export synth]\nalsa_port = 20:0\nport = 6010\n\
             [listener drums]\nport = 6020\n[mdns]\nenabled = no\ninterfaces = eth0 wlan0\n\
             include = Stage*\nexclude = *test*, Mac?\n[timeouts]\ninvite_interval = 250ms\n\
             invite_attempts = 3\nck_interval = 2.5s\nck_max_missed = 5\n\
             initiator_timeout = 20\nresponder_timeout = 120s\n[journal]\nenabled = off\n",
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("Stage Left"));
        assert_eq!(f.port, Some(6000));
        assert_eq!(f.bind.len(), 2);
        assert_eq!(f.log_level, Some(LevelFilter::Debug));
        assert_eq!(f.hub, Some(true));
        assert_eq!(
            f.connect,
            vec![Connection {
                name: "piano".into(),
                host: "10.0.0.2".into(),
                port: 5008,
                local_port: Some("Piano In".into()),
                keep_connected: None,
            }]
        );
        assert_eq!(f.exports[0].port, Some(6010));
        assert_eq!(f.listeners[0].port, 6020);
        assert!(!f.mdns.enabled);
        assert_eq!(f.mdns.interfaces, ["eth0", "wlan0"]);
        assert_eq!(f.mdns.exclude, ["*test*", "Mac?"]);
        assert_eq!(f.timeouts.invite_interval, Duration::from_millis(250));
        assert_eq!(f.timeouts.ck_interval, Duration::from_millis(2500));
        assert_eq!(f.timeouts.initiator_timeout, Duration::from_secs(20));
        assert_eq!(f.timeouts.ck_max_missed, 5);
        assert_eq!(f.journal, Some(false));
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        let f = parse("x", "\u{feff}[general]\r\nport = 6000\r\n").unwrap();
        assert_eq!(f.port, Some(6000));
    }

    #[test]
    fn the_example_file_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/rtpmidid.conf.example");
        let text = std::fs::read_to_string(path).unwrap();
        // Every option is there, commented out: the file as shipped sets nothing...
        assert_eq!(parse("example", &text).unwrap(), File::default());
        // ...and with the comment marks of its settings removed, every option parses.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("#[")
                    .map(|s| format!("[{s}"))
                    .unwrap_or_else(|| match l.strip_prefix('#') {
                        Some(s) if s.contains(" = ") && !s.starts_with(' ') => s.to_string(),
                        _ => l.to_string(),
                    })
            })
            .map(|l| l + "\n")
            .collect();
        let f = parse("example", &uncommented).unwrap();
        assert!(f.name.is_some() && f.alsa_name.is_some() && f.port.is_some());
        assert!(!f.bind.is_empty() && f.log_level.is_some() && f.control.is_some());
        assert!(f.hub.is_some() && f.journal.is_some());
        assert!(!f.connect.is_empty() && !f.exports.is_empty() && !f.listeners.is_empty());
        assert_ne!(f.mdns, Mdns::default());
        // The defaults it documents are the code's.
        assert_eq!(f.timeouts, Timeouts::default());
        for section in [
            "general", "hub", "connect", "export", "listener", "mdns", "timeouts",
        ] {
            let keys = Section::from_name(section).unwrap().keys();
            for key in keys {
                assert!(
                    uncommented.contains(&format!("\n{key} = ")),
                    "{key} undocumented"
                );
            }
        }
    }

    #[test]
    fn every_error_names_file_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "[general]\nprot = 5\n",
                "rtpmidid.conf:2: unknown key \"prot\" in [general]",
            ),
            ("\n[genral]\n", "rtpmidid.conf:2: unknown section [genral]"),
            (
                "[general]\nport 5004\n",
                "rtpmidid.conf:2: expected [section]",
            ),
            ("[general\n", "rtpmidid.conf:1: expected [section]"),
            (
                "port = 5\n",
                "rtpmidid.conf:1: key \"port\" before any [section]",
            ),
            ("[connect]\n", "rtpmidid.conf:1: [connect] needs a name"),
            ("[hub x]\n", "rtpmidid.conf:1: [hub] takes no name"),
            (
                "[hub]\n[hub]\n",
                "rtpmidid.conf:2: section [hub] appears twice",
            ),
            (
                "[connect a]\nhost=h\n[connect a]\nhost=h\n",
                ":3: section [connect a] appears twice",
            ),
            (
                "[general]\nport=1\nport=2\n",
                ":3: key \"port\" appears twice in [general]",
            ),
            ("[general]\nport = 0\n", ":2: bad value \"0\" for \"port\""),
            ("[general]\nport = 65535\n", ":2: bad value"),
            ("[general]\nport = x\n", ":2: bad value"),
            (
                "[general]\nbind = 1.2.3\n",
                ":2: bad value \"1.2.3\" for \"bind\"",
            ),
            ("[general]\nlog_level = loud\n", ":2: bad value \"loud\""),
            ("[general]\ncontrol = run/x\n", ":2: bad value"),
            (
                "[general]\nname =\n",
                ":2: bad value \"\" for \"name\": must not be empty",
            ),
            (
                "[hub]\nenabled = maybe\n",
                ":2: bad value \"maybe\" for \"enabled\": use yes or no",
            ),
            ("[connect a]\nhost = a b\n", ":2: bad value"),
            (
                "[connect p]\nport = 5004\n",
                ":1: [connect p] needs a \"host\" key",
            ),
            (
                "[export e]\nport = 6000\n",
                ":1: [export e] needs a \"alsa_port\" key",
            ),
            ("[listener l]\n\n", ":1: [listener l] needs a \"port\" key"),
            (
                "[listener l]\nport = 7000\nalsa_port = 20:0\n",
                ":3: \"alsa_port\" in [listener l] is not supported yet",
            ),
            (
                "[timeouts]\nck_interval = 61\n",
                ":2: bad value \"61\" for \"ck_interval\": at most 60",
            ),
            ("[timeouts]\nck_interval = 0\n", ":2: bad value"),
            ("[timeouts]\ninvite_interval = soon\n", ":2: bad value"),
            ("[timeouts]\ninvite_attempts = 0\n", ":2: bad value"),
            (
                "[timeouts]\nck_timeout = 5\n",
                ":2: unknown key \"ck_timeout\" in [timeouts]",
            ),
            ("[mdns]\ninclude = a\u{1}\n", ":2: bad value"),
            (
                "[listener l]\nport = 5005\n",
                "[listener l]: UDP port 5005 clashes with [general] port (port 5004)",
            ),
            (
                "[listener l]\nport = 7000\n[export e]\nalsa_port=x\nport=7001\n",
                "[listener l]: UDP port 7000 clashes with [export e] (port 7001)",
            ),
        ];
        for (text, want) in cases {
            let e = err(text).to_string();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
            assert!(e.starts_with("rtpmidid.conf"), "{e}");
        }
        let e = read(Path::new("/nonexistent/rtpmidid.conf")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/rtpmidid.conf: cannot read"));
    }

    #[test]
    fn command_line_overrides_the_file() {
        let file = parse(
            "x",
            "[general]\nname = File\nport = 6000\nbind = 10.0.0.1\nlog_level = info\n\
             control = /tmp/file.sock\n[hub]\nenabled = no\n[mdns]\nenabled = yes\n\
             [connect a]\nhost = h1\n[connect b]\nhost = h2\n",
        )
        .unwrap();
        let s = resolve(&options(""), &file, || "host".into());
        assert_eq!((s.name.as_str(), s.port), ("File", 6000));
        assert_eq!(s.log_level, LevelFilter::Info);
        assert_eq!(s.control, PathBuf::from("/tmp/file.sock"));
        assert!(!s.hub && s.mdns.enabled);

        let s = resolve(
            &options(
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
            resolve(&options("-q"), &file, || "h".into()).log_level,
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
        let s = resolve(&options("-C c@h3:5004"), &file, || "h".into());
        assert!(s.keep_connected);
        assert_eq!((s.playout_delay, s.sysex_rate), (Some(20), Some(3125)));
        assert_eq!(s.export_auto, Some(AutoExport::parse("all:key").unwrap()));
        // A section's own key wins over [general]; -C connections follow [general].
        let keep: Vec<_> = s.connect.iter().map(|c| c.keep_connected).collect();
        assert_eq!(keep, [Some(true), Some(false), Some(true)]);

        // The command line wins.
        let s = resolve(
            &options("--keep-connected --playout-delay 5 --export-auto hardware --sysex-rate 100"),
            &file,
            || "h".into(),
        );
        assert_eq!((s.playout_delay, s.sysex_rate), (Some(5), Some(100)));
        assert_eq!(s.export_auto, Some(AutoExport::parse("hardware").unwrap()));
        assert!(s.connect.iter().all(|c| c.keep_connected == Some(true)));
        // Nothing said anywhere: nothing kept, no delay.
        let s = resolve(&options(""), &File::default(), || "h".into());
        assert!(!s.keep_connected && s.playout_delay.is_none() && s.export_auto.is_none());

        for (text, want) in [
            (
                "[general]\nkeep_connected = perhaps\n",
                ":2: bad value \"perhaps\"",
            ),
            (
                "[general]\n\nplayout_delay = 0\n",
                ":3: bad value \"0\" for \"playout_delay\"",
            ),
            (
                "[general]\nplayout_delay = 5001\n",
                "milliseconds from 1 to 5000",
            ),
            (
                "[general]\nexport_auto = usb\n",
                ":2: bad value \"usb\" for \"export_auto\": bad kind",
            ),
            ("[general]\nexport_auto = all:\n", ":2: bad value"),
            (
                "[general]\nsysex_rate = 0\n",
                ":2: bad value \"0\" for \"sysex_rate\"",
            ),
            (
                "[connect a]\nhost = h\nkeep_connected = 2\n",
                ":3: bad value",
            ),
            ("[mdns]\nkeep_connected = yes\n", ":2: unknown key"),
        ] {
            let e = err(text).to_string();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
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
    fn peer_filters_match_names_with_wildcards_in_any_case() {
        let f = |include: &[&str], exclude: &[&str]| Mdns {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Mdns::default()
        };
        assert!(Mdns::default().admits("anything"));
        let stage = f(&["Stage*", "Mac?"], &["*test*"]);
        assert!(stage.admits("Stage Left") && stage.admits("stage") && stage.admits("MacA"));
        assert!(!stage.admits("Studio") && !stage.admits("Mac") && !stage.admits("MacBook"));
        assert!(!stage.admits("Stage Test Rig"), "exclude wins");
        assert!(f(&[], &["*iphone*"]).admits("Studio"));
        assert!(!f(&[], &["*iphone*"]).admits("Ana's iPhone"));
        assert!(f(&["a*b*c"], &[]).admits("aXbYbZc") && !f(&["a*b*c"], &[]).admits("acb"));
        assert!(f(&["*"], &[]).admits("") && !f(&["?"], &[]).admits(""));
        assert!(f(&["Ünï*"], &[]).admits("üNÏcode"));
    }

    #[test]
    fn defaults_without_a_file() {
        let s = resolve(&options(""), &File::default(), || "myhost".into());
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
        let c = resolve(&options(""), &file, || "h".into()).session_config();
        assert_eq!(c.ck_interval, Duration::from_secs(5));
        assert_eq!(c.invite_attempts, 2);
        assert!(!c.journal);
    }

    fn settings(text: &str) -> Settings {
        resolve(&options(""), &parse("x", text).unwrap(), || "h".into())
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let old = settings("[connect a]\nhost = h1\n[connect b]\nhost = h2\n");
        assert_eq!(diff(&old, &old), vec![]);
        let new = settings(
            "[connect a]\nhost = h1\n[connect b]\nhost = h2b\n[connect c]\nhost = h3\n\
             [hub]\nenabled = yes\n",
        );
        let b2 = new.connect[1].clone();
        let c = new.connect[2].clone();
        assert_eq!(
            diff(&old, &new),
            vec![
                Action::Disconnect("b".into()),
                Action::Connect(b2),
                Action::Connect(c),
                Action::SetHub(true)
            ]
        );
        let fewer = settings("[connect b]\nhost = h2\n");
        assert_eq!(diff(&old, &fewer), vec![Action::Disconnect("a".into())]);
    }

    #[test]
    fn command_line_connections_survive_reloads() {
        let cli = options("-C keep@h9:9000 --hub");
        let old = resolve(
            &cli,
            &parse("x", "[connect a]\nhost = h1\n").unwrap(),
            || "h".into(),
        );
        let new = resolve(&cli, &parse("x", "[hub]\nenabled = no\n").unwrap(), || {
            "h".into()
        });
        // The file's connection goes; the command line's stays, and so does --hub.
        assert_eq!(diff(&old, &new), vec![Action::Disconnect("a".into())]);
    }

    #[test]
    fn diff_of_names_options_and_restart_only_settings() {
        let old = settings("[general]\nname = A\n");
        let new = settings(
            "[general]\nname = B\nalsa_name = x\nport = 6000\nbind = ::1\nlog_level = info\n\
             control = /tmp/x\n[export e]\nalsa_port = 1:0\n[listener l]\nport = 7000\n\
             [mdns]\nenabled = no\n",
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                Action::SessionConfig,
                Action::SetLogLevel(LevelFilter::Info),
                Action::Bridge("alsa_name"),
                Action::Bridge("[export]"),
                Action::AddListener(new.listeners[0].clone()),
                Action::Bridge("[mdns]"),
                Action::NeedsRestart("port"),
                Action::NeedsRestart("bind"),
                Action::NeedsRestart("control"),
            ]
        );
        let timeouts = settings("[general]\nname = A\n[timeouts]\nck_interval = 3\n");
        assert_eq!(diff(&old, &timeouts), vec![Action::SessionConfig]);
    }
}
