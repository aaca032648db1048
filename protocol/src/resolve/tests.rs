//! The resolver against simulated nameservers and a simulated clock.
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::mdns::message::{flags, CLASS_IN};
use crate::mdns::{Message, Name, RData, Record, Type};
use crate::time::{Duration, Instant};

const T0: Instant = Instant::from_micros(1_000_000);
const NS1: &str = "192.0.2.1:53";
const NS2: &str = "[2001:db8::53]:53";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_dotted(s).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn conf(text: &str) -> ResolvConf {
    let (c, errors) = ResolvConf::parse(text.as_bytes());
    assert_eq!(errors, []);
    c
}

/// Two nameservers, timeout 2 s, 2 attempts, no search list.
fn two_servers() -> Resolver {
    let c = conf("nameserver 192.0.2.1\nnameserver 2001:db8::53\noptions timeout:2 attempts:2\n");
    Resolver::new(c, Hosts::default(), 42)
}

/// The datagrams queued: (nameserver, parsed query).
fn sent(r: &mut Resolver) -> Vec<(SocketAddr, Message)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(&mut buf) {
        let Target::Nameserver(ns) = t.dst else {
            panic!("{t:?}")
        };
        out.push((ns, Message::parse(&buf[..t.size]).unwrap()));
    }
    out
}

fn events(r: &mut Resolver) -> Vec<Event> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// The response a nameserver gives to `query`: the question echoed, `rcode`, `answers`.
fn reply(query: &Message, rcode: u16, answers: Vec<Record>) -> Vec<u8> {
    Message {
        id: query.id,
        flags: flags::QR | flags::RD | flags::RA | rcode,
        questions: query.questions.clone(),
        answers,
        ..Message::default()
    }
    .to_bytes()
}

fn a(owner: &str, addr: &str) -> Record {
    let data = match ip(addr) {
        IpAddr::V4(v4) => RData::A(v4),
        IpAddr::V6(v6) => RData::Aaaa(v6),
    };
    Record::new(name(owner), 300, false, data)
}

fn cname(owner: &str, target: &str) -> Record {
    Record::new(name(owner), 300, false, RData::Cname(name(target)))
}

/// Answers every query in `queries` from its nameserver: A and AAAA per `answer`.
fn answer_all(
    r: &mut Resolver,
    now: Instant,
    queries: &[(SocketAddr, Message)],
    answer: impl Fn(&Message) -> Vec<u8>,
) {
    for (ns, q) in queries {
        r.handle_datagram(now, *ns, &answer(q));
    }
}

