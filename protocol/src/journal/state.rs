//! The MIDI state the journal protects, as one model shared by sender and receiver.
//!
//! Every field carries the stamp (extended RTP sequence number) of the command that last
//! changed it: the sender journals what changed since the checkpoint, the receiver compares a
//! journal with its values. [`MidiState::same_music`] compares values only.

use crate::midi::status;

/// Parameters (RPN/NRPN) remembered per channel; the oldest is forgotten beyond this.
pub const PARAMS_PER_CHANNEL: usize = 16;
/// The RPN/NRPN number that means "no parameter selected" (MSB and LSB 127).
pub const NULL_PARAM: u16 = 0x3FFF;
/// Longest SysEx remembered as the last one seen, for [`MidiState::same_music`].
pub const LAST_SYSEX_MAX: usize = 256;

/// A value and the stamp of the command that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped<T> {
    pub value: T,
    pub stamp: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    pub on: bool,
    pub velocity: u8,
    /// Release velocity of the last NoteOff (64 for a NoteOn with velocity 0).
    pub off_velocity: u8,
    pub stamp: Option<u32>,
}

impl Note {
    /// A note never played.
    pub const UNTOUCHED: Note = Note {
        on: false,
        velocity: 0,
        off_velocity: 0,
        stamp: None,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId {
    pub nrpn: bool,
    pub number: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub id: ParamId,
    pub msb: Option<u8>,
    pub lsb: Option<u8>,
    pub stamp: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub program: u8,
    /// Bank select (controllers 0 and 32) in force when the program changed, if any was sent.
    pub bank: Option<(u8, u8)>,
}

/// Controllers 98-101 as last written, and which pair was written last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub rpn: u16,
    pub nrpn: u16,
    pub active_nrpn: Option<bool>,
    pub stamp: Option<u32>,
}

impl Selection {
    /// The selected parameter, `None` when nothing or the null parameter is selected.
    pub fn current(&self) -> Option<ParamId> {
        let nrpn = self.active_nrpn?;
        let number = if nrpn { self.nrpn } else { self.rpn };
        (number != NULL_PARAM).then_some(ParamId { nrpn, number })
    }
}

#[derive(Clone, Debug)]
pub struct ChannelState {
    pub notes: [Note; 128],
    pub controllers: [Option<Stamped<u8>>; 128],
    pub program: Option<Stamped<Program>>,
    pub bend: Option<Stamped<u16>>,
    pub pressure: Option<Stamped<u8>>,
    pub poly: [Option<Stamped<u8>>; 128],
    pub params: [Option<Param>; PARAMS_PER_CHANNEL],
    pub selection: Selection,
    /// Latest stamp of anything on this channel.
    pub last: Option<u32>,
    /// Which `controllers` and `poly` entries are set and not yet forgotten (see
    /// [`MidiState::forget_before`]): the journal walks these bits, not 128 entries each.
    pub(crate) controllers_set: u128,
    pub(crate) poly_set: u128,
    /// Notes with a stamp not yet forgotten, in the order they last changed.
    pub(crate) note_order: NoteOrder,
    /// Whether the fields below are kept (a sender's state): a receiver's does not need them
    /// and skips their upkeep.
    pub(crate) track_notes: bool,
    /// Whether stamps never went back along `note_order` (always so for a sender that
    /// records packets in order): the journal then finds what changed in the last packet at
    /// the end of the lists, and copies `on_logs` as they are.
    pub(crate) ordered: bool,
    /// Chapter N logs of the notes on, not yet forgotten.
    pub(crate) on_logs: OnLogs,
    /// Notes in `on_logs`; notes off not yet forgotten; those of them released with a
    /// velocity other than 64 (chapter E).
    pub(crate) on_set: u128,
    pub(crate) off_set: u128,
    pub(crate) extras_set: u128,
}

/// Chapter N note logs (RFC 6295 A.6) of the notes on, as they go on the wire (S set, Y set),
/// oldest first and ties by note number, with their stamps: the journal copies them rather
/// than gathering and sorting up to 128 notes for every packet.
#[derive(Clone, Debug)]
pub(crate) struct OnLogs {
    logs: [[u8; 2]; 128],
    stamps: [u32; 128],
    /// The logs are at `start..start + len`: releasing a note of the older half moves the
    /// older logs up one, so notes released in the order they were played (a chord, a
    /// scale) move nothing.
    start: usize,
    len: usize,
}

impl OnLogs {
    const EMPTY: OnLogs = OnLogs {
        logs: [[0; 2]; 128],
        stamps: [0; 128],
        start: 0,
        len: 0,
    };

