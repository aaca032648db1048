//! Reading the file: `[section]` or `[section NAME]` headers, `key = value` lines, full-line
//! comments starting with `#` or `;`. Values are taken as written (outer whitespace trimmed,
//! surrounding double quotes removed). Every error names the file and the line.
use std::collections::BTreeSet;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use protocol::midi2::session::ClientAuth;

use super::keys::{self, Draft, Section, SectionKeys};
use super::{Connection, Export, File, Listener, RawMidi};
use crate::options::{self, DEFAULT_PORT};

/// A bigger file is surely not a configuration file.
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Characters of the file's text an error quotes; the rest is cut.
const MAX_QUOTED: usize = 80;

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
    /// Not text the parser can read: not UTF-8, or UTF-16.
    Encoding(&'static str),
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
        /// `None`: a secret, not quoted.
        value: Option<String>,
        why: String,
    },
    MissingKey {
        key: String,
        section: String,
    },
    /// A key that does not go with the others of its section, or lacks one it needs.
    Inconsistent {
        key: String,
        section: String,
        why: String,
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
            ErrorKind::Encoding(why) => write!(f, "{why}; save the file as UTF-8"),
            ErrorKind::Syntax(text) => {
                write!(
                    f,
                    "expected [section] or key = value, found {:?}",
                    Quoted(text)
                )
            }
            ErrorKind::UnknownSection(s) => write!(f, "unknown section [{}]", Quoted(s)),
            ErrorKind::SectionName {
                section,
                wants_name: true,
            } => write!(f, "[{section}] needs a name: [{section} NAME]"),
            ErrorKind::SectionName { section, .. } => write!(f, "[{section}] takes no name"),
            ErrorKind::DuplicateSection(s) => write!(f, "section [{s}] appears twice"),
            ErrorKind::KeyOutsideSection(k) => {
                write!(f, "key {:?} before any [section]", Quoted(k))
            }
            ErrorKind::UnknownKey { key, section } => {
                write!(f, "unknown key {:?} in [{section}]", Quoted(key))
            }
            ErrorKind::DuplicateKey { key, section } => {
                write!(f, "key {key:?} appears twice in [{section}]")
            }
            ErrorKind::NotSupported { key, section, why } => {
                write!(f, "{key:?} in [{section}] is not supported yet: {why}")
            }
            ErrorKind::BadValue {
                key,
                value: Some(value),
                why,
            } => {
                write!(f, "bad value {:?} for {key:?}: {why}", Quoted(value))
            }
            ErrorKind::BadValue {
                key,
                value: None,
                why,
            } => write!(f, "bad value for {key:?} (not shown): {why}"),
            ErrorKind::MissingKey { key, section } => {
                write!(f, "[{section}] needs a {key:?} key")
            }
            ErrorKind::Inconsistent { key, section, why } => {
                write!(f, "{key:?} in [{section}]: {why}")
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

/// Reads and parses the file at `path`: a regular file, opened without blocking, so a FIFO or
/// a device given by mistake cannot hang the start or a reload.
pub fn read(path: &Path) -> Result<File, Error> {
    let shown = path.display().to_string();
    let error = |line, kind| Error {
        file: shown.clone(),
        line,
        kind,
    };
    let bytes = read_regular(path).map_err(|e| error(0, ErrorKind::Read(e)))?;
    let text = decode(&bytes).map_err(|(line, why)| error(line, ErrorKind::Encoding(why)))?;
    parse(&shown, text)
}

fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let kind = file.metadata().map_err(|e| e.to_string())?.file_type();
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a folder"
    } else {
        ""
    };
    if !what.is_empty() {
        return Err(format!("{what}, not a regular file"));
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("larger than {MAX_FILE_SIZE} bytes"));
    }
    Ok(bytes)
}

