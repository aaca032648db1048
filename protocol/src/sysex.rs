//! Reassembly of SysEx segments (RFC 6295 §3.2 Figure 5) received across packets into whole
//! `F0 .. F7` messages, up to a size limit.
use crate::midi::{self, status, MidiMessage, MAX_SYSEX};
use crate::wire::midi_list::{SegmentKind, SysExSegment};

/// Why a SysEx message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysExError {
    /// The message grew past the limit; the rest of it is ignored up to the next `F0`.
    TooLong,
    /// A new `F0` arrived before the message in progress ended; the partial one is gone.
    Interrupted,
    /// A middle, last or cancel segment with no message in progress (its start was lost);
    /// the rest of it is ignored up to the next `F0`.
    NoStart,
    /// A data octet with its top bit set (not from a parsed MIDI list).
    BadData,
}

/// What one segment produced: a complete message, an error, or both (a whole SysEx that
/// interrupted a partial one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    pub message: Option<MidiMessage>,
    pub error: Option<SysExError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Assembling,
    /// Ignoring segments until the next `F0` (after an error, or `abort`).
    Skipping,
}

/// Puts segmented SysEx back together. Feed it every [`SysExSegment`] of a stream in order.
#[derive(Clone, Debug)]
pub struct SysExAssembler {
    buf: Vec<u8>,
    limit: usize,
    state: State,
}

impl Default for SysExAssembler {
    fn default() -> Self {
        Self::new(MAX_SYSEX)
    }
}

