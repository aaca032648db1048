//! The MIDI command section of an RTP-MIDI payload (RFC 6295 §3): a 1- or 2-octet header and a
//! MIDI list of commands, each but (unless Z) the first preceded by a delta time.
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |B|J|Z|P|  LEN  |  LEN (if B)   |  MIDI list ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Parsing borrows the payload and allocates nothing. The [`Commands`] iterator hands out every
//! command with its delta time and its time from the packet timestamp. A System Real-time octet
//! found inside another command (RFC 6295 §3.2 says senders must pull it out; we accept it
//! anyway) is handed out as its own command at the same time, before the rest of its host. A
//! SysEx command that holds such octets is split around them into segments (e.g. a whole
//! `F0 01 F8 02 F7` becomes First `01`, Real-time `F8`, Last `02`), so a segment's `data` is
//! always clean data octets; [`crate::sysex::SysExAssembler`] puts the pieces back together.
use crate::midi::{self, status, ShortMessage};

/// Header flags and masks, RFC 6295 §3 Figure 2.
const FLAG_B: u8 = 0x80;
const FLAG_J: u8 = 0x40;
const FLAG_Z: u8 = 0x20;
const FLAG_P: u8 = 0x10;
const LEN_MASK: u8 = 0x0F;

/// Header length without and with the B flag.
pub const SHORT_HEADER_LEN: usize = 1;
pub const LONG_HEADER_LEN: usize = 2;
/// Largest LEN the 4-bit field holds; above it the 12-bit form is needed.
pub const MAX_SHORT_LEN: usize = 15;
/// Largest LEN the 12-bit field holds.
pub const MAX_LEN: usize = 4095;
/// A delta time is 1-4 octets of 7 bits each (RFC 6295 §3.1 Figure 3).
pub const MAX_DELTA_OCTETS: usize = 4;
pub const MAX_DELTA: u32 = (1 << (7 * MAX_DELTA_OCTETS)) - 1;
/// Tail octet of a cancelled SysEx (RFC 6295 §3.2 Figure 5).
pub const SYSEX_CANCEL: u8 = 0xF4;

/// Why a command section does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The payload is shorter than the header, or than the LEN it announces.
    Truncated,
    /// The list ends inside a delta time or a command, or after a delta time.
    TruncatedCommand,
    /// A delta time runs past four octets.
    DeltaTooLong,
    /// A data octet starts a command but there is no running status (RFC 6295 §3.2).
    NoRunningStatus,
    /// A status octet (not Real-time) inside a channel or System Common command.
    InterruptedCommand,
    /// A status octet (not Real-time, F0, F7 or F4) inside a SysEx command.
    BadSysEx,
}

/// The command section header (RFC 6295 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// J: a recovery journal follows the MIDI list.
    pub journal: bool,
    /// P: the first command's status octet was not in the source stream (running status there).
    pub phantom: bool,
    /// Z: the first command has a delta time.
    pub first_has_delta: bool,
    /// LEN: octets in the MIDI list.
    pub len: usize,
    /// B: the 12-bit LEN form; chosen for `len > 15` by [`Header::new`], accepted for any len.
    pub long: bool,
}

impl Header {
    /// A header for a list of `len` octets, with the short form when it fits.
    pub fn new(len: usize, journal: bool, phantom: bool, first_has_delta: bool) -> Self {
        Header {
            journal,
            phantom,
            first_has_delta,
            len,
            long: len > MAX_SHORT_LEN,
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Header, Error> {
        let &first = payload.first().ok_or(Error::Truncated)?;
        let long = first & FLAG_B != 0;
        let len = if long {
            let &second = payload.get(1).ok_or(Error::Truncated)?;
            (usize::from(first & LEN_MASK) << 8) | usize::from(second)
        } else {
            usize::from(first & LEN_MASK)
        };
        Ok(Header {
            journal: first & FLAG_J != 0,
            phantom: first & FLAG_P != 0,
            first_has_delta: first & FLAG_Z != 0,
            len,
            long,
        })
    }

    pub fn buffer_len(&self) -> usize {
        if self.long {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// Writes the header into `buf[..self.buffer_len()]`. `len` must fit the chosen form
    /// (at most 15 short, 4095 long); `buf` must be at least `buffer_len()` long.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut flags = 0;
        if self.journal {
            flags |= FLAG_J;
        }
        if self.first_has_delta {
            flags |= FLAG_Z;
        }
        if self.phantom {
            flags |= FLAG_P;
        }
        if self.long {
            buf[0] = FLAG_B | flags | ((self.len >> 8) as u8 & LEN_MASK);
            buf[1] = self.len as u8;
        } else {
            buf[0] = flags | (self.len as u8 & LEN_MASK);
        }
    }
}

/// Which part of a SysEx command a segment is, by its first and last octet (RFC 6295 §3.2
/// Figure 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// `F0 .. F7`: a complete SysEx.
    Whole,
    /// `F0 .. F0`: more follows.
    First,
    /// `F7 .. F0`: continues, more follows.
    Middle,
    /// `F7 .. F7`: ends the SysEx.
    Last,
    /// `F7 .. F4`: the sender gave up on the SysEx in progress; drop it.
    Cancel,
}

impl SegmentKind {
    /// The framing octets around the data on the wire.
    pub fn framing(self) -> (u8, u8) {
        match self {
            SegmentKind::Whole => (status::SYSEX_START, status::SYSEX_END),
            SegmentKind::First => (status::SYSEX_START, status::SYSEX_START),
            SegmentKind::Middle => (status::SYSEX_END, status::SYSEX_START),
            SegmentKind::Last => (status::SYSEX_END, status::SYSEX_END),
            SegmentKind::Cancel => (status::SYSEX_END, SYSEX_CANCEL),
        }
    }

    /// The kind of a piece that starts a SysEx (`F0`) or continues one (`F7`) and ends it (`F7`),
    /// leaves it open (`F0`) or cancels it (`F4`). `F0 .. F4` is taken as a cancel too.
    fn from_framing(starts: bool, tail: u8) -> Option<Self> {
        Some(match (starts, tail) {
            (true, status::SYSEX_END) => SegmentKind::Whole,
            (true, status::SYSEX_START) => SegmentKind::First,
            (false, status::SYSEX_START) => SegmentKind::Middle,
            (false, status::SYSEX_END) => SegmentKind::Last,
            (_, SYSEX_CANCEL) => SegmentKind::Cancel,
            _ => return None,
        })
    }
}

/// A SysEx command or segment of one: the data octets between its framing octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysExSegment<'a> {
    pub kind: SegmentKind,
    pub data: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind<'a> {
    Short(ShortMessage),
    SysEx(SysExSegment<'a>),
}

/// One command of a MIDI list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Command<'a> {
    /// The delta time before this command as coded (0 for commands pulled out of a host command
    /// and for a first command without Z).
    pub delta: u32,
    /// Ticks from the packet's RTP timestamp to this command: the sum of the delta times so far
    /// (wrapping like the RTP timestamp).
    pub time: u32,
    pub kind: CommandKind<'a>,
}

/// A parsed command section: the header and the MIDI list it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MidiList<'a> {
    header: Header,
    list: &'a [u8],
}