#[test]
fn literals_hosts_and_localhost_answer_at_once() {
    let (hosts, _) = Hosts::parse(b"10.1.2.3 synth synth.lan\n");
    let mut r = Resolver::new(ResolvConf::default(), hosts, 1);
    let ids = [
        r.resolve(T0, "192.168.1.7"),
        r.resolve(T0, "fe80::1"),
        r.resolve(T0, "SYNTH.lan."),
        r.resolve(T0, "localhost"),
        r.resolve(T0, "a..b"),
        r.resolve(T0, ""),
    ];
    assert_eq!(
        events(&mut r),
        [
            Event::Resolved(ids[0], vec![ip("192.168.1.7")]),
            Event::Resolved(ids[1], vec![ip("fe80::1")]),
            Event::Resolved(ids[2], vec![ip("10.1.2.3")]),
            Event::Resolved(ids[3], vec![ip("127.0.0.1"), ip("::1")]),
            Event::Failed(ids[4], Failure::BadName),
            Event::Failed(ids[5], Failure::BadName),
        ]
    );
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn query_bytes() {
    let mut r = Resolver::new(ResolvConf::default(), Hosts::default(), 1);
    r.resolve(T0, "Synth.example.");
    let mut buf = Vec::new();
    let t = r.poll_transmit(&mut buf).unwrap();
    assert_eq!(t.dst, Target::Nameserver(sa("127.0.0.1:53")));
    #[rustfmt::skip]
    let expected = [
        buf[0], buf[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        5, b'S', b'y', b'n', b't', b'h', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
        0, 1, 0, 1,
    ];
    assert_eq!(&buf[..t.size], expected);
    let t = r.poll_transmit(&mut buf).unwrap();
    assert_eq!(&buf[t.size - 4..t.size], [0, 28, 0, 1]);
    assert!(r.poll_transmit(&mut buf).is_none());
}

#[test]
fn answer_from_byte_vector() {
    let mut r = Resolver::new(conf("nameserver 192.0.2.1\n"), Hosts::default(), 7);
    let id = r.resolve(T0, "host.example.");
    let q = sent(&mut r);
    let (qa, qaaaa) = (&q[0].1, &q[1].1);
    let [ha, la] = qa.id.to_be_bytes();
    // A response as a recursive server sends it: question echoed, the answer's name a pointer
    // to it, TTL 3600, 198.51.100.7.
    #[rustfmt::skip]
    let response = [
        ha, la, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
        4, b'h', b'o', b's', b't', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1,
        0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 198, 51, 100, 7,
    ];
    r.handle_datagram(T0, sa(NS1), &response);
    assert!(events(&mut r).is_empty(), "waits for AAAA");
    r.handle_datagram(
        T0,
        sa(NS1),
        &reply(qaaaa, 0, vec![a("host.example", "2001:db8::7")]),
    );
    assert_eq!(
        events(&mut r),
        [Event::Resolved(
            id,
            vec![ip("198.51.100.7"), ip("2001:db8::7")]
        )]
    );
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.stats(), Stats::default());
}

#[test]
fn timeouts_retries_and_rotation_over_servers() {
    let mut r = two_servers();
    let id = r.resolve(T0, "silent.example.");
    let mut log = Vec::new();
    let mut now = T0;
    loop {
        for (ns, q) in sent(&mut r) {
            log.push(((now - T0).as_secs(), ns, q.questions[0].qtype));
        }
        let Some(t) = r.poll_timeout() else { break };
        assert!(events(&mut r).is_empty());
        now = t;
        r.handle_timeout(now);
    }
    let (ns1, ns2) = (sa(NS1), sa(NS2));
    assert_eq!(
        log,
        [
            (0, ns1, Type::A),
            (0, ns1, Type::AAAA),
            (2, ns2, Type::A),
            (2, ns2, Type::AAAA),
            (4, ns1, Type::A),
            (4, ns1, Type::AAAA),
            (6, ns2, Type::A),
            (6, ns2, Type::AAAA),
        ]
    );
    assert_eq!(now, T0 + secs(8));
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::Timeout)]);
}

#[test]
fn second_server_answers_and_late_first_is_dropped() {
    let mut r = two_servers();
    let id = r.resolve(T0, "host.example.");
    let first = sent(&mut r);
    r.handle_timeout(T0 + secs(2));
    let second = sent(&mut r);
    assert!(second.iter().all(|(ns, _)| *ns == sa(NS2)));
    // The first server wakes up: its answers are for queries no longer in flight.
    answer_all(&mut r, T0 + secs(3), &first, |q| {
        reply(q, 0, vec![a("host.example", "10.0.0.1")])
    });
    assert!(events(&mut r).is_empty());
    assert_eq!(r.stats().unmatched, 2);
    answer_all(&mut r, T0 + secs(3), &second, |q| {
        match q.questions[0].qtype {
            Type::A => reply(q, 0, vec![a("host.example", "10.0.0.2")]),
            _ => reply(q, 0, vec![]),
        }
    });
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("10.0.0.2")])]);
}

#[test]
fn one_family_unanswered_resolves_at_the_deadline() {
    let mut r = two_servers();
    let id = r.resolve(T0, "host.example.");
    let q = sent(&mut r);
    r.handle_datagram(
        T0,
        q[0].0,
        &reply(&q[0].1, 0, vec![a("host.example", "10.0.0.1")]),
    );
    assert!(events(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), Some(T0 + secs(2)));
    r.handle_timeout(T0 + secs(2));
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("10.0.0.1")])]);
    assert!(sent(&mut r).is_empty());
}

#[test]
fn nxdomain_walks_the_search_list() {
    let c = conf("nameserver 192.0.2.1\nsearch lan example.org\n");
    let mut r = Resolver::new(c, Hosts::default(), 3);
    let id = r.resolve(T0, "synth");
    let mut asked = Vec::new();
    for _ in 0..3 {
        let q = sent(&mut r);
        asked.push(q[0].1.questions[0].name.to_string());
        answer_all(&mut r, T0, &q, |q| reply(q, NXDOMAIN_RCODE, vec![]));
    }
    assert_eq!(asked, ["synth.lan", "synth.example.org", "synth"]);
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::NotFound)]);
    assert!(sent(&mut r).is_empty());

    // With a dot (ndots 1) the name itself comes first; NODATA moves on like NXDOMAIN.
    let id = r.resolve(T0, "synth.studio");
    let q = sent(&mut r);
    assert_eq!(q[0].1.questions[0].name, name("synth.studio"));
    answer_all(&mut r, T0, &q, |q| reply(q, 0, vec![]));
    let q = sent(&mut r);
    assert_eq!(q[0].1.questions[0].name, name("synth.studio.lan"));
    answer_all(&mut r, T0, &q, |q| match q.questions[0].qtype {
        Type::AAAA => reply(q, 0, vec![a("synth.studio.lan", "fd00::9")]),
        _ => reply(q, NXDOMAIN_RCODE, vec![]),
    });
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("fd00::9")])]);
}

