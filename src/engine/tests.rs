//! The engine driven as the shell drives it, by peers' protocol endpoints over an in-memory
//! network: no socket, no sequencer, a made-up clock.
use std::net::SocketAddr;

use protocol::endpoint::{AcceptPolicy, Endpoint};
use protocol::midi::MidiMessage;
use protocol::resolve::{Failure, LookupId, Stats};
use protocol::session::{self, DisconnectReason, Event, SocketKind};
use protocol::time::Instant;

use super::*;

/// Our listener's control port; data is the next one.
const OURS: &str = "10.0.0.1:5004";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn note_on(key: u8) -> MidiMessage {
    MidiMessage::from_bytes(&[0x90, key, 100]).unwrap()
}

/// What the engine sent to the local side.
#[derive(Default)]
struct Sink {
    ports: Vec<(PeerPortId, MidiMessage)>,
    exported: Vec<(SeqAddr, MidiMessage)>,
    devices: Vec<(DeviceId, MidiMessage)>,
}

impl Local for Sink {
    fn to_port(&mut self, port: PeerPortId, message: &MidiMessage, _at: Option<Instant>) {
        self.ports.push((port, message.clone()));
    }

    fn to_exported(&mut self, local: SeqAddr, message: &MidiMessage, _at: Option<Instant>) {
        self.exported.push((local, message.clone()));
    }

    fn to_device(&mut self, device: DeviceId, message: &MidiMessage) {
        self.devices.push((device, message.clone()));
    }
}

/// A peer: its endpoint, its control address (data one above) and what reached it.
struct Peer {
    endpoint: Endpoint,
    control: SocketAddr,
    events: Vec<Event>,
}

struct Rig {
    engine: Engine,
    peers: Vec<Peer>,
    sink: Sink,
    /// The router's actions that reached the shell.
    actions: Vec<Action>,
    now: Instant,
}

impl Rig {
    fn new(config: &str, alsa: bool) -> Rig {
        Rig {
            engine: Engine::new(config::settings(config), alsa, 7),
            peers: Vec::new(),
            sink: Sink::default(),
            actions: Vec::new(),
            now: Instant::from_micros(1_000_000),
        }
    }

    /// A peer named `name` at `control` that waits for invitations; its index.
    fn listen(&mut self, name: &str, control: &str) -> usize {
        let config = session::Config {
            name: name.to_string(),
            ..session::Config::default()
        };
        let seed = self.peers.len() as u64 + 100;
        self.peers.push(Peer {
            endpoint: Endpoint::new(config, AcceptPolicy::default(), seed),
            control: addr(control),
            events: Vec::new(),
        });
        self.peers.len() - 1
    }

    /// A peer named `name` at `control` that invites us; its index.
    fn invite(&mut self, name: &str, control: &str) -> usize {
        let i = self.listen(name, control);
        self.peers[i].endpoint.connect(self.now, addr(OURS));
        self.settle();
        i
    }

    fn peer_sends(&mut self, peer: usize, message: &MidiMessage) {
        let now = self.now;
        let (_, session) = self.peers[peer].endpoint.sessions_mut().next().unwrap();
        session.send_midi(now, message);
        self.settle();
    }

    /// What `pump` does in the shell, with datagrams carried both ways, until all is quiet.
    fn settle(&mut self) {
        let (now, main) = (self.now, self.engine.router.main());
        let mut buf = vec![0; 4096];
        loop {
            while let Some(action) = self.engine.poll_action(now) {
                self.actions.push(action);
            }
            let mut moved = false;
            let sessions = self.engine.sessions_mut(main).unwrap();
            while let Some(t) = sessions.poll_transmit(now, &mut buf) {
                let ours = match t.port {
                    SocketKind::Control => addr(OURS),
                    SocketKind::Data => addr("10.0.0.1:5005"),
                };
                let to_control = |p: &Peer| p.control == t.dst;
                let to_data = |p: &Peer| data_of(p.control) == t.dst;
                if let Some(p) = self.peers.iter_mut().find(|p| to_control(p) || to_data(p)) {
                    let bytes = &buf[..t.len];
                    let _ = p.endpoint.handle_datagram(now, t.port, ours, bytes);
                }
                moved = true;
            }
            for p in &mut self.peers {
                while let Some(t) = p.endpoint.poll_transmit(now, &mut buf) {
                    let from = match t.port {
                        SocketKind::Control => p.control,
                        SocketKind::Data => data_of(p.control),
                    };
                    let bytes = &buf[..t.len];
                    self.engine
                        .handle_datagram(now, (main, t.port), from, bytes);
                    moved = true;
                }
                p.events
                    .extend(std::iter::from_fn(|| p.endpoint.poll_event()).map(|(_, e)| e));
            }
            moved |= self.engine.poll_happenings(now, &mut self.sink);
            if !moved {
                break;
            }
        }
    }

