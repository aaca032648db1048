//! What the listeners' sessions did, beyond the sessions: the router told, MIDI timed for
//! `--playout-delay`, each session's round trip kept for `ctl peers`, the lines for the log,
//! and when the heap is worth giving back. Pure: the shell gives each [`Happening`] with the
//! sessions it came from and a sink for the log's lines, and routes the MIDI it gets back;
//! time is an argument.
use std::collections::BTreeMap;

use log::{trace, Level};
use protocol::hubtag::Tag;
use protocol::midi::MidiMessage;
use protocol::time::{Duration, Instant};

use crate::playout::Playouts;
use crate::router::{ListenerId, Router, SessionKey};
use crate::sessions::{Happening, Sessions};

/// Sessions that must have ended (and at least as many as remain) before the heap is trimmed.
pub const TRIM_AFTER_ENDED: usize = 64;

/// MIDI from a session, to route; `after`: its playout delay on the way to ALSA.
#[derive(Debug, PartialEq)]
pub struct Route {
    pub message: MidiMessage,
    pub after: Option<Duration>,
    pub tag: Option<Tag>,
}

/// Where lines for the log go, in the order they happen (the router logs too): the log in
/// the shell, a list in tests.
pub type Say<'a> = &'a mut dyn FnMut(Level, String);

pub struct Ledger {
    /// `--playout-delay`, when there is ALSA to play out to.
    playout_delay: Option<Duration>,
    playouts: Playouts,
    /// Round trip of each session's last CK exchange.
    latency: BTreeMap<SessionKey, Duration>,
    /// Sessions ended since the heap was last given back to the system.
    ended_since_trim: usize,
}

impl Ledger {
    pub fn new(playout_delay: Option<Duration>) -> Ledger {
        Ledger {
            playout_delay,
            playouts: Playouts::default(),
            latency: BTreeMap::new(),
            ended_since_trim: 0,
        }
    }

    /// Session `key` of listener `on`, one of `sessions`, did `happening` at `now`.
    pub fn on_happening(
        &mut self,
        router: &mut Router,
        (on, sessions): (&str, &dyn Sessions),
        (now, key): (Instant, SessionKey),
        happening: Happening,
        say: Say,
    ) -> Option<Route> {
        match happening {
            Happening::Connected { name, addr } => {
                let line = format!("session opened: {name:?} at {addr} on {on}");
                say(Level::Info, line);
                router.session_up(key, &name, addr.ip());
            }
            Happening::Midi {
                message,
                timestamp,
                tag,
            } => {
                trace!("MIDI from {}: {:?}", who(router, key), message);
                let after = timestamp.and_then(|t| {
                    let delay = self.playout_delay?;
                    Some(self.playouts.after(now, key, t, delay))
                });
                return Some(Route {
                    message,
                    after,
                    tag,
                });
            }
            Happening::Latency { rtt, offset_ticks } => {
                let ticks = sessions.clock_ticks(key.session, now);
                if let (Some(delay), Some(offset), Some(local)) =
                    (self.playout_delay, offset_ticks, ticks)
                {
                    self.playouts
                        .on_clock(now, key, delay, (rtt, local, offset));
                }
                // The first measurement of a session at info level, the rest at debug, and
                // only formatted when debug is on: every session has one about every 10 s.
                let first = self.latency.insert(key, rtt).is_none();
                if first || Level::Debug <= log::max_level() {
                    let line = format!(
                        "clock sync with {}: round trip {:.2} ms, offset {} ticks",
                        who(router, key),
                        rtt.as_secs_f64() * 1000.0,
                        offset_ticks.unwrap_or(0)
                    );
                    say(if first { Level::Info } else { Level::Debug }, line);
                }
            }
            Happening::Loss { lost } => say(
                Level::Info,
                format!("{lost} packet(s) from {} lost", who(router, key)),
            ),
            Happening::Ended {
                ended,
                reason,
                orderly,
            } => {
                let line = format!("session closed: {}: {reason}", who(router, key));
                say(if orderly { Level::Info } else { Level::Warn }, line);
                self.latency.remove(&key);
                self.playouts.remove(key);
                router.session_down(now, key, ended);
                self.ended_since_trim += 1;
            }
        }
        None
    }

    /// Listener `id` closed with its sessions.
    pub fn listener_closed(&mut self, id: ListenerId) {
        self.playouts.remove_listener(id);
        self.latency.retain(|key, _| key.listener != id);
    }

    /// Each session's last round trip.
    pub fn latency(&self) -> &BTreeMap<SessionKey, Duration> {
        &self.latency
    }

    /// Whether to give freed memory back to the system now, `left` counting the sessions
    /// there are: once many ended (at least as many as remain) since the last time. malloc
    /// keeps the pages of freed sessions otherwise, a few MB after a thousand; rare, so the
    /// cost of a trim (a walk of the heap) is too.
    pub fn trim_due(&mut self, left: impl FnOnce() -> usize) -> bool {
        let due = self.ended_since_trim >= TRIM_AFTER_ENDED && self.ended_since_trim >= left();
        if due {
            self.ended_since_trim = 0;
        }
        due
    }
}

