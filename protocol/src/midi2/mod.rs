//! Network MIDI 2.0 (UDP) transport, MIDI Association M2-124-UM v1.0, sans-IO like the
//! AppleMIDI [`crate::session`]: datagrams and time come in as arguments, datagrams to send,
//! events and the next deadline go out.
//!
//! - [`wire`]: the datagram and its command packets.
//! - [`auth`]: the SHA-256 digests of the two authentication methods.
//! - [`session`]: one session with one peer, as client or host.
//! - [`endpoint`]: a host's sessions on one socket, by peer address.
//! - [`ump`]: Universal MIDI Packets to and from MIDI 1.0, and the UMP stream messages a
//!   UMP endpoint answers.
//!
//! Details the PDF (members only) decides were read side by side in public implementations:
//! amidi2net (ALSA's maintainer), Zephyr's `subsys/net/lib/midi2` and Windows MIDI Services'
//! UDP transport; where they differ the choice is said where it is made (the NAK code, 0x8F
//! for Zephyr and Windows, 0x7F for amidi2net, is one). Section numbers (§) are cited only where
//! those implementations cite them too.
pub mod auth;
pub mod endpoint;
pub mod session;
pub mod ump;
pub mod wire;