    /// The MIDI that reached peer `i`.
    fn midi_at(&self, i: usize) -> Vec<MidiMessage> {
        let midi = |e: &Event| match e {
            Event::Midi(m) => Some(m.message.clone()),
            _ => None,
        };
        self.peers[i].events.iter().filter_map(midi).collect()
    }

    /// The ALSA ports the engine asked for, for peer `peer`.
    fn ports_created(&self, peer: &str) -> Vec<PeerPortId> {
        let created = |a: &Action| match a {
            Action::CreatePort { port, name } if name == peer => Some(*port),
            _ => None,
        };
        self.actions.iter().filter_map(created).collect()
    }

    fn disconnected(&self, i: usize) -> bool {
        let by = |e: &Event| matches!(e, Event::Disconnected { .. });
        self.peers[i].events.iter().any(by)
    }
}

fn data_of(control: SocketAddr) -> SocketAddr {
    SocketAddr::new(control.ip(), control.port() + 1)
}

#[test]
fn a_hub_forwards_to_every_other_peer_never_back_to_the_sender() {
    let mut rig = Rig::new("[hub]\nenabled = true\n", false);
    let a = rig.invite("a", "10.0.0.2:6004");
    let b = rig.invite("b", "10.0.0.3:6004");
    let c = rig.invite("c", "10.0.0.4:6004");
    rig.peer_sends(a, &note_on(60));
    assert_eq!(rig.midi_at(b), [note_on(60)]);
    assert_eq!(rig.midi_at(c), [note_on(60)]);
    assert_eq!(rig.midi_at(a), []);
    assert!(rig.sink.ports.is_empty() && rig.sink.exported.is_empty());
}

#[test]
fn with_alsa_each_peer_gets_a_port_and_its_midi_goes_there() {
    let mut rig = Rig::new("", true);
    let a = rig.invite("keys", "10.0.0.2:6004");
    let created = rig.ports_created("keys");
    assert_eq!(created.len(), 1, "{:?}", rig.actions);
    rig.peer_sends(a, &note_on(61));
    assert_eq!(rig.sink.ports, [(created[0], note_on(61))]);
    // Not a hub: nothing goes back to the network.
    assert_eq!(rig.midi_at(a), []);
}

#[test]
fn midi_from_alsa_reaches_the_peer_of_its_port() {
    let mut rig = Rig::new("", true);
    let a = rig.invite("keys", "10.0.0.2:6004");
    let b = rig.invite("pads", "10.0.0.3:6004");
    let pads = rig.ports_created("pads")[0];
    let now = rig.now;
    let mut sink = Sink::default();
    rig.engine.forward(
        now,
        Source::Port(pads),
        note_on(62),
        (None, None),
        &mut sink,
    );
    rig.settle();
    assert_eq!(rig.midi_at(b), [note_on(62)]);
    assert_eq!(rig.midi_at(a), []);
}

