//! The control socket, transport only: a unix stream socket where each request and each answer
//! is one line (the protocol is `crate::ctl::proto`). The daemon supplies what answers: a
//! [`Handler`].
//!
//! The daemon never waits on a client: sockets are non-blocking, a line longer than
//! [`MAX_LINE`] ends the connection after an error answer, and a client that does not read its
//! answers is dropped once [`MAX_PENDING_OUTPUT`] bytes wait for it.
use std::collections::HashMap;
use std::hash::Hash;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use reactor::{Context, Interest, SourceId};

use crate::ctl::proto::{Reply, Request, MAX_LINE};

/// Answers waiting for a slow client before it is dropped.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Clients at once; more are refused.
const MAX_CLIENTS: usize = 32;
/// Bytes read from one client per wakeup, so one client cannot hold the loop.
const READ_BUDGET: usize = 2 * MAX_LINE;
/// Socket mode: the owner and its group (`audio` in the shipped unit) may connect.
const SOCKET_MODE: u32 = 0o660;

/// What the loop's state provides to serve the control socket.
pub trait Handler: Sized + 'static {
    type Timer: Eq + Hash + Clone;

    /// The server, while the socket is open.
    fn control_server(&mut self) -> Option<&mut Server>;

    /// One request, one reply.
    fn handle(&mut self, ctx: &mut Context<Self, Self::Timer>, request: Request) -> Reply;
}

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
    pub fn start<H: Handler>(path: &Path, ctx: &mut Context<H, H::Timer>) -> io::Result<Server> {
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
        ctx.register(listener.as_raw_fd(), Interest::READABLE, on_accept::<H>)?;
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

fn on_accept<H: Handler>(state: &mut H, ctx: &mut Context<H, H::Timer>, _event: reactor::Event) {
    let Some(server) = state.control_server() else {
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
            on_client::<H>,
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

fn on_client<H: Handler>(state: &mut H, ctx: &mut Context<H, H::Timer>, event: reactor::Event) {
    let Some(client) = state
        .control_server()
        .and_then(|s| s.clients.get_mut(&event.source))
    else {
        return;
    };
    let (lines, more) = read_lines(client);
    let answers: Vec<String> = lines
        .iter()
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            let reply = match Request::parse(line) {
                Ok(request) => state.handle(ctx, request),
                Err(e) => Reply::Error(e),
            };
            reply.to_json().to_string() + "\n"
        })
        .collect();
    let Some(server) = state.control_server() else {
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
