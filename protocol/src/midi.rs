//! MIDI 1.0 messages as the rest of the crate passes them around.
//!
//! A [`ShortMessage`] is any message but SysEx, stored inline (no allocation); a
//! [`MidiMessage`] adds complete SysEx (`F0 .. F7`).

/// The longest SysEx taken anywhere (from a peer or a local port), `F0` and `F7` included:
/// patch dumps and firmware run to hundreds of KiB. Longer ones are dropped, so that a sender
/// that never ends its message cannot grow a buffer without bound.
pub const MAX_SYSEX: usize = 1 << 20;

/// Status bytes with a name, MIDI 1.0 Detailed Specification, table I and II.
pub mod status {
    pub const NOTE_OFF: u8 = 0x80;
    pub const NOTE_ON: u8 = 0x90;
    pub const POLY_PRESSURE: u8 = 0xA0;
    pub const CONTROL_CHANGE: u8 = 0xB0;
    pub const PROGRAM_CHANGE: u8 = 0xC0;
    pub const CHANNEL_PRESSURE: u8 = 0xD0;
    pub const PITCH_BEND: u8 = 0xE0;
    pub const SYSEX_START: u8 = 0xF0;
    pub const MTC_QUARTER_FRAME: u8 = 0xF1;
    pub const SONG_POSITION: u8 = 0xF2;
    pub const SONG_SELECT: u8 = 0xF3;
    pub const UNDEFINED_F4: u8 = 0xF4;
    pub const UNDEFINED_F5: u8 = 0xF5;
    pub const TUNE_REQUEST: u8 = 0xF6;
    pub const SYSEX_END: u8 = 0xF7;
    pub const CLOCK: u8 = 0xF8;
    pub const UNDEFINED_F9: u8 = 0xF9;
    pub const START: u8 = 0xFA;
    pub const CONTINUE: u8 = 0xFB;
    pub const STOP: u8 = 0xFC;
    pub const UNDEFINED_FD: u8 = 0xFD;
    pub const ACTIVE_SENSING: u8 = 0xFE;
    pub const RESET: u8 = 0xFF;
}

pub fn is_status(byte: u8) -> bool {
    byte & 0x80 != 0
}

/// A complete SysEx: `F0`, data bytes only, `F7`.
pub fn is_sysex(bytes: &[u8]) -> bool {
    matches!(bytes, [status::SYSEX_START, inner @ .., status::SYSEX_END]
        if !inner.iter().any(|&b| is_status(b)))
}

/// System realtime (F8-FF): one byte, may appear anywhere in a stream, even inside SysEx.
pub fn is_realtime(byte: u8) -> bool {
    byte >= 0xF8
}

/// Channel voice messages (80-EF) are the ones running status applies to.
pub fn is_channel(status: u8) -> bool {
    (0x80..0xF0).contains(&status)
}

/// Data bytes that follow `status`, or `None` for F0 and F7, whose length is set by framing.
pub fn data_len(status: u8) -> Option<usize> {
    match status {
        0x80..=0xBF | 0xE0..=0xEF => Some(2),
        0xC0..=0xDF => Some(1),
        status::MTC_QUARTER_FRAME | status::SONG_SELECT => Some(1),
        status::SONG_POSITION => Some(2),
        status::SYSEX_START | status::SYSEX_END => None,
        // F4 F5 F6 and F8-FF carry no data.
        _ => Some(0),
    }
}

/// Why bytes do not form a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The first byte is not a status byte, or is F0/F7 (SysEx has its own type).
    BadStatus,
    /// Wrong number of data bytes for the status.
    BadLength,
    /// A data byte has its top bit set.
    BadData,
}

/// Any MIDI message but SysEx: a status byte and its 0-2 data bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortMessage {
    bytes: [u8; 3],
    len: u8,
}

