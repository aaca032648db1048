//! Every rule of the router, driven directly: no socket, no sequencer, a made-up clock.
use super::*;

fn t(ms: u64) -> Instant {
    Instant::from_micros(ms * 1000)
}

fn drain(r: &mut Router) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn target(name: Option<&str>, host: &str, port: u16) -> ConnectTarget {
    ConnectTarget {
        name: name.map(str::to_string),
        host: host.to_string(),
        port,
        midi2: false,
        credentials: None,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn key(listener: ListenerId, n: u64) -> SessionKey {
    SessionKey {
        listener,
        session: SessionId(n),
    }
}

fn created(actions: &[Action]) -> Vec<(PeerPortId, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePort { port, name } => Some((*port, name.clone())),
            _ => None,
        })
        .collect()
}

/// The one port `actions` create.
fn one_port(actions: &[Action]) -> (PeerPortId, String) {
    match &created(actions)[..] {
        [one] => one.clone(),
        _ => panic!("not one port created: {actions:?}"),
    }
}

fn connects(actions: &[Action]) -> Vec<ConnectionId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect { connection, .. } => Some(*connection),
            _ => None,
        })
        .collect()
}

fn routed(r: &Router, from: Source) -> Vec<Dest> {
    let mut out = vec![Dest::Local(SeqAddr { client: 0, port: 0 })];
    r.route(from, &mut out);
    out
}

#[test]
fn a_connection_connects_on_its_first_subscription_and_closes_on_its_last() {
    let mut r = Router::new("us", true, false, 7);
    let c = r.add_connection(t(0), target(Some("piano"), "10.0.0.2", 5004), false, None);
    let actions = drain(&mut r);
    let (port, name) = one_port(&actions);
    assert_eq!(name, "piano");
    r.handle_timeout(t(100));
    assert!(drain(&mut r).is_empty(), "not wanted before a subscription");
    assert_eq!(r.poll_timeout(), None);

    r.port_subscribed(t(200), port, true);
    assert_eq!(r.poll_timeout(), Some(t(200)));
    r.handle_timeout(t(200));
    assert_eq!(connects(&drain(&mut r)), vec![c]);
    let k = key(r.main(), 1);
    r.connecting(c, k, ip("10.0.0.2"));
    r.session_up(k, "piano", ip("10.0.0.2"));
    assert!(
        drain(&mut r).is_empty(),
        "the connection's port serves its session"
    );
    assert_eq!(routed(&r, Source::Session(k)), vec![Dest::Port(port)]);
    assert_eq!(routed(&r, Source::Port(port)), vec![Dest::Session(k)]);

    r.port_subscribed(t(300), port, false);
    assert_eq!(drain(&mut r), vec![Action::Close(k)]);
    r.session_down(t(310), k, Ended::Other);
    assert!(drain(&mut r).is_empty(), "the port stays, no reconnection");
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn kept_connections_and_those_without_alsa_connect_at_once_and_back_off() {
    for (alsa, keep) in [(true, true), (false, false)] {
        let mut r = Router::new("us", alsa, false, 7);
        let c = r.add_connection(t(0), target(None, "10.0.0.2", 5004), keep, None);
        assert_eq!(created(&drain(&mut r)).len(), usize::from(alsa));
        r.handle_timeout(t(0));
        assert_eq!(connects(&drain(&mut r)), vec![c]);
        // The name did not resolve: 1 s, then 2 s.
        r.connect_failed(t(0), c);
        assert_eq!(r.poll_timeout(), Some(t(1000)));
        r.handle_timeout(t(1000));
        assert_eq!(connects(&drain(&mut r)), vec![c]);
        r.connect_failed(t(1000), c);
        assert_eq!(r.poll_timeout(), Some(t(3000)));
        // Up, then lost: the back-off starts over from 1 s.
        r.handle_timeout(t(3000));
        assert_eq!(connects(&drain(&mut r)), vec![c]);
        let k = key(r.main(), 7);
        r.connecting(c, k, ip("10.0.0.2"));
        r.session_up(k, "far", ip("10.0.0.2"));
        r.session_down(t(4000), k, Ended::Other);
        assert_eq!(r.poll_timeout(), Some(t(5000)));
        // Shutting down: no reconnection.
        r.stop();
        r.handle_timeout(t(5000));
        assert!(connects(&drain(&mut r)).is_empty());
    }
}

#[test]
fn a_session_the_connected_peer_starts_shares_its_port() {
    let mut r = Router::new("us", true, false, 7);
    let c = r.add_connection(t(0), target(Some("Keys"), "10.0.0.9", 5004), false, None);
    let (port, _) = one_port(&drain(&mut r));
    // Same name, other address: a port of its own.
    let stranger = key(r.main(), 1);
    r.session_up(stranger, "Keys", ip("10.0.0.10"));
    assert_eq!(created(&drain(&mut r)).len(), 1);
    // Same name and address: the connection's port.
    let k = key(r.main(), 2);
    r.session_up(k, "Keys", ip("::ffff:10.0.0.9"));
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.connection(c).unwrap().accepted, Some(k));
    assert_eq!(routed(&r, Source::Session(k)), vec![Dest::Port(port)]);
    assert_eq!(routed(&r, Source::Port(port)), vec![Dest::Session(k)]);
    // Its end leaves the port to the connection.
    r.session_down(t(10), k, Ended::Other);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.connection(c).unwrap().accepted, None);
    assert_eq!(routed(&r, Source::Port(port)), vec![]);
}

