//! The control socket, transport only: a unix stream socket where each request and each answer
//! is one line (the protocol is `crate::ctl::proto`). The daemon supplies what answers: a
//! [`Handler`].
//!
//! The daemon never waits on a client: sockets are non-blocking; a client gets one answer at a
//! time, sent as the socket takes it, however long; a line longer than [`MAX_LINE`] ends the
//! connection after an error answer; a client that keeps sending without reading its answers is
//! dropped once [`MAX_PENDING_INPUT`] bytes of requests wait; one silent for [`IDLE_TIMEOUT`] is
//! dropped. Only root, the daemon's user and members of the socket's group are served, checked
//! with the caller's credentials (`SO_PEERCRED`) on top of the socket file's mode.
use std::collections::HashMap;
use std::hash::Hash;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use reactor::{Context, Interest, SourceId};

use crate::ctl::proto::{Reply, Request, MAX_LINE};

/// Requests waiting behind an unread answer before the client is dropped.
pub const MAX_PENDING_INPUT: usize = 1 << 20;
/// A client silent this long (sending nothing, reading nothing) is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// The answers not sent yet, from `sent` on.
    output: Vec<u8>,
    sent: usize,
    /// Close once `output` is sent: the client hung up, or broke the protocol.
    closing: bool,
    /// When it last sent or took something.
    active: Instant,
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<SourceId, Client>,
    /// The socket file's group: its members may connect.
    group: u32,
    /// Ticks while clients are connected, to drop the idle ones.
    ticker: TimerFd,
    ticking: bool,
    idle_timeout: Duration,
}

impl Server {
    /// [`Server::start`] for the daemon: a socket asked for explicitly (`required`) must
    /// open; the default one may fail (no /run/rtpmidid for an ordinary user) with a warning.
    pub fn open<H: Handler>(
        path: &Path,
        required: bool,
        ctx: &mut Context<H, H::Timer>,
    ) -> Result<Option<Server>, String> {
        match Server::start(path, ctx) {
            Ok(server) => Ok(Some(server)),
            Err(e) if required => Err(format!(
                "cannot open the control socket {}: {e}",
                path.display()
            )),
            Err(e) => {
                let path = path.display();
                warn!("no control socket: cannot open {path}: {e} (set one with --control)");
                Ok(None)
            }
        }
    }

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
        let group = std::fs::metadata(path)?.gid();
        listener.set_nonblocking(true)?;
        let ticker = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        ctx.register(listener.as_raw_fd(), Interest::READABLE, on_accept::<H>)?;
        ctx.register(ticker.as_fd().as_raw_fd(), Interest::READABLE, on_tick::<H>)?;
        info!("control socket at {}", path.display());
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            group,
            ticker,
            ticking: false,
            idle_timeout: IDLE_TIMEOUT,
        })
    }

    /// Ticks twice per idle timeout while there are clients; not at all without.
    fn set_ticking(&mut self) {
        let wanted = !self.clients.is_empty();
        if wanted == self.ticking {
            return;
        }
        let result = if wanted {
            let period = TimeSpec::from_duration(self.idle_timeout / 2);
            self.ticker
                .set(Expiration::Interval(period), TimerSetTimeFlags::empty())
        } else {
            self.ticker.unset()
        };
        match result {
            Ok(()) => self.ticking = wanted,
            Err(e) => warn!("control socket: idle timer: {e}"),
        }
    }

    fn drop_client<H: Handler>(&mut self, ctx: &mut Context<H, H::Timer>, source: SourceId) {
        if self.clients.remove(&source).is_some() {
            let _ = ctx.deregister(source);
        }
        self.set_ticking();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who may use the socket: root, the daemon's user, and members of the socket's group.
/// `groups` gives the caller's supplementary groups, looked up only when needed.
fn admits(uid: u32, gid: u32, own_uid: u32, group: u32, groups: impl FnOnce() -> Vec<u32>) -> bool {
    uid == 0 || uid == own_uid || gid == group || groups().contains(&group)
}

/// A process's supplementary groups, from `/proc` (no user database lookup, which may block).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
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
        let own_uid = nix::unistd::geteuid().as_raw();
        match getsockopt(&stream, PeerCredentials) {
            Ok(c)
                if admits(c.uid(), c.gid(), own_uid, server.group, || {
                    supplementary_groups(c.pid())
                }) => {}
            Ok(c) => {
                info!(
                    "control socket: user {} refused (not root, the daemon's user or in group {})",
                    c.uid(),
                    server.group
                );
                continue;
            }
            Err(e) => {
                debug!("control socket: no credentials: {e}");
                continue;
            }
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
                        sent: 0,
                        closing: false,
                        active: Instant::now(),
                    },
                );
            }
            Err(e) => warn!("control socket: cannot register a client: {e}"),
        }
    }
    server.set_ticking();
}

