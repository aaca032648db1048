//! RTP fixed header (RFC 3550 §5.1) as RTP-MIDI uses it (RFC 6295 §2.1), and extension of the
//! 16-bit sequence number across wraparound (RFC 3550 Appendix A.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |                             SSRC                              |
//! |            CSRC list (CC x 32 bits), then the extension       |
//! ```
//!
//! Parse accepts padding, CSRCs and a header extension and hands back only the payload; emit
//! writes none of them (RTP-MIDI senders do not use them).

/// RTP version (RFC 3550 §5.1).
pub const VERSION: u8 = 2;

/// The payload type AppleMIDI sessions use. RTP-MIDI has no static type (RFC 6295 binds a
/// dynamic one through the session description); Apple's session protocol fixes 97.
pub const PAYLOAD_TYPE_MIDI: u8 = 97;

/// Octets of the fixed header.
pub const HEADER_LEN: usize = 12;

/// Octet offsets and masks.
mod field {
    use core::ops::Range;

    pub const FLAGS: usize = 0;
    pub const VERSION_SHIFT: u8 = 6;
    pub const PADDING_BIT: u8 = 0x20;
    pub const EXTENSION_BIT: u8 = 0x10;
    pub const CSRC_COUNT_MASK: u8 = 0x0F;

    pub const MARKER_PT: usize = 1;
    pub const MARKER_BIT: u8 = 0x80;
    pub const PT_MASK: u8 = 0x7F;

    pub const SEQUENCE: Range<usize> = 2..4;
    pub const TIMESTAMP: Range<usize> = 4..8;
    pub const SSRC: Range<usize> = 8..12;

    pub const CSRC_LEN: usize = 4;
    /// Header extension (§5.3.1): 16-bit profile data, 16-bit length in 32-bit words.
    pub const EXTENSION_HEADER_LEN: usize = 4;
    pub const EXTENSION_LENGTH: Range<usize> = 2..4;
}

/// Why a datagram is not an RTP packet, or a header cannot be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the fixed header, the CSRC list or the header extension it announces.
    Truncated,
    /// Version field not 2.
    BadVersion(u8),
    /// P bit set but the padding count is zero or longer than what follows the headers.
    BadPadding,
    /// On emit: a payload type above 127.
    BadPayloadType(u8),
    /// On emit: the buffer is shorter than needed.
    BufferTooSmall,
}

/// The fixed-header fields a receiver acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Accepted either way; RTP-MIDI gives it no meaning we rely on (RFC 6295 §2.1), and
    /// Windows rtpMIDI wants it clear.
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// A parsed packet: the header and the payload without CSRCs, extension or padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Header {
    /// Writes the 12-octet fixed header (version 2, no padding, extension or CSRC) at the start
    /// of `buf`, for callers that build the payload in place after it.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.payload_type > field::PT_MASK {
            return Err(Error::BadPayloadType(self.payload_type));
        }
        let buf = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        buf[field::FLAGS] = VERSION << field::VERSION_SHIFT;
        buf[field::MARKER_PT] = self.payload_type | if self.marker { field::MARKER_BIT } else { 0 };
        buf[field::SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        buf[field::TIMESTAMP].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[field::SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

impl<'a> Packet<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let flags = bytes[field::FLAGS];
        let version = flags >> field::VERSION_SHIFT;
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let header = Header {
            marker: bytes[field::MARKER_PT] & field::MARKER_BIT != 0,
            payload_type: bytes[field::MARKER_PT] & field::PT_MASK,
            sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
            timestamp: be_u32(&bytes[field::TIMESTAMP]),
            ssrc: be_u32(&bytes[field::SSRC]),
        };

        let csrc_count = usize::from(flags & field::CSRC_COUNT_MASK);
        let mut start = HEADER_LEN + csrc_count * field::CSRC_LEN;
        if flags & field::EXTENSION_BIT != 0 {
            // §5.3.1: the length counts 32-bit words after the 4-octet extension header.
            let ext = bytes
                .get(start..start + field::EXTENSION_HEADER_LEN)
                .ok_or(Error::Truncated)?;
            let words = usize::from(u16::from_be_bytes([
                ext[field::EXTENSION_LENGTH.start],
                ext[field::EXTENSION_LENGTH.start + 1],
            ]));
            start += field::EXTENSION_HEADER_LEN + 4 * words;
        }
        let body = bytes.get(start..).ok_or(Error::Truncated)?;

        let payload = if flags & field::PADDING_BIT != 0 {
            // §5.1: the last octet counts the padding octets, itself included.
            let pad = usize::from(*body.last().ok_or(Error::BadPadding)?);
            if pad == 0 || pad > body.len() {
                return Err(Error::BadPadding);
            }
            &body[..body.len() - pad]
        } else {
            body
        };
        Ok(Packet { header, payload })
    }

    /// Octets [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the fixed header and the payload; returns the octets written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        self.header.emit(buf)?;
        buf[HEADER_LEN..].copy_from_slice(self.payload);
        Ok(len)
    }
}