/// Splits an RTP payload into its command section and the bytes after it (the journal, if the
/// header's J flag says so).
pub fn parse(payload: &[u8]) -> Result<(MidiList<'_>, &[u8]), Error> {
    let header = Header::parse(payload)?;
    let rest = payload.get(header.buffer_len()..).ok_or(Error::Truncated)?;
    if rest.len() < header.len {
        return Err(Error::Truncated);
    }
    let (list, after) = rest.split_at(header.len);
    Ok((MidiList { header, list }, after))
}

impl<'a> MidiList<'a> {
    pub fn header(&self) -> Header {
        self.header
    }

    /// The MIDI list octets, without the header.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.list
    }

    /// The commands in order. After an error the iterator ends.
    pub fn commands(&self) -> Commands<'a> {
        Commands {
            list: self.list,
            pos: 0,
            at_first: true,
            first_has_delta: self.header.first_has_delta,
            running: None,
            time: 0,
            delta: 0,
            partial: Partial::None,
            done: false,
        }
    }
}

/// A command begun but not yet handed out, because a Real-time octet inside it came first.
#[derive(Clone, Copy, Debug)]
enum Partial {
    None,
    Short {
        bytes: [u8; 3],
        have: usize,
    },
    /// Scanning SysEx data from `Commands::pos`; `starts` if no piece has been handed out yet
    /// and the command began with F0.
    SysEx {
        starts: bool,
    },
}

/// Iterator over the commands of a [`MidiList`].
#[derive(Clone, Debug)]
pub struct Commands<'a> {
    list: &'a [u8],
    pos: usize,
    at_first: bool,
    first_has_delta: bool,
    running: Option<u8>,
    time: u32,
    /// Delta time read but not yet handed out with a command.
    delta: u32,
    partial: Partial,
    done: bool,
}

impl<'a> Commands<'a> {
    fn command(&mut self, kind: CommandKind<'a>) -> Command<'a> {
        Command {
            delta: core::mem::take(&mut self.delta),
            time: self.time,
            kind,
        }
    }

    fn realtime(&mut self, byte: u8) -> Result<Command<'a>, Error> {
        let msg = ShortMessage::from_bytes(&[byte]).map_err(|_| Error::InterruptedCommand)?;
        Ok(self.command(CommandKind::Short(msg)))
    }

    fn read_delta(&mut self) -> Result<(), Error> {
        let mut value = 0u32;
        for i in 0..MAX_DELTA_OCTETS {
            let &b = self.list.get(self.pos + i).ok_or(Error::TruncatedCommand)?;
            value = (value << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                self.delta = value;
                self.time = self.time.wrapping_add(value);
                return Ok(());
            }
        }
        Err(Error::DeltaTooLong)
    }

