//! The control requests on the router and the listeners' sessions: what `ctl status` and
//! `ctl peers` show, what `ctl connect` and `ctl disconnect` do, and session ids as `ctl`
//! writes them. Pure: the shell gives what it owns.
use std::collections::BTreeMap;

use protocol::endpoint::SessionId;
use protocol::time::{Duration, Instant};

use crate::ctl::proto::{Dropped, PeerId, PeerRow, Status, Who};
use crate::options::ConnectTarget;
use crate::router::{target_label, ListenerId, ListenerKind, Origin, Router, SessionKey};
use crate::sessions::{self, Sessions};

/// The main listener is the router's first, slot 0; the others show their slot.
const MAIN_SLOT: u32 = 0;

/// Each open listener and its sessions.
pub type Listeners<'a> = [(ListenerId, &'a dyn Sessions)];

/// Each open listener and its sessions, to change.
pub type ListenersMut<'a> = [(ListenerId, &'a mut dyn Sessions)];

/// Session `key` as `ctl` shows it.
pub fn peer_id(key: SessionKey) -> PeerId {
    PeerId {
        listener: Some(key.listener.index()).filter(|l| *l != MAIN_SLOT),
        session: key.session.0,
    }
}

/// The session `ctl` calls `id`, if its listener is open.
pub fn session_key(
    id: PeerId,
    listeners: impl IntoIterator<Item = ListenerId>,
) -> Option<SessionKey> {
    let slot = id.listener.unwrap_or(MAIN_SLOT);
    let listener = listeners.into_iter().find(|l| l.index() == slot)?;
    Some(SessionKey {
        listener,
        session: SessionId(id.session),
    })
}

/// `status` with its counts filled in: sessions, connections, exports, drops, the hub.
pub fn status(mut status: Status, router: &Router, listeners: &Listeners) -> Status {
    let rows: Vec<PeerRow> = listeners
        .iter()
        .flat_map(|(_, l)| l.rows())
        .map(|(_, r)| r)
        .collect();
    status.sessions = rows.len() as u64;
    status.connected = rows.iter().filter(|r| r.state == "connected").count() as u64;
    status.connections = router
        .connections()
        .filter(|(_, c)| c.origin == Origin::Configured)
        .count() as u64;
    status.exports = listeners
        .iter()
        .filter(|(id, _)| {
            router
                .listener(*id)
                .is_some_and(|l| matches!(l.kind, ListenerKind::Export(_)))
        })
        .count() as u64;
    status.hub = router.hub();
    status.dropped = listeners.iter().fold(Dropped::default(), |sum, (_, l)| {
        let d = l.drops();
        Dropped {
            malformed: sum.malformed + d.malformed,
            unknown_session: sum.unknown_session + d.unknown_session,
            refused: sum.refused + d.refused,
            late: sum.late + d.late,
        }
    });
    status
}

/// Every session, then the connections without one; `latency`: each session's last round
/// trip.
pub fn peers(
    router: &Router,
    listeners: &Listeners,
    latency: &BTreeMap<SessionKey, Duration>,
) -> Vec<PeerRow> {
    let mut peers = Vec::new();
    for &(listener, l) in listeners {
        for (session, mut row) in l.rows() {
            let key = SessionKey { listener, session };
            row.id = Some(peer_id(key));
            row.connection = router
                .connection_of(key)
                .and_then(|c| router.connection(c))
                .map(|c| c.label());
            row.latency = latency.get(&key).copied();
            peers.push(row);
        }
    }
    // Connections without a session: ours, and discovered peers (which have a port).
    peers.extend(
        router
            .connections()
            .filter(|(_, c)| c.session.is_none())
            .map(|(_, c)| {
                let address = format!("{}:{}", c.target.host, c.target.port);
                // With ALSA, a connection connects while something subscribes to its port.
                let state = if c.wanted { "waiting" } else { "unused" };
                let protocol = if c.target.midi2 { "midi2" } else { "rtp-midi" };
                let mut row = sessions::row("", address, state, "initiator", protocol);
                row.connection = Some(c.label());
                row
            }),
    );
    peers
}

