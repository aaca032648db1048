//! One AppleMIDI / RTP-MIDI session with one peer, sans-IO in the quinn-proto manner.
//!
//! Inputs: [`Session::handle_datagram`] and [`Session::handle_timeout`]; commands:
//! [`Session::send_midi`], [`Session::close`]; outputs: [`Session::poll_transmit`],
//! [`Session::poll_event`], [`Session::poll_timeout`]. The caller runs them in that order after
//! every input.
//!
//! The two-port scheme: control port N carries IN/OK/NO/BY (and sometimes CK), data port N+1
//! carries CK, RS and RTP-MIDI. The initiator invites on control first, then on data.
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::hubtag;
use crate::journal::{GuardTimer, JournalReceiver, JournalSender};
use crate::midi::{status, MidiMessage, ShortMessage, MAX_SYSEX};
use crate::outbox::{Outbox, OutboxConfig};
use crate::rng::Rng;
use crate::sysex::SysExAssembler;
use crate::time::{Duration, Instant};
use crate::wire::applemidi::{self, Clock, Command, End, Feedback, Invitation};
use crate::wire::midi_list::{self, CommandKind, SegmentKind, SysExSegment};
use crate::wire::rtp::{self, SeqExtender};

/// RTP payload type of RTP-MIDI as AppleMIDI peers use it (dynamic, RFC 6295 §2.1).
pub const PAYLOAD_TYPE: u8 = rtp::PAYLOAD_TYPE_MIDI;
/// Bytes of the RTP header we emit (no CSRC, no extension).
const RTP_HEADER_LEN: usize = rtp::HEADER_LEN;
/// Room always left for commands next to the journal (the journal drops detail to fit).
const MIN_COMMAND_ROOM: usize = 64;
/// Capacity an empty event queue keeps (a burst may have grown it much further): enough for
/// the usual few events per packet without allocating again.
const QUEUE_KEEP: usize = 16;

/// Which of our two local sockets a datagram came in on or must leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    Control,
    Data,
}

/// The answer of [`Session::challenge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Probed, no answer yet.
    Pending,
    /// The peer answered: the session stays.
    Alive,
    /// No answer within `ck_answer_wait`: the peer is gone.
    Silent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Tunables; the defaults are what the daemon uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name as sent in IN and OK.
    pub name: String,
    /// Largest UDP payload we send.
    pub mtu: usize,
    /// Longest SysEx reassembled from the peer.
    pub max_sysex: usize,
    /// First wait for an OK, doubled after each try up to `invite_max_interval`.
    pub invite_interval: Duration,
    pub invite_max_interval: Duration,
    /// Invitations sent on one port before giving up.
    pub invite_attempts: u32,
    /// Quick CK rounds after connecting (as initiator), `ck_quick_interval` apart.
    pub ck_quick_rounds: u32,
    pub ck_quick_interval: Duration,
    /// CK period after the quick rounds; Apple asks for at most 60 s.
    pub ck_interval: Duration,
    /// A CK0 without answer after this long counts as missed and is sent again;
    /// `ck_max_missed` misses in a row end the session.
    pub ck_answer_wait: Duration,
    pub ck_max_missed: u32,
    /// As responder, silence after which we check the initiator is still there with CK0s of
    /// our own (answered by node-rtpmidi and our pymidi initiator in the tests, and by the C++
    /// rtpmidid, whose CK handling answers a CK0 in either role), so a peer that died without
    /// BY is noticed in seconds rather than after `responder_timeout`.
    pub responder_probe_after: Duration,
    /// Silence (no CK, no data) after which the session ends, as initiator and as responder
    /// (a responder depends on the peer's CK period, which may be up to 60 s).
    pub initiator_timeout: Duration,
    pub responder_timeout: Duration,
    /// Period of receiver feedback (RS) while MIDI arrives.
    pub feedback_interval: Duration,
    /// Send a recovery journal with every packet and guard packets after the stream stops.
    pub journal: bool,
    /// Mark our SSRC as an rtpmidid hub's ([`hubtag`]), so other hubs tag what they forward.
    pub hub_mark: bool,
    /// Guard packets sent in a row while the peer confirms nothing (no RS): beyond this, none
    /// until it does. A peer that answers about once a second (as we do) never reaches the
    /// default; one that never answers costs this many, not one a second for ever.
    pub guards_unconfirmed: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::from("rtpmidid"),
            mtu: 1400,
            max_sysex: MAX_SYSEX,
            invite_interval: Duration::from_millis(500),
            invite_max_interval: Duration::from_secs(4),
            invite_attempts: 8,
            ck_quick_rounds: 6,
            ck_quick_interval: Duration::from_millis(1500),
            ck_interval: Duration::from_secs(10),
            ck_answer_wait: Duration::from_millis(1500),
            ck_max_missed: 3,
            responder_probe_after: Duration::from_secs(10),
            initiator_timeout: Duration::from_secs(35),
            responder_timeout: Duration::from_secs(90),
            feedback_interval: Duration::from_secs(1),
            journal: true,
            hub_mark: false,
            // 25 ms doubling to 1 s: 3.6 s of guards with no RS.
            guards_unconfirmed: 8,
        }
    }
}

/// A datagram to send: from our `port`, to `dst`, the first `len` bytes of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub port: SocketKind,
    pub dst: SocketAddr,
    pub len: usize,
}