    /// Starts the command at `pos` (after its delta time).
    fn start_command(&mut self) -> Result<Option<Command<'a>>, Error> {
        let &b = self.list.get(self.pos).ok_or(Error::TruncatedCommand)?;
        if !midi::is_status(b) {
            // Running status (RFC 6295 §3.2): only channel commands, only after one with status.
            let running = self.running.ok_or(Error::NoRunningStatus)?;
            self.partial = Partial::Short {
                bytes: [running, 0, 0],
                have: 1,
            };
            return self.continue_short();
        }
        self.pos += 1;
        match b {
            _ if midi::is_realtime(b) => self.realtime(b).map(Some),
            status::SYSEX_START | status::SYSEX_END => {
                // SysEx and System Common cancel running status; Real-time does not (§3.2).
                self.running = None;
                self.partial = Partial::SysEx {
                    starts: b == status::SYSEX_START,
                };
                self.continue_sysex()
            }
            status::UNDEFINED_F4 | status::UNDEFINED_F5 => {
                self.running = None;
                self.skip_undefined_data();
                let msg = ShortMessage::from_bytes(&[b]).map_err(|_| Error::BadSysEx)?;
                Ok(Some(self.command(CommandKind::Short(msg))))
            }
            _ => {
                self.running = midi::is_channel(b).then_some(b);
                self.partial = Partial::Short {
                    bytes: [b, 0, 0],
                    have: 1,
                };
                self.continue_short()
            }
        }
    }

    /// An undefined System Common command carries data octets up to a closing F7 in a MIDI list
    /// (the layout Wireshark's rtpmidi dissector decodes). The data has no meaning, so it is
    /// skipped. Without a closing F7 the status octet stands alone and what follows is the next
    /// delta time.
    fn skip_undefined_data(&mut self) {
        let rest = self.list.get(self.pos..).unwrap_or_default();
        if let Some(i) = rest.iter().position(|&b| midi::is_status(b)) {
            if rest[i] == status::SYSEX_END {
                self.pos += i + 1;
            }
        }
    }

    fn continue_short(&mut self) -> Result<Option<Command<'a>>, Error> {
        let Partial::Short {
            mut bytes,
            mut have,
        } = self.partial
        else {
            return Ok(None);
        };
        let need = 1 + midi::data_len(bytes[0]).unwrap_or(0);
        while have < need {
            let &b = self.list.get(self.pos).ok_or(Error::TruncatedCommand)?;
            self.pos += 1;
            if midi::is_realtime(b) {
                self.partial = Partial::Short { bytes, have };
                return self.realtime(b).map(Some);
            }
            if midi::is_status(b) {
                return Err(Error::InterruptedCommand);
            }
            bytes[have] = b;
            have += 1;
        }
        self.partial = Partial::None;
        let msg =
            ShortMessage::from_bytes(&bytes[..need]).map_err(|_| Error::InterruptedCommand)?;
        Ok(Some(self.command(CommandKind::Short(msg))))
    }

    fn continue_sysex(&mut self) -> Result<Option<Command<'a>>, Error> {
        let Partial::SysEx { starts } = self.partial else {
            return Ok(None);
        };
        let rest = self.list.get(self.pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| midi::is_status(b))
            .ok_or(Error::TruncatedCommand)?;
        let (data, &stop) = (&rest[..end], &rest[end]);
        if midi::is_realtime(stop) {
            if end == 0 {
                self.pos += 1;
                return self.realtime(stop).map(Some);
            }
            // Hand out the data before the Real-time octet as a piece that leaves the SysEx open.
            self.pos += end;
            self.partial = Partial::SysEx { starts: false };
            let kind = if starts {
                SegmentKind::First
            } else {
                SegmentKind::Middle
            };
            return Ok(Some(
                self.command(CommandKind::SysEx(SysExSegment { kind, data })),
            ));
        }
        let kind = SegmentKind::from_framing(starts, stop).ok_or(Error::BadSysEx)?;
        self.pos += end + 1;
        self.partial = Partial::None;
        Ok(Some(
            self.command(CommandKind::SysEx(SysExSegment { kind, data })),
        ))
    }

    fn step(&mut self) -> Result<Option<Command<'a>>, Error> {
        match self.partial {
            Partial::Short { .. } => return self.continue_short(),
            Partial::SysEx { .. } => return self.continue_sysex(),
            Partial::None => {}
        }
        if self.pos >= self.list.len() {
            return Ok(None);
        }
        // RFC 6295 §3.1: every command has a delta time, but the first only if Z is set.
        if !self.at_first || self.first_has_delta {
            self.read_delta()?;
        }
        self.at_first = false;
        self.start_command()
    }
}

impl<'a> Iterator for Commands<'a> {
    type Item = Result<Command<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl core::iter::FusedIterator for Commands<'_> {}

/// Why a command was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Not enough room left in the buffer or in LEN; nothing was written.
    Full,
    /// A delta time over [`MAX_DELTA`].
    DeltaTooLarge,
    /// A SysEx data octet with its top bit set.
    BadData,
}

/// Writes a MIDI list into a buffer, command by command, with running status, then the header
/// in front of it. Room for the long header is kept at the start; [`ListWriter::finish`] moves
/// the list down one octet when the short header suffices.
#[derive(Debug)]
pub struct ListWriter<'a> {
    buf: &'a mut [u8],
    /// End of the list written so far, an index into `buf`.
    pos: usize,
    /// Start of the last command written (after its delta time).
    last: usize,
    /// Where the list may end: the buffer or LEN, whichever is smaller.
    limit: usize,
    running: Option<u8>,
    first_has_delta: bool,
}

