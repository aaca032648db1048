//! How rtpmidid hubs recognise each other and tell which event is which, so a hub topology
//! with cycles delivers each event once and goes quiet when the senders stop.
//!
//! - A hub marks the SSRCs of its sessions: the low 16 bits are a function of the high 16
//!   ([`mark`], [`is_marked`]). Only sessions between two hubs carry tags, so other peers never
//!   see one (a random SSRC passes the check once in 65,536).
//! - Between hubs, each forwarded event is preceded in the same stream by a tag: a SysEx with
//!   the non-commercial ID 0x7D, `F0 7D 52 48 <origin: 5 bytes> <seq: 5 bytes> F7`, naming the
//!   hub where the event entered and its number there (32 bits each, 7 bits a byte).
//! - [`Seen`] remembers the events of each origin a hub has handled, so copies arriving over
//!   other paths are dropped.

/// The SysEx manufacturer ID for non-commercial use.
const NON_COMMERCIAL: u8 = 0x7D;
/// "RH": rtpmidid hub.
const MAGIC: [u8; 2] = [0x52, 0x48];
/// `F0 7D 52 48` + 5 + 5 + `F7`.
pub const TAG_LEN: usize = 15;
const SSRC_KEY: u16 = 0x6D1D;

/// SSRC with a hub's mark.
pub fn mark(ssrc: u32) -> u32 {
    let high = (ssrc >> 16) as u16;
    (ssrc & 0xFFFF_0000) | u32::from(check(high))
}

pub fn is_marked(ssrc: u32) -> bool {
    (ssrc & 0xFFFF) as u16 == check((ssrc >> 16) as u16)
}

fn check(high: u16) -> u16 {
    high.rotate_left(5).wrapping_mul(0x9E37) ^ SSRC_KEY
}

/// An event's identity: the hub it entered at and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub origin: u32,
    pub seq: u32,
}

impl Tag {
    /// The tag as a SysEx message (`F0 .. F7`).
    pub fn emit(&self) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out[..4].copy_from_slice(&[0xF0, NON_COMMERCIAL, MAGIC[0], MAGIC[1]]);
        put7(&mut out[4..9], self.origin);
        put7(&mut out[9..14], self.seq);
        out[14] = 0xF7;
        out
    }

    /// The tag in `sysex`, if it is one.
    pub fn parse(sysex: &[u8]) -> Option<Tag> {
        if sysex.len() != TAG_LEN
            || sysex[..4] != [0xF0, NON_COMMERCIAL, MAGIC[0], MAGIC[1]]
            || sysex[14] != 0xF7
        {
            return None;
        }
        Some(Tag {
            origin: get7(&sysex[4..9])?,
            seq: get7(&sysex[9..14])?,
        })
    }
}

/// `value` in 5 bytes of 7 bits, most significant first (the first holds the top 4 bits).
fn put7(out: &mut [u8], value: u32) {
    out[0] = (value >> 28) as u8;
    out[1] = ((value >> 21) & 0x7F) as u8;
    out[2] = ((value >> 14) & 0x7F) as u8;
    out[3] = ((value >> 7) & 0x7F) as u8;
    out[4] = (value & 0x7F) as u8;
}

fn get7(bytes: &[u8]) -> Option<u32> {
    if bytes.iter().any(|b| *b > 0x7F) || bytes[0] > 0x0F {
        return None;
    }
    Some(bytes.iter().fold(0u32, |v, b| (v << 7) | u32::from(*b)))
}

/// Origins remembered at most; the one heard from longest ago gives way.
const MAX_ORIGINS: usize = 64;
/// Events of an origin that may arrive out of order and still be recognised.
const WINDOW: u32 = 64;

/// The events a hub has handled, per origin: (origin, highest number, bitmap of the window
/// below it, when last heard from).
#[derive(Default)]
pub struct Seen {
    origins: Vec<(u32, u32, u64, u64)>,
    clock: u64,
}