/// A MIDI message from the peer with its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MidiEvent {
    /// The packet's RTP timestamp plus the command's delta time: 10 kHz ticks of the peer's
    /// clock.
    pub timestamp: u32,
    pub message: MidiMessage,
    /// True when the message was not received but reconstructed from a recovery journal.
    pub recovered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// We closed it.
    Closed,
    /// The peer sent BY.
    PeerEnded,
    /// The peer answered our invitation with NO.
    Rejected,
    /// No OK to our invitations.
    InviteTimeout,
    /// Neither CK nor data within the timeout, or CK unanswered.
    Timeout,
    /// The same peer invited us again (it restarted): this session gave way to the new one.
    Replaced,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Connected {
        name: String,
        ssrc: u32,
        addr: SocketAddr,
    },
    Midi(MidiEvent),
    /// From a CK round: round trip and the peer's clock minus ours, in 100 µs ticks.
    Latency {
        rtt: Duration,
        offset_ticks: i64,
    },
    /// Sequence numbers skipped by the peer's packets (lost or late).
    Loss {
        lost: u64,
    },
    Disconnected {
        reason: DisconnectReason,
    },
}

/// Counters for the status display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub malformed: u64,
    pub journal_repairs: u64,
    pub sysex_dropped: u64,
    /// Outgoing messages refused: invalid, or the send queue was full.
    pub send_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Initiator: waiting for OK on `port`; `attempts` invitations sent there so far.
    Inviting {
        port: SocketKind,
        attempts: u32,
    },
    /// Responder: accepted on control, waiting for the IN on data.
    AwaitingData,
    Connected,
    Closed,
}

/// Deadlines, one slot per kind (a table beats a heap of anonymous deadlines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Invite,
    Clock,
    Feedback,
    Idle,
}
const TIMERS: usize = 4;

/// Session commands waiting for `poll_transmit`, kept as values and encoded there.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Invite(SocketKind),
    Accept(SocketKind, SocketAddr),
    /// BY, with the token and SSRC it ends (they change on an SSRC collision).
    End(End),
    Clock(SocketKind, SocketAddr, Clock),
    Feedback(u16),
}

pub struct Session {
    config: Config,
    role: Role,
    state: State,
    token: u32,
    ssrc: u32,
    rng: Rng,
    /// Zero of our RTP and CK clocks.
    origin: Instant,
    peer_control: SocketAddr,
    peer_data: SocketAddr,
    peer_ssrc: Option<u32>,
    peer_name: String,
    timers: [Option<Instant>; TIMERS],
    last_heard: Instant,
    pending: VecDeque<Pending>,
    events: VecDeque<Event>,
    stats: Stats,
    // Sending: the extended sequence number of our next packet (its low 16 bits go out).
    next_seq: u64,
    outbox: Outbox,
    journal_tx: JournalSender,
    guard: GuardTimer,
    ck_rounds: u32,
    /// ts1 of our CK0 awaiting its CK1.
    ck_outstanding: Option<u64>,
    /// CK0s in a row that got no answer.
    ck_missed: u32,
    ck_next_round: Instant,
    /// When a peer claiming to replace this session made us check this one is alive.
    challenged_at: Option<Instant>,
    // Receiving.
    rx_seq: SeqExtender,
    /// Highest extended sequence number seen, and a bitmap of the 64 below it.
    rx_highest: Option<u64>,
    rx_window: u64,
    peer_sends_journal: bool,
    feedback_due: bool,
    assembler: SysExAssembler,
    journal_rx: JournalReceiver,
}

impl Session {
    /// A session we start: invites `peer_control` (data port = control port + 1).
    pub fn connect(config: Config, now: Instant, peer_control: SocketAddr, seed: u64) -> Self {
        let mut peer_data = peer_control;
        peer_data.set_port(peer_control.port().wrapping_add(1));
        let mut s = Session::new(config, Role::Initiator, now, peer_control, peer_data, seed);
        s.token = s.rng.next_u32();
        s.state = State::Inviting {
            port: SocketKind::Control,
            attempts: 0,
        };
        s.send_invitation(now);
        s
    }

    /// A session the peer started with the invitation `inv` that came from `from` on our control
    /// port. It answers OK at once; call [`Session::reject`] instead to refuse.
    pub fn accept(
        config: Config,
        now: Instant,
        from: SocketAddr,
        inv: &Invitation<'_>,
        seed: u64,
    ) -> Self {
        let mut peer_data = from;
        peer_data.set_port(from.port().wrapping_add(1));
        let mut s = Session::new(config, Role::Responder, now, from, peer_data, seed);
        s.token = inv.token;
        s.peer_ssrc = Some(inv.ssrc);
        s.peer_name = sanitize_name(inv.name.unwrap_or(""));
        while s.ssrc == inv.ssrc {
            s.ssrc = s.new_ssrc();
        }
        s.state = State::AwaitingData;
        s.pending
            .push_back(Pending::Accept(SocketKind::Control, from));
        s.set_timer(Timer::Idle, now + s.config.initiator_timeout);
        s
    }

    /// Encodes a NO for the invitation `inv` from `from` into `buf`; no session is kept.
    pub fn reject(name: &str, inv: &Invitation<'_>, ssrc: u32, buf: &mut [u8]) -> Option<usize> {
        Command::Reject(Invitation {
            token: inv.token,
            ssrc,
            name: Some(name),
        })
        .emit(buf)
        .ok()
    }

