//! The ALSA side of the daemon: which of our sequencer ports stands for what, and the MIDI
//! bytes that cross between ports and sessions. It knows the sequencer only through the
//! [`Sequencer`] seam, so it is tested with the fake.
use std::collections::BTreeMap;
use std::hash::Hash;
use std::io;
use std::time::Duration;

use log::{debug, info, warn};
use protocol::midi::MidiMessage;
use reactor::{Context, Event, Handler, Interest};

use crate::seq::{
    Direction, PortCaps, PortId, PortInfo, SeqAddr, SeqInput, Sequencer, Subscription,
};

/// Name of the port whose subscribers are exported.
pub const NETWORK_PORT: &str = "Network";
/// ALSA port names are at most 63 bytes.
const MAX_PORT_NAME: usize = 63;
/// Events read from the sequencer before the loop looks at the other sources.
const READ_BATCH: usize = 256;

pub use crate::options::{AutoExport, PortKind};

impl AutoExport {
    /// True if `port` is to be exported.
    pub fn matches(&self, port: &PortInfo) -> bool {
        let kind = match self.kind {
            PortKind::Hardware => port.hardware,
            PortKind::Software => !port.hardware,
            PortKind::All => true,
        };
        let name = |n: &str| {
            self.pattern
                .as_ref()
                .is_none_or(|p| n.to_lowercase().contains(p.as_str()))
        };
        kind && (port.readable || port.writable)
            && (name(&port.client_name) || name(&port.port_name))
    }
}

/// Which local ports an `[export NAME]` section means by its `alsa_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// `client:port` numbers.
    Addr(SeqAddr),
    /// Part of the client or port name, any case, as `--export-auto all:PATTERN` matches.
    Name(AutoExport),
}

impl PortMatch {
    pub fn parse(text: &str) -> PortMatch {
        match SeqAddr::parse(text) {
            Some(addr) => PortMatch::Addr(addr),
            None => PortMatch::Name(AutoExport {
                kind: PortKind::All,
                pattern: Some(text.to_lowercase()),
            }),
        }
    }

    pub fn matches(&self, port: &PortInfo) -> bool {
        match self {
            PortMatch::Addr(addr) => port.addr == *addr && (port.readable || port.writable),
            PortMatch::Name(rule) => rule.matches(port),
        }
    }
}

/// How an `[export NAME]` section wants its ports exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportAs {
    /// The session name announced, as written.
    pub name: String,
    /// The UDP control port of its listener; `None` for the next free pair.
    pub port: Option<u16>,
}

/// What one of our ports stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<K> {
    /// A network session (accepted on the main listener, or one of our clients' sessions).
    Peer(K),
}

/// What the bridge asks the daemon to do after an input.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<K> {
    /// MIDI written to the port of peer `K`: send it to that session.
    ToPeer(K, MidiMessage),
    /// MIDI that local port `from` sent to the Network port: to its export's sessions.
    FromExported(SeqAddr, MidiMessage),
    /// The first subscription to peer `K`'s port appeared (`true`) or the last one went.
    PeerWanted(K, bool),
    /// A local port connected to the Network port (`true`) or its last connection went;
    /// `name`: its client's and port's, `section`: how an `[export]` section exports it.
    Export {
        local: SeqAddr,
        name: String,
        section: Option<ExportAs>,
        on: bool,
    },
}

pub struct Bridge<K, S = Box<dyn Sequencer>> {
    seq: S,
    network: PortId,
    ports: BTreeMap<PortId, Owner<K>>,
    subscribers: BTreeMap<PortId, Vec<SeqAddr>>,
    /// Local ports subscribed to or from the Network port, with their connections.
    exported: BTreeMap<SeqAddr, u32>,
    auto_export: Option<AutoExport>,
    /// `[export NAME]` sections, first match wins (before `auto_export`).
    sections: Vec<(PortMatch, ExportAs)>,
    /// Local ports a section connected, with how to export them.
    export_as: BTreeMap<SeqAddr, ExportAs>,
    watching: bool,
    pub overruns: u64,
    pub send_dropped: u64,
}

