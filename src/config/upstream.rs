//! `rtpmidid convert-config FILE`: the INI file of the C++ rtpmidid (`/etc/rtpmidid/default.ini`)
//! rewritten in our format with the same meaning. What has no equivalent here is left out and
//! named with file:line, so nothing is dropped silently.
//!
//! Its format, as the C++ daemon reads it: `#` starts a comment anywhere on a line; `[section]`
//! headers; `key=value` with spaces around both trimmed; `{{hostname}}` in a value is the host
//! name. `[rtpmidi_announce]`, `[alsa_announce]`, `[connect_to]` and `[rawmidi]` may repeat;
//! `[general]`, `[rtpmidi_discover]` and `[alsa_hw_auto_export]` are one each.
//!
//! Its regexes (std::regex, searched anywhere in the name) become our `*`/`?` wildcards: the
//! regexes people write there (`.*`, literals, `^`/`$`, `(A|B)`, `.`) translate exactly; the
//! rest is named as not carried over rather than guessed at.
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::parse;
use crate::options::{self, DEFAULT_PORT};

/// The ALSA port whose subscribers are exported; its name is fixed here.
const NETWORK_PORT: &str = "Network";
/// The C++ daemon's placeholder for the host name.
const HOSTNAME: &str = "{{hostname}}";

/// Our file, and what did not carry over.
pub struct Converted {
    pub text: String,
    /// `file:line: what happened`, in the order of the file (`file:` for the whole file).
    pub notes: Vec<String>,
}

