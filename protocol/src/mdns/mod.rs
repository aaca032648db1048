//! Multicast DNS (RFC 6762) and DNS-SD (RFC 6763) for `_apple-midi._udp`, sans-IO.
//!
//! - [`message`] and [`name`]: the DNS message codec with name compression.
//! - [`Responder`]: probes, announces and defends our service instances and host name, answers
//!   queries, says goodbye.
//! - [`Browser`]: finds `_apple-midi._udp` instances and resolves them to host, port and
//!   addresses.
//!
//! The daemon owns the sockets (UDP 5353, joined to 224.0.0.251 and ff02::fb on each
//! interface) and keeps one [`Responder`] and one [`Browser`] per interface, given that
//! interface's addresses. It feeds every datagram received on the interface (either family)
//! to `handle_datagram(now, from, bytes)` of both (or parses it once and gives both
//! `handle_message`), calls `handle_timeout(now)` when `poll_timeout()` is reached, and after
//! every input, or batch of datagrams, drains `poll_transmit()` and `poll_event()` (the
//! browser works out what a batch changed when its events are asked for):
//! [`Destination::Multicast`] goes to both groups of the interface (port 5353, sent from port
//! 5353: RFC 6762 §11 makes peers ignore anything else), [`Destination::Unicast`] to that
//! address. It tells the browser our own instance names
//! ([`Browser::set_own_instances`] with [`Responder::instance_names`]) after every responder
//! event.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod browser;
pub mod message;
pub mod name;
pub mod responder;

pub use browser::{Browser, BrowserEvent};
pub use message::{Message, Question, RData, Record, Type};
pub use name::Name;
pub use responder::{Responder, ResponderEvent, ServiceId};

/// The mDNS port (RFC 6762 §3).
pub const MDNS_PORT: u16 = 5353;
/// The IPv4 group (RFC 6762 §3).
pub const MDNS_IPV4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The IPv6 link-local group (RFC 6762 §3).
pub const MDNS_IPV6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
/// The service type this crate announces and browses (RFC 6763 §7).
pub const APPLE_MIDI_SERVICE: &str = "_apple-midi._udp.local";
/// Payload size we keep our messages under: an Ethernet MTU minus IPv6 and UDP headers
/// (RFC 6762 §17).
pub const MAX_PAYLOAD: usize = 1440;

/// Why a message or name did not parse, or a name could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Error {
    /// The message ends inside a field.
    Truncated,
    /// A label longer than 63 octets.
    LabelTooLong,
    /// A name longer than 255 octets.
    NameTooLong,
    /// An empty label inside a name (only on building one).
    EmptyLabel,
    /// A label type other than plain labels and pointers (RFC 6891 extended labels).
    BadLabelType,
    /// A compression pointer to the pointer itself or beyond it.
    ForwardPointer,
    /// A pointer back into the run of labels that contains it: it would loop.
    PointerLoop,
    /// A pointer past the end of the message.
    PointerOutOfRange,
    /// Record data that does not fit its type or its RDLENGTH.
    BadRdata,
    /// Octets after the last record.
    TrailingData,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// Where a datagram goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destination {
    /// To the mDNS group of the socket's family, port 5353.
    Multicast,
    /// To one address (QU replies, legacy unicast replies).
    Unicast(SocketAddr),
}

/// A datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    pub dst: Destination,
    pub payload: Vec<u8>,
}

/// `_apple-midi._udp.local`.
pub fn apple_midi_service() -> Name {
    Name::from_dotted(APPLE_MIDI_SERVICE).unwrap_or_default()
}

/// What a service we announce is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// An AppleMIDI session listener.
    AppleMidi,
    /// A Network MIDI 2.0 host with its UMP endpoint's product instance id.
    Midi2 { product_id: String },
}

/// Network MIDI 2.0 (UDP) hosts announce themselves under this type.
pub const MIDI2_SERVICE: &str = "_midi2._udp.local";

pub fn midi2_service() -> Name {
    Name::from_dotted(MIDI2_SERVICE).unwrap_or_default()
}

/// The TXT strings of a Network MIDI 2.0 host: its UMP endpoint name and product instance id,
/// under the keys amidi2net and Windows MIDI Services use.
pub fn midi2_txt(endpoint_name: &str, product_id: &str) -> Vec<Vec<u8>> {
    vec![
        format!("UMPEndpointName={endpoint_name}").into_bytes(),
        format!("ProductInstanceId={product_id}").into_bytes(),
    ]
}

#[cfg(test)]
mod tests;
