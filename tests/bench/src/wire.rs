//! The few AppleMIDI and RTP-MIDI packets the harness writes and reads (layouts in RFC 6295 and
//! the AppleMIDI session protocol). Written here rather than taken from the `protocol` crate so
//! that the harness measures the daemon with an independent peer and builds on its own.

/// An AppleMIDI session command, as far as the harness cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// IN, OK, NO or BY with the initiator token.
    Session([u8; 2], u32),
    /// CK with its count and first timestamp.
    Clock { count: u8, ts1: u64 },
}

/// IN, OK or NO: signature, command, version 2, token, SSRC, NUL-terminated name.
pub fn invitation(code: &[u8; 2], token: u32, ssrc: u32, name: &str) -> Vec<u8> {
    let mut p = vec![0xff, 0xff, code[0], code[1]];
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&token.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    p
}

/// BY: like an invitation without the name.
pub fn end(token: u32, ssrc: u32) -> Vec<u8> {
    let mut p = invitation(b"BY", token, ssrc, "");
    p.pop();
    p
}

/// CK: SSRC, count, 3 bytes padding, three 64-bit timestamps.
pub fn clock(ssrc: u32, count: u8, ts: [u64; 3]) -> Vec<u8> {
    let mut p = vec![0xff, 0xff, b'C', b'K'];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[count, 0, 0, 0]);
    for t in ts {
        p.extend_from_slice(&t.to_be_bytes());
    }
    p
}

/// RS (receiver feedback, Apple's layout): SSRC, the newest sequence number, padding.
pub fn feedback(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0xff, 0xff, b'R', b'S'];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn parse_command(b: &[u8]) -> Option<Command> {
    if b.get(..2)? != [0xff, 0xff] {
        return None;
    }
    let code = [b[2], *b.get(3)?];
    if &code == b"CK" {
        let ts1 = u64::from_be_bytes(b.get(12..20)?.try_into().ok()?);
        return Some(Command::Clock {
            count: *b.get(8)?,
            ts1,
        });
    }
    Some(Command::Session(code, be32(b, 8)?))
}

/// An RTP-MIDI packet (RFC 6295 §2-3): RTP header with the marker set and payload type 97,
/// then a MIDI command section without journal holding `list` (commands with their delta
/// times, the first without one).
pub fn rtp_midi(seq: u16, ssrc: u32, list: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x80 | 97];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if list.len() <= 0x0f {
        p.push(list.len() as u8);
    } else {
        p.extend_from_slice(&(0x8000 | list.len() as u16).to_be_bytes());
    }
    p.extend_from_slice(list);
    p
}

/// Bytes of the send time in SysEx F0 7D (non-commercial) ... F7: 70 bits, 7 a byte.
const STAMP_BYTES: usize = 10;

/// A command list of one SysEx carrying `ns`, most significant group first.
pub fn stamp_list(ns: u64) -> Vec<u8> {
    let mut l = vec![0xf0, 0x7d];
    l.extend(
        (0..STAMP_BYTES)
            .rev()
            .map(|i| ((ns >> (7 * i)) & 0x7f) as u8),
    );
    l.push(0xf7);
    l
}

/// A command list of `n` note-ons and note-offs, zero delta times between them, starting at
/// event number `first` (note numbers cycle; every other cycle turns the notes off again).
pub fn notes_list(first: u64, n: usize) -> Vec<u8> {
    let mut l = Vec::with_capacity(4 * n);
    for e in first..first + n as u64 {
        if e != first {
            l.push(0);
        }
        let status = if (e / 128) % 2 == 0 { 0x90 } else { 0x80 };
        l.extend_from_slice(&[status, (e % 128) as u8, 100]);
    }
    l
}

/// What the harness reads from an RTP-MIDI packet: its sequence number, how many note-ons
/// and note-offs its command section holds, and the send times of its stamp SysExes (the
/// daemon puts several in one packet when they wait together).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Midi {
    pub seq: u16,
    pub notes: u32,
    pub stamps: Vec<u64>,
}

