//! AppleMIDI session commands: IN, OK, NO, BY, CK and RS.
//!
//! Apple published no RFC for this protocol; the layouts are the ones macOS, iOS, Windows
//! rtpMIDI, the Arduino AppleMIDI library and Wireshark's `applemidi` dissector agree on. Every
//! packet starts with the signature `FF FF` and two ASCII letters; all integers are big-endian.
//!
//! ```text
//! IN/OK/NO  FF FF 'I' 'N' | version u32 (=2) | initiator token u32 | SSRC u32 | name, NUL-ended
//! BY        FF FF 'B' 'Y' | version u32 (=2) | initiator token u32 | SSRC u32
//! CK        FF FF 'C' 'K' | SSRC u32 | count u8 | 3 padding | ts1 u64 | ts2 u64 | ts3 u64
//! RS        FF FF 'R' 'S' | SSRC u32 | sequence u16 | 2 padding
//! ```
//!
//! Decisions on input, all in the direction of keeping a session up:
//! - The name is optional on IN, OK and NO alike (`None` when the packet ends after the SSRC).
//!   A missing final NUL is tolerated; bytes after the NUL are ignored.
//! - A name that is not valid UTF-8 is cut at its first invalid sequence (a peer with an odd
//!   name still gets its session; nothing is allocated).
//! - RS: Wireshark reads the sequence as the top half of a 32-bit field and Arduino sends a
//!   `u16` plus two padding octets: the same 12 octets. The padding is not required on input.
//! - Padding octets are ignored on input and zero on output.

/// First two octets of every session command; an RTP version-2 packet can never start so.
pub const SIGNATURE: [u8; 2] = [0xFF, 0xFF];

/// The only protocol version in use (IN, OK, NO, BY).
pub const PROTOCOL_VERSION: u32 = 2;

/// The two command letters.
pub mod code {
    pub const INVITATION: [u8; 2] = *b"IN";
    pub const ACCEPT: [u8; 2] = *b"OK";
    pub const REJECT: [u8; 2] = *b"NO";
    pub const END: [u8; 2] = *b"BY";
    pub const CLOCK: [u8; 2] = *b"CK";
    pub const FEEDBACK: [u8; 2] = *b"RS";
}

/// Octet offsets of each field.
mod field {
    use core::ops::{Range, RangeFrom};

    pub const SIGNATURE: Range<usize> = 0..2;
    pub const COMMAND: Range<usize> = 2..4;

    // IN, OK, NO, BY
    pub const VERSION: Range<usize> = 4..8;
    pub const TOKEN: Range<usize> = 8..12;
    pub const SSRC: Range<usize> = 12..16;
    pub const NAME: RangeFrom<usize> = 16..;

    // CK and RS
    pub const SENDER_SSRC: Range<usize> = 4..8;

    // CK
    pub const COUNT: usize = 8;
    pub const TIMESTAMPS: usize = 12;
    pub const CLOCK_END: usize = TIMESTAMPS + 3 * 8;

    // RS
    pub const SEQUENCE: Range<usize> = 8..10;
    pub const FEEDBACK_END: usize = 12;
}

/// Why a datagram is not a session command, or a command cannot be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The datagram ends before the command's last required field.
    Truncated,
    /// The first two octets are not `FF FF`.
    BadSignature,
    /// Signature fine, command letters unknown (Apple also has `RL`, bitrate limit).
    UnknownCommand([u8; 2]),
    /// IN, OK, NO or BY with a protocol version other than 2.
    BadVersion(u32),
    /// CK with a count outside 0..=2.
    BadClockCount(u8),
    /// On emit: a name containing NUL, which the receiver would cut there.
    BadName,
    /// On emit: the buffer is shorter than [`Command::buffer_len`].
    BufferTooSmall,
}

/// IN, OK and NO share this body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invitation<'a> {
    pub token: u32,
    pub ssrc: u32,
    pub name: Option<&'a str>,
}

/// BY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    pub token: u32,
    pub ssrc: u32,
}

/// CK: `count` 0 carries ts1, 1 adds ts2, 2 adds ts3 (100 µs units). All three are on the wire
/// whatever the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub ssrc: u32,
    pub count: u8,
    pub timestamps: [u64; 3],
}

/// RS: the newest RTP sequence number the receiver `ssrc` has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feedback {
    pub ssrc: u32,
    pub seq: u16,
}