    /// The logs, oldest first.
    pub(crate) fn logs(&self) -> &[[u8; 2]] {
        &self.logs[self.start..self.start + self.len]
    }

    fn remove(&mut self, n: u8) {
        let (start, end) = (self.start, self.start + self.len);
        let Some(k) = self.logs[start..end].iter().position(|l| l[0] & 0x7F == n) else {
            return;
        };
        let i = start + k;
        if k < self.len / 2 {
            self.logs.copy_within(start..i, start + 1);
            self.stamps.copy_within(start..i, start + 1);
            self.start += 1;
        } else {
            self.logs.copy_within(i + 1..end, i);
            self.stamps.copy_within(i + 1..end, i);
        }
        self.len -= 1;
    }

    /// Appends note `n` (not in the list), before the notes of the same stamp above it.
    fn push(&mut self, n: u8, velocity: u8, stamp: u32) {
        if self.len == self.logs.len() {
            return;
        }
        if self.start + self.len == self.logs.len() {
            let end = self.start + self.len;
            self.logs.copy_within(self.start..end, 0);
            self.stamps.copy_within(self.start..end, 0);
            self.start = 0;
        }
        let (start, end) = (self.start, self.start + self.len);
        let mut at = end;
        while at > start && self.stamps[at - 1] == stamp && self.logs[at - 1][0] & 0x7F > n {
            at -= 1;
        }
        self.logs.copy_within(at..end, at + 1);
        self.stamps.copy_within(at..end, at + 1);
        self.logs[at] = [0x80 | n, 0x80 | (velocity & 0x7F)];
        self.stamps[at] = stamp;
        self.len += 1;
    }

    /// Keeps the logs `keep` accepts; returns the notes kept.
    fn retain(&mut self, keep: impl Fn(u32) -> bool) -> u128 {
        let mut kept = 0;
        let mut set = 0u128;
        for i in self.start..self.start + self.len {
            if keep(self.stamps[i]) {
                self.logs[kept] = self.logs[i];
                self.stamps[kept] = self.stamps[i];
                set |= 1 << (self.logs[i][0] & 0x7F);
                kept += 1;
            }
        }
        self.start = 0;
        self.len = kept;
        set
    }
}

impl Default for ChannelState {
    fn default() -> Self {
        ChannelState::EMPTY
    }
}

/// No note number: the end of a [`NoteOrder`] list.
const NIL: u8 = 0xFF;

/// Note numbers in the order they last changed, oldest first: a doubly linked list through two
/// arrays, so moving a note to the end costs the same whatever the number of notes, and the
/// journal finds the notes of the last packet at the end.
#[derive(Clone, Debug)]
pub(crate) struct NoteOrder {
    prev: [u8; 128],
    next: [u8; 128],
    head: u8,
    tail: u8,
    linked: u128,
}

impl NoteOrder {
    const EMPTY: NoteOrder = NoteOrder {
        prev: [NIL; 128],
        next: [NIL; 128],
        head: NIL,
        tail: NIL,
        linked: 0,
    };

    fn unlink(&mut self, n: u8) {
        let i = usize::from(n);
        if self.linked & (1 << i) == 0 {
            return;
        }
        let (p, x) = (self.prev[i], self.next[i]);
        match p {
            NIL => self.head = x,
            p => self.next[usize::from(p)] = x,
        }
        match x {
            NIL => self.tail = p,
            x => self.prev[usize::from(x)] = p,
        }
        self.linked &= !(1 << i);
    }

