//! MIDI byte handling on both sides of the sequencer, free of ALSA: splitting what the daemon
//! sends into messages, and joining SysEx that ALSA delivers in chunks.

use std::collections::HashMap;

use protocol::midi::{self, status, ShortMessage};

use super::{PortId, SeqAddr};

/// SysEx bytes per sequencer event on the way out. Each event takes 1 + len/28 cells of the
/// client's kernel pool; 256 bytes keeps many events in flight and is what kernel drivers use.
pub const SYSEX_CHUNK: usize = 256;

/// Largest SysEx reassembled from chunks; longer ones are dropped instead of growing without
/// bound on a sender that never ends its message.
pub const MAX_SYSEX: usize = 1 << 20;

/// One message found in a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Short(ShortMessage),
    /// `F0 .. F7`, both included.
    SysEx(&'a [u8]),
}

/// Splits bytes into complete messages, expanding running status. Bytes that complete no
/// message (stray data, a message cut short, an unterminated SysEx) are skipped.
pub struct Messages<'a> {
    bytes: &'a [u8],
    running: Option<u8>,
}

impl<'a> Messages<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Messages {
            bytes,
            running: None,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        while let Some((&first, rest)) = self.bytes.split_first() {
            if first == status::SYSEX_START {
                self.running = None;
                // The SysEx ends at F7; any other non-realtime status cuts it short.
                let end = rest
                    .iter()
                    .position(|&b| midi::is_status(b) && !midi::is_realtime(b));
                match end {
                    Some(i) if rest.get(i) == Some(&status::SYSEX_END) => {
                        let (sysex, tail) = self.bytes.split_at(i + 2);
                        self.bytes = tail;
                        return Some(Message::SysEx(sysex));
                    }
                    Some(i) => self.bytes = rest.get(i..).unwrap_or_default(),
                    None => self.bytes = &[],
                }
                continue;
            }
            let (status, data) = if midi::is_status(first) {
                (first, rest)
            } else if let Some(running) = self.running {
                (running, self.bytes)
            } else {
                self.bytes = rest;
                continue;
            };
            // A lone F7 has no data.
            let len = midi::data_len(status).unwrap_or(0);
            if midi::is_channel(status) {
                self.running = Some(status);
            } else if !midi::is_realtime(status) {
                // System common messages cancel running status (MIDI 1.0, "Running Status").
                self.running = None;
            }
            let Some(args) = data.get(..len) else {
                self.bytes = &[];
                return None;
            };
            if let Some(i) = args.iter().position(|&b| midi::is_status(b)) {
                // Cut short by the next status byte: drop what was read and resume there.
                self.bytes = data.get(i..).unwrap_or_default();
                continue;
            }
            self.bytes = data.get(len..).unwrap_or_default();
            if is_undefined(status) {
                continue;
            }
            let mut buf = [status, 0, 0];
            buf[1..=len].copy_from_slice(args);
            // Only a lone F7 fails here: it ends no SysEx.
            if let Ok(message) = ShortMessage::from_bytes(&buf[..=len]) {
                return Some(Message::Short(message));
            }
        }
        None
    }
}

/// F4, F5, F9 and FD: reserved, nothing to send.
fn is_undefined(status: u8) -> bool {
    matches!(
        status,
        status::UNDEFINED_F4 | status::UNDEFINED_F5 | status::UNDEFINED_F9 | status::UNDEFINED_FD
    )
}

/// Joins SysEx chunks per (our port, sender): the first starts with F0, the last ends with F7.
#[derive(Default)]
pub struct SysexAssembler {
    partial: HashMap<(PortId, SeqAddr), Vec<u8>>,
}

impl SysexAssembler {
    /// Adds a chunk; returns the SysEx it completes.
    pub fn push(&mut self, port: PortId, source: SeqAddr, chunk: &[u8]) -> Option<Vec<u8>> {
        let key = (port, source);
        if chunk.first() == Some(&status::SYSEX_START) {
            // A new SysEx replaces one its sender never finished.
            self.partial.insert(key, Vec::with_capacity(chunk.len()));
        }
        let buf = self.partial.get_mut(&key)?;
        if buf.len() + chunk.len() > MAX_SYSEX {
            self.partial.remove(&key);
            return None;
        }
        buf.extend_from_slice(chunk);
        if chunk.last() == Some(&status::SYSEX_END) {
            return self.partial.remove(&key);
        }
        None
    }

    pub fn forget_port(&mut self, port: PortId) {
        self.partial.retain(|&(p, _), _| p != port);
    }

    pub fn clear(&mut self) {
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
        Messages::new(bytes)
            .map(|m| match m {
                Message::Short(s) => s.as_bytes().to_vec(),
                Message::SysEx(b) => b.to_vec(),
            })
            .collect()
    }

