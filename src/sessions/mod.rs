//! A listener's sessions in one set of terms, whatever the protocol: the sans-IO protocol
//! endpoint (AppleMIDI or Network MIDI 2.0) and what adapts it to the rest of the daemon —
//! [`Happening`]s, MIDI 1.0 messages, hub tags, `ctl peers` rows. No sockets: datagrams come
//! in as bytes and go out through the endpoint's `poll_transmit`; time is an argument.
mod apple_midi;
mod drops;
mod midi2;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use protocol::admission::Refusal;
use protocol::endpoint::{AcceptPolicy, DropStats, Dropped, SessionId};
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::midi2::session::ClientAuth;
use protocol::session::{self, SocketKind, Transmit};
use protocol::time::{Duration, Instant};

pub use self::apple_midi::AppleMidi;
pub use self::drops::{refusal_text, DropLog};
pub use self::midi2::{midi2_config, product_id, Midi2};
use crate::ctl::proto::PeerRow;
use crate::router::Ended;

/// What a session did, in the daemon's terms.
#[derive(Debug, PartialEq)]
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

/// The sessions of one listener, the same calls for either protocol.
pub trait Sessions {
    /// `"rtp-midi"` or `"midi2"`, as `ctl peers` shows it.
    fn protocol(&self) -> &'static str;

    /// A datagram `from` a peer on our `port` (which AppleMIDI socket; MIDI 2.0 has one).
    fn handle_datagram(
        &mut self,
        now: Instant,
        port: SocketKind,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Dropped>;

    fn handle_timeout(&mut self, now: Instant);

    fn poll_timeout(&mut self) -> Option<Instant>;

    /// The next datagram to send, written at the start of `buf` (room for the largest), and
    /// the socket it goes from (MIDI 2.0 has one: `Data`).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;

    /// What a session did, MIDI 2.0 UMPs already turned into MIDI 1.0.
    fn poll_happening(&mut self) -> Option<(SessionId, Happening)>;

    /// An invitation refused, with the first address it came from (AppleMIDI).
    fn poll_refusal(&mut self) -> Option<(SocketAddr, Refusal)> {
        None
    }

    /// Its sessions, whatever their state.
    fn session_count(&self) -> usize;

    /// Sends `message` to session `id`, preceded by its `tag` if the peer is a hub.
    fn send_midi(&mut self, now: Instant, id: SessionId, message: &MidiMessage, tag: Tag);

    /// Queues `message` for every connected session but `except`; hubs get its `tag` first.
    fn send_to_all(
        &mut self,
        now: Instant,
        except: Option<SessionId>,
        message: &MidiMessage,
        tag: Tag,
    );

    /// Starts a session that invites `addr`; a Network MIDI 2.0 host that asks us to
    /// authenticate gets `credentials` (`None`: the listener's).
    fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        credentials: Option<ClientAuth>,
    ) -> SessionId;

    /// Ends a session (BY); returns its peer's name if it was there.
    fn close(&mut self, now: Instant, id: SessionId) -> Option<String>;

    fn close_all(&mut self, now: Instant);

    /// Ends the sessions whose peer is named `name`; true if there was one.
    fn close_named(&mut self, now: Instant, name: &str) -> bool {
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
    fn clock_ticks(&self, _id: SessionId, _now: Instant) -> Option<u64> {
        None
    }

    /// Its sessions as `ctl peers` shows them (id and connection filled in by the caller).
    fn rows(&self) -> Vec<(SessionId, PeerRow)>;

    fn drops(&self) -> DropStats;

    fn set_policy(&mut self, policy: AcceptPolicy);

    /// Name, timeouts and journal switch for its new AppleMIDI sessions.
    fn set_session_config(&mut self, _config: session::Config) {}
}

/// A `ctl peers` row, its counters at zero.
pub fn row(name: &str, address: String, state: &str, role: &str, protocol: &str) -> PeerRow {
    PeerRow {
        id: None,
        name: name.to_string(),
        connection: None,
        address,
        state: state.into(),
        role: role.into(),
        protocol: protocol.into(),
        latency: None,
        sent: 0,
        received: 0,
        lost: 0,
        journal_repairs: 0,
    }
}