    /// Moves note `n` (0-127) to the end, as the latest changed.
    fn touch(&mut self, n: u8) {
        self.unlink(n);
        let i = usize::from(n);
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        match self.tail {
            NIL => self.head = n,
            t => self.next[usize::from(t)] = n,
        }
        self.tail = n;
        self.linked |= 1 << i;
    }

    /// Note numbers, oldest change first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        let mut at = self.head;
        core::iter::from_fn(move || {
            let n = at;
            at = *self.next.get(usize::from(n))?;
            Some(n)
        })
    }

    /// Note numbers, latest change first.
    pub(crate) fn iter_rev(&self) -> impl Iterator<Item = u8> + '_ {
        let mut at = self.tail;
        core::iter::from_fn(move || {
            let n = at;
            at = *self.prev.get(usize::from(n))?;
            Some(n)
        })
    }

    fn last(&self) -> Option<u8> {
        (self.tail != NIL).then_some(self.tail)
    }
}

/// Bit numbers set in `bits`, lowest first.
pub(crate) fn bits(mut bits: u128) -> impl Iterator<Item = u8> {
    core::iter::from_fn(move || {
        let n = bits.trailing_zeros();
        bits &= bits.wrapping_sub(1);
        (n < 128).then_some(n as u8)
    })
}

/// Controllers that change state in ways chapter C does not carry as a value
/// (RFC 6295 A.3: the parameter system belongs to chapter M; mode commands act on notes).
pub fn controller_journalled(number: u8) -> bool {
    !matches!(number, 6 | 38 | 96..=101 | 120 | 121 | 123)
}

impl ChannelState {
    /// A channel nothing was played on (a constant, so an absent channel can be read as one).
    pub const EMPTY: ChannelState = ChannelState {
        notes: [Note::UNTOUCHED; 128],
        controllers: [None; 128],
        program: None,
        bend: None,
        pressure: None,
        poly: [None; 128],
        params: [None; PARAMS_PER_CHANNEL],
        selection: Selection {
            rpn: NULL_PARAM,
            nrpn: NULL_PARAM,
            active_nrpn: None,
            stamp: None,
        },
        last: None,
        controllers_set: 0,
        poly_set: 0,
        note_order: NoteOrder::EMPTY,
        track_notes: false,
        ordered: true,
        on_logs: OnLogs::EMPTY,
        on_set: 0,
        off_set: 0,
        extras_set: 0,
    };

    fn set_ctrl(&mut self, number: u8, value: u8, stamp: u32) {
        if let Some(c) = self.controllers.get_mut(usize::from(number)) {
            *c = Some(Stamped { value, stamp });
            self.controllers_set |= 1 << number;
        }
    }

    /// Sets note `n` (0-127) as a command stamped `note.stamp` (always set) left it.
    fn set_note(&mut self, n: u8, note: Note) {
        if !self.track_notes {
            self.notes[usize::from(n)] = note;
            return;
        }
        let stamp = note.stamp.unwrap_or_default();
        let latest = self.note_order.last();
        if let Some(prev) = latest.and_then(|l| self.notes[usize::from(l)].stamp) {
            self.ordered &= super::sender::at_or_after(stamp, prev);
        }
        self.notes[usize::from(n)] = note;
        self.note_order.touch(n);
        let bit = 1u128 << n;
        if self.on_set & bit != 0 {
            self.on_logs.remove(n);
        }
        self.on_set &= !bit;
        self.off_set &= !bit;
        self.extras_set &= !bit;
        if note.on {
            self.on_logs.push(n, note.velocity, stamp);
            self.on_set |= bit;
        } else {
            self.off_set |= bit;
            if note.off_velocity != 64 {
                self.extras_set |= bit;
            }
        }
    }