#[test]
fn two_daemons_that_connect_to_each_other_keep_one_session() {
    // Without ALSA (hubs, typically) and with it; our name sorting first or last.
    for (alsa, ours_first) in [(false, true), (false, false), (true, true), (true, false)] {
        let us = if ours_first { "A" } else { "Z" };
        let mut r = Router::new(us, alsa, true, 7);
        let c = r.add_connection(t(0), target(None, "10.0.0.9", 5004), true, None);
        r.handle_timeout(t(0));
        assert_eq!(connects(&drain(&mut r)), vec![c]);
        let ours = key(r.main(), 1);
        r.connecting(c, ours, ip("10.0.0.9"));
        r.session_up(ours, "M", ip("10.0.0.9"));
        drain(&mut r);
        // M connects to us too.
        let theirs = key(r.main(), 2);
        r.session_up(theirs, "M", ip("10.0.0.9"));
        let (kept, closed) = if ours_first {
            (ours, theirs)
        } else {
            (theirs, ours)
        };
        assert_eq!(drain(&mut r), vec![Action::Close(closed)], "{us} {alsa}");
        r.session_down(t(10), closed, Ended::Other);
        drain(&mut r);
        // The hub forwards over the kept session only; nothing reconnects while it lasts.
        r.handle_timeout(t(60_000));
        assert!(connects(&drain(&mut r)).is_empty());
        assert_eq!(
            routed(&r, Source::Session(kept)),
            [
                alsa.then(|| Dest::Port(r.connection(c).unwrap().port.unwrap())),
                Some(Dest::Listener {
                    listener: r.main(),
                    except: Some(kept)
                })
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        );
        // When M's session goes, ours comes back.
        if !ours_first {
            r.session_down(t(70_000), theirs, Ended::Other);
            r.handle_timeout(t(70_000));
            assert_eq!(connects(&drain(&mut r)), vec![c]);
        }
    }
}

#[test]
fn a_replaced_session_parks_its_port_for_the_returning_peer() {
    let mut r = Router::new("us", true, false, 7);
    let old = key(r.main(), 1);
    r.session_up(old, "Studio", ip("10.0.0.5"));
    let (port, _) = one_port(&drain(&mut r));
    r.session_down(t(1000), old, Ended::Replaced);
    assert!(drain(&mut r).is_empty(), "parked, not deleted");
    assert_eq!(r.poll_timeout(), Some(t(1000) + PARK_TIME));
    let new = key(r.main(), 2);
    r.session_up(new, "Studio", ip("10.0.0.5"));
    assert!(drain(&mut r).is_empty(), "the parked port is taken back");
    assert_eq!(routed(&r, Source::Port(port)), vec![Dest::Session(new)]);
    assert_eq!(r.poll_timeout(), None);

    // Replaced again, and nobody comes back: deleted after the park time.
    r.session_down(t(2000), new, Ended::Replaced);
    r.handle_timeout(t(6999)); // PARK_TIME is 5 s
    assert!(drain(&mut r).is_empty());
    r.handle_timeout(t(7000));
    assert_eq!(drain(&mut r), vec![Action::DeletePort(port)]);
}

#[test]
fn a_session_that_ends_otherwise_loses_its_port_and_others_get_their_own() {
    let mut r = Router::new("us", true, false, 7);
    let a = key(r.main(), 1);
    r.session_up(a, "A", ip("10.0.0.1"));
    let extra = r.add_listener("drums", 5020);
    let actions = drain(&mut r);
    assert!(actions.contains(&Action::OpenListener {
        listener: extra,
        name: "drums".into(),
        port: Some(5020)
    }));
    assert!(actions.contains(&Action::Announce(extra)));
    let b = key(extra, 1);
    r.session_up(b, "B", ip("10.0.0.2"));
    let ports = created(&drain(&mut r));
    assert_eq!(
        ports.len(),
        1,
        "sessions of an extra listener get ports too"
    );
    r.session_down(t(5), a, Ended::Other);
    let deleted = drain(&mut r);
    assert!(matches!(deleted[..], [Action::DeletePort(_)]));
    // Closing the listener deletes its sessions' ports and withdraws it.
    r.remove_listener(extra);
    let actions = drain(&mut r);
    assert_eq!(
        actions,
        vec![
            Action::DeletePort(ports[0].0),
            Action::Withdraw(extra),
            Action::CloseListener(extra)
        ]
    );
}

#[test]
fn without_alsa_sessions_get_no_ports_and_discovered_peers_are_ignored() {
    let mut r = Router::new("us", false, true, 7);
    r.session_up(key(r.main(), 1), "A", ip("10.0.0.1"));
    r.discovered(t(0), "B", target(Some("B"), "10.0.0.2", 5004));
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.connections().count(), 0);
}