const NXDOMAIN_RCODE: u16 = 3;
const SERVFAIL_RCODE: u16 = 2;

#[test]
fn server_failure_goes_to_the_next_server_at_once() {
    let mut r = two_servers();
    let id = r.resolve(T0, "host.example.");
    let q = sent(&mut r);
    r.handle_datagram(T0, q[0].0, &reply(&q[0].1, SERVFAIL_RCODE, vec![]));
    let next = sent(&mut r);
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|(ns, _)| *ns == sa(NS2)));
    // Every server fails every time: a server failure, not a timeout.
    let mut q = next;
    for _ in 0..3 {
        r.handle_datagram(T0, q[1].0, &reply(&q[1].1, 5, vec![]));
        q = sent(&mut r);
    }
    assert!(q.is_empty());
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::ServerFailure)]);
}

#[test]
fn truncated_datagrams_and_tc_replies() {
    let mut r = two_servers();
    let id = r.resolve(T0, "host.example.");
    let q = sent(&mut r);
    let full = reply(&q[0].1, 0, vec![a("host.example", "10.0.0.1")]);
    for len in 0..full.len() {
        r.handle_datagram(T0, q[0].0, &full[..len]);
    }
    assert_eq!(r.stats().malformed, full.len() as u64);
    assert!(events(&mut r).is_empty());
    // TC without an answer: we have no TCP, the next server is asked.
    let mut tc = Message::parse(&reply(&q[0].1, 0, vec![])).unwrap();
    tc.flags |= flags::TC;
    r.handle_datagram(T0, q[0].0, &tc.to_bytes());
    let next = sent(&mut r);
    assert!(next.iter().all(|(ns, _)| *ns == sa(NS2)));
    // TC with an answer is used.
    let mut tc =
        Message::parse(&reply(&next[0].1, 0, vec![a("host.example", "10.0.0.3")])).unwrap();
    tc.flags |= flags::TC;
    r.handle_datagram(T0, next[0].0, &tc.to_bytes());
    r.handle_datagram(T0, next[1].0, &reply(&next[1].1, 0, vec![]));
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("10.0.0.3")])]);
}

#[test]
fn spoofed_replies_are_dropped_and_counted() {
    let mut r = two_servers();
    let id = r.resolve(T0, "bank.example.");
    let q = sent(&mut r);
    let (ns, qa) = (&q[0].0, &q[0].1);
    let evil = vec![a("bank.example", "6.6.6.6")];
    // Wrong id.
    let mut wrong_id = qa.clone();
    wrong_id.id = qa.id.wrapping_add(1);
    if wrong_id.id == q[1].1.id {
        wrong_id.id = wrong_id.id.wrapping_add(1);
    }
    r.handle_datagram(T0, *ns, &reply(&wrong_id, 0, evil.clone()));
    // Right id from another address, or another port of the server.
    r.handle_datagram(T0, sa("203.0.113.9:53"), &reply(qa, 0, evil.clone()));
    r.handle_datagram(T0, sa("192.0.2.1:5353"), &reply(qa, 0, evil.clone()));
    assert_eq!(r.stats().unmatched, 3);
    // Right id and source, another question.
    let mut other = qa.clone();
    other.questions[0].name = name("evil.example");
    r.handle_datagram(T0, *ns, &reply(&other, 0, evil.clone()));
    // Right id and source, AAAA question echoed for the A query.
    other.questions[0] = q[1].1.questions[0].clone();
    r.handle_datagram(T0, *ns, &reply(&other, 0, evil.clone()));
    // A query, not a response.
    let mut query = Message::parse(&reply(qa, 0, evil)).unwrap();
    query.flags &= !flags::QR;
    r.handle_datagram(T0, *ns, &query.to_bytes());
    assert_eq!(r.stats().mismatched, 3);
    assert!(events(&mut r).is_empty());
    // The real answers still count.
    answer_all(&mut r, T0, &q, |q| match q.questions[0].qtype {
        Type::A => reply(q, 0, vec![a("bank.example", "10.0.0.1")]),
        _ => reply(q, 0, vec![]),
    });
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("10.0.0.1")])]);
}