    fn all_notes_off(&mut self, stamp: u32) {
        for n in 0..128u8 {
            if self.notes[usize::from(n)].on {
                self.set_note(
                    n,
                    Note {
                        on: false,
                        velocity: 0,
                        off_velocity: 64,
                        stamp: Some(stamp),
                    },
                );
            }
        }
    }

    /// Stops tracking entries last changed before `checkpoint` (they stay as they are):
    /// the journal no longer carries them.
    fn forget_before(&mut self, checkpoint: u32) {
        let old = |stamp: u32| !super::sender::at_or_after(stamp, checkpoint);
        for c in bits(self.controllers_set) {
            if self.controllers[usize::from(c)].is_none_or(|v| old(v.stamp)) {
                self.controllers_set &= !(1 << c);
            }
        }
        for n in bits(self.poly_set) {
            if self.poly[usize::from(n)].is_none_or(|v| old(v.stamp)) {
                self.poly_set &= !(1 << n);
            }
        }
        for n in bits(self.note_order.linked) {
            if self.notes[usize::from(n)].stamp.is_none_or(old) {
                self.note_order.unlink(n);
            }
        }
        self.on_set = self.on_logs.retain(|stamp| !old(stamp));
        self.off_set &= self.note_order.linked;
        self.extras_set &= self.note_order.linked;
        if self.note_order.linked == 0 {
            self.ordered = true;
        }
    }

    pub fn param(&self, id: ParamId) -> Option<&Param> {
        self.params.iter().flatten().find(|p| p.id == id)
    }

    /// The slot for `id`, taking the oldest one if the table is full.
    fn param_slot(&mut self, id: ParamId, stamp: u32) -> &mut Param {
        let idx = self
            .params
            .iter()
            .position(|p| p.is_some_and(|p| p.id == id))
            .or_else(|| self.params.iter().position(Option::is_none))
            .or_else(|| {
                (0..PARAMS_PER_CHANNEL).min_by_key(|&i| self.params[i].map_or(0, |p| p.stamp))
            })
            .unwrap_or(0);
        let slot = &mut self.params[idx];
        let fresh = Param {
            id,
            msb: None,
            lsb: None,
            stamp,
        };
        if slot.is_some_and(|p| p.id != id) {
            *slot = Some(fresh);
        }
        slot.get_or_insert(fresh)
    }

    fn data_entry(&mut self, msb: bool, value: u8, stamp: u32) {
        let Some(id) = self.selection.current() else {
            return;
        };
        let p = self.param_slot(id, stamp);
        if msb {
            p.msb = Some(value);
        } else {
            p.lsb = Some(value);
        }
        p.stamp = stamp;
    }

    /// Sets the selection as the four controllers 98-101 would.
    pub fn select(&mut self, id: ParamId, stamp: u32) {
        if id.nrpn {
            self.selection.nrpn = id.number;
        } else {
            self.selection.rpn = id.number;
        }
        self.selection.active_nrpn = Some(id.nrpn);
        self.selection.stamp = Some(stamp);
    }

    fn control_change(&mut self, number: u8, value: u8, stamp: u32) {
        let sel = &mut self.selection;
        match number {
            6 => self.data_entry(true, value, stamp),
            38 => self.data_entry(false, value, stamp),
            // Data increment/decrement: not modelled (device-specific step sizes).
            96 | 97 => {}
            98..=101 => {
                let nrpn = number <= 99;
                let pair = if nrpn { &mut sel.nrpn } else { &mut sel.rpn };
                *pair = if number % 2 == 1 {
                    (u16::from(value) << 7) | (*pair & 0x7F)
                } else {
                    (*pair & !0x7F) | u16::from(value)
                };
                sel.active_nrpn = Some(nrpn);
                sel.stamp = Some(stamp);
            }
            120 | 123 => self.all_notes_off(stamp),
            // Reset All Controllers, as MIDI RP-015 lists its effects.
            121 => {
                for (c, v) in [(1, 0), (11, 127), (64, 0), (65, 0), (66, 0), (67, 0)] {
                    self.set_ctrl(c, v, stamp);
                }
                self.bend = Some(Stamped {
                    value: 0x2000,
                    stamp,
                });
                self.pressure = Some(Stamped { value: 0, stamp });
                for (n, p) in self.poly.iter_mut().enumerate() {
                    if let Some(p) = p {
                        *p = Stamped { value: 0, stamp };
                        self.poly_set |= 1 << n;
                    }
                }
                self.select(
                    ParamId {
                        nrpn: false,
                        number: NULL_PARAM,
                    },
                    stamp,
                );
                self.selection.nrpn = NULL_PARAM;
            }
            124..=127 => {
                self.set_ctrl(number, value, stamp);
                self.all_notes_off(stamp);
            }
            _ => self.set_ctrl(number, value, stamp),
        }
    }

