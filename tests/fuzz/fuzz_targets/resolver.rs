//! Host name resolution: arbitrary bytes as `/etc/hosts` and as `/etc/resolv.conf` never panic
//! the parsers and keep their bounds; as replies to the resolver (from the nameserver asked and
//! from mDNS) they never panic it, and every lookup still ends by its timeouts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::resolve::{conf, Hosts, ResolvConf, Resolver, Target};
use protocol::time::Instant;

fuzz_target!(|data: &[u8]| {
    let (hosts, _) = Hosts::parse(data);
    let _ = hosts.lookup("localhost");
    let (c, _) = ResolvConf::parse(data);
    assert!(c.nameservers.len() <= conf::MAX_NAMESERVERS);
    assert!(c.search.len() <= conf::MAX_SEARCH);
    assert!((1..=conf::MAX_ATTEMPTS).contains(&c.attempts));

    let (c, _) = ResolvConf::parse(b"nameserver 192.0.2.1\nsearch lan\noptions timeout:1\n");
    let mut r = Resolver::new(c, hosts, 1);
    r.set_mdns(true);
    let mut now = Instant::from_micros(1_000_000);
    r.resolve(now, "host");
    r.resolve(now, "host.local");
    let mut buf = Vec::new();
    let mut servers = Vec::new();
    while let Some(t) = r.poll_transmit(&mut buf) {
        if let Target::Nameserver(ns) = t.dst {
            servers.push(ns);
        }
    }
    // The raw bytes, and the bytes with each query's id put in front of them, so that some
    // get past the id check.
    for ns in servers {
        r.handle_datagram(now, ns, data);
    }
    for id in 0..4u16 {
        let mut forged = id.to_be_bytes().to_vec();
        forged.extend_from_slice(data.get(2..).unwrap_or_default());
        r.handle_datagram(now, "192.0.2.1:53".parse().unwrap(), &forged);
    }
    r.handle_mdns_datagram(now, "10.0.0.2:5353".parse().unwrap(), data);
    let mut rounds = 0;
    while let Some(t) = r.poll_timeout() {
        assert!(t >= now);
        now = t;
        r.handle_timeout(now);
        while r.poll_transmit(&mut buf).is_some() {}
        rounds += 1;
        assert!(rounds < 100);
    }
    while r.poll_event().is_some() {}
});
