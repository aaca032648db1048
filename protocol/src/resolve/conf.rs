//! `/etc/resolv.conf` (resolv.conf(5)) as glibc reads it: `nameserver`, `domain`, `search` and
//! `options` (`ndots:`, `timeout:`, `attempts:`, `rotate`); comments start with `#` or `;`.
//! Unknown or bad lines are skipped and returned for logging; values beyond glibc's bounds are
//! clamped to them.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};

use super::{normalize, valid_name, ParseError, ParseErrorKind};
use crate::time::Duration;

/// Nameservers used (glibc's MAXNS).
pub const MAX_NAMESERVERS: usize = 3;
/// Search domains used (glibc's historical MAXDNSRCH).
pub const MAX_SEARCH: usize = 6;
/// Bounds of the options (glibc's RES_MAXNDOTS, RES_MAXRETRANS, RES_MAXRETRY).
pub const MAX_NDOTS: u8 = 15;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_ATTEMPTS: u8 = 5;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResolvConf {
    /// As written; empty means the local host ([`ResolvConf::servers`]).
    pub nameservers: Vec<SocketAddr>,
    /// Domains tried after (or before, see `ndots`) a name, lower case, no final dot.
    pub search: Vec<String>,
    /// A name with at least this many dots is tried as it is before the search list.
    pub ndots: u8,
    /// How long to wait for each nameserver, 1 s to [`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Rounds over the nameservers, 1 to [`MAX_ATTEMPTS`].
    pub attempts: u8,
    /// Start each lookup at the next nameserver instead of the first.
    pub rotate: bool,
}

impl Default for ResolvConf {
    /// glibc's defaults: no nameserver line (the local host), no search list, `ndots:1`,
    /// `timeout:5`, `attempts:2`.
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            rotate: false,
        }
    }
}

impl ResolvConf {
    /// Parses the file; scoped IPv6 nameservers (`fe80::1%2`) need a numeric scope.
    pub fn parse(text: &[u8]) -> (ResolvConf, Vec<ParseError>) {
        ResolvConf::parse_with(text, |_| None)
    }

    /// Parses the file; `if_index` turns an interface name in a scoped IPv6 nameserver
    /// (`fe80::1%eth0`) into its index.
    pub fn parse_with(
        text: &[u8],
        if_index: impl Fn(&str) -> Option<u32>,
    ) -> (ResolvConf, Vec<ParseError>) {
        let mut conf = ResolvConf::default();
        let mut errors = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let mut error = |kind| errors.push(ParseError { line: i + 1, kind });
            let text = String::from_utf8_lossy(line);
            // A comment runs from `#` or `;` to the end of the line.
            let text = text.split(['#', ';']).next().unwrap_or_default();
            let mut fields = text.split_ascii_whitespace();
            let Some(keyword) = fields.next() else {
                continue;
            };
            let values: Vec<&str> = fields.collect();
            match keyword {
                "nameserver" => {
                    let Some(addr) = values.first() else {
                        error(ParseErrorKind::MissingValue);
                        continue;
                    };
                    match parse_nameserver(addr, &if_index) {
                        None => error(ParseErrorKind::BadAddress),
                        Some(_) if conf.nameservers.len() >= MAX_NAMESERVERS => {
                            error(ParseErrorKind::TooManyNameservers)
                        }
                        Some(addr) => conf.nameservers.push(addr),
                    }
                }
                // The last `domain` or `search` line wins.
                "domain" | "search" => {
                    let values = if keyword == "domain" {
                        &values[..values.len().min(1)]
                    } else {
                        &values[..]
                    };
                    if values.is_empty() {
                        error(ParseErrorKind::MissingValue);
                        continue;
                    }
                    conf.search.clear();
                    for v in values {
                        // `search .` (systemd-resolved): no search list.
                        if *v == "." {
                            continue;
                        }
                        if !valid_name(v) {
                            error(ParseErrorKind::BadName);
                        } else if conf.search.len() >= MAX_SEARCH {
                            error(ParseErrorKind::TooManySearchDomains);
                            break;
                        } else {
                            conf.search.push(normalize(v));
                        }
                    }
                }
                "options" => {
                    for option in values {
                        if let Err(kind) = conf.option(option) {
                            error(kind);
                        }
                    }
                }
                // Known to glibc, of no use here.
                "sortlist" | "lookup" | "family" => {}
                _ => error(ParseErrorKind::UnknownKeyword),
            }
        }
        (conf, errors)
    }

    /// One `options` word; unknown ones (`edns0`, `single-request`...) are ignored, as glibc
    /// ignores what it does not know.
    fn option(&mut self, option: &str) -> Result<(), ParseErrorKind> {
        let number = |v: &str| v.parse::<u32>().map_err(|_| ParseErrorKind::BadOption);
        if let Some(v) = option.strip_prefix("ndots:") {
            self.ndots = number(v)?.min(u32::from(MAX_NDOTS)) as u8;
        } else if let Some(v) = option.strip_prefix("timeout:") {
            let secs = u64::from(number(v)?).max(1);
            self.timeout = Duration::from_secs(secs).min(MAX_TIMEOUT);
        } else if let Some(v) = option.strip_prefix("attempts:") {
            self.attempts = number(v)?.clamp(1, u32::from(MAX_ATTEMPTS)) as u8;
        } else if option == "rotate" {
            self.rotate = true;
        }
        Ok(())
    }

    /// The nameservers to ask: those of the file, or the local host when it names none
    /// (glibc).
    pub fn servers(&self) -> Vec<SocketAddr> {
        if self.nameservers.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT)]
        } else {
            self.nameservers.clone()
        }
    }
}

