//! Every section and key of the file, in one table: the parser takes from it which keys a
//! section has and how each value is read; the tests check against it that each key is
//! documented in `contrib/rtpmidid.conf.example` and the README.
use std::path::PathBuf;

use super::{AdmissionKeys, AuthMethod, File};
use crate::options::{self, AutoExport, MAX_CK_INTERVAL};
use Section::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    General,
    Hub,
    Connect,
    Export,
    Listener,
    Mdns,
    Timeouts,
    Journal,
    Midi2,
    RawMidi,
}

impl Section {
    pub const ALL: [Section; 10] = [
        Section::General,
        Section::Hub,
        Section::Connect,
        Section::Export,
        Section::Listener,
        Section::Mdns,
        Section::Timeouts,
        Section::Journal,
        Section::Midi2,
        Section::RawMidi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::General => "general",
            Section::Hub => "hub",
            Section::Connect => "connect",
            Section::Export => "export",
            Section::Listener => "listener",
            Section::Mdns => "mdns",
            Section::Timeouts => "timeouts",
            Section::Journal => "journal",
            Section::Midi2 => "midi2",
            Section::RawMidi => "rawmidi",
        }
    }

    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// `[connect NAME]`, `[export NAME]`, `[listener NAME]`, `[rawmidi NAME]`: one section
    /// per thing named.
    pub fn named(self) -> bool {
        matches!(
            self,
            Section::Connect | Section::Export | Section::Listener | Section::RawMidi
        )
    }
}

/// What the keys read so far go into: the file, and the keys of the named section being read
/// (checked when it ends).
#[derive(Default)]
pub struct Draft {
    pub file: File,
    pub section: SectionKeys,
}