impl ShortMessage {
    /// Checks that `bytes` are one complete non-SysEx message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        let (&status, data) = bytes.split_first().ok_or(MessageError::BadLength)?;
        let want = match data_len(status) {
            Some(n) if is_status(status) => n,
            _ => return Err(MessageError::BadStatus),
        };
        if data.len() != want {
            return Err(MessageError::BadLength);
        }
        if data.iter().any(|&b| is_status(b)) {
            return Err(MessageError::BadData);
        }
        let mut stored = [0; 3];
        stored[..bytes.len()].copy_from_slice(bytes);
        Ok(ShortMessage {
            bytes: stored,
            len: bytes.len() as u8,
        })
    }

    /// Builds a channel message from its parts; data bytes are masked to 7 bits.
    pub fn channel(kind: u8, channel: u8, data1: u8, data2: u8) -> Self {
        let status = (kind & 0xF0) | (channel & 0x0F);
        let len = 1 + data_len(status).unwrap_or(0);
        // Unused bytes stay zero so that equal messages compare equal.
        let data2 = if len == 3 { data2 & 0x7F } else { 0 };
        ShortMessage {
            bytes: [status, data1 & 0x7F, data2],
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn status(&self) -> u8 {
        self.bytes[0]
    }

    /// The channel (0-15) of a channel voice message.
    pub fn channel_number(&self) -> Option<u8> {
        is_channel(self.status()).then_some(self.status() & 0x0F)
    }

    pub fn data1(&self) -> u8 {
        self.bytes[1]
    }

    pub fn data2(&self) -> u8 {
        self.bytes[2]
    }
}

impl core::fmt::Debug for ShortMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ShortMessage({:02X?})", self.as_bytes())
    }
}

/// A complete MIDI message: short, or a whole SysEx including its `F0` and `F7`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MidiMessage {
    Short(ShortMessage),
    SysEx(Vec<u8>),
}

impl MidiMessage {
    /// Parses one complete message (short, or SysEx framed F0 .. F7 with only data inside).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        match bytes {
            [status::SYSEX_START, .., status::SYSEX_END] => {
                if is_sysex(bytes) {
                    Ok(MidiMessage::SysEx(bytes.to_vec()))
                } else {
                    Err(MessageError::BadData)
                }
            }
            [status::SYSEX_START, ..] => Err(MessageError::BadLength),
            _ => ShortMessage::from_bytes(bytes).map(MidiMessage::Short),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MidiMessage::Short(m) => m.as_bytes(),
            MidiMessage::SysEx(v) => v,
        }
    }
}

impl From<ShortMessage> for MidiMessage {
    fn from(m: ShortMessage) -> Self {
        MidiMessage::Short(m)
    }
}

impl core::fmt::Debug for MidiMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MidiMessage::Short(m) => m.fmt(f),
            MidiMessage::SysEx(v) if v.len() <= 16 => write!(f, "SysEx({:02X?})", v),
            MidiMessage::SysEx(v) => write!(f, "SysEx({} bytes)", v.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_checked() {
        let on = ShortMessage::from_bytes(&[0x91, 60, 100]).unwrap();
        assert_eq!(on.channel_number(), Some(1));
        assert_eq!(on.as_bytes(), &[0x91, 60, 100]);
        assert_eq!(
            ShortMessage::from_bytes(&[0x91, 60]),
            Err(MessageError::BadLength)
        );
        assert_eq!(
            ShortMessage::from_bytes(&[0x91, 60, 0x80]),
            Err(MessageError::BadData)
        );
        assert_eq!(
            ShortMessage::from_bytes(&[60]),
            Err(MessageError::BadStatus)
        );
        assert_eq!(
            ShortMessage::from_bytes(&[0xF0, 1, 0xF7]),
            Err(MessageError::BadStatus)
        );
        assert_eq!(
            ShortMessage::from_bytes(&[0xF8]).unwrap().as_bytes(),
            &[0xF8]
        );
        assert_eq!(ShortMessage::from_bytes(&[]), Err(MessageError::BadLength));
    }

    #[test]
    fn sysex_framing() {
        assert!(matches!(
            MidiMessage::from_bytes(&[0xF0, 0x7D, 1, 0xF7]),
            Ok(MidiMessage::SysEx(_))
        ));
        assert_eq!(
            MidiMessage::from_bytes(&[0xF0, 0x7D, 1]),
            Err(MessageError::BadLength)
        );
        assert_eq!(
            MidiMessage::from_bytes(&[0xF0, 0x90, 0xF7]),
            Err(MessageError::BadData)
        );
    }

    #[test]
    fn channel_builder_masks() {
        let m = ShortMessage::channel(status::PROGRAM_CHANGE, 3, 0x85, 99);
        assert_eq!(m.as_bytes(), &[0xC3, 0x05]);
        assert_eq!(m, ShortMessage::from_bytes(&[0xC3, 0x05]).unwrap());
    }
}
