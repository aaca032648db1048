//! A listener's OS side: its UDP sockets, their registrations with the loop, and the protocol
//! endpoint whose datagrams they carry — AppleMIDI (a control/data port pair per address) or
//! Network MIDI 2.0 (one port per address). The rest of the shell sees sessions and MIDI 1.0
//! messages whatever the protocol.
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info};
use protocol::admission::{AddressFilter, Refusal};
use protocol::endpoint::{AcceptPolicy, DropStats, Dropped, Endpoint, SessionId};
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::midi2;
use protocol::midi2::ump::{StreamResponder, ToMidi1, Ump};
use protocol::session::{self, DisconnectReason, SocketKind};
use protocol::time::{Duration, Instant};
use reactor::{Interest, SourceId};

use super::{on_control, on_data, on_midi2, Ctx, MAX_DATAGRAM};
use crate::ctl::proto::PeerRow;
use crate::net::{self, PortPair, UdpPort};
use crate::router::Ended;

/// Datagrams read from one socket before the loop looks at the others, so one flooding source
/// cannot starve the rest.
const READ_BATCH: usize = 256;
/// Export listeners take the first free port pair above the main one, this many tries.
const FREE_PAIR_TRIES: u16 = 64;
/// MIDI 2.0 group our MIDI 1.0 messages travel in.
const GROUP: u8 = 0;

/// What a session did, in the shell's terms.
pub enum Happening {
    Connected {
        name: String,
        addr: SocketAddr,
    },
    /// MIDI from the peer; AppleMIDI gives the RTP timestamp it was stamped with.
    Midi {
        message: MidiMessage,
        timestamp: Option<u32>,
        /// What another hub said this event is (`protocol::hubtag`).
        tag: Option<Tag>,
    },
    /// A clock sync (AppleMIDI CK, with the offset of the peer's clock) or a ping (MIDI 2.0).
    Latency {
        rtt: Duration,
        offset_ticks: Option<i64>,
    },
    Loss {
        lost: u64,
    },
    Ended {
        ended: Ended,
        /// For the log; `orderly` ends (closed, BY) are logged at info level.
        reason: String,
        orderly: bool,
    },
}

pub struct Listener {
    pub name: String,
    server: Server,
    sources: Vec<SourceId>,
}

// A handful per daemon: their sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Server {
    AppleMidi {
        endpoint: Endpoint,
        sockets: Vec<PortPair>,
        /// The tag a hub peer sent, for its next event.
        tags: BTreeMap<SessionId, Tag>,
        batch: SendBatch,
    },
    Midi2(Midi2),
}

/// A Network MIDI 2.0 endpoint and what turns its UMPs into MIDI 1.0 messages.
struct Midi2 {
    endpoint: midi2::endpoint::Endpoint,
    /// Who may talk to it at all (the MIDI 2.0 endpoint only counts sessions).
    addresses: AddressFilter,
    sockets: Vec<UdpPort>,
    responder: StreamResponder,
    translators: BTreeMap<u64, ToMidi1>,
    /// Translated happenings not taken yet.
    happenings: VecDeque<(SessionId, Happening)>,
    scratch: Vec<midi2::ump::GroupMessage>,
    answers: Vec<Ump>,
}

impl Listener {
    pub fn apple_midi(name: &str, endpoint: Endpoint, sockets: Vec<PortPair>) -> Listener {
        Listener {
            name: name.to_string(),
            server: Server::AppleMidi {
                endpoint,
                sockets,
                tags: BTreeMap::new(),
                batch: SendBatch::new(),
            },
            sources: Vec::new(),
        }
    }

    pub fn midi2(
        name: &str,
        endpoint: midi2::endpoint::Endpoint,
        addresses: AddressFilter,
        sockets: Vec<UdpPort>,
    ) -> Self {
        let info = midi2::ump::EndpointInfo::new(name, &product_id(name));
        Listener {
            name: name.to_string(),
            server: Server::Midi2(Midi2 {
                endpoint,
                addresses,
                sockets,
                responder: StreamResponder::new(info),
                translators: BTreeMap::new(),
                happenings: VecDeque::new(),
                scratch: Vec::new(),
                answers: Vec::new(),
            }),
            sources: Vec::new(),
        }
    }

