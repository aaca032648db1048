//! One Network MIDI 2.0 session with one peer, as client or host, sans-IO in the quinn-proto
//! manner like [`crate::session::Session`].
//!
//! Inputs: [`Session::handle_datagram`], [`Session::handle_timeout`]; commands:
//! [`Session::send_ump`], [`Session::close`]; outputs: [`Session::poll_transmit`],
//! [`Session::poll_event`], [`Session::poll_timeout`]. Call them in that order after every input.
//!
//! Reliability (§7.2): every UMP data command has a 16-bit sequence number; each
//! datagram repeats the `fec_count` commands sent before its new ones (forward error
//! correction), and after the stream stops a few zero-length commands carry the last ones again.
//! The receiver holds commands that arrive past a gap, asks for the gap with a retransmit request
//! when the copies did not fill it, and gives up with a session reset. The sender keeps a buffer
//! of sent commands for those requests and answers a retransmit error when they are gone.
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use super::auth;
use super::ump::{midi1_to_ump, Ump};
use super::wire::{
    self, auth_state, bye_reason, caps, nak_reason, retransmit_error, Command, CommandError,
    DatagramWriter, Identity, HEADER_LEN, NONCE_LEN,
};
use crate::midi::MidiMessage;
use crate::rng::Rng;
use crate::session::sanitize_name;
use crate::time::{Duration, Instant};

/// Longest UMP endpoint name (M2-104-UM endpoint name notification: 98 bytes) and product
/// instance id (42 bytes).
pub const MAX_NAME: usize = 98;
pub const MAX_PRODUCT_ID: usize = 42;
/// UMP data commands queued and not sent yet, at most: room for the longest SysEx
/// ([`crate::midi::MAX_SYSEX`], six bytes a UMP), which goes out paced.
const MAX_UNSENT: usize = crate::midi::MAX_SYSEX / 6 + 1024;
/// Commands held past a gap at most; a larger jump is a loss given up at once.
const MAX_RX_PENDING: u64 = 512;
/// A sequence number this far behind the expected one means the peer started over.
const RESTART_DISTANCE: i64 = 1024;
/// After a session reset, a number this low and behind the expected one is a peer that
/// started counting from zero again.
const RESTART_FROM_ZERO: u16 = 64;
/// Replies (NAKs, ping replies) queued at most: a flood of bad commands cannot fill memory.
const MAX_PENDING: usize = 256;
/// Bytes one UMP data command takes at most (header + 4 words).
const MAX_UMP_COMMAND: usize = HEADER_LEN + 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Host,
}

/// What a client answers when the host asks for authentication. `Debug` shows no secret or
/// password, so logging it cannot leak one.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    None,
    Secret(String),
    User {
        user: String,
        password: String,
    },
}

/// What a host asks of clients. `Debug` shows the user names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum HostAuth {
    #[default]
    None,
    Secret(String),
    /// (user name, password) pairs.
    Users(Vec<(String, String)>),
}

/// Stands for a secret or password in `Debug` output.
const HIDDEN: &str = "<hidden>";

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::None => f.write_str("None"),
            ClientAuth::Secret(_) => f
                .debug_tuple("Secret")
                .field(&format_args!("{HIDDEN}"))
                .finish(),
            ClientAuth::User { user, .. } => f
                .debug_struct("User")
                .field("user", user)
                .field("password", &format_args!("{HIDDEN}"))
                .finish(),
        }
    }
}

impl fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostAuth::None => f.write_str("None"),
            HostAuth::Secret(_) => f
                .debug_tuple("Secret")
                .field(&format_args!("{HIDDEN}"))
                .finish(),
            HostAuth::Users(users) => f
                .debug_tuple("Users")
                .field(&users.iter().map(|(user, _)| user).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Tunables; the defaults follow amidi2net's where it has one.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our UMP endpoint name and product instance id, sent in invitations and replies.
    pub name: String,
    pub product_id: String,
    /// Largest datagram we send (amidi2net: 1400).
    pub mtu: usize,
    /// Earlier UMP data commands repeated in each datagram (amidi2net: 3).
    pub fec_count: usize,
    /// UMP data commands kept for retransmit requests.
    pub retransmit_buffer: usize,
    /// Data datagrams sent back to back at most, then one per `pace_interval` (2,800 kB/s of
    /// UMP at 1400 bytes): a long SysEx must not overflow the receiver's socket buffer
    /// (amidi2net's holds about 90 datagrams; 10 a millisecond still lost some).
    pub pace_burst: u32,
    pub pace_interval: Duration,
    /// Client: wait for a reply, invitations sent before giving up, wait after "pending".
    pub invite_interval: Duration,
    pub invite_attempts: u32,
    pub pending_timeout: Duration,
    /// Host: time a client has to authenticate, wrong digests before refusing it.
    pub auth_timeout: Duration,
    pub auth_attempts: u32,
    /// Silence after which we ping, the wait for each reply, and unanswered pings that end
    /// the session.
    pub liveness_idle: Duration,
    pub ping_interval: Duration,
    pub ping_attempts: u32,
    /// Wait for FEC copies to fill a gap before a retransmit request, the wait after each
    /// request, and requests before a session reset.
    pub missing_wait: Duration,
    pub retransmit_wait: Duration,
    pub retransmit_attempts: u32,
    /// Spacing of the zero-length UMP data commands sent after the stream stops.
    pub tail_interval: Duration,
    /// Wait for a bye reply, byes sent before giving up.
    pub bye_wait: Duration,
    pub bye_attempts: u32,
    pub client_auth: ClientAuth,
    pub host_auth: HostAuth,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::from("rtpmidid"),
            product_id: String::new(),
            mtu: 1400,
            fec_count: 3,
            // A whole burst: a 10 kB SysEx is 1707 commands, all sent at once; a smaller
            // buffer lost it to the next message before the receiver's request came.
            retransmit_buffer: 4096,
            pace_burst: 16,
            pace_interval: Duration::from_micros(500),
            invite_interval: Duration::from_secs(1),
            invite_attempts: 5,
            pending_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            auth_attempts: 3,
            liveness_idle: Duration::from_secs(5),
            ping_interval: Duration::from_millis(500),
            ping_attempts: 3,
            missing_wait: Duration::from_millis(30),
            retransmit_wait: Duration::from_millis(100),
            retransmit_attempts: 5,
            tail_interval: Duration::from_millis(100),
            bye_wait: Duration::from_millis(500),
            bye_attempts: 2,
            client_auth: ClientAuth::None,
            host_auth: HostAuth::None,
        }
    }
}

/// A datagram to send to `dst`: the first `len` bytes of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// We closed it.
    Closed,
    /// The peer sent bye with this reason ([`wire::bye_reason`]).
    PeerBye(u8),
    /// The host answered our invitation with bye and this reason (too many sessions, …).
    Refused(u8),
    /// Client: no reply to our invitations; host: the client never authenticated.
    InviteTimeout,
    /// Authentication asked and we had no credentials for it, or they were refused; as host,
    /// the client failed too often or could not do the method we ask.
    AuthFailed,
    /// Pings went unanswered.
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connected {
        name: String,
        product_id: String,
    },
    /// A UMP from the peer, in sequence order.
    Ump(Ump),
    /// UMP data commands given up after a gap (they never came, not even retransmitted).
    Loss {
        lost: u64,
    },
    /// Round trip of one of our pings.
    Latency {
        rtt: Duration,
    },
    Disconnected {
        reason: DisconnectReason,
    },
}