    /// Applies one channel voice message (status and data bytes, channel already chosen).
    pub fn apply(&mut self, kind: u8, d1: u8, d2: u8, stamp: u32) {
        let n = usize::from(d1 & 0x7F);
        match kind {
            status::NOTE_OFF => self.set_note(
                d1 & 0x7F,
                Note {
                    on: false,
                    velocity: 0,
                    off_velocity: d2,
                    stamp: Some(stamp),
                },
            ),
            status::NOTE_ON if d2 == 0 => self.set_note(
                d1 & 0x7F,
                Note {
                    on: false,
                    velocity: 0,
                    off_velocity: 64,
                    stamp: Some(stamp),
                },
            ),
            status::NOTE_ON => self.set_note(
                d1 & 0x7F,
                Note {
                    on: true,
                    velocity: d2,
                    off_velocity: 0,
                    stamp: Some(stamp),
                },
            ),
            status::POLY_PRESSURE => {
                self.poly[n] = Some(Stamped { value: d2, stamp });
                self.poly_set |= 1 << n;
            }
            status::CONTROL_CHANGE => self.control_change(d1, d2, stamp),
            status::PROGRAM_CHANGE => {
                // Chapter P's B bit: a bank is journalled when both bank select halves were sent.
                let bank = match (self.controllers[0], self.controllers[32]) {
                    (Some(m), Some(l)) => Some((m.value, l.value)),
                    _ => None,
                };
                self.program = Some(Stamped {
                    value: Program { program: d1, bank },
                    stamp,
                });
            }
            status::CHANNEL_PRESSURE => self.pressure = Some(Stamped { value: d1, stamp }),
            status::PITCH_BEND => {
                self.bend = Some(Stamped {
                    value: u16::from(d1) | (u16::from(d2) << 7),
                    stamp,
                })
            }
            _ => return,
        }
        self.last = Some(stamp);
    }

    fn params_within(&self, other: &ChannelState) -> bool {
        self.params.iter().flatten().all(|p| {
            other
                .param(p.id)
                .is_some_and(|q| (q.msb, q.lsb) == (p.msb, p.lsb))
        })
    }

    fn same_music(&self, other: &ChannelState) -> bool {
        let v = |c: &Option<Stamped<u8>>| c.map(|s| s.value);
        self.notes
            .iter()
            .zip(&other.notes)
            .all(|(a, b)| a.on == b.on)
            && self
                .controllers
                .iter()
                .zip(&other.controllers)
                .all(|(a, b)| v(a) == v(b))
            && self.program.map(|p| p.value) == other.program.map(|p| p.value)
            && self.bend.map(|p| p.value) == other.bend.map(|p| p.value)
            && v(&self.pressure) == v(&other.pressure)
            && self.poly.iter().zip(&other.poly).all(|(a, b)| v(a) == v(b))
            && self.selection.current() == other.selection.current()
            && self.params_within(other)
    }
}

/// A count (mod 128) of a system command with its stamp.
pub type Count = Option<Stamped<u8>>;

