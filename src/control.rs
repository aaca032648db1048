//! The control socket: a unix stream socket where each request and each answer is one JSON
//! object on one line, and `rtpmidid ctl`, its client.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"peers"}`, `{"cmd":"connect","host":H,"port":P,
//! "name":N}`, `{"cmd":"disconnect","id":I}` or `{"cmd":"disconnect","name":N}`,
//! `{"cmd":"export","port":"C:P"}`, `{"cmd":"unexport","port":"C:P"}`. Answers carry `"ok":true` and the data, or
//! `{"ok":false,"error":"..."}`.
//!
//! The daemon never waits on a client: sockets are non-blocking, a line longer than
//! [`MAX_LINE`] ends the connection after an error answer, and a client that does not read its
//! answers is dropped once [`MAX_PENDING_OUTPUT`] bytes wait for it.
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use log::{debug, info, warn};
use reactor::{Interest, SourceId};

use crate::cli::ConnectTarget;
use crate::config::DEFAULT_CONTROL;
use crate::daemon::{parse_peer_id, peer_id, Ctx, Daemon, Peer, Status};
use crate::json::{self, Value};

/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// Answers waiting for a slow client before it is dropped.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Clients at once; more are refused.
const MAX_CLIENTS: usize = 32;
/// Bytes read from one client per wakeup, so one client cannot hold the loop.
const READ_BUDGET: usize = 2 * MAX_LINE;
/// Socket mode: the owner and its group (`audio` in the shipped unit) may connect.
const SOCKET_MODE: u32 = 0o660;
/// How long `rtpmidid ctl` waits for the daemon's answer.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is sent: the client hung up, or broke the protocol.
    closing: bool,
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<SourceId, Client>,
}

impl Server {
    /// Creates the socket (and its folder if missing), mode 0660, and registers it. A stale
    /// socket file left by a daemon that died is replaced; a live one is an error.
    pub fn start(path: &Path, ctx: &mut Ctx) -> io::Result<Server> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    "another rtpmidid answers there",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        listener.set_nonblocking(true)?;
        ctx.register(listener.as_raw_fd(), Interest::READABLE, on_accept)?;
        info!("control socket at {}", path.display());
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn on_accept(daemon: &mut Daemon, ctx: &mut Ctx, _event: reactor::Event) {
    let Some(server) = daemon.ops.control.as_mut() else {
        return;
    };
    loop {
        let stream = match server.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                warn!("control socket: accept: {e}");
                break;
            }
        };
        if server.clients.len() >= MAX_CLIENTS {
            debug!("control socket: too many clients, one refused");
            continue;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            debug!("control socket: {e}");
            continue;
        }
        match ctx.register(
            stream.as_raw_fd(),
            Interest::READABLE | Interest::WRITABLE,
            on_client,
        ) {
            Ok(source) => {
                server.clients.insert(
                    source,
                    Client {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        closing: false,
                    },
                );
            }
            Err(e) => warn!("control socket: cannot register a client: {e}"),
        }
    }
}

/// Reads what the client sent (within the budget) and returns the complete lines.
fn read_lines(client: &mut Client) -> (Vec<Vec<u8>>, bool) {
    let mut buf = [0u8; 8192];
    let mut read = 0;
    let mut more = false;
    while !client.closing {
        if read >= READ_BUDGET {
            more = true;
            break;
        }
        match client.stream.read(&mut buf) {
            Ok(0) => client.closing = true,
            Ok(n) => {
                read += n;
                client.input.extend_from_slice(&buf[..n]);
                if client.input.len() > MAX_LINE && !client.input.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => client.closing = true,
        }
    }
    let mut lines = Vec::new();
    while let Some(end) = client.input.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = client.input.drain(..=end).collect();
        lines.push(line);
    }
    if client.input.len() > MAX_LINE {
        // Answered as one bad line below; nothing after it can be trusted to be in step.
        lines.push(std::mem::take(&mut client.input));
        client.closing = true;
    }
    (lines, more)
}

