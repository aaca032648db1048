//! `/etc/hosts` (hosts(5)): `ADDRESS NAME [ALIAS...]`, `#` to the end of a line a comment.
//! As glibc does, a bad line is skipped and the rest still used; the skipped lines are
//! returned for logging.
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{normalize, valid_name, ParseError, ParseErrorKind};

/// Addresses per name, in file order; names compare without case and without a final dot.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Hosts {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// Parses the file's octets (not necessarily UTF-8: a line that is not is skipped).
    pub fn parse(text: &[u8]) -> (Hosts, Vec<ParseError>) {
        let mut hosts = Hosts::default();
        let mut errors = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let mut error = |kind| errors.push(ParseError { line: i + 1, kind });
            let Ok(line) = core::str::from_utf8(line) else {
                error(ParseErrorKind::BadName);
                continue;
            };
            let mut fields = line.split_ascii_whitespace();
            let Some(addr) = fields.next() else {
                continue;
            };
            // A link-local address with a scope (`fe80::1%eth0`) is not a plain IpAddr:
            // glibc takes no scope from this file either.
            let Ok(addr) = addr.parse::<IpAddr>() else {
                error(ParseErrorKind::BadAddress);
                continue;
            };
            let mut named = false;
            for name in fields {
                if !valid_name(name) {
                    error(ParseErrorKind::BadName);
                    continue;
                }
                named = true;
                let addrs = hosts.names.entry(normalize(name)).or_default();
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            if !named {
                error(ParseErrorKind::MissingValue);
            }
        }
        (hosts, errors)
    }

    /// The addresses of `name` (IPv4 first, then IPv6), empty if it is not in the table.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let mut addrs = self
            .names
            .get(&normalize(name))
            .cloned()
            .unwrap_or_default();
        addrs.sort_by_key(IpAddr::is_ipv6);
        addrs
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn typical_file() {
        let text = b"# The static table\n\
            127.0.0.1\tlocalhost\n\
            ::1     localhost ip6-localhost ip6-loopback\n\
            127.0.1.1 studio.example.org studio # this machine\n\
            192.168.1.20  Synth.LAN synth\n\
            192.168.1.21  synth.lan.\n";
        let (h, errors) = Hosts::parse(text);
        assert_eq!(errors, []);
        assert_eq!(h.lookup("localhost"), ips(&["127.0.0.1", "::1"]));
        assert_eq!(h.lookup("LOCALHOST."), ips(&["127.0.0.1", "::1"]));
        assert_eq!(h.lookup("ip6-loopback"), ips(&["::1"]));
        assert_eq!(h.lookup("studio"), ips(&["127.0.1.1"]));
        assert_eq!(
            h.lookup("synth.lan"),
            ips(&["192.168.1.20", "192.168.1.21"])
        );
        assert!(h.lookup("this").is_empty());
        assert!(h.lookup("machine").is_empty());
    }

    #[test]
    fn bad_lines_are_skipped_and_reported() {
        let text = b"10.0.0.300 bad\n\
            10.0.0.1\n\
            fe80::1%eth0 scoped\n\
            10.0.0.2 good a..b\n\
            \xff\xfe junk\n\
            \r\n\
            10.0.0.3 crlf\r\n";
        let (h, errors) = Hosts::parse(text);
        let kinds: Vec<(usize, ParseErrorKind)> = errors.iter().map(|e| (e.line, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, ParseErrorKind::BadAddress),
                (2, ParseErrorKind::MissingValue),
                (3, ParseErrorKind::BadAddress),
                (4, ParseErrorKind::BadName),
                (5, ParseErrorKind::BadName),
            ]
        );
        assert_eq!(h.lookup("good"), ips(&["10.0.0.2"]));
        assert!(h.lookup("bad").is_empty());
        assert_eq!(h.lookup("crlf"), ips(&["10.0.0.3"]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..400)) {
            let (h, errors) = Hosts::parse(&text);
            let lines = text.split(|&b| b == b'\n').count();
            prop_assert!(errors.iter().all(|e| e.line >= 1 && e.line <= lines));
            let _ = h.lookup("localhost");
        }

        #[test]
        fn every_entry_is_found(
            entries in prop::collection::vec(
                (any::<[u8; 4]>(), "[a-zA-Z0-9-]{1,20}(\\.[a-z]{1,5}){0,2}"),
                1..10,
            ),
        ) {
            let text: String = entries
                .iter()
                .map(|(a, n)| format!("{}\t{n} # c\n", IpAddr::from(*a)))
                .collect();
            let (h, errors) = Hosts::parse(text.as_bytes());
            prop_assert_eq!(errors, vec![]);
            for (a, n) in &entries {
                prop_assert!(h.lookup(&n.to_uppercase()).contains(&IpAddr::from(*a)));
            }
        }
    }
}