/// `rtpmidid convert-config FILE`: our file on stdout, notes on stderr. Fails when the file
/// cannot be read or the result would not load.
pub fn run(path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("rtpmidid: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let shown = path.display().to_string();
    let converted = convert(&shown, &text, &super::hostname());
    for note in &converted.notes {
        eprintln!("{note}");
    }
    // A safety net: what we print must load as it is.
    if let Err(e) = parse::parse("converted", &converted.text) {
        eprintln!("rtpmidid: the converted file would not load: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", converted.text);
    ExitCode::SUCCESS
}

/// One `key=value` line.
struct Entry {
    line: usize,
    key: String,
    value: String,
}

/// One section as written, with its keys.
struct Section {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

/// What the converted file says, gathered before it is written.
#[derive(Default)]
struct Out {
    general: Vec<(&'static str, String)>,
    include: Vec<String>,
    exclude: Vec<String>,
    /// `[connect NAME]` and `[listener NAME]` sections: header and keys.
    named: Vec<(String, Vec<(&'static str, String)>)>,
    /// Line (0: the whole file) and what.
    notes: Vec<(usize, String)>,
    hostname: String,
}

impl Out {
    fn note(&mut self, line: usize, what: impl Into<String>) {
        self.notes.push((line, what.into()));
    }

    /// A `[kind NAME]` header not used yet: a repeated name gets " (2)", " (3)"...
    fn header(&self, kind: &str, name: &str) -> String {
        let taken = |h: &String| self.named.iter().any(|(n, _)| n == h);
        let mut header = format!("{kind} {name}");
        let mut n = 2;
        while taken(&header) {
            header = format!("{kind} {name} ({n})");
            n += 1;
        }
        header
    }

    /// Checks `value` with our parser of its kind; a refused value is a note.
    fn check<T>(
        &mut self,
        entry: &Entry,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<String> {
        match parse(&entry.value) {
            Ok(_) => Some(entry.value.clone()),
            Err(why) => {
                self.note(
                    entry.line,
                    format!("{}={}: left out: {why}", entry.key, entry.value),
                );
                None
            }
        }
    }
}

/// Converts the text of a C++ rtpmidid INI file; `file` names it in notes, `hostname` replaces
/// `{{hostname}}` as the C++ daemon would on this machine.
pub fn convert(file: &str, text: &str, hostname: &str) -> Converted {
    let mut out = Out {
        hostname: hostname.to_string(),
        ..Out::default()
    };
    let sections = read(text, &mut out);
    let mut announces = 0;
    let mut alsa_announces = 0;
    for section in &sections {
        match section.name.as_str() {
            "general" => general(section, &mut out),
            "rtpmidi_announce" => {
                announce(section, announces == 0, &mut out);
                announces += 1;
            }
            "rtpmidi_discover" => discover(section, &mut out),
            "alsa_announce" => {
                alsa_announce(section, alsa_announces, &mut out);
                alsa_announces += 1;
            }
            "connect_to" => connect_to(section, &mut out),
            "alsa_hw_auto_export" => auto_export(section, &mut out),
            "rawmidi" => rawmidi(section, &mut out),
            other => out.note(
                section.line,
                format!("[{other}] left out: not a section of rtpmidid's INI file"),
            ),
        }
    }
    if announces == 0 {
        out.note(
            0,
            format!(
                "no [rtpmidi_announce]: rtpmidid here always serves sessions on port \
                 {DEFAULT_PORT} (set [general] port to move it)"
            ),
        );
    }
    // Whole-file notes after those of lines, lines in order.
    out.notes
        .sort_by_key(|(line, _)| if *line == 0 { usize::MAX } else { *line });
    let notes = out
        .notes
        .iter()
        .map(|(line, what)| match line {
            0 => format!("{file}: {what}"),
            _ => format!("{file}:{line}: {what}"),
        })
        .collect();
    Converted {
        text: render(file, &out),
        notes,
    }
}

/// The file's sections as the C++ daemon splits it; lines it would refuse are notes.
fn read(text: &str, out: &mut Out) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        if let Some(header) = text.strip_prefix('[') {
            match header.strip_suffix(']') {
                Some(name) => sections.push(Section {
                    name: name.to_string(),
                    line,
                    entries: Vec::new(),
                }),
                None => out.note(line, format!("left out: not a [section] header: {text}")),
            }
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            out.note(line, format!("left out: not key=value: {text}"));
            continue;
        };
        let Some(section) = sections.last_mut() else {
            out.note(line, format!("left out: {key} before any [section]"));
            continue;
        };
        // A bare {{hostname}} stays: our default name is the host name at each start.
        let value = match value.trim() {
            HOSTNAME => HOSTNAME.to_string(),
            value => value.replace(HOSTNAME, &out.hostname),
        };
        section.entries.push(Entry {
            line,
            key: key.trim().to_string(),
            value,
        });
    }
    sections
}

fn unknown_key(section: &Section, entry: &Entry, out: &mut Out) {
    out.note(
        entry.line,
        format!("{} left out: not a key of [{}]", entry.key, section.name),
    );
}

fn general(section: &Section, out: &mut Out) {
    for e in &section.entries {
        let key = match e.key.as_str() {
            "alsa_name" => out.check(e, options::name).map(|v| ("alsa_name", v)),
            "control" => out.check(e, options::path).map(|v| ("control", v)),
            "log_level" => out.check(e, options::log_level).map(|v| ("log_level", v)),
            _ => {
                unknown_key(section, e, out);
                None
            }
        };
        out.general.extend(key);
    }
}

/// The first `[rtpmidi_announce]` is our main session server; each further one a listener.
fn announce(section: &Section, first: bool, out: &mut Out) {
    let mut name = None;
    let mut port = None;
    for e in &section.entries {
        match e.key.as_str() {
            "name" if e.value == HOSTNAME => name = Some(HOSTNAME.to_string()),
            "name" => name = out.check(e, options::name),
            "port" => port = out.check(e, options::port),
            _ => unknown_key(section, e, out),
        }
    }
    if first {
        if let Some(name) = name.filter(|n| n != HOSTNAME) {
            out.general.push(("name", name));
        }
        out.general.extend(port.map(|p| ("port", p)));
        return;
    }
    let Some(port) = port else {
        out.note(
            section.line,
            "[rtpmidi_announce] left out: a second session server needs a port",
        );
        return;
    };
    let name = match name {
        Some(n) if n == HOSTNAME => out.hostname.clone(),
        Some(n) => n,
        None => format!("rtpmidid {port}"),
    };
    let header = out.header("listener", &name);
    out.named.push((header, vec![("port", port)]));
}

/// Discovery rules: which announced peers get an ALSA port.
fn discover(section: &Section, out: &mut Out) {
    for e in &section.entries {
        match e.key.as_str() {
            // The C++ daemon takes exactly "true" as on.
            "enabled" if e.value == "true" => {}
            "enabled" => out.exclude = vec!["*".into()],
            "name_positive_regex" | "name_negative_regex" => {
                let patterns = match wildcards(&e.value) {
                    Ok(p) => p,
                    Err(why) => {
                        out.note(e.line, format!("{}={}: left out: {why}", e.key, e.value));
                        continue;
                    }
                };
                let everything = patterns.iter().any(|p| p == "*");
                if e.key == "name_negative_regex" {
                    if !out.exclude.iter().any(|p| p == "*") {
                        out.exclude = if everything {
                            vec!["*".into()]
                        } else {
                            patterns
                        };
                    }
                } else if patterns.is_empty() {
                    // A positive rule nothing passes: no discovered peer is used.
                    out.exclude = vec!["*".into()];
                } else if !everything {
                    out.include = patterns;
                }
            }
            _ => unknown_key(section, e, out),
        }
    }
}

fn alsa_announce(section: &Section, earlier: usize, out: &mut Out) {
    if earlier > 0 {
        out.note(
            section.line,
            format!("[alsa_announce] left out: there is one export port, {NETWORK_PORT:?}"),
        );
        return;
    }
    for e in &section.entries {
        match e.key.as_str() {
            "name" if e.value == NETWORK_PORT => {}
            "name" => out.note(
                e.line,
                format!(
                    "name={}: the ALSA port that exports what is connected to it is called \
                     {NETWORK_PORT:?} here",
                    e.value
                ),
            ),
            _ => unknown_key(section, e, out),
        }
    }
}

fn connect_to(section: &Section, out: &mut Out) {
    let (mut host, mut port, mut name) = (None, None, None);
    for e in &section.entries {
        match e.key.as_str() {
            "hostname" => host = out.check(e, options::host),
            "port" => port = out.check(e, options::port),
            "name" => name = out.check(e, options::name),
            "local_udp_port" => out.note(
                e.line,
                format!(
                    "local_udp_port={} left out: connections use the [general] port here",
                    e.value
                ),
            ),
            _ => unknown_key(section, e, out),
        }
    }
    let Some(host) = host else {
        out.note(section.line, "[connect_to] left out: no hostname");
        return;
    };
    let name = name.unwrap_or_else(|| host.clone());
    let header = out.header("connect", &name);
    let mut keys = vec![("host", host)];
    keys.extend(
        port.filter(|p| *p != DEFAULT_PORT.to_string())
            .map(|p| ("port", p)),
    );
    out.named.push((header, keys));
}

/// `[rawmidi]` is our `[rawmidi NAME]`: the device offered as NAME on `local_udp_port`, or
/// connected from it to `hostname:remote_udp_port`.
fn rawmidi(section: &Section, out: &mut Out) {
    let (mut name, mut device, mut host, mut port, mut remote) = (None, None, None, None, None);
    for e in &section.entries {
        match e.key.as_str() {
            "name" => name = out.check(e, options::name),
            "device" => device = out.check(e, options::path),
            "hostname" => host = out.check(e, options::host),
            "local_udp_port" => port = out.check(e, options::port),
            "remote_udp_port" => remote = out.check(e, options::port).map(|p| (e.line, p)),
            _ => unknown_key(section, e, out),
        }
    }
    let Some(device) = device else {
        out.note(section.line, "[rawmidi] left out: no device");
        return;
    };
    // Unnamed: after the device's file (midiC1D0).
    let name = name.unwrap_or_else(|| {
        Path::new(&device)
            .file_name()
            .map_or_else(|| device.clone(), |f| f.to_string_lossy().into_owned())
    });
    let header = out.header("rawmidi", &name);
    let mut keys = vec![("device", device)];
    keys.extend(port.map(|p| ("port", p)));
    match (host, remote) {
        (Some(host), remote) => {
            keys.push(("host", host));
            keys.extend(
                remote
                    .map(|(_, p)| p)
                    .filter(|p| *p != DEFAULT_PORT.to_string())
                    .map(|p| ("remote_port", p)),
            );
        }
        (None, Some((line, p))) => out.note(
            line,
            format!("remote_udp_port={p} left out: no hostname to connect to"),
        ),
        (None, None) => {}
    }
    out.named.push((header, keys));
}

/// `[alsa_hw_auto_export]` is our `export_auto = KIND[:PATTERN]`.
fn auto_export(section: &Section, out: &mut Out) {
    let mut kind = None;
    let mut pattern = None;
    for e in &section.entries {
        match e.key.as_str() {
            "type" => match e.value.as_str() {
                "none" => kind = None,
                "hardware" | "software" | "all" => kind = Some(e.value.clone()),
                _ => out.note(
                    e.line,
                    format!("type={} left out: hardware, software or all here", e.value),
                ),
            },
            "name_positive_regex" => match substring(&e.value) {
                Ok(p) => pattern = p,
                Err(why) => out.note(e.line, format!("{}={}: left out: {why}", e.key, e.value)),
            },
            // Ports of the System client (Timer, Announce) are never exported here.
            "name_negative_regex" => match wildcards(&e.value) {
                Ok(p) if p.iter().all(|p| is_system_port(p)) => {}
                _ => out.note(
                    e.line,
                    format!(
                        "{}={} left out: export_auto has no exclusions here",
                        e.key, e.value
                    ),
                ),
            },
            _ => unknown_key(section, e, out),
        }
    }
    if let Some(kind) = kind {
        let value = match pattern {
            Some(p) => format!("{kind}:{p}"),
            None => kind,
        };
        out.general.push(("export_auto", value));
    }
}

fn is_system_port(pattern: &str) -> bool {
    let name = pattern.trim_matches('*').to_ascii_lowercase();
    ["system", "timer", "announce"].contains(&name.as_str())
}

/// A regex (searched anywhere in the name, as std::regex_search does) as our wildcard
/// patterns, any of which may match: `*` alone for every name, none for no real name.
fn wildcards(regex: &str) -> Result<Vec<String>, String> {
    let mut patterns = Vec::new();
    for (anchored_start, body, anchored_end) in alternatives(regex)? {
        if body.contains([':', '/']) {
            return Err("it names a host or port; the filters here see the session name".into());
        }
        let mut p = String::new();
        if !anchored_start {
            p.push('*');
        }
        p += &translate(&body)?;
        if !anchored_end {
            p.push('*');
        }
        while p.contains("**") {
            p = p.replace("**", "*");
        }
        // "^$" matches only an empty name, which no peer has.
        if !p.is_empty() {
            patterns.push(p);
        }
    }
    Ok(patterns)
}

/// The alternatives of a regex `A|B`, `^(A|B)$`..., each with its anchors: (^, body, $).
fn alternatives(regex: &str) -> Result<Vec<(bool, String, bool)>, String> {
    let (start, rest) = match regex.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, regex),
    };
    let (rest, end) = match rest.strip_suffix('$').filter(|r| !r.ends_with('\\')) {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let grouped = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .filter(|inner| !inner.contains(['(', ')']));
    if let Some(inner) = grouped {
        return Ok(split_bars(inner)
            .into_iter()
            .map(|alt| (start, alt, end))
            .collect());
    }
    // No group around it: each alternative has its own anchors.
    split_bars(regex)
        .into_iter()
        .map(|alt| {
            if alt.contains(['(', ')']) {
                return Err("groups other than one (A|B) around the whole regex".to_string());
            }
            let (start, alt) = match alt.strip_prefix('^') {
                Some(a) => (true, a.to_string()),
                None => (false, alt.clone()),
            };
            match alt.strip_suffix('$').filter(|a| !a.ends_with('\\')) {
                Some(a) => Ok((start, a.to_string(), true)),
                None => Ok((start, alt, false)),
            }
        })
        .collect()
}

/// Splits at `|` not escaped.
fn split_bars(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let part = parts.last_mut().unwrap();
                part.push(c);
                part.extend(chars.next());
            }
            '|' => parts.push(String::new()),
            _ => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// One alternative's body: `.*` is `*`, `.+` `?*`, `.` `?`, `\x` the character x, other
/// characters themselves. Spaces and commas become `?`: our lists are split at them.
fn translate(body: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => match chars.peek() {
                Some('*') => {
                    chars.next();
                    out.push('*');
                }
                Some('+') => {
                    chars.next();
                    out.push_str("?*");
                }
                _ => out.push('?'),
            },
            '\\' => match chars.next() {
                Some(x) if x.is_ascii_punctuation() && x != '*' && x != '?' => out.push(x),
                Some(x) => return Err(format!("\\{x} has no wildcard equivalent")),
                None => return Err("it ends with \\".into()),
            },
            '[' | ']' | '{' | '}' | '*' | '+' | '?' | '^' | '$' | '(' | ')' | '|' => {
                return Err(format!("{c:?} has no wildcard equivalent"))
            }
            ' ' | ',' => out.push('?'),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// A regex as our export_auto PATTERN, a part of the name: `None` for every name.
fn substring(regex: &str) -> Result<Option<String>, String> {
    match wildcards(regex)?.as_slice() {
        [p] if p == "*" => Ok(None),
        [p] => match p.strip_prefix('*').and_then(|p| p.strip_suffix('*')) {
            Some(inner) if !inner.is_empty() && !inner.contains(['*', '?']) => {
                Ok(Some(inner.to_string()))
            }
            _ => Err("export_auto takes one plain part of the name here".into()),
        },
        _ => Err("export_auto takes one plain part of the name here".into()),
    }
}

/// Our file, with a header saying where it came from.
fn render(file: &str, out: &Out) -> String {
    let mut text = format!(
        "# Converted by `rtpmidid convert-config` from {file}.\n\
         # The options are described in /usr/share/doc/rtpmidid/examples/rtpmidid.conf.example\n\
         # and rtpmidid.conf(5).\n"
    );
    let mut section = |header: &str, keys: &[(&str, String)]| {
        let _ = writeln!(text, "\n[{header}]");
        for (key, value) in keys {
            let _ = writeln!(text, "{key} = {}", quoted(value));
        }
    };
    if !out.general.is_empty() {
        section("general", &out.general);
    }
    let mut mdns = Vec::new();
    if !out.include.is_empty() {
        mdns.push(("include", out.include.join(", ")));
    }
    if !out.exclude.is_empty() {
        mdns.push(("exclude", out.exclude.join(", ")));
    }
    if !mdns.is_empty() {
        section("mdns", &mdns);
    }
    for (header, keys) in &out.named {
        section(header, keys);
    }
    text
}

/// Our parser removes one pair of double quotes around a value: keep a pair that is the
/// value's own.
fn quoted(value: &str) -> String {
    if value.len() > 1 && value.starts_with('"') && value.ends_with('"') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes_of(text: &str) -> Vec<String> {
        convert("f.ini", text, "pi").notes
    }

    #[test]
    fn the_example_file_carries_over() {
        let c = convert(
            "default.ini",
            include_str!("../../tests/upstream/default.ini"),
            "pi",
        );
        let body = c.text.split_once("\n\n").unwrap().1;
        assert_eq!(
            body,
            "[general]\nalsa_name = rtpmidid\ncontrol = /var/run/rtpmidid/control.sock\n\
             log_level = info\nport = 5004\nexport_auto = hardware\n\n\
             [mdns]\ninclude = Studio*, Stage*\nexclude = *iPhone*, *iPad*\n\n\
             [listener pi drums]\nport = 45020\n\n\
             [connect DeepMind12D]\nhost = 127.0.0.1\nport = 45030\n\n\
             [connect midid]\nhost = 127.0.0.1\n\n\
             [rawmidi MIDI C4D0]\ndevice = /dev/snd/midiC4D0\nport = 5104\n"
        );
        let lines: Vec<&str> = c
            .notes
            .iter()
            .map(|n| n.split(' ').next().unwrap())
            .collect();
        assert_eq!(lines, ["default.ini:25:", "default.ini:36:"]);
        parse::parse("x", &c.text).unwrap();
    }

    #[test]
    fn regexes_as_wildcards() {
        let ok = |re: &str| wildcards(re).unwrap();
        assert_eq!(ok(".*"), ["*"]);
        assert_eq!(ok("^$"), Vec::<String>::new());
        assert_eq!(ok("Peak"), ["*Peak*"]);
        assert_eq!(ok("^Peak$"), ["Peak"]);
        assert_eq!(ok("(Peak|Ableton)"), ["*Peak*", "*Ableton*"]);
        assert_eq!(ok("^(Peak|Able.on)$"), ["Peak", "Able?on"]);
        assert_eq!(ok("^Stage|Rig$"), ["Stage*", "*Rig"]);
        assert_eq!(ok("Studio .+ 1"), ["*Studio??*?1*"]);
        assert_eq!(ok("a\\.b"), ["*a.b*"]);
        for bad in [
            "[ab]c", "a+", "x{2}", "(a)(b)", "a\\d", "\\*", ":5004/", "a?",
        ] {
            assert!(wildcards(bad).is_err(), "{bad}");
        }
        assert_eq!(substring(".*"), Ok(None));
        assert_eq!(substring("Launch"), Ok(Some("Launch".into())));
        assert!(substring("^Launch$").is_err() && substring("(a|b)").is_err());
    }

    #[test]
    fn the_translated_filters_admit_what_the_regex_did() {
        let text = "[rtpmidi_discover]\nenabled=true\nname_positive_regex=^(Stage|Studio)\n\
                    name_negative_regex=iPhone\n";
        let file = parse::parse("x", &convert("f", text, "pi").text).unwrap();
        assert!(file.mdns.admits("Stage Left") && file.mdns.admits("Studio B"));
        assert!(!file.mdns.admits("My Stage") && !file.mdns.admits("Studio iPhone"));
    }

    #[test]
    fn discovery_off_ignores_every_peer() {
        for text in [
            "[rtpmidi_discover]\nenabled=false\nname_positive_regex=.*\n",
            "[rtpmidi_discover]\nenabled=yes\n",
            "[rtpmidi_discover]\nname_positive_regex=^$\n",
        ] {
            let file = parse::parse("x", &convert("f", text, "pi").text).unwrap();
            assert!(!file.mdns.admits("anyone"), "{text}");
        }
    }

    #[test]
    fn what_cannot_carry_over_is_named_with_its_line() {
        let notes = notes_of(
            "[general]\nalsa_name=x\nfoo=1\n[connect_to]\nhostname=h\nlocal_udp_port=5010\n\
             [rawmidi]\nremote_udp_port=5004\n[alsa_announce]\nname=Net\n\
             [alsa_hw_auto_export]\ntype=system\nname_negative_regex=Midi Through\n\
             [rtpmidi_discover]\nname_positive_regex=[Pp]eak\n[bogus]\nnot a key\n",
        );
        let expected = [
            "f.ini:3: foo left out",
            "f.ini:6: local_udp_port=5010 left out",
            "f.ini:7: [rawmidi] left out: no device",
            "f.ini:10: name=Net: the ALSA port",
            "f.ini:12: type=system left out",
            "f.ini:13: name_negative_regex=Midi Through left out",
            "f.ini:15: name_positive_regex=[Pp]eak: left out",
            "f.ini:16: [bogus] left out",
            "f.ini:17: left out: not key=value",
            "f.ini: no [rtpmidi_announce]",
        ];
        assert_eq!(notes.len(), expected.len(), "{notes:#?}");
        for (note, start) in notes.iter().zip(expected) {
            assert!(
                note.starts_with(start),
                "{note:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn repeated_sections_become_listeners_and_connections() {
        let text = "[rtpmidi_announce]\nname={{hostname}}\nport=5004\n\
                    [rtpmidi_announce]\nname={{hostname}} drums\nport=5020\n\
                    [connect_to]\nhostname=10.0.0.2\nname=synth\n\
                    [connect_to]\nhostname=10.0.0.3\nport=6004\nname=synth\n\
                    [connect_to]\nhostname=::1\n";
        let c = convert("f", text, "pi");
        assert_eq!(c.notes, Vec::<String>::new());
        let file = parse::parse("x", &c.text).unwrap();
        assert_eq!(
            file.name, None,
            "{{{{hostname}}}} alone is our default name"
        );
        assert_eq!(file.port, Some(5004));
        assert_eq!(file.listeners.len(), 1);
        assert_eq!(
            (file.listeners[0].name.as_str(), file.listeners[0].port),
            ("pi drums", 5020)
        );
        let connections: Vec<_> = file
            .connect
            .iter()
            .map(|c| (c.name.as_str(), c.host.as_str(), c.port))
            .collect();
        assert_eq!(
            connections,
            [
                ("synth", "10.0.0.2", 5004),
                ("synth (2)", "10.0.0.3", 6004),
                ("::1", "::1", 5004)
            ]
        );
    }

    #[test]
    fn rawmidi_sections_become_devices_offered_or_connected() {
        let text = "[rtpmidi_announce]\nport=5004\n\
                    [rawmidi]\nname=Keys\ndevice=/dev/snd/midiC1D0\nlocal_udp_port=5104\n\
                    [rawmidi]\ndevice=/dev/snd/midiC2D0\nhostname=10.0.0.2\n\
                    remote_udp_port=6004\n";
        let c = convert("f", text, "pi");
        assert_eq!(c.notes, Vec::<String>::new());
        let file = parse::parse("x", &c.text).unwrap();
        let devices: Vec<_> = file
            .rawmidi
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.device.to_str().unwrap(),
                    r.port,
                    r.remote.clone(),
                )
            })
            .collect();
        assert_eq!(
            devices,
            [
                ("Keys", "/dev/snd/midiC1D0", Some(5104), None),
                (
                    "midiC2D0",
                    "/dev/snd/midiC2D0",
                    None,
                    Some(("10.0.0.2".to_string(), 6004))
                )
            ]
        );
    }

    #[test]
    fn values_our_parsers_refuse_are_named() {
        let notes = notes_of("[rtpmidi_announce]\nport=99999\n[general]\ncontrol=rel.sock\n");
        assert!(notes[0].starts_with("f.ini:2: port=99999: left out: a UDP port"));
        assert!(notes[1].starts_with("f.ini:4: control=rel.sock: left out: must be"));
    }

    #[test]
    fn quotes_of_the_value_survive() {
        let c = convert("f", "[rtpmidi_announce]\nname=\"Q\"\n", "pi");
        assert_eq!(
            parse::parse("x", &c.text).unwrap().name.as_deref(),
            Some("\"Q\"")
        );
    }
}