#[test]
fn ctl_disconnect_ends_the_session_with_a_bye() {
    let mut rig = Rig::new("", false);
    let a = rig.invite("a", "10.0.0.2:6004");
    let b = rig.invite("b", "10.0.0.3:6004");
    let id = rig.engine.peers()[1].id.unwrap();
    // On the main listener, which `ctl` does not number.
    assert_eq!(id.listener, None);
    let now = rig.now;
    assert_eq!(rig.engine.disconnect(now, Who::Id(id)), Ok("b".to_string()));
    rig.settle();
    assert!(rig.disconnected(b));
    assert!(!rig.disconnected(a));
    let names: Vec<String> = rig.engine.peers().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn the_first_shutdown_signal_says_bye_to_every_peer_the_next_exit() {
    let mut rig = Rig::new("", false);
    let a = rig.invite("a", "10.0.0.2:6004");
    let b = rig.invite("b", "10.0.0.3:6004");
    let now = rig.now;
    assert_eq!(rig.engine.shutdown(now), Step::Close);
    rig.settle();
    let bye = |e: &Event| {
        matches!(
            e,
            Event::Disconnected {
                reason: DisconnectReason::PeerEnded
            }
        )
    };
    assert!(
        rig.peers[a].events.iter().any(bye),
        "{:?}",
        rig.peers[a].events
    );
    assert!(rig.peers[b].events.iter().any(bye));
    assert_eq!(rig.engine.shutdown(now), Step::Exit);
    assert_eq!(rig.engine.shutdown(now), Step::Exit);
}

#[test]
fn garbage_from_a_stranger_is_dropped_and_harms_no_session() {
    let mut rig = Rig::new("[hub]\nenabled = true\n", false);
    let a = rig.invite("a", "10.0.0.2:6004");
    let b = rig.invite("b", "10.0.0.3:6004");
    let (now, main) = (rig.now, rig.engine.router.main());
    for bytes in [&b"\xff\xffIN"[..], &[0x80, 0x61, 0, 1][..], &[][..]] {
        let stranger = addr("10.9.9.9:5004");
        rig.engine
            .handle_datagram(now, (main, SocketKind::Data), stranger, bytes);
        rig.engine
            .handle_datagram(now, (main, SocketKind::Control), stranger, bytes);
    }
    rig.settle();
    rig.peer_sends(a, &note_on(63));
    assert_eq!(rig.midi_at(b), [note_on(63)]);
    assert_eq!(rig.engine.peers().len(), 2);
}

#[test]
fn a_connection_invites_the_first_address_its_lookup_found() {
    let mut rig = Rig::new("[connect far]\nhost = far.example\nport = 6004\n", false);
    let now = rig.now;
    rig.engine.configure(now);
    rig.engine.handle_timeout(now);
    rig.settle();
    let asked: Vec<(ConnectionId, ListenerId)> = rig
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect {
                connection,
                listener,
                target,
            } if target.host == "far.example" => Some((*connection, *listener)),
            _ => None,
        })
        .collect();
    let [(connection, listener)] = asked[..] else {
        panic!("{:?}", rig.actions);
    };
    let far = rig.listen("far", "10.0.0.5:6004");
    rig.engine.looking_up(LookupId(1), connection, listener);
    let found = Ok(vec![addr("10.0.0.5:6004"), addr("10.0.0.6:6004")]);
    rig.engine
        .looked_up(now, (LookupId(1), found), Stats::default);
    rig.settle();
    let up = |e: &Event| matches!(e, Event::Connected { .. });
    assert!(
        rig.peers[far].events.iter().any(up),
        "{:?}",
        rig.peers[far].events
    );
    let rows = rig.engine.peers();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].name.as_str(), rows[0].state.as_str()),
        ("far", "connected")
    );
    assert_eq!(rows[0].connection.as_deref(), Some("far"));

    // A lookup for a connection that no longer waits for one starts nothing.
    rig.engine.looking_up(LookupId(2), connection, listener);
    rig.engine
        .looked_up(now, (LookupId(2), Err(Failure::Timeout)), Stats::default);
    rig.settle();
    assert_eq!(rig.engine.peers().len(), 1);
}

/// The listeners the router asked the shell to open: name and port.
fn opened(actions: &[Action]) -> Vec<(String, Option<u16>)> {
    let open = |a: &Action| match a {
        Action::OpenListener { name, port, .. } => Some((name.clone(), *port)),
        _ => None,
    };
    actions.iter().filter_map(open).collect()
}

#[test]
fn an_export_is_named_by_its_section_or_after_us_and_its_port() {
    let mut rig = Rig::new("[general]\nname = Stage\n", true);
    let (now, mut sink) = (rig.now, Sink::default());
    let keys = SeqAddr {
        client: 20,
        port: 0,
    };
    let synth = SeqAddr {
        client: 28,
        port: 0,
    };
    let export = |local, name: &str, section, on| bridge::Action::Export {
        local,
        name: name.to_string(),
        section,
        on,
    };
    let section = bridge::ExportAs {
        name: "keys".into(),
        port: Some(5010),
    };
    let actions = [
        export(keys, "KeyStep MIDI 1", Some(section), true),
        export(synth, "Synth Port", None, true),
    ];
    for action in actions {
        rig.engine.handle_alsa(now, action, &mut sink);
    }
    rig.settle();
    let want = [
        ("keys".into(), Some(5010)),
        ("Stage Synth Port".into(), None),
    ];
    assert_eq!(opened(&rig.actions), want);
    assert_eq!(rig.engine.export_name(keys).as_deref(), Some("keys"));
    assert_eq!(
        rig.engine.export_name(synth).as_deref(),
        Some("Stage Synth Port")
    );

    let off = export(synth, "Synth Port", None, false);
    rig.engine.handle_alsa(now, off, &mut sink);
    rig.settle();
    assert!(rig
        .actions
        .iter()
        .any(|a| matches!(a, Action::CloseListener(_))));
    assert_eq!(rig.engine.export_name(synth), None);
}

