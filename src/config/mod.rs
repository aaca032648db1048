//! Settings: the command line and the configuration file resolved into one [`Settings`] the
//! daemon is built from, and compared on reload into [`Action`]s.
//!
//! [`parse`] reads the file (errors name file and line), [`keys`] lists every key of it,
//! [`resolve`] merges the command line over the file over the defaults, [`diff`] turns two
//! settings into what a reload does. Values are checked by the parsers of `crate::options`,
//! the same for the command line and the file.
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use protocol::midi2::session::{ClientAuth, HostAuth};
use protocol::session;

use protocol::admission::{AddressFilter, IpNet};
use protocol::endpoint::AcceptPolicy;

use crate::options::{
    AutoExport, ConnectTarget, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_HOST,
};

mod diff;
mod keys;
mod parse;
mod resolve;
pub mod upstream;

pub use diff::{diff, Action};
#[cfg(test)]
use parse::parse;
pub use parse::{read, Error};
pub use resolve::{hostname, load, resolve, CommandLine};

/// A static connection: the daemon invites this peer and reconnects when the session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The section name, or `HOST:PORT` for an unnamed `--connect`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Name of the ALSA port for this connection (default: `name`).
    pub alsa_port_name: Option<String>,
    /// Connected whatever is subscribed to its ALSA port. In a [`File`], `None` where the
    /// section says nothing; [`resolve`] fills it in from `[general]` and the command line.
    pub keep_connected: Option<bool>,
    /// Network MIDI 2.0 rather than RTP-MIDI (`protocol = midi2`).
    pub midi2: bool,
    /// Its `secret`, or `user` and `password`, for a host that asks us to authenticate;
    /// `None`: `[midi2] secret`.
    pub credentials: Option<ClientAuth>,
}

impl Connection {
    pub fn target(&self) -> ConnectTarget {
        ConnectTarget {
            name: Some(self.name.clone()),
            host: self.host.clone(),
            port: self.port,
            midi2: self.midi2,
            credentials: self.credentials.clone(),
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
    /// Its own limits and networks; what it leaves out comes from `[general]`.
    pub admission: AdmissionKeys,
}

/// `[rawmidi NAME]`: a raw MIDI device offered to the network as session NAME, or connected
/// to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMidi {
    pub name: String,
    /// A character device or FIFO that speaks MIDI bytes.
    pub device: PathBuf,
    /// UDP port of its own; `None`: the next free pair.
    pub port: Option<u16>,
    /// The peer to connect to (`host`, `remote_port`); `None`: offered to the network.
    pub remote: Option<(String, u16)>,
}

/// `[midi2]`: the Network MIDI 2.0 host. `Debug` shows no secret or password.
#[derive(Clone, PartialEq, Eq)]
pub struct Midi2 {
    pub enabled: bool,
    /// Asked for (`port =`, `--midi2-port`): it must open. Otherwise the default port, given
    /// up with a warning when taken (another daemon has it).
    pub port: Option<u16>,
    /// What our host asks of clients (`auth =`); `None`: see [`Midi2::host_auth`].
    pub auth: Option<AuthMethod>,
    /// The shared secret clients show with `auth = secret`; our connections to other hosts
    /// show it too (those without credentials of their own).
    pub secret: Option<String>,
    /// With `auth = users`, clients log in as one of these (user, password).
    pub users: Vec<(String, String)>,
    /// Earlier UMP data commands repeated in each datagram.
    pub fec: usize,
}

/// `[midi2] auth`: what our host asks of the clients that invite it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    /// The shared `secret`.
    Secret,
    /// A user name and password of `users`.
    Users,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 3] = [AuthMethod::None, AuthMethod::Secret, AuthMethod::Users];

    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Secret => "secret",
            AuthMethod::Users => "users",
        }
    }

    pub fn parse(text: &str) -> Result<AuthMethod, String> {
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| "none, secret or users".into())
    }
}

impl Midi2 {
    /// The method our host uses: `auth`, else `users` if there are any, else `secret` if
    /// there is one, else none (what the daemon did before `auth` existed).
    pub fn auth_method(&self) -> AuthMethod {
        self.auth.unwrap_or(if !self.users.is_empty() {
            AuthMethod::Users
        } else if self.secret.is_some() {
            AuthMethod::Secret
        } else {
            AuthMethod::None
        })
    }

