//! The control protocol: one JSON object per line each way. [`Request`] and [`Reply`] are
//! parsed from JSON in one place and rendered in one place (JSON for the wire, text for
//! `rtpmidid ctl`), for the server and the client alike.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"peers"}`, `{"cmd":"connect","host":H,"port":P,
//! "name":N}`, `{"cmd":"disconnect","id":I}` or `{"cmd":"disconnect","name":N}`,
//! `{"cmd":"export","port":"C:P"}`, `{"cmd":"unexport","port":"C:P"}`. Replies carry
//! `"ok":true` and the data, or `{"ok":false,"error":"..."}`.
use std::fmt;
use std::time::Duration;

use crate::json::{self, Value};
use crate::options::{self, ConnectTarget, DEFAULT_PORT};
use crate::seq::SeqAddr;

/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Status,
    Peers,
    /// Keep a session with this peer until `disconnect`.
    Connect(ConnectTarget),
    Disconnect(Who),
    /// Connect a local ALSA port to `Network` both ways, which exports it.
    Export(SeqAddr),
    /// Remove those connections, which withdraws the export.
    Unexport(SeqAddr),
}

/// What `disconnect` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Id(PeerId),
    /// A connection's name, or a peer's.
    Name(String),
}

impl Who {
    /// A session id if the text is one, else a name.
    pub fn parse(text: &str) -> Result<Who, String> {
        PeerId::parse(text).map_or_else(|| Who::name(text), |id| Ok(Who::Id(id)))
    }

    /// Not an empty name: it would match nothing, or a peer that has not said its name yet.
    fn name(text: &str) -> Result<Who, String> {
        match text.is_empty() {
            true => Err("an empty name".into()),
            false => Ok(Who::Name(text.to_string())),
        }
    }
}

/// A session's id as `peers` shows it: its number on the main port, `L.S` on listener `L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerId {
    /// `None` for the main port.
    pub listener: Option<u32>,
    pub session: u64,
}

impl PeerId {
    pub fn parse(text: &str) -> Option<PeerId> {
        let (listener, session) = match text.split_once('.') {
            Some((l, s)) => (Some(l.parse().ok()?), s),
            None => (None, text),
        };
        Some(PeerId {
            listener,
            session: session.parse().ok()?,
        })
    }

    /// Always a string (`"3"` on the main port, `"L.S"` on others), so a reader sees one
    /// type; requests also take a plain number.
    fn to_json(self) -> Value {
        Value::from(self.to_string())
    }

