//! Sans-IO core of rtpmidid: RTP-MIDI wire formats (RFC 6295), the AppleMIDI session protocol,
//! the recovery journal, mDNS discovery and host name resolution.
//!
//! Nothing here touches a socket, a clock, a thread or the sound system: time comes in as an
//! [`time::Instant`] argument, randomness from a caller-given seed, and every state machine gives
//! back the datagrams it wants sent, the events it produced and its next deadline.
#![forbid(unsafe_code)]

pub mod admission;
pub mod endpoint;
pub mod hubtag;
pub mod journal;
pub mod mdns;
pub mod midi;
pub mod midi2;
pub mod outbox;
pub mod resolve;
pub mod rng;
pub mod session;
pub mod stream;
pub mod sysex;
pub mod time;
pub mod wire;