    /// The key the method needs and the section lacks, if any.
    pub fn auth_missing(&self) -> Option<&'static str> {
        match self.auth_method() {
            AuthMethod::Secret if self.secret.is_none() => Some("secret"),
            AuthMethod::Users if self.users.is_empty() => Some("users"),
            _ => None,
        }
    }

    /// What our host asks of clients. A method without its data (the parser refuses it)
    /// lets nobody in.
    pub fn host_auth(&self) -> HostAuth {
        match (self.auth_method(), &self.secret) {
            (AuthMethod::None, _) => HostAuth::None,
            (AuthMethod::Secret, Some(secret)) => HostAuth::Secret(secret.clone()),
            (AuthMethod::Secret, None) => HostAuth::Users(Vec::new()),
            (AuthMethod::Users, _) => HostAuth::Users(self.users.clone()),
        }
    }

    /// What a host we connect to gets when it asks us to authenticate (unless the
    /// connection has credentials of its own).
    pub fn client_auth(&self) -> ClientAuth {
        self.secret
            .clone()
            .map_or(ClientAuth::None, ClientAuth::Secret)
    }
}

impl fmt::Debug for Midi2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Midi2")
            .field("enabled", &self.enabled)
            .field("port", &self.port)
            .field("auth", &self.auth)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("fec", &self.fec)
            .finish()
    }
}

impl Default for Midi2 {
    fn default() -> Self {
        Midi2 {
            enabled: true,
            port: None,
            auth: None,
            secret: None,
            users: Vec::new(),
            fec: 3,
        }
    }
}

/// Who may open sessions with a listener, and how many: `[general]` (and the command line)
/// for the main port, exports and discovered peers; a `[listener]` may change it for itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub max_sessions: usize,
    pub max_sessions_per_host: usize,
    pub addresses: AddressFilter,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_host: DEFAULT_MAX_SESSIONS_PER_HOST,
            addresses: AddressFilter::default(),
        }
    }
}

impl Admission {
    pub fn policy(&self) -> AcceptPolicy {
        AcceptPolicy {
            max_sessions: Some(self.max_sessions),
            max_sessions_per_host: Some(self.max_sessions_per_host),
            addresses: self.addresses.clone(),
            ..AcceptPolicy::default()
        }
    }
}

/// The admission keys a section sets; `None` where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionKeys {
    pub max_sessions: Option<usize>,
    pub max_sessions_per_host: Option<usize>,
    pub allow: Option<Vec<IpNet>>,
    pub deny: Option<Vec<IpNet>>,
}

impl AdmissionKeys {
    /// These keys over `base`.
    pub fn over(&self, base: &Admission) -> Admission {
        Admission {
            max_sessions: self.max_sessions.unwrap_or(base.max_sessions),
            max_sessions_per_host: self
                .max_sessions_per_host
                .unwrap_or(base.max_sessions_per_host),
            addresses: AddressFilter {
                allow: self
                    .allow
                    .clone()
                    .unwrap_or_else(|| base.addresses.allow.clone()),
                deny: self
                    .deny
                    .clone()
                    .unwrap_or_else(|| base.addresses.deny.clone()),
            },
        }
    }
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
    pub rawmidi: Vec<RawMidi>,
    pub mdns: Mdns,
    pub timeouts: Timeouts,
    pub journal: Option<bool>,
    pub keep_connected: Option<bool>,
    /// Milliseconds.
    pub playout_delay: Option<u32>,
    pub export_auto: Option<AutoExport>,
    /// Bytes a second.
    pub sysex_rate: Option<u32>,
    pub admission: AdmissionKeys,
    pub midi2: Midi2,
}

impl File {
    /// It holds a Network MIDI 2.0 secret or password.
    pub fn holds_secrets(&self) -> bool {
        self.midi2.secret.is_some()
            || !self.midi2.users.is_empty()
            || self.connect.iter().any(|c| c.credentials.is_some())
    }
}

