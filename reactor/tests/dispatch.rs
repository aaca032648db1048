//! The loop against real fds (UDP on 127.0.0.1) and real timers. Nothing sleeps: every wait is
//! `run_once` bounded by a deadline, and a test fails when the deadline passes first.
use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use reactor::{Context, Event, Interest, Reactor, SourceId};

const LIMIT: Duration = Duration::from_secs(5);

/// Turns the loop until `done` holds; panics if that takes longer than `LIMIT`.
fn run_until<S, T: Eq + std::hash::Hash + Clone>(
    reactor: &mut Reactor<S, T>,
    state: &mut S,
    done: impl Fn(&S) -> bool,
) {
    let limit = Instant::now() + LIMIT;
    while !done(state) {
        let left = limit
            .checked_duration_since(Instant::now())
            .expect("condition not reached before the deadline");
        reactor.run_once(state, Some(left)).unwrap();
    }
}

fn udp_pair() -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    (rx, tx)
}

/// Reads datagrams until `WouldBlock`, as every handler must.
fn drain(socket: &UdpSocket, into: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 64];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => into.push(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn no_timers<S>(_: &mut S, _: &mut Context<S, u32>, _: u32) {
    panic!("no timer was set");
}

// ---- timers ----

#[derive(Default)]
struct Timers {
    deadlines: HashMap<u32, Instant>,
    fired: Vec<u32>,
    /// Timer 1 cancels the timer given here when it fires.
    cancel_on_1: Option<u32>,
}

impl Timers {
    fn set(&mut self, ctx: &mut Context<Timers, u32>, id: u32, at: Instant) {
        self.deadlines.insert(id, at);
        ctx.set_timer(id, at);
    }
}

fn on_timer(state: &mut Timers, ctx: &mut Context<Timers, u32>, id: u32) {
    let now = Instant::now();
    let deadline = state.deadlines[&id];
    assert!(
        now >= deadline,
        "timer {id} fired {:?} early",
        deadline - now
    );
    assert!(ctx.now() >= deadline);
    state.fired.push(id);
    if id == 1 {
        if let Some(other) = state.cancel_on_1 {
            assert!(ctx.cancel_timer(&other));
        }
    }
}

#[test]
fn timers_fire_in_deadline_order_and_never_early() {
    let mut reactor = Reactor::new(on_timer).unwrap();
    let mut state = Timers::default();
    let t0 = Instant::now();
    let offsets_us = [3000, 1000, 2500, 1200, 200, 1200, 50, 700];
    for (id, us) in offsets_us.iter().enumerate() {
        state.set(
            reactor.context(),
            id as u32,
            t0 + Duration::from_micros(*us),
        );
    }
    assert_eq!(reactor.context().timer_count(), offsets_us.len());
    run_until(&mut reactor, &mut state, |s| {
        s.fired.len() == offsets_us.len()
    });
    // Ties (ids 3 and 5) fire in the order they were set.
    assert_eq!(state.fired, [6, 4, 7, 1, 3, 5, 2, 0]);
    assert_eq!(reactor.context().timer_count(), 0);
}

#[test]
fn timers_due_in_the_past_fire_at_once_in_order() {
    let mut reactor = Reactor::new(on_timer).unwrap();
    let mut state = Timers::default();
    let past = Instant::now() - Duration::from_millis(5);
    state.set(reactor.context(), 2, past + Duration::from_millis(2));
    state.set(reactor.context(), 1, past + Duration::from_millis(1));
    reactor.run_once(&mut state, Some(Duration::ZERO)).unwrap();
    assert_eq!(state.fired, [1, 2]);
}

#[test]
fn cancel_before_and_from_a_handler() {
    let mut reactor = Reactor::new(on_timer).unwrap();
    let mut state = Timers {
        cancel_on_1: Some(3),
        ..Timers::default()
    };
    let t0 = Instant::now();
    for (id, ms) in [(1, 2), (2, 1), (3, 3), (4, 4)] {
        state.set(reactor.context(), id, t0 + Duration::from_millis(ms));
    }
    assert!(reactor.context().cancel_timer(&2));
    assert!(!reactor.context().cancel_timer(&2));
    assert_eq!(reactor.context().timer(&2), None);
    run_until(&mut reactor, &mut state, |s| s.fired.contains(&4));
    assert_eq!(state.fired, [1, 4]);
}

#[test]
fn setting_a_set_timer_moves_it() {
    let mut reactor = Reactor::new(on_timer).unwrap();
    let mut state = Timers::default();
    let t0 = Instant::now();
    state.set(reactor.context(), 1, t0 + Duration::from_millis(1));
    state.set(reactor.context(), 2, t0 + Duration::from_millis(2));
    state.set(reactor.context(), 3, t0 + Duration::from_secs(3600));
    // Later (1) and much earlier (3).
    state.set(reactor.context(), 1, t0 + Duration::from_millis(3));
    state.set(reactor.context(), 3, t0 + Duration::from_micros(500));
    assert_eq!(
        reactor.context().timer(&1),
        Some(t0 + Duration::from_millis(3))
    );
    assert_eq!(reactor.context().timer_count(), 3);
    run_until(&mut reactor, &mut state, |s| s.fired.len() == 3);
    assert_eq!(state.fired, [3, 2, 1]);
}

fn rearm_at_now(count: &mut u32, ctx: &mut Context<u32, ()>, (): ()) {
    *count += 1;
    if *count < 100 {
        let now = ctx.now();
        ctx.set_timer((), now);
    }
}

#[test]
fn a_timer_reset_to_now_from_its_handler_fires_once_per_turn() {
    let mut reactor = Reactor::new(rearm_at_now).unwrap();
    reactor.context().set_timer((), Instant::now());
    let mut count = 0;
    reactor.run_once(&mut count, Some(Duration::ZERO)).unwrap();
    assert_eq!(count, 1);
    run_until(&mut reactor, &mut count, |c| *c == 100);
    assert_eq!(reactor.context().timer_count(), 0);
}

// ---- stop ----

fn stop_on_first(fired: &mut Vec<u32>, ctx: &mut Context<Vec<u32>, u32>, id: u32) {
    fired.push(id);
    ctx.stop();
}

#[test]
fn stop_ends_run_and_leaves_due_timers_set() {
    let mut reactor = Reactor::new(stop_on_first).unwrap();
    let at = Instant::now() + Duration::from_micros(300);
    reactor.context().set_timer(1, at);
    reactor.context().set_timer(2, at);
    let mut fired = Vec::new();
    reactor.run(&mut fired).unwrap();
    assert_eq!(fired, [1]);
    assert_eq!(reactor.context().timer(&2), Some(at));
    reactor.run(&mut fired).unwrap();
    assert_eq!(fired, [1, 2]);
}

// ---- fds ----

#[derive(Default)]
struct Udp {
    a: Option<UdpSocket>,
    b: Option<UdpSocket>,
    c: Option<UdpSocket>,
    ids: HashMap<&'static str, SourceId>,
    got_a: Vec<Vec<u8>>,
    got_b: Vec<Vec<u8>>,
    got_c: Vec<Vec<u8>>,
    events: Vec<Event>,
}

impl Udp {
    fn socket(&self, name: &str) -> &UdpSocket {
        match name {
            "a" => self.a.as_ref(),
            "b" => self.b.as_ref(),
            _ => self.c.as_ref(),
        }
        .unwrap()
    }

    fn name_of(&self, id: SourceId) -> &'static str {
        self.ids
            .iter()
            .find(|(_, &v)| v == id)
            .map(|(&k, _)| k)
            .unwrap()
    }
}