#[test]
fn the_hub_forwards_to_every_session_of_the_main_listener_but_the_sender() {
    let mut r = Router::new("us", false, true, 7);
    let main = r.main();
    let a = key(main, 1);
    r.session_up(a, "A", ip("10.0.0.1"));
    assert_eq!(
        routed(&r, Source::Session(a)),
        vec![Dest::Listener {
            listener: main,
            except: Some(a)
        }]
    );
    // Sessions of an extra listener are not hub members.
    let extra = r.add_listener("drums", 5020);
    let b = key(extra, 1);
    r.session_up(b, "B", ip("10.0.0.2"));
    assert_eq!(routed(&r, Source::Session(b)), vec![]);
    r.set_hub(false);
    assert_eq!(routed(&r, Source::Session(a)), vec![]);
}

#[test]
fn an_export_is_a_listener_whose_sessions_speak_with_its_local_port_only() {
    let mut r = Router::new("Stage", true, true, 7);
    let keys = SeqAddr {
        client: 24,
        port: 0,
    };
    let pads = SeqAddr {
        client: 25,
        port: 0,
    };
    r.export_changed(keys, "KeyStep", false, None, true);
    let actions = drain(&mut r);
    let Some(Action::OpenListener {
        listener,
        name,
        port: None,
    }) = actions.first().cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(name, "Stage KeyStep");
    assert_eq!(actions[1], Action::Announce(listener));
    // A section's name and port; a second match of the same name gets a free pair.
    r.export_changed(pads, "Stage KeyStep", true, Some(5010), true);
    let actions = drain(&mut r);
    let Some(Action::OpenListener {
        listener: second,
        name,
        port: None,
    }) = actions.first().cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(name, "Stage KeyStep (2)");

    // Its sessions: no ALSA port, MIDI to its local port, not the hub.
    let s = key(listener, 1);
    r.session_up(s, "Mac", ip("10.0.0.3"));
    assert!(drain(&mut r).is_empty());
    assert_eq!(routed(&r, Source::Session(s)), vec![Dest::Local(keys)]);
    // MIDI from a local port goes to its own export's sessions only.
    assert_eq!(
        routed(&r, Source::Network(keys)),
        vec![Dest::Listener {
            listener,
            except: None
        }]
    );
    assert_eq!(
        routed(&r, Source::Network(pads)),
        vec![Dest::Listener {
            listener: second,
            except: None
        }]
    );
    assert_eq!(
        routed(&r, Source::Network(SeqAddr { client: 9, port: 9 })),
        vec![]
    );

    r.export_changed(keys, "KeyStep", false, None, false);
    assert_eq!(
        drain(&mut r),
        vec![Action::Withdraw(listener), Action::CloseListener(listener)]
    );
    assert_eq!(routed(&r, Source::Session(s)), vec![]);
    // A section's own name takes its port.
    r.export_changed(keys, "Keys", true, Some(5010), true);
    assert!(matches!(
        drain(&mut r)[0],
        Action::OpenListener {
            port: Some(5010),
            ..
        }
    ));
}

