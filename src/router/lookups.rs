//! The host lookups under way for [`Action::Connect`](super::Action::Connect)s: each for a
//! connection, and the listener its session will live on. A lookup whose connection was
//! removed or is no longer wanted meanwhile is dropped.
use std::collections::BTreeMap;

use protocol::resolve::LookupId;

use super::{ConnectionId, ListenerId, Router};

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

    #[test]
    fn a_lookup_counts_while_its_connection_waits_for_it() {
        let mut r = Router::new("us", false, false, 1);
        let (a, b) = (
            connecting(&mut r, "a.example"),
            connecting(&mut r, "b.example"),
        );
        let main = r.main();
        let mut lookups = Lookups::default();
        lookups.insert(LookupId(1), a, main);
        lookups.insert(LookupId(2), b, main);
        r.remove_connection(b);
        let mut cancelled = Vec::new();
        lookups.forget_unwanted(&r, |id| cancelled.push(id));
        assert_eq!(cancelled, [LookupId(2)]);
        assert_eq!(lookups.finished(&r, LookupId(2)), None);
        assert_eq!(lookups.finished(&r, LookupId(1)), Some((a, main)));
        assert_eq!(lookups.finished(&r, LookupId(1)), None, "once");
    }
}