    fn from_json(value: &Value) -> Option<PeerId> {
        match value {
            Value::String(s) => PeerId::parse(s),
            other => other.as_u64().map(|session| PeerId {
                listener: None,
                session,
            }),
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.listener {
            None => write!(f, "{}", self.session),
            Some(l) => write!(f, "{l}.{}", self.session),
        }
    }
}

impl Request {
    /// One request line as a client sent it (with or without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        if line.len() > MAX_LINE {
            return Err(format!("request longer than {MAX_LINE} bytes"));
        }
        let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8")?;
        let value = json::parse(text).map_err(|e| format!("bad JSON: {e}"))?;
        Request::from_json(&value)
    }

    fn from_json(request: &Value) -> Result<Request, String> {
        let cmd = request
            .get("cmd")
            .and_then(Value::as_str)
            .ok_or("a request is an object with a \"cmd\" string")?;
        Ok(match cmd {
            "status" => Request::Status,
            "peers" => Request::Peers,
            "connect" => {
                let host = request
                    .get("host")
                    .and_then(Value::as_str)
                    .ok_or("connect needs a \"host\"")?;
                let port = match request.get("port") {
                    None => DEFAULT_PORT,
                    Some(p) => p
                        .as_u64()
                        .and_then(|p| options::port(&p.to_string()).ok())
                        .ok_or("\"port\" must be a number from 1 to 65534")?,
                };
                let name = match request.get("name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(n)) if options::name(n).is_ok() => Some(n.clone()),
                    Some(_) => return Err("\"name\" must be a non-empty string".into()),
                };
                let midi2 = match request.get("protocol") {
                    None | Some(Value::Null) => false,
                    Some(p) => match p.as_str() {
                        Some("rtp-midi") => false,
                        Some("midi2") => true,
                        _ => return Err("\"protocol\" is \"rtp-midi\" or \"midi2\"".into()),
                    },
                };
                Request::Connect(ConnectTarget {
                    name,
                    host: options::host(host).map_err(|e| format!("bad \"host\": {e}"))?,
                    port,
                    midi2,
                    credentials: None,
                })
            }
            "disconnect" => match (request.get("id"), request.get("name")) {
                (Some(id), None) => Request::Disconnect(Who::Id(
                    PeerId::from_json(id).ok_or("\"id\" must be a session id as peers shows it")?,
                )),
                (None, Some(Value::String(name))) => {
                    Request::Disconnect(Who::name(name).map_err(|e| format!("bad \"name\": {e}"))?)
                }
                _ => return Err("disconnect needs an \"id\" number or a \"name\" string".into()),
            },
            "export" | "unexport" => {
                let port = request
                    .get("port")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{cmd} needs a \"port\": \"client:port\""))?;
                let addr = SeqAddr::parse(port)
                    .ok_or_else(|| format!("bad ALSA port {port:?}: use client:port numbers"))?;
                if cmd == "export" {
                    Request::Export(addr)
                } else {
                    Request::Unexport(addr)
                }
            }
            other => {
                return Err(format!(
                    "unknown cmd {other:?} (status, peers, connect, disconnect, export, unexport)"
                ))
            }
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        let cmd = |c: &str| ("cmd", Value::from(c));
        match self {
            Request::Status => Value::object([cmd("status")]),
            Request::Peers => Value::object([cmd("peers")]),
            Request::Connect(t) => {
                let mut pairs = vec![
                    cmd("connect"),
                    ("host", Value::from(t.host.as_str())),
                    ("port", Value::from(u64::from(t.port))),
                ];
                if let Some(name) = &t.name {
                    pairs.push(("name", Value::from(name.as_str())));
                }
                if t.midi2 {
                    pairs.push(("protocol", Value::from("midi2")));
                }
                Value::object(pairs)
            }
            Request::Disconnect(Who::Id(id)) => {
                Value::object([cmd("disconnect"), ("id", id.to_json())])
            }
            Request::Disconnect(Who::Name(name)) => {
                Value::object([cmd("disconnect"), ("name", Value::from(name.as_str()))])
            }
            Request::Export(addr) => {
                Value::object([cmd("export"), ("port", Value::from(addr.to_string()))])
            }
            Request::Unexport(addr) => {
                Value::object([cmd("unexport"), ("port", Value::from(addr.to_string()))])
            }
        }
    }
}

/// The daemon's answer to one [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status(Status),
    Peers(Vec<PeerRow>),
    /// `connect` accepted: the connection's name.
    Connecting(String),
    /// `disconnect` done: the connection's or peer's name.
    Disconnected(String),
    /// `export` done: the name the port is announced under.
    Exported {
        name: String,
        port: SeqAddr,
    },
    Unexported {
        name: String,
        port: SeqAddr,
    },
    Error(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub version: String,
    pub alsa_name: String,
    pub pid: u32,
    pub port: u16,
    pub uptime: Duration,
    /// Sessions of every listener, and how many of them are connected.
    pub sessions: u64,
    pub connected: u64,
    /// Connections asked for (file, command line, `ctl connect`).
    pub connections: u64,
    /// Exported local ports.
    pub exports: u64,
    pub hub: bool,
    pub alsa: bool,
    /// The configuration file read, if any.
    pub config: Option<String>,
    /// Datagrams no session took.
    pub dropped: Dropped,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub malformed: u64,
    pub unknown_session: u64,
    pub refused: u64,
    /// From peers of sessions that had just ended: expected, not trouble.
    pub late: u64,
}