/// Counters for the status display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub umps_sent: u64,
    pub umps_received: u64,
    /// UMP data commands received again (FEC copies of ones we had).
    pub duplicates: u64,
    /// Gaps filled by a copy (FEC or retransmission) after being seen.
    pub repaired: u64,
    pub lost: u64,
    pub retransmit_requests_sent: u64,
    pub retransmit_requests_answered: u64,
    /// Session resets sent or received.
    pub session_resets: u64,
    pub malformed: u64,
    pub naks_received: u64,
    /// UMPs refused by `send_ump`: not connected, or the send queue overflowed.
    pub send_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthReply {
    Secret([u8; NONCE_LEN]),
    User([u8; NONCE_LEN]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Client: `attempts` of the current invitation sent; `auth` once the host asked for it.
    Inviting {
        attempts: u32,
        auth: Option<AuthReply>,
    },
    /// Host: created for a peer, its invitation not handled yet.
    AwaitingInvitation,
    /// Host: asked the client to authenticate with `nonce`.
    Authenticating {
        user: bool,
        nonce: [u8; NONCE_LEN],
        failures: u32,
    },
    Connected,
    /// We sent bye and wait for its reply.
    Closing {
        attempts: u32,
    },
    Closed,
}

/// Deadlines, one slot per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Invitation resend (client), authentication deadline (host), bye resend.
    Handshake,
    Ping,
    Missing,
    Tail,
}
const TIMERS: usize = 4;
const ALL_TIMERS: [Timer; TIMERS] = [Timer::Handshake, Timer::Ping, Timer::Missing, Timer::Tail];

/// Commands waiting for `poll_transmit`, kept as values and encoded there.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Invitation,
    AuthInvitation(AuthReply),
    Accepted,
    AuthRequired {
        user: bool,
        state: u8,
        nonce: [u8; NONCE_LEN],
    },
    Ping(u32),
    PingReply(u32),
    RetransmitRequest {
        seq: u16,
        count: u16,
    },
    RetransmitError(u16),
    /// Send again `count` commands from extended sequence number `from`.
    Resend {
        from: u64,
        count: u64,
    },
    SessionReset,
    SessionResetReply,
    Nak {
        reason: u8,
        header: [u8; HEADER_LEN],
    },
    Bye(u8),
    ByeReply,
}

pub struct Session {
    config: Config,
    role: Role,
    state: State,
    peer: SocketAddr,
    peer_name: String,
    peer_product_id: String,
    rng: Rng,
    timers: [Option<Instant>; TIMERS],
    pending: VecDeque<Pending>,
    events: VecDeque<Event>,
    stats: Stats,
    // Liveness.
    last_heard: Instant,
    ping_outstanding: Option<(u32, Instant)>,
    pings_unanswered: u32,
    // Sending: extended sequence numbers (their low 16 bits go out).
    tx_next: u64,
    /// Sent and unsent commands, oldest first, `tx_buffer[i]` has number `tx_next - len + i`.
    tx_buffer: VecDeque<Option<Ump>>,
    /// First command not yet sent.
    tx_unsent: u64,
    /// Data datagrams that may go out now, and when the count was last topped up.
    pace_tokens: u32,
    pace_refilled: Instant,
    /// FEC repeats nothing below this (commands from before a session reset).
    fec_floor: u64,
    tail_left: usize,
    // Receiving.
    rx_next: Option<u64>,
    rx_held: BTreeMap<u64, Vec<Ump>>,
    /// Retransmit requests sent for the current gap.
    rx_requests: u32,
    /// After the peer reset the session: take the next new command as the start.
    rx_resync: bool,
}

impl Session {
    /// A client session: invites `peer` at once.
    pub fn connect(config: Config, now: Instant, peer: SocketAddr, seed: u64) -> Self {
        let mut s = Session::new(config, Role::Client, now, peer, seed);
        s.state = State::Inviting {
            attempts: 0,
            auth: None,
        };
        s.send_invitation(now);
        s
    }

    /// A host session for `peer`, whose invitation the caller hands to
    /// [`Session::handle_datagram`] next.
    pub fn accept(config: Config, now: Instant, peer: SocketAddr, seed: u64) -> Self {
        let mut s = Session::new(config, Role::Host, now, peer, seed);
        s.state = State::AwaitingInvitation;
        s.set_timer(Timer::Handshake, now + s.config.auth_timeout);
        s
    }

