//! Universal MIDI Packets (M2-104-UM): the [`Ump`] type, translation to and from MIDI 1.0
//! ([`Midi1Translator`], [`midi1_to_ump`]) and the UMP stream messages a UMP endpoint answers
//! ([`StreamResponder`]).

/// One Universal MIDI Packet: 1 to 4 32-bit words, the count set by the message type in the top
/// nibble (M2-104-UM §2.1.4, table 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ump {
    words: [u32; 4],
    len: u8,
}

/// Why words do not form one UMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UmpError {
    /// The word count does not match the message type.
    BadLength,
}

/// Words of a UMP of message type `mt` (0x0-0xF).
pub fn words_for_type(mt: u8) -> usize {
    match mt & 0x0F {
        0x0..=0x2 | 0x6 | 0x7 => 1,
        0x3 | 0x4 | 0x8..=0xA => 2,
        0xB | 0xC => 3,
        _ => 4,
    }
}

impl Ump {
    /// Checks that `words` are exactly one UMP.
    pub fn new(words: &[u32]) -> Result<Ump, UmpError> {
        let first = *words.first().ok_or(UmpError::BadLength)?;
        let len = words_for_type((first >> 28) as u8);
        if words.len() != len {
            return Err(UmpError::BadLength);
        }
        let mut stored = [0; 4];
        stored[..len].copy_from_slice(words);
        Ok(Ump {
            words: stored,
            len: len as u8,
        })
    }

    /// Splits a run of words into UMPs; `None` if the last one is cut short.
    pub fn split(words: &[u32]) -> Option<Vec<Ump>> {
        let mut out = Vec::new();
        let mut rest = words;
        while let Some(&first) = rest.first() {
            let len = words_for_type((first >> 28) as u8);
            let (one, tail) = rest.split_at_checked(len)?;
            out.push(Ump::new(one).ok()?);
            rest = tail;
        }
        Some(out)
    }

    pub fn words(&self) -> &[u32] {
        &self.words[..usize::from(self.len)]
    }

    pub fn message_type(&self) -> u8 {
        (self.words[0] >> 28) as u8
    }

    pub fn group(&self) -> u8 {
        ((self.words[0] >> 24) & 0x0F) as u8
    }
}

impl core::fmt::Debug for Ump {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ump({:08X?})", self.words())
    }
}