fn on_client(daemon: &mut Daemon, ctx: &mut Ctx, event: reactor::Event) {
    let Some(client) = daemon
        .ops
        .control
        .as_mut()
        .and_then(|s| s.clients.get_mut(&event.source))
    else {
        return;
    };
    let (lines, more) = read_lines(client);
    let answers: Vec<String> = lines
        .iter()
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| answer_line(daemon, ctx, line).to_string() + "\n")
        .collect();
    let Some(server) = daemon.ops.control.as_mut() else {
        return;
    };
    let Some(client) = server.clients.get_mut(&event.source) else {
        return;
    };
    for a in answers {
        client.output.extend_from_slice(a.as_bytes());
    }
    let mut broken = false;
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            Ok(n) => {
                client.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    if client.output.len() > MAX_PENDING_OUTPUT {
        warn!("control socket: a client does not read its answers; dropping it");
        broken = true;
    }
    if broken || (client.closing && client.output.is_empty()) {
        if let Some(client) = server.clients.remove(&event.source) {
            let _ = ctx.deregister(event.source);
            drop(client);
        }
    } else if more {
        let _ = ctx.reregister(event.source, Interest::READABLE | Interest::WRITABLE);
    }
}

fn error(message: impl Into<String>) -> Value {
    Value::object([
        ("ok", Value::Bool(false)),
        ("error", Value::String(message.into())),
    ])
}

fn ok(mut pairs: Vec<(&str, Value)>) -> Value {
    pairs.insert(0, ("ok", Value::Bool(true)));
    Value::object(pairs)
}

fn answer_line(daemon: &mut Daemon, ctx: &mut Ctx, line: &[u8]) -> Value {
    if line.len() > MAX_LINE {
        return error(format!("request longer than {MAX_LINE} bytes"));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return error("request is not UTF-8");
    };
    match json::parse(text) {
        Ok(request) => answer(daemon, ctx, &request),
        Err(e) => error(format!("bad JSON: {e}")),
    }
}

/// One request, one answer.
pub fn answer(daemon: &mut Daemon, ctx: &mut Ctx, request: &Value) -> Value {
    let Some(cmd) = request.get("cmd").and_then(Value::as_str) else {
        return error("a request is an object with a \"cmd\" string");
    };
    match cmd {
        "status" => status_json(&daemon.status()),
        "peers" => ok(vec![(
            "peers",
            Value::Array(daemon.peers().iter().map(peer_json).collect()),
        )]),
        "connect" => {
            let Some(host) = request.get("host").and_then(Value::as_str) else {
                return error("connect needs a \"host\"");
            };
            let port = match request.get("port") {
                None => crate::cli::DEFAULT_PORT,
                Some(p) => match p.as_u64().filter(|p| (1..65535).contains(p)) {
                    Some(p) => p as u16,
                    None => return error("\"port\" must be a number from 1 to 65534"),
                },
            };
            let name = match request.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) if !n.trim().is_empty() => Some(n.clone()),
                Some(_) => return error("\"name\" must be a non-empty string"),
            };
            if host.is_empty() || host.contains(char::is_whitespace) {
                return error("bad \"host\"");
            }
            let target = ConnectTarget {
                name,
                host: host.to_string(),
                port,
            };
            match daemon.connect_peer(ctx, target) {
                Ok(name) => ok(vec![("name", Value::from(name))]),
                Err(e) => error(e),
            }
        }
        "disconnect" => {
            let result = match (request.get("id"), request.get("name")) {
                (Some(id), None) => {
                    let key = match id {
                        Value::String(s) => parse_peer_id(s),
                        other => other.as_u64().and_then(|n| parse_peer_id(&n.to_string())),
                    };
                    match key {
                        Some(key) => daemon.disconnect_id(ctx, key),
                        None => return error("\"id\" must be a session id as peers shows it"),
                    }
                }
                (None, Some(Value::String(name))) => daemon.disconnect_name(ctx, name),
                _ => return error("disconnect needs an \"id\" number or a \"name\" string"),
            };
            match result {
                Ok(name) => ok(vec![("name", Value::from(name))]),
                Err(e) => error(e),
            }
        }
        "export" | "unexport" => {
            let Some(port) = request.get("port").and_then(Value::as_str) else {
                return error(format!("{cmd} needs a \"port\": \"client:port\""));
            };
            let Some(addr) = crate::seq::SeqAddr::parse(port) else {
                return error(format!("bad ALSA port {port:?}: use client:port numbers"));
            };
            match daemon.export_local(ctx, addr, cmd == "export") {
                Ok(name) => ok(vec![
                    ("name", Value::from(name)),
                    ("port", Value::from(port)),
                ]),
                Err(e) => error(e),
            }
        }
        other => error(format!(
            "unknown cmd {other:?} (status, peers, connect, disconnect, export, unexport)"
        )),
    }
}