    /// Watches its sockets, once.
    pub fn register(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        if !self.sources.is_empty() {
            return Ok(());
        }
        match &self.server {
            Server::AppleMidi { sockets, .. } => {
                for pair in sockets {
                    info!(
                        "{} listening on {} and {}",
                        self.name,
                        pair.control.local_addr()?,
                        pair.data.local_addr()?
                    );
                    let fd = pair.control.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_control)?);
                    let fd = pair.data.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_data)?);
                }
            }
            Server::Midi2(m) => {
                for port in &m.sockets {
                    info!(
                        "{} (MIDI 2.0) listening on {}",
                        self.name,
                        port.socket.local_addr()?
                    );
                    let fd = port.socket.as_raw_fd();
                    self.sources
                        .push(ctx.register(fd, Interest::READABLE, on_midi2)?);
                }
            }
        }
        Ok(())
    }

    pub fn deregister(&mut self, ctx: &mut Ctx) {
        for source in self.sources.drain(..) {
            let _ = ctx.deregister(source);
        }
    }

    /// Is `fd` one of its sockets?
    pub fn owns(&self, fd: RawFd) -> bool {
        match &self.server {
            Server::AppleMidi { sockets, .. } => sockets
                .iter()
                .any(|p| p.control.as_raw_fd() == fd || p.data.as_raw_fd() == fd),
            Server::Midi2(m) => m.sockets.iter().any(|p| p.socket.as_raw_fd() == fd),
        }
    }

    /// Its (control) port.
    pub fn port(&self) -> Option<u16> {
        let addr = match &self.server {
            Server::AppleMidi { sockets, .. } => sockets.first()?.control.local_addr(),
            Server::Midi2(m) => m.sockets.first()?.socket.local_addr(),
        };
        addr.ok().map(|a| a.port())
    }

    pub fn protocol(&self) -> &'static str {
        match self.server {
            Server::AppleMidi { .. } => "rtp-midi",
            Server::Midi2(_) => "midi2",
        }
    }

    /// Reads up to `batch` datagrams from `fd` if it is one of ours (`port`: which AppleMIDI
    /// socket; ignored for MIDI 2.0), answering as it goes; false if `fd` is not ours.
    /// Dropped datagrams go to `dropped`.
    pub fn read(
        &mut self,
        now: Instant,
        (fd, port): (RawFd, SocketKind),
        (recv_buf, send_buf): (&mut [u8], &mut [u8]),
        dropped: &mut dyn FnMut(Dropped, SocketAddr, usize),
    ) -> bool {
        match &mut self.server {
            Server::AppleMidi {
                endpoint,
                sockets,
                batch,
                ..
            } => {
                let Some(pair) = sockets
                    .iter()
                    .position(|p| socket(p, port).as_raw_fd() == fd)
                else {
                    return false;
                };
                for _ in 0..READ_BATCH {
                    let Some((len, from)) = receive(socket(&sockets[pair], port), recv_buf) else {
                        break;
                    };
                    match endpoint.handle_datagram(now, port, from, &recv_buf[..len]) {
                        // Held for a half-open slot, answered then: not a drop.
                        Ok(_) | Err(Dropped::Deferred) => {}
                        Err(why) => dropped(why, from, len),
                    }
                    flush_apple_midi(endpoint, sockets, batch, now);
                }
            }
            Server::Midi2(m) => {
                let Some(i) = m.sockets.iter().position(|p| p.socket.as_raw_fd() == fd) else {
                    return false;
                };
                for _ in 0..READ_BATCH {
                    let Some((len, from)) = receive(&m.sockets[i].socket, recv_buf) else {
                        break;
                    };
                    if !m.addresses.admits(from.ip()) {
                        dropped(Dropped::Refused, from, len);
                        continue;
                    }
                    if let Err(why) = m.endpoint.handle_datagram(now, from, &recv_buf[..len]) {
                        let why = match why {
                            midi2::endpoint::Dropped::Malformed => Dropped::Malformed,
                            midi2::endpoint::Dropped::UnknownPeer => Dropped::UnknownSession,
                            midi2::endpoint::Dropped::Refused => Dropped::Refused,
                        };
                        dropped(why, from, len);
                    }
                    flush_midi2(m, now, send_buf);
                }
            }
        }
        true
    }

    /// Sends what its sessions want to send, each from the socket that reaches it.
    pub fn flush(&mut self, now: Instant, buf: &mut [u8]) {
        match &mut self.server {
            Server::AppleMidi {
                endpoint,
                sockets,
                batch,
                ..
            } => flush_apple_midi(endpoint, sockets, batch, now),
            Server::Midi2(m) => flush_midi2(m, now, buf),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.handle_timeout(now),
            Server::Midi2(m) => m.endpoint.handle_timeout(now),
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.poll_timeout(),
            Server::Midi2(m) => m.endpoint.poll_timeout(),
        }
    }

    /// What a session did, MIDI 2.0 UMPs already turned into MIDI 1.0 (stream messages about
    /// our endpoint are answered here).
    pub fn poll_happening(&mut self) -> Option<(SessionId, Happening)> {
        match &mut self.server {
            Server::AppleMidi { endpoint, tags, .. } => loop {
                let (id, event) = endpoint.poll_event()?;
                let from_hub = endpoint.session(id).is_some_and(|s| s.links_hubs());
                let mut happening = apple_midi_happening(event);
                if let Happening::Midi { message, tag, .. } = &mut happening {
                    if from_hub {
                        // A tag is kept for the event it precedes.
                        if let Some(t) = message_tag(message) {
                            tags.insert(id, t);
                            continue;
                        }
                        *tag = tags.remove(&id);
                    }
                }
                return Some((id, happening));
            },
            Server::Midi2(m) => m.poll_happening(),
        }
    }

    /// Its sessions, whatever their state.
    pub fn session_count(&self) -> usize {
        match &self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.session_count(),
            Server::Midi2(m) => m.endpoint.sessions().count(),
        }
    }

    pub fn poll_refusal(&mut self) -> Option<(SocketAddr, Refusal)> {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.poll_refusal(),
            Server::Midi2(_) => None,
        }
    }

    /// Sends `message` to session `id`, preceded by its `tag` if the peer is a hub.
    pub fn send_midi(&mut self, now: Instant, id: SessionId, message: &MidiMessage, tag: Tag) {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => {
                if let Some(s) = endpoint.session_mut(id) {
                    send_tagged(s, now, message, tag);
                }
            }
            Server::Midi2(m) => {
                if let Some(s) = m.endpoint.session_mut(midi2::endpoint::SessionId(id.0)) {
                    s.send_midi1(GROUP, message);
                }
            }
        }
    }

    /// Queues `message` for every connected session but `except`; hubs get its `tag` first.
    pub fn send_to_all(
        &mut self,
        now: Instant,
        except: Option<SessionId>,
        message: &MidiMessage,
        tag: Tag,
    ) {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => {
                for (id, session) in endpoint.sessions_mut() {
                    if Some(id) != except && session.is_connected() {
                        send_tagged(session, now, message, tag);
                    }
                }
            }
            Server::Midi2(m) => {
                for (id, session) in m.endpoint.sessions_mut() {
                    if Some(SessionId(id.0)) != except && session.is_connected() {
                        session.send_midi1(GROUP, message);
                    }
                }
            }
        }
    }

    /// Starts a session that invites `addr`.
    pub fn connect(&mut self, now: Instant, addr: SocketAddr) -> SessionId {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.connect(now, addr),
            Server::Midi2(m) => SessionId(m.endpoint.connect(now, addr).0),
        }
    }

    /// Ends a session (BY); returns its peer's name if it was there.
    pub fn close(&mut self, now: Instant, id: SessionId) -> Option<String> {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => {
                let s = endpoint.session_mut(id)?;
                s.close();
                Some(s.peer_name().to_string())
            }
            Server::Midi2(m) => {
                let s = m.endpoint.session_mut(midi2::endpoint::SessionId(id.0))?;
                s.close(now);
                Some(s.peer_name().to_string())
            }
        }
    }

    pub fn close_all(&mut self, now: Instant) {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.close_all(),
            Server::Midi2(m) => m.endpoint.close_all(now),
        }
    }

    /// Ends the sessions whose peer is named `name`; true if there was one.
    pub fn close_named(&mut self, now: Instant, name: &str) -> bool {
        let ids: Vec<SessionId> = self
            .rows()
            .into_iter()
            .filter(|(_, row)| row.name == name)
            .map(|(id, _)| id)
            .collect();
        for id in &ids {
            self.close(now, *id);
        }
        !ids.is_empty()
    }

    /// The AppleMIDI session clock at `now` (times playout); `None` for MIDI 2.0.
    pub fn clock_ticks(&self, id: SessionId, now: Instant) -> Option<u64> {
        match &self.server {
            Server::AppleMidi { endpoint, .. } => Some(endpoint.session(id)?.clock_ticks(now)),
            Server::Midi2(_) => None,
        }
    }

    /// Its sessions as `ctl peers` shows them (id and connection filled in by the caller).
    pub fn rows(&self) -> Vec<(SessionId, PeerRow)> {
        let protocol = self.protocol().to_string();
        let row = |name: &str, address: String, state: &str, role: &str| PeerRow {
            id: None,
            name: name.to_string(),
            connection: None,
            address,
            state: state.into(),
            role: role.into(),
            protocol: protocol.clone(),
            latency: None,
            sent: 0,
            received: 0,
            lost: 0,
            journal_repairs: 0,
        };
        match &self.server {
            Server::AppleMidi { endpoint, .. } => endpoint
                .sessions()
                .map(|(id, s)| {
                    let role = match s.role() {
                        session::Role::Initiator => "initiator",
                        session::Role::Responder => "responder",
                    };
                    let state = match (s.is_connected(), s.role()) {
                        (true, _) => "connected",
                        (false, session::Role::Initiator) => "inviting",
                        (false, session::Role::Responder) => "accepting",
                    };
                    let stats = s.stats();
                    let mut r = row(s.peer_name(), s.peer_control().to_string(), state, role);
                    r.sent = stats.packets_sent;
                    r.received = stats.packets_received;
                    r.lost = stats.packets_lost;
                    r.journal_repairs = stats.journal_repairs;
                    (id, r)
                })
                .collect(),
            Server::Midi2(m) => m
                .endpoint
                .sessions()
                .map(|(id, s)| {
                    let role = match s.role() {
                        midi2::session::Role::Client => "initiator",
                        midi2::session::Role::Host => "responder",
                    };
                    let state = if s.is_connected() {
                        "connected"
                    } else {
                        "inviting"
                    };
                    let stats = s.stats();
                    let mut r = row(s.peer_name(), s.peer().to_string(), state, role);
                    r.sent = stats.datagrams_sent;
                    r.received = stats.datagrams_received;
                    r.lost = stats.lost;
                    r.journal_repairs = stats.repaired;
                    (SessionId(id.0), r)
                })
                .collect(),
        }
    }

    pub fn drops(&self) -> DropStats {
        match &self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.drops(),
            Server::Midi2(m) => {
                let d = m.endpoint.drops();
                DropStats {
                    malformed: d.malformed,
                    unknown_session: d.unknown_peer,
                    refused: d.refused,
                }
            }
        }
    }

    pub fn set_policy(&mut self, policy: AcceptPolicy) {
        match &mut self.server {
            Server::AppleMidi { endpoint, .. } => endpoint.set_policy(policy),
            Server::Midi2(m) => m.endpoint.set_policy(midi2_policy(&policy)),
        }
    }

    /// Name, timeouts and journal switch for its new AppleMIDI sessions.
    pub fn set_session_config(&mut self, config: session::Config) {
        if let Server::AppleMidi { endpoint, .. } = &mut self.server {
            endpoint.set_config(config);
        }
    }
}