#[test]
fn discovered_peers_get_one_port_each_and_keep_it_while_briefly_gone() {
    let mut r = Router::new("us", true, false, 7);
    r.discovered(t(0), "Studio", target(Some("Studio"), "10.0.0.7", 5004));
    let (port, name) = one_port(&drain(&mut r));
    assert_eq!(name, "Studio");
    // Seen again (another interface, a new address): the same port.
    r.discovered(t(10), "Studio", target(Some("Studio"), "10.0.0.8", 5004));
    assert!(drain(&mut r).is_empty());
    // Lazy connect like a --connect target.
    r.port_subscribed(t(20), port, true);
    r.handle_timeout(t(20));
    let [c] = connects(&drain(&mut r))[..] else {
        panic!()
    };
    assert_eq!(r.connection(c).unwrap().target.host, "10.0.0.8");
    // Gone, back within the grace: nothing changes.
    r.discovered_gone(t(100), "Studio", false);
    assert_eq!(r.poll_timeout(), Some(t(100) + GONE_GRACE));
    r.discovered(t(200), "Studio", target(Some("Studio"), "10.0.0.8", 5004));
    r.handle_timeout(t(100) + GONE_GRACE);
    assert!(drain(&mut r).is_empty());
    // Gone for good: the port goes.
    r.discovered_gone(t(300), "Studio", false);
    r.handle_timeout(t(300) + GONE_GRACE);
    assert_eq!(drain(&mut r), vec![Action::DeletePort(port)]);
    assert_eq!(r.connections().count(), 0);
    // Back later: a port again.
    r.discovered(
        t(20_000),
        "Studio",
        target(Some("Studio"), "10.0.0.8", 5004),
    );
    assert_eq!(created(&drain(&mut r)).len(), 1);
}

#[test]
fn a_session_that_came_first_gives_its_port_to_the_discovered_peer_and_gets_it_back() {
    let mut r = Router::new("us", true, false, 7);
    let k = key(r.main(), 1);
    r.session_up(k, "Studio", ip("10.0.0.7"));
    let (port, _) = one_port(&drain(&mut r));
    r.port_subscribed(t(0), port, true);
    r.discovered(t(10), "Studio", target(Some("Studio"), "10.0.0.7", 5004));
    let actions = drain(&mut r);
    assert!(
        created(&actions).is_empty(),
        "one port per peer: {actions:?}"
    );
    let (c, conn) = r.connections().next().unwrap();
    assert_eq!((conn.port, conn.accepted), (Some(port), Some(k)));
    assert!(conn.wanted, "its port was subscribed already");
    assert_eq!(routed(&r, Source::Session(k)), vec![Dest::Port(port)]);
    // Gone from mDNS while the session lasts: the port stays the session's.
    r.discovered_gone(t(20), "Studio", false);
    r.handle_timeout(t(20) + GONE_GRACE);
    let actions = drain(&mut r);
    assert!(!actions.contains(&Action::DeletePort(port)), "{actions:?}");
    assert!(r.connection(c).is_none());
    assert_eq!(routed(&r, Source::Port(port)), vec![Dest::Session(k)]);
    r.session_down(t(30_000), k, Ended::Other);
    assert_eq!(drain(&mut r), vec![Action::DeletePort(port)]);
}

#[test]
fn a_removed_connection_closes_its_session_and_deletes_its_port() {
    let mut r = Router::new("us", true, false, 7);
    let c = r.add_connection(
        t(0),
        target(Some("far"), "10.0.0.2", 5004),
        true,
        Some("Far port"),
    );
    let (port, name) = one_port(&drain(&mut r));
    assert_eq!(name, "Far port");
    assert_eq!(r.configured("far"), Some(c));
    r.handle_timeout(t(0));
    drain(&mut r);
    let k = key(r.main(), 3);
    r.connecting(c, k, ip("10.0.0.2"));
    r.session_up(k, "far", ip("10.0.0.2"));
    r.remove_connection(c);
    assert_eq!(
        drain(&mut r),
        vec![Action::Close(k), Action::DeletePort(port)]
    );
    r.session_down(t(10), k, Ended::Other);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(routed(&r, Source::Session(k)), vec![]);
}