impl<K: Copy + Eq + std::fmt::Debug, S: Sequencer> Bridge<K, S> {
    pub fn new(mut seq: S) -> io::Result<Self> {
        let network = seq.create_port(NETWORK_PORT, PortCaps::DUPLEX)?;
        Ok(Bridge {
            seq,
            network,
            ports: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            exported: BTreeMap::new(),
            auto_export: None,
            sections: Vec::new(),
            export_as: BTreeMap::new(),
            watching: false,
            overruns: 0,
            send_dropped: 0,
        })
    }

    /// Connects the local ports `rule` matches to `Network`, now and as they appear (their
    /// connections go with them when they exit, which withdraws the export).
    pub fn set_auto_export(&mut self, rule: AutoExport) -> io::Result<()> {
        self.auto_export = Some(rule);
        self.watch_ports()
    }

    /// An `[export NAME]` section: the local ports `select` matches are connected to `Network`,
    /// now and as they appear, and exported as `how` says.
    pub fn add_export_section(&mut self, select: PortMatch, how: ExportAs) -> io::Result<()> {
        self.sections.push((select, how));
        self.watch_ports()
    }

    fn watch_ports(&mut self) -> io::Result<()> {
        if !self.watching {
            self.seq.watch_ports()?;
            self.watching = true;
        }
        Ok(())
    }

    /// Watches the sequencer's fds with `handler`, which calls [`Bridge::read`].
    pub fn watch<D, T: Eq + Hash + Clone>(
        &self,
        ctx: &mut Context<D, T>,
        handler: Handler<D, T>,
    ) -> io::Result<()> {
        for fd in self.seq.fds()? {
            ctx.register(fd, Interest::READABLE, handler)?;
        }
        Ok(())
    }

    /// A port for peer `key`, named after it.
    pub fn add_peer(&mut self, key: K, name: &str) -> io::Result<PortId> {
        let port = self.seq.create_port(&port_name(name), PortCaps::DUPLEX)?;
        self.ports.insert(port, Owner::Peer(key));
        info!("ALSA port {} \"{}\" for {key:?}", port.0, port_name(name));
        Ok(port)
    }

    /// Removes peer `key`'s port.
    pub fn remove_peer(&mut self, key: K) {
        if let Some(port) = self.port_of(key) {
            self.ports.remove(&port);
            self.subscribers.remove(&port);
            if let Err(e) = self.seq.delete_port(port) {
                warn!("cannot delete ALSA port {}: {e}", port.0);
            }
        }
    }

    pub fn port_of(&self, key: K) -> Option<PortId> {
        self.ports
            .iter()
            .find(|(_, owner)| **owner == Owner::Peer(key))
            .map(|(port, _)| *port)
    }

    /// MIDI from the network for peer `key`'s port, at once or `after` from now.
    pub fn send_to_port(&mut self, key: K, message: &MidiMessage, after: Option<Duration>) {
        if let Some(port) = self.port_of(key) {
            self.output(port, None, message, after);
        }
    }

    /// MIDI from an exported port's sessions, back to that local port only.
    pub fn send_to_exported(
        &mut self,
        local: SeqAddr,
        message: &MidiMessage,
        after: Option<Duration>,
    ) {
        self.output(self.network, Some(local), message, after);
    }

    fn output(
        &mut self,
        port: PortId,
        to: Option<SeqAddr>,
        message: &MidiMessage,
        after: Option<Duration>,
    ) {
        let sent = match after {
            Some(after) => self.seq.send_at(port, to, message, after),
            None => self.seq.send(port, to, message),
        };
        if let Err(e) = sent {
            self.send_dropped += 1;
            if self.send_dropped.is_power_of_two() {
                warn!(
                    "ALSA output full or failing ({e}): {} message(s) dropped",
                    self.send_dropped
                );
            }
        }
    }

    /// Events waiting for room in the sequencer; retry with [`Bridge::flush`].
    pub fn backlog(&self) -> usize {
        self.seq.backlog()
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.seq.flush() {
            debug!("ALSA flush: {e}");
        }
    }