    fn new(
        config: Config,
        role: Role,
        now: Instant,
        peer_control: SocketAddr,
        peer_data: SocketAddr,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let ssrc = rng.next_u32();
        let ssrc = if config.hub_mark {
            hubtag::mark(ssrc)
        } else {
            ssrc
        };
        let next_seq = u64::from(rng.next_u32() as u16);
        Session {
            outbox: Outbox::new(OutboxConfig {
                mtu: config.mtu,
                ..OutboxConfig::default()
            }),
            assembler: SysExAssembler::new(config.max_sysex),
            journal_tx: JournalSender::new(),
            guard: GuardTimer::bounded(config.guards_unconfirmed),
            journal_rx: JournalReceiver::new(),
            config,
            role,
            state: State::Closed,
            token: 0,
            ssrc,
            rng,
            origin: now,
            peer_control,
            peer_data,
            peer_ssrc: None,
            peer_name: String::new(),
            timers: [None; TIMERS],
            last_heard: now,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_seq,
            ck_rounds: 0,
            ck_outstanding: None,
            ck_missed: 0,
            ck_next_round: now,
            challenged_at: None,
            rx_seq: SeqExtender::new(),
            rx_highest: None,
            rx_window: 0,
            peer_sends_journal: false,
            feedback_due: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn token(&self) -> u32 {
        self.token
    }
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    pub fn peer_ssrc(&self) -> Option<u32> {
        self.peer_ssrc
    }
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }
    pub fn peer_control(&self) -> SocketAddr {
        self.peer_control
    }
    pub fn peer_data(&self) -> SocketAddr {
        self.peer_data
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }
    /// A responder that accepted on control and waits for the IN on data.
    pub fn is_half_open(&self) -> bool {
        self.state == State::AwaitingData
    }
    /// Closed and nothing left to send: the owner may drop it.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && self.pending.is_empty() && self.events.is_empty()
    }