/// A session, or a connection without one (`id` is `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    pub id: Option<PeerId>,
    /// The peer's session name; empty before it answers.
    pub name: String,
    /// The configured or requested connection this session serves.
    pub connection: Option<String>,
    pub address: String,
    pub state: String,
    pub role: String,
    /// `rtp-midi` or `midi2`.
    pub protocol: String,
    /// Round trip of the last clock sync.
    pub latency: Option<Duration>,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub journal_repairs: u64,
}

impl Reply {
    /// The wire form.
    pub fn to_json(&self) -> Value {
        let ok = |mut pairs: Vec<(&str, Value)>| {
            pairs.insert(0, ("ok", Value::Bool(true)));
            Value::object(pairs)
        };
        match self {
            Reply::Status(s) => ok(vec![
                ("name", Value::from(s.name.as_str())),
                ("version", Value::from(s.version.as_str())),
                ("alsa_name", Value::from(s.alsa_name.as_str())),
                ("pid", Value::from(u64::from(s.pid))),
                ("port", Value::from(u64::from(s.port))),
                ("uptime_s", Value::from(s.uptime.as_secs())),
                ("sessions", Value::from(s.sessions)),
                ("connected", Value::from(s.connected)),
                ("connections", Value::from(s.connections)),
                ("exports", Value::from(s.exports)),
                ("hub", Value::from(s.hub)),
                ("alsa", Value::from(s.alsa)),
                ("config", Value::from(s.config.clone())),
                (
                    "dropped",
                    Value::object([
                        ("malformed", Value::from(s.dropped.malformed)),
                        ("unknown_session", Value::from(s.dropped.unknown_session)),
                        ("refused", Value::from(s.dropped.refused)),
                        ("late", Value::from(s.dropped.late)),
                    ]),
                ),
            ]),
            Reply::Peers(rows) => ok(vec![(
                "peers",
                Value::Array(rows.iter().map(PeerRow::to_json).collect()),
            )]),
            Reply::Connecting(name) | Reply::Disconnected(name) => {
                ok(vec![("name", Value::from(name.as_str()))])
            }
            Reply::Exported { name, port } | Reply::Unexported { name, port } => ok(vec![
                ("name", Value::from(name.as_str())),
                ("port", Value::from(port.to_string())),
            ]),
            Reply::Error(message) => Value::object([
                ("ok", Value::Bool(false)),
                ("error", Value::from(message.as_str())),
            ]),
        }
    }