#[test]
fn a_session_started_for_a_connection_no_longer_wanted_is_closed() {
    let mut r = Router::new("us", true, false, 7);
    let c = r.add_connection(t(0), target(None, "peer.example", 5004), false, None);
    let (port, _) = one_port(&drain(&mut r));
    r.port_subscribed(t(0), port, true);
    r.handle_timeout(t(0));
    assert_eq!(connects(&drain(&mut r)), vec![c]);
    // The shell is still resolving when the subscription goes.
    r.port_subscribed(t(5), port, false);
    let k = key(r.main(), 4);
    r.connecting(c, k, ip("10.0.0.4"));
    assert_eq!(drain(&mut r), vec![Action::Close(k)]);
}

#[test]
fn a_listener_that_cannot_open_is_forgotten_unannounced() {
    let mut r = Router::new("us", true, false, 7);
    let l = r.add_listener("drums", 5020);
    assert!(matches!(r.poll_action(), Some(Action::OpenListener { .. })));
    r.listener_failed(l);
    assert!(drain(&mut r).is_empty());
    assert!(r.listener(l).is_none());
    assert_eq!(r.extra_listener("drums"), None);
}

#[test]
fn only_the_default_midi2_port_taken_is_not_worth_stopping_for() {
    let mut r = Router::new("us", true, false, 7);
    let host = r.add_midi2_listener(None);
    assert_eq!(r.open_failed(host, "us", None, "in use"), Ok(()));
    assert!(r.listener(host).is_none());
    let host = r.add_midi2_listener(Some(5700));
    let stop = r.open_failed(host, "us", Some(5700), "in use");
    assert_eq!(
        stop,
        Err("\"us\": cannot open UDP port 5700: in use".into())
    );
    let extra = r.add_listener("drums", 5020);
    let stop = r.open_failed(extra, "drums", None, "in use");
    assert_eq!(
        stop,
        Err("\"drums\": cannot open a free UDP port: in use".into())
    );
}

#[test]
fn each_event_goes_on_once_and_copies_from_other_hubs_stop_here() {
    let mut r = Router::new("us", false, true, 7);
    // An event entering here gets our tags, numbered.
    let a = r.admit(None).unwrap();
    let b = r.admit(None).unwrap();
    assert_eq!((a.origin, b.origin), (7, 7));
    assert_ne!(a.seq, b.seq);
    // One from another hub goes on under its own tag, once.
    let far = Tag { origin: 99, seq: 5 };
    assert_eq!(r.admit(Some(far)), Some(far));
    assert_eq!(r.admit(Some(far)), None, "a copy over another path");
    // Our own events coming back round a ring stop here too.
    assert_eq!(r.admit(Some(a)), None);
}

/// The listener a device's [`Action::OpenListener`] opens, with its port.
fn opened(actions: &[Action]) -> (ListenerId, String, Option<u16>) {
    match actions.first() {
        Some(Action::OpenListener {
            listener,
            name,
            port,
        }) => (*listener, name.clone(), *port),
        _ => panic!("no listener opened: {actions:?}"),
    }
}