fn status_json(s: &Status) -> Value {
    ok(vec![
        ("name", Value::from(s.name.clone())),
        ("version", Value::from(env!("CARGO_PKG_VERSION"))),
        ("alsa_name", Value::from(s.alsa_name.clone())),
        ("pid", Value::from(u64::from(std::process::id()))),
        ("port", Value::from(u64::from(s.port))),
        ("uptime_s", Value::from(s.uptime.as_secs())),
        ("sessions", Value::from(s.sessions as u64)),
        ("connected", Value::from(s.connected as u64)),
        ("connections", Value::from(s.connections as u64)),
        ("exports", Value::from(s.exports as u64)),
        ("hub", Value::from(s.hub)),
        ("alsa", Value::from(s.alsa)),
        (
            "config",
            Value::from(s.config.as_ref().map(|p| p.display().to_string())),
        ),
        (
            "dropped",
            Value::object([
                ("malformed", Value::from(s.dropped.malformed)),
                ("unknown_session", Value::from(s.dropped.unknown_session)),
                ("refused", Value::from(s.dropped.refused)),
            ]),
        ),
    ])
}

fn peer_json(p: &Peer) -> Value {
    Value::object([
        // A number for sessions of the main port, "L.S" for those of an exported port.
        (
            "id",
            p.id.map_or(Value::Null, |key| match peer_id(key).parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(peer_id(key)),
            }),
        ),
        ("name", Value::from(p.name.clone())),
        ("connection", Value::from(p.connection.clone())),
        ("address", Value::from(p.address.clone())),
        ("state", Value::from(p.state)),
        ("role", Value::from(p.role)),
        (
            "latency_ms",
            Value::from(p.latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)),
        ),
        ("sent", Value::from(p.stats.packets_sent)),
        ("received", Value::from(p.stats.packets_received)),
        ("lost", Value::from(p.stats.packets_lost)),
        ("journal_repairs", Value::from(p.stats.journal_repairs)),
    ])
}

// ---- the client: `rtpmidid ctl` ----

#[derive(Clone, Debug, PartialEq)]
pub struct CtlOptions {
    pub control: PathBuf,
    pub json: bool,
    pub request: Value,
}

const CTL_USAGE: &str = "Usage: rtpmidid ctl [--control PATH] [--json] COMMAND\n\n\
    Commands:\n  status\n  peers\n  connect HOST:PORT [NAME]   (also NAME@HOST:PORT)\n  \
    disconnect ID|NAME\n  export CLIENT:PORT\n  unexport CLIENT:PORT";

fn ctl_getopts() -> getopts::Options {
    let mut spec = getopts::Options::new();
    spec.optopt(
        "",
        "control",
        "control socket (default /run/rtpmidid/control.sock)",
        "PATH",
    );
    spec.optflag("", "json", "print the daemon's JSON answer");
    spec.optflag("h", "help", "print this help");
    spec
}

pub fn ctl_usage() -> String {
    ctl_getopts().usage(CTL_USAGE)
}