    /// The daemon's answer to `request`, as the client reads it.
    pub fn from_json(request: &Request, answer: &Value) -> Result<Reply, String> {
        let a = Fields(answer);
        if !a.bool("ok")? {
            return Ok(Reply::Error(a.str("error")?));
        }
        Ok(match request {
            Request::Status => {
                let d = Fields(answer.get("dropped").ok_or("no \"dropped\"")?);
                Reply::Status(Status {
                    name: a.str("name")?,
                    version: a.str("version")?,
                    alsa_name: a.str("alsa_name")?,
                    pid: a.number("pid")?,
                    port: a.number("port")?,
                    uptime: Duration::from_secs(a.number("uptime_s")?),
                    sessions: a.number("sessions")?,
                    connected: a.number("connected")?,
                    connections: a.number("connections")?,
                    exports: a.number("exports")?,
                    hub: a.bool("hub")?,
                    alsa: a.bool("alsa")?,
                    config: a.optional_str("config")?,
                    dropped: Dropped {
                        malformed: d.number("malformed")?,
                        unknown_session: d.number("unknown_session")?,
                        refused: d.number("refused")?,
                        late: d.number("late")?,
                    },
                })
            }
            Request::Peers => Reply::Peers(
                answer
                    .get("peers")
                    .and_then(Value::as_array)
                    .ok_or("no \"peers\" list")?
                    .iter()
                    .map(PeerRow::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            Request::Connect(_) => Reply::Connecting(a.str("name")?),
            Request::Disconnect(_) => Reply::Disconnected(a.str("name")?),
            Request::Export(port) => Reply::Exported {
                name: a.str("name")?,
                port: *port,
            },
            Request::Unexport(port) => Reply::Unexported {
                name: a.str("name")?,
                port: *port,
            },
        })
    }

    /// The readable form `rtpmidid ctl` prints.
    pub fn to_text(&self) -> String {
        match self {
            Reply::Status(s) => {
                let config = s.config.as_deref().unwrap_or("-");
                let d = &s.dropped;
                let dropped = format!(
                    "malformed {}, unknown_session {}, refused {}, late {}",
                    d.malformed, d.unknown_session, d.refused, d.late
                );
                [
                    ("name", s.name.clone()),
                    ("version", s.version.clone()),
                    ("pid", s.pid.to_string()),
                    ("port", s.port.to_string()),
                    ("uptime_s", s.uptime.as_secs().to_string()),
                    ("sessions", s.sessions.to_string()),
                    ("connected", s.connected.to_string()),
                    ("connections", s.connections.to_string()),
                    ("exports", s.exports.to_string()),
                    ("hub", s.hub.to_string()),
                    ("alsa", s.alsa.to_string()),
                    ("alsa_name", s.alsa_name.clone()),
                    ("config", config.to_string()),
                    ("dropped", dropped),
                ]
                .iter()
                .map(|(key, value)| format!("{:<12} {value}\n", format!("{key}:")))
                .collect()
            }
            Reply::Peers(rows) => peer_table(rows),
            Reply::Connecting(name) => format!("connecting: {name}\n"),
            Reply::Disconnected(name) => format!("disconnected: {name}\n"),
            Reply::Exported { name, port } => format!("exporting {port} as {name}\n"),
            Reply::Unexported { port, .. } => format!("no longer exporting {port}\n"),
            Reply::Error(message) => format!("{message}\n"),
        }
    }
}

impl PeerRow {
    fn to_json(&self) -> Value {
        // Milliseconds to the microsecond.
        let latency_ms = self.latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        Value::object([
            ("id", self.id.map_or(Value::Null, PeerId::to_json)),
            ("name", Value::from(self.name.as_str())),
            ("connection", Value::from(self.connection.clone())),
            ("address", Value::from(self.address.as_str())),
            ("state", Value::from(self.state.as_str())),
            ("role", Value::from(self.role.as_str())),
            ("protocol", Value::from(self.protocol.as_str())),
            ("latency_ms", Value::from(latency_ms)),
            ("sent", Value::from(self.sent)),
            ("received", Value::from(self.received)),
            ("lost", Value::from(self.lost)),
            ("journal_repairs", Value::from(self.journal_repairs)),
        ])
    }

    fn from_json(value: &Value) -> Result<PeerRow, String> {
        let p = Fields(value);
        let id = match value.get("id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(PeerId::from_json(id).ok_or("bad \"id\"")?),
        };
        let latency = match value.get("latency_ms") {
            None | Some(Value::Null) => None,
            Some(ms) => Some(
                ms.as_f64()
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| Duration::from_nanos((ms * 1e6).round() as u64))
                    .ok_or("bad \"latency_ms\"")?,
            ),
        };
        Ok(PeerRow {
            id,
            name: p.str("name")?,
            connection: p.optional_str("connection")?,
            address: p.str("address")?,
            state: p.str("state")?,
            role: p.str("role")?,
            // Daemons before MIDI 2.0 spoke RTP-MIDI only.
            protocol: p
                .optional_str("protocol")?
                .unwrap_or_else(|| "rtp-midi".into()),
            latency,
            sent: p.number("sent")?,
            received: p.number("received")?,
            lost: p.number("lost")?,
            journal_repairs: p.number("journal_repairs")?,
        })
    }

    /// The cells of its row under [`PEER_HEADER`].
    pub fn cells(&self) -> Vec<String> {
        let name = match (&self.connection, self.name.is_empty()) {
            (Some(c), true) => c.clone(),
            (None, true) => "-".into(),
            (_, false) => self.name.clone(),
        };
        let latency = self.latency.map_or_else(
            || "-".into(),
            |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
        );
        vec![
            self.id.map_or_else(|| "-".into(), |id| id.to_string()),
            name,
            self.address.clone(),
            self.state.clone(),
            self.role.clone(),
            self.protocol.clone(),
            latency,
            self.sent.to_string(),
            self.received.to_string(),
            self.lost.to_string(),
            self.journal_repairs.to_string(),
        ]
    }
}