/// A warning when the file at `path` holds secrets or passwords and every user may read it.
pub fn exposed_secrets(path: &Path, file: &File) -> Option<String> {
    if !file.holds_secrets() {
        return None;
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "{}: every user can read the Network MIDI 2.0 secrets or passwords in it: \
             chmod o-r it (the daemon's user must still read it)",
            path.display()
        )
    })
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
    pub rawmidi: Vec<RawMidi>,
    pub mdns: Mdns,
    pub timeouts: Timeouts,
    pub journal: bool,
    /// The default of the connections; each [`Connection`] has its own, filled in.
    pub keep_connected: bool,
    pub playout_delay: Option<u32>,
    pub export_auto: Option<AutoExport>,
    pub sysex_rate: Option<u32>,
    /// Use the ALSA sequencer (no `--no-alsa`).
    pub alsa: bool,
    /// The control socket was asked for (`--control`, `control =`), so it must open; the
    /// default one may be missing.
    pub control_required: bool,
    pub admission: Admission,
    pub midi2: Midi2,
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
            hub_mark: self.hub,
            ..session::Config::default()
        }
    }

    /// Who may open sessions on `[listener NAME]` (`listener`), or on any other listener
    /// (`None`): the section's own keys over `[general]`'s.
    pub fn admission_of(&self, listener: Option<&str>) -> Admission {
        let general = &self.admission;
        listener
            .and_then(|name| self.listeners.iter().find(|s| s.name == name))
            .map_or_else(|| general.clone(), |s| s.admission.over(general))
    }

    /// A peer found by mDNS as a connection target, or why it is left alone (`[mdns]`
    /// include/exclude, allow/deny).
    pub fn discovered(
        &self,
        name: &str,
        addr: SocketAddr,
        midi2: bool,
    ) -> Result<ConnectTarget, &'static str> {
        if !self.mdns.admits(name) {
            return Err("[mdns] include/exclude");
        }
        if !self.admission.addresses.admits(addr.ip()) {
            return Err("allow/deny");
        }
        Ok(ConnectTarget {
            name: Some(name.to_string()),
            host: host_of(addr),
            port: addr.port(),
            midi2,
            credentials: None,
        })
    }
}

/// A discovered address as a host: a link-local IPv6 address keeps the interface it was
/// seen on.
fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => format!("{}%{}", v6.ip(), v6.scope_id()),
        _ => addr.ip().to_string(),
    }
}

/// The command line of these arguments, for tests.
#[cfg(test)]
fn command_line(args: &str) -> CommandLine {
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    match crate::cli::parse(&args) {
        Ok(crate::cli::Command::Run(o)) => *o,
        other => panic!("{other:?}"),
    }
}

/// The settings of this file and no command line, for tests.
#[cfg(test)]
pub fn settings(text: &str) -> Settings {
    resolve(&command_line(""), &parse("x", text).unwrap(), || "h".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_listener_section_sets_its_own_admission_over_general() {
        let s = settings(
            "[general]\nmax_sessions = 7\ndeny = 10.0.0.0/8\n\
             [listener Stage]\nport = 5010\nmax_sessions = 3\n",
        );
        let stage = s.admission_of(Some("Stage"));
        assert_eq!(stage.max_sessions, 3);
        assert_eq!(
            stage.addresses, s.admission.addresses,
            "deny comes from [general]"
        );
        assert_eq!(s.admission_of(None), s.admission);
        assert_eq!(s.admission_of(Some("Other")), s.admission);
    }

    #[test]
    fn discovered_peers_pass_the_filters_to_become_targets() {
        let s = settings("[general]\ndeny = 10.0.0.0/8\n[mdns]\nexclude = *phone*\n");
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
        let target = s
            .discovered("Studio", addr("192.168.1.5:5004"), false)
            .unwrap();
        let shown = (target.name.as_deref(), target.host.as_str(), target.port);
        assert_eq!(shown, (Some("Studio"), "192.168.1.5", 5004));
        let v6 = s.discovered("Mac", addr("[fe80::1%3]:5504"), true).unwrap();
        assert_eq!((v6.host.as_str(), v6.midi2), ("fe80::1%3", true));
        let phone = s.discovered("Ana's phone", addr("192.168.1.6:5004"), false);
        assert_eq!(phone.err(), Some("[mdns] include/exclude"));
        let denied = s.discovered("Studio", addr("10.1.1.1:5004"), false);
        assert_eq!(denied.err(), Some("allow/deny"));
    }
}