/// Parses the arguments after `ctl`.
pub fn parse_ctl(args: &[String]) -> Result<CtlOptions, String> {
    let m = ctl_getopts().parse(args).map_err(|e| e.to_string())?;
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    let cmd = |c: &str| Value::object([("cmd", Value::from(c))]);
    let request = match words.as_slice() {
        ["status"] => cmd("status"),
        ["peers"] => cmd("peers"),
        ["connect", target, rest @ ..] if rest.len() <= 1 => {
            let mut t = ConnectTarget::parse(target)?;
            if let Some(name) = rest.first() {
                t.name = Some(name.to_string());
            }
            let mut pairs = vec![
                ("cmd", Value::from("connect")),
                ("host", Value::from(t.host)),
                ("port", Value::from(u64::from(t.port))),
            ];
            if let Some(name) = t.name {
                pairs.push(("name", Value::from(name)));
            }
            Value::object(pairs)
        }
        ["disconnect", who] => match (who.parse::<u64>(), parse_peer_id(who)) {
            (Ok(id), _) => Value::object([("cmd", Value::from("disconnect")), ("id", id.into())]),
            (Err(_), Some(_)) => Value::object([
                ("cmd", Value::from("disconnect")),
                ("id", Value::from(*who)),
            ]),
            (Err(_), None) => Value::object([
                ("cmd", Value::from("disconnect")),
                ("name", Value::from(*who)),
            ]),
        },
        [cmd @ ("export" | "unexport"), port] => {
            Value::object([("cmd", Value::from(*cmd)), ("port", Value::from(*port))])
        }
        [] => return Err("ctl needs a command".into()),
        _ => {
            return Err(format!(
                "bad ctl command {:?}\n{CTL_USAGE}",
                words.join(" ")
            ))
        }
    };
    Ok(CtlOptions {
        control: m
            .opt_str("control")
            .map_or_else(|| PathBuf::from(DEFAULT_CONTROL), PathBuf::from),
        json: m.opt_present("json"),
        request,
    })
}