#[test]
fn a_device_is_offered_while_it_is_there_and_open_while_a_session_uses_it() {
    let mut r = Router::new("Stage", true, true, 7);
    let d = r.add_device("Synth", Some(5010), None);
    assert!(
        drain(&mut r).is_empty(),
        "nothing before the device is there"
    );
    r.device_present(t(0), d, true);
    let actions = drain(&mut r);
    let (listener, name, port) = opened(&actions);
    assert_eq!((name.as_str(), port), ("Synth", Some(5010)));
    assert_eq!(actions[1..], [Action::Announce(listener)]);
    r.device_present(t(1), d, true);
    assert!(drain(&mut r).is_empty(), "seen again: nothing new");

    // The first session opens it, no ALSA port; the last to end closes it.
    let (a, b) = (key(listener, 1), key(listener, 2));
    r.session_up(a, "Mac", ip("10.0.0.3"));
    assert_eq!(drain(&mut r), vec![Action::OpenDevice(d)]);
    r.session_up(b, "iPad", ip("10.0.0.4"));
    assert!(drain(&mut r).is_empty());
    // MIDI: between the device and its sessions only, never the hub.
    assert_eq!(routed(&r, Source::Session(a)), vec![Dest::Device(d)]);
    assert_eq!(
        routed(&r, Source::Device(d)),
        vec![Dest::Listener {
            listener,
            except: None
        }]
    );
    let main = key(r.main(), 9);
    r.session_up(main, "Other", ip("10.0.0.9"));
    drain(&mut r);
    assert!(!routed(&r, Source::Session(main)).contains(&Dest::Device(d)));
    r.session_down(t(2), a, Ended::Other);
    assert!(drain(&mut r).is_empty());
    r.session_down(t(3), b, Ended::Other);
    assert_eq!(drain(&mut r), vec![Action::CloseDevice(d)]);

    // Unplugged while used: its sessions end with the listener, the device closes.
    r.session_up(a, "Mac", ip("10.0.0.3"));
    assert_eq!(drain(&mut r), vec![Action::OpenDevice(d)]);
    r.device_present(t(4), d, false);
    assert_eq!(
        drain(&mut r),
        vec![
            Action::Withdraw(listener),
            Action::CloseListener(listener),
            Action::CloseDevice(d)
        ]
    );
    assert_eq!(routed(&r, Source::Device(d)), vec![]);
    assert_eq!(routed(&r, Source::Session(a)), vec![]);
    // Plugged in again: offered again.
    r.device_present(t(5), d, true);
    let (again, name, _) = opened(&drain(&mut r));
    assert_eq!(name, "Synth");
    assert_ne!(again, listener);
}

#[test]
fn a_device_with_a_host_keeps_a_connection_from_its_own_listener_while_it_is_there() {
    let mut r = Router::new("Stage", true, true, 7);
    let d = r.add_device("Synth", None, Some(target(Some("Synth"), "10.0.0.2", 5004)));
    r.device_present(t(0), d, true);
    let actions = drain(&mut r);
    let (listener, _, port) = opened(&actions);
    assert_eq!(port, None);
    assert_eq!(actions.len(), 1, "not announced, no ALSA port: {actions:?}");
    // Connected at once, from the device's listener.
    r.handle_timeout(t(0));
    let actions = drain(&mut r);
    let [Action::Connect {
        connection,
        listener: from,
        ..
    }] = actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(from, listener);
    assert_eq!(r.configured("Synth"), None, "not a [connect] section's");
    let s = key(listener, 1);
    r.connecting(connection, s, ip("10.0.0.2"));
    r.session_up(s, "Synth", ip("10.0.0.2"));
    assert_eq!(drain(&mut r), vec![Action::OpenDevice(d)]);
    assert_eq!(routed(&r, Source::Session(s)), vec![Dest::Device(d)]);
    // The peer went: reconnects with back-off, the device closes meanwhile.
    r.session_down(t(10), s, Ended::Other);
    assert_eq!(drain(&mut r), vec![Action::CloseDevice(d)]);
    assert_eq!(r.poll_timeout(), Some(t(10) + RECONNECT_MIN));
    r.handle_timeout(t(10) + RECONNECT_MIN);
    assert_eq!(connects(&drain(&mut r)), vec![connection]);
    let s = key(listener, 2);
    r.connecting(connection, s, ip("10.0.0.2"));
    r.session_up(s, "Synth", ip("10.0.0.2"));
    drain(&mut r);

    // Unplugged: the session ends (BY), nothing reconnects until it is back.
    r.device_present(t(20), d, false);
    let actions = drain(&mut r);
    assert_eq!(actions[0], Action::Close(s));
    assert!(actions.contains(&Action::CloseListener(listener)));
    assert!(actions.contains(&Action::CloseDevice(d)));
    assert_eq!(r.poll_timeout(), None);
    assert!(r.connection(connection).is_none());
    r.device_present(t(30), d, true);
    let (again, _, _) = opened(&drain(&mut r));
    r.handle_timeout(t(30));
    assert!(matches!(
        drain(&mut r)[..],
        [Action::Connect { listener, .. }] if listener == again
    ));
}

