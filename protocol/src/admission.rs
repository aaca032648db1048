//! Who may open a session with us: networks allowed and denied, shared by every protocol's
//! endpoint and by the daemon's discovery.
use core::fmt;
use core::str::FromStr;
use std::net::IpAddr;

/// An address and a prefix length: `192.168.1.0/24`, `fe80::/10`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpNetError {
    BadAddress,
    BadPrefix,
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpNetError::BadAddress => "not an IP address",
            IpNetError::BadPrefix => "prefix length out of range (0-32 for IPv4, 0-128 for IPv6)",
        })
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::BadAddress)?;
        // IPv4-mapped IPv6 sources are compared as IPv4.
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or(IpNetError::BadPrefix)?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let keep = |bits: u32, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                u128::MAX << (width - bits)
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = keep(u32::from(self.prefix), 32) as u32;
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = keep(u32::from(self.prefix), 128);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Networks allowed and denied. Empty `allow` admits every address; `deny` wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressFilter {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl AddressFilter {
    pub fn admits(&self, ip: IpAddr) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip)))
            && !self.deny.iter().any(|n| n.contains(ip))
    }
}

/// Why an invitation was refused; each is logged once in a row by the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The address is not allowed (or denied).
    Address,
    /// The listener has as many sessions as it may.
    Sessions,
    /// That host has as many sessions with the listener as it may.
    HostSessions,
    /// That host has too many invitations half done.
    HalfOpen,
    /// The peer's name is refused, or the endpoint takes no invitations.
    Policy,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_of_either_family() {
        assert!(net("192.168.1.0/24").contains(ip("192.168.1.77")));
        assert!(!net("192.168.1.0/24").contains(ip("192.168.2.1")));
        assert!(net("192.168.1.0/24").contains(ip("::ffff:192.168.1.5")));
        assert!(net("10.0.0.5").contains(ip("10.0.0.5")));
        assert!(!net("10.0.0.5").contains(ip("10.0.0.6")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("fe80::/10").contains(ip("fe80::1:2")));
        assert!(!net("fe80::/10").contains(ip("2001:db8::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert_eq!(net("::ffff:10.1.2.3/32"), net("10.1.2.3"));
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }

    #[test]
    fn bad_networks_are_refused() {
        assert_eq!("10.0.0.1/33".parse::<IpNet>(), Err(IpNetError::BadPrefix));
        assert_eq!("::1/129".parse::<IpNet>(), Err(IpNetError::BadPrefix));
        assert_eq!("10.0.0/8".parse::<IpNet>(), Err(IpNetError::BadAddress));
        assert_eq!("host/8".parse::<IpNet>(), Err(IpNetError::BadAddress));
        assert_eq!("10.0.0.1/x".parse::<IpNet>(), Err(IpNetError::BadPrefix));
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_all() {
        let open = AddressFilter::default();
        assert!(open.admits(ip("203.0.113.9")));
        let lan = AddressFilter {
            allow: vec![net("192.168.0.0/16")],
            deny: vec![net("192.168.9.0/24")],
        };
        assert!(lan.admits(ip("192.168.1.1")));
        assert!(!lan.admits(ip("192.168.9.1")));
        assert!(!lan.admits(ip("10.0.0.1")));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,48}") {
            let _ = text.parse::<IpNet>();
        }

        #[test]
        fn a_network_contains_its_own_address(a in proptest::array::uniform4(0u8..), p in 0u8..=32) {
            let n: IpNet = format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3]).parse().unwrap();
            proptest::prop_assert!(n.contains(IpAddr::from(a)));
        }
    }
}
