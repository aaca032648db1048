//! Host name resolution without blocking and without NSS, sans-IO: `/etc/hosts`, unicast DNS
//! to the `/etc/resolv.conf` nameservers, and one-shot mDNS queries for `.local` names.
//!
//! - [`hosts`]: the `/etc/hosts` parser and table.
//! - [`conf`]: the `/etc/resolv.conf` parser (nameservers, search list, `options`).
//! - [`Resolver`]: the lookup state machine.
//!
//! The shell owns one UDP socket (any port; [`Resolver::source_port_hint`] suggests one) and:
//! calls [`Resolver::resolve`] for a name; feeds every datagram the socket receives to
//! [`Resolver::handle_datagram`] (the source address as the kernel gave it, v4-mapped IPv6
//! shown as IPv4); calls [`Resolver::handle_timeout`] when [`Resolver::poll_timeout`] is
//! reached; and after every input drains [`Resolver::poll_transmit`] (a
//! [`Target::Nameserver`] datagram goes out of the socket, a [`Target::Mdns`] one to the mDNS
//! groups through the daemon's mDNS sockets) and [`Resolver::poll_event`]. mDNS responses the
//! daemon receives on UDP 5353 go to [`Resolver::handle_mdns_datagram`].
use std::net::{IpAddr, SocketAddr};

pub mod conf;
pub mod hosts;
mod resolver;

pub use conf::ResolvConf;
pub use hosts::Hosts;
pub use resolver::{Resolver, Stats, MAX_LOOKUPS};

/// One line a parser skipped, and why.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseErrorKind {
    /// Not an IP address where one is expected.
    BadAddress,
    /// An address without a name (`/etc/hosts`) or a keyword without its value.
    MissingValue,
    /// A name with an empty or over-long label, or an over-long name.
    BadName,
    /// An `options` value that is not a number.
    BadOption,
    /// More nameservers than are used ([`conf::MAX_NAMESERVERS`]).
    TooManyNameservers,
    /// More search domains than are used ([`conf::MAX_SEARCH`]).
    TooManySearchDomains,
    /// A keyword `/etc/resolv.conf` does not have.
    UnknownKeyword,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}: {:?}", self.line, self.kind)
    }
}

impl std::error::Error for ParseError {}

/// Names a lookup, from [`Resolver::resolve`] to its [`Event`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LookupId(pub u64);

/// Where a datagram from [`Resolver::poll_transmit`] goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    /// A nameserver, from the resolver's own socket.
    Nameserver(SocketAddr),
    /// Both mDNS groups, port 5353, on every interface mDNS uses (a one-shot query, RFC 6762
    /// §5.1; the answers are multicast and reach [`Resolver::handle_mdns_datagram`]).
    Mdns,
}

/// A datagram to send: its first `size` octets are in the buffer given to
/// [`Resolver::poll_transmit`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Transmit {
    pub dst: Target,
    pub size: usize,
}

/// Why a lookup failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// Not a host name (empty or over-long label, over-long name).
    BadName,
    /// The name does not exist or has no address (NXDOMAIN or no A/AAAA, every search name).
    NotFound,
    /// No nameserver answered in time (or no mDNS responder did).
    Timeout,
    /// The nameservers answered with errors (SERVFAIL, REFUSED, a truncated reply...).
    ServerFailure,
    /// No nameserver to ask.
    NoNameservers,
    /// Too many lookups in flight ([`MAX_LOOKUPS`]).
    Busy,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Failure::BadName => "not a host name",
            Failure::NotFound => "no such host",
            Failure::Timeout => "no answer from the nameservers",
            Failure::ServerFailure => "the nameservers failed",
            Failure::NoNameservers => "no nameserver configured",
            Failure::Busy => "too many lookups in flight",
        })
    }
}

/// A finished lookup.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// IPv4 addresses first, then IPv6, each in the order received.
    Resolved(LookupId, Vec<IpAddr>),
    Failed(LookupId, Failure),
}

impl Event {
    pub fn id(&self) -> LookupId {
        match self {
            Event::Resolved(id, _) | Event::Failed(id, _) => *id,
        }
    }
}

/// Lower-case text of a host name without its final dot, for comparisons and table keys.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Is `name` a usable host name: labels of 1-63 octets, 253 in all, only a final dot empty?
fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.bytes().any(|b| b <= b' ' || b == 0x7F))
}

#[cfg(test)]
mod tests;
