//! A MIDI 1.0 byte-stream normalizer for bytes from local devices: turns a raw stream (running
//! status, Real-time interleaved anywhere, SysEx, noise) into complete [`MidiMessage`]s.
//!
//! Rules (MIDI 1.0 Detailed Specification, "Running Status" and "System Real Time"):
//! - Real-time (F8-FF, F9 and FD included) is delivered at once, even inside another message or
//!   a SysEx, and changes no state.
//! - Channel messages set running status; System Common and SysEx clear it.
//! - Undefined System Common (F4, F5) is delivered as a one-byte message.
//! - A status byte arriving before a message is complete drops that message (counted); a data
//!   byte with no status to belong to is dropped (counted); so is a stray F7.
//! - SysEx longer than the limit is dropped (counted once) and skipped to its end.
use crate::midi::{self, status, MidiMessage, ShortMessage, MAX_SYSEX};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a status, or for data under running status `StreamParser::running`.
    Idle,
    /// Collecting the data bytes of `bytes[0]`.
    Short { bytes: [u8; 3], have: usize },
    /// Inside a SysEx; the bytes so far (F0 included) are in `StreamParser::sysex`.
    SysEx,
    /// Inside a SysEx that went over the limit: ignore up to its end.
    SkipSysEx,
}

#[derive(Clone, Debug)]
pub struct StreamParser {
    state: State,
    running: Option<u8>,
    sysex: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl Default for StreamParser {
    fn default() -> Self {
        Self::new(MAX_SYSEX)
    }
}

impl StreamParser {
    /// `sysex_limit`: the largest SysEx delivered, `F0` and `F7` included.
    pub fn new(sysex_limit: usize) -> Self {
        StreamParser {
            state: State::Idle,
            running: None,
            sysex: Vec::new(),
            limit: sysex_limit.max(2),
            dropped: 0,
        }
    }

    /// How many times input was dropped: each stray data byte or stray F7 counts one, each
    /// incomplete or oversized message counts one.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn feed(&mut self, bytes: &[u8], mut deliver: impl FnMut(MidiMessage)) {
        for &b in bytes {
            if let Some(m) = self.push(b) {
                deliver(m);
            }
        }
    }

    pub fn push(&mut self, byte: u8) -> Option<MidiMessage> {
        if midi::is_realtime(byte) {
            return ShortMessage::from_bytes(&[byte])
                .ok()
                .map(MidiMessage::from);
        }
        if midi::is_status(byte) {
            self.status(byte)
        } else {
            self.data(byte)
        }
    }

    fn status(&mut self, byte: u8) -> Option<MidiMessage> {
        let was_sysex = self.state == State::SysEx;
        let ends_sysex = byte == status::SYSEX_END && was_sysex;
        match self.state {
            // An F7 closing a skipped SysEx was already counted with it.
            State::SkipSysEx => {}
            State::Idle => {}
            _ if ends_sysex => {}
            // Another status before the message was complete.
            State::Short { .. } | State::SysEx => self.dropped += 1,
        }
        let skipping = self.state == State::SkipSysEx;
        self.state = State::Idle;
        if byte == status::SYSEX_END {
            if ends_sysex {
                self.sysex.push(byte);
                return Some(MidiMessage::SysEx(core::mem::take(&mut self.sysex)));
            }
            if !skipping {
                self.dropped += 1;
            }
            return None;
        }
        self.sysex.clear();
        if midi::is_channel(byte) {
            self.running = Some(byte);
        } else {
            // System Common and SysEx cancel running status.
            self.running = None;
        }
        match byte {
            status::SYSEX_START => {
                self.sysex.push(byte);
                self.state = State::SysEx;
                None
            }
            _ => self.collect([byte, 0, 0], 1),
        }
    }

    fn data(&mut self, byte: u8) -> Option<MidiMessage> {
        match self.state {
            State::SysEx => {
                // Room for this byte and the closing F7.
                if self.sysex.len() + 2 > self.limit {
                    self.sysex = Vec::new();
                    self.state = State::SkipSysEx;
                    self.dropped += 1;
                } else {
                    self.sysex.push(byte);
                }
                None
            }
            State::SkipSysEx => None,
            State::Short { mut bytes, have } => {
                bytes[have] = byte;
                self.collect(bytes, have + 1)
            }
            State::Idle => match self.running {
                Some(running) => self.collect([running, byte, 0], 2),
                None => {
                    self.dropped += 1;
                    None
                }
            },
        }
    }