    /// Reads up to a batch of what the sequencer has ([`Bridge::poll`]); the loop is asked to
    /// look again next turn, as events may be left in alsa-lib's buffer.
    pub fn read<D, T: Eq + Hash + Clone>(
        &mut self,
        ctx: &mut Context<D, T>,
        event: Event,
        out: &mut Vec<Action<K>>,
    ) {
        for _ in 0..READ_BATCH {
            match self.poll(out) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    warn!("ALSA sequencer input: {e}");
                    break;
                }
            }
        }
        let _ = ctx.reregister(event.source, Interest::READABLE);
    }

    /// Reads what the sequencer has and says what to do about it; `None` once drained.
    pub fn poll(&mut self, out: &mut Vec<Action<K>>) -> io::Result<bool> {
        let Some(input) = self.seq.recv()? else {
            return Ok(false);
        };
        match input {
            SeqInput::Midi {
                port,
                source,
                message,
            } => {
                if port == self.network {
                    out.push(Action::FromExported(source, message));
                } else if let Some(Owner::Peer(key)) = self.ports.get(&port) {
                    out.push(Action::ToPeer(*key, message));
                }
            }
            SeqInput::Subscribed(sub) => self.subscription(sub, true, out),
            SeqInput::Unsubscribed(sub) => self.subscription(sub, false, out),
            SeqInput::PortStarted(port) => self.port_started(&port, out),
            SeqInput::PortExited(addr) => debug!("ALSA port {addr} exited"),
            SeqInput::Overrun => {
                self.overruns += 1;
                warn!("ALSA input overrun: events from local ports were lost");
            }
        }
        Ok(true)
    }

    /// `ctl export`: connects local port `addr` to `Network` both ways it allows; its export
    /// starts as for anyone's connection.
    pub fn export(&mut self, addr: SeqAddr, out: &mut Vec<Action<K>>) -> io::Result<()> {
        let port = self.seq.describe_port(addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no ALSA port {addr}"))
        })?;
        if self.exported.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{addr} is exported already"),
            ));
        }
        if !(port.readable || port.writable) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{addr} takes no connections"),
            ));
        }
        self.link_to_network(&port, out);
        if self.exported.contains_key(&addr) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "cannot connect {addr} to the Network port"
            )))
        }
    }

    /// `ctl unexport`: removes the connections between local port `addr` and `Network`,
    /// whoever made them; its export ends.
    pub fn unexport(&mut self, addr: SeqAddr, out: &mut Vec<Action<K>>) -> io::Result<()> {
        if !self.exported.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} is not exported"),
            ));
        }
        let network = self.network_addr();
        let links = [
            (addr, network, Direction::FromPeer),
            (network, addr, Direction::ToPeer),
        ];
        for (from, to, direction) in links {
            // The kernel tells the other side, not us: count it here.
            if self.seq.disconnect(from, to).is_ok() {
                let sub = Subscription {
                    port: self.network,
                    peer: addr,
                    direction,
                    peer_client_name: None,
                    peer_port_name: None,
                };
                self.subscription(sub, false, out);
            }
        }
        Ok(())
    }

    fn network_addr(&self) -> SeqAddr {
        SeqAddr {
            client: self.seq.client(),
            port: self.network.0,
        }
    }

    fn port_started(&mut self, port: &PortInfo, out: &mut Vec<Action<K>>) {
        let section = self
            .sections
            .iter()
            .find(|(select, _)| select.matches(port));
        if let Some((_, how)) = section {
            info!(
                "exporting {} \"{}\" \"{}\" as [export {}]",
                port.addr, port.client_name, port.port_name, how.name
            );
            self.export_as.insert(port.addr, how.clone());
        } else if self.auto_export.as_ref().is_some_and(|r| r.matches(port)) {
            info!(
                "exporting {} \"{}\" \"{}\" automatically",
                port.addr, port.client_name, port.port_name
            );
        } else {
            return;
        }
        self.link_to_network(port, out);
    }

    /// Connects `port` to `Network` the ways it allows and counts the connections.
    fn link_to_network(&mut self, port: &PortInfo, out: &mut Vec<Action<K>>) {
        let network = self.network_addr();
        let mut links = Vec::new();
        if port.readable {
            links.push((port.addr, network, Direction::FromPeer));
        }
        if port.writable {
            links.push((network, port.addr, Direction::ToPeer));
        }
        for (from, to, direction) in links {
            if let Err(e) = self.seq.connect(from, to) {
                warn!("cannot connect {from} to {to}: {e}");
                continue;
            }
            // The kernel tells the other side, not the client that connected: count it here.
            // It tells us when the port exits and takes its connections along.
            let sub = Subscription {
                port: self.network,
                peer: port.addr,
                direction,
                peer_client_name: Some(port.client_name.clone()),
                peer_port_name: Some(port.port_name.clone()),
            };
            self.subscription(sub, true, out);
        }
    }

    fn subscription(&mut self, sub: Subscription, on: bool, out: &mut Vec<Action<K>>) {
        if sub.port == self.network {
            let count = self.exported.entry(sub.peer).or_insert(0);
            let was = *count > 0;
            *count = if on {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
            let now = *count > 0;
            if !now {
                self.exported.remove(&sub.peer);
            }
            if was != now {
                out.push(Action::Export {
                    local: sub.peer,
                    name: export_name(&sub),
                    section: self.export_as.get(&sub.peer).cloned(),
                    on: now,
                });
            }
            return;
        }
        let subscribers = self.subscribers.entry(sub.port).or_default();
        let was = !subscribers.is_empty();
        if on {
            subscribers.push(sub.peer);
        } else if let Some(i) = subscribers.iter().position(|p| *p == sub.peer) {
            subscribers.swap_remove(i);
        }
        let now = !subscribers.is_empty();
        if was != now {
            if let Some(Owner::Peer(key)) = self.ports.get(&sub.port) {
                out.push(Action::PeerWanted(*key, now));
            }
        }
        debug!(
            "{} {} {:?} our port {}",
            if on { "subscribed" } else { "unsubscribed" },
            sub.peer,
            sub.direction,
            sub.port.0
        );
    }
}