/// The file's bytes as UTF-8 text, or the line where they are not.
fn decode(bytes: &[u8]) -> Result<&str, (usize, &'static str)> {
    let line_at = |at: usize| bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err((1, "UTF-16 text (a byte-order mark FF FE or FE FF)"));
    }
    // UTF-16 without a mark: ASCII characters come with a NUL byte each.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err((line_at(at), "a NUL byte (UTF-16 text?)"));
    }
    std::str::from_utf8(bytes).map_err(|e| (line_at(e.valid_up_to()), "not UTF-8 text"))
}

/// Text from the file as an error quotes it: cut after [`MAX_QUOTED`] characters, so a huge
/// line is not echoed whole.
struct Quoted<'a>(&'a str);

impl Quoted<'_> {
    /// The text kept, and whether some was cut.
    fn kept(&self) -> (&str, bool) {
        match self.0.char_indices().nth(MAX_QUOTED) {
            None => (self.0, false),
            Some((cut, _)) => (&self.0[..cut], true),
        }
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, cut) = self.kept();
        write!(f, "{text}{}", if cut { "..." } else { "" })
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, cut) = self.kept();
        write!(f, "{text:?}{}", if cut { "..." } else { "" })
    }
}

/// A named section being read: its keys are checked when it ends.
struct Pending {
    kind: Section,
    name: String,
    line: usize,
}