/// The peer's name; before it is up, the name of the connection that invites it.
fn who(router: &Router, key: SessionKey) -> String {
    let connection = || {
        let id = router.connection_of(key)?;
        router.connection(id).map(|c| c.label())
    };
    router
        .peer_name(key)
        .map(str::to_string)
        .or_else(connection)
        .unwrap_or_else(|| format!("session {}", key.session.0))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use protocol::endpoint::{AcceptPolicy, Endpoint, SessionId};
    use protocol::session;

    use super::*;
    use crate::router::Ended;
    use crate::sessions::AppleMidi;

    const DELAY: Duration = Duration::from_millis(20);

    /// A router, a ledger and the main listener's sessions.
    struct Rig {
        router: Router,
        ledger: Ledger,
        ours: AppleMidi,
    }

    impl Rig {
        fn new(playout_delay: Option<Duration>) -> Rig {
            let config = session::Config::default();
            Rig {
                router: Router::new("us", true, false, 1),
                ledger: Ledger::new(playout_delay),
                ours: AppleMidi::new(Endpoint::new(config, AcceptPolicy::default(), 1)),
            }
        }

        fn key(&self, n: u64) -> SessionKey {
            SessionKey {
                listener: self.router.main(),
                session: SessionId(n),
            }
        }

        /// What happening `h` of session `key` at `ms` gives: MIDI to route and log lines.
        fn happen(&mut self, ms: u64, key: SessionKey, h: Happening) -> Said {
            let mut lines = Vec::new();
            let now = Instant::from_micros(ms * 1000);
            let from = ("us", &self.ours as &dyn Sessions);
            let mut say = |level, line| lines.push((level, line));
            let route = self
                .ledger
                .on_happening(&mut self.router, from, (now, key), h, &mut say);
            (route, lines)
        }
    }

    type Said = (Option<Route>, Vec<(Level, String)>);

    fn line(level: Level, text: &str) -> Said {
        (None, vec![(level, text.to_string())])
    }

    fn ended(orderly: bool) -> Happening {
        Happening::Ended {
            ended: Ended::Other,
            reason: "BY".into(),
            orderly,
        }
    }

    fn latency(ms: u64) -> Happening {
        Happening::Latency {
            rtt: Duration::from_millis(ms),
            offset_ticks: Some(7),
        }
    }

    #[test]
    fn a_session_is_told_to_the_router_and_logged_until_it_ends() {
        let mut rig = Rig::new(None);
        let k = rig.key(3);
        let addr: SocketAddr = "10.0.0.2:5004".parse().unwrap();
        let up = Happening::Connected {
            name: "piano".into(),
            addr,
        };
        let opened = "session opened: \"piano\" at 10.0.0.2:5004 on us";
        assert_eq!(rig.happen(0, k, up), line(Level::Info, opened));
        assert_eq!(rig.router.peer_name(k), Some("piano"));
        let lost = Happening::Loss { lost: 2 };
        let said = line(Level::Info, "2 packet(s) from piano lost");
        assert_eq!(rig.happen(1, k, lost), said);
        let said = line(Level::Warn, "session closed: piano: BY");
        assert_eq!(rig.happen(2, k, ended(false)), said);
        assert_eq!(rig.router.peer_name(k), None);
        // Before it is up, a session is its number.
        let said = line(Level::Info, "session closed: session 3: BY");
        assert_eq!(rig.happen(3, k, ended(true)), said);
    }

    #[test]
    fn the_first_round_trip_is_logged_at_info_and_kept_while_the_session_lives() {
        // Later round trips are said only when debug is on (no logger is set: nothing shows).
        log::set_max_level(log::LevelFilter::Debug);
        let mut rig = Rig::new(None);
        let (a, b) = (rig.key(1), rig.key(2));
        let level = |said: Said| said.1[0].0;
        assert_eq!(level(rig.happen(0, a, latency(3))), Level::Info);
        assert_eq!(level(rig.happen(1, a, latency(4))), Level::Debug);
        rig.happen(1, b, latency(5));
        assert_eq!(
            rig.ledger.latency().get(&a),
            Some(&Duration::from_millis(4))
        );
        rig.happen(2, a, ended(true));
        assert_eq!(rig.ledger.latency().get(&a), None);
        rig.ledger.listener_closed(rig.router.main());
        assert!(rig.ledger.latency().is_empty());
    }

    #[test]
    fn midi_is_delayed_for_playout_only_with_a_delay_and_a_timestamp() {
        let message = MidiMessage::from_bytes(&[0x90, 60, 100]).unwrap();
        let midi = |timestamp| Happening::Midi {
            message: message.clone(),
            timestamp,
            tag: None,
        };
        let after = |said: Said| said.0.unwrap().after;
        let mut plain = Rig::new(None);
        let k = plain.key(1);
        assert_eq!(after(plain.happen(0, k, midi(Some(5)))), None);
        let mut delayed = Rig::new(Some(DELAY));
        assert_eq!(after(delayed.happen(0, k, midi(None))), None);
        assert_eq!(after(delayed.happen(0, k, midi(Some(5)))), Some(DELAY));
    }

    #[test]
    fn the_heap_is_trimmed_once_as_many_sessions_ended_as_remain() {
        let mut rig = Rig::new(None);
        for n in 0..TRIM_AFTER_ENDED as u64 - 1 {
            rig.happen(0, rig.key(n), ended(true));
        }
        assert!(!rig.ledger.trim_due(|| 0));
        rig.happen(0, rig.key(1000), ended(true));
        assert!(!rig.ledger.trim_due(|| TRIM_AFTER_ENDED + 1));
        assert!(rig.ledger.trim_due(|| TRIM_AFTER_ENDED));
        // Counted again from zero.
        assert!(!rig.ledger.trim_due(|| 0));
    }
}