fn bump(c: &mut Count, stamp: u32) {
    let value = c.map_or(0, |s| s.value).wrapping_add(1) & 0x7F;
    *c = Some(Stamped { value, stamp });
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sequencer {
    pub running: bool,
    /// Song position in MIDI clocks (6 per Song Position Pointer unit).
    pub position: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeCode {
    /// Last quarter-frame nibble of each of the eight kinds.
    pub nibbles: [u8; 8],
    /// Kind (0-7) of the last quarter frame.
    pub point: u8,
    /// Which kinds were seen.
    pub seen: u8,
}

#[derive(Clone, Debug, Default)]
pub struct SystemState {
    pub reset: Count,
    pub tune_request: Count,
    pub song_select: Option<Stamped<u8>>,
    pub f4: Count,
    pub f5: Count,
    pub f9: Count,
    pub fd: Count,
    pub active_sensing: Count,
    pub sequencer: Option<Stamped<Sequencer>>,
    pub timecode: Option<Stamped<TimeCode>>,
    pub last: Option<u32>,
}

impl SystemState {
    /// Applies one system common or realtime message (not SysEx).
    pub fn apply(&mut self, msg: &[u8], stamp: u32) {
        let (Some(&st), d1, d2) = (msg.first(), msg.get(1).copied(), msg.get(2).copied()) else {
            return;
        };
        let mut seq = self.sequencer.map(|s| s.value).unwrap_or_default();
        match st {
            status::RESET => bump(&mut self.reset, stamp),
            status::TUNE_REQUEST => bump(&mut self.tune_request, stamp),
            status::UNDEFINED_F4 => bump(&mut self.f4, stamp),
            status::UNDEFINED_F5 => bump(&mut self.f5, stamp),
            status::UNDEFINED_F9 => bump(&mut self.f9, stamp),
            status::UNDEFINED_FD => bump(&mut self.fd, stamp),
            status::ACTIVE_SENSING => bump(&mut self.active_sensing, stamp),
            status::SONG_SELECT => {
                self.song_select = Some(Stamped {
                    value: d1.unwrap_or(0) & 0x7F,
                    stamp,
                })
            }
            status::SONG_POSITION => {
                let spp =
                    u32::from(d1.unwrap_or(0) & 0x7F) | (u32::from(d2.unwrap_or(0) & 0x7F) << 7);
                seq.position = spp * 6;
            }
            status::START => {
                seq.running = true;
                seq.position = 0;
            }
            status::CONTINUE => seq.running = true,
            status::STOP => seq.running = false,
            status::CLOCK if seq.running => seq.position = (seq.position + 1) & 0x7_FFFF,
            status::MTC_QUARTER_FRAME => {
                let d = d1.unwrap_or(0);
                let kind = (d >> 4) & 7;
                let mut tc = self.timecode.map(|t| t.value).unwrap_or_default();
                tc.nibbles[usize::from(kind)] = d & 0x0F;
                tc.point = kind;
                tc.seen |= 1 << kind;
                self.timecode = Some(Stamped { value: tc, stamp });
            }
            _ => return,
        }
        if matches!(
            st,
            status::SONG_POSITION | status::START | status::CONTINUE | status::STOP
        ) || (st == status::CLOCK && seq.running)
        {
            self.sequencer = Some(Stamped { value: seq, stamp });
        }
        self.last = Some(stamp);
    }
}

/// Reassembles SysEx segments (RFC 6295 §3.2: F0..F0 first, F7..F0 middle, F7..F7 last,
/// F7..F4 cancel, F0..F7 whole) into complete `F0 .. F7` commands, within a fixed capacity.
#[derive(Clone, Debug)]
pub struct SysexAssembler {
    buf: Vec<u8>,
    cap: usize,
    open: bool,
    overflow: bool,
}

impl SysexAssembler {
    pub fn new(cap: usize) -> Self {
        SysexAssembler {
            // Grows with the SysEx seen, up to `cap`: most streams carry none.
            buf: Vec::new(),
            cap,
            open: false,
            overflow: false,
        }
    }

    /// The SysEx begun but not yet ended (`F0` and the data so far), unless it overflowed.
    pub fn partial(&self) -> Option<&[u8]> {
        (self.open && !self.overflow).then_some(&self.buf[..])
    }

    /// Feeds one segment; returns the complete SysEx when this segment ends one.
    pub fn push(&mut self, seg: &[u8]) -> Option<&[u8]> {
        let (&first, rest) = seg.split_first()?;
        let (&last, inner) = rest.split_last()?;
        if first == status::SYSEX_START {
            self.buf.clear();
            self.open = true;
            self.overflow = false;
            self.extend(&[first]);
        } else if first != status::SYSEX_END || !self.open {
            return None;
        }
        match last {
            status::SYSEX_START => {
                self.extend(inner);
                None
            }
            status::SYSEX_END => {
                self.extend(inner);
                self.extend(&[last]);
                self.open = false;
                (!self.overflow).then_some(&self.buf[..])
            }
            _ => {
                // Cancelled (F4) or malformed: drop it.
                self.open = false;
                None
            }
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > self.cap {
            self.overflow = true;
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

/// The 16 channels of a [`MidiState`], each allocated when first played on: a session that
/// uses one channel holds one channel's state, not sixteen (each is about 6 kB). An absent
/// channel reads as [`ChannelState::EMPTY`].
#[derive(Clone, Debug, Default)]
pub struct Channels {
    slots: [Option<Box<ChannelState>>; 16],
    /// Channels are made with [`ChannelState::track_notes`] set.
    track_notes: bool,
}

impl Channels {
    /// Channel `ch` (0-15) if anything was played on it.
    pub fn get(&self, ch: usize) -> Option<&ChannelState> {
        self.slots.get(ch)?.as_deref()
    }

    /// Channel `ch & 15`, allocated on first use.
    pub(crate) fn get_or_insert(&mut self, ch: usize) -> &mut ChannelState {
        let track_notes = self.track_notes;
        self.slots[ch & 0x0F].get_or_insert_with(|| {
            Box::new(ChannelState {
                track_notes,
                ..ChannelState::EMPTY
            })
        })
    }

    /// All 16 channels in order, absent ones as [`ChannelState::EMPTY`].
    pub fn iter(&self) -> impl Iterator<Item = &ChannelState> {
        self.slots
            .iter()
            .map(|c| c.as_deref().unwrap_or(&ChannelState::EMPTY))
    }

    /// The channels played on, with their numbers.
    pub fn present(&self) -> impl Iterator<Item = (u8, &ChannelState)> {
        (0u8..)
            .zip(&self.slots)
            .filter_map(|(ch, c)| Some((ch, c.as_deref()?)))
    }

    fn present_mut(&mut self) -> impl Iterator<Item = &mut ChannelState> {
        self.slots.iter_mut().flatten().map(|c| &mut **c)
    }
}

impl core::ops::Index<usize> for Channels {
    type Output = ChannelState;
    fn index(&self, ch: usize) -> &ChannelState {
        assert!(ch < 16, "MIDI channel {ch} out of range");
        self.get(ch).unwrap_or(&ChannelState::EMPTY)
    }
}

/// The state of one MIDI stream: 16 channels and the system.
#[derive(Clone, Debug, Default)]
pub struct MidiState {
    pub channels: Channels,
    pub system: SystemState,
    /// The last complete SysEx (up to 256 octets), for comparisons.
    pub last_sysex: Vec<u8>,
}

impl MidiState {
    /// A state that keeps, besides the values, which notes changed in what order since
    /// [`forget_before`](Self::forget_before): what a journal sender needs.
    pub(crate) fn tracking_notes() -> Self {
        let mut state = MidiState::default();
        state.channels.track_notes = true;
        state
    }

    /// Applies one complete non-SysEx message; returns false if it is not one.
    pub fn apply_short(&mut self, msg: &[u8], stamp: u32) -> bool {
        let Some(&st) = msg.first() else {
            return false;
        };
        match crate::midi::data_len(st) {
            Some(n) if st & 0x80 != 0 && msg.len() == n + 1 => {}
            _ => return false,
        }
        if crate::midi::is_channel(st) {
            let d1 = msg.get(1).copied().unwrap_or(0);
            let d2 = msg.get(2).copied().unwrap_or(0);
            self.channels
                .get_or_insert(usize::from(st & 0x0F))
                .apply(st & 0xF0, d1, d2, stamp);
        } else {
            self.system.apply(msg, stamp);
        }
        true
    }

    /// Stops tracking what changed before `checkpoint` (the journal's history was trimmed).
    pub(crate) fn forget_before(&mut self, checkpoint: u32) {
        for c in self.channels.present_mut() {
            c.forget_before(checkpoint);
        }
    }

    pub fn note_sysex(&mut self, sysex: &[u8]) {
        self.last_sysex.clear();
        if sysex.len() <= LAST_SYSEX_MAX {
            self.last_sysex.extend_from_slice(sysex);
        }
    }

    /// Whether `other` sounds like `self`: notes, controllers, program and bank, pitch bend,
    /// pressures, the selected RPN/NRPN and parameter values, song select, whether the
    /// sequencer runs, and the last SysEx. Stamps, counts and clock positions are not compared;
    /// `other` may remember parameters `self` has forgotten.
    pub fn same_music(&self, other: &MidiState) -> bool {
        self.channels
            .iter()
            .zip(other.channels.iter())
            .all(|(a, b)| a.same_music(b))
            && self.system.song_select.map(|s| s.value) == other.system.song_select.map(|s| s.value)
            && self.system.sequencer.is_some_and(|s| s.value.running)
                == other.system.sequencer.is_some_and(|s| s.value.running)
            && self.last_sysex == other.last_sysex
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The logs, wherever in the array they sit, are those of a plain list kept the
        /// same way: appended before the same-stamp notes above them, removed anywhere,
        /// forgotten by stamp.
        #[test]
        fn on_logs_keep_the_order_of_a_plain_list(
            ops in prop::collection::vec((0u8..4, 0u8..128, 0u32..6), 0..600),
        ) {
            let mut logs = OnLogs::EMPTY;
            let mut model: Vec<([u8; 2], u32)> = Vec::new();
            for (op, n, stamp) in ops {
                let held = model.iter().position(|(l, _)| l[0] & 0x7F == n);
                match (op, held) {
                    (0 | 1, None) => {
                        logs.push(n, 100, stamp);
                        if model.len() < 128 {
                            let at = model.len()
                                - model
                                    .iter()
                                    .rev()
                                    .take_while(|(l, s)| *s == stamp && l[0] & 0x7F > n)
                                    .count();
                            model.insert(at, ([0x80 | n, 0x80 | 100], stamp));
                        }
                    }
                    (0..=2, Some(i)) => {
                        logs.remove(n);
                        model.remove(i);
                    }
                    (3, _) => {
                        let set = logs.retain(|s| s >= stamp);
                        model.retain(|(_, s)| *s >= stamp);
                        let notes = model.iter().fold(0u128, |a, (l, _)| a | 1 << (l[0] & 0x7F));
                        prop_assert_eq!(set, notes);
                    }
                    _ => {}
                }
                let want: Vec<[u8; 2]> = model.iter().map(|(l, _)| *l).collect();
                prop_assert_eq!(logs.logs(), &want[..]);
            }
        }
    }

    #[test]
    fn notes_released_in_the_order_played_move_no_log() {
        let mut logs = OnLogs::EMPTY;
        for n in 0..128 {
            logs.push(n, 1, u32::from(n));
        }
        for n in 0..100 {
            logs.remove(n);
        }
        assert_eq!((logs.start, logs.len), (100, 28));
        assert_eq!(logs.logs()[0], [0x80 | 100, 0x81]);
        // Room at the end runs out: the logs move down to make it.
        for n in 0..50 {
            logs.push(n, 1, 1000);
        }
        assert_eq!((logs.start, logs.len), (0, 78));
        assert_eq!(logs.logs()[27], [0x80 | 127, 0x81]);
        assert_eq!(logs.logs()[28], [0x80, 0x81]);
    }
}