#[test]
fn a_midi2_host_is_announced_as_one_with_its_product_id() {
    let mut rig = Rig::new("[general]\nname = Stage\n", false);
    let now = rig.now;
    rig.engine.configure(now);
    rig.settle();
    let midi2 = rig.actions.iter().find_map(|a| match a {
        Action::OpenListener { listener, name, .. } => Some((*listener, name.clone())),
        _ => None,
    });
    let Some((midi2, name)) = midi2 else {
        panic!("no MIDI 2.0 listener: {:?}", rig.actions);
    };
    // Its sessions come once the shell has bound its sockets.
    assert_eq!(rig.engine.announcement(midi2), None);
    rig.engine.add_listener(midi2, &name);
    let product_id = sessions::product_id("Stage");
    let want = ("Stage", ServiceKind::Midi2 { product_id });
    assert_eq!(rig.engine.announcement(midi2), Some(want));
    let main = rig.engine.router.main();
    let apple = ("Stage", ServiceKind::AppleMidi);
    assert_eq!(rig.engine.announcement(main), Some(apple));
}

#[test]
fn a_reload_applies_what_changed_and_hands_back_a_new_log_level() {
    let mut rig = Rig::new("", false);
    let now = rig.now;
    assert!(!rig.engine.router.hub());
    let new = config::settings("[general]\nlog_level = debug\n[hub]\nenabled = yes\n");
    let level = rig.engine.reload(now, new.clone(), "test");
    assert_eq!(level, Some(LevelFilter::Debug));
    assert!(rig.engine.router.hub());
    assert_eq!(rig.engine.settings().log_level, LevelFilter::Debug);
    assert_eq!(rig.engine.reload(now, new, "test"), None);
}

#[test]
fn discovered_peers_pass_the_mdns_filters_first() {
    let mut rig = Rig::new("[mdns]\nexclude = *iPhone*\n", true);
    let now = rig.now;
    let at = addr("10.0.0.7:5004");
    rig.engine.discovered(now, "Bob's iPhone", at, false);
    rig.engine.discovered(now, "Studio", at, false);
    let names: Vec<Option<String>> = rig
        .engine
        .router
        .connections()
        .map(|(_, c)| c.target.name.clone())
        .collect();
    assert_eq!(names, [Some("Studio".to_string())]);
}

#[test]
fn status_gives_the_settings_the_uptime_and_what_the_shell_knows() {
    let rig = Rig::new("[general]\nname = Stage\nport = 6004\n", false);
    let about = Status {
        pid: 42,
        ..Status::default()
    };
    let status = rig.engine.status(Instant::from_micros(90_000_000), &about);
    assert_eq!(
        (status.name.as_str(), status.port, status.pid),
        ("Stage", 6004, 42)
    );
    assert_eq!(status.uptime, std::time::Duration::from_secs(90));
}

#[test]
fn a_listener_binds_its_port_or_its_kind_s_default() {
    let mut rig = Rig::new("[general]\nname = Stage\nport = 6004\n", true);
    let (now, mut sink) = (rig.now, Sink::default());
    rig.engine.configure(now);
    let export = |client, port| bridge::Action::Export {
        local: SeqAddr { client, port: 0 },
        name: format!("Port {client}"),
        section: Some(bridge::ExportAs {
            name: format!("Export {client}"),
            port,
        }),
        on: true,
    };
    for action in [export(20, Some(7010)), export(28, None)] {
        rig.engine.handle_alsa(now, action, &mut sink);
    }
    rig.settle();
    let binds: Vec<(String, Bind)> = rig
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::OpenListener {
                listener,
                name,
                port,
            } => Some((name.clone(), rig.engine.bind_of(*listener, *port))),
            _ => None,
        })
        .collect();
    let want = [
        ("Stage".to_string(), Bind::Midi2(DEFAULT_MIDI2_PORT)),
        ("Export 20".to_string(), Bind::AppleMidi(7010)),
        ("Export 28".to_string(), Bind::AppleMidiAbove(6004)),
    ];
    assert_eq!(binds, want);
}

#[test]
fn ctl_export_answers_with_the_export_s_name_before_and_after_it_ends() {
    let mut rig = Rig::new("[general]\nname = Stage\n", true);
    let (now, mut sink) = (rig.now, Sink::default());
    let keys = SeqAddr {
        client: 20,
        port: 0,
    };
    let export = |on| bridge::Action::Export {
        local: keys,
        name: "KeyStep".to_string(),
        section: None,
        on,
    };
    let name = rig
        .engine
        .exported(now, keys, vec![export(true)], &mut sink);
    assert_eq!(name, "Stage KeyStep");
    let name = rig
        .engine
        .exported(now, keys, vec![export(false)], &mut sink);
    assert_eq!(name, "Stage KeyStep");
    assert_eq!(rig.engine.export_name(keys), None);
    // Nothing the bridge did: the port's address.
    assert_eq!(
        rig.engine.exported(now, keys, Vec::new(), &mut sink),
        "20:0"
    );
}