/// The name an export is announced under: its client and port names, or its address.
fn export_name(sub: &Subscription) -> String {
    match (&sub.peer_client_name, &sub.peer_port_name) {
        (Some(c), Some(p)) if c == p => c.clone(),
        (Some(c), Some(p)) => format!("{c} {p}"),
        (Some(c), None) => c.clone(),
        _ => format!("ALSA {}", sub.peer),
    }
}

/// Port names from peer names: printable and short enough for ALSA.
pub fn port_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let mut end = clean.len().min(MAX_PORT_NAME);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let clean = clean[..end].trim();
    if clean.is_empty() {
        "rtpmidi peer".to_string()
    } else {
        clean.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::fake::FakeSequencer;

    type TestBridge = Bridge<u32, FakeSequencer>;

    /// A bridge over a fake whose inputs `inputs` queued; Network is the fake's port 0.
    fn bridge_with(inputs: impl FnOnce(&mut FakeSequencer, PortId)) -> TestBridge {
        let mut fake = FakeSequencer::new().unwrap();
        inputs(&mut fake, PortId(0));
        Bridge::new(fake).unwrap()
    }

    fn sub(port: PortId, client: u8, on_port: u8, direction: Direction) -> Subscription {
        Subscription {
            port,
            peer: SeqAddr {
                client,
                port: on_port,
            },
            direction,
            peer_client_name: Some("Keys".into()),
            peer_port_name: Some("Keys MIDI 1".into()),
        }
    }

    fn drain(bridge: &mut TestBridge) -> Vec<Action<u32>> {
        let mut out = Vec::new();
        while bridge.poll(&mut out).unwrap() {}
        out
    }

    fn note() -> MidiMessage {
        MidiMessage::from_bytes(&[0x90, 60, 100]).unwrap()
    }

    #[test]
    fn midi_on_a_peer_port_goes_to_that_peer() {
        // Ports are numbered in creation order: Network 0, then the peer's port 1.
        let mut bridge = bridge_with(|fake, _| {
            let source = SeqAddr {
                client: 20,
                port: 0,
            };
            fake.push_midi(PortId(1), source, &[0x90, 60, 100, 61, 90]);
        });
        assert_eq!(bridge.add_peer(7, "Mac Studio").unwrap(), PortId(1));
        assert_eq!(bridge.seq.ports()[&PortId(1)].0, "Mac Studio");
        assert_eq!(
            drain(&mut bridge),
            vec![
                Action::ToPeer(7, note()),
                // Running status from ALSA's bytes comes out as whole messages.
                Action::ToPeer(7, MidiMessage::from_bytes(&[0x90, 61, 90]).unwrap()),
            ]
        );
    }

    #[test]
    fn network_midi_reaches_the_peer_port_or_only_the_exported_port() {
        let mut bridge = bridge_with(|_, _| {});
        let port = bridge.add_peer(7, "Mac").unwrap();
        let keys = SeqAddr {
            client: 24,
            port: 0,
        };
        bridge.send_to_port(7, &note(), None);
        bridge.send_to_exported(keys, &note(), None);
        bridge.send_to_port(8, &note(), None); // no such peer: nothing
        assert_eq!(
            bridge.seq.take_sent(),
            vec![
                (port, None, vec![0x90, 60, 100]),
                (PortId(0), Some(keys), vec![0x90, 60, 100]),
            ]
        );
        // With a playout delay: scheduled on the queue.
        let later = Duration::from_millis(20);
        bridge.send_to_port(7, &note(), Some(later));
        bridge.send_to_exported(keys, &note(), Some(later));
        assert_eq!(
            bridge.seq.take_timed(),
            vec![
                (port, None, later, vec![0x90, 60, 100]),
                (PortId(0), Some(keys), later, vec![0x90, 60, 100]),
            ]
        );
        bridge.seq.set_room(Some(0));
        bridge.send_to_port(7, &note(), None);
        assert_eq!(bridge.send_dropped, 1);
        bridge.remove_peer(7);
        assert!(!bridge.seq.ports().contains_key(&port));
    }

    #[test]
    fn first_and_last_subscription_toggle_a_peer() {
        let mut bridge = bridge_with(|fake, _| {
            let s = sub(PortId(1), 20, 0, Direction::ToPeer);
            fake.push_subscribed(s.clone());
            fake.push_subscribed(sub(PortId(1), 21, 0, Direction::FromPeer));
            fake.push_unsubscribed(s);
            fake.push_unsubscribed(sub(PortId(1), 21, 0, Direction::FromPeer));
        });
        bridge.add_peer(3, "piano").unwrap();
        assert_eq!(
            drain(&mut bridge),
            vec![Action::PeerWanted(3, true), Action::PeerWanted(3, false)]
        );
    }

    #[test]
    fn network_subscriptions_export_and_unexport_a_local_port() {
        let keys = SeqAddr {
            client: 24,
            port: 0,
        };
        let mut bridge = bridge_with(|fake, network| {
            fake.push_subscribed(sub(network, 24, 0, Direction::FromPeer));
            fake.push_subscribed(sub(network, 24, 0, Direction::ToPeer));
            fake.push_midi(network, keys, &[0x90, 60, 100]);
            fake.push_unsubscribed(sub(network, 24, 0, Direction::FromPeer));
            fake.push_unsubscribed(sub(network, 24, 0, Direction::ToPeer));
        });
        assert_eq!(
            drain(&mut bridge),
            vec![
                Action::Export {
                    local: keys,
                    name: "Keys Keys MIDI 1".into(),
                    section: None,
                    on: true
                },
                Action::FromExported(keys, note()),
                Action::Export {
                    local: keys,
                    name: "Keys Keys MIDI 1".into(),
                    section: None,
                    on: false
                },
            ]
        );
    }

    fn port(client: u8, client_name: &str, port_name: &str, hardware: bool) -> PortInfo {
        PortInfo {
            addr: SeqAddr { client, port: 0 },
            client_name: client_name.into(),
            port_name: port_name.into(),
            hardware,
            readable: true,
            writable: true,
        }
    }

    #[test]
    fn auto_export_rules_parse_and_match_kind_and_name() {
        let usb = port(24, "Launchkey Mini", "Launchkey Mini MIDI 1", true);
        let app = port(130, "VMPK Output", "out", false);
        let rule = |text| AutoExport::parse(text).unwrap();
        assert!(rule("hardware").matches(&usb) && !rule("hardware").matches(&app));
        assert!(!rule("software").matches(&usb) && rule("software").matches(&app));
        assert!(rule("all").matches(&usb) && rule("all").matches(&app));
        // The pattern is part of the client or the port name, in any case.
        assert!(rule("all:launchKEY").matches(&usb) && !rule("all:launchkey").matches(&app));
        assert!(rule("software:OUT").matches(&app));
        assert!(!rule("hardware:vmpk").matches(&app));
        // A port nobody may connect to is never exported.
        let closed = PortInfo {
            readable: false,
            writable: false,
            ..usb.clone()
        };
        assert!(!rule("all").matches(&closed));
        for (bad, why) in [
            ("usb", "bad kind"),
            ("all:", "empty pattern"),
            ("", "bad kind"),
        ] {
            assert!(AutoExport::parse(bad).unwrap_err().contains(why), "{bad}");
        }
    }

    #[test]
    fn matching_ports_are_connected_to_network_now_and_when_they_appear() {
        let usb = port(24, "Launchkey", "Launchkey MIDI 1", true);
        let mut bridge = bridge_with(|fake, _| {
            fake.add_other_port(usb.clone());
            fake.add_other_port(port(130, "VMPK", "out", false));
        });
        bridge
            .set_auto_export(AutoExport::parse("hardware").unwrap())
            .unwrap();
        let later = PortInfo {
            addr: SeqAddr {
                client: 28,
                port: 1,
            },
            port_name: "output only".into(),
            writable: false,
            ..usb.clone()
        };
        bridge.seq.add_other_port(later.clone());
        let export = |port: &PortInfo| Action::Export {
            local: port.addr,
            name: format!("{} {}", port.client_name, port.port_name),
            section: None,
            on: true,
        };
        // One export per port, however many connections.
        assert_eq!(drain(&mut bridge), vec![export(&usb), export(&later)]);
        let network = SeqAddr {
            client: 128,
            port: 0,
        };
        assert_eq!(
            bridge.seq.take_connections(),
            vec![
                (usb.addr, network),
                (network, usb.addr),
                (later.addr, network)
            ]
        );
    }

    #[test]
    fn export_sections_match_numbers_or_names_and_say_how_to_export() {
        let keys = port(24, "Arturia KeyStep", "KeyStep MIDI 1", true);
        let synth = port(28, "FluidSynth", "Synth input port", false);
        let other = port(30, "Other", "Other", false);
        assert!(
            PortMatch::parse("24:0").matches(&keys) && !PortMatch::parse("24:1").matches(&keys)
        );
        assert!(PortMatch::parse("keystep").matches(&keys));
        assert!(PortMatch::parse("SYNTH INPUT").matches(&synth));
        assert!(!PortMatch::parse("keystep").matches(&synth));

        let mut bridge = bridge_with(|fake, _| {
            for p in [&keys, &synth, &other] {
                fake.add_other_port(p.clone());
            }
        });
        let how = |name: &str, port| ExportAs {
            name: name.into(),
            port,
        };
        bridge
            .add_export_section(PortMatch::parse("keystep"), how("Keys", Some(6010)))
            .unwrap();
        bridge
            .add_export_section(PortMatch::parse("28:0"), how("Synth", None))
            .unwrap();
        let exported: Vec<_> = drain(&mut bridge)
            .into_iter()
            .filter_map(|a| match a {
                Action::Export {
                    local,
                    section,
                    on: true,
                    ..
                } => Some((local, section)),
                _ => None,
            })
            .collect();
        let keys_as = Some(how("Keys", Some(6010)));
        let synth_as = Some(how("Synth", None));
        assert_eq!(exported, [(keys.addr, keys_as), (synth.addr, synth_as)]);
    }

    #[test]
    fn port_names_are_printable_and_short() {
        assert_eq!(port_name("  Mac\u{0}Book  "), "MacBook");
        assert_eq!(port_name(""), "rtpmidi peer");
        let long = "é".repeat(40);
        let name = port_name(&long);
        assert!(name.len() <= MAX_PORT_NAME && name.chars().all(|c| c == 'é'));
    }
}
