//! A responder and a browser per host, wired together in memory on a simulated clock: each
//! multicast datagram reaches every host (the sender too, as multicast loopback does), each
//! unicast one its addressee.
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::time::{Duration, Instant};

const T0: Instant = Instant::from_micros(1_000_000);

struct Host {
    addr: IpAddr,
    responder: Responder,
    browser: Browser,
    found: Vec<BrowserEvent>,
    renamed: Vec<ResponderEvent>,
}

struct Net {
    hosts: Vec<Host>,
    now: Instant,
}

impl Net {
    fn new(specs: &[(&str, &str, &str, u16)]) -> Net {
        let hosts = specs
            .iter()
            .enumerate()
            .map(|(i, &(host, addr, instance, port))| {
                let addr: IpAddr = addr.parse().unwrap();
                let mut responder = Responder::new(T0, host, vec![addr], 100 + i as u64).unwrap();
                responder.add_service(T0, instance, port, vec![]).unwrap();
                let mut browser = Browser::new(T0, 200 + i as u64);
                browser.set_own_instances(T0, responder.instance_names());
                Host {
                    addr,
                    responder,
                    browser,
                    found: Vec::new(),
                    renamed: Vec::new(),
                }
            })
            .collect();
        Net { hosts, now: T0 }
    }

    /// Delivers everything queued, repeatedly, until nothing is left.
    fn flush(&mut self) {
        loop {
            let mut datagrams: Vec<(usize, Transmit)> = Vec::new();
            for (i, h) in self.hosts.iter_mut().enumerate() {
                while let Some(e) = h.responder.poll_event() {
                    h.renamed.push(e);
                    h.browser
                        .set_own_instances(self.now, h.responder.instance_names());
                }
                h.found
                    .extend(std::iter::from_fn(|| h.browser.poll_event()));
                while let Some(t) = h.responder.poll_transmit() {
                    datagrams.push((i, t));
                }
                while let Some(t) = h.browser.poll_transmit() {
                    datagrams.push((i, t));
                }
            }
            if datagrams.is_empty() {
                return;
            }
            for (from, t) in datagrams {
                let src = SocketAddr::new(self.hosts[from].addr, MDNS_PORT);
                for h in self.hosts.iter_mut() {
                    let to_me = match t.dst {
                        Destination::Multicast => true,
                        Destination::Unicast(a) => a.ip() == h.addr,
                    };
                    if to_me {
                        h.responder.handle_datagram(self.now, src, &t.payload);
                        h.browser.handle_datagram(self.now, src, &t.payload);
                    }
                }
            }
        }
    }

    fn run_until(&mut self, end: Instant) {
        self.flush();
        loop {
            let next = self
                .hosts
                .iter()
                .flat_map(|h| [h.responder.poll_timeout(), h.browser.poll_timeout()])
                .flatten()
                .min();
            let Some(next) = next.filter(|&t| t <= end) else {
                break;
            };
            self.now = next;
            for h in self.hosts.iter_mut() {
                h.responder.handle_timeout(next);
                h.browser.handle_timeout(next);
            }
            self.flush();
        }
        self.now = end;
    }
}

fn appeared(instance: &str, host: &str, port: u16, addr: &str) -> BrowserEvent {
    BrowserEvent::Appeared {
        instance: instance.into(),
        host: Name::from_dotted(host).unwrap(),
        port,
        addresses: vec![addr.parse().unwrap()],
    }
}

#[test]
fn two_hosts_find_each_other_then_goodbye() {
    let mut net = Net::new(&[
        ("a", "10.0.0.1", "Studio", 5004),
        ("b", "10.0.0.2", "Laptop", 5008),
    ]);
    net.run_until(T0 + Duration::from_secs(3));
    assert_eq!(
        net.hosts[0].found,
        vec![appeared("Laptop", "b.local", 5008, "10.0.0.2")]
    );
    assert_eq!(
        net.hosts[1].found,
        vec![appeared("Studio", "a.local", 5004, "10.0.0.1")]
    );
    // Quiet for an hour: still there, nothing new reported.
    net.run_until(T0 + Duration::from_secs(3 * 3600));
    assert_eq!(net.hosts[0].found.len(), 1);
    assert_eq!(net.hosts[1].found.len(), 1);

    let t = net.now;
    net.hosts[0].responder.shutdown(t);
    net.flush();
    // RFC 6762 §10.1: gone one second after the goodbye.
    net.run_until(t + Duration::from_millis(999));
    assert_eq!(net.hosts[1].found.len(), 1);
    net.run_until(t + Duration::from_millis(1000));
    assert_eq!(net.hosts[1].found.len(), 2);
    assert_eq!(
        net.hosts[1].found[1],
        BrowserEvent::Gone {
            instance: "Studio".into()
        }
    );
}

#[test]
fn same_instance_name_on_two_hosts() {
    let mut net = Net::new(&[
        ("a", "10.0.0.1", "Studio", 5004),
        ("b", "10.0.0.2", "Studio", 5004),
    ]);
    net.run_until(T0 + Duration::from_secs(5));
    let renames: Vec<&ResponderEvent> = net
        .hosts
        .iter()
        .flat_map(|h| &h.renamed)
        .filter(|e| matches!(e, ResponderEvent::Renamed { .. }))
        .collect();
    assert_eq!(renames.len(), 1, "{renames:?}");
    let ResponderEvent::Renamed { to, .. } = renames[0] else {
        unreachable!()
    };
    assert_eq!(to, "Studio (2)");
    let mut seen: Vec<String> = net
        .hosts
        .iter()
        .flat_map(|h| &h.found)
        .map(|e| match e {
            BrowserEvent::Appeared { instance, .. } => instance.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec!["Studio".to_string(), "Studio (2)".to_string()]);
}