/// Drops the clients silent for the idle timeout.
fn on_tick<H: Handler>(state: &mut H, ctx: &mut Context<H, H::Timer>, _event: reactor::Event) {
    let Some(server) = state.control_server() else {
        return;
    };
    // Consume the expiry count; the fd is non-blocking.
    let _ = server.ticker.wait();
    let now = Instant::now();
    let idle: Vec<SourceId> = server
        .clients
        .iter()
        .filter(|(_, c)| now.duration_since(c.active) >= server.idle_timeout)
        .map(|(source, _)| *source)
        .collect();
    for source in idle {
        debug!("control socket: an idle client dropped");
        server.drop_client(ctx, source);
    }
}

/// Reads what the client sent, within the budget; true if more may be waiting.
fn read_input(client: &mut Client) -> bool {
    let mut buf = [0u8; 8192];
    let mut read = 0;
    while !client.closing {
        if read >= READ_BUDGET {
            return true;
        }
        match client.stream.read(&mut buf) {
            Ok(0) => client.closing = true,
            Ok(n) => {
                read += n;
                client.active = Instant::now();
                client.input.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => client.closing = true,
        }
    }
    false
}

/// The next request line, if one is complete. A line too long to be one is taken whole, to be
/// answered with an error, and ends the connection: nothing after it is in step.
fn next_line(client: &mut Client) -> Option<Vec<u8>> {
    match client.input.iter().position(|&b| b == b'\n') {
        Some(end) if end < MAX_LINE => Some(client.input.drain(..=end).collect()),
        None if client.input.len() <= MAX_LINE => None,
        _ => {
            client.closing = true;
            Some(std::mem::take(&mut client.input))
        }
    }
}

/// Sends what the socket takes; false if the client is gone.
fn write_output(client: &mut Client) -> bool {
    while client.sent < client.output.len() {
        match client.stream.write(&client.output[client.sent..]) {
            Ok(n) => {
                client.sent += n;
                client.active = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    client.output.clear();
    client.sent = 0;
    true
}

fn client_of<H: Handler>(state: &mut H, source: SourceId) -> Option<&mut Client> {
    state.control_server()?.clients.get_mut(&source)
}

fn on_client<H: Handler>(state: &mut H, ctx: &mut Context<H, H::Timer>, event: reactor::Event) {
    let Some(mut c) = client_of(state, event.source) else {
        return;
    };
    let more = read_input(c);
    let mut alive = write_output(c);
    // One answer at a time: the next request waits until the last answer is sent.
    while alive && c.output.is_empty() {
        let Some(line) = next_line(c) else {
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match Request::parse(&line) {
            Ok(request) => state.handle(ctx, request),
            Err(e) => Reply::Error(e),
        };
        let Some(again) = client_of(state, event.source) else {
            return;
        };
        c = again;
        c.output = (reply.to_json().to_string() + "\n").into_bytes();
        alive = write_output(c);
    }
    let flooding = c.input.len() > MAX_PENDING_INPUT;
    if flooding {
        warn!("control socket: a client does not read its answers; dropping it");
    }
    let done = c.closing && c.output.is_empty();
    let Some(server) = state.control_server() else {
        return;
    };
    if !alive || flooding || done {
        server.drop_client(ctx, event.source);
    } else if more {
        let _ = ctx.reregister(event.source, Interest::READABLE | Interest::WRITABLE);
    }
}

#[cfg(test)]
mod tests {
    use std::thread::JoinHandle;

    use reactor::Reactor;

    use super::*;
    use crate::ctl::client::exchange;
    use crate::ctl::proto::PeerRow;

    /// A loop state that answers `peers` with `rows` rows.
    struct Fake {
        server: Option<Server>,
        rows: usize,
    }

    impl Handler for Fake {
        type Timer = ();

        fn control_server(&mut self) -> Option<&mut Server> {
            self.server.as_mut()
        }

        fn handle(&mut self, _ctx: &mut Context<Self, ()>, request: Request) -> Reply {
            let row = PeerRow {
                id: None,
                name: "A peer with a name of some length".into(),
                connection: Some("a connection".into()),
                address: "192.168.100.200:5004".into(),
                state: "connected".into(),
                role: "initiator".into(),
                protocol: "rtp-midi".into(),
                latency: Some(Duration::from_micros(1234)),
                sent: 123_456,
                received: 654_321,
                lost: 7,
                journal_repairs: 3,
            };
            match request {
                Request::Peers => Reply::Peers(vec![row; self.rows]),
                _ => Reply::Error("not here".into()),
            }
        }
    }

    fn on_timer(_: &mut Fake, _: &mut Context<Fake, ()>, _: ()) {}

    /// A server on a socket of its own (in a scratch folder, removed at the end) and its loop.
    struct Harness {
        reactor: Reactor<Fake, ()>,
        fake: Fake,
        dir: PathBuf,
    }

    impl Harness {
        fn new(tag: &str, rows: usize) -> Harness {
            let dir = std::env::temp_dir().join(format!("rtpmidid-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut reactor = Reactor::new(on_timer).unwrap();
            let server = Server::start(&dir.join("c.sock"), reactor.context()).unwrap();
            let fake = Fake {
                server: Some(server),
                rows,
            };
            Harness { reactor, fake, dir }
        }

        fn socket(&self) -> PathBuf {
            self.dir.join("c.sock")
        }

        /// Runs the loop until the client thread ends; its result.
        fn serve<T>(&mut self, client: JoinHandle<T>) -> T {
            let end = Instant::now() + Duration::from_secs(15);
            while !client.is_finished() {
                assert!(Instant::now() < end, "the client did not finish");
                let wait = Some(Duration::from_millis(10));
                self.reactor.run_once(&mut self.fake, wait).unwrap();
            }
            client.join().unwrap()
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.fake.server = None;
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn an_answer_past_a_mebibyte_is_streamed_whole() {
        let mut h = Harness::new("ctl-big", 6000);
        let socket = h.socket();
        let answer = h.serve(std::thread::spawn(move || {
            exchange(&socket, &Request::Peers)
        }));
        let answer = answer.unwrap();
        assert!(answer.to_string().len() > 1 << 20);
        match Reply::from_json(&Request::Peers, &answer) {
            Ok(Reply::Peers(rows)) => assert_eq!(rows.len(), 6000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_silent_client_is_dropped_after_the_idle_timeout() {
        let mut h = Harness::new("ctl-idle", 0);
        let timeout = Duration::from_millis(200);
        h.fake.server.as_mut().unwrap().idle_timeout = timeout;
        let socket = h.socket();
        let (waited, read) = h.serve(std::thread::spawn(move || {
            let mut s = UnixStream::connect(socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let start = Instant::now();
            let read = s.read(&mut [0u8; 16]).map_err(|e| e.kind());
            (start.elapsed(), read)
        }));
        assert_eq!(read, Ok(0), "hung up");
        assert!(waited >= timeout, "{waited:?}");
        assert!(h.fake.server.as_ref().unwrap().clients.is_empty());
    }

    #[test]
    fn callers_are_root_the_daemons_user_or_in_the_sockets_group() {
        let (daemon, audio) = (1000, 29);
        let none = Vec::new;
        assert!(admits(0, 0, daemon, audio, none));
        assert!(admits(daemon, 100, daemon, audio, none));
        assert!(admits(1001, audio, daemon, audio, none));
        assert!(admits(1001, 100, daemon, audio, || vec![27, audio]));
        assert!(!admits(1001, 100, daemon, audio, || vec![27]));
        // Our own process's groups come from /proc.
        let own = supplementary_groups(std::process::id() as i32);
        let expected: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(own, expected);
    }
}
