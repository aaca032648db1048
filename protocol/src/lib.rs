//! Sans-IO core of rtpmidid: RTP-MIDI wire formats (RFC 6295), the AppleMIDI session protocol,
//! the recovery journal, mDNS discovery and host name resolution.
//!
//! Nothing here touches a socket, a clock, a thread or the sound system: time comes in as an
//! [`time::Instant`] argument, randomness from a caller-given seed, and every state machine gives
//! back the datagrams it wants sent, the events it produced and its next deadline.
//!
//! # Example
//!
//! Two participants in memory: Alice invites Bob, and once the session is up sends him a note.
//! An [`endpoint::Endpoint`] holds the sessions of one pair of ports (control, and data one
//! above); the caller moves datagrams between sockets and the endpoint, here from one endpoint
//! straight to the other. `examples/send_note.rs` does the same over real UDP sockets.
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use protocol::endpoint::{AcceptPolicy, Endpoint};
//! use protocol::midi::{status, MidiMessage, ShortMessage};
//! use protocol::session::{Config, Event, SocketKind};
//! use protocol::time::{Duration, Instant};
//!
//! let alice_at: SocketAddr = "192.0.2.1:5004".parse().unwrap();
//! let bob_at: SocketAddr = "192.0.2.2:5004".parse().unwrap();
//! let config = |name: &str| Config {
//!     name: name.into(),
//!     ..Config::default()
//! };
//! let mut alice = Endpoint::new(config("Alice"), AcceptPolicy::default(), 1);
//! let mut bob = Endpoint::new(config("Bob"), AcceptPolicy::default(), 2);
//!
//! let mut now = Instant::ZERO;
//! let to_bob = alice.connect(now, bob_at);
//! let note = ShortMessage::channel(status::NOTE_ON, 0, 60, 100);
//! let mut heard = None;
//! while heard.is_none() && now < Instant::ZERO + Duration::from_secs(5) {
//!     deliver(&mut alice, alice_at, &mut bob, bob_at, now);
//!     deliver(&mut bob, bob_at, &mut alice, alice_at, now);
//!     while let Some((id, event)) = alice.poll_event() {
//!         if let Event::Connected { name, .. } = event {
//!             assert_eq!((id, name.as_str()), (to_bob, "Bob"));
//!             alice.session_mut(id).unwrap().send_short(now, note);
//!         }
//!     }
//!     while let Some((_, event)) = bob.poll_event() {
//!         if let Event::Midi(midi) = event {
//!             heard = Some(midi.message);
//!         }
//!     }
//!     now += Duration::from_millis(1);
//!     alice.handle_timeout(now);
//!     bob.handle_timeout(now);
//! }
//! assert_eq!(heard, Some(MidiMessage::Short(note)));
//!
//! /// Hands every datagram `from` wants sent to `to`, as the network would.
//! fn deliver(
//!     from: &mut Endpoint,
//!     from_at: SocketAddr,
//!     to: &mut Endpoint,
//!     to_at: SocketAddr,
//!     now: Instant,
//! ) {
//!     let mut buf = [0; 1500];
//!     while let Some(t) = from.poll_transmit(now, &mut buf) {
//!         let port_of = |at: SocketAddr, port| match port {
//!             SocketKind::Control => at,
//!             SocketKind::Data => SocketAddr::new(at.ip(), at.port() + 1),
//!         };
//!         let arrives_on = if t.dst == to_at { SocketKind::Control } else { SocketKind::Data };
//!         // A datagram no session takes is counted by the endpoint; nothing to do here.
//!         let _ = to.handle_datagram(now, arrives_on, port_of(from_at, t.port), &buf[..t.len]);
//!     }
//! }
//! ```
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