impl<'a> ListWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        let limit = buf.len().min(LONG_HEADER_LEN + MAX_LEN);
        ListWriter {
            buf,
            pos: LONG_HEADER_LEN,
            last: LONG_HEADER_LEN,
            limit,
            running: None,
            first_has_delta: false,
        }
    }

    /// Octets in the list so far.
    pub fn list_len(&self) -> usize {
        self.pos.saturating_sub(LONG_HEADER_LEN)
    }

    pub fn is_empty(&self) -> bool {
        self.list_len() == 0
    }

    /// Octets left for commands and their delta times.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.pos)
    }

    /// The octets of the last command written, without its delta time (a command written with
    /// running status lacks its status octet here too).
    pub fn last_written(&self) -> &[u8] {
        self.buf.get(self.last..self.pos).unwrap_or_default()
    }

    fn delta_len(&self, delta: u32) -> Result<usize, WriteError> {
        if delta > MAX_DELTA {
            return Err(WriteError::DeltaTooLarge);
        }
        // The first command's delta is left out when zero (Z clear).
        if self.is_empty() && delta == 0 {
            return Ok(0);
        }
        Ok(match delta {
            0..=0x7F => 1,
            0x80..=0x3FFF => 2,
            0x4000..=0x1F_FFFF => 3,
            _ => 4,
        })
    }

    fn write_delta(&mut self, delta: u32, len: usize) {
        if self.is_empty() {
            self.first_has_delta = len > 0;
        }
        for i in (0..len).rev() {
            let more = if i > 0 { 0x80 } else { 0 };
            self.buf[self.pos] = ((delta >> (7 * i)) as u8 & 0x7F) | more;
            self.pos += 1;
        }
    }

    /// Data octets a SysEx segment could carry if written now with this delta time.
    pub fn sysex_room(&self, delta: u32) -> usize {
        match self.delta_len(delta) {
            Ok(d) => self.remaining().saturating_sub(d + 2),
            Err(_) => 0,
        }
    }

    pub fn push(&mut self, delta: u32, kind: &CommandKind<'_>) -> Result<(), WriteError> {
        match kind {
            CommandKind::Short(msg) => self.push_short(delta, msg),
            CommandKind::SysEx(seg) => self.push_sysex(delta, seg.kind, seg.data),
        }
    }

    /// Appends a non-SysEx message. A channel message with the running status loses its status
    /// octet; undefined System Common (F4, F5) is closed by F7 as in a MIDI list.
    pub fn push_short(&mut self, delta: u32, msg: &ShortMessage) -> Result<(), WriteError> {
        let bytes = msg.as_bytes();
        let status = msg.status();
        let skip_status = midi::is_channel(status) && self.running == Some(status);
        let body = if skip_status { &bytes[1..] } else { bytes };
        let undefined = matches!(status, status::UNDEFINED_F4 | status::UNDEFINED_F5);
        let len = self.delta_len(delta)? + body.len() + usize::from(undefined);
        if len > self.remaining() {
            return Err(WriteError::Full);
        }
        self.write_delta(delta, len - body.len() - usize::from(undefined));
        self.last = self.pos;
        self.buf[self.pos..self.pos + body.len()].copy_from_slice(body);
        self.pos += body.len();
        if undefined {
            self.buf[self.pos] = status::SYSEX_END;
            self.pos += 1;
        }
        // Running status rules of RFC 6295 §3.2, as in MIDI 1.0.
        if midi::is_channel(status) {
            self.running = Some(status);
        } else if !midi::is_realtime(status) {
            self.running = None;
        }
        Ok(())
    }

    /// Appends a SysEx command or segment framed as `kind` says around `data`.
    pub fn push_sysex(
        &mut self,
        delta: u32,
        kind: SegmentKind,
        data: &[u8],
    ) -> Result<(), WriteError> {
        if data.iter().any(|&b| midi::is_status(b)) {
            return Err(WriteError::BadData);
        }
        let delta_len = self.delta_len(delta)?;
        if delta_len + data.len() + 2 > self.remaining() {
            return Err(WriteError::Full);
        }
        self.write_delta(delta, delta_len);
        self.last = self.pos;
        let (head, tail) = kind.framing();
        self.buf[self.pos] = head;
        self.buf[self.pos + 1..self.pos + 1 + data.len()].copy_from_slice(data);
        self.buf[self.pos + 1 + data.len()] = tail;
        self.pos += data.len() + 2;
        self.running = None;
        Ok(())
    }

    /// Writes the header and returns the length of the whole section at the start of the
    /// buffer (0 only if the buffer is empty).
    pub fn finish(self, journal: bool, phantom: bool) -> usize {
        let len = self.list_len();
        let header = Header::new(len, journal, phantom, self.first_has_delta);
        if self.buf.len() < LONG_HEADER_LEN {
            // No room for commands: an empty list, if even the short header fits.
            return match self.buf.first_mut() {
                Some(first) => {
                    header.emit(core::slice::from_mut(first));
                    SHORT_HEADER_LEN
                }
                None => 0,
            };
        }
        if !header.long {
            self.buf
                .copy_within(LONG_HEADER_LEN..self.pos, SHORT_HEADER_LEN);
        }
        header.emit(self.buf);
        header.buffer_len() + len
    }
}

