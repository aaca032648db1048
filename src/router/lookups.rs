//! The host lookups under way for [`Action::Connect`](super::Action::Connect)s: each for a
//! connection, and the listener its session will live on. A lookup whose connection was
//! removed or is no longer wanted meanwhile is dropped; a finished one starts a session
//! ([`Dial`]) or a retry.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use log::warn;
use protocol::midi2::session::ClientAuth;
use protocol::resolve::{Failure, LookupId, Stats};
use protocol::time::Instant;

use super::{ConnectionId, ListenerId, Router};

/// A session to start: a lookup found the connection's peer.
#[derive(Debug, PartialEq)]
pub struct Dial {
    pub connection: ConnectionId,
    pub listener: ListenerId,
    pub addr: SocketAddr,
    /// The connection's own, for a Network MIDI 2.0 host that asks.
    pub credentials: Option<ClientAuth>,
}

#[derive(Default)]
pub struct Lookups(BTreeMap<LookupId, (ConnectionId, ListenerId)>);

impl Lookups {
    pub fn insert(&mut self, id: LookupId, connection: ConnectionId, listener: ListenerId) {
        self.0.insert(id, (connection, listener));
    }

    /// Forgets the lookups whose connection no longer waits for one; `cancel` gets each.
    pub fn forget_unwanted(&mut self, router: &Router, mut cancel: impl FnMut(LookupId)) {
        self.0.retain(|id, (connection, _)| {
            let wanted = opening(router, *connection);
            if !wanted {
                cancel(*id);
            }
            wanted
        });
    }

    /// Lookup `id` ended: its connection and listener, if the connection still waits for it.
    pub fn finished(
        &mut self,
        router: &Router,
        id: LookupId,
    ) -> Option<(ConnectionId, ListenerId)> {
        self.0
            .remove(&id)
            .filter(|(connection, _)| opening(router, *connection))
    }

    /// Lookup `id` ended at `now` with `result`: the session to start at its first address,
    /// if its connection still waits for one; a failure is logged with the bad replies
    /// dropped so far (`dropped`: a broken or spoofing network) and the connection retries.
    pub fn resolved(
        &mut self,
        router: &mut Router,
        now: Instant,
        (id, result): (LookupId, Result<Vec<SocketAddr>, Failure>),
        dropped: impl FnOnce() -> Stats,
    ) -> Option<Dial> {
        let (connection, listener) = self.finished(router, id)?;
        let c = router.connection(connection)?;
        match result.map(|addrs| addrs.first().copied()) {
            Ok(Some(addr)) => Some(Dial {
                connection,
                listener,
                addr,
                credentials: c.target.credentials.clone(),
            }),
            failed => {
                let host = &c.target.host;
                match failed {
                    Err(why) => warn!(
                        "cannot resolve {host}: {why:?} (replies dropped: {:?})",
                        dropped()
                    ),
                    _ => warn!("cannot resolve {host}: no address"),
                }
                router.connect_failed(now, connection);
                None
            }
        }
    }
}

fn opening(router: &Router, connection: ConnectionId) -> bool {
    router.connection(connection).is_some_and(|c| c.opening)
}

#[cfg(test)]
mod tests {
    use protocol::time::Instant;

    use super::*;
    use crate::options::ConnectTarget;
    use crate::router::Action;

    /// A router whose connection to `host` asked for a session: the connection.
    fn connecting(r: &mut Router, host: &str) -> ConnectionId {
        let target = ConnectTarget {
            name: Some(host.to_string()),
            host: host.to_string(),
            port: 5004,
            midi2: false,
            credentials: None,
        };
        let id = r.add_connection(Instant::from_micros(0), target, true, None);
        r.handle_timeout(Instant::from_micros(0));
        let asked = std::iter::from_fn(|| r.poll_action())
            .any(|a| matches!(a, Action::Connect { connection, .. } if connection == id));
        assert!(asked);
        id
    }

    /// Connections to a.example and b.example, waiting for lookups 1 and 2.
    fn two_lookups() -> (Router, Lookups, ConnectionId, ConnectionId) {
        let mut r = Router::new("us", false, false, 1);
        let (a, b) = (
            connecting(&mut r, "a.example"),
            connecting(&mut r, "b.example"),
        );
        let mut lookups = Lookups::default();
        lookups.insert(LookupId(1), a, r.main());
        lookups.insert(LookupId(2), b, r.main());
        (r, lookups, a, b)
    }

    #[test]
    fn a_lookup_counts_while_its_connection_waits_for_it() {
        let (mut r, mut lookups, a, b) = two_lookups();
        let main = r.main();
        r.remove_connection(b);
        let mut cancelled = Vec::new();
        lookups.forget_unwanted(&r, |id| cancelled.push(id));
        assert_eq!(cancelled, [LookupId(2)]);
        assert_eq!(lookups.finished(&r, LookupId(2)), None);
        assert_eq!(lookups.finished(&r, LookupId(1)), Some((a, main)));
        assert_eq!(lookups.finished(&r, LookupId(1)), None, "once");
    }

    #[test]
    fn a_found_host_is_dialled_at_its_first_address_and_a_failure_retries() {
        let (mut r, mut lookups, a, b) = two_lookups();
        let main = r.main();
        let now = Instant::from_micros(0);
        let addrs = vec![
            "10.0.0.1:5004".parse().unwrap(),
            "10.0.0.9:5004".parse().unwrap(),
        ];
        let dial = lookups.resolved(&mut r, now, (LookupId(1), Ok(addrs)), Stats::default);
        let expected = Dial {
            connection: a,
            listener: main,
            addr: "10.0.0.1:5004".parse().unwrap(),
            credentials: None,
        };
        assert_eq!(dial, Some(expected));
        let failed = (LookupId(2), Err(Failure::NotFound));
        assert_eq!(lookups.resolved(&mut r, now, failed, Stats::default), None);
        assert!(!r.connection(b).unwrap().opening, "waits to retry");
    }
}