/// An IPv4 or IPv6 address, the latter with an optional `%scope`, on port 53.
fn parse_nameserver(text: &str, if_index: &impl Fn(&str) -> Option<u32>) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, scope) = text.split_once('%')?;
    let ip = ip.parse().ok()?;
    let scope = scope.parse().ok().or_else(|| if_index(scope))?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn typical_files() {
        let text = b"# Generated by NetworkManager\n\
            search lan example.org\n\
            nameserver 192.168.1.1\n\
            nameserver 2001:db8::53\n\
            ; another comment\n\
            options edns0 trust-ad timeout:2 attempts:3 rotate ndots:2\n";
        let (c, errors) = ResolvConf::parse(text);
        assert_eq!(errors, []);
        assert_eq!(
            c.nameservers,
            [sa("192.168.1.1:53"), sa("[2001:db8::53]:53")]
        );
        assert_eq!(c.search, ["lan", "example.org"]);
        assert_eq!(
            (c.ndots, c.timeout, c.attempts, c.rotate),
            (2, Duration::from_secs(2), 3, true)
        );
        // systemd-resolved's stub file.
        let text = b"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
        let (c, errors) = ResolvConf::parse(text);
        assert_eq!(errors, []);
        assert_eq!(c.servers(), [sa("127.0.0.53:53")]);
        assert!(c.search.is_empty());
        assert_eq!(c.timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_bounds_and_errors() {
        let (c, errors) = ResolvConf::parse(b"");
        assert_eq!((c.clone(), errors), (ResolvConf::default(), vec![]));
        assert_eq!(c.servers(), [sa("127.0.0.1:53")]);
        let text = b"nameserver 10.0.0.1\n\
            nameserver 10.0.0.2 # second\n\
            nameserver 10.0.0.3\n\
            nameserver 10.0.0.4\n\
            nameserver bogus\n\
            nameserver\n\
            domain Example.COM.\n\
            options timeout:99 attempts:0 ndots:40 timeout:x\n\
            frobnicate yes\n\
            nameserver fe80::1%3\n\
            nameserver fe80::1%eth0\n\
            search a b c d e f g\n";
        let (c, errors) = ResolvConf::parse(text);
        let kinds: Vec<(usize, ParseErrorKind)> = errors.iter().map(|e| (e.line, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (4, ParseErrorKind::TooManyNameservers),
                (5, ParseErrorKind::BadAddress),
                (6, ParseErrorKind::MissingValue),
                (8, ParseErrorKind::BadOption),
                (9, ParseErrorKind::UnknownKeyword),
                (10, ParseErrorKind::TooManyNameservers),
                (11, ParseErrorKind::BadAddress),
                (12, ParseErrorKind::TooManySearchDomains),
            ]
        );
        assert_eq!(c.nameservers.len(), 3);
        assert_eq!(c.search, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(
            (c.ndots, c.timeout, c.attempts),
            (MAX_NDOTS, MAX_TIMEOUT, 1)
        );
        // `domain` after `search` replaces it.
        let (c, _) = ResolvConf::parse(b"search a b\ndomain Example.COM.\n");
        assert_eq!(c.search, ["example.com"]);
    }

    #[test]
    fn scoped_nameservers() {
        let text = b"nameserver fe80::1%3\nnameserver fe80::2%eth0\n";
        let (c, errors) = ResolvConf::parse_with(text, |n| (n == "eth0").then_some(7));
        assert_eq!(errors, []);
        assert_eq!(c.nameservers, [sa("[fe80::1%3]:53"), sa("[fe80::2%7]:53")]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..400)) {
            let (c, _) = ResolvConf::parse(&text);
            prop_assert!(c.nameservers.len() <= MAX_NAMESERVERS);
            prop_assert!(c.search.len() <= MAX_SEARCH);
            prop_assert!(c.ndots <= MAX_NDOTS);
            prop_assert!((1..=MAX_ATTEMPTS).contains(&c.attempts));
            prop_assert!(c.timeout >= Duration::from_secs(1) && c.timeout <= MAX_TIMEOUT);
        }

        #[test]
        fn keyword_soup_never_panics(
            lines in prop::collection::vec(
                (
                    prop::sample::select(vec!["nameserver", "search", "domain", "options", "#", "x"]),
                    prop::collection::vec("[a-z0-9:.%]{0,12}", 0..4),
                ),
                0..12,
            ),
        ) {
            let text: String = lines
                .iter()
                .map(|(k, v)| format!("{k} {}\n", v.join(" ")))
                .collect();
            let (c, _) = ResolvConf::parse(text.as_bytes());
            prop_assert!(c.servers().len() <= MAX_NAMESERVERS);
        }
    }
}