#[test]
fn v4_mapped_source_matches() {
    let mut r = two_servers();
    let id = r.resolve(T0, "host.example.");
    let q = sent(&mut r);
    let mapped = sa("[::ffff:192.0.2.1]:53");
    for (_, q) in &q {
        r.handle_datagram(
            T0,
            mapped,
            &reply(q, 0, vec![a("host.example", "10.0.0.1")]),
        );
    }
    assert_eq!(events(&mut r), [Event::Resolved(id, vec![ip("10.0.0.1")])]);
}

#[test]
fn cname_chains_are_followed_within_bounds() {
    let mut r = two_servers();
    let id = r.resolve(T0, "www.example.");
    let q = sent(&mut r);
    answer_all(&mut r, T0, &q, |q| {
        let owner = q.questions[0].name.to_string();
        let addr = if q.questions[0].qtype == Type::A {
            "10.0.0.5"
        } else {
            "fd00::5"
        };
        reply(
            q,
            0,
            vec![
                cname(&owner, "cdn.example"),
                // Unrelated records are not taken.
                a("other.example", "6.6.6.6"),
                cname("cdn.example", "edge.example"),
                a("edge.example", addr),
            ],
        )
    });
    assert_eq!(
        events(&mut r),
        [Event::Resolved(id, vec![ip("10.0.0.5"), ip("fd00::5")])]
    );
    // A loop and an over-long chain give no address.
    let id = r.resolve(T0, "loop.example.");
    let q = sent(&mut r);
    answer_all(&mut r, T0, &q, |q| {
        let mut chain = vec![cname("loop.example", "c0.example")];
        for i in 0..20 {
            chain.push(cname(
                &format!("c{i}.example"),
                &format!("c{}.example", i + 1),
            ));
        }
        chain.push(a("c20.example", "10.0.0.9"));
        chain.push(cname("c20.example", "loop.example"));
        reply(q, 0, chain)
    });
    assert_eq!(r.stats().long_chains, 2);
    // Both empty: no address for that name, and no search list: not found.
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::NotFound)]);
}

#[test]
fn rotate_starts_each_lookup_at_the_next_server() {
    let c = conf("nameserver 192.0.2.1\nnameserver 2001:db8::53\noptions rotate\n");
    let mut r = Resolver::new(c, Hosts::default(), 9);
    let firsts: Vec<SocketAddr> = (0..4)
        .map(|_| {
            r.resolve(T0, "x.example.");
            sent(&mut r)[0].0
        })
        .collect();
    assert_eq!(firsts[0], firsts[2]);
    assert_eq!(firsts[1], firsts[3]);
    assert_ne!(firsts[0], firsts[1]);
}

#[test]
fn query_ids_are_random_and_distinct() {
    let mut r = two_servers();
    for _ in 0..MAX_LOOKUPS {
        r.resolve(T0, "x.example.");
    }
    let ids: Vec<u16> = sent(&mut r).iter().map(|(_, q)| q.id).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    assert!(ids.windows(2).any(|w| w[1] != w[0].wrapping_add(1)));
    // Another seed, other ids.
    let mut other = Resolver::new(r.conf().clone(), Hosts::default(), 43);
    other.resolve(T0, "x.example.");
    assert_ne!(sent(&mut other)[0].1.id, ids[0]);
    // Beyond the bound: busy.
    let id = r.resolve(T0, "x.example.");
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::Busy)]);
    let hint = r.source_port_hint();
    assert!(hint >= 49152);
}

#[test]
fn cancel_forgets_a_lookup() {
    let mut r = two_servers();
    let id = r.resolve(T0, "x.example.");
    let q = sent(&mut r);
    assert!(r.cancel(id));
    assert!(!r.cancel(id));
    assert_eq!(r.poll_timeout(), None);
    answer_all(&mut r, T0, &q, |q| {
        reply(q, 0, vec![a("x.example", "10.0.0.1")])
    });
    assert!(events(&mut r).is_empty());
}