fn on_a(s: &mut Udp, _: &mut Context<Udp, u32>, ev: Event) {
    assert!(ev.readable && !ev.error);
    assert_eq!(ev.fd, s.socket("a").as_raw_fd());
    s.events.push(ev);
    drain(s.a.as_ref().unwrap(), &mut s.got_a);
}

#[test]
fn udp_readiness_is_dispatched_and_drained() {
    let mut reactor = Reactor::new(no_timers).unwrap();
    let (rx, tx) = udp_pair();
    let mut s = Udp::default();
    let id = reactor
        .context()
        .register(rx.as_raw_fd(), Interest::READABLE, on_a)
        .unwrap();
    assert_eq!(reactor.context().fd(id), Some(rx.as_raw_fd()));
    s.a = Some(rx);
    for m in [b"one", b"two"] {
        tx.send(m).unwrap();
    }
    run_until(&mut reactor, &mut s, |s| s.got_a.len() == 2);
    assert_eq!(s.got_a, [b"one".to_vec(), b"two".to_vec()]);
    assert!(s.events.iter().all(|e| e.source == id));
    // Drained to WouldBlock, so the next datagram is a new edge and is reported again.
    tx.send(b"three").unwrap();
    run_until(&mut reactor, &mut s, |s| s.got_a.len() == 3);
    assert_eq!(s.got_a[2], b"three");
}

fn on_writable(s: &mut Udp, ctx: &mut Context<Udp, u32>, ev: Event) {
    assert!(ev.writable);
    s.events.push(ev);
    ctx.deregister(ev.source).unwrap();
}

#[test]
fn writable_interest_is_reported() {
    let mut reactor = Reactor::new(no_timers).unwrap();
    let (rx, _tx) = udp_pair();
    let mut s = Udp::default();
    reactor
        .context()
        .register(rx.as_raw_fd(), Interest::WRITABLE, on_writable)
        .unwrap();
    run_until(&mut reactor, &mut s, |s| s.events.len() == 1);
}