/// `ctl connect`: a connection kept until `disconnect`; its name.
pub fn connect(router: &mut Router, now: Instant, target: ConnectTarget) -> Result<String, String> {
    let name = target_label(&target);
    if router.configured(&name).is_some() {
        return Err(format!("a connection named {name:?} exists already"));
    }
    // Asked for by hand: it connects now, whether ALSA ports subscribe or not.
    router.add_connection(now, target, true, None);
    Ok(name)
}

/// `ctl disconnect`: the name of what it ended.
pub fn disconnect(
    router: &mut Router,
    listeners: &mut ListenersMut,
    now: Instant,
    who: Who,
) -> Result<String, String> {
    match who {
        Who::Id(id) => disconnect_id(router, listeners, now, id),
        Who::Name(name) => disconnect_name(router, listeners, now, &name),
    }
}

/// Ends a session; if it serves a connection, the connection goes too.
fn disconnect_id(
    router: &mut Router,
    listeners: &mut ListenersMut,
    now: Instant,
    id: PeerId,
) -> Result<String, String> {
    let missing = || format!("no session with id {id}");
    let key = session_key(id, listeners.iter().map(|(l, _)| *l)).ok_or_else(missing)?;
    let peer_name = listeners
        .iter_mut()
        .find(|(l, _)| *l == key.listener)
        .and_then(|(_, l)| l.close(now, key.session))
        .ok_or_else(missing)?;
    Ok(match router.connection_of(key) {
        Some(c) => {
            let name = router.connection(c).map(|c| c.label()).unwrap_or_default();
            router.remove_connection(c);
            name
        }
        None if peer_name.is_empty() => peer_id(key).to_string(),
        None => peer_name,
    })
}