impl Seen {
    /// True the first time `tag` is offered (the event is to be handled), false for a copy.
    /// Numbers far behind the newest of their origin count as copies.
    pub fn first(&mut self, tag: Tag) -> bool {
        self.clock += 1;
        let clock = self.clock;
        let entry = match self.origins.iter_mut().find(|o| o.0 == tag.origin) {
            Some(e) => e,
            None => {
                if self.origins.len() >= MAX_ORIGINS {
                    let oldest = (0..self.origins.len())
                        .min_by_key(|i| self.origins[*i].3)
                        .expect("full");
                    self.origins.swap_remove(oldest);
                }
                self.origins.push((tag.origin, tag.seq, 1, clock));
                return true;
            }
        };
        entry.3 = clock;
        let (highest, window) = (entry.1, entry.2);
        let ahead = tag.seq.wrapping_sub(highest);
        if ahead != 0 && ahead < u32::MAX / 2 {
            // Newer: the window slides up.
            entry.1 = tag.seq;
            entry.2 = if ahead >= WINDOW {
                1
            } else {
                (window << ahead) | 1
            };
            return true;
        }
        let behind = highest.wrapping_sub(tag.seq);
        if behind >= WINDOW || window & (1 << behind) != 0 {
            return false;
        }
        entry.2 |= 1 << behind;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_ssrcs_are_recognised_and_random_ones_rarely() {
        let mut rng = crate::rng::Rng::new(7);
        let mut false_marks = 0;
        for _ in 0..100_000 {
            let ssrc = rng.next_u32();
            assert!(is_marked(mark(ssrc)));
            assert_eq!(mark(ssrc) >> 16, ssrc >> 16);
            false_marks += usize::from(is_marked(ssrc));
        }
        assert!(false_marks < 10, "{false_marks}");
    }

    #[test]
    fn tags_round_trip_and_other_sysex_is_no_tag() {
        for (origin, seq) in [(0, 0), (1, 2), (u32::MAX, 0x8000_0001), (0x1234_5678, 77)] {
            let tag = Tag { origin, seq };
            let bytes = tag.emit();
            assert_eq!(bytes.len(), TAG_LEN);
            assert!(bytes[1..14].iter().all(|b| *b < 0x80), "{bytes:02X?}");
            assert_eq!(Tag::parse(&bytes), Some(tag));
        }
        assert_eq!(Tag::parse(&[0xF0, 0x7D, 0x52, 0x48, 0xF7]), None);
        let mut other = Tag { origin: 1, seq: 1 }.emit();
        other[2] = 0x00;
        assert_eq!(Tag::parse(&other), None);
        let mut high = Tag { origin: 1, seq: 1 }.emit();
        high[4] = 0x10;
        assert_eq!(Tag::parse(&high), None);
    }

    #[test]
    fn each_event_is_handled_once_in_any_order() {
        let mut seen = Seen::default();
        let t = |origin, seq| Tag { origin, seq };
        assert!(seen.first(t(1, 10)));
        assert!(!seen.first(t(1, 10)));
        assert!(seen.first(t(1, 12)));
        assert!(seen.first(t(1, 11)), "late but new");
        assert!(!seen.first(t(1, 11)));
        assert!(seen.first(t(2, 10)), "another origin");
        assert!(seen.first(t(1, 200)));
        assert!(!seen.first(t(1, 12)), "too far behind: taken for a copy");
        // Numbers wrap.
        assert!(seen.first(t(3, u32::MAX)));
        assert!(seen.first(t(3, 0)));
        assert!(!seen.first(t(3, u32::MAX)));
    }

    #[test]
    fn many_origins_evict_the_oldest() {
        let mut seen = Seen::default();
        for origin in 0..=MAX_ORIGINS as u32 {
            assert!(seen.first(Tag { origin, seq: 1 }));
        }
        assert_eq!(seen.origins.len(), MAX_ORIGINS);
        // Origin 0 was forgotten: its event counts as new again.
        assert!(seen.first(Tag { origin: 0, seq: 1 }));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(0u8.., 0..32)) {
            let _ = Tag::parse(&bytes);
        }
    }
}