#[derive(Default)]
pub struct SectionKeys {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub alsa_port_name: Option<String>,
    pub alsa_port: Option<String>,
    pub keep_connected: Option<bool>,
    pub midi2: bool,
    pub admission: AdmissionKeys,
    pub device: Option<PathBuf>,
    pub remote_port: Option<u16>,
    pub secret: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

pub struct Key {
    pub section: Section,
    pub name: &'static str,
    /// Why the key is refused: the format knows it, the daemon cannot apply it yet.
    pub unsupported: Option<&'static str>,
    /// Its value is a secret or holds passwords: errors do not quote it.
    pub hidden: bool,
    /// Reads the value into the draft, or says why it is refused.
    pub set: fn(&mut Draft, &str) -> Result<(), String>,
}

/// The key `name` of section `section`.
pub fn find(section: Section, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// The items of a list value: separated by commas and/or whitespace.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn list<T>(value: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    items(value)
        .map(|s| item(s).map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

const fn key(
    section: Section,
    name: &'static str,
    set: fn(&mut Draft, &str) -> Result<(), String>,
) -> Key {
    Key {
        section,
        name,
        unsupported: None,
        hidden: false,
        set,
    }
}

/// A key whose value errors do not quote.
const fn hidden(
    section: Section,
    name: &'static str,
    set: fn(&mut Draft, &str) -> Result<(), String>,
) -> Key {
    Key {
        hidden: true,
        ..key(section, name, set)
    }
}

pub static KEYS: &[Key] = &[
    key(General, "name", |d, v| {
        d.file.name = Some(options::name(v)?);
        Ok(())
    }),
    key(General, "alsa_name", |d, v| {
        d.file.alsa_name = Some(options::name(v)?);
        Ok(())
    }),
    key(General, "port", |d, v| {
        d.file.port = Some(options::port(v)?);
        Ok(())
    }),
    key(General, "bind", |d, v| {
        d.file.bind = list(v, options::address)?;
        Ok(())
    }),
    key(General, "log_level", |d, v| {
        d.file.log_level = Some(options::log_level(v)?);
        Ok(())
    }),
    key(General, "control", |d, v| {
        d.file.control = Some(options::path(v)?);
        Ok(())
    }),
    key(General, "keep_connected", |d, v| {
        d.file.keep_connected = Some(options::boolean(v)?);
        Ok(())
    }),
    key(General, "playout_delay", |d, v| {
        d.file.playout_delay = Some(options::playout_delay(v)?);
        Ok(())
    }),
    key(General, "export_auto", |d, v| {
        d.file.export_auto = Some(AutoExport::parse(v)?);
        Ok(())
    }),
    key(General, "sysex_rate", |d, v| {
        d.file.sysex_rate = Some(options::sysex_rate(v)?);
        Ok(())
    }),
    key(General, "max_sessions", |d, v| {
        d.file.admission.max_sessions = Some(options::sessions(v)?);
        Ok(())
    }),
    key(General, "max_sessions_per_host", |d, v| {
        d.file.admission.max_sessions_per_host = Some(options::sessions(v)?);
        Ok(())
    }),
    key(General, "allow", |d, v| {
        d.file.admission.allow = Some(list(v, options::network)?);
        Ok(())
    }),
    key(General, "deny", |d, v| {
        d.file.admission.deny = Some(list(v, options::network)?);
        Ok(())
    }),
    key(Hub, "enabled", |d, v| {
        d.file.hub = Some(options::boolean(v)?);
        Ok(())
    }),
    key(Connect, "host", |d, v| {
        d.section.host = Some(options::host(v)?);
        Ok(())
    }),
    key(Connect, "port", |d, v| {
        d.section.port = Some(options::port(v)?);
        Ok(())
    }),
    key(Connect, "local_port", |d, v| {
        d.section.alsa_port_name = Some(options::name(v)?);
        Ok(())
    }),
    key(Connect, "keep_connected", |d, v| {
        d.section.keep_connected = Some(options::boolean(v)?);
        Ok(())
    }),
    key(Connect, "protocol", |d, v| {
        d.section.midi2 = match v {
            "rtp-midi" => false,
            "midi2" => true,
            _ => return Err("rtp-midi or midi2".into()),
        };
        Ok(())
    }),
    hidden(Connect, "secret", |d, v| {
        d.section.secret = Some(options::credential(v)?);
        Ok(())
    }),
    key(Connect, "user", |d, v| {
        d.section.user = Some(options::credential(v)?);
        Ok(())
    }),
    hidden(Connect, "password", |d, v| {
        d.section.password = Some(options::credential(v)?);
        Ok(())
    }),
    key(Export, "alsa_port", |d, v| {
        d.section.alsa_port = Some(options::name(v)?);
        Ok(())
    }),
    key(Export, "port", |d, v| {
        d.section.port = Some(options::port(v)?);
        Ok(())
    }),
    key(Listener, "port", |d, v| {
        d.section.port = Some(options::port(v)?);
        Ok(())
    }),
    key(Listener, "max_sessions", |d, v| {
        d.section.admission.max_sessions = Some(options::sessions(v)?);
        Ok(())
    }),
    key(Listener, "max_sessions_per_host", |d, v| {
        d.section.admission.max_sessions_per_host = Some(options::sessions(v)?);
        Ok(())
    }),
    key(Listener, "allow", |d, v| {
        d.section.admission.allow = Some(list(v, options::network)?);
        Ok(())
    }),
    key(Listener, "deny", |d, v| {
        d.section.admission.deny = Some(list(v, options::network)?);
        Ok(())
    }),
    Key {
        unsupported: Some("its sessions get ALSA ports of their own, as on the main port"),
        ..key(Listener, "alsa_port", |_, _| Ok(()))
    },
    key(Mdns, "enabled", |d, v| {
        d.file.mdns.enabled = options::boolean(v)?;
        Ok(())
    }),
    key(Mdns, "interfaces", |d, v| {
        d.file.mdns.interfaces = list(v, options::interface)?;
        Ok(())
    }),
    key(Mdns, "include", |d, v| {
        d.file.mdns.include = list(v, options::name)?;
        Ok(())
    }),
    key(Mdns, "exclude", |d, v| {
        d.file.mdns.exclude = list(v, options::name)?;
        Ok(())
    }),
    key(Timeouts, "invite_interval", |d, v| {
        d.file.timeouts.invite_interval = options::duration(v)?;
        Ok(())
    }),
    key(Timeouts, "invite_attempts", |d, v| {
        d.file.timeouts.invite_attempts = options::count(v)?;
        Ok(())
    }),
    key(Timeouts, "ck_interval", |d, v| {
        let interval = options::duration(v)?;
        if interval > MAX_CK_INTERVAL {
            return Err(format!(
                "at most {} s (peers expect it)",
                MAX_CK_INTERVAL.as_secs()
            ));
        }
        d.file.timeouts.ck_interval = interval;
        Ok(())
    }),
    key(Timeouts, "ck_max_missed", |d, v| {
        d.file.timeouts.ck_max_missed = options::count(v)?;
        Ok(())
    }),
    key(Timeouts, "initiator_timeout", |d, v| {
        d.file.timeouts.initiator_timeout = options::duration(v)?;
        Ok(())
    }),
    key(Timeouts, "responder_timeout", |d, v| {
        d.file.timeouts.responder_timeout = options::duration(v)?;
        Ok(())
    }),
    key(Midi2, "enabled", |d, v| {
        d.file.midi2.enabled = options::boolean(v)?;
        Ok(())
    }),
    key(Midi2, "port", |d, v| {
        d.file.midi2.port = Some(options::port(v)?);
        Ok(())
    }),
    key(Midi2, "auth", |d, v| {
        d.file.midi2.auth = Some(AuthMethod::parse(v)?);
        Ok(())
    }),
    hidden(Midi2, "secret", |d, v| {
        d.file.midi2.secret = Some(options::credential(v)?);
        Ok(())
    }),
    // Errors name the user, never the password.
    hidden(Midi2, "users", |d, v| {
        d.file.midi2.users = items(v)
            .map(|pair| {
                let (user, password) = pair.split_once(':').ok_or("items are USER:PASSWORD")?;
                let user = options::credential(user).map_err(|e| format!("a user: {e}"))?;
                let password = options::credential(password)
                    .map_err(|e| format!("the password of {user:?}: {e}"))?;
                Ok((user, password))
            })
            .collect::<Result<_, String>>()?;
        Ok(())
    }),
    key(Midi2, "fec", |d, v| {
        d.file.midi2.fec = options::count(v)? as usize;
        Ok(())
    }),
    key(Journal, "enabled", |d, v| {
        d.file.journal = Some(options::boolean(v)?);
        Ok(())
    }),
    key(RawMidi, "device", |d, v| {
        d.section.device = Some(options::path(v)?);
        Ok(())
    }),
    key(RawMidi, "port", |d, v| {
        d.section.port = Some(options::port(v)?);
        Ok(())
    }),
    key(RawMidi, "host", |d, v| {
        d.section.host = Some(options::host(v)?);
        Ok(())
    }),
    key(RawMidi, "remote_port", |d, v| {
        d.section.remote_port = Some(options::port(v)?);
        Ok(())
    }),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Mdns, Timeouts};

    const EXAMPLE: &str = include_str!("../../contrib/rtpmidid.conf.example");
    const README: &str = include_str!("../../README.md");

    /// The example with the comment marks of its settings and headers removed.
    fn uncommented() -> String {
        EXAMPLE
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
            .collect()
    }

    #[test]
    fn the_example_file_parses() {
        // Every option is there, commented out: the file as shipped sets nothing...
        assert_eq!(parse("example", EXAMPLE).unwrap(), File::default());
        // ...and with the comment marks of its settings removed, every option parses.
        let f = parse("example", &uncommented()).unwrap();
        assert!(f.name.is_some() && f.alsa_name.is_some() && f.port.is_some());
        assert!(!f.bind.is_empty() && f.log_level.is_some() && f.control.is_some());
        assert!(f.hub.is_some() && f.journal.is_some());
        assert!(!f.connect.is_empty() && !f.exports.is_empty() && !f.listeners.is_empty());
        assert!(!f.rawmidi.is_empty());
        assert_ne!(f.mdns, Mdns::default());
        // The defaults it documents are the code's.
        assert_eq!(f.timeouts, Timeouts::default());
    }

    /// The README's line for a section: its header and its keys.
    fn readme_line(section: Section) -> String {
        let header = match section.named() {
            true => format!("[{} NAME]", section.name()),
            false => format!("[{}]", section.name()),
        };
        let keys: Vec<String> = KEYS
            .iter()
            .filter(|k| k.section == section && k.unsupported.is_none())
            .map(|k| format!("`{}`", k.name))
            .collect();
        format!("- `{header}`: {}\n", keys.join(", "))
    }

    #[test]
    fn every_key_is_in_the_readme() {
        for section in Section::ALL {
            let line = readme_line(section);
            assert!(README.contains(&line), "the README lacks {line:?}");
        }
    }

    #[test]
    fn every_key_is_documented_in_its_section() {
        let example = uncommented();
        for section in Section::ALL {
            // The section's parts of the example: from each of its headers to the next header
            // (a named section may show some keys in a second example of its kind).
            let header = format!("\n[{}", section.name());
            let text: String = example
                .match_indices(&header)
                .map(|(start, _)| {
                    let rest = &example[start + 1..];
                    &rest[..rest[1..].find("\n[").map_or(rest.len(), |end| end + 1)]
                })
                .collect();
            assert!(!text.is_empty(), "{header} missing");
            let keys = KEYS.iter().filter(|k| k.section == section);
            for key in keys.filter(|k| k.unsupported.is_none()) {
                assert!(
                    text.contains(&format!("\n{} = ", key.name)),
                    "[{}] {} is not in the example",
                    section.name(),
                    key.name
                );
            }
        }
    }
}