/// Ends a connection by its name, or the sessions of peers of that name.
fn disconnect_name(
    router: &mut Router,
    listeners: &mut ListenersMut,
    now: Instant,
    name: &str,
) -> Result<String, String> {
    if let Some(c) = router.configured(name) {
        router.remove_connection(c);
        return Ok(name.to_string());
    }
    let mut found = false;
    for (_, l) in listeners.iter_mut() {
        found |= l.close_named(now, name);
    }
    if !found {
        return Err(format!("no connection or peer named {name:?}"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use protocol::endpoint::{AcceptPolicy, Endpoint};
    use protocol::session;
    use protocol::time::Instant;

    use super::*;
    use crate::options::ConnectTarget;
    use crate::router::Action;
    use crate::sessions::AppleMidi;

    fn now() -> Instant {
        Instant::from_micros(1_000)
    }

    fn sessions() -> AppleMidi {
        let config = session::Config::default();
        AppleMidi::new(Endpoint::new(config, AcceptPolicy::default(), 1))
    }

    fn target(name: &str, host: &str) -> ConnectTarget {
        ConnectTarget {
            name: Some(name.to_string()),
            host: host.to_string(),
            port: 5004,
            midi2: false,
            credentials: None,
        }
    }

    /// A router with connection "a" inviting on the main listener's `ours` and connection
    /// "b" not wanted (its port never subscribed); the key of "a"'s session.
    fn two_connections(ours: &mut AppleMidi) -> (Router, SessionKey) {
        let mut router = Router::new("us", true, false, 1);
        router.add_connection(now(), target("a", "10.0.0.2"), true, None);
        router.add_connection(now(), target("b", "10.0.0.3"), false, None);
        router.handle_timeout(now());
        let connect = std::iter::from_fn(|| router.poll_action())
            .find_map(|a| match a {
                Action::Connect { connection, .. } => Some(connection),
                _ => None,
            })
            .unwrap();
        let addr: SocketAddr = "10.0.0.2:5004".parse().unwrap();
        let session = ours.connect(now(), addr, None);
        let key = SessionKey {
            listener: router.main(),
            session,
        };
        router.connecting(connect, key, addr.ip());
        (router, key)
    }

    #[test]
    fn peers_are_sessions_then_connections_without_one() {
        let mut ours = sessions();
        let (router, key) = two_connections(&mut ours);
        let latency = BTreeMap::from([(key, Duration::from_millis(3))]);
        let rows = peers(&router, &[(router.main(), &ours)], &latency);
        let shown: Vec<_> = rows
            .iter()
            .map(|r| (r.id, r.connection.as_deref(), r.state.as_str(), r.latency))
            .collect();
        let id = PeerId {
            listener: None,
            session: key.session.0,
        };
        assert_eq!(
            shown,
            [
                (
                    Some(id),
                    Some("a"),
                    "inviting",
                    Some(Duration::from_millis(3))
                ),
                (None, Some("b"), "unused", None),
            ]
        );
        assert_eq!(rows[1].address, "10.0.0.3:5004");
    }

    #[test]
    fn status_counts_sessions_connections_and_exports() {
        let mut ours = sessions();
        let (router, _) = two_connections(&mut ours);
        let blank = Status {
            hub: true,
            ..Status::default()
        };
        let s = status(blank, &router, &[(router.main(), &ours)]);
        let counts = (s.sessions, s.connected, s.connections, s.exports, s.hub);
        assert_eq!(counts, (1, 0, 2, 0, false));
    }

    #[test]
    fn connect_adds_a_connection_once_per_name() {
        let mut router = Router::new("us", true, false, 1);
        assert_eq!(
            connect(&mut router, now(), target("a", "10.0.0.2")),
            Ok("a".into())
        );
        let c = router
            .configured("a")
            .and_then(|c| router.connection(c))
            .unwrap();
        assert!(c.keep && c.wanted, "connects at once");
        let again = connect(&mut router, now(), target("a", "10.0.0.9"));
        assert_eq!(again, Err("a connection named \"a\" exists already".into()));
    }

    #[test]
    fn disconnect_by_id_ends_the_session_and_its_connection() {
        let mut ours = sessions();
        let (mut router, key) = two_connections(&mut ours);
        let other = ours.connect(now(), "10.0.0.7:5004".parse().unwrap(), None);
        let main = router.main();
        let mut listeners: [(ListenerId, &mut dyn Sessions); 1] = [(main, &mut ours)];
        let id = |session: SessionId| {
            Who::Id(peer_id(SessionKey {
                listener: main,
                session,
            }))
        };
        let ended = disconnect(&mut router, &mut listeners, now(), id(key.session));
        assert_eq!(ended, Ok("a".into()));
        assert_eq!(router.configured("a"), None);
        // A session of no connection whose peer has not said its name: its id.
        let ended = disconnect(&mut router, &mut listeners, now(), id(other));
        assert_eq!(ended, Ok(other.0.to_string()));
        let missing = disconnect(&mut router, &mut listeners, now(), id(SessionId(99)));
        assert_eq!(missing, Err("no session with id 99".into()));
    }

    #[test]
    fn disconnect_by_name_ends_a_connection_or_says_there_is_none() {
        let mut ours = sessions();
        let (mut router, _) = two_connections(&mut ours);
        let main = router.main();
        let mut listeners: [(ListenerId, &mut dyn Sessions); 1] = [(main, &mut ours)];
        let by_name = |name: &str| Who::Name(name.to_string());
        let ended = disconnect(&mut router, &mut listeners, now(), by_name("b"));
        assert_eq!(ended, Ok("b".into()));
        assert_eq!(router.configured("b"), None);
        let none = disconnect(&mut router, &mut listeners, now(), by_name("nobody"));
        assert_eq!(none, Err("no connection or peer named \"nobody\"".into()));
    }

    #[test]
    fn session_ids_name_their_listener_unless_it_is_the_main_one() {
        let mut router = Router::new("us", false, false, 1);
        let extra = router.add_listener("extra", 5010);
        let key = SessionKey {
            listener: extra,
            session: SessionId(4),
        };
        let id = peer_id(key);
        assert_eq!(id.to_string(), format!("{}.4", extra.index()));
        let open = [router.main(), extra];
        assert_eq!(session_key(id, open), Some(key));
        assert_eq!(session_key(id, [router.main()]), None);
        let main = SessionKey {
            listener: router.main(),
            session: SessionId(2),
        };
        assert_eq!(peer_id(main).to_string(), "2");
        assert_eq!(session_key(peer_id(main), open), Some(main));
    }
}