impl Midi2 {
    fn poll_happening(&mut self) -> Option<(SessionId, Happening)> {
        while self.happenings.is_empty() {
            let (id, event) = self.endpoint.poll_event()?;
            let sid = SessionId(id.0);
            use midi2::session::Event;
            match event {
                Event::Connected { name, .. } => {
                    self.translators
                        .insert(id.0, ToMidi1::new(protocol::midi::MAX_SYSEX));
                    let addr = self.endpoint.session(id).map(|s| s.peer());
                    let addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    self.happenings
                        .push_back((sid, Happening::Connected { name, addr }));
                }
                Event::Ump(ump) => {
                    // Stream messages about our endpoint are answered, not forwarded.
                    self.answers.clear();
                    if self.responder.handle(&ump, &mut self.answers) {
                        if let Some(s) = self.endpoint.session_mut(id) {
                            for answer in self.answers.drain(..) {
                                s.send_ump(answer);
                            }
                        }
                        continue;
                    }
                    let Some(translator) = self.translators.get_mut(&id.0) else {
                        continue;
                    };
                    self.scratch.clear();
                    translator.translate(&ump, &mut self.scratch);
                    for m in self.scratch.drain(..) {
                        let message = m.message;
                        self.happenings.push_back((
                            sid,
                            Happening::Midi {
                                message,
                                timestamp: None,
                                tag: None,
                            },
                        ));
                    }
                }
                Event::Loss { lost } => {
                    // A SysEx cut by the loss must not be glued to what follows.
                    if let Some(t) = self.translators.get_mut(&id.0) {
                        t.abort();
                    }
                    self.happenings.push_back((sid, Happening::Loss { lost }));
                }
                Event::Latency { rtt } => self.happenings.push_back((
                    sid,
                    Happening::Latency {
                        rtt,
                        offset_ticks: None,
                    },
                )),
                Event::Disconnected { reason } => {
                    self.translators.remove(&id.0);
                    use midi2::session::DisconnectReason as R;
                    let orderly = matches!(reason, R::Closed | R::PeerBye(_));
                    self.happenings.push_back((
                        sid,
                        Happening::Ended {
                            ended: Ended::Other,
                            reason: format!("{reason:?}"),
                            orderly,
                        },
                    ));
                }
            }
        }
        self.happenings.pop_front()
    }
}