    #[test]
    fn splits_every_kind_of_message() {
        let bytes = [
            0x90, 60, 100, // note on
            0x81, 60, 0, // note off
            0xA2, 60, 5, // poly pressure
            0xB3, 7, 100, // control change
            0xC4, 12, // program change
            0xD5, 40, // channel pressure
            0xE6, 0x00, 0x40, // pitch bend, centre
            0xF1, 0x23, // MTC quarter frame
            0xF2, 0x10, 0x02, // song position
            0xF3, 5,    // song select
            0xF6, // tune request
            0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF, // realtime
            0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7, // identity request
        ];
        let got = split(&bytes);
        assert_eq!(got.len(), 18);
        assert_eq!(got.concat(), bytes);
    }

    #[test]
    fn running_status_is_expanded_and_realtime_does_not_cancel_it() {
        let got = split(&[0x90, 60, 100, 62, 100, 0xF8, 64, 0]);
        assert_eq!(
            got,
            [
                vec![0x90, 60, 100],
                vec![0x90, 62, 100],
                vec![0xF8],
                vec![0x90, 64, 0]
            ]
        );
    }

    #[test]
    fn system_common_cancels_running_status() {
        assert_eq!(
            split(&[0xB0, 1, 2, 0xF6, 3, 4]),
            [vec![0xB0, 1, 2], vec![0xF6]]
        );
    }

    #[test]
    fn stray_and_cut_short_bytes_are_skipped() {
        // Data without status; a note on cut by a CC; a truncated CC at the end.
        let got = split(&[0x10, 0x20, 0x90, 60, 0xB0, 7, 9, 0xB0, 7]);
        assert_eq!(got, [vec![0xB0, 7, 9]]);
        assert!(split(&[0xF4, 0xF5, 0xF9, 0xFD, 0xF7]).is_empty());
    }

    #[test]
    fn unterminated_sysex_is_skipped_up_to_the_next_status() {
        assert_eq!(split(&[0xF0, 1, 2, 0x90, 60, 1]), [vec![0x90, 60, 1]]);
        assert!(split(&[0xF0, 1, 2, 3]).is_empty());
        // Realtime bytes inside a SysEx stay where they are.
        assert_eq!(
            split(&[0xF0, 1, 0xF8, 2, 0xF7]),
            [vec![0xF0, 1, 0xF8, 2, 0xF7]]
        );
    }

    const A: SeqAddr = SeqAddr {
        client: 20,
        port: 0,
    };
    const B: SeqAddr = SeqAddr {
        client: 21,
        port: 3,
    };

    #[test]
    fn sysex_chunks_are_joined_per_sender() {
        let mut asm = SysexAssembler::default();
        let p = PortId(0);
        assert_eq!(asm.push(p, A, &[0xF0, 1, 2]), None);
        assert_eq!(asm.push(p, B, &[0xF0, 9]), None);
        assert_eq!(asm.push(p, A, &[3, 4]), None);
        assert_eq!(
            asm.push(p, A, &[5, 0xF7]),
            Some(vec![0xF0, 1, 2, 3, 4, 5, 0xF7])
        );
        assert_eq!(asm.push(p, B, &[0xF7]), Some(vec![0xF0, 9, 0xF7]));
        // A whole SysEx in one event.
        assert_eq!(asm.push(p, A, &[0xF0, 7, 0xF7]), Some(vec![0xF0, 7, 0xF7]));
    }

    #[test]
    fn orphan_chunks_are_dropped_and_a_new_start_replaces_an_old_one() {
        let mut asm = SysexAssembler::default();
        let p = PortId(1);
        assert_eq!(asm.push(p, A, &[1, 2, 0xF7]), None);
        assert_eq!(asm.push(p, A, &[0xF0, 1]), None);
        assert_eq!(asm.push(p, A, &[0xF0, 2]), None);
        assert_eq!(asm.push(p, A, &[0xF7]), Some(vec![0xF0, 2, 0xF7]));
        asm.push(p, A, &[0xF0, 3]);
        asm.forget_port(p);
        assert_eq!(asm.push(p, A, &[0xF7]), None);
    }

    #[test]
    fn oversized_sysex_is_dropped() {
        let mut asm = SysexAssembler::default();
        let p = PortId(0);
        let chunk = vec![0x11; SYSEX_CHUNK];
        asm.push(p, A, &[0xF0]);
        for _ in 0..MAX_SYSEX / SYSEX_CHUNK {
            asm.push(p, A, &chunk);
        }
        assert_eq!(asm.push(p, A, &[0xF7]), None);
        assert_eq!(asm.push(p, A, &[0xF0, 0xF7]), Some(vec![0xF0, 0xF7]));
    }
}