/// Reads one datagram per call and yields with `reregister`, as a handler bounding its work
/// per wakeup does.
fn one_at_a_time(s: &mut Udp, ctx: &mut Context<Udp, u32>, ev: Event) {
    s.events.push(ev);
    let mut buf = [0u8; 64];
    match s.socket("a").recv(&mut buf) {
        Ok(n) => s.got_a.push(buf[..n].to_vec()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
    }
    ctx.reregister(ev.source, Interest::READABLE).unwrap();
}

#[test]
fn reregister_reports_an_fd_that_is_still_ready() {
    let mut reactor = Reactor::new(no_timers).unwrap();
    let (rx, tx) = udp_pair();
    let mut s = Udp::default();
    reactor
        .context()
        .register(rx.as_raw_fd(), Interest::READABLE, one_at_a_time)
        .unwrap();
    s.a = Some(rx);
    for i in 0..5u8 {
        tx.send(&[i]).unwrap();
    }
    run_until(&mut reactor, &mut s, |s| s.got_a.len() == 5);
    assert_eq!(s.got_a, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
}

/// On its first datagram, registers socket b; b's handler deregisters itself.
fn registers_b(s: &mut Udp, ctx: &mut Context<Udp, u32>, ev: Event) {
    drain(s.a.as_ref().unwrap(), &mut s.got_a);
    if !s.ids.contains_key("b") {
        let fd = s.socket("b").as_raw_fd();
        let id = ctx
            .register(fd, Interest::READABLE, deregisters_itself)
            .unwrap();
        s.ids.insert("b", id);
    }
    s.events.push(ev);
}

fn deregisters_itself(s: &mut Udp, ctx: &mut Context<Udp, u32>, ev: Event) {
    assert_eq!(ev.source, s.ids["b"]);
    drain(s.b.as_ref().unwrap(), &mut s.got_b);
    ctx.deregister(ev.source).unwrap();
    assert_eq!(ctx.fd(ev.source), None);
    assert!(ctx.deregister(ev.source).is_err());
}

#[test]
fn register_and_deregister_from_handlers() {
    let mut reactor = Reactor::new(no_timers).unwrap();
    let (rx_a, tx_a) = udp_pair();
    let (rx_b, tx_b) = udp_pair();
    let mut s = Udp {
        a: Some(rx_a),
        b: Some(rx_b),
        ..Udp::default()
    };
    let fd = s.socket("a").as_raw_fd();
    let a = reactor
        .context()
        .register(fd, Interest::READABLE, registers_b)
        .unwrap();
    s.ids.insert("a", a);
    tx_a.send(b"a1").unwrap();
    run_until(&mut reactor, &mut s, |s| s.ids.contains_key("b"));
    tx_b.send(b"b1").unwrap();
    run_until(&mut reactor, &mut s, |s| s.got_b.len() == 1);
    // b is gone: its datagram (sent first) is never dispatched, a's still is.
    tx_b.send(b"b2").unwrap();
    tx_a.send(b"a2").unwrap();
    run_until(&mut reactor, &mut s, |s| s.got_a.len() == 2);
    reactor.run_once(&mut s, Some(Duration::ZERO)).unwrap();
    assert_eq!(s.got_b, [b"b1".to_vec()]);
    assert!(s.events.iter().all(|e| e.source == a));
}

/// Whichever of a and b runs first deregisters the other and registers c, which takes the
/// freed slot. The other's event, already in the same batch, must not reach c's handler.
fn first_of_two(s: &mut Udp, ctx: &mut Context<Udp, u32>, ev: Event) {
    s.events.push(ev);
    let me = s.name_of(ev.source);
    let other = if me == "a" { "b" } else { "a" };
    let mut sink = Vec::new();
    drain(s.socket(me), &mut sink);
    ctx.deregister(s.ids[other]).unwrap();
    let fd = s.socket("c").as_raw_fd();
    let c = ctx.register(fd, Interest::READABLE, on_c).unwrap();
    assert_ne!(c, s.ids[other]);
    s.ids.insert("c", c);
}

fn on_c(s: &mut Udp, _: &mut Context<Udp, u32>, ev: Event) {
    assert_eq!(ev.source, s.ids["c"]);
    assert_eq!(ev.fd, s.socket("c").as_raw_fd());
    drain(s.c.as_ref().unwrap(), &mut s.got_c);
}

#[test]
fn a_stale_token_is_not_dispatched_to_the_slot_reuser() {
    let mut reactor = Reactor::new(no_timers).unwrap();
    let (rx_a, tx_a) = udp_pair();
    let (rx_b, tx_b) = udp_pair();
    let (rx_c, tx_c) = udp_pair();
    let mut s = Udp {
        a: Some(rx_a),
        b: Some(rx_b),
        c: Some(rx_c),
        ..Udp::default()
    };
    for name in ["a", "b"] {
        let fd = s.socket(name).as_raw_fd();
        let id = reactor
            .context()
            .register(fd, Interest::READABLE, first_of_two)
            .unwrap();
        s.ids.insert(name, id);
    }
    // a, b and c are all readable before the poll, so a and b come in one batch.
    tx_a.send(b"a").unwrap();
    tx_b.send(b"b").unwrap();
    tx_c.send(b"c").unwrap();
    reactor.run_once(&mut s, Some(LIMIT)).unwrap();
    assert_eq!(s.events.len(), 1, "the deregistered source was dispatched");
    assert!(s.got_c.is_empty(), "c's handler got the stale event");
    run_until(&mut reactor, &mut s, |s| s.got_c.len() == 1);
    assert_eq!(s.events.len(), 1);
}
