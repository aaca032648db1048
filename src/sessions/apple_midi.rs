//! AppleMIDI sessions: the endpoint, and the hub tags its hub peers send before each event.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use protocol::admission::Refusal;
use protocol::endpoint::{AcceptPolicy, DropStats, Dropped, Endpoint, SessionId};
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::midi2::session::ClientAuth;
use protocol::session::{self, DisconnectReason, SocketKind, Transmit};
use protocol::time::Instant;

use super::{row, Happening, Sessions};
use crate::ctl::proto::PeerRow;
use crate::router::Ended;

pub struct AppleMidi {
    pub endpoint: Endpoint,
    /// The tag a hub peer sent, for its next event.
    tags: BTreeMap<SessionId, Tag>,
}

impl AppleMidi {
    pub fn new(endpoint: Endpoint) -> AppleMidi {
        AppleMidi {
            endpoint,
            tags: BTreeMap::new(),
        }
    }
}

impl Sessions for AppleMidi {
    fn protocol(&self) -> &'static str {
        "rtp-midi"
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Dropped> {
        match self.endpoint.handle_datagram(now, port, from, bytes) {
            // Held for a half-open slot, answered then: not a drop.
            Ok(_) | Err(Dropped::Deferred) => Ok(()),
            Err(why) => Err(why),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.endpoint.poll_transmit(now, buf)
    }

    fn poll_happening(&mut self) -> Option<(SessionId, Happening)> {
        loop {
            let (id, event) = self.endpoint.poll_event()?;
            let from_hub = self.endpoint.session(id).is_some_and(|s| s.links_hubs());
            let mut happening = happening(event);
            if let Happening::Midi { message, tag, .. } = &mut happening {
                if from_hub {
                    // A tag is kept for the event it precedes.
                    if let Some(t) = message_tag(message) {
                        self.tags.insert(id, t);
                        continue;
                    }
                    *tag = self.tags.remove(&id);
                }
            }
            return Some((id, happening));
        }
    }

    fn poll_refusal(&mut self) -> Option<(SocketAddr, Refusal)> {
        self.endpoint.poll_refusal()
    }

    fn session_count(&self) -> usize {
        self.endpoint.session_count()
    }

    fn send_midi(&mut self, now: Instant, id: SessionId, message: &MidiMessage, tag: Tag) {
        if let Some(s) = self.endpoint.session_mut(id) {
            send_tagged(s, now, message, tag);
        }
    }

    fn send_to_all(
        &mut self,
        now: Instant,
        except: Option<SessionId>,
        message: &MidiMessage,
        tag: Tag,
    ) {
        for (id, session) in self.endpoint.sessions_mut() {
            if Some(id) != except && session.is_connected() {
                send_tagged(session, now, message, tag);
            }
        }
    }

    fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        _credentials: Option<ClientAuth>,
    ) -> SessionId {
        self.endpoint.connect(now, addr)
    }

    fn close(&mut self, _now: Instant, id: SessionId) -> Option<String> {
        let s = self.endpoint.session_mut(id)?;
        s.close();
        Some(s.peer_name().to_string())
    }

    fn close_all(&mut self, _now: Instant) {
        self.endpoint.close_all()
    }

    fn clock_ticks(&self, id: SessionId, now: Instant) -> Option<u64> {
        Some(self.endpoint.session(id)?.clock_ticks(now))
    }

    fn rows(&self) -> Vec<(SessionId, PeerRow)> {
        self.endpoint
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
                let address = s.peer_control().to_string();
                let mut r = row(s.peer_name(), address, state, role, self.protocol());
                r.sent = stats.packets_sent;
                r.received = stats.packets_received;
                r.lost = stats.packets_lost;
                r.journal_repairs = stats.journal_repairs;
                (id, r)
            })
            .collect()
    }

    fn drops(&self) -> DropStats {
        self.endpoint.drops()
    }

    fn set_policy(&mut self, policy: AcceptPolicy) {
        self.endpoint.set_policy(policy)
    }

    fn set_session_config(&mut self, config: session::Config) {
        self.endpoint.set_config(config);
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

/// A session's event in the daemon's terms.
pub(super) fn happening(event: session::Event) -> Happening {
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