/// The hub tag `message` is, if it is one.
fn message_tag(message: &MidiMessage) -> Option<Tag> {
    match message {
        MidiMessage::SysEx(bytes) => Tag::parse(bytes),
        _ => None,
    }
}

/// `message` to `session`, after its tag when the peer is a hub (which forwards it on).
fn send_tagged(session: &mut session::Session, now: Instant, message: &MidiMessage, tag: Tag) {
    if session.links_hubs() {
        session.send_midi(now, &MidiMessage::SysEx(tag.emit().to_vec()));
    }
    session.send_midi(now, message);
}

fn apple_midi_happening(event: session::Event) -> Happening {
    use session::Event;
    match event {
        Event::Connected { name, addr, .. } => Happening::Connected { name, addr },
        Event::Midi(midi) => Happening::Midi {
            message: midi.message,
            timestamp: Some(midi.timestamp),
            tag: None,
        },
        Event::Latency { rtt, offset_ticks } => Happening::Latency {
            rtt,
            offset_ticks: Some(offset_ticks),
        },
        Event::Loss { lost } => Happening::Loss { lost },
        Event::Disconnected { reason } => Happening::Ended {
            ended: match reason {
                DisconnectReason::Replaced => Ended::Replaced,
                _ => Ended::Other,
            },
            reason: format!("{reason:?}"),
            orderly: matches!(
                reason,
                DisconnectReason::Closed | DisconnectReason::PeerEnded
            ),
        },
    }
}