impl SysExAssembler {
    /// `limit`: largest message accepted, `F0` and `F7` included (at least 2).
    pub fn new(limit: usize) -> Self {
        SysExAssembler {
            buf: Vec::new(),
            limit: limit.max(2),
            state: State::Idle,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True while a message is being assembled.
    pub fn in_progress(&self) -> bool {
        self.state == State::Assembling
    }

    /// Drops the message in progress, if any, and ignores its remaining segments: call it when
    /// packets were lost, since the partial message has a hole. Returns whether one was dropped.
    pub fn abort(&mut self) -> bool {
        let dropped = self.state == State::Assembling;
        if dropped {
            self.buf = Vec::new();
            self.state = State::Skipping;
        }
        dropped
    }

    pub fn push(&mut self, segment: &SysExSegment<'_>) -> Pushed {
        let mut out = Pushed::default();
        if segment.data.iter().any(|&b| midi::is_status(b)) {
            out.error = Some(SysExError::BadData);
            self.abort();
            return out;
        }
        let starts = matches!(segment.kind, SegmentKind::Whole | SegmentKind::First);
        if starts {
            if self.state == State::Assembling {
                out.error = Some(SysExError::Interrupted);
            }
            self.buf.clear();
            self.buf.push(status::SYSEX_START);
            self.state = State::Assembling;
        } else {
            match self.state {
                State::Skipping => return out,
                State::Idle => {
                    // A cancel with nothing to cancel is harmless.
                    if segment.kind != SegmentKind::Cancel {
                        out.error = Some(SysExError::NoStart);
                        self.state = State::Skipping;
                    }
                    return out;
                }
                State::Assembling => {}
            }
        }
        if segment.kind == SegmentKind::Cancel {
            self.buf = Vec::new();
            self.state = State::Idle;
            return out;
        }
        // Room for the data and the closing F7.
        if self.buf.len() + segment.data.len() + 1 > self.limit {
            self.buf = Vec::new();
            self.state = State::Skipping;
            out.error = Some(SysExError::TooLong);
            return out;
        }
        self.buf.extend_from_slice(segment.data);
        if matches!(segment.kind, SegmentKind::Whole | SegmentKind::Last) {
            self.buf.push(status::SYSEX_END);
            self.state = State::Idle;
            out.message = Some(MidiMessage::SysEx(core::mem::take(&mut self.buf)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: SegmentKind, data: &[u8]) -> SysExSegment<'_> {
        SysExSegment { kind, data }
    }

    fn sysex(bytes: &[u8]) -> Option<MidiMessage> {
        Some(MidiMessage::SysEx(bytes.to_vec()))
    }

    #[test]
    fn whole_and_segmented() {
        let mut a = SysExAssembler::default();
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[0x7D, 1])).message,
            sysex(&[0xF0, 0x7D, 1, 0xF7])
        );
        assert_eq!(a.push(&seg(SegmentKind::First, &[1, 2])), Pushed::default());
        assert!(a.in_progress());
        assert_eq!(a.push(&seg(SegmentKind::Middle, &[3])), Pushed::default());
        assert_eq!(
            a.push(&seg(SegmentKind::Last, &[])),
            Pushed {
                message: sysex(&[0xF0, 1, 2, 3, 0xF7]),
                error: None
            }
        );
        assert!(!a.in_progress());
    }

    #[test]
    fn cancel_discards() {
        let mut a = SysExAssembler::default();
        a.push(&seg(SegmentKind::First, &[1]));
        assert_eq!(a.push(&seg(SegmentKind::Cancel, &[])), Pushed::default());
        assert!(!a.in_progress());
        // The next segment without a start is an error, once.
        assert_eq!(
            a.push(&seg(SegmentKind::Last, &[2])).error,
            Some(SysExError::NoStart)
        );
        assert_eq!(a.push(&seg(SegmentKind::Last, &[2])), Pushed::default());
        // A stray cancel is no error.
        let mut b = SysExAssembler::default();
        assert_eq!(b.push(&seg(SegmentKind::Cancel, &[])), Pushed::default());
    }

    #[test]
    fn new_start_interrupts() {
        let mut a = SysExAssembler::default();
        a.push(&seg(SegmentKind::First, &[1]));
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[9])),
            Pushed {
                message: sysex(&[0xF0, 9, 0xF7]),
                error: Some(SysExError::Interrupted)
            }
        );
        a.push(&seg(SegmentKind::First, &[1]));
        assert_eq!(
            a.push(&seg(SegmentKind::First, &[2])).error,
            Some(SysExError::Interrupted)
        );
        assert_eq!(
            a.push(&seg(SegmentKind::Last, &[3])).message,
            sysex(&[0xF0, 2, 3, 0xF7])
        );
    }

    #[test]
    fn limit_reports_once_and_resyncs() {
        let mut a = SysExAssembler::new(6);
        // Exactly at the limit: F0 + 4 + F7.
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[1, 2, 3, 4])).message,
            sysex(&[0xF0, 1, 2, 3, 4, 0xF7])
        );
        a.push(&seg(SegmentKind::First, &[1, 2, 3]));
        assert_eq!(
            a.push(&seg(SegmentKind::Middle, &[4, 5])).error,
            Some(SysExError::TooLong)
        );
        assert_eq!(a.push(&seg(SegmentKind::Middle, &[6])), Pushed::default());
        assert_eq!(a.push(&seg(SegmentKind::Last, &[7])), Pushed::default());
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[8])).message,
            sysex(&[0xF0, 8, 0xF7])
        );
    }

    #[test]
    fn abort_skips_the_rest() {
        let mut a = SysExAssembler::default();
        assert!(!a.abort());
        a.push(&seg(SegmentKind::First, &[1]));
        assert!(a.abort());
        assert_eq!(a.push(&seg(SegmentKind::Last, &[2])), Pushed::default());
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[])).message,
            sysex(&[0xF0, 0xF7])
        );
    }

    #[test]
    fn pieces_around_realtime_from_a_parsed_list() {
        // `F0 01 F8 02 F7` in a MIDI list: the parser splits it around the clock.
        use crate::wire::midi_list::{self, CommandKind};
        let payload = [0x05, 0xF0, 0x01, 0xF8, 0x02, 0xF7];
        let (list, _) = midi_list::parse(&payload).unwrap();
        let mut a = SysExAssembler::default();
        let mut out = Vec::new();
        for c in list.commands() {
            match c.unwrap().kind {
                CommandKind::Short(m) => out.push(MidiMessage::Short(m)),
                CommandKind::SysEx(s) => out.extend(a.push(&s).message),
            }
        }
        assert_eq!(
            out,
            vec![
                MidiMessage::from_bytes(&[0xF8]).unwrap(),
                MidiMessage::SysEx(vec![0xF0, 1, 2, 0xF7])
            ]
        );
    }

    #[test]
    fn bad_data_is_refused() {
        let mut a = SysExAssembler::default();
        assert_eq!(
            a.push(&seg(SegmentKind::Whole, &[0x90])).error,
            Some(SysExError::BadData)
        );
    }
}