    /// Delivers the message once it has all its data, else waits for more.
    fn collect(&mut self, bytes: [u8; 3], have: usize) -> Option<MidiMessage> {
        let need = 1 + midi::data_len(bytes[0]).unwrap_or(0);
        if have < need {
            self.state = State::Short { bytes, have };
            return None;
        }
        self.state = State::Idle;
        ShortMessage::from_bytes(&bytes[..need])
            .ok()
            .map(MidiMessage::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(p: &mut StreamParser, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        p.feed(bytes, |m| out.push(m.as_bytes().to_vec()));
        out
    }

    #[test]
    fn running_status_and_realtime() {
        let mut p = StreamParser::default();
        let got = parse_all(
            &mut p,
            &[
                0x90, 0x3C, 0xF8, 0x64, 0x3E, 0x64, 0xFE, 0x40, 0x00, 0xC1, 0x05, 0x06,
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![0xF8],
                vec![0x90, 0x3C, 0x64],
                vec![0x90, 0x3E, 0x64],
                vec![0xFE],
                vec![0x90, 0x40, 0x00],
                vec![0xC1, 0x05],
                vec![0xC1, 0x06],
            ]
        );
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn system_common_cancels_running_status() {
        let mut p = StreamParser::default();
        let got = parse_all(&mut p, &[0x90, 0x3C, 0x64, 0xF3, 0x05, 0x3E, 0x64]);
        assert_eq!(got, vec![vec![0x90, 0x3C, 0x64], vec![0xF3, 0x05]]);
        assert_eq!(p.dropped(), 2);
        let got = parse_all(&mut p, &[0xF2, 0x01, 0x02, 0xF6, 0xF1, 0x7F]);
        assert_eq!(got, vec![vec![0xF2, 1, 2], vec![0xF6], vec![0xF1, 0x7F]]);
    }

    #[test]
    fn stray_data_and_interrupted_messages() {
        let mut p = StreamParser::default();
        // Two stray data bytes, a note-on cut by a program change.
        let got = parse_all(&mut p, &[0x01, 0x02, 0x90, 0x3C, 0xC0, 0x05]);
        assert_eq!(got, vec![vec![0xC0, 0x05]]);
        assert_eq!(p.dropped(), 3);
        // A stray F7.
        assert_eq!(parse_all(&mut p, &[0xF7]), Vec::<Vec<u8>>::new());
        assert_eq!(p.dropped(), 4);
    }

    #[test]
    fn undefined_statuses_pass_as_one_byte() {
        let mut p = StreamParser::default();
        let got = parse_all(&mut p, &[0x90, 0x3C, 0x64, 0xF4, 0xF9, 0xF5, 0xFD, 0x3C]);
        assert_eq!(
            got,
            vec![
                vec![0x90, 0x3C, 0x64],
                vec![0xF4],
                vec![0xF9],
                vec![0xF5],
                vec![0xFD]
            ]
        );
        // F4 cancelled running status, so the last data byte is stray.
        assert_eq!(p.dropped(), 1);
    }

    #[test]
    fn sysex_with_realtime_inside() {
        let mut p = StreamParser::default();
        let got = parse_all(&mut p, &[0xF0, 0x7D, 0xF8, 0x01, 0xF7, 0x3C]);
        assert_eq!(got, vec![vec![0xF8], vec![0xF0, 0x7D, 0x01, 0xF7]]);
        // After SysEx, no running status: the 0x3C is stray.
        assert_eq!(p.dropped(), 1);
    }

    #[test]
    fn sysex_interrupted_by_status() {
        let mut p = StreamParser::default();
        let got = parse_all(&mut p, &[0xF0, 0x7D, 0x01, 0x90, 0x3C, 0x64]);
        assert_eq!(got, vec![vec![0x90, 0x3C, 0x64]]);
        assert_eq!(p.dropped(), 1);
        let got = parse_all(&mut p, &[0xF0, 0x01, 0xF0, 0x02, 0xF7]);
        assert_eq!(got, vec![vec![0xF0, 0x02, 0xF7]]);
        assert_eq!(p.dropped(), 2);
    }

    #[test]
    fn sysex_limit() {
        let mut p = StreamParser::new(4);
        assert_eq!(
            parse_all(&mut p, &[0xF0, 1, 2, 0xF7]),
            vec![vec![0xF0, 1, 2, 0xF7]]
        );
        assert_eq!(
            parse_all(&mut p, &[0xF0, 1, 2, 3, 4, 5, 0xF7]),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(p.dropped(), 1);
        assert_eq!(
            parse_all(&mut p, &[0xF0, 9, 0xF7]),
            vec![vec![0xF0, 9, 0xF7]]
        );
        assert_eq!(p.dropped(), 1);
    }

    mod prop {
        use super::*;
        use crate::wire::midi_list::tests_support::message;
        use proptest::prelude::*;

        proptest! {
            /// Any sequence of complete messages, written out without running status, comes
            /// back unchanged.
            #[test]
            fn messages_round_trip(msgs in proptest::collection::vec(message(), 0..50)) {
                let mut p = StreamParser::default();
                let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.as_bytes().to_vec()).collect();
                let mut got = Vec::new();
                p.feed(&bytes, |m| got.push(m));
                prop_assert_eq!(got, msgs);
                prop_assert_eq!(p.dropped(), 0);
            }

            /// Noise never panics and everything delivered is a valid message.
            #[test]
            fn noise_gives_valid_messages(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut p = StreamParser::new(16);
                p.feed(&bytes, |m| {
                    assert_eq!(MidiMessage::from_bytes(m.as_bytes()), Ok(m.clone()));
                    assert!(m.as_bytes().len() <= 16);
                });
            }
        }
    }
}