#[test]
fn new_conf_applies_from_the_next_try() {
    let mut r = two_servers();
    let id = r.resolve(T0, "x.example.");
    sent(&mut r);
    r.set_conf(conf(
        "nameserver 198.51.100.1\noptions timeout:1 attempts:1\n",
    ));
    r.handle_timeout(T0 + secs(2));
    let q = sent(&mut r);
    assert!(q.iter().all(|(ns, _)| *ns == sa("198.51.100.1:53")));
    r.handle_timeout(T0 + secs(3));
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::Timeout)]);
}

fn mdns_sent(r: &mut Resolver) -> Vec<Message> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(&mut buf) {
        assert_eq!(t.dst, Target::Mdns);
        out.push(Message::parse(&buf[..t.size]).unwrap());
    }
    out
}

#[test]
fn local_names_go_to_mdns() {
    let mut r = two_servers();
    r.set_mdns(true);
    let id = r.resolve(T0, "Studio.local");
    let q = mdns_sent(&mut r);
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].id, q[0].flags), (0, 0));
    let asked: Vec<(Name, Type, u16)> = q[0]
        .questions
        .iter()
        .map(|q| (q.name.clone(), q.qtype, q.qclass))
        .collect();
    assert_eq!(
        asked,
        [
            (name("studio.local"), Type::A, CLASS_IN),
            (name("studio.local"), Type::AAAA, CLASS_IN)
        ]
    );
    let answer = Message {
        answers: vec![Record::new(
            name("STUDIO.local"),
            120,
            true,
            RData::A("192.168.1.30".parse().unwrap()),
        )],
        additionals: vec![a("studio.local", "fe80::30"), a("other.local", "10.9.9.9")],
        ..Message::response()
    }
    .to_bytes();
    // Not from port 5353, not for us: ignored.
    r.handle_mdns_datagram(T0, sa("192.168.1.30:40000"), &answer);
    r.handle_datagram(T0, sa("192.168.1.30:5353"), &answer);
    assert!(events(&mut r).is_empty());
    r.handle_mdns_datagram(T0, sa("192.168.1.30:5353"), &answer);
    assert_eq!(
        events(&mut r),
        [Event::Resolved(
            id,
            vec![ip("192.168.1.30"), ip("fe80::30")]
        )]
    );
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn unanswered_mdns_queries_then_timeout() {
    let mut r = two_servers();
    r.set_mdns(true);
    let id = r.resolve(T0, "gone.local.");
    let mut times = vec![];
    let mut now = T0;
    loop {
        times.extend(mdns_sent(&mut r).iter().map(|_| (now - T0).as_secs()));
        let Some(t) = r.poll_timeout() else { break };
        now = t;
        r.handle_timeout(now);
    }
    assert_eq!(times, [0, 1, 2]);
    assert_eq!(now, T0 + secs(3));
    assert_eq!(events(&mut r), [Event::Failed(id, Failure::Timeout)]);
    // With mDNS off, `.local` is a name like any other.
    r.set_mdns(false);
    r.resolve(T0, "gone.local.");
    assert_eq!(sent(&mut r)[0].1.questions[0].name, name("gone.local"));
}

proptest! {
    /// Garbage from the nameserver never panics, and the lookup still ends.
    #[test]
    fn garbage_never_panics(
        datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8),
        mutate in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut r = two_servers();
        r.set_mdns(true);
        r.resolve(T0, "host.example.");
        r.resolve(T0, "host.local");
        let q = sent_any(&mut r);
        for d in &datagrams {
            r.handle_datagram(T0, sa(NS1), d);
            r.handle_mdns_datagram(T0, sa("10.0.0.9:5353"), d);
        }
        // Real replies with a few octets changed.
        for (ns, q) in &q {
            let mut bytes = reply(q, 0, vec![a("host.example", "10.0.0.1")]);
            for &(at, v) in &mutate {
                let len = bytes.len();
                bytes[at % len] = v;
            }
            r.handle_datagram(T0, *ns, &bytes);
        }
        let mut now = T0;
        while let Some(t) = r.poll_timeout() {
            prop_assert!(t > now || t == now && now == T0);
            now = t;
            r.handle_timeout(now);
            sent_any(&mut r);
        }
        prop_assert_eq!(events(&mut r).len(), 2);
    }
}

fn sent_any(r: &mut Resolver) -> Vec<(SocketAddr, Message)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(&mut buf) {
        if let Target::Nameserver(ns) = t.dst {
            out.push((ns, Message::parse(&buf[..t.size]).unwrap()));
        }
    }
    out
}