/// One session command. The protocol version is not kept: parse accepts only 2, emit writes 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Invitation(Invitation<'a>),
    Accept(Invitation<'a>),
    Reject(Invitation<'a>),
    End(End),
    Clock(Clock),
    Feedback(Feedback),
}

/// True when `datagram` carries a session command rather than RTP (data-port demux).
pub fn is_applemidi(datagram: &[u8]) -> bool {
    datagram.get(field::SIGNATURE) == Some(&SIGNATURE[..])
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, Error> {
    let b = bytes.get(at..at + 4).ok_or(Error::Truncated)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(bytes: &[u8], at: usize) -> Result<u64, Error> {
    let hi = be_u32(bytes, at)?;
    let lo = be_u32(bytes, at + 4)?;
    Ok((u64::from(hi) << 32) | u64::from(lo))
}

/// The name field: up to the first NUL or the end; invalid UTF-8 cut at the first bad octet.
fn parse_name(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() {
        return None;
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let raw = &bytes[..end];
    Some(match core::str::from_utf8(raw) {
        Ok(s) => s,
        // `valid_up_to` marks a char boundary, so this second conversion cannot fail.
        Err(e) => core::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or_default(),
    })
}

impl<'a> Invitation<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let version = be_u32(bytes, field::VERSION.start)?;
        if version != PROTOCOL_VERSION {
            return Err(Error::BadVersion(version));
        }
        Ok(Invitation {
            token: be_u32(bytes, field::TOKEN.start)?,
            ssrc: be_u32(bytes, field::SSRC.start)?,
            name: parse_name(bytes.get(field::NAME).unwrap_or_default()),
        })
    }

    fn buffer_len(&self) -> usize {
        field::NAME.start + self.name.map_or(0, |n| n.len() + 1)
    }

    fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        buf[field::VERSION].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        buf[field::TOKEN].copy_from_slice(&self.token.to_be_bytes());
        buf[field::SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
        if let Some(name) = self.name {
            if name.contains('\0') {
                return Err(Error::BadName);
            }
            let end = field::NAME.start + name.len();
            buf[field::NAME.start..end].copy_from_slice(name.as_bytes());
            buf[end] = 0;
        }
        Ok(())
    }
}

impl End {
    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let version = be_u32(bytes, field::VERSION.start)?;
        if version != PROTOCOL_VERSION {
            return Err(Error::BadVersion(version));
        }
        Ok(End {
            token: be_u32(bytes, field::TOKEN.start)?,
            ssrc: be_u32(bytes, field::SSRC.start)?,
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        buf[field::VERSION].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        buf[field::TOKEN].copy_from_slice(&self.token.to_be_bytes());
        buf[field::SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

impl Clock {
    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        // Every field, timestamps included, must be there: all peers send the full 36 octets.
        if bytes.len() < field::CLOCK_END {
            return Err(Error::Truncated);
        }
        let count = bytes[field::COUNT];
        if count > 2 {
            return Err(Error::BadClockCount(count));
        }
        let mut timestamps = [0; 3];
        for (i, ts) in timestamps.iter_mut().enumerate() {
            *ts = be_u64(bytes, field::TIMESTAMPS + 8 * i)?;
        }
        Ok(Clock {
            ssrc: be_u32(bytes, field::SENDER_SSRC.start)?,
            count,
            timestamps,
        })
    }

    fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        if self.count > 2 {
            return Err(Error::BadClockCount(self.count));
        }
        buf[field::SENDER_SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[field::COUNT] = self.count;
        buf[field::COUNT + 1..field::TIMESTAMPS].fill(0);
        for (i, ts) in self.timestamps.iter().enumerate() {
            let at = field::TIMESTAMPS + 8 * i;
            buf[at..at + 8].copy_from_slice(&ts.to_be_bytes());
        }
        Ok(())
    }
}

impl Feedback {
    /// Apple's layout is a 16-bit sequence number and 16 bits of padding; the C++ rtpmidid
    /// writes the number as 32 bits (its counter is 16 bits, so the high half is 0). Non-zero
    /// "padding" under a zero first half is read that way.
    fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let seq = bytes.get(field::SEQUENCE).ok_or(Error::Truncated)?;
        let high = u16::from_be_bytes([seq[0], seq[1]]);
        let low = match bytes.get(field::SEQUENCE.end..field::FEEDBACK_END) {
            Some(low) => u16::from_be_bytes([low[0], low[1]]),
            None => 0,
        };
        Ok(Feedback {
            ssrc: be_u32(bytes, field::SENDER_SSRC.start)?,
            seq: if high == 0 { low } else { high },
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        buf[field::SENDER_SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[field::SEQUENCE].copy_from_slice(&self.seq.to_be_bytes());
        buf[field::SEQUENCE.end..field::FEEDBACK_END].fill(0);
    }
}

impl<'a> Command<'a> {
    /// Parses one datagram. The name borrows from `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let signature = bytes.get(field::SIGNATURE).ok_or(Error::Truncated)?;
        if signature != SIGNATURE {
            return Err(Error::BadSignature);
        }
        let command = bytes.get(field::COMMAND).ok_or(Error::Truncated)?;
        let command = [command[0], command[1]];
        match command {
            code::INVITATION => Invitation::parse(bytes).map(Command::Invitation),
            code::ACCEPT => Invitation::parse(bytes).map(Command::Accept),
            code::REJECT => Invitation::parse(bytes).map(Command::Reject),
            code::END => End::parse(bytes).map(Command::End),
            code::CLOCK => Clock::parse(bytes).map(Command::Clock),
            code::FEEDBACK => Feedback::parse(bytes).map(Command::Feedback),
            other => Err(Error::UnknownCommand(other)),
        }
    }

    /// The two command letters.
    pub fn code(&self) -> [u8; 2] {
        match self {
            Command::Invitation(_) => code::INVITATION,
            Command::Accept(_) => code::ACCEPT,
            Command::Reject(_) => code::REJECT,
            Command::End(_) => code::END,
            Command::Clock(_) => code::CLOCK,
            Command::Feedback(_) => code::FEEDBACK,
        }
    }

    /// The sender's SSRC, which every command carries (for routing to a session).
    pub fn ssrc(&self) -> u32 {
        match self {
            Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => i.ssrc,
            Command::End(e) => e.ssrc,
            Command::Clock(c) => c.ssrc,
            Command::Feedback(f) => f.ssrc,
        }
    }

    /// Octets [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => i.buffer_len(),
            Command::End(_) => field::SSRC.end,
            Command::Clock(_) => field::CLOCK_END,
            Command::Feedback(_) => field::FEEDBACK_END,
        }
    }

    /// Writes the command at the start of `buf`; returns the octets written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        buf[field::SIGNATURE].copy_from_slice(&SIGNATURE);
        buf[field::COMMAND].copy_from_slice(&self.code());
        match self {
            Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => i.emit(buf)?,
            Command::End(e) => e.emit(buf),
            Command::Clock(c) => c.emit(buf)?,
            Command::Feedback(f) => f.emit(buf),
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IN as macOS sends it: version 2, token, SSRC, name "Mac" with its NUL (the layout in
    /// Wireshark's applemidi dissector and Apple's Network MIDI session description).
    const IN_MAC: [u8; 20] = [
        0xFF, 0xFF, b'I', b'N', // signature, command
        0x00, 0x00, 0x00, 0x02, // version
        0xF8, 0xD1, 0x8B, 0x04, // initiator token
        0x1C, 0x84, 0x73, 0x7A, // SSRC
        b'M', b'a', b'c', 0x00, // name
    ];

    fn roundtrip(cmd: Command<'_>) -> Vec<u8> {
        let mut buf = vec![0xAA; cmd.buffer_len()];
        assert_eq!(cmd.emit(&mut buf), Ok(buf.len()));
        assert_eq!(Command::parse(&buf), Ok(cmd));
        buf
    }

    #[test]
    fn invitation_from_macos() {
        let inv = Invitation {
            token: 0xF8D1_8B04,
            ssrc: 0x1C84_737A,
            name: Some("Mac"),
        };
        assert_eq!(Command::parse(&IN_MAC), Ok(Command::Invitation(inv)));
        assert_eq!(roundtrip(Command::Invitation(inv)), IN_MAC);
        assert!(is_applemidi(&IN_MAC));
    }

    #[test]
    fn accept_and_reject_codes() {
        let inv = Invitation {
            token: 1,
            ssrc: 2,
            name: Some("rtpmidid"),
        };
        let ok = roundtrip(Command::Accept(inv));
        assert_eq!(&ok[..4], b"\xFF\xFFOK");
        let no = roundtrip(Command::Reject(Invitation { name: None, ..inv }));
        assert_eq!(
            no,
            [0xFF, 0xFF, b'N', b'O', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]
        );
        assert_eq!(
            Command::parse(&no).map(|c| c.ssrc()),
            Ok(2),
            "NO without a name parses"
        );
    }

    #[test]
    fn name_without_nul_or_with_trailing_bytes() {
        assert_eq!(
            Command::parse(&IN_MAC[..19]),
            Command::parse(&IN_MAC),
            "missing NUL at the end of the datagram"
        );
        let mut long = IN_MAC.to_vec();
        long.extend_from_slice(b"junk");
        assert_eq!(Command::parse(&long), Command::parse(&IN_MAC));
        // Only the NUL: an empty name, which emits the same single NUL.
        let mut nul_only = IN_MAC[..16].to_vec();
        nul_only.push(0);
        let cmd = Command::parse(&nul_only).unwrap();
        assert_eq!(
            cmd,
            Command::Invitation(Invitation {
                token: 0xF8D1_8B04,
                ssrc: 0x1C84_737A,
                name: Some("")
            })
        );
        assert_eq!(roundtrip(cmd), nul_only);
    }

    #[test]
    fn invalid_utf8_name_is_cut() {
        let mut bytes = IN_MAC[..16].to_vec();
        bytes.extend_from_slice(&[b'A', b'b', 0xE9, b'c', 0]); // Latin-1 "Abéc"
        match Command::parse(&bytes) {
            Ok(Command::Invitation(i)) => assert_eq!(i.name, Some("Ab")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn name_with_nul_is_not_emitted() {
        let cmd = Command::Invitation(Invitation {
            token: 1,
            ssrc: 2,
            name: Some("a\0b"),
        });
        let mut buf = [0; 64];
        assert_eq!(cmd.emit(&mut buf), Err(Error::BadName));
    }

    #[test]
    fn end_session() {
        // BY as rtpMIDI and macOS send it: version, the session's token, sender SSRC.
        let by = [
            0xFF, 0xFF, b'B', b'Y', 0, 0, 0, 2, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0,
        ];
        let cmd = Command::End(End {
            token: 0x1234_5678,
            ssrc: 0x9ABC_DEF0,
        });
        assert_eq!(Command::parse(&by), Ok(cmd));
        assert_eq!(roundtrip(cmd), by);
    }

    fn ck(count: u8, ts: [u64; 3]) -> Vec<u8> {
        let mut v = vec![
            0xFF, 0xFF, b'C', b'K', 0x1C, 0x84, 0x73, 0x7A, count, 0, 0, 0,
        ];
        for t in ts {
            v.extend_from_slice(&t.to_be_bytes());
        }
        v
    }

    #[test]
    fn clock_exchange_triple() {
        // CK0 from the initiator, CK1 from the responder, CK2 back: the 36-octet layout.
        let (t1, t2, t3) = (
            0x0000_0000_0C3A_8F10,
            0x0000_0012_3456_789A,
            0x0000_0000_0C3A_8F4E,
        );
        for (count, ts) in [(0, [t1, 0, 0]), (1, [t1, t2, 0]), (2, [t1, t2, t3])] {
            let bytes = ck(count, ts);
            assert_eq!(bytes.len(), 36);
            let cmd = Command::Clock(Clock {
                ssrc: 0x1C84_737A,
                count,
                timestamps: ts,
            });
            assert_eq!(Command::parse(&bytes), Ok(cmd));
            assert_eq!(roundtrip(cmd), bytes);
        }
        assert_eq!(Command::parse(&ck(3, [0; 3])), Err(Error::BadClockCount(3)));
        let bad = Command::Clock(Clock {
            ssrc: 0,
            count: 7,
            timestamps: [0; 3],
        });
        assert_eq!(bad.emit(&mut [0; 36]), Err(Error::BadClockCount(7)));
    }

    #[test]
    fn clock_padding_ignored() {
        let mut bytes = ck(1, [5, 6, 0]);
        bytes[9..12].copy_from_slice(&[1, 2, 3]);
        assert!(matches!(Command::parse(&bytes), Ok(Command::Clock(c)) if c.count == 1));
    }

    #[test]
    fn receiver_feedback() {
        // RS as the Arduino AppleMIDI library sends it: SSRC, u16 sequence, u16 zero padding.
        let rs = [
            0xFF, 0xFF, b'R', b'S', 0xDE, 0xAD, 0xBE, 0xEF, 0x8C, 0x24, 0, 0,
        ];
        let cmd = Command::Feedback(Feedback {
            ssrc: 0xDEAD_BEEF,
            seq: 0x8C24,
        });
        assert_eq!(Command::parse(&rs), Ok(cmd));
        assert_eq!(Command::parse(&rs[..10]), Ok(cmd), "padding optional");
        assert_eq!(roundtrip(cmd), rs);
        // As the C++ rtpmidid sends it: the 16-bit counter written as 32 bits.
        let upstream = [
            0xFF, 0xFF, b'R', b'S', 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0x8C, 0x24,
        ];
        assert_eq!(Command::parse(&upstream), Ok(cmd));
        let zero = [0xFF, 0xFF, b'R', b'S', 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 0];
        assert!(matches!(Command::parse(&zero), Ok(Command::Feedback(f)) if f.seq == 0));
    }

    #[test]
    fn signature_version_and_command_checked() {
        assert_eq!(
            Command::parse(&[0x80, 0x61, 0, 0]),
            Err(Error::BadSignature)
        );
        assert!(!is_applemidi(&[0x80, 0x61, 0, 0]));
        assert!(!is_applemidi(&[0xFF]));
        assert_eq!(
            Command::parse(b"\xFF\xFFRL\0\0\0\x01\0\0\0\x02"),
            Err(Error::UnknownCommand(*b"RL"))
        );
        let mut v3 = IN_MAC;
        v3[7] = 3;
        assert_eq!(Command::parse(&v3), Err(Error::BadVersion(3)));
        let mut by = IN_MAC[..16].to_vec();
        by[2..4].copy_from_slice(b"BY");
        by[4..8].copy_from_slice(&[0, 0, 0, 1]);
        assert_eq!(Command::parse(&by), Err(Error::BadVersion(1)));
    }

    #[test]
    fn truncated_at_every_field() {
        // Cut inside or right before each required field.
        let by = roundtrip(Command::End(End { token: 1, ssrc: 2 }));
        let ck = ck(2, [1, 2, 3]);
        let rs = [0xFF, 0xFF, b'R', b'S', 0, 0, 0, 1, 0, 9, 0, 0];
        for (bytes, required) in [
            (&IN_MAC[..], 16),
            (&by[..], 16),
            (&ck[..], 36),
            (&rs[..], 10),
        ] {
            for len in 0..required {
                assert_eq!(
                    Command::parse(&bytes[..len]),
                    Err(Error::Truncated),
                    "{:?} cut at {len}",
                    &bytes[2..4]
                );
            }
            assert!(Command::parse(&bytes[..required]).is_ok());
        }
    }

    #[test]
    fn emit_needs_room() {
        let cmd = Command::Invitation(Invitation {
            token: 1,
            ssrc: 2,
            name: Some("Mac"),
        });
        assert_eq!(cmd.buffer_len(), 20);
        assert_eq!(cmd.emit(&mut [0; 19]), Err(Error::BufferTooSmall));
        let mut big = [0; 64];
        assert_eq!(cmd.emit(&mut big), Ok(20));
    }

    fn arb_command() -> impl Strategy<Value = (u8, u32, u32, Option<String>, u8, [u64; 3], u16)> {
        (
            0u8..6,
            any::<u32>(),
            any::<u32>(),
            proptest::option::of("[^\u{0}]{0,40}"),
            0u8..=2,
            any::<[u64; 3]>(),
            any::<u16>(),
        )
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(
            (kind, token, ssrc, name, count, timestamps, seq) in arb_command()
        ) {
            let inv = Invitation { token, ssrc, name: name.as_deref() };
            let cmd = match kind {
                0 => Command::Invitation(inv),
                1 => Command::Accept(inv),
                2 => Command::Reject(inv),
                3 => Command::End(End { token, ssrc }),
                4 => Command::Clock(Clock { ssrc, count, timestamps }),
                _ => Command::Feedback(Feedback { ssrc, seq }),
            };
            let mut buf = vec![0; cmd.buffer_len()];
            prop_assert_eq!(cmd.emit(&mut buf), Ok(buf.len()));
            prop_assert!(is_applemidi(&buf));
            prop_assert_eq!(Command::parse(&buf), Ok(cmd));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Command::parse(&bytes);
        }
    }
}