/// Sends one request and waits (with a deadline) for its answer.
pub fn request(path: &Path, request: &Value) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is rtpmidid running? see --control)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(CTL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CTL_TIMEOUT)))
        .and_then(|()| stream.write_all(format!("{request}\n").as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .take(MAX_PENDING_OUTPUT as u64)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from the daemon: {e}"))?;
    json::parse(&line).map_err(|e| format!("the daemon's answer is not JSON ({e}): {line:?}"))
}

/// `rtpmidid ctl ...`: 0 on success, 1 when the daemon says no or cannot be reached.
pub fn run_ctl(options: &CtlOptions) -> ExitCode {
    let answer = match request(&options.control, &options.request) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("rtpmidid ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let success = answer.get("ok").and_then(Value::as_bool) == Some(true);
    if options.json {
        println!("{answer}");
    } else if !success {
        let message = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("failed");
        eprintln!("rtpmidid ctl: {message}");
    } else {
        print!("{}", render(&options.request, &answer));
    }
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The readable form of an answer.
fn render(request: &Value, answer: &Value) -> String {
    let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
    match cmd {
        "peers" => {
            let header = [
                "ID", "NAME", "ADDRESS", "STATE", "ROLE", "LATENCY", "SENT", "RECEIVED", "LOST",
                "REPAIRS",
            ];
            let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
            for p in answer.get("peers").and_then(Value::as_array).unwrap_or(&[]) {
                let name = match (p.get("name").and_then(Value::as_str), p.get("connection")) {
                    (Some(n), _) if !n.is_empty() => n.to_string(),
                    (_, c) => text(c),
                };
                let latency = match p.get("latency_ms").and_then(Value::as_f64) {
                    Some(ms) => format!("{ms:.2} ms"),
                    None => "-".into(),
                };
                rows.push(vec![
                    text(p.get("id")),
                    name,
                    text(p.get("address")),
                    text(p.get("state")),
                    text(p.get("role")),
                    latency,
                    text(p.get("sent")),
                    text(p.get("received")),
                    text(p.get("lost")),
                    text(p.get("journal_repairs")),
                ]);
            }
            table(&rows)
        }
        "status" => {
            let mut out = String::new();
            for key in [
                "name",
                "version",
                "pid",
                "port",
                "uptime_s",
                "sessions",
                "connected",
                "connections",
                "exports",
                "hub",
                "alsa",
                "alsa_name",
                "config",
            ] {
                out += &format!("{:<12} {}\n", format!("{key}:"), text(answer.get(key)));
            }
            if let Some(Value::Object(d)) = answer.get("dropped") {
                let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
                out += &format!("{:<12} {}\n", "dropped:", parts.join(", "));
            }
            out
        }
        "connect" => format!("connecting: {}\n", text(answer.get("name"))),
        "disconnect" => format!("disconnected: {}\n", text(answer.get("name"))),
        "export" => format!(
            "exporting {} as {}\n",
            text(answer.get("port")),
            text(answer.get("name"))
        ),
        "unexport" => format!("no longer exporting {}\n", text(answer.get("port"))),
        _ => format!("{answer}\n"),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(args: &str) -> Result<CtlOptions, String> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        parse_ctl(&args)
    }

    #[test]
    fn ctl_arguments_become_requests() {
        let o = ctl("--control /tmp/x.sock --json status").unwrap();
        assert_eq!(o.control, PathBuf::from("/tmp/x.sock"));
        assert!(o.json);
        assert_eq!(o.request.to_string(), r#"{"cmd":"status"}"#);
        assert_eq!(
            ctl("peers").unwrap().control,
            PathBuf::from(DEFAULT_CONTROL)
        );
        assert_eq!(
            ctl("connect 10.0.0.2:5006 Piano")
                .unwrap()
                .request
                .to_string(),
            r#"{"cmd":"connect","host":"10.0.0.2","port":5006,"name":"Piano"}"#
        );
        assert_eq!(
            ctl("connect Piano@[::1]:5006").unwrap().request.to_string(),
            r#"{"cmd":"connect","host":"::1","port":5006,"name":"Piano"}"#
        );
        assert_eq!(
            ctl("disconnect 3").unwrap().request.to_string(),
            r#"{"cmd":"disconnect","id":3}"#
        );
        assert_eq!(
            ctl("disconnect Piano").unwrap().request.to_string(),
            r#"{"cmd":"disconnect","name":"Piano"}"#
        );
        assert_eq!(
            ctl("export 20:0").unwrap().request.to_string(),
            r#"{"cmd":"export","port":"20:0"}"#
        );
        assert_eq!(
            ctl("unexport 20:0").unwrap().request.to_string(),
            r#"{"cmd":"unexport","port":"20:0"}"#
        );
        for bad in [
            "",
            "frob",
            "connect",
            "connect host",
            "disconnect",
            "status x",
            "--bogus status",
        ] {
            assert!(ctl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_render_as_a_table() {
        let answer = json::parse(
            r#"{"ok":true,"peers":[{"id":1,"name":"Stage","connection":null,
                "address":"127.0.0.1:5004","state":"connected","role":"initiator",
                "latency_ms":0.123,"sent":10,"received":12,"lost":0,"journal_repairs":0},
                {"id":null,"name":"","connection":"piano","address":"h:5004",
                "state":"waiting","role":"initiator","latency_ms":null,"sent":0,
                "received":0,"lost":0,"journal_repairs":0}]}"#,
        )
        .unwrap();
        let out = render(&ctl("peers").unwrap().request, &answer);
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

    #[test]
    fn seq_addresses() {
        let addr = crate::seq::SeqAddr {
            client: 20,
            port: 0,
        };
        assert_eq!(crate::seq::SeqAddr::parse("20:0"), Some(addr));
        assert_eq!(crate::seq::SeqAddr::parse("x:0"), None);
        assert_eq!(crate::seq::SeqAddr::parse("300:0"), None);
    }
}