/// Extends 16-bit sequence numbers to 64 bits: each number becomes the candidate nearest the
/// highest extended number seen so far (RFC 3550 Appendix A.1 counts cycles the same way).
///
/// The first number maps to `65536 + seq`, so packets reordered before it still get smaller
/// numbers; the low 16 bits of a result always equal the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    pub fn new() -> Self {
        SeqExtender::default()
    }

    /// The extended number for `seq`; moves the highest seen forward when it is newer.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            None => (1 << 16) | u64::from(seq),
            Some(highest) => {
                // Signed distance in 16-bit space, -32768..=32767 from the highest.
                let delta = seq.wrapping_sub(highest as u16) as i16;
                highest.saturating_add_signed(i64::from(delta))
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// The highest extended number seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An RTP-MIDI packet laid out as in RFC 6295 §2.1 Figure 1 (V=2, PT=97, no CSRC) with the
    /// one-octet command-section header of §3 and a note-on, without journal (J=0).
    const RTP_MIDI_NOTE_ON: [u8; 16] = [
        0x80, 0x61, 0x4A, 0x2F, // V=2 P=0 X=0 CC=0, M=0 PT=97, sequence 0x4A2F
        0x00, 0x0B, 0x71, 0xB0, // timestamp
        0x5E, 0x1F, 0xC3, 0x01, // SSRC
        0x03, 0x90, 0x3C, 0x64, // command section: LEN=3, note on C4 velocity 100
    ];

    fn note_on_header() -> Header {
        Header {
            marker: false,
            payload_type: PAYLOAD_TYPE_MIDI,
            sequence: 0x4A2F,
            timestamp: 0x000B_71B0,
            ssrc: 0x5E1F_C301,
        }
    }

    #[test]
    fn rtp_midi_packet() {
        let packet = Packet::parse(&RTP_MIDI_NOTE_ON).unwrap();
        assert_eq!(packet.header, note_on_header());
        assert_eq!(packet.payload, &[0x03, 0x90, 0x3C, 0x64]);
        let mut buf = [0; 16];
        assert_eq!(packet.emit(&mut buf), Ok(16));
        assert_eq!(buf, RTP_MIDI_NOTE_ON);
    }

    #[test]
    fn marker_either_way() {
        let mut bytes = RTP_MIDI_NOTE_ON;
        bytes[1] = 0xE1; // M=1, PT=97
        let packet = Packet::parse(&bytes).unwrap();
        assert!(packet.header.marker);
        assert_eq!(packet.header.payload_type, 97);
        let mut buf = [0; 16];
        packet.emit(&mut buf).unwrap();
        assert_eq!(buf, bytes);
    }

    #[test]
    fn other_payload_type_left_to_caller() {
        let mut bytes = RTP_MIDI_NOTE_ON;
        bytes[1] = 0x60;
        assert_eq!(Packet::parse(&bytes).unwrap().header.payload_type, 96);
        let header = Header {
            payload_type: 128,
            ..note_on_header()
        };
        assert_eq!(header.emit(&mut [0; 12]), Err(Error::BadPayloadType(128)));
    }

    #[test]
    fn csrcs_extension_and_padding_skipped() {
        // CC=2, X=1 with a one-word extension, P=1 with 3 padding octets (RFC 3550 §5.1, §5.3.1).
        let mut bytes = vec![0xB2, 0x61, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // CSRCs
        bytes.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension
        bytes.extend_from_slice(&[0x02, 0xF8, 0xFA]); // payload
        bytes.extend_from_slice(&[0, 0, 3]); // padding
        let packet = Packet::parse(&bytes).unwrap();
        assert_eq!(packet.payload, &[0x02, 0xF8, 0xFA]);
        assert_eq!(packet.header.sequence, 1);
        assert_eq!(packet.header.ssrc, 3);
    }

    #[test]
    fn bad_padding() {
        let mut bytes = RTP_MIDI_NOTE_ON;
        bytes[0] |= 0x20;
        bytes[15] = 0;
        assert_eq!(Packet::parse(&bytes), Err(Error::BadPadding));
        bytes[15] = 5; // longer than the 4-octet body
        assert_eq!(Packet::parse(&bytes), Err(Error::BadPadding));
        bytes[15] = 4; // the whole body is padding: empty payload
        assert_eq!(Packet::parse(&bytes).unwrap().payload, &[] as &[u8]);
        assert_eq!(
            Packet::parse(&bytes[..12]),
            Err(Error::BadPadding),
            "P set, no octet to count"
        );
    }

    #[test]
    fn bad_version() {
        let mut bytes = RTP_MIDI_NOTE_ON;
        bytes[0] = 0x40;
        assert_eq!(Packet::parse(&bytes), Err(Error::BadVersion(1)));
        assert_eq!(
            Packet::parse(&[0xFF, 0xFF, b'C', b'K', 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadVersion(3)),
            "AppleMIDI never looks like RTP"
        );
    }

    #[test]
    fn truncated_at_every_field() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::parse(&RTP_MIDI_NOTE_ON[..len]),
                Err(Error::Truncated)
            );
        }
        assert_eq!(
            Packet::parse(&RTP_MIDI_NOTE_ON[..12])
                .unwrap()
                .payload
                .len(),
            0
        );
        // CC=1 announces a CSRC that is missing or short.
        let mut cc = RTP_MIDI_NOTE_ON[..12].to_vec();
        cc[0] |= 1;
        for extra in 0..4 {
            let mut b = cc.clone();
            b.extend(core::iter::repeat_n(0, extra));
            assert_eq!(Packet::parse(&b), Err(Error::Truncated), "csrc +{extra}");
        }
        // X=1: the extension header, then its announced words, cut short.
        let mut x = RTP_MIDI_NOTE_ON[..12].to_vec();
        x[0] |= 0x10;
        x.extend_from_slice(&[0xBE, 0xDE, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        for len in 12..x.len() {
            assert_eq!(Packet::parse(&x[..len]), Err(Error::Truncated), "ext {len}");
        }
        assert!(Packet::parse(&x).is_ok());
    }

    #[test]
    fn emit_needs_room() {
        let packet = Packet::parse(&RTP_MIDI_NOTE_ON).unwrap();
        assert_eq!(packet.emit(&mut [0; 15]), Err(Error::BufferTooSmall));
        assert_eq!(
            note_on_header().emit(&mut [0; 11]),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn seq_extension_at_the_wrap() {
        let mut ext = SeqExtender::new();
        let base = ext.extend(0xFFFD);
        assert_eq!(base & 0xFFFF, 0xFFFD);
        assert_eq!(ext.extend(0xFFFE), base + 1);
        assert_eq!(ext.extend(0x0001), base + 4, "lost 0xFFFF and 0x0000");
        assert_eq!(
            ext.extend(0x0000),
            base + 3,
            "late packet from after the wrap"
        );
        assert_eq!(
            ext.extend(0xFFFF),
            base + 2,
            "late packet from before the wrap"
        );
        assert_eq!(ext.highest(), Some(base + 4));
        assert_eq!(ext.extend(0x0001), base + 4, "duplicate");
        assert_eq!(ext.extend(0x0002), base + 5);
    }

    #[test]
    fn seq_extension_reordered_before_first() {
        let mut ext = SeqExtender::new();
        let first = ext.extend(2);
        assert_eq!(ext.extend(0xFFFF), first - 3);
        assert_eq!(ext.highest(), Some(first));
    }

    #[test]
    fn seq_extension_many_cycles() {
        let mut ext = SeqExtender::new();
        let first = ext.extend(100);
        let mut seq = 100u16;
        for i in 1..=300_000u64 {
            seq = seq.wrapping_add(1);
            assert_eq!(ext.extend(seq), first + i);
        }
        // A jump of half the space forward still counts as forward.
        let before = ext.highest().unwrap();
        assert_eq!(ext.extend(seq.wrapping_add(32767)), before + 32767);
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(
            marker in any::<bool>(),
            payload_type in 0u8..128,
            sequence in any::<u16>(),
            timestamp in any::<u32>(),
            ssrc in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let packet = Packet {
                header: Header { marker, payload_type, sequence, timestamp, ssrc },
                payload: &payload,
            };
            let mut buf = vec![0; packet.buffer_len()];
            prop_assert_eq!(packet.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(Packet::parse(&buf), Ok(packet));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn extension_tracks_steps_within_half_the_space(
            start in any::<u16>(),
            steps in proptest::collection::vec(-1000i32..1000, 1..50),
        ) {
            let mut ext = SeqExtender::new();
            let mut expected = ext.extend(start) as i64;
            for step in steps {
                // Each step stays within 32767 of the highest, so the answer is unambiguous.
                let highest = ext.highest().unwrap() as i64;
                let target = (expected + i64::from(step)).clamp(highest - 30_000, highest + 30_000);
                let got = ext.extend(target as u16);
                prop_assert_eq!(got as i64, target);
                expected = target;
            }
        }
    }
}