    fn new(config: Config, role: Role, now: Instant, peer: SocketAddr, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        // A random first sequence number, as RTP does: a restarted peer is told apart.
        let tx_next = u64::from(rng.next_u32() as u16) + (1 << 16);
        let pace_tokens = config.pace_burst;
        Session {
            config,
            role,
            state: State::Closed,
            peer,
            peer_name: String::new(),
            peer_product_id: String::new(),
            rng,
            timers: [None; TIMERS],
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last_heard: now,
            ping_outstanding: None,
            pings_unanswered: 0,
            tx_next,
            tx_buffer: VecDeque::new(),
            tx_unsent: tx_next,
            pace_tokens,
            pace_refilled: now,
            fec_floor: tx_next,
            tail_left: 0,
            rx_next: None,
            rx_held: BTreeMap::new(),
            rx_requests: 0,
            rx_resync: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }
    pub fn peer_product_id(&self) -> &str {
        &self.peer_product_id
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }
    /// Neither closing nor closed: datagrams from its peer are for this session.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Closing { .. } | State::Closed)
    }
    /// Closed and nothing left to send or report: the owner may drop it.
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && self.pending.is_empty() && self.events.is_empty()
    }

    /// A datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let Some(commands) = wire::commands(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.datagrams_received += 1;
        for command in commands {
            match command {
                Ok(c) => self.handle_command(now, c),
                Err(e) => {
                    self.stats.malformed += 1;
                    self.nak_error(&e);
                }
            }
            if self.state == State::Closed {
                break;
            }
        }
    }

    /// Answers a command we could not read with a NAK, except a NAK (two peers must never NAK
    /// each other's NAKs forever).
    fn nak_error(&mut self, e: &CommandError) {
        let is_nak = matches!(e.header[0], wire::code::NAK | wire::code::NAK_AMIDI2NET);
        if !is_nak && self.pending.len() < MAX_PENDING {
            self.pending.push_back(Pending::Nak {
                reason: e.nak_reason(),
                header: e.header,
            });
        }
    }

    fn not_expected(&mut self, command: &Command<'_>) {
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        let mut header = [0u8; HEADER_LEN];
        // The header is the first four bytes of the command as emitted.
        let mut buf = [0u8; 1100];
        if command.emit(&mut buf).is_ok() {
            header.copy_from_slice(&buf[..HEADER_LEN]);
        }
        self.pending.push_back(Pending::Nak {
            reason: nak_reason::NOT_EXPECTED,
            header,
        });
    }

    fn handle_command(&mut self, now: Instant, command: Command<'_>) {
        self.heard(now);
        match command {
            Command::Ping(id) => {
                if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(Pending::PingReply(id))
                }
            }
            Command::PingReply(id) => {
                if let Some((sent_id, at)) = self.ping_outstanding {
                    if sent_id == id {
                        self.ping_outstanding = None;
                        self.events.push_back(Event::Latency { rtt: now - at });
                    }
                }
            }
            Command::Nak { .. } => self.stats.naks_received += 1,
            Command::Bye { reason, .. } => {
                self.pending.push_back(Pending::ByeReply);
                let why = match self.state {
                    State::Inviting { .. } => DisconnectReason::Refused(reason),
                    State::Closing { .. } => {
                        // Both said bye at once: ours was already reported.
                        self.state = State::Closed;
                        self.timers = [None; TIMERS];
                        return;
                    }
                    _ => DisconnectReason::PeerBye(reason),
                };
                self.end(why);
            }
            Command::ByeReply => {
                if matches!(self.state, State::Closing { .. }) {
                    self.state = State::Closed;
                    self.timers = [None; TIMERS];
                }
            }
            _ => match self.role {
                Role::Client => self.handle_as_client(now, command),
                Role::Host => self.handle_as_host(now, command),
            },
        }
    }

    fn handle_as_client(&mut self, now: Instant, command: Command<'_>) {
        let inviting = matches!(self.state, State::Inviting { .. });
        match command {
            Command::Accepted(identity) if inviting => {
                self.set_peer_identity(&identity);
                self.become_connected(now);
            }
            // A repeated reply to a repeated invitation.
            Command::Accepted(_) | Command::Pending(_) | Command::AuthRequired { .. }
                if self.state == State::Connected => {}
            Command::Pending(identity) if inviting => {
                self.set_peer_identity(&identity);
                self.set_timer(Timer::Handshake, now + self.config.pending_timeout);
            }
            Command::AuthRequired {
                user,
                state,
                nonce,
                identity,
            } if inviting => {
                self.set_peer_identity(&identity);
                let reply = match (&self.config.client_auth, user) {
                    (ClientAuth::Secret(_), false) => AuthReply::Secret(nonce),
                    (ClientAuth::User { .. }, true) => AuthReply::User(nonce),
                    _ => {
                        self.pending
                            .push_back(Pending::Bye(bye_reason::INVITATION_CANCELLED));
                        self.end(DisconnectReason::AuthFailed);
                        return;
                    }
                };
                // Our digest was refused: the same credentials would fail again.
                if state != auth_state::FIRST_REQUEST {
                    self.pending
                        .push_back(Pending::Bye(bye_reason::INVITATION_CANCELLED));
                    self.end(DisconnectReason::AuthFailed);
                    return;
                }
                self.state = State::Inviting {
                    attempts: 0,
                    auth: Some(reply),
                };
                self.send_invitation(now);
            }
            Command::UmpData { .. } if inviting => {}
            _ => self.handle_common(now, command),
        }
    }

    fn handle_as_host(&mut self, now: Instant, command: Command<'_>) {
        match (command, self.state) {
            (Command::Invitation { caps, identity }, State::AwaitingInvitation) => {
                self.set_peer_identity(&identity);
                let user = match &self.config.host_auth {
                    HostAuth::None => {
                        self.pending.push_back(Pending::Accepted);
                        self.become_connected(now);
                        return;
                    }
                    HostAuth::Secret(_) if caps & caps::AUTH != 0 => false,
                    HostAuth::Users(_) if caps & caps::USER_AUTH != 0 => true,
                    _ => {
                        self.pending
                            .push_back(Pending::Bye(bye_reason::NO_MATCHING_AUTH));
                        self.end(DisconnectReason::AuthFailed);
                        return;
                    }
                };
                let nonce = auth::nonce(&mut self.rng);
                self.state = State::Authenticating {
                    user,
                    nonce,
                    failures: 0,
                };
                self.pending.push_back(Pending::AuthRequired {
                    user,
                    state: auth_state::FIRST_REQUEST,
                    nonce,
                });
            }
            // Our reply was lost: the client asks again.
            (Command::Invitation { .. }, State::Authenticating { user, nonce, .. }) => {
                self.pending.push_back(Pending::AuthRequired {
                    user,
                    state: auth_state::FIRST_REQUEST,
                    nonce,
                })
            }
            (
                Command::Invitation { .. }
                | Command::InvitationWithAuth { .. }
                | Command::InvitationWithUserAuth { .. },
                State::Connected,
            ) => self.pending.push_back(Pending::Accepted),
            (
                Command::InvitationWithAuth { digest },
                State::Authenticating {
                    user: false,
                    nonce,
                    failures,
                },
            ) => {
                let ok = match &self.config.host_auth {
                    HostAuth::Secret(secret) => {
                        auth::digests_equal(&digest, &auth::shared_secret_digest(&nonce, secret))
                    }
                    _ => false,
                };
                self.authenticated(now, ok, auth_state::INCORRECT_DIGEST, failures);
            }
            (
                Command::InvitationWithUserAuth { digest, user },
                State::Authenticating {
                    user: true,
                    nonce,
                    failures,
                },
            ) => {
                let known = match &self.config.host_auth {
                    HostAuth::Users(users) => users.iter().find(|(name, _)| name == user),
                    _ => None,
                };
                match known {
                    Some((name, password)) => {
                        let want = auth::user_digest(&nonce, name, password);
                        let ok = auth::digests_equal(&digest, &want);
                        self.authenticated(now, ok, auth_state::INCORRECT_DIGEST, failures);
                    }
                    None => self.authenticated(now, false, auth_state::USER_NOT_FOUND, failures),
                }
            }
            (command, _) => self.handle_common(now, command),
        }
    }

    /// The outcome of a client's digest: accept, ask again under a new nonce, or refuse after
    /// too many tries (bye 0x43 / 0x44).
    fn authenticated(&mut self, now: Instant, ok: bool, retry_state: u8, failures: u32) {
        let State::Authenticating { user, .. } = self.state else {
            return;
        };
        if ok {
            self.pending.push_back(Pending::Accepted);
            self.become_connected(now);
            return;
        }
        let failures = failures + 1;
        if failures >= self.config.auth_attempts {
            let reason = if retry_state == auth_state::USER_NOT_FOUND {
                bye_reason::USER_NOT_FOUND
            } else {
                bye_reason::AUTH_FAILED
            };
            self.pending.push_back(Pending::Bye(reason));
            self.end(DisconnectReason::AuthFailed);
            return;
        }
        let nonce = auth::nonce(&mut self.rng);
        self.state = State::Authenticating {
            user,
            nonce,
            failures,
        };
        self.pending.push_back(Pending::AuthRequired {
            user,
            state: retry_state,
            nonce,
        });
    }

    /// Commands both roles handle the same way once connected.
    fn handle_common(&mut self, now: Instant, command: Command<'_>) {
        if self.state != State::Connected {
            // Closing: whatever still comes is answered by nothing.
            if !matches!(self.state, State::Closing { .. }) {
                self.not_expected(&command);
            }
            return;
        }
        match command {
            Command::UmpData { seq, payload } => self.receive_ump(now, seq, payload),
            Command::RetransmitRequest { seq, count } => self.retransmit_requested(seq, count),
            // The peer cannot fill our gap: give it up now (amidi2net does the same).
            Command::RetransmitError { .. } => {
                if !self.rx_held.is_empty() {
                    self.reset_after_loss();
                }
            }
            Command::SessionReset => {
                self.stats.session_resets += 1;
                self.pending.push_back(Pending::SessionResetReply);
                // The peer will not fill our gap either.
                self.give_up_gap();
                self.rx_resync = true;
                self.fec_floor = self.tx_unsent;
            }
            Command::SessionResetReply => {}
            other => self.not_expected(&other),
        }
    }

    fn set_peer_identity(&mut self, identity: &Identity<'_>) {
        self.peer_name = sanitize_name(identity.name);
        self.peer_product_id = sanitize_name(identity.product_id);
    }

    fn become_connected(&mut self, now: Instant) {
        self.state = State::Connected;
        self.timers[Timer::Handshake as usize] = None;
        self.set_timer(Timer::Ping, now + self.config.liveness_idle);
        self.events.push_back(Event::Connected {
            name: self.peer_name.clone(),
            product_id: self.peer_product_id.clone(),
        });
    }

    // Receiving UMP data.

    /// The extended number of `seq`, read as the nearest to what we expect.
    fn rx_extend(next: u64, seq: u16) -> (u64, i64) {
        let diff = i64::from(seq.wrapping_sub(next as u16) as i16);
        (next.wrapping_add_signed(diff), diff)
    }

    fn receive_ump(&mut self, now: Instant, seq: u16, payload: &[u8]) {
        let words: Vec<u32> = wire::ump_words(payload).collect();
        // One UMP per command as amidi2net and Zephyr send; more are taken too, zero is a
        // zero-length command (a number without data).
        let Some(umps) = Ump::split(&words) else {
            self.stats.malformed += 1;
            if self.pending.len() < MAX_PENDING {
                let [hi, lo] = seq.to_be_bytes();
                self.pending.push_back(Pending::Nak {
                    reason: nak_reason::MALFORMED,
                    header: [wire::code::UMP_DATA, words.len() as u8, hi, lo],
                });
            }
            return;
        };
        let Some(next) = self.rx_next else {
            // The first command of the session starts the count.
            self.rx_next = Some(u64::from(seq) + (1 << 16));
            return self.receive_ump(now, seq, payload);
        };
        let (ext, diff) = Self::rx_extend(next, seq);
        if self.rx_resync {
            // After a session reset the peer either goes on counting (amidi2net) or starts
            // again from zero (Zephyr, Windows MIDI Services); older numbers are stale copies.
            if diff >= 0 {
                self.rx_resync = false;
                self.rx_next = Some(ext);
                return self.receive_ump(now, seq, payload);
            }
            if seq <= RESTART_FROM_ZERO {
                self.rx_resync = false;
                self.rx_next = None;
                return self.receive_ump(now, seq, payload);
            }
        }
        if diff < -RESTART_DISTANCE {
            // The peer started over (a new sequence): count from it as from a first command.
            self.rx_held.clear();
            self.rx_next = None;
            return self.receive_ump(now, seq, payload);
        }
        if diff < 0 || self.rx_held.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        if diff as u64 > MAX_RX_PENDING {
            // Too far ahead to hold what lies between: that much is lost.
            self.rx_held.insert(ext, umps);
            self.reset_after_loss();
            return;
        }
        if diff > 0 {
            self.rx_held.insert(ext, umps);
            if diff as u64 > self.config.fec_count as u64 && self.rx_requests == 0 {
                // Past the reach of FEC copies (they lead the datagram that brings this one):
                // only a retransmission fills the gap, so ask at once. amidi2net keeps its
                // last 64 commands, 8 ms of a paced burst: after the missing wait they are gone.
                self.on_missing_timer(now);
            } else if self.timers[Timer::Missing as usize].is_none() {
                self.set_timer(Timer::Missing, now + self.config.missing_wait);
            }
            return;
        }
        if !self.rx_held.is_empty() {
            self.stats.repaired += 1;
        }
        self.deliver(umps);
        let mut next = ext + 1;
        while let Some(held) = self.rx_held.remove(&next) {
            self.deliver(held);
            next += 1;
        }
        self.rx_next = Some(next);
        self.rx_requests = 0;
        self.timers[Timer::Missing as usize] = if self.rx_held.is_empty() {
            None
        } else {
            // Progress, but another gap: give the copies time again.
            Some(now + self.config.missing_wait)
        };
    }

    fn deliver(&mut self, umps: Vec<Ump>) {
        self.stats.umps_received += umps.len() as u64;
        self.events.extend(umps.into_iter().map(Event::Ump));
    }

    /// The Missing timer: ask for the gap again, or give it up with a session reset.
    fn on_missing_timer(&mut self, now: Instant) {
        let (Some(next), Some(&first_held)) = (self.rx_next, self.rx_held.keys().next()) else {
            return;
        };
        if self.rx_requests >= self.config.retransmit_attempts {
            self.reset_after_loss();
            return;
        }
        self.rx_requests += 1;
        self.stats.retransmit_requests_sent += 1;
        self.pending.push_back(Pending::RetransmitRequest {
            seq: next as u16,
            count: (first_held - next).min(u64::from(u16::MAX)) as u16,
        });
        self.set_timer(Timer::Missing, now + self.config.retransmit_wait);
    }

    /// Gives the gap up and tells the peer with a session reset, as amidi2net does: both sides
    /// then start their receive state afresh and FEC stops repeating what came before.
    fn reset_after_loss(&mut self) {
        self.pending.push_back(Pending::SessionReset);
        self.stats.session_resets += 1;
        self.give_up_gap();
        self.rx_resync = true;
    }

    /// Delivers all that is held, in order, each gap counted as lost with its `Loss` event
    /// ahead of the data after it (so a SysEx cut by the gap is not glued to that data).
    fn give_up_gap(&mut self) {
        let Some(mut next) = self.rx_next else { return };
        for (ext, umps) in std::mem::take(&mut self.rx_held) {
            let lost = ext - next;
            if lost > 0 {
                self.stats.lost += lost;
                self.events.push_back(Event::Loss { lost });
            }
            self.deliver(umps);
            next = ext + 1;
        }
        self.rx_next = Some(next);
        self.rx_requests = 0;
        self.timers[Timer::Missing as usize] = None;
    }

    // Sending UMP data.

    /// Queues one UMP for the peer; it goes out at the next `poll_transmit`. Refused (and
    /// counted) unless connected.
    pub fn send_ump(&mut self, ump: Ump) -> bool {
        if self.state != State::Connected {
            self.stats.send_dropped += 1;
            return false;
        }
        self.push_command(Some(ump));
        // One more than the FEC count, as amidi2net: the last one carries no data as FEC but
        // its number still reveals a gap, which a retransmit request then fills.
        self.tail_left = self.config.fec_count + 1;
        self.timers[Timer::Tail as usize] = None;
        true
    }

    /// Queues a MIDI 1.0 message as UMP in the MIDI 1.0 protocol on `group` (a SysEx as
    /// several packets). False if refused, as [`Session::send_ump`].
    pub fn send_midi1(&mut self, group: u8, message: &MidiMessage) -> bool {
        let mut umps = Vec::new();
        midi1_to_ump(group, message, &mut umps);
        umps.into_iter().all(|ump| self.send_ump(ump))
    }

    fn push_command(&mut self, ump: Option<Ump>) {
        let history = self.config.retransmit_buffer.max(self.config.fec_count + 1);
        // Sent commands beyond the retransmit buffer go; unsent ones wait for the caller to
        // poll (a long SysEx is queued at once), up to a bound that keeps 16-bit sequence
        // numbers unambiguous.
        while self.tx_buffer.len() >= history && self.tx_oldest() < self.tx_unsent {
            self.tx_buffer.pop_front();
        }
        if self.tx_buffer.len() >= history + MAX_UNSENT {
            self.tx_buffer.pop_front();
            let oldest = self.tx_oldest();
            if self.tx_unsent < oldest {
                // Never sent: the queue overflowed before the caller polled.
                self.stats.send_dropped += 1;
                self.tx_unsent = oldest;
            }
        }
        self.tx_buffer.push_back(ump);
        self.tx_next += 1;
    }

    fn tx_oldest(&self) -> u64 {
        self.tx_next - self.tx_buffer.len() as u64
    }

    fn tx_get(&self, ext: u64) -> Option<Option<Ump>> {
        let index = ext.checked_sub(self.tx_oldest())?;
        self.tx_buffer.get(usize::try_from(index).ok()?).copied()
    }

    fn retransmit_requested(&mut self, seq: u16, count: u16) {
        // The requested number read as at most 64 Ki behind our newest sent command.
        let back = u64::from(self.tx_unsent as u16).wrapping_sub(u64::from(seq)) & 0xFFFF;
        let from = self.tx_unsent.wrapping_sub(back);
        let available = back > 0 && from >= self.tx_oldest().max(self.fec_floor);
        if !available {
            self.pending.push_back(Pending::RetransmitError(seq));
            return;
        }
        let count = match count {
            0 => back,
            n => u64::from(n).min(back),
        };
        self.stats.retransmit_requests_answered += 1;
        self.pending.push_back(Pending::Resend { from, count });
    }

    /// Ends the session: bye to the peer, then `Disconnected { Closed }`.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Closed | State::Closing { .. } => {}
            State::AwaitingInvitation => self.end(DisconnectReason::Closed),
            State::Inviting { .. } => {
                self.pending
                    .push_back(Pending::Bye(bye_reason::INVITATION_CANCELLED));
                self.end(DisconnectReason::Closed);
            }
            _ => {
                self.end(DisconnectReason::Closed);
                self.send_bye(now, 0);
            }
        }
    }

    fn send_bye(&mut self, now: Instant, attempts: u32) {
        if attempts >= self.config.bye_attempts {
            self.state = State::Closed;
            self.timers = [None; TIMERS];
            return;
        }
        self.pending.push_back(Pending::Bye(bye_reason::TERMINATED));
        self.state = State::Closing {
            attempts: attempts + 1,
        };
        self.set_timer(Timer::Handshake, now + self.config.bye_wait);
    }

    fn end(&mut self, reason: DisconnectReason) {
        self.state = State::Closed;
        self.timers = [None; TIMERS];
        self.events.push_back(Event::Disconnected { reason });
    }

    fn send_invitation(&mut self, now: Instant) {
        let State::Inviting { attempts, auth } = self.state else {
            return;
        };
        if attempts >= self.config.invite_attempts {
            self.pending
                .push_back(Pending::Bye(bye_reason::INVITATION_CANCELLED));
            self.end(DisconnectReason::InviteTimeout);
            return;
        }
        self.pending.push_back(match auth {
            None => Pending::Invitation,
            Some(reply) => Pending::AuthInvitation(reply),
        });
        self.state = State::Inviting {
            attempts: attempts + 1,
            auth,
        };
        self.set_timer(Timer::Handshake, now + self.config.invite_interval);
    }

    /// Anything valid from the peer: it is alive.
    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.pings_unanswered = 0;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in ALL_TIMERS {
            let slot = &mut self.timers[timer as usize];
            if slot.is_some_and(|at| at <= now) {
                *slot = None;
                self.on_timer(now, timer);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (timer, self.state) {
            (Timer::Handshake, State::Inviting { .. }) => self.send_invitation(now),
            (Timer::Handshake, State::AwaitingInvitation | State::Authenticating { .. }) => {
                self.pending.push_back(Pending::Bye(bye_reason::TIMEOUT));
                self.end(DisconnectReason::InviteTimeout);
            }
            (Timer::Handshake, State::Closing { attempts }) => self.send_bye(now, attempts),
            (Timer::Ping, State::Connected) => self.on_ping_timer(now),
            (Timer::Missing, State::Connected) => self.on_missing_timer(now),
            (Timer::Tail, State::Connected) if self.tail_left > 0 => {
                // A zero-length command (§7.2.1): a new number that carries the last ones as FEC,
                // so a lost last datagram is repaired or at least noticed (as amidi2net does).
                self.tail_left -= 1;
                self.push_command(None);
            }
            _ => {}
        }
    }

    /// Liveness (§6.13): after `liveness_idle` of silence, ping every `ping_interval`;
    /// `ping_attempts` unanswered end the session with bye "timeout".
    fn on_ping_timer(&mut self, now: Instant) {
        let quiet_until = self.last_heard + self.config.liveness_idle;
        if now < quiet_until {
            self.set_timer(Timer::Ping, quiet_until);
            return;
        }
        if self.pings_unanswered >= self.config.ping_attempts {
            self.pending.push_back(Pending::Bye(bye_reason::TIMEOUT));
            self.end(DisconnectReason::Timeout);
            return;
        }
        self.pings_unanswered += 1;
        let id = self.rng.next_u32();
        self.ping_outstanding = Some((id, now));
        self.pending.push_back(Pending::Ping(id));
        self.set_timer(Timer::Ping, now + self.config.ping_interval);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        // Data held back by the pacing goes when the next datagram is allowed.
        let paced = (self.state == State::Connected
            && self.tx_unsent < self.tx_next
            && self.pace_tokens == 0)
            .then(|| self.pace_refilled + self.config.pace_interval);
        self.timers.iter().flatten().copied().chain(paced).min()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Writes the next datagram into `buf` (at least `mtu` bytes) and says where it goes:
    /// queued session commands first, then UMP data with its FEC copies.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let mtu = self.config.mtu.min(buf.len());
        let mut writer = DatagramWriter::new(&mut buf[..mtu])?;
        while let Some(pending) = self.pending.pop_front() {
            if !self.encode_pending(pending, &mut writer) {
                self.pending.push_front(pending);
                break;
            }
        }
        if writer.is_empty() && self.state == State::Connected && self.pace(now) {
            self.encode_data(now, &mut writer);
        }
        if writer.is_empty() {
            // A command too large for the MTU: drop it rather than stall the queue.
            self.pending.pop_front();
            return None;
        }
        self.stats.datagrams_sent += 1;
        Some(Transmit {
            dst: self.peer,
            len: writer.len(),
        })
    }

    /// Adds one pending command; false when it does not fit (it stays queued).
    fn encode_pending(&mut self, pending: Pending, w: &mut DatagramWriter<'_>) -> bool {
        let name = truncate(&self.config.name, MAX_NAME);
        let product_id = truncate(&self.config.product_id, MAX_PRODUCT_ID);
        let identity = Identity { name, product_id };
        let command = match pending {
            Pending::Invitation => {
                let caps = match self.config.client_auth {
                    ClientAuth::None => 0,
                    ClientAuth::Secret(_) => caps::AUTH,
                    ClientAuth::User { .. } => caps::USER_AUTH,
                };
                Command::Invitation { caps, identity }
            }
            Pending::AuthInvitation(reply) => match (&self.config.client_auth, reply) {
                (ClientAuth::Secret(secret), AuthReply::Secret(nonce)) => {
                    Command::InvitationWithAuth {
                        digest: auth::shared_secret_digest(&nonce, secret),
                    }
                }
                (ClientAuth::User { user, password }, AuthReply::User(nonce)) => {
                    Command::InvitationWithUserAuth {
                        digest: auth::user_digest(&nonce, user, password),
                        user,
                    }
                }
                _ => return true,
            },
            Pending::Accepted => Command::Accepted(identity),
            Pending::AuthRequired { user, state, nonce } => Command::AuthRequired {
                user,
                state,
                nonce,
                identity,
            },
            Pending::Ping(id) => Command::Ping(id),
            Pending::PingReply(id) => Command::PingReply(id),
            Pending::RetransmitRequest { seq, count } => Command::RetransmitRequest { seq, count },
            Pending::RetransmitError(seq) => Command::RetransmitError {
                seq,
                reason: retransmit_error::NO_DATA,
            },
            Pending::Resend { from, count } => return self.encode_resend(from, count, w),
            Pending::SessionReset => Command::SessionReset,
            Pending::SessionResetReply => Command::SessionResetReply,
            Pending::Nak { reason, header } => Command::Nak {
                reason,
                header,
                text: "",
            },
            Pending::Bye(reason) => Command::Bye { reason, text: "" },
            Pending::ByeReply => Command::ByeReply,
        };
        w.push(&command).is_ok()
    }

    /// Resent commands as asked by a retransmit request; what does not fit stays queued.
    fn encode_resend(&mut self, from: u64, count: u64, w: &mut DatagramWriter<'_>) -> bool {
        let mut sent = 0;
        while sent < count {
            let ext = from + sent;
            let Some(ump) = self.tx_get(ext) else {
                // Gone meanwhile.
                self.pending
                    .push_front(Pending::RetransmitError(ext as u16));
                return true;
            };
            let words = ump.as_ref().map_or(&[][..], Ump::words);
            if w.push_ump(ext as u16, words).is_err() {
                break;
            }
            sent += 1;
        }
        if sent < count {
            if sent == 0 {
                return false;
            }
            self.pending.push_front(Pending::Resend {
                from: from + sent,
                count: count - sent,
            });
        }
        true
    }

    /// New UMP data commands, each datagram led by FEC copies of the ones before them.
    /// May a data datagram go out now? Takes one from the pacing allowance if so.
    fn pace(&mut self, now: Instant) -> bool {
        if self.tx_unsent >= self.tx_next {
            return false;
        }
        let interval = self.config.pace_interval.as_micros().max(1) as u64;
        let earned = now
            .saturating_duration_since(self.pace_refilled)
            .as_micros() as u64
            / interval;
        if earned > 0 {
            let tokens = u64::from(self.pace_tokens) + earned;
            self.pace_tokens = tokens.min(u64::from(self.config.pace_burst)) as u32;
            self.pace_refilled = if self.pace_tokens == self.config.pace_burst {
                now
            } else {
                self.pace_refilled + Duration::from_micros(earned * interval)
            };
        }
        if self.pace_tokens == 0 {
            return false;
        }
        self.pace_tokens -= 1;
        true
    }

    fn encode_data(&mut self, now: Instant, w: &mut DatagramWriter<'_>) {
        if self.tx_unsent >= self.tx_next {
            return;
        }
        let fec_from = self
            .tx_unsent
            .saturating_sub(self.config.fec_count as u64)
            .max(self.tx_oldest())
            .max(self.fec_floor);
        // Copies only where the new command still fits after them.
        if w.room() >= (self.tx_unsent - fec_from + 1) as usize * MAX_UMP_COMMAND {
            for ext in fec_from..self.tx_unsent {
                if let Some(ump) = self.tx_get(ext) {
                    let words = ump.as_ref().map_or(&[][..], Ump::words);
                    let _ = w.push_ump(ext as u16, words);
                }
            }
        }
        while self.tx_unsent < self.tx_next {
            let Some(ump) = self.tx_get(self.tx_unsent) else {
                break;
            };
            let words = ump.as_ref().map_or(&[][..], Ump::words);
            if w.push_ump(self.tx_unsent as u16, words).is_err() {
                break;
            }
            if ump.is_some() {
                self.stats.umps_sent += 1;
            }
            self.tx_unsent += 1;
        }
        if self.tail_left > 0 {
            self.set_timer(Timer::Tail, now + self.config.tail_interval);
        }
    }

    fn set_timer(&mut self, timer: Timer, at: Instant) {
        self.timers[timer as usize] = Some(at);
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi2::wire::code;

    const PEER: &str = "192.0.2.9:5673";

    fn at(ms: u64) -> Instant {
        Instant::from_micros(1_000_000 + ms * 1000)
    }

    fn datagram(commands: &[Command<'_>]) -> Vec<u8> {
        let mut buf = vec![0; 1500];
        let mut w = DatagramWriter::new(&mut buf).unwrap();
        for c in commands {
            w.push(c).unwrap();
        }
        let len = w.len();
        buf.truncate(len);
        buf
    }

    /// Every command the session sends now, as (code, bytes of the command).
    fn sent(s: &mut Session, now: Instant) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1500];
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            let mut rest = &buf[4..t.len];
            while !rest.is_empty() {
                let (_, len) = Command::parse(rest).unwrap();
                out.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
        }
        out
    }

    fn parsed(bytes: &[u8]) -> Command<'_> {
        Command::parse(bytes).unwrap().0
    }

    fn ump(n: u8) -> Ump {
        Ump::new(&[0x2090_0064 | (u32::from(n) << 8)]).unwrap()
    }

    /// A datagram with `ump(n)` as UMP data number `seq`.
    fn data(seq: u16, n: u8) -> Vec<u8> {
        let words = ump(n).words()[0].to_be_bytes();
        datagram(&[Command::UmpData {
            seq,
            payload: &words,
        }])
    }

    /// A host session after a plain invitation.
    fn host() -> Session {
        let mut s = Session::accept(Config::default(), at(0), PEER.parse().unwrap(), 3);
        let inv = Command::Invitation {
            caps: 0,
            identity: Identity {
                name: "Peer",
                product_id: "",
            },
        };
        s.handle_datagram(at(0), &datagram(&[inv]));
        assert!(s.is_connected());
        let out = sent(&mut s, at(0));
        assert!(matches!(parsed(&out[0]), Command::Accepted(i) if i.name == "rtpmidid"));
        assert!(matches!(s.poll_event(), Some(Event::Connected { name, .. }) if name == "Peer"));
        s
    }

    #[test]
    fn unexpected_and_unknown_commands_are_nakked_but_naks_never() {
        let mut s = host();
        let accepted = Command::Accepted(Identity::default());
        s.handle_datagram(at(1), &datagram(&[accepted]));
        let out = sent(&mut s, at(1));
        assert_eq!(
            out,
            [vec![
                code::NAK,
                1,
                nak_reason::NOT_EXPECTED,
                0,
                0x10,
                0,
                0,
                0
            ]]
        );
        s.handle_datagram(at(2), b"MIDI\x55\x00\x01\x02");
        let out = sent(&mut s, at(2));
        assert_eq!(
            out,
            [vec![
                code::NAK,
                1,
                nak_reason::NOT_SUPPORTED,
                0,
                0x55,
                0,
                1,
                2
            ]]
        );
        // A malformed NAK gets no NAK back.
        s.handle_datagram(at(3), b"MIDI\x8F\x00\x01\x00");
        s.handle_datagram(at(3), b"MIDI\x7F\x02\x01\x00");
        assert!(sent(&mut s, at(3)).is_empty());
        assert!(s.is_connected());
        assert_eq!(s.stats().malformed, 3);
    }

    #[test]
    fn each_datagram_repeats_the_last_three_commands() {
        let mut s = host();
        for n in 0..5 {
            assert!(s.send_ump(ump(n)));
            let out = sent(&mut s, at(10 + u64::from(n)));
            let seqs: Vec<u16> = out
                .iter()
                .map(|c| match parsed(c) {
                    Command::UmpData { seq, .. } => seq,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(seqs.len(), usize::from(n.min(3)) + 1);
            assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
            let Command::UmpData { payload, .. } = parsed(out.last().unwrap()) else {
                unreachable!()
            };
            assert_eq!(wire::ump_words(payload).collect::<Vec<_>>(), ump(n).words());
        }
        // Then zero-length commands every 100 ms, one more than the FEC count.
        let mut tails = 0;
        for ms in (100..1000).step_by(50) {
            s.handle_timeout(at(ms));
            let out = sent(&mut s, at(ms));
            if let Some(last) = out.last() {
                assert!(matches!(parsed(last), Command::UmpData { payload: [], .. }));
                tails += 1;
            }
        }
        assert_eq!(tails, 4);
    }

    #[test]
    fn retransmit_requests_are_answered_from_the_buffer_or_refused() {
        let config = Config {
            retransmit_buffer: 4,
            fec_count: 0,
            ..Config::default()
        };
        let mut s = Session::accept(config, at(0), PEER.parse().unwrap(), 3);
        s.handle_datagram(
            at(0),
            &datagram(&[Command::Invitation {
                caps: 0,
                identity: Identity::default(),
            }]),
        );
        sent(&mut s, at(0));
        let mut seqs = Vec::new();
        for n in 0..6 {
            s.send_ump(ump(n));
            for c in sent(&mut s, at(1)) {
                if let Command::UmpData { seq, .. } = parsed(&c) {
                    seqs.push(seq);
                }
            }
        }
        // The last two, on request.
        let req = Command::RetransmitRequest {
            seq: seqs[4],
            count: 2,
        };
        s.handle_datagram(at(2), &datagram(&[req]));
        let again: Vec<u16> = sent(&mut s, at(2))
            .iter()
            .filter_map(|c| match parsed(c) {
                Command::UmpData { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(again, &seqs[4..]);
        // The first is gone (four kept): a retransmit error names it.
        let req = Command::RetransmitRequest {
            seq: seqs[0],
            count: 0,
        };
        s.handle_datagram(at(3), &datagram(&[req]));
        let out = sent(&mut s, at(3));
        assert_eq!(
            out.iter().map(|c| parsed(c)).collect::<Vec<_>>(),
            [Command::RetransmitError {
                seq: seqs[0],
                reason: retransmit_error::NO_DATA
            }]
        );
        assert_eq!(s.stats().retransmit_requests_answered, 1);
    }

    #[test]
    fn a_10_kb_sysex_sent_at_once_stays_retransmittable() {
        // 1707 UMPs go out in 15 datagrams at once; a receiver that lost one of the first
        // asks when a later one arrives (amidi2net: at once on the jump, again after 100 ms).
        let mut s = host();
        let mut sysex = vec![0xF0];
        sysex.extend((0..10_240).map(|i| (i % 128) as u8));
        sysex.push(0xF7);
        assert!(s.send_midi1(0, &MidiMessage::SysEx(sysex)));
        let mut seqs: Vec<u16> = Vec::new();
        for c in sent(&mut s, at(1)) {
            // New commands only, not the FEC copies that lead each datagram.
            if let Command::UmpData { seq, .. } = parsed(&c) {
                if !seqs.contains(&seq) {
                    seqs.push(seq);
                }
            }
        }
        assert_eq!(seqs.len(), 1707);
        // A note right after it, before the request comes (what evicted the SysEx when the
        // buffer held 256 commands: amidi2net then got a retransmit error and reset).
        assert!(s.send_ump(ump(1)));
        sent(&mut s, at(1));
        let req = Command::RetransmitRequest {
            seq: seqs[0],
            count: 116,
        };
        s.handle_datagram(at(2), &datagram(&[req]));
        let again: Vec<u16> = sent(&mut s, at(2))
            .iter()
            .filter_map(|c| match parsed(c) {
                Command::UmpData { seq, .. } => Some(seq),
                Command::RetransmitError { .. } => panic!("retransmit error for {:?}", c),
                _ => None,
            })
            .collect();
        // The retransmission; what pacing held back (the note, with its FEC copies) may
        // follow in the same datagram.
        assert_eq!(&again[..116], &seqs[..116]);
    }

    #[test]
    fn a_gap_beyond_the_fec_copies_is_asked_for_at_once() {
        let mut s = host();
        s.handle_datagram(at(1), &data(100, 0));
        // 101-104 lost (more than the 3 FEC copies); 105 arrives: ask for 4 now, not 30 ms on.
        s.handle_datagram(at(2), &data(105, 5));
        let out = sent(&mut s, at(2));
        assert_eq!(
            out.iter().map(|c| parsed(c)).collect::<Vec<_>>(),
            [Command::RetransmitRequest { seq: 101, count: 4 }]
        );
        // Once: what follows before the answer waits for it.
        s.handle_datagram(at(3), &data(106, 6));
        assert!(sent(&mut s, at(3)).is_empty());
        assert_eq!(s.stats().retransmit_requests_sent, 1);
    }

    #[test]
    fn receiving_holds_past_a_gap_asks_then_delivers_in_order() {
        let mut s = host();
        s.handle_datagram(at(1), &data(100, 0));
        s.handle_datagram(at(2), &data(102, 2));
        s.handle_datagram(at(3), &data(103, 3));
        s.handle_datagram(at(3), &data(103, 3));
        let umps = |s: &mut Session| {
            let mut out = Vec::new();
            while let Some(e) = s.poll_event() {
                if let Event::Ump(u) = e {
                    out.push(u)
                }
            }
            out
        };
        assert_eq!(umps(&mut s), [ump(0)]);
        // After the missing wait: a retransmit request for 101, one command.
        s.handle_timeout(at(40));
        let out = sent(&mut s, at(40));
        assert_eq!(
            parsed(&out[0]),
            Command::RetransmitRequest { seq: 101, count: 1 }
        );
        s.handle_datagram(at(45), &data(101, 1));
        assert_eq!(umps(&mut s), [ump(1), ump(2), ump(3)]);
        assert_eq!(s.stats().duplicates, 1);
        assert_eq!(s.stats().repaired, 1);
        assert_eq!(s.poll_timeout().map(|t| t > at(1000)), Some(true));
    }

    #[test]
    fn a_command_with_two_umps_gives_both_and_a_cut_one_a_nak() {
        let mut s = host();
        let two = [0x20, 0x90, 0x3C, 0x64, 0x10, 0xF8, 0, 0];
        let cut = [0x40, 0x90, 0x3C, 0x00];
        s.handle_datagram(
            at(1),
            &datagram(&[
                Command::UmpData {
                    seq: 1,
                    payload: &two,
                },
                Command::UmpData {
                    seq: 2,
                    payload: &cut,
                },
            ]),
        );
        let umps: Vec<Ump> = std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::Ump(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(
            umps,
            [
                Ump::new(&[0x2090_3C64]).unwrap(),
                Ump::new(&[0x10F8_0000]).unwrap()
            ]
        );
        assert_eq!(
            sent(&mut s, at(1)),
            [vec![code::NAK, 1, nak_reason::MALFORMED, 0, 0xFF, 1, 0, 2]]
        );
    }

    #[test]
    fn session_reset_is_answered_and_the_count_starts_again() {
        let mut s = host();
        let data = |seq: u16| {
            datagram(&[Command::UmpData {
                seq,
                payload: &[0x20, 0x90, 0x3C, 0x64],
            }])
        };
        s.handle_datagram(at(1), &data(7));
        s.handle_datagram(at(2), &datagram(&[Command::SessionReset]));
        assert_eq!(
            sent(&mut s, at(2)),
            [datagram(&[Command::SessionResetReply])[4..].to_vec()]
        );
        // A jump ahead after the reset is no loss.
        s.handle_datagram(at(3), &data(300));
        s.handle_timeout(at(500));
        assert!(sent(&mut s, at(500)).is_empty());
        let umps = std::iter::from_fn(|| s.poll_event())
            .filter(|e| matches!(e, Event::Ump(_)))
            .count();
        assert_eq!(umps, 2);
        assert_eq!(s.stats().lost, 0);
    }

    /// The events after data commands 10, 12 and 13 (11 never comes) and then `then`.
    fn events_around_a_gap(then: impl FnOnce(&mut Session)) -> Vec<Event> {
        let mut s = host();
        for seq in [10, 12, 13] {
            let payload = (0x3000_0000u32 | u32::from(seq)).to_be_bytes();
            let payload = [payload, [0; 4]].concat();
            s.handle_datagram(
                at(1),
                &datagram(&[Command::UmpData {
                    seq,
                    payload: &payload,
                }]),
            );
        }
        then(&mut s);
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn sysex_ump(seq: u32) -> Event {
        Event::Ump(Ump::new(&[0x3000_0000 | seq, 0]).unwrap())
    }

    // The daemon drops a SysEx in progress on `Loss`: data after a gap must come after it, or
    // the SysEx's parts on both sides of the gap are glued together.
    /// What the events around the gap must be: the loss between the data before and after.
    fn loss_in_order() -> [Event; 4] {
        [
            sysex_ump(10),
            Event::Loss { lost: 1 },
            sysex_ump(12),
            sysex_ump(13),
        ]
    }

    #[test]
    fn a_gap_given_up_is_reported_before_the_data_after_it() {
        let events = events_around_a_gap(|s| {
            for ms in (10..2000).step_by(10) {
                s.handle_timeout(at(ms));
            }
        });
        assert_eq!(events, loss_in_order());
    }

    #[test]
    fn a_reset_from_the_peer_gives_the_gap_up_before_the_data_after_it() {
        let events = events_around_a_gap(|s| {
            s.handle_datagram(at(2), &datagram(&[Command::SessionReset]));
        });
        assert_eq!(events, loss_in_order());
    }

    #[test]
    fn after_a_reset_a_peer_counting_from_zero_again_is_followed() {
        let mut s = host();
        let data = |seq: u16| {
            datagram(&[Command::UmpData {
                seq,
                payload: &[0x20, 0x90, 0x3C, 0x64],
            }])
        };
        s.handle_datagram(at(1), &data(500));
        // 501 never comes, nor any answer to the requests: a reset.
        s.handle_datagram(at(2), &data(502));
        for ms in (10..2000).step_by(10) {
            s.handle_timeout(at(ms));
        }
        let out = sent(&mut s, at(2000));
        assert!(out.iter().any(|c| parsed(c) == Command::SessionReset));
        // A stale copy is ignored, numbers from zero are taken.
        s.handle_datagram(at(2001), &data(499));
        s.handle_datagram(at(2002), &data(0));
        s.handle_datagram(at(2003), &data(1));
        let umps = std::iter::from_fn(|| s.poll_event())
            .filter(|e| matches!(e, Event::Ump(_)))
            .count();
        assert_eq!(umps, 4);
        assert_eq!(s.stats().lost, 1);
        assert_eq!(s.stats().duplicates, 1);
    }

    #[test]
    fn host_refuses_a_client_that_cannot_do_its_method() {
        let config = Config {
            host_auth: HostAuth::Users(vec![("u".into(), "p".into())]),
            ..Config::default()
        };
        let mut s = Session::accept(config, at(0), PEER.parse().unwrap(), 3);
        let inv = Command::Invitation {
            caps: caps::AUTH,
            identity: Identity::default(),
        };
        s.handle_datagram(at(0), &datagram(&[inv]));
        let out = sent(&mut s, at(0));
        assert_eq!(
            parsed(&out[0]),
            Command::Bye {
                reason: bye_reason::NO_MATCHING_AUTH,
                text: ""
            }
        );
        assert_eq!(
            s.poll_event(),
            Some(Event::Disconnected {
                reason: DisconnectReason::AuthFailed
            })
        );
        assert!(s.is_drained());
    }

    #[test]
    fn client_gives_up_inviting_with_invitation_cancelled() {
        let mut s = Session::connect(Config::default(), at(0), PEER.parse().unwrap(), 1);
        let mut invitations = 0;
        for ms in (0..10_000).step_by(100) {
            s.handle_timeout(at(ms));
            for c in sent(&mut s, at(ms)) {
                match parsed(&c) {
                    Command::Invitation { caps: 0, .. } => invitations += 1,
                    Command::Bye { reason, .. } => {
                        assert_eq!(reason, bye_reason::INVITATION_CANCELLED)
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(invitations, 5);
        assert_eq!(
            s.poll_event(),
            Some(Event::Disconnected {
                reason: DisconnectReason::InviteTimeout
            })
        );
    }
}