/// Proptest strategies for MIDI messages, shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::midi::{self, MidiMessage, ShortMessage};
    use proptest::prelude::*;

    /// Any non-SysEx message: every channel, System Common and Real-time status.
    pub(crate) fn short_message() -> impl Strategy<Value = ShortMessage> {
        prop_oneof![
            (0x80u8..0xF0, any::<u8>(), any::<u8>()).prop_map(|(s, a, b)| ShortMessage::channel(
                s,
                s & 0x0F,
                a,
                b
            )),
            (0xF1u8..=0xFF)
                .prop_filter("not SysEx end", |&s| s != 0xF7)
                .prop_flat_map(|s| {
                    let n = midi::data_len(s).unwrap_or(0);
                    proptest::collection::vec(0u8..0x80, n).prop_map(move |d| {
                        let mut v = vec![s];
                        v.extend(d);
                        ShortMessage::from_bytes(&v).unwrap()
                    })
                }),
        ]
    }

    /// A whole SysEx of up to `max_data` data bytes.
    pub(crate) fn sysex(max_data: usize) -> impl Strategy<Value = MidiMessage> {
        proptest::collection::vec(0u8..0x80, 0..=max_data).prop_map(|d| {
            let mut v = vec![0xF0];
            v.extend(d);
            v.push(0xF7);
            MidiMessage::SysEx(v)
        })
    }

    /// Any message, SysEx (short ones) included.
    pub(crate) fn message() -> impl Strategy<Value = MidiMessage> {
        prop_oneof![
            6 => short_message().prop_map(MidiMessage::Short),
            1 => sysex(40),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(bytes: &[u8]) -> CommandKind<'static> {
        CommandKind::Short(ShortMessage::from_bytes(bytes).unwrap())
    }

    fn seg(kind: SegmentKind, data: &[u8]) -> CommandKind<'_> {
        CommandKind::SysEx(SysExSegment { kind, data })
    }

    /// (delta, time, kind) of every command; panics on a parse error.
    fn commands(payload: &[u8]) -> Vec<(u32, u32, CommandKind<'_>)> {
        let (list, _) = parse(payload).unwrap();
        list.commands()
            .map(|c| c.map(|c| (c.delta, c.time, c.kind)).unwrap())
            .collect()
    }

    /// The error that ends the iteration, if any.
    fn list_error(payload: &[u8]) -> Option<Error> {
        let (list, _) = parse(payload).unwrap();
        list.commands().find_map(Result::err)
    }

    #[test]
    fn single_note_on_short_header() {
        // One note-on, Z=0, short header: the common single-event packet (the reference C++
        // daemon and macOS send one command like this).
        let payload = [0x03, 0x90, 0x3C, 0x64];
        let (list, rest) = parse(&payload).unwrap();
        assert_eq!(
            list.header(),
            Header {
                journal: false,
                phantom: false,
                first_has_delta: false,
                len: 3,
                long: false
            }
        );
        assert!(rest.is_empty());
        assert_eq!(commands(&payload), vec![(0, 0, short(&[0x90, 0x3C, 0x64]))]);
    }

    #[test]
    fn single_note_on_long_header_small_len() {
        // B=1 with LEN 3 (`80 03 90 3C 64`, the macOS-style single note-on of the task brief):
        // the long form is legal for any LEN.
        let payload = [0x80, 0x03, 0x90, 0x3C, 0x64];
        let (list, rest) = parse(&payload).unwrap();
        assert!(list.header().long);
        assert_eq!(list.header().len, 3);
        assert_eq!(list.header().buffer_len(), 2);
        assert!(rest.is_empty());
        assert_eq!(commands(&payload), vec![(0, 0, short(&[0x90, 0x3C, 0x64]))]);
    }

    #[test]
    fn journal_follows_the_list() {
        // J=1: the bytes after LEN octets are the journal (here a made-up journal header).
        let payload = [0x43, 0x90, 0x3C, 0x64, 0x20, 0x00, 0x07];
        let (list, rest) = parse(&payload).unwrap();
        assert!(list.header().journal);
        assert_eq!(rest, &[0x20, 0x00, 0x07]);
        assert_eq!(list.commands().count(), 1);
    }

    #[test]
    fn mtc_quarter_frames_with_journal() {
        // Two MTC quarter frames 25 ticks apart, J set: the layout of macOS's MTC packets as
        // shared/notes/protocol.md describes them (a journal even for MTC); journal bytes made up.
        let payload = [0x45, 0xF1, 0x01, 0x19, 0xF1, 0x12, 0x00, 0x00, 0x09];
        let (list, rest) = parse(&payload).unwrap();
        assert_eq!(rest, &[0x00, 0x00, 0x09]);
        assert!(list.header().journal);
        assert_eq!(
            commands(&payload),
            vec![(0, 0, short(&[0xF1, 0x01])), (25, 25, short(&[0xF1, 0x12]))]
        );
    }

    #[test]
    fn long_header_len_above_15() {
        // B=1, LEN = 0x012 = 18: six note-ons with running status and zero deltas.
        let mut payload = vec![0x80, 0x12, 0x90, 0x3C, 0x64];
        for n in 0..5u8 {
            payload.extend_from_slice(&[0x00, 0x3D + n, 0x64]);
        }
        payload.push(0xAA); // a journal byte, not part of the list
        let (list, rest) = parse(&payload).unwrap();
        assert_eq!(list.header().len, 18);
        assert_eq!(rest, &[0xAA]);
        let got = commands(&payload);
        assert_eq!(got.len(), 6);
        assert_eq!(got[5].2, short(&[0x90, 0x41, 0x64]));
    }

    #[test]
    fn delta_times_of_one_to_four_octets() {
        // RFC 6295 §3.1: Z=1, so the first command has a delta time too; running status for
        // the second note-on; 1, 2 and 4 octet delta times.
        let list = [
            0x0A, 0x90, 0x3C, 0x64, // delta 10, note-on
            0x05, 0x3E, 0x64, // delta 5, running status
            0x81, 0x00, 0x80, 0x3C, 0x40, // delta 128, note-off
            0xFF, 0xFF, 0xFF, 0x7F, 0xF8, // delta 0x0FFFFFFF, clock
        ];
        let mut payload = vec![FLAG_B | FLAG_Z, list.len() as u8];
        payload.extend_from_slice(&list);
        assert_eq!(
            commands(&payload),
            vec![
                (10, 10, short(&[0x90, 0x3C, 0x64])),
                (5, 15, short(&[0x90, 0x3E, 0x64])),
                (128, 143, short(&[0x80, 0x3C, 0x40])),
                (MAX_DELTA, 143u32.wrapping_add(MAX_DELTA), short(&[0xF8])),
            ]
        );
    }

    #[test]
    fn delta_of_five_octets_is_an_error() {
        let payload = [FLAG_Z | 6, 0x80, 0x80, 0x80, 0x80, 0x00, 0xF8];
        assert_eq!(list_error(&payload), Some(Error::DeltaTooLong));
    }

    #[test]
    fn realtime_keeps_running_status_system_common_cancels_it() {
        // RFC 6295 §3.2: Real-time does not touch running status ...
        let payload = [0x08, 0x90, 0x3C, 0x64, 0x00, 0xF8, 0x00, 0x3E, 0x64];
        assert_eq!(
            commands(&payload),
            vec![
                (0, 0, short(&[0x90, 0x3C, 0x64])),
                (0, 0, short(&[0xF8])),
                (0, 0, short(&[0x90, 0x3E, 0x64])),
            ]
        );
        // ... System Common and SysEx cancel it.
        let common = [0x08, 0x90, 0x3C, 0x64, 0x00, 0xF6, 0x00, 0x3E, 0x64];
        assert_eq!(list_error(&common), Some(Error::NoRunningStatus));
        let sysex = [0x09, 0x90, 0x3C, 0x64, 0x00, 0xF0, 0xF7, 0x00, 0x3E, 0x64];
        assert_eq!(list_error(&sysex), Some(Error::NoRunningStatus));
        // The first command cannot use running status at all.
        assert_eq!(
            list_error(&[0x02, 0x3C, 0x64]),
            Some(Error::NoRunningStatus)
        );
    }

    #[test]
    fn every_message_type() {
        let messages: Vec<Vec<u8>> = vec![
            vec![0x80, 1, 2],
            vec![0x91, 3, 4],
            vec![0xA2, 5, 6],
            vec![0xB3, 7, 8],
            vec![0xC4, 9],
            vec![0xD5, 10],
            vec![0xE6, 11, 12],
            vec![0xF1, 13],
            vec![0xF2, 14, 15],
            vec![0xF3, 16],
            vec![0xF4],
            vec![0xF5],
            vec![0xF6],
            vec![0xF8],
            vec![0xF9],
            vec![0xFA],
            vec![0xFB],
            vec![0xFC],
            vec![0xFD],
            vec![0xFE],
            vec![0xFF],
        ];
        let mut buf = [0u8; 128];
        let mut w = ListWriter::new(&mut buf);
        for (i, m) in messages.iter().enumerate() {
            w.push_short(i as u32, &ShortMessage::from_bytes(m).unwrap())
                .unwrap();
        }
        let n = w.finish(false, false);
        let got = commands(&buf[..n]);
        assert_eq!(got.len(), messages.len());
        for (i, (m, (delta, _, kind))) in messages.iter().zip(got).enumerate() {
            assert_eq!(delta, i as u32);
            assert_eq!(kind, short(m));
        }
    }

    #[test]
    fn undefined_system_common_closed_by_f7() {
        // F4 with two data octets closed by F7, then a tune request.
        let payload = [0x06, 0xF4, 0x01, 0x02, 0xF7, 0x00, 0xF6];
        assert_eq!(
            commands(&payload),
            vec![(0, 0, short(&[0xF4])), (0, 0, short(&[0xF6]))]
        );
        // Without F7 the octet stands alone and the next octet is a delta time.
        let bare = [0x03, 0xF5, 0x05, 0xF6];
        assert_eq!(
            commands(&bare),
            vec![(0, 0, short(&[0xF5])), (5, 5, short(&[0xF6]))]
        );
        // The writer closes it with F7.
        let mut buf = [0u8; 8];
        let mut w = ListWriter::new(&mut buf);
        w.push_short(0, &ShortMessage::from_bytes(&[0xF4]).unwrap())
            .unwrap();
        let n = w.finish(false, false);
        assert_eq!(&buf[..n], &[0x02, 0xF4, 0xF7]);
    }

    #[test]
    fn sysex_segment_kinds() {
        // One SysEx `F0 01 02 03 04 F7` segmented per RFC 6295 §3.2 Figure 5: first F0..F0,
        // middle F7..F0, last F7..F7 (here empty, which the RFC allows for the last), and a
        // whole one and a cancel after them.
        let list = [
            0xF0, 0x01, 0x02, 0xF0, // first
            0x00, 0xF7, 0x03, 0x04, 0xF0, // middle
            0x00, 0xF7, 0xF7, // last, empty
            0x01, 0xF0, 0x7D, 0xF7, // whole
            0x00, 0xF0, 0x05, 0xF0, // first
            0x00, 0xF7, 0xF4, // cancel
        ];
        let mut payload = vec![FLAG_B, list.len() as u8];
        payload.extend_from_slice(&list);
        assert_eq!(
            commands(&payload),
            vec![
                (0, 0, seg(SegmentKind::First, &[1, 2])),
                (0, 0, seg(SegmentKind::Middle, &[3, 4])),
                (0, 0, seg(SegmentKind::Last, &[])),
                (1, 1, seg(SegmentKind::Whole, &[0x7D])),
                (0, 1, seg(SegmentKind::First, &[5])),
                (0, 1, seg(SegmentKind::Cancel, &[])),
            ]
        );
    }

    #[test]
    fn realtime_inside_sysex_is_pulled_out() {
        // `F0 01 F8 02 FE F7`: clock and active sensing inside a whole SysEx, then a note.
        let list = [0xF0, 0x01, 0xF8, 0x02, 0xFE, 0xF7, 0x03, 0x90, 0x3C, 0x64];
        let mut payload = vec![FLAG_Z | (list.len() as u8 + 1), 0x02];
        payload.extend_from_slice(&list);
        assert_eq!(
            commands(&payload),
            vec![
                (2, 2, seg(SegmentKind::First, &[1])),
                (0, 2, short(&[0xF8])),
                (0, 2, seg(SegmentKind::Middle, &[2])),
                (0, 2, short(&[0xFE])),
                (0, 2, seg(SegmentKind::Last, &[])),
                (3, 5, short(&[0x90, 0x3C, 0x64])),
            ]
        );
        // Right after the head octet: no empty piece.
        let head = [0x05, 0xF0, 0xF8, 0x01, 0x02, 0xF7];
        assert_eq!(
            commands(&head),
            vec![
                (0, 0, short(&[0xF8])),
                (0, 0, seg(SegmentKind::Whole, &[1, 2])),
            ]
        );
    }

    #[test]
    fn realtime_inside_channel_command_is_pulled_out() {
        let payload = [0x05, 0x90, 0x3C, 0xF8, 0xFA, 0x64];
        assert_eq!(
            commands(&payload),
            vec![
                (0, 0, short(&[0xF8])),
                (0, 0, short(&[0xFA])),
                (0, 0, short(&[0x90, 0x3C, 0x64])),
            ]
        );
    }

    #[test]
    fn malformed_lists() {
        // A status inside a note-on.
        assert_eq!(
            list_error(&[0x04, 0x90, 0x3C, 0x80, 0x3C]),
            Some(Error::InterruptedCommand)
        );
        // A channel status inside a SysEx.
        assert_eq!(
            list_error(&[0x04, 0xF0, 0x01, 0x90, 0xF7]),
            Some(Error::BadSysEx)
        );
        // A SysEx without its tail.
        assert_eq!(
            list_error(&[0x02, 0xF0, 0x01]),
            Some(Error::TruncatedCommand)
        );
        // A delta time with no command after it.
        assert_eq!(
            list_error(&[0x04, 0x90, 0x3C, 0x64, 0x05]),
            Some(Error::TruncatedCommand)
        );
        // After an error the iterator stays ended.
        let payload = [0x05, 0xF8, 0x00, 0x3C, 0x00, 0xF8];
        let (list, _) = parse(&payload).unwrap();
        let mut it = list.commands();
        assert!(matches!(it.next(), Some(Ok(_))));
        assert_eq!(it.next(), Some(Err(Error::NoRunningStatus)));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn truncated_header_and_list() {
        assert_eq!(parse(&[]), Err(Error::Truncated));
        // B set but no second LEN octet.
        assert_eq!(parse(&[0x80]), Err(Error::Truncated));
        // LEN larger than what follows, short and long form.
        assert_eq!(parse(&[0x03, 0x90, 0x3C]), Err(Error::Truncated));
        assert_eq!(parse(&[0x81, 0x00, 0x90]), Err(Error::Truncated));
        // Every cut of a list, with LEN fixed up to the cut, either ends at a command boundary
        // or reports a truncated command.
        let list = [
            0x90, 0x3C, 0x64, 0x81, 0x00, 0x3E, 0x64, 0x00, 0xF0, 0x01, 0xF7, 0x00, 0xF2, 0x01,
            0x02,
        ];
        let boundaries = [0, 3, 7, 11, 15];
        for cut in 0..=list.len() {
            let mut payload = vec![cut as u8];
            payload.extend_from_slice(&list[..cut]);
            let err = list_error(&payload);
            if boundaries.contains(&cut) {
                assert_eq!(err, None, "cut {cut}");
            } else {
                assert_eq!(err, Some(Error::TruncatedCommand), "cut {cut}");
            }
        }
    }

    #[test]
    fn header_round_trip_all_flags() {
        for bits in 0..16u8 {
            for len in [0usize, 1, 15, 16, 255, 256, MAX_LEN] {
                let h = Header::new(len, bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                let mut buf = [0u8; 2];
                h.emit(&mut buf);
                assert_eq!(Header::parse(&buf[..h.buffer_len()]), Ok(h));
                assert_eq!(h.long, len > MAX_SHORT_LEN);
            }
        }
        // The exact octets: J, Z, P and LEN 5 short; B with LEN 0x123 long.
        let mut buf = [0u8; 2];
        Header::new(5, true, true, true).emit(&mut buf);
        assert_eq!(buf[0], 0x75);
        Header::new(0x123, false, false, false).emit(&mut buf);
        assert_eq!(buf, [0x81, 0x23]);
    }

    #[test]
    fn writer_uses_running_status_and_short_header() {
        let mut buf = [0u8; 64];
        let mut w = ListWriter::new(&mut buf);
        let on = |n| ShortMessage::from_bytes(&[0x90, n, 0x64]).unwrap();
        w.push_short(0, &on(0x3C)).unwrap();
        w.push_short(0, &on(0x3E)).unwrap();
        w.push_short(0, &ShortMessage::from_bytes(&[0xF8]).unwrap())
            .unwrap();
        w.push_short(200, &on(0x40)).unwrap();
        assert_eq!(w.last_written(), &[0x40, 0x64]);
        let n = w.finish(false, false);
        assert_eq!(
            &buf[..n],
            &[0x0C, 0x90, 0x3C, 0x64, 0x00, 0x3E, 0x64, 0x00, 0xF8, 0x81, 0x48, 0x40, 0x64]
        );
    }

    #[test]
    fn writer_long_header_and_first_delta() {
        let mut buf = [0u8; 64];
        let mut w = ListWriter::new(&mut buf);
        w.push_sysex(7, SegmentKind::Whole, &[0x7D; 14]).unwrap();
        let n = w.finish(true, false);
        // Z and J set, B because LEN = 1 + 16 = 17.
        assert_eq!(&buf[..3], &[FLAG_B | FLAG_J | FLAG_Z, 17, 0x07]);
        assert_eq!(n, 2 + 17);
        assert_eq!(
            commands(&buf[..n]),
            vec![(7, 7, seg(SegmentKind::Whole, &[0x7D; 14]))]
        );
    }

    #[test]
    fn writer_refuses_without_writing() {
        let mut buf = [0u8; 6];
        let mut w = ListWriter::new(&mut buf);
        let on = ShortMessage::from_bytes(&[0x90, 0x3C, 0x64]).unwrap();
        w.push_short(0, &on).unwrap();
        assert_eq!(w.remaining(), 1);
        assert_eq!(w.push_short(0, &on), Err(WriteError::Full));
        assert_eq!(
            w.push_sysex(0, SegmentKind::Whole, &[]),
            Err(WriteError::Full)
        );
        assert_eq!(
            w.push_short(MAX_DELTA + 1, &on),
            Err(WriteError::DeltaTooLarge)
        );
        assert_eq!(
            w.push_sysex(0, SegmentKind::Whole, &[0x80]),
            Err(WriteError::BadData)
        );
        let n = w.finish(false, false);
        assert_eq!(&buf[..n], &[0x03, 0x90, 0x3C, 0x64]);
        // Tiny buffers: an empty list if the header fits, else nothing.
        let mut one = [0xFFu8; 1];
        assert_eq!(ListWriter::new(&mut one).finish(true, false), 1);
        assert_eq!(one, [FLAG_J]);
        assert_eq!(ListWriter::new(&mut []).finish(false, false), 0);
    }

    #[test]
    fn writer_caps_list_at_max_len() {
        let mut buf = vec![0u8; 8000];
        let mut w = ListWriter::new(&mut buf);
        assert_eq!(w.sysex_room(0), MAX_LEN - 2);
        w.push_sysex(0, SegmentKind::Whole, &vec![1; MAX_LEN - 2])
            .unwrap();
        assert_eq!(w.remaining(), 0);
        let n = w.finish(false, false);
        assert_eq!(n, 2 + MAX_LEN);
        assert_eq!(&buf[..2], &[0x8F, 0xFF]);
    }

    mod prop {
        use super::super::tests_support::short_message;
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Item {
            Short(ShortMessage),
            SysEx(SegmentKind, Vec<u8>),
        }

        fn item() -> impl Strategy<Value = Item> {
            let kind = prop_oneof![
                Just(SegmentKind::Whole),
                Just(SegmentKind::First),
                Just(SegmentKind::Middle),
                Just(SegmentKind::Last),
                Just(SegmentKind::Cancel),
            ];
            prop_oneof![
                4 => short_message().prop_map(Item::Short),
                1 => (kind, proptest::collection::vec(0u8..0x80, 0..40))
                    .prop_map(|(k, d)| Item::SysEx(k, d)),
            ]
        }

        fn delta() -> impl Strategy<Value = u32> {
            prop_oneof![Just(0u32), 0u32..0x80, 0u32..0x4000, 0u32..=MAX_DELTA]
        }

        proptest! {
            #[test]
            fn write_then_parse_is_identity(
                items in proptest::collection::vec((delta(), item()), 0..60),
                journal in any::<bool>(),
                phantom in any::<bool>(),
            ) {
                let mut buf = vec![0u8; 8192];
                let mut w = ListWriter::new(&mut buf);
                let mut written = Vec::new();
                for (d, it) in &items {
                    let kind = match it {
                        Item::Short(m) => CommandKind::Short(*m),
                        Item::SysEx(k, data) => seg(*k, data),
                    };
                    if w.push(*d, &kind).is_ok() {
                        written.push((*d, kind));
                    }
                }
                let n = w.finish(journal, phantom);
                let (list, rest) = parse(&buf[..n]).unwrap();
                prop_assert!(rest.is_empty());
                prop_assert_eq!(list.header().journal, journal);
                prop_assert_eq!(list.header().phantom, phantom);
                let got: Vec<_> = list.commands().map(|c| c.map(|c| (c.delta, c.kind))).collect();
                let want: Vec<_> = written.into_iter().map(Ok).collect();
                prop_assert_eq!(got, want);
            }

            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok((list, _)) = parse(&bytes) {
                    for c in list.commands() {
                        let _ = c;
                    }
                }
            }
        }
    }
}