/// The column names of [`PeerRow::cells`].
pub const PEER_HEADER: [&str; 11] = [
    "ID", "NAME", "ADDRESS", "STATE", "ROLE", "PROTOCOL", "LATENCY", "SENT", "RECEIVED", "LOST",
    "REPAIRS",
];

fn peer_table(rows: &[PeerRow]) -> String {
    table(
        std::iter::once(PEER_HEADER.map(String::from).to_vec())
            .chain(rows.iter().map(PeerRow::cells))
            .collect(),
    )
}

/// Left-aligned columns, two spaces apart; the first row is the header.
pub fn table(rows: Vec<Vec<String>>) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// Typed access to the fields of a reply object; a missing or mistyped field is named.
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn get(&self, key: &str) -> Result<&Value, String> {
        self.0.get(key).ok_or_else(|| format!("no {key:?}"))
    }

    fn str(&self, key: &str) -> Result<String, String> {
        self.get(key)?
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("{key:?} is not a string"))
    }

    fn optional_str(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| format!("{key:?} is not true or false"))
    }

    fn number<T: TryFrom<u64>>(&self, key: &str) -> Result<T, String> {
        self.get(key)?
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("{key:?} is not a number in range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(line: &str) -> Result<Request, String> {
        Request::parse(line.as_bytes())
    }

    #[test]
    fn requests_round_trip_through_json() {
        let target = ConnectTarget {
            name: Some("Piano".into()),
            host: "::1".into(),
            port: 5006,
            midi2: false,
            credentials: None,
        };
        let id = |listener, session| Who::Id(PeerId { listener, session });
        for r in [
            Request::Status,
            Request::Peers,
            Request::Connect(target.clone()),
            Request::Connect(ConnectTarget {
                name: None,
                ..target
            }),
            Request::Disconnect(id(None, 3)),
            Request::Disconnect(id(Some(2), 1)),
            Request::Disconnect(Who::Name("Piano".into())),
            Request::Export(SeqAddr {
                client: 20,
                port: 0,
            }),
            Request::Unexport(SeqAddr {
                client: 20,
                port: 0,
            }),
        ] {
            let line = r.to_json().to_string();
            assert_eq!(request(&line), Ok(r), "{line}");
        }
        assert_eq!(
            request(r#"{"cmd":"disconnect","id":3}"#),
            Ok(Request::Disconnect(id(None, 3)))
        );
        assert_eq!(
            request(r#"{"cmd":"connect","host":"h"}"#),
            Ok(Request::Connect(ConnectTarget {
                name: None,
                host: "h".into(),
                port: DEFAULT_PORT,
                midi2: false,
                credentials: None,
            }))
        );
    }

    #[test]
    fn bad_requests_say_why() {
        for (line, why) in [
            ("{\"cmd\":", "bad JSON"),
            ("[1,2]", "with a \"cmd\" string"),
            (r#"{"cmd":"nope"}"#, "unknown cmd \"nope\""),
            (r#"{"cmd":"connect"}"#, "needs a \"host\""),
            (r#"{"cmd":"connect","host":"a b"}"#, "bad \"host\""),
            (r#"{"cmd":"connect","host":"h","port":0}"#, "\"port\" must"),
            (r#"{"cmd":"connect","host":"h","name":""}"#, "\"name\" must"),
            (r#"{"cmd":"disconnect"}"#, "needs an \"id\""),
            (r#"{"cmd":"disconnect","id":"x"}"#, "session id"),
            (
                r#"{"cmd":"disconnect","name":""}"#,
                "bad \"name\": an empty name",
            ),
            (r#"{"cmd":"export"}"#, "export needs a \"port\""),
            (r#"{"cmd":"unexport","port":"x:0"}"#, "bad ALSA port"),
        ] {
            let e = request(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
        let long = vec![b' '; MAX_LINE + 1];
        assert!(Request::parse(&long).unwrap_err().contains("longer than"));
        assert!(Request::parse(b"\xff").unwrap_err().contains("UTF-8"));
        assert!(Who::parse("").is_err());
        assert_eq!(Who::parse("1.x"), Ok(Who::Name("1.x".into())));
        // A name that looks like an id is still a name when sent as one.
        assert_eq!(
            request(r#"{"cmd":"disconnect","name":"3"}"#),
            Ok(Request::Disconnect(Who::Name("3".into())))
        );
    }

    fn row(id: Option<PeerId>, name: &str, connection: Option<&str>) -> PeerRow {
        PeerRow {
            id,
            name: name.into(),
            connection: connection.map(String::from),
            address: "127.0.0.1:5004".into(),
            state: "connected".into(),
            role: "initiator".into(),
            protocol: "rtp-midi".into(),
            latency: Some(Duration::from_micros(123)),
            sent: 10,
            received: 12,
            lost: 0,
            journal_repairs: 0,
        }
    }

    #[test]
    fn replies_round_trip_through_json() {
        let status = Status {
            name: "Stage".into(),
            version: "0.1.0".into(),
            alsa_name: "rtpmidid".into(),
            pid: 42,
            port: 5004,
            uptime: Duration::from_secs(7),
            sessions: 2,
            connected: 1,
            connections: 1,
            exports: 0,
            hub: true,
            alsa: false,
            config: None,
            dropped: Dropped {
                malformed: 1,
                unknown_session: 2,
                refused: 3,
                late: 4,
            },
        };
        let main = PeerId {
            listener: None,
            session: 1,
        };
        let port = SeqAddr {
            client: 20,
            port: 0,
        };
        for (request, reply) in [
            (Request::Status, Reply::Status(status)),
            (
                Request::Peers,
                Reply::Peers(vec![row(Some(main), "Stage", None), {
                    let mut r = row(None, "", Some("piano"));
                    r.latency = None;
                    r
                }]),
            ),
            (
                Request::Export(port),
                Reply::Exported {
                    name: "keys".into(),
                    port,
                },
            ),
            (Request::Peers, Reply::Error("no".into())),
        ] {
            let line = reply.to_json().to_string();
            let back = Reply::from_json(&request, &json::parse(&line).unwrap());
            assert_eq!(back, Ok(reply), "{line}");
        }
        let status = Reply::Status(Status {
            name: "Stage".into(),
            version: String::new(),
            alsa_name: String::new(),
            pid: 0,
            port: 5004,
            uptime: Duration::ZERO,
            sessions: 0,
            connected: 0,
            connections: 0,
            exports: 0,
            hub: false,
            alsa: false,
            config: None,
            dropped: Dropped::default(),
        });
        let json = status.to_json().to_string();
        assert!(json.starts_with(r#"{"ok":true,"name":"Stage""#), "{json}");
        // A script reads one type of id whichever listener holds the session.
        let other = PeerId {
            listener: Some(2),
            session: 3,
        };
        let peers = Reply::Peers(vec![
            row(Some(main), "a", None),
            row(Some(other), "b", None),
        ]);
        let json = peers.to_json().to_string();
        assert!(
            json.contains(r#""id":"1","#) && json.contains(r#""id":"2.3","#),
            "{json}"
        );
        let text = status.to_text();
        assert!(text.contains("name:        Stage\n") && text.contains("config:      -\n"));
    }

    #[test]
    fn peers_render_as_a_table() {
        let main = PeerId {
            listener: None,
            session: 1,
        };
        let mut waiting = row(None, "", Some("piano"));
        waiting.latency = None;
        waiting.state = "waiting".into();
        let out = Reply::Peers(vec![row(Some(main), "Stage", None), waiting]).to_text();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID  NAME   ADDRESS"), "{out}");
        assert!(
            lines[1].contains("Stage") && lines[1].contains("0.12 ms"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("-   piano") && lines[2].contains("waiting"),
            "{out}"
        );
    }
}