    /// A datagram from `from` arrived on our `port`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        if self.state == State::Closed {
            return;
        }
        if applemidi::is_applemidi(bytes) {
            match Command::parse(bytes) {
                Ok(cmd) => self.handle_command(now, port, from, cmd),
                Err(_) => self.stats.malformed += 1,
            }
        } else if port == SocketKind::Data {
            self.handle_rtp(now, bytes);
        } else {
            self.stats.malformed += 1;
        }
    }

    fn handle_command(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        cmd: Command<'_>,
    ) {
        match cmd {
            Command::Invitation(inv) if inv.token == self.token => {
                self.heard(now);
                match (self.state, port) {
                    // A repeated IN on control (our OK was lost): answer again.
                    (State::AwaitingData | State::Connected, SocketKind::Control) => self
                        .pending
                        .push_back(Pending::Accept(SocketKind::Control, from)),
                    (State::AwaitingData, SocketKind::Data) => {
                        self.peer_data = from;
                        self.pending
                            .push_back(Pending::Accept(SocketKind::Data, from));
                        self.become_connected(now);
                    }
                    (State::Connected, SocketKind::Data) => self
                        .pending
                        .push_back(Pending::Accept(SocketKind::Data, from)),
                    _ => {}
                }
            }
            Command::Accept(inv) if inv.token == self.token => {
                if let State::Inviting { port: want, .. } = self.state {
                    if want != port {
                        return;
                    }
                    self.heard(now);
                    if inv.ssrc == self.ssrc {
                        self.restart_after_collision(now);
                        return;
                    }
                    self.peer_ssrc = Some(inv.ssrc);
                    if let Some(name) = inv.name {
                        self.peer_name = sanitize_name(name);
                    }
                    if port == SocketKind::Control {
                        self.state = State::Inviting {
                            port: SocketKind::Data,
                            attempts: 0,
                        };
                        self.send_invitation(now);
                    } else {
                        self.become_connected(now);
                    }
                }
            }
            Command::Reject(inv) if inv.token == self.token => {
                if matches!(self.state, State::Inviting { .. }) {
                    self.end(DisconnectReason::Rejected);
                }
            }
            Command::End(end) if end.token == self.token || Some(end.ssrc) == self.peer_ssrc => {
                self.end(DisconnectReason::PeerEnded);
            }
            Command::Clock(ck) if Some(ck.ssrc) == self.peer_ssrc => {
                self.heard(now);
                self.handle_clock(now, port, from, ck);
            }
            Command::Feedback(fb) if Some(fb.ssrc) == self.peer_ssrc => {
                self.heard(now);
                self.journal_tx.confirm_rs(fb.seq);
                self.guard.on_confirmed(now);
                if !self.journal_tx.has_pending() {
                    self.guard.stop();
                }
            }
            _ => {}
        }
    }

    fn handle_clock(&mut self, now: Instant, port: SocketKind, from: SocketAddr, ck: Clock) {
        let local = self.clock_ticks(now);
        match ck.count {
            0 => {
                let mut ts = ck.timestamps;
                ts[1] = local;
                self.pending
                    .push_back(Pending::Clock(port, from, self.clock(1, ts)));
            }
            1 if self.ck_outstanding == Some(ck.timestamps[0]) => {
                self.ck_outstanding = None;
                self.ck_missed = 0;
                let [ts1, ts2, _] = ck.timestamps;
                let ts3 = local;
                self.pending
                    .push_back(Pending::Clock(port, from, self.clock(2, [ts1, ts2, ts3])));
                let rtt_ticks = ts3.saturating_sub(ts1);
                // The peer read its clock (ts2) half way through the round trip.
                let offset_ticks = ts2 as i64 - ((ts1 + ts3) / 2) as i64;
                self.events.push_back(Event::Latency {
                    rtt: Duration::from_micros(rtt_ticks * crate::time::MICROS_PER_TICK),
                    offset_ticks,
                });
            }
            // CK2 ends a round the peer started; it is never answered (a new CK0 here is how
            // two peers end up ping-ponging forever).
            _ => {}
        }
    }

    fn handle_rtp(&mut self, now: Instant, bytes: &[u8]) {
        let packet = match rtp::Packet::parse(bytes) {
            Ok(p)
                if Some(p.header.ssrc) == self.peer_ssrc
                    && p.header.payload_type == PAYLOAD_TYPE =>
            {
                p
            }
            Ok(_) => return,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if self.state == State::AwaitingData {
            return;
        }
        self.heard(now);
        let seq = self.rx_seq.extend(packet.header.sequence);
        let lost = match self.rx_highest {
            None => 0,
            Some(high) if seq > high => seq - high - 1,
            Some(high) => {
                let bit = high - seq;
                if bit >= 64 || self.rx_window & (1 << bit) != 0 {
                    self.stats.duplicates += 1;
                    return;
                }
                self.rx_window |= 1 << bit;
                self.stats.late += 1;
                // Its content was repaired from the next packet's journal already.
                if self.peer_sends_journal {
                    return;
                }
                0
            }
        };
        if self.rx_highest.is_none_or(|high| seq > high) {
            let shift = self.rx_highest.map_or(64, |high| seq - high);
            self.rx_window = if shift >= 64 {
                0
            } else {
                self.rx_window << shift
            };
            self.rx_window |= 1;
            self.rx_highest = Some(seq);
        }
        self.stats.packets_received += 1;
        if lost > 0 {
            self.stats.packets_lost += lost;
            self.events.push_back(Event::Loss { lost });
        }
        if !self.feedback_due {
            self.feedback_due = true;
            self.set_timer(Timer::Feedback, now + self.config.feedback_interval);
        }
        let timestamp = packet.header.timestamp;
        let (list, journal) = match midi_list::parse(packet.payload) {
            Ok(parsed) => parsed,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if lost > 0 {
            // A SysEx in progress has a hole now.
            self.assembler.abort();
        }
        if list.header().journal {
            self.peer_sends_journal = true;
            self.recover(seq as u32, journal, lost as u32, timestamp);
        }
        for command in list.commands() {
            let command = match command {
                Ok(c) => c,
                Err(_) => {
                    self.stats.malformed += 1;
                    break;
                }
            };
            let message = match command.kind {
                CommandKind::Short(m) => MidiMessage::Short(m),
                CommandKind::SysEx(segment) => match self.assemble(&segment) {
                    Some(message) => message,
                    None => continue,
                },
            };
            self.journal_rx.observe(message.as_bytes());
            self.events.push_back(Event::Midi(MidiEvent {
                timestamp: timestamp.wrapping_add(command.time),
                message,
                recovered: false,
            }));
        }
    }

    fn assemble(&mut self, segment: &SysExSegment<'_>) -> Option<MidiMessage> {
        assemble(&mut self.assembler, &mut self.stats, segment)
    }

    /// Applies the peer's journal after `lost` packets went missing: the repairs it gives
    /// are delivered before the packet's own commands. A bad journal costs only itself.
    fn recover(&mut self, seq: u32, journal: &[u8], lost: u32, timestamp: u32) {
        // Each repair becomes an event as it comes (no list of copies in between).
        let (events, assembler, stats) = (&mut self.events, &mut self.assembler, &mut self.stats);
        let result = self
            .journal_rx
            .recover(seq, journal, lost, &mut |bytes: &[u8]| {
                let message = match bytes {
                    // A SysEx repair may be a first segment: it joins what arrives next.
                    [status::SYSEX_START, inner @ .., status::SYSEX_START] => {
                        let segment = SysExSegment {
                            kind: SegmentKind::First,
                            data: inner,
                        };
                        assemble(assembler, stats, &segment);
                        return;
                    }
                    _ => match MidiMessage::from_bytes(bytes) {
                        Ok(m) => m,
                        Err(_) => return,
                    },
                };
                stats.journal_repairs += 1;
                events.push_back(Event::Midi(MidiEvent {
                    timestamp,
                    message,
                    recovered: true,
                }));
            });
        if result.is_err() {
            self.stats.malformed += 1;
        }
    }

    /// Queues MIDI for the peer; it goes out, batched with whatever else is queued, at the next
    /// `poll_transmit`. Ignored unless connected.
    pub fn send_midi(&mut self, now: Instant, message: &MidiMessage) {
        if self.state == State::Connected {
            let tick = now.ticks_10khz_since(self.origin);
            if self.outbox.push(tick, message).is_err() {
                self.stats.send_dropped += 1;
            }
        }
    }

    /// Convenience for short messages.
    pub fn send_short(&mut self, now: Instant, message: ShortMessage) {
        self.send_midi(now, &MidiMessage::Short(message));
    }

    /// Ends the session: BY to the peer, then a `Disconnected { Closed }` event.
    pub fn close(&mut self) {
        if self.state != State::Closed {
            if matches!(self.state, State::Connected | State::AwaitingData)
                || self.peer_ssrc.is_some()
            {
                self.pending.push_back(Pending::End(self.end_command()));
            }
            self.end(DisconnectReason::Closed);
        }
    }

    /// Ends the session without BY: the peer that knew it is gone.
    pub fn replace(&mut self) {
        if self.state != State::Closed {
            self.end(DisconnectReason::Replaced);
        }
    }

    fn end(&mut self, reason: DisconnectReason) {
        self.state = State::Closed;
        self.timers = [None; TIMERS];
        self.outbox.clear();
        self.events.push_back(Event::Disconnected { reason });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (index, kind) in [Timer::Invite, Timer::Clock, Timer::Feedback, Timer::Idle]
            .into_iter()
            .enumerate()
        {
            if self.timers[index].is_some_and(|at| at <= now) {
                self.timers[index] = None;
                self.on_timer(now, kind);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Invite => self.send_invitation(now),
            Timer::Clock => self.on_clock_timer(now),
            Timer::Feedback => {
                if let Some(high) = self.rx_highest {
                    self.pending.push_back(Pending::Feedback(high as u16));
                }
                self.feedback_due = false;
            }
            Timer::Idle => {
                let limit = self.idle_limit();
                if now.saturating_duration_since(self.last_heard) >= limit {
                    self.end(DisconnectReason::Timeout);
                } else {
                    self.set_timer(Timer::Idle, self.last_heard + limit);
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let guard = self.guard_deadline();
        self.timers.iter().flatten().copied().chain(guard).min()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() {
            // A burst of MIDI grew the queue: give the memory back once it is drained.
            self.events.shrink_to(QUEUE_KEEP);
        }
        event
    }

    /// Writes the next datagram into `buf` (at least `mtu` bytes) and says where it goes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(pending) = self.pending.pop_front() {
            if let Some(t) = self.encode_pending(pending, buf) {
                self.stats.packets_sent += 1;
                return Some(t);
            }
        }
        if self.state != State::Connected {
            return None;
        }
        let guard_due = self.guard_deadline().is_some_and(|at| at <= now);
        if self.outbox.is_empty() && !guard_due {
            return None;
        }
        let len = self.encode_rtp(now, buf)?;
        self.stats.packets_sent += 1;
        Some(Transmit {
            port: SocketKind::Data,
            dst: self.peer_data,
            len,
        })
    }

    /// One RTP-MIDI packet: header, the queued commands that fit, and the journal of what
    /// was sent before (a guard packet when nothing is queued).
    fn encode_rtp(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mtu = self.config.mtu.min(buf.len());
        let seq = self.next_seq as u32;
        // The journal is written first, in the caller's buffer past the room kept for
        // commands, then moved down behind them: no journal buffer per session. When what
        // waits may not fit in that room, the journal is first moved to the end of the MTU
        // for the commands to fill what it left.
        let journal_start = RTP_HEADER_LEN + MIN_COMMAND_ROOM;
        let journal_len = match buf.get_mut(journal_start..mtu) {
            Some(room) if self.config.journal => self.journal_tx.emit(seq, room),
            _ => 0,
        };
        let fits = self
            .outbox
            .section_len_at_most()
            .is_some_and(|n| n <= MIN_COMMAND_ROOM);
        let journal_at = if fits {
            journal_start
        } else {
            mtu - journal_len
        };
        if journal_at != journal_start {
            buf.copy_within(journal_start..journal_start + journal_len, journal_at);
        }
        let section = buf.get_mut(RTP_HEADER_LEN..journal_at)?;
        let journal_tx = &mut self.journal_tx;
        let record = self.config.journal;
        let emitted = self
            .outbox
            .emit_section(section, journal_len > 0, |command| {
                if record {
                    journal_tx.record(seq, command)
                }
            });
        let (section_len, timestamp, had_midi) = match emitted {
            Some(e) => (e.len, e.timestamp, true),
            // A guard packet: no commands, only the journal.
            None if journal_len > 0 => {
                let header = midi_list::Header::new(0, true, false, false);
                header.emit(section);
                let ts = now.ticks_10khz_since(self.origin) as u32;
                (header.buffer_len(), ts, false)
            }
            None => {
                self.guard.stop();
                return None;
            }
        };
        let header = rtp::Header {
            marker: true,
            payload_type: PAYLOAD_TYPE,
            sequence: seq as u16,
            timestamp,
            ssrc: self.ssrc,
        };
        header.emit(&mut buf[..RTP_HEADER_LEN]).ok()?;
        let end = RTP_HEADER_LEN + section_len;
        buf.copy_within(journal_at..journal_at + journal_len, end);
        self.next_seq += 1;
        if self.config.journal {
            self.guard.on_sent(now, had_midi);
        }
        Some(end + journal_len)
    }

    /// When the next guard packet is due: after the stream goes quiet, while the peer has not
    /// confirmed all we sent.
    fn guard_deadline(&self) -> Option<Instant> {
        if self.config.journal && self.state == State::Connected && self.journal_tx.has_pending() {
            self.guard.next_guard()
        } else {
            None
        }
    }

    fn encode_pending(&mut self, pending: Pending, buf: &mut [u8]) -> Option<Transmit> {
        let invitation = |token, ssrc, name| Invitation { token, ssrc, name };
        let (port, dst, command) = match pending {
            Pending::Invite(port) => (
                port,
                self.peer_addr(port),
                Command::Invitation(invitation(
                    self.token,
                    self.ssrc,
                    Some(self.config.name.as_str()),
                )),
            ),
            Pending::Accept(port, dst) => (
                port,
                dst,
                Command::Accept(invitation(
                    self.token,
                    self.ssrc,
                    Some(self.config.name.as_str()),
                )),
            ),
            Pending::End(end) => (SocketKind::Control, self.peer_control, Command::End(end)),
            Pending::Clock(port, dst, ck) => (port, dst, Command::Clock(ck)),
            // To the control port, where Apple, rtpMIDI and rtpmidid send and expect it.
            Pending::Feedback(seq) => (
                SocketKind::Control,
                self.peer_control,
                Command::Feedback(Feedback {
                    ssrc: self.ssrc,
                    seq,
                }),
            ),
        };
        let len = command.emit(buf).ok()?;
        Some(Transmit { port, dst, len })
    }

    fn new_ssrc(&mut self) -> u32 {
        let ssrc = self.rng.next_u32();
        if self.config.hub_mark {
            hubtag::mark(ssrc)
        } else {
            ssrc
        }
    }

    /// Is this a session between two rtpmidid hubs, whose events carry tags ([`hubtag`])?
    /// Both sides mark their SSRCs; a daemon that is not a hub neither sends nor reads tags.
    pub fn links_hubs(&self) -> bool {
        self.config.hub_mark && self.peer_ssrc.is_some_and(hubtag::is_marked)
    }

    /// The peer chose our SSRC (RFC 3550 §8.2): leave, and invite again under a new SSRC and
    /// token.
    fn restart_after_collision(&mut self, now: Instant) {
        self.pending.push_back(Pending::End(self.end_command()));
        let old = self.ssrc;
        while self.ssrc == old {
            self.ssrc = self.new_ssrc();
        }
        self.token = self.rng.next_u32();
        self.peer_ssrc = None;
        self.state = State::Inviting {
            port: SocketKind::Control,
            attempts: 0,
        };
        self.send_invitation(now);
    }

    fn end_command(&self) -> End {
        End {
            token: self.token,
            ssrc: self.ssrc,
        }
    }

    fn send_invitation(&mut self, now: Instant) {
        let State::Inviting { port, attempts } = self.state else {
            return;
        };
        if attempts >= self.config.invite_attempts {
            self.end(DisconnectReason::InviteTimeout);
            return;
        }
        self.pending.push_back(Pending::Invite(port));
        self.state = State::Inviting {
            port,
            attempts: attempts + 1,
        };
        let backoff = self
            .config
            .invite_interval
            .saturating_mul(1 << attempts.min(16))
            .min(self.config.invite_max_interval);
        self.set_timer(Timer::Invite, now + backoff);
    }

    fn become_connected(&mut self, now: Instant) {
        self.state = State::Connected;
        self.timers[Timer::Invite as usize] = None;
        self.heard(now);
        self.set_timer(Timer::Idle, now + self.idle_limit());
        match self.role {
            Role::Initiator => self.start_clock_round(now),
            Role::Responder => {
                self.set_timer(Timer::Clock, now + self.config.responder_probe_after)
            }
        }
        let addr = self.peer_control;
        self.events.push_back(Event::Connected {
            name: self.peer_name.clone(),
            ssrc: self.peer_ssrc.unwrap_or(0),
            addr,
        });
    }

    /// The Clock timer: a CK0 unanswered after `ck_answer_wait` is a miss and is sent again;
    /// `ck_max_missed` misses in a row end the session (a peer that restarted or vanished is
    /// noticed in seconds, not after the idle timeout). Otherwise it starts the next round when due.
    fn on_clock_timer(&mut self, now: Instant) {
        if self.role == Role::Responder {
            return self.on_probe_timer(now);
        }
        if self.ck_outstanding.is_some() {
            self.ck_missed += 1;
            if self.ck_missed >= self.config.ck_max_missed {
                self.end(DisconnectReason::Timeout);
                return;
            }
            self.start_clock_round(now);
        } else if now >= self.ck_next_round {
            self.start_clock_round(now);
        } else {
            self.set_timer(Timer::Clock, self.ck_next_round);
        }
    }

    /// The responder's Clock timer: the initiator keeps time, but after `responder_probe_after`
    /// of silence we send CK0s ourselves, `ck_answer_wait` apart; anything heard from the peer
    /// ends the check, `ck_max_missed` unanswered ones end the session.
    fn on_probe_timer(&mut self, now: Instant) {
        if self.challenged_at.is_some_and(|at| self.last_heard > at) {
            self.challenged_at = None;
        }
        let silent_for = now.saturating_duration_since(self.last_heard);
        if self.challenged_at.is_none() && silent_for < self.config.responder_probe_after {
            self.ck_outstanding = None;
            let next = self.last_heard + self.config.responder_probe_after;
            return self.set_timer(Timer::Clock, next);
        }
        if self.ck_outstanding.is_some() {
            self.ck_missed += 1;
            if self.ck_missed >= self.config.ck_max_missed {
                return self.end(DisconnectReason::Timeout);
            }
        }
        self.send_probe(now);
    }

    fn send_probe(&mut self, now: Instant) {
        let ts1 = self.clock_ticks(now);
        self.ck_outstanding = Some(ts1);
        let ck = self.clock(0, [ts1, 0, 0]);
        self.pending
            .push_back(Pending::Clock(SocketKind::Data, self.peer_data, ck));
        self.set_timer(Timer::Clock, now + self.config.ck_answer_wait);
    }

    /// Another peer on the same host invites under this session's peer name: is this session
    /// still alive? The first call sends a CK0 probe; an answer (anything heard since) keeps
    /// the session, silence for `ck_answer_wait` gives it up.
    pub fn challenge(&mut self, now: Instant) -> Challenge {
        match self.challenged_at {
            None => {
                self.challenged_at = Some(now);
                self.send_probe(now);
                Challenge::Pending
            }
            Some(at) if self.last_heard > at => {
                self.challenged_at = None;
                Challenge::Alive
            }
            Some(at) if now.saturating_duration_since(at) >= self.config.ck_answer_wait => {
                Challenge::Silent
            }
            Some(_) => Challenge::Pending,
        }
    }

    /// Did a datagram that came in on our `port` come from this session's peer? Only its own
    /// address and port may end the session, send it MIDI or have CKs answered.
    pub fn is_peer(&self, port: SocketKind, from: SocketAddr) -> bool {
        self.peer_addr(port) == from
    }

    fn start_clock_round(&mut self, now: Instant) {
        let ts1 = self.clock_ticks(now);
        self.ck_outstanding = Some(ts1);
        let ck = self.clock(0, [ts1, 0, 0]);
        self.pending
            .push_back(Pending::Clock(SocketKind::Data, self.peer_data, ck));
        self.ck_rounds += 1;
        let period = if self.ck_rounds < self.config.ck_quick_rounds {
            self.config.ck_quick_interval
        } else {
            self.config.ck_interval
        };
        self.ck_next_round = now + period;
        self.set_timer(Timer::Clock, now + self.config.ck_answer_wait.min(period));
    }

    fn clock(&self, count: u8, timestamps: [u64; 3]) -> Clock {
        Clock {
            ssrc: self.ssrc,
            count,
            timestamps,
        }
    }

    /// The session's clock (CK timestamps, our RTP timestamps) at `now`: 100 µs ticks since
    /// the session began.
    pub fn clock_ticks(&self, now: Instant) -> u64 {
        now.ticks_10khz_since(self.origin)
    }

    /// Anything valid from the peer: it is alive, whatever became of our last CK. The timers
    /// that watch for silence move to the end of the new silence now, not when they fire: a
    /// thousand sessions whose peers keep talking would otherwise each wake the daemon every
    /// `responder_probe_after` only to re-arm.
    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ck_missed = 0;
        if self.state != State::Connected {
            return;
        }
        self.set_timer(Timer::Idle, now + self.idle_limit());
        let probing = self.ck_outstanding.is_some() || self.challenged_at.is_some();
        if self.role == Role::Responder && !probing {
            self.set_timer(Timer::Clock, now + self.config.responder_probe_after);
        }
    }

    fn idle_limit(&self) -> Duration {
        match self.role {
            Role::Initiator => self.config.initiator_timeout,
            Role::Responder => self.config.responder_timeout,
        }
    }

    fn peer_addr(&self, port: SocketKind) -> SocketAddr {
        match port {
            SocketKind::Control => self.peer_control,
            SocketKind::Data => self.peer_data,
        }
    }

    fn set_timer(&mut self, timer: Timer, at: Instant) {
        self.timers[timer as usize] = Some(at);
    }
}

/// Feeds a SysEx segment from the peer to `assembler`, counting what it drops.
fn assemble(
    assembler: &mut SysExAssembler,
    stats: &mut Stats,
    segment: &SysExSegment<'_>,
) -> Option<MidiMessage> {
    let pushed = assembler.push(segment);
    if pushed.error.is_some() {
        stats.sysex_dropped += 1;
    }
    pushed.message
}

/// Peer names go into logs and ALSA port names: printable, trimmed, at most 64 characters.
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "192.0.2.7:5004";
    const PEER_DATA: &str = "192.0.2.7:5005";

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    fn datagram(cmd: Command<'_>) -> Vec<u8> {
        let mut buf = vec![0; cmd.buffer_len()];
        cmd.emit(&mut buf).unwrap();
        buf
    }

    /// Every datagram the session wants to send now, parsed back.
    fn sent(s: &mut Session, now: Instant) -> Vec<(SocketKind, SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 1500];
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            out.push((t.port, t.dst, buf[..t.len].to_vec()));
        }
        out
    }

    fn invitation(token: u32, ssrc: u32) -> Invitation<'static> {
        Invitation {
            token,
            ssrc,
            name: Some("Peer"),
        }
    }

    /// A responder session after the peer's IN on both ports.
    fn responder() -> Session {
        let from = PEER.parse().unwrap();
        let mut s = Session::accept(Config::default(), at(0), from, &invitation(77, 1234), 5);
        let data_in = datagram(Command::Invitation(invitation(77, 1234)));
        s.handle_datagram(
            at(1),
            SocketKind::Data,
            PEER_DATA.parse().unwrap(),
            &data_in,
        );
        assert!(s.is_connected());
        sent(&mut s, at(1));
        s
    }

    fn rtp_note(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut buf = vec![0; 16];
        rtp::Header {
            marker: true,
            payload_type: PAYLOAD_TYPE,
            sequence: seq,
            timestamp: 0,
            ssrc,
        }
        .emit(&mut buf)
        .unwrap();
        buf[12..].copy_from_slice(&[0x03, 0x90, 0x3C, 0x64]);
        buf
    }

    #[test]
    fn repeated_invitation_is_answered_again() {
        let mut s = responder();
        let again = datagram(Command::Invitation(invitation(77, 1234)));
        s.handle_datagram(at(5), SocketKind::Control, PEER.parse().unwrap(), &again);
        let out = sent(&mut s, at(5));
        assert_eq!(out.len(), 1);
        assert!(matches!(Command::parse(&out[0].2), Ok(Command::Accept(a)) if a.token == 77));
        assert_eq!(
            s.poll_event().map(|e| matches!(e, Event::Connected { .. })),
            Some(true)
        );
        assert_eq!(s.poll_event(), None, "one Connected event only");
    }

    #[test]
    fn clock_is_answered_on_the_port_it_came_in_on_and_ck2_never() {
        let mut s = responder();
        for port in [SocketKind::Control, SocketKind::Data] {
            let ck0 = datagram(Command::Clock(Clock {
                ssrc: 1234,
                count: 0,
                timestamps: [500, 0, 0],
            }));
            let from: SocketAddr = if port == SocketKind::Control {
                PEER
            } else {
                PEER_DATA
            }
            .parse()
            .unwrap();
            s.handle_datagram(at(2000), port, from, &ck0);
            let out = sent(&mut s, at(2000));
            assert_eq!(out.len(), 1);
            assert_eq!((out[0].0, out[0].1), (port, from));
            match Command::parse(&out[0].2) {
                Ok(Command::Clock(ck)) => {
                    assert_eq!(ck.count, 1);
                    assert_eq!(ck.timestamps[0], 500);
                    // 2000 ms after the session's start, in 100 µs ticks.
                    assert_eq!(ck.timestamps[1], 20_000);
                }
                other => panic!("{other:?}"),
            }
        }
        let ck2 = datagram(Command::Clock(Clock {
            ssrc: 1234,
            count: 2,
            timestamps: [500, 20_000, 510],
        }));
        s.handle_datagram(at(2001), SocketKind::Data, PEER_DATA.parse().unwrap(), &ck2);
        assert!(sent(&mut s, at(2001)).is_empty());
    }

    #[test]
    fn a_peer_heard_moves_the_responders_silence_timers_without_a_wake_up() {
        let mut s = responder();
        let config = Config::default();
        let ck0 = datagram(Command::Clock(Clock {
            ssrc: 1234,
            count: 0,
            timestamps: [500, 0, 0],
        }));
        s.handle_datagram(at(5000), SocketKind::Data, PEER_DATA.parse().unwrap(), &ck0);
        sent(&mut s, at(5000));
        // Nothing to do before 10 s of silence since the CK: no deadline at 10 s after the
        // session began, when the probe was first due.
        assert_eq!(
            s.poll_timeout(),
            Some(at(5000) + config.responder_probe_after)
        );
    }

    #[test]
    fn receiver_feedback_about_once_a_second_with_the_newest_sequence() {
        let mut s = responder();
        let from: SocketAddr = PEER_DATA.parse().unwrap();
        for i in 0..30u16 {
            s.handle_datagram(
                at(10 + u64::from(i) * 50),
                SocketKind::Data,
                from,
                &rtp_note(i, 1234),
            );
            s.handle_timeout(at(10 + u64::from(i) * 50));
        }
        // 1.5 s of packets every 50 ms: exactly one RS so far, to the peer's control port
        // (where Apple, rtpMIDI and the C++ rtpmidid expect it).
        let feedback: Vec<Feedback> = sent(&mut s, at(1460))
            .iter()
            .filter_map(|(port, dst, b)| match Command::parse(b) {
                Ok(Command::Feedback(f)) => {
                    assert_eq!(
                        (*port, dst.to_string()),
                        (SocketKind::Control, PEER.to_string())
                    );
                    Some(f)
                }
                _ => None,
            })
            .collect();
        assert_eq!(feedback.len(), 1);
        assert!(feedback[0].seq >= 19, "{:?}", feedback[0]);
        assert_eq!(s.stats().packets_received, 30);
    }

    #[test]
    fn ssrc_collision_restarts_the_invitation_under_a_new_ssrc() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut s = Session::connect(Config::default(), at(0), peer, 9);
        let first = sent(&mut s, at(0));
        let Ok(Command::Invitation(inv)) = Command::parse(&first[0].2) else {
            panic!("no IN");
        };
        let (token, ssrc) = (inv.token, inv.ssrc);
        // The peer answers with our own SSRC.
        let ok = datagram(Command::Accept(invitation(token, ssrc)));
        s.handle_datagram(at(3), SocketKind::Control, peer, &ok);
        let out = sent(&mut s, at(3));
        let cmds: Vec<Command<'_>> = out
            .iter()
            .map(|(_, _, b)| Command::parse(b).unwrap())
            .collect();
        assert!(matches!(cmds[0], Command::End(e) if e.token == token && e.ssrc == ssrc));
        assert!(matches!(cmds[1], Command::Invitation(i) if i.token != token && i.ssrc != ssrc));
        assert_eq!(out[1].0, SocketKind::Control);
    }

    #[test]
    fn malformed_datagrams_are_counted_not_fatal() {
        let mut s = responder();
        let from: SocketAddr = PEER_DATA.parse().unwrap();
        for junk in [
            &[0xFF, 0xFF, b'C', b'K', 0][..],
            &[0x80, 0x61],
            &[0x80, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0xD2, 0x8F],
        ] {
            s.handle_datagram(at(5), SocketKind::Data, from, junk);
        }
        assert!(s.stats().malformed >= 2, "{:?}", s.stats());
        assert!(s.is_connected());
        s.handle_datagram(at(6), SocketKind::Data, from, &rtp_note(1, 1234));
        assert!(matches!(s.poll_event(), Some(Event::Connected { .. })));
        assert!(
            matches!(s.poll_event(), Some(Event::Midi(m)) if m.message.as_bytes() == [0x90, 0x3C, 0x64])
        );
    }
}
