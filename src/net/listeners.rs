//! Every listener's sockets by listener id, with their registrations in the loop: bound,
//! watched, read in batches and closed here, so the daemon only hands datagrams on.
use std::collections::BTreeMap;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, SocketAddr};

use log::info;
use protocol::session::SocketKind;
use reactor::{Context, Event, Handler, Interest, SourceId};

use super::{bind_all, bind_free_pair, bind_ports, Sockets, MAX_DATAGRAM};
use crate::options::Bind;

/// Datagrams read from one socket before the loop looks at the others, so one flooding
/// source cannot starve the rest.
const READ_BATCH: usize = 256;

struct Watched {
    sockets: Sockets,
    sources: Vec<SourceId>,
}

pub struct ListenerSockets<K> {
    by_id: BTreeMap<K, Watched>,
    buf: Vec<u8>,
}

impl<K: Ord + Copy> ListenerSockets<K> {
    pub fn new() -> Self {
        ListenerSockets {
            by_id: BTreeMap::new(),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Binds listener `id`'s sockets on `binds` and watches them (`handlers` as for
    /// [`ListenerSockets::watch`]); `name` names it in the log.
    pub fn open<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        id: K,
        (binds, bind): (&[IpAddr], Bind),
        name: &str,
        handlers: [Handler<S, T>; 2],
    ) -> io::Result<()> {
        let label = match bind {
            Bind::Midi2(_) => format!("{name} (MIDI 2.0)"),
            _ => name.to_string(),
        };
        self.bind(id, binds, bind)?;
        if let Err(e) = self.watch(ctx, id, &label, handlers) {
            self.close(ctx, id, |_| {});
            return Err(e);
        }
        if let Some(port) = self.port(id) {
            info!("listening as {name:?} on UDP port {port}");
        }
        Ok(())
    }

    /// Binds listener `id`'s sockets on `binds` (every address when empty); watched once
    /// [`ListenerSockets::watch`] is called.
    pub fn bind(&mut self, id: K, binds: &[IpAddr], bind: Bind) -> io::Result<()> {
        let sockets = match bind {
            Bind::AppleMidi(port) => Sockets::apple_midi(bind_all(binds, port)?),
            Bind::AppleMidiAbove(base) => Sockets::apple_midi(bind_free_pair(binds, base)?),
            Bind::Midi2(port) => Sockets::midi2(bind_ports(binds, port)?),
        };
        self.by_id.insert(
            id,
            Watched {
                sockets,
                sources: Vec::new(),
            },
        );
        Ok(())
    }

    /// Registers listener `id`'s sockets: `[on_control, on_data]` by their kind (a Network
    /// MIDI 2.0 socket counts as data); `label` names it in the log.
    pub fn watch<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        id: K,
        label: &str,
        [on_control, on_data]: [Handler<S, T>; 2],
    ) -> io::Result<()> {
        let Some(w) = self.by_id.get_mut(&id) else {
            return Ok(());
        };
        for (socket, kind) in w.sockets.each() {
            info!("{label} listening on {}", socket.local_addr()?);
            let handler = match kind {
                SocketKind::Control => on_control,
                SocketKind::Data => on_data,
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
            w.sources
                .push(ctx.register(fd, Interest::READABLE, handler)?);
        }
        Ok(())
    }

    /// Closes listener `id`'s sockets, after `last` had them send what was left.
    pub fn close<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        id: K,
        last: impl FnOnce(&mut Sockets),
    ) {
        if let Some(mut w) = self.by_id.remove(&id) {
            last(&mut w.sockets);
            for source in w.sources {
                let _ = ctx.deregister(source);
            }
        }
    }

    /// Listener `id`'s (control) port.
    pub fn port(&self, id: K) -> Option<u16> {
        self.by_id.get(&id)?.sockets.port()
    }

    /// Reads a batch of datagrams from the socket `event` is about: `handle` gets each with
    /// its listener, sender and the sockets to answer on.
    pub fn read<S, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<S, T>,
        event: Event,
        mut handle: impl FnMut(K, SocketAddr, &[u8], &mut Sockets),
    ) {
        let found = self
            .by_id
            .iter_mut()
            .find(|(_, w)| w.sockets.owns(event.fd));
        let Some((&id, w)) = found else {
            return;
        };
        for _ in 0..READ_BATCH {
            let Some((len, from)) = w.sockets.receive(event.fd, &mut self.buf) else {
                return;
            };
            handle(id, from, &self.buf[..len], &mut w.sockets);
        }
        // Edge-triggered: the batch ended with data left, so ask to be told again next turn
        // (only then: it is a system call, and most turns read the socket dry).
        let _ = ctx.reregister(event.source, Interest::READABLE);
    }

    /// Each listener's sockets.
    pub fn each_mut(&mut self) -> impl Iterator<Item = (K, &mut Sockets)> {
        self.by_id.iter_mut().map(|(&id, w)| (id, &mut w.sockets))
    }
}