/// Parses the command section (the journal after it is skipped); None if malformed.
pub fn parse_rtp_midi(p: &[u8]) -> Option<Midi> {
    if p.len() < 13 || p[0] >> 6 != 2 {
        return None;
    }
    let mut midi = Midi {
        seq: u16::from_be_bytes([p[2], p[3]]),
        ..Midi::default()
    };
    let mut pos = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let words = u16::from_be_bytes(p.get(pos + 2..pos + 4)?.try_into().ok()?);
        pos += 4 + 4 * usize::from(words);
    }
    let flags = *p.get(pos)?;
    let (len, start) = if flags & 0x80 != 0 {
        (
            usize::from(flags & 0x0f) << 8 | usize::from(*p.get(pos + 1)?),
            pos + 2,
        )
    } else {
        (usize::from(flags & 0x0f), pos + 1)
    };
    let body = p.get(start..start + len)?;
    let mut i = 0;
    let mut has_delta = flags & 0x20 != 0;
    let mut running = 0u8;
    while i < body.len() {
        if has_delta {
            while body.get(i)? & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        }
        has_delta = true;
        let byte = *body.get(i)?;
        let status = if byte & 0x80 != 0 {
            i += 1;
            byte
        } else {
            running
        };
        match status {
            0xf0 | 0xf7 => {
                let end = i + body[i..]
                    .iter()
                    .position(|&b| matches!(b, 0xf0 | 0xf4 | 0xf7))?;
                if status == 0xf0 && body[i..end].len() == 1 + STAMP_BYTES && body[i] == 0x7d {
                    let stamp = body[i + 1..end]
                        .iter()
                        .fold(0u64, |acc, &b| acc << 7 | u64::from(b));
                    midi.stamps.push(stamp);
                }
                i = end + 1;
                running = 0;
            }
            0x80..=0xef => {
                running = status;
                if status < 0xa0 {
                    midi.notes += 1;
                }
                i += if (0xc0..0xe0).contains(&status) { 1 } else { 2 };
            }
            0xf1 | 0xf3 => i += 1,
            0xf2 => i += 2,
            0xf4..=0xff => {}
            // A data byte with no status to run on.
            _ => return None,
        }
    }
    Some(midi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_notes_read_back() {
        let mut list = stamp_list(123_456_789_012);
        list.push(0);
        list.extend(stamp_list(5));
        assert_eq!(
            parse_rtp_midi(&rtp_midi(7, 1, &list)),
            Some(Midi {
                seq: 7,
                notes: 0,
                stamps: vec![123_456_789_012, 5]
            })
        );
        let p = rtp_midi(8, 1, &notes_list(120, 16));
        assert_eq!(parse_rtp_midi(&p).unwrap().notes, 16);
    }

    #[test]
    fn running_status_and_journal_flag_are_read() {
        // B=0, J=1, Z=0, LEN=6: 90 3c 64, delta 0, running status 3d 64; a journal follows.
        let mut p = rtp_midi(1, 1, &[]);
        p.truncate(12);
        p.extend_from_slice(&[0x46, 0x90, 0x3c, 0x64, 0x00, 0x3d, 0x64, 0xaa, 0xbb]);
        assert_eq!(parse_rtp_midi(&p).unwrap().notes, 2);
    }

    #[test]
    fn session_commands_parse() {
        let p = invitation(b"OK", 42, 9, "x");
        assert_eq!(parse_command(&p), Some(Command::Session(*b"OK", 42)));
        assert_eq!(
            parse_command(&clock(9, 1, [5, 6, 0])),
            Some(Command::Clock { count: 1, ts1: 5 })
        );
        assert_eq!(parse_command(&end(3, 9)), Some(Command::Session(*b"BY", 3)));
    }
}
