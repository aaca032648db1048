//! Network MIDI 2.0 sessions: the endpoint, its address filter, and per session what turns
//! UMPs into MIDI 1.0 messages (group 0, SysEx reassembled); stream messages about our
//! endpoint are answered here, not passed on.
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use protocol::endpoint::{AcceptPolicy, DropStats, Dropped, SessionId};
use protocol::hubtag::Tag;
use protocol::midi::{MidiMessage, MAX_SYSEX};
use protocol::midi2::endpoint::{self, Endpoint};
use protocol::midi2::session::{self, ClientAuth, DisconnectReason, Event};
use protocol::midi2::ump::{EndpointInfo, GroupMessage, StreamResponder, ToMidi1, Ump};
use protocol::session::{SocketKind, Transmit};
use protocol::time::Instant;

use super::{row, Happening, Sessions};
use crate::config;
use crate::ctl::proto::PeerRow;
use crate::router::Ended;

/// MIDI 2.0 group our MIDI 1.0 messages travel in.
const GROUP: u8 = 0;

pub struct Midi2 {
    pub endpoint: Endpoint,
    responder: StreamResponder,
    translators: BTreeMap<u64, ToMidi1>,
    /// Translated happenings not taken yet.
    happenings: VecDeque<(SessionId, Happening)>,
    scratch: Vec<GroupMessage>,
    answers: Vec<Ump>,
}

impl Midi2 {
    /// Our UMP endpoint `config.name`, answering discovery with [`product_id`] of it;
    /// `policy`: AppleMIDI's, whose limits and addresses apply alike.
    pub fn new(config: session::Config, policy: AcceptPolicy, seed: u64) -> Midi2 {
        let name = config.name.clone();
        Midi2 {
            endpoint: Endpoint::new(config, policy_of(&policy), seed),
            responder: StreamResponder::new(EndpointInfo::new(&name, &product_id(&name))),
            translators: BTreeMap::new(),
            happenings: VecDeque::new(),
            scratch: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Translates one endpoint event into `happenings`.
    fn on_event(&mut self, id: endpoint::SessionId, event: Event) {
        let sid = SessionId(id.0);
        match event {
            Event::Connected { name, .. } => {
                self.translators.insert(id.0, ToMidi1::new(MAX_SYSEX));
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
                    return;
                }
                let Some(translator) = self.translators.get_mut(&id.0) else {
                    return;
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
                let orderly = matches!(
                    reason,
                    DisconnectReason::Closed | DisconnectReason::PeerBye(_)
                );
                use protocol::midi2::wire::bye_reason as bye;
                let why = match reason {
                    DisconnectReason::AuthFailed => {
                        ": wrong credentials, or none for the method asked"
                    }
                    DisconnectReason::Refused(
                        bye::AUTH_MISSING
                        | bye::AUTH_FAILED
                        | bye::USER_NOT_FOUND
                        | bye::NO_MATCHING_AUTH,
                    ) => ": authentication refused (see [connect] secret, user, password)",
                    _ => "",
                };
                self.happenings.push_back((
                    sid,
                    Happening::Ended {
                        ended: Ended::Other,
                        reason: format!("{reason:?}{why}"),
                        orderly,
                    },
                ));
            }
        }
    }
}

impl Sessions for Midi2 {
    fn protocol(&self) -> &'static str {
        "midi2"
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        _port: SocketKind,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Dropped> {
        match self.endpoint.handle_datagram(now, from, bytes) {
            Ok(_) => Ok(()),
            Err(endpoint::Dropped::Malformed) => Err(Dropped::Malformed),
            Err(endpoint::Dropped::UnknownPeer) => Err(Dropped::UnknownSession),
            Err(endpoint::Dropped::Refused) => Err(Dropped::Refused),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let t = self.endpoint.poll_transmit(now, buf)?;
        Some(Transmit {
            dst: t.dst,
            port: SocketKind::Data,
            len: t.len,
        })
    }

    fn poll_happening(&mut self) -> Option<(SessionId, Happening)> {
        while self.happenings.is_empty() {
            let (id, event) = self.endpoint.poll_event()?;
            self.on_event(id, event);
        }
        self.happenings.pop_front()
    }

    fn session_count(&self) -> usize {
        self.endpoint.sessions().count()
    }

    fn send_midi(&mut self, _now: Instant, id: SessionId, message: &MidiMessage, _tag: Tag) {
        if let Some(s) = self.endpoint.session_mut(endpoint::SessionId(id.0)) {
            s.send_midi1(GROUP, message);
        }
    }

    fn send_to_all(
        &mut self,
        _now: Instant,
        except: Option<SessionId>,
        message: &MidiMessage,
        _tag: Tag,
    ) {
        for (id, session) in self.endpoint.sessions_mut() {
            if Some(SessionId(id.0)) != except && session.is_connected() {
                session.send_midi1(GROUP, message);
            }
        }
    }

    fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        credentials: Option<ClientAuth>,
    ) -> SessionId {
        SessionId(match credentials {
            Some(auth) => self.endpoint.connect_with(now, addr, auth).0,
            None => self.endpoint.connect(now, addr).0,
        })
    }

    fn close(&mut self, now: Instant, id: SessionId) -> Option<String> {
        let s = self.endpoint.session_mut(endpoint::SessionId(id.0))?;
        s.close(now);
        Some(s.peer_name().to_string())
    }

    fn close_all(&mut self, now: Instant) {
        self.endpoint.close_all(now)
    }

    fn rows(&self) -> Vec<(SessionId, PeerRow)> {
        self.endpoint
            .sessions()
            .map(|(id, s)| {
                let role = match s.role() {
                    session::Role::Client => "initiator",
                    session::Role::Host => "responder",
                };
                let state = if s.is_connected() {
                    "connected"
                } else {
                    "inviting"
                };
                let stats = s.stats();
                let address = s.peer().to_string();
                let mut r = row(s.peer_name(), address, state, role, self.protocol());
                r.sent = stats.datagrams_sent;
                r.received = stats.datagrams_received;
                r.lost = stats.lost;
                r.journal_repairs = stats.repaired;
                (SessionId(id.0), r)
            })
            .collect()
    }

    fn drops(&self) -> DropStats {
        let d = self.endpoint.drops();
        DropStats {
            malformed: d.malformed,
            unknown_session: d.unknown_peer,
            refused: d.refused,
            ..DropStats::default()
        }
    }

    fn set_policy(&mut self, policy: AcceptPolicy) {
        self.endpoint.set_policy(policy_of(&policy))
    }
}

/// The AppleMIDI policy's limits and networks for a MIDI 2.0 endpoint.
fn policy_of(policy: &AcceptPolicy) -> endpoint::AcceptPolicy {
    endpoint::AcceptPolicy {
        max_sessions: policy.max_sessions.unwrap_or(usize::MAX),
        addresses: policy.addresses.clone(),
        ..endpoint::AcceptPolicy::default()
    }
}

/// The settings of listener `name`'s Network MIDI 2.0 sessions: `[midi2]`'s authentication
/// for hosts, and its shared secret for the hosts we connect to.
pub fn midi2_config(name: &str, m: &config::Midi2) -> session::Config {
    session::Config {
        name: name.to_string(),
        product_id: product_id(name),
        fec_count: m.fec,
        host_auth: m.host_auth(),
        client_auth: m.client_auth(),
        ..session::Config::default()
    }
}

/// A product instance id for our UMP endpoint: stable for a name, as peers remember it.
pub fn product_id(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("rtpmidid-{hash:016x}")
}