#[test]
fn a_device_whose_listener_cannot_open_waits_to_be_plugged_in_again() {
    let mut r = Router::new("Stage", false, false, 7);
    let d = r.add_device("Synth", Some(5010), Some(target(None, "10.0.0.2", 5004)));
    r.device_present(t(0), d, true);
    let (listener, _, _) = opened(&drain(&mut r));
    r.listener_failed(listener);
    r.handle_timeout(t(0));
    assert!(
        drain(&mut r).is_empty(),
        "no connection without its listener"
    );
    assert_eq!(r.poll_timeout(), None);
    r.device_present(t(1), d, false);
    assert!(drain(&mut r).is_empty());
    r.device_present(t(2), d, true);
    opened(&drain(&mut r));
}

#[test]
fn a_peer_discovered_with_both_protocols_gets_one_port_its_rtp_midi_one() {
    let midi2 = |host: &str| ConnectTarget {
        midi2: true,
        ..target(Some("Studio"), host, 5673)
    };
    // MIDI 2.0 first: a port; then RTP-MIDI from the same host takes over.
    let mut r = Router::new("us", true, false, 7);
    r.add_midi2_listener(None);
    drain(&mut r);
    r.discovered(t(0), "Studio", midi2("10.0.0.7"));
    let (m2_port, _) = one_port(&drain(&mut r));
    r.discovered(t(10), "Studio", target(Some("Studio"), "10.0.0.7", 5004));
    let actions = drain(&mut r);
    assert!(
        actions.contains(&Action::DeletePort(m2_port)),
        "{actions:?}"
    );
    assert_eq!(created(&actions).len(), 1);
    assert_eq!(r.connections().count(), 1);
    // Seen again as MIDI 2.0: nothing changes.
    r.discovered(t(20), "Studio", midi2("10.0.0.7"));
    assert!(drain(&mut r).is_empty());
    // A MIDI 2.0-only host elsewhere connects over MIDI 2.0, on the MIDI 2.0 listener.
    r.discovered(
        t(30),
        "Synth",
        ConnectTarget {
            name: Some("Synth".into()),
            ..midi2("10.0.0.8")
        },
    );
    let (port, _) = one_port(&drain(&mut r));
    r.port_subscribed(t(40), port, true);
    r.handle_timeout(t(40));
    let actions = drain(&mut r);
    assert!(
        matches!(&actions[..], [Action::Connect { target, listener, .. }]
        if target.midi2 && Some(*listener) != Some(r.main())),
        "{actions:?}"
    );
    // Its goodbye is its own.
    r.discovered_gone(t(50), "Synth", false);
    assert_eq!(r.poll_timeout(), None);
    r.discovered_gone(t(50), "Synth", true);
    assert_eq!(r.poll_timeout(), Some(t(50) + GONE_GRACE));
}

#[test]
fn an_unnamed_connection_goes_by_its_address_with_ipv6_in_brackets() {
    assert_eq!(
        target_label(&target(None, "10.0.0.2", 5004)),
        "10.0.0.2:5004"
    );
    assert_eq!(target_label(&target(None, "::1", 5004)), "[::1]:5004");
    assert_eq!(target_label(&target(Some("Piano"), "::1", 5004)), "Piano");
}

#[test]
fn a_listener_section_admits_by_its_own_keys_and_sessions_carry_the_listeners_name() {
    let settings = crate::config::settings(
        "[general]\nname = Stage\nmax_sessions = 9\n[listener drums]\nport = 5020\nmax_sessions = 4\n",
    );
    let mut r = Router::new("Stage", true, false, 7);
    r.configure(t(0), &settings);
    let drums = r.extra_listener("drums").unwrap();
    let host = r.add_midi2_listener(None);
    assert_eq!(r.admission_of(drums, &settings).max_sessions, 4);
    assert_eq!(r.admission_of(r.main(), &settings).max_sessions, 9);
    assert_eq!(r.admission_of(host, &settings).max_sessions, 9);
    assert_eq!(r.session_config(drums, &settings).name, "drums");
    assert_eq!(r.session_config(r.main(), &settings).name, "Stage");
    r.set_name("Renamed");
    assert_eq!(r.session_config(r.main(), &settings).name, "Renamed");
}