/// The AppleMIDI policy's limits for a MIDI 2.0 endpoint (its addresses are checked by the
/// shell before a datagram reaches it).
pub fn midi2_policy(policy: &AcceptPolicy) -> midi2::endpoint::AcceptPolicy {
    midi2::endpoint::AcceptPolicy {
        max_sessions: policy.max_sessions.unwrap_or(usize::MAX),
        ..midi2::endpoint::AcceptPolicy::default()
    }
}

/// A product instance id for our UMP endpoint: stable for a name, as peers remember it.
pub fn product_id(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("rtpmidid-{hash:016x}")
}

pub fn socket(pair: &PortPair, port: SocketKind) -> &std::net::UdpSocket {
    match port {
        SocketKind::Control => &pair.control,
        SocketKind::Data => &pair.data,
    }
}

/// The first free port pair above `base`.
pub fn bind_free_pair(binds: &[IpAddr], base: u16) -> io::Result<Vec<PortPair>> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port pair");
    for step in 1..=FREE_PAIR_TRIES {
        let Some(port) = base.checked_add(2 * step) else {
            break;
        };
        match net::bind_all(binds, port) {
            Ok(sockets) => return Ok(sockets),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A datagram from `socket`, its sender as the protocols see it; `None` once drained.
fn receive(socket: &std::net::UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Ok((len, from)) => return Some((len, net::canonical(from))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // ICMP errors from earlier sends surface here; they concern no one datagram.
            Err(e) => debug!("receive: {e}"),
        }
    }
}

fn flush_apple_midi(
    endpoint: &mut Endpoint,
    sockets: &[PortPair],
    batch: &mut SendBatch,
    now: Instant,
) {
    while let Some(t) = endpoint.poll_transmit(now, batch.room()) {
        let Some(pair) = sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        let fd = socket(pair, t.port).as_raw_fd();
        batch.push(fd, pair.wire_addr(t.dst), t.len);
    }
    batch.send();
}

/// Datagrams sent with one `sendmmsg` at most.
const SEND_BATCH: usize = 64;

/// Datagrams sent together: one system call per batch and socket rather than one per
/// datagram, which counts when the hub sends a message to hundreds of peers. Sessions write
/// their datagrams in place, in `bytes`, one after the other.
struct SendBatch {
    /// Room for a batch and one more datagram of the largest size; its pages are touched
    /// only as far as datagrams reach.
    bytes: Vec<u8>,
    /// Bytes of `bytes` the datagrams take.
    used: usize,
    /// Each datagram's socket, start in `bytes`, length and destination.
    datagrams: Vec<(RawFd, usize, usize, socket2::SockAddr)>,
    /// The system call's headers for a run, kept: zeroing arrays for a whole batch at each
    /// call costs more than sending a lone datagram.
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    fn new() -> Self {
        SendBatch {
            bytes: vec![0; 2 * MAX_DATAGRAM],
            used: 0,
            datagrams: Vec::with_capacity(SEND_BATCH),
            iov: Vec::with_capacity(SEND_BATCH),
            msgs: Vec::with_capacity(SEND_BATCH),
        }
    }

    /// Where the next datagram is written: room for the largest, after those held (sent
    /// first if the batch is full).
    fn room(&mut self) -> &mut [u8] {
        if self.datagrams.len() == SEND_BATCH || self.bytes.len() - self.used < MAX_DATAGRAM {
            self.send();
        }
        &mut self.bytes[self.used..]
    }

    /// The `len` bytes last written at [`Self::room`] go to `dst` from socket `fd`.
    fn push(&mut self, fd: RawFd, dst: SocketAddr, len: usize) {
        self.datagrams.push((fd, self.used, len, dst.into()));
        self.used += len;
    }

    /// Sends what it holds, a `sendmmsg` for each run of datagrams from one socket; a datagram
    /// that fails is logged and skipped, as with `sendto`.
    fn send(&mut self) {
        let mut start = 0;
        while let Some(&(fd, ..)) = self.datagrams.get(start) {
            let run = self.datagrams[start..]
                .iter()
                .take_while(|d| d.0 == fd)
                .count();
            self.send_run(fd, start..start + run);
            start += run;
        }
        self.used = 0;
        self.datagrams.clear();
    }

    fn send_run(&mut self, fd: RawFd, run: std::ops::Range<usize>) {
        let datagrams = &self.datagrams[run];
        let n = datagrams.len();
        self.iov.clear();
        self.iov
            .extend(datagrams.iter().map(|(_, start, len, _)| libc::iovec {
                iov_base: self.bytes[*start..].as_ptr() as *mut libc::c_void,
                iov_len: *len,
            }));
        self.msgs.clear();
        for ((.., addr), iov) in datagrams.iter().zip(self.iov.iter_mut()) {
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = addr.len();
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            self.msgs.push(msg);
        }
        let mut done = 0;
        while done < n {
            let rest = &mut self.msgs[done..n];
            // SAFETY: `rest` points at initialized headers whose buffers and addresses
            // (`self.bytes`, `self.iov`, `self.datagrams`) outlive the call and are not touched
            // meanwhile.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if sent == 0 || e.kind() != io::ErrorKind::Interrupted {
                // The first datagram left failed (full buffer, ICMP error): it is lost, as a
                // failed `sendto` would lose it; the rest still go.
                debug!("send to {:?}: {e}", datagrams[done].3.as_socket());
                done += 1;
            }
        }
    }
}

fn flush_midi2(m: &mut Midi2, now: Instant, buf: &mut [u8]) {
    while let Some(t) = m.endpoint.poll_transmit(now, buf) {
        let Some(port) = m.sockets.iter().find(|p| p.reaches(&t.dst)) else {
            debug!("no socket can reach {}", t.dst);
            continue;
        };
        if let Err(e) = port.socket.send_to(&buf[..t.len], port.wire_addr(t.dst)) {
            debug!("send to {}: {e}", t.dst);
        }
    }
}