struct Parser<'a> {
    file: &'a str,
    line: usize,
    draft: Draft,
    /// The line of each key read: (section label, key, line), for errors found later.
    key_lines: Vec<(String, String, usize)>,
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

    /// The line of `key` in section `label` (0 if it is not there).
    fn line_of(&self, label: &str, key: &str) -> usize {
        self.key_lines
            .iter()
            .find(|(l, k, _)| l == label && k == key)
            .map_or(0, |(_, _, line)| *line)
    }

    /// `key` of section `label` does not go with the rest of it.
    fn inconsistent(&self, label: &str, key: &str, why: impl Into<String>) -> Error {
        self.at(
            self.line_of(label, key),
            ErrorKind::Inconsistent {
                key: key.into(),
                section: label.into(),
                why: why.into(),
            },
        )
    }

    /// Ends the named section `pending`: its required keys are there, it joins the file.
    fn finish(&mut self, pending: Option<Pending>) -> Result<(), Error> {
        let Some(p) = pending else { return Ok(()) };
        let mut keys = std::mem::take(&mut self.draft.section);
        let credentials = match p.kind {
            Section::Connect => self.credentials(&p, &mut keys)?,
            _ => None,
        };
        let missing = |key: &str| Error {
            file: self.file.to_string(),
            line: p.line,
            kind: ErrorKind::MissingKey {
                key: key.into(),
                section: format!("{} {}", p.kind.name(), p.name),
            },
        };
        let file = &mut self.draft.file;
        match p.kind {
            Section::Connect => file.connect.push(Connection {
                host: keys.host.ok_or_else(|| missing("host"))?,
                name: p.name,
                port: keys.port.unwrap_or(DEFAULT_PORT),
                alsa_port_name: keys.alsa_port_name,
                keep_connected: keys.keep_connected,
                midi2: keys.midi2,
                credentials,
            }),
            Section::Export => file.exports.push(Export {
                alsa_port: keys.alsa_port.ok_or_else(|| missing("alsa_port"))?,
                name: p.name,
                port: keys.port,
            }),
            Section::Listener => file.listeners.push(Listener {
                port: keys.port.ok_or_else(|| missing("port"))?,
                name: p.name,
                admission: keys.admission,
            }),
            Section::RawMidi => {
                let remote = match (keys.host, keys.remote_port) {
                    (Some(host), port) => Some((host, port.unwrap_or(DEFAULT_PORT))),
                    (None, Some(_)) => return Err(missing("host")),
                    (None, None) => None,
                };
                file.rawmidi.push(RawMidi {
                    device: keys.device.ok_or_else(|| missing("device"))?,
                    name: p.name,
                    port: keys.port,
                    remote,
                })
            }
            _ => {}
        }
        Ok(())
    }

    /// A `[connect]` section's `secret`, or `user` and `password`: Network MIDI 2.0 only,
    /// one kind or the other.
    fn credentials(
        &self,
        p: &Pending,
        keys: &mut SectionKeys,
    ) -> Result<Option<ClientAuth>, Error> {
        let label = format!("{} {}", p.kind.name(), p.name);
        let given = [
            ("secret", &keys.secret),
            ("user", &keys.user),
            ("password", &keys.password),
        ];
        let Some((first, _)) = given.into_iter().find(|(_, value)| value.is_some()) else {
            return Ok(None);
        };
        if !keys.midi2 {
            return Err(self.inconsistent(&label, first, "only with protocol = midi2"));
        }
        match (keys.secret.take(), keys.user.take(), keys.password.take()) {
            (Some(secret), None, None) => Ok(Some(ClientAuth::Secret(secret))),
            (Some(_), _, _) => Err(self.inconsistent(
                &label,
                "secret",
                "give a secret or a user and password, not both",
            )),
            (None, Some(user), Some(password)) => Ok(Some(ClientAuth::User { user, password })),
            (None, Some(_), None) => Err(self.inconsistent(&label, "user", "needs a password")),
            (None, None, _) => Err(self.inconsistent(&label, "password", "needs a user")),
        }
    }

    /// `[midi2] auth` names a method whose data the section has.
    fn check_midi2(&self) -> Result<(), Error> {
        match self.draft.file.midi2.auth_missing() {
            Some(key) => Err(self.inconsistent(
                "midi2",
                "auth",
                format!(
                    "auth = {} needs a {key:?} key",
                    self.draft.file.midi2.auth_method().name()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Parses the text of a configuration file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<File, Error> {
    let mut parser = Parser {
        file,
        line: 0,
        draft: Draft::default(),
        key_lines: Vec::new(),
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
            if found.named() {
                options::name(name)
                    .map_err(|why| parser.err(bad("section name", Some(name), why)))?;
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
                pending = Some(Pending {
                    kind: found,
                    name: name.to_string(),
                    line: parser.line,
                });
            }
            section = Some((found, label));
            seen_keys.clear();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(parser.err(ErrorKind::Syntax(not_key_value(line))));
        };
        let (key, value) = (key.trim(), unquote(value.trim()));
        let Some((kind, label)) = &section else {
            return Err(parser.err(ErrorKind::KeyOutsideSection(key.into())));
        };
        let Some(found) = keys::find(*kind, key) else {
            return Err(parser.err(ErrorKind::UnknownKey {
                key: key.into(),
                section: label.clone(),
            }));
        };
        if let Some(why) = found.unsupported {
            return Err(parser.err(ErrorKind::NotSupported {
                key: key.into(),
                section: label.clone(),
                why,
            }));
        }
        if !seen_keys.insert(key.to_string()) {
            return Err(parser.err(ErrorKind::DuplicateKey {
                key: key.into(),
                section: label.clone(),
            }));
        }
        let shown = (!found.hidden).then_some(value);
        (found.set)(&mut parser.draft, value).map_err(|why| parser.err(bad(key, shown, why)))?;
        parser
            .key_lines
            .push((label.clone(), key.to_string(), parser.line));
    }
    parser.line = text.lines().count();
    parser.finish(pending.take())?;
    parser.check_midi2()?;
    check_ports(&parser)?;
    Ok(parser.draft.file)
}

fn bad(key: &str, value: Option<&str>, why: String) -> ErrorKind {
    ErrorKind::BadValue {
        key: key.into(),
        value: value.map(String::from),
        why,
    }
}

/// A line without `=`, as its error quotes it: only the name when it starts with that of a
/// secret's key (`password pw`).
fn not_key_value(line: &str) -> String {
    match keys::KEYS
        .iter()
        .find(|k| k.hidden && line.starts_with(k.name))
    {
        Some(k) => format!("{} (the rest not shown)", k.name),
        None => line.into(),
    }
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Every session server needs ports N and N+1 to itself.
fn check_ports(parser: &Parser<'_>) -> Result<(), Error> {
    let out = &parser.draft.file;
    let mut used = vec![(
        out.port.unwrap_or(DEFAULT_PORT),
        "[general] port".to_string(),
    )];
    let own = out
        .exports
        .iter()
        .filter_map(|e| e.port.map(|p| (p, format!("export {}", e.name))))
        .chain(
            out.listeners
                .iter()
                .map(|l| (l.port, format!("listener {}", l.name))),
        )
        .chain(
            out.rawmidi
                .iter()
                .filter_map(|r| r.port.map(|p| (p, format!("rawmidi {}", r.name)))),
        );
    for (port, label) in own {
        let what = format!("[{label}]");
        if let Some((other_port, other)) = used.iter().find(|(p, _)| port.abs_diff(*p) < 2) {
            return Err(parser.at(
                parser.line_of(&label, "port"),
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
    use std::time::Duration;

    use log::LevelFilter;

    use super::*;

    fn err(text: &str) -> Error {
        parse("rtpmidid.conf", text).expect_err(text)
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
                alsa_port_name: Some("Piano In".into()),
                keep_connected: None,
                midi2: false,
                credentials: None,
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
    fn values_of_command_line_options_are_checked_in_the_file_too() {
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
    }

    /// A scratch folder for files of odd kinds, removed at the end.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("rtpmidid-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        let dir = Scratch::new("conf-kinds");
        let fifo = dir.0.join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read(&fifo).unwrap_err().to_string();
        assert!(
            e.ends_with("fifo.conf: cannot read: a FIFO, not a regular file"),
            "{e}"
        );
        let e = read(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("a device, not a regular file"), "{e}");
        let e = read(&dir.0).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        let big = dir.file("big.conf", &vec![b'#'; MAX_FILE_SIZE as usize + 1]);
        let e = read(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_with_its_line() {
        let dir = Scratch::new("conf-encoding");
        let latin1 = dir.file("a.conf", b"[general]\n# caf\xe9\nname = x\n");
        let e = read(&latin1).unwrap_err().to_string();
        assert!(
            e.ends_with("a.conf:2: not UTF-8 text; save the file as UTF-8"),
            "{e}"
        );
        let utf16: Vec<u8> = "[general]\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let marked = dir.file("b.conf", &[&[0xff, 0xfe][..], &utf16].concat());
        let e = read(&marked).unwrap_err().to_string();
        assert!(e.contains("b.conf:1: UTF-16 text"), "{e}");
        let unmarked = dir.file("c.conf", &[b"# ascii\n".as_slice(), &utf16].concat());
        let e = read(&unmarked).unwrap_err().to_string();
        assert!(e.contains("c.conf:2: a NUL byte"), "{e}");
        let fine = dir.file("d.conf", "[general]\nname = Café\n".as_bytes());
        assert_eq!(read(&fine).unwrap().name.as_deref(), Some("Café"));
    }

    #[test]
    fn a_huge_line_is_not_echoed_whole() {
        // 50 MB once; 1 MB elsewhere, which is already far past what an error may quote.
        let huge = "x".repeat(1 << 20);
        for text in [
            format!("[general]\nname = {}\n", "x".repeat(50 << 20)),
            format!("[general]\n{huge}\n"),
            format!("[general]\n{huge} = 1\n"),
            format!("[{huge}]\n"),
            format!("[connect {huge}]\n"),
        ] {
            let e = err(&text).to_string();
            assert!(e.starts_with("rtpmidid.conf:"), "{}", &e[..100]);
            assert!(e.len() < 300, "{} bytes: {}...", e.len(), &e[..100]);
        }
    }

    #[test]
    fn names_and_durations_beyond_what_peers_take_are_refused() {
        let long = "n".repeat(64);
        for (text, want) in [
            (format!("[general]\nname = {long}\n"), ":2: bad value"),
            (format!("[general]\nalsa_name = {long}\n"), ":2: bad value"),
            (format!("[connect {long}]\nhost = h\n"), ":1: bad value"),
            (format!("[listener {long}]\nport = 7000\n"), ":1: bad value"),
            (
                format!("[connect a]\nhost = h\nlocal_port = {long}\n"),
                ":3: bad value",
            ),
            (
                "[mdns]\ninterfaces = eth0 averyverylongname0\n".into(),
                ":2: bad value",
            ),
            (
                "[timeouts]\nck_interval = 0.000000001\n".into(),
                ":2: bad value",
            ),
            (
                "[timeouts]\ninvite_interval = 1ms\n".into(),
                ":2: bad value",
            ),
            (
                "[timeouts]\nresponder_timeout = 1e-9\n".into(),
                ":2: bad value",
            ),
        ] {
            let e = err(&text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = err(&format!("[general]\nname = {long}\n")).to_string();
        assert!(e.contains("at most 63 bytes"), "{e}");
        assert!(parse("x", &format!("[general]\nname = {}\n", &long[1..])).is_ok());
    }

    #[test]
    fn midi2_auth_defaults_to_what_the_section_has() {
        use protocol::midi2::session::HostAuth;
        let host = |text: &str| parse("x", text).unwrap().midi2.host_auth();
        assert_eq!(host(""), HostAuth::None);
        assert_eq!(host("[midi2]\nsecret = s\n"), HostAuth::Secret("s".into()));
        let alice = vec![("alice".to_string(), "p:w".to_string())];
        assert_eq!(
            host("[midi2]\nsecret = s\nusers = alice:p:w\n"),
            HostAuth::Users(alice.clone())
        );
        // Said outright: the method named, whatever else is there.
        let both = "secret = s\nusers = alice:p:w\n";
        assert_eq!(
            host(&format!("[midi2]\nauth = secret\n{both}")),
            HostAuth::Secret("s".into())
        );
        assert_eq!(
            host(&format!("[midi2]\nauth = users\n{both}")),
            HostAuth::Users(alice)
        );
        // auth = none: the host asks nothing, the secret still serves our connections.
        let f = parse("x", &format!("[midi2]\nauth = none\n{both}")).unwrap();
        assert_eq!(f.midi2.host_auth(), HostAuth::None);
        assert_eq!(f.midi2.client_auth(), ClientAuth::Secret("s".into()));
    }

    #[test]
    fn midi2_auth_without_its_data_is_refused_at_its_line() {
        for (text, want) in [
            (
                "[midi2]\n\nauth = secret\nusers = a:b\n",
                "rtpmidid.conf:3: \"auth\" in [midi2]: auth = secret needs a \"secret\" key",
            ),
            (
                "[midi2]\nsecret = s\nauth = users\n[hub]\n",
                "rtpmidid.conf:3: \"auth\" in [midi2]: auth = users needs a \"users\" key",
            ),
            (
                "[midi2]\nauth = password\n",
                "rtpmidid.conf:2: bad value \"password\" for \"auth\": none, secret or users",
            ),
        ] {
            assert_eq!(err(text).to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn connection_credentials() {
        let conn = |keys: &str| {
            let text = format!("[connect a]\nhost = h\nprotocol = midi2\n{keys}");
            parse("x", &text).map(|f| f.connect[0].credentials.clone())
        };
        assert_eq!(conn(""), Ok(None));
        assert_eq!(
            conn("secret = s3cret\n"),
            Ok(Some(ClientAuth::Secret("s3cret".into())))
        );
        assert_eq!(
            conn("user = alice\npassword = pass word\n"),
            Ok(Some(ClientAuth::User {
                user: "alice".into(),
                password: "pass word".into()
            }))
        );
        // The target the daemon connects to carries them.
        let f = parse("x", "[connect a]\nhost = h\nprotocol = midi2\nsecret = s\n").unwrap();
        assert_eq!(
            f.connect[0].target().credentials,
            Some(ClientAuth::Secret("s".into()))
        );
        for (text, want) in [
            (
                "[connect a]\nhost = h\nprotocol = midi2\nuser = alice\n[hub]\n",
                "rtpmidid.conf:4: \"user\" in [connect a]: needs a password",
            ),
            (
                "[connect a]\nhost = h\nprotocol = midi2\n\npassword = pw\n",
                "rtpmidid.conf:5: \"password\" in [connect a]: needs a user",
            ),
            (
                "[connect a]\nhost = h\nprotocol = midi2\nuser = u\npassword = p\nsecret = s\n",
                "rtpmidid.conf:6: \"secret\" in [connect a]: give a secret or a user and \
                 password, not both",
            ),
            (
                "[connect a]\nhost = h\nuser = u\npassword = p\n",
                "rtpmidid.conf:3: \"user\" in [connect a]: only with protocol = midi2",
            ),
        ] {
            assert_eq!(err(text).to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn errors_and_debug_output_do_not_show_secrets() {
        let long = "p".repeat(64);
        for text in [
            format!("[midi2]\nsecret = {long}\n"),
            format!("[midi2]\nusers = alice:{long}\n"),
            format!("[midi2]\nusers = alice:x, {long}\n"),
            format!("[connect a]\nhost = h\nprotocol = midi2\nsecret = {long}\n"),
            format!("[connect a]\nhost = h\nprotocol = midi2\npassword = {long}\n"),
            "[connect a]\nhost = h\nprotocol = midi2\npassword = pp\u{1}pp\n".into(),
            "[connect a]\nhost = h\nprotocol = midi2\npassword pppp\n".into(),
            "[midi2]\nsecret: pppp\n".into(),
        ] {
            let e = err(&text).to_string();
            assert!(e.contains("not shown") && !e.contains("pp"), "{e}");
        }
        let e = err(&format!("[midi2]\nusers = alice:{long}\n")).to_string();
        assert!(
            e.contains("the password of \"alice\": at most 63 bytes"),
            "{e}"
        );
        let f = parse(
            "x",
            "[midi2]\nsecret = pp-secret\nusers = alice:pp-alice\n\
             [connect a]\nhost = h\nprotocol = midi2\nuser = bob\npassword = pp-bob\n",
        )
        .unwrap();
        let shown = format!("{f:?}");
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        assert!(!shown.contains("pp-"), "{shown}");
    }

    #[test]
    fn a_file_with_secrets_that_every_user_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("conf-secrets");
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let warning = |path: &Path| crate::config::exposed_secrets(path, &read(path).unwrap());
        for secret in [
            "[midi2]\nsecret = s\n",
            "[midi2]\nusers = a:b\n",
            "[connect a]\nhost = h\nprotocol = midi2\nuser = u\npassword = p\n",
        ] {
            let path = dir.file("s.conf", secret.as_bytes());
            chmod(&path, 0o644);
            let w = warning(&path).expect(secret);
            assert!(w.contains("s.conf: every user can read") && w.contains("chmod o-r"));
            chmod(&path, 0o640);
            assert_eq!(warning(&path), None);
        }
        let plain = dir.file("p.conf", b"[midi2]\nauth = none\n");
        chmod(&plain, 0o644);
        assert_eq!(warning(&plain), None);
    }

    #[test]
    fn port_clashes_name_the_line_of_the_port() {
        let e = err("[general]\nport = 7000\n\n[listener l]\n# c\nport = 7001\n").to_string();
        assert!(
            e.starts_with(
                "rtpmidid.conf:6: [listener l]: UDP port 7001 clashes with [general] port"
            ),
            "{e}"
        );
    }
}
