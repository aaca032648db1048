//! The receiving side: compares a journal with the state it delivered and repairs the
//! difference (RFC 6295 §4-5 and Appendix A-B, RFC 4696 §6).

use super::state::{controller_journalled, MidiState, ParamId, SysexAssembler, NULL_PARAM};
use super::wire::{
    ChannelJournal, Journal, SystemJournal, STA_DROPPED_F7, STA_FINISHED, STA_UNFINISHED,
};
use super::JournalError;
use crate::midi::status;

/// Longest SysEx the receiver reassembles from segments (to remember the last one).
pub const SYSEX_MAX: usize = 1024;

/// The receiver's half of the recovery journal.
///
/// Feed every command delivered to the application through [`observe`](Self::observe), in
/// order. For each packet with a journal call [`recover`](Self::recover) *before* delivering
/// that packet's own commands (the journal describes the stream up to the packet before).
#[derive(Debug)]
pub struct JournalReceiver {
    state: MidiState,
    assembler: SysexAssembler,
    /// Where chapter X commands are rebuilt (at most [`SYSEX_MAX`] octets; allocated by the
    /// first SysEx repair).
    scratch: Vec<u8>,
    repairs: u64,
    uncovered: u64,
    stamp: u32,
}

impl Default for JournalReceiver {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends repair commands to the caller and applies them to the receiver's state.
struct Repair<'a, F: FnMut(&[u8])> {
    state: &'a mut MidiState,
    assembler: &'a mut SysexAssembler,
    scratch: Vec<u8>,
    out: &'a mut F,
    stamp: u32,
    sent: usize,
}

impl<F: FnMut(&[u8])> Repair<'_, F> {
    fn send(&mut self, msg: &[u8]) {
        (self.out)(msg);
        if msg.first() == Some(&status::SYSEX_START) {
            if let Some(sysex) = self.assembler.push(msg) {
                self.state.note_sysex(sysex);
            }
        } else {
            self.state.apply_short(msg, self.stamp);
        }
        self.sent += 1;
    }

    fn chan(&self, ch: u8) -> &super::state::ChannelState {
        &self.state.channels[usize::from(ch & 0x0F)]
    }

    fn cc(&mut self, ch: u8, number: u8, value: u8) {
        self.send(&[status::CONTROL_CHANGE | ch, number & 0x7F, value & 0x7F]);
    }

    fn select(&mut self, ch: u8, id: ParamId) {
        let (msb, lsb) = if id.nrpn { (99, 98) } else { (101, 100) };
        self.cc(ch, msb, (id.number >> 7) as u8);
        self.cc(ch, lsb, (id.number & 0x7F) as u8);
    }
}

impl JournalReceiver {
    pub fn new() -> Self {
        JournalReceiver {
            state: MidiState::default(),
            assembler: SysexAssembler::new(SYSEX_MAX),
            scratch: Vec::new(),
            repairs: 0,
            uncovered: 0,
            stamp: 0,
        }
    }

    /// The receiver's view of the stream: what was delivered plus what was repaired.
    pub fn state(&self) -> &MidiState {
        &self.state
    }

    /// Number of recoveries that sent at least one repair command.
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// Number of losses that began before the journal's checkpoint (repaired only in part).
    pub fn uncovered(&self) -> u64 {
        self.uncovered
    }

    /// Records one command delivered to the application (complete, or a SysEx segment).
    pub fn observe(&mut self, message: &[u8]) {
        self.stamp = self.stamp.wrapping_add(1);
        if matches!(message.first(), Some(0xF0 | 0xF7)) {
            if let Some(sysex) = self.assembler.push(message) {
                self.state.note_sysex(sysex);
            }
        } else {
            self.state.apply_short(message, self.stamp);
        }
    }

    /// Checks the journal of packet `seq` and, when `lost` packets went missing just before
    /// it, sends through `out` the commands that bring the receiver to the sender's state:
    /// nothing that already arrived is sent again. With `lost == 1` only the parts marked as
    /// being about the lost packet (S = 0) are used. Returns the journal's length; a malformed
    /// journal changes nothing and returns an error.
    ///
    /// For the first packet of a stream, pass as `lost` its distance from the journal's
    /// checkpoint ([`JournalHeader`](super::wire::JournalHeader)): what came before it was
    /// not seen. Repairs are complete commands, except a SysEx whose end is still to come,
    /// which is sent as a first segment (`F0 .. F0`) for the following segments to complete.
    pub fn recover(
        &mut self,
        seq: u32,
        journal: &[u8],
        lost: u32,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, JournalError> {
        let j = Journal::parse(journal)?;
        if lost == 0 {
            return Ok(j.len);
        }
        let single = lost == 1;
        // RFC 6295 A.1: S = 1 everywhere means nothing in the journal is about packet seq-1.
        if single && j.header.single {
            return Ok(j.len);
        }
        self.stamp = self.stamp.wrapping_add(1);
        let mut r = Repair {
            state: &mut self.state,
            assembler: &mut self.assembler,
            scratch: core::mem::take(&mut self.scratch),
            out,
            stamp: self.stamp,
            sent: 0,
        };
        // The journal covers packets from its checkpoint on (§4); a loss that began earlier
        // is repaired as far as the journal goes.
        let back = (seq as u16).wrapping_sub(j.header.checkpoint);
        if u32::from(back) < lost {
            self.uncovered += 1;
        }
        if let Some(sys) = &j.system {
            if !(single && sys.single) {
                repair_system(&mut r, sys, single);
            }
        }
        for cj in j.channels() {
            if !(single && cj.single) {
                repair_channel(&mut r, &cj, single);
            }
        }
        let sent = r.sent;
        self.scratch = r.scratch;
        if sent > 0 {
            self.repairs += 1;
        }
        Ok(j.len)
    }
}

fn repair_system<F: FnMut(&[u8])>(r: &mut Repair<F>, sys: &SystemJournal, single: bool) {
    let skip = |s: bool| single && s;
    if let Some(d) = sys.d.filter(|d| !skip(d.single)) {
        let st = &r.state.system;
        let counts = [
            (d.reset, st.reset, status::RESET),
            (d.tune_request, st.tune_request, status::TUNE_REQUEST),
            (
                d.f4.and_then(|f| f.count.map(|c| (f.single, c))),
                st.f4,
                status::UNDEFINED_F4,
            ),
            (
                d.f5.and_then(|f| f.count.map(|c| (f.single, c))),
                st.f5,
                status::UNDEFINED_F5,
            ),
            (
                d.f9.and_then(|f| f.count.map(|c| (f.single, c))),
                st.f9,
                status::UNDEFINED_F9,
            ),
            (
                d.fd.and_then(|f| f.count.map(|c| (f.single, c))),
                st.fd,
                status::UNDEFINED_FD,
            ),
        ];
        for (field, mine, cmd) in counts {
            let Some((_, count)) = field.filter(|f| !skip(f.0)) else {
                continue;
            };
            if mine.map_or(0, |m| m.value) != count {
                // One command stands for any number lost; then adopt the sender's count.
                r.send(&[cmd]);
                let slot = match cmd {
                    status::RESET => &mut r.state.system.reset,
                    status::TUNE_REQUEST => &mut r.state.system.tune_request,
                    status::UNDEFINED_F4 => &mut r.state.system.f4,
                    status::UNDEFINED_F5 => &mut r.state.system.f5,
                    status::UNDEFINED_F9 => &mut r.state.system.f9,
                    _ => &mut r.state.system.fd,
                };
                if let Some(c) = slot {
                    c.value = count;
                }
            }
        }
        if let Some((_, song)) = d.song_select.filter(|f| !skip(f.0)) {
            if r.state.system.song_select.map(|s| s.value) != Some(song) {
                r.send(&[status::SONG_SELECT, song]);
            }
        }
    }
    // Chapter V (active sensing) and chapter F (time code) are not replayed: both are about
    // timing, and a late copy would be wrong.
    if let Some(q) = sys.q.filter(|q| !skip(q.single)) {
        let mine = r
            .state
            .system
            .sequencer
            .map(|s| s.value)
            .unwrap_or_default();
        if !q.running && mine.running {
            r.send(&[status::STOP]);
        }
        let stopped_here = !r.state.system.sequencer.is_some_and(|s| s.value.running);
        if let Some(clock) = q.clock {
            // Song Position Pointer only moves a stopped sequencer (MIDI 1.0, p. 27).
            let spp = clock / 6;
            if stopped_here && mine.position / 6 != spp {
                r.send(&[
                    status::SONG_POSITION,
                    (spp & 0x7F) as u8,
                    ((spp >> 7) & 0x7F) as u8,
                ]);
            }
        }
        if q.running && stopped_here {
            r.send(&[status::CONTINUE]);
        }
    }
    if let Some(x) = sys.x.filter(|x| !skip(x.single)) {
        for log in x
            .logs()
            .filter(|l| !skip(l.single) && l.first.unwrap_or(0) == 0)
        {
            // A finished command is sent whole; an unfinished one as a first segment
            // (F0 .. F0) for the segments still to come to complete.
            let end = match log.status {
                STA_FINISHED | STA_DROPPED_F7 => status::SYSEX_END,
                STA_UNFINISHED => status::SYSEX_START,
                _ => continue,
            };
            let Some(data) = log.data() else {
                if end == status::SYSEX_END {
                    r.send(&[status::SYSEX_START, end]);
                }
                continue;
            };
            // Rebuilt in a buffer kept for the next; longer commands are not replayed.
            let mut sysex = core::mem::take(&mut r.scratch);
            sysex.clear();
            sysex.push(status::SYSEX_START);
            for b in data {
                if sysex.len() + 1 < SYSEX_MAX {
                    sysex.push(b);
                } else {
                    sysex.clear();
                    break;
                }
            }
            if !sysex.is_empty() {
                sysex.push(end);
                r.send(&sysex);
            }
            r.scratch = sysex;
        }
    }
}

fn repair_channel<F: FnMut(&[u8])>(r: &mut Repair<F>, cj: &ChannelJournal, single: bool) {
    let skip = |s: bool| single && s;
    let ch = cj.channel & 0x0F;

    if let Some(p) = cj.p.filter(|p| !skip(p.single)) {
        let mine = r.chan(ch).program.map(|p| p.value);
        let bank = p.bank_valid.then_some((p.bank_msb, p.bank_lsb));
        let differs =
            mine.is_none_or(|m| m.program != p.program || (bank.is_some() && m.bank != bank));
        if differs {
            if let Some((msb, lsb)) = bank {
                r.cc(ch, 0, msb);
                r.cc(ch, 32, lsb);
            }
            r.send(&[status::PROGRAM_CHANGE | ch, p.program]);
        }
    }

    if let Some(c) = cj.c.filter(|c| !skip(c.single)) {
        for log in c.logs().filter(|l| !skip(l.single)) {
            // A = 1 logs (toggle and count tools) say how often, not what value: not replayed.
            if log.flag || !controller_journalled(log.number) {
                continue;
            }
            let mine = r.chan(ch).controllers[usize::from(log.number)].map(|v| v.value);
            if mine != Some(log.value) {
                r.cc(ch, log.number, log.value);
            }
        }
    }

    if let Some(m) = cj.m.filter(|m| !skip(m.single)) {
        let mut last = None;
        for log in m.logs() {
            let id = ParamId {
                nrpn: log.nrpn,
                number: log.number,
            };
            last = Some(id);
            if skip(log.single) || id.number == NULL_PARAM {
                continue;
            }
            let (msb, lsb) = r
                .chan(ch)
                .param(id)
                .map_or((None, None), |p| (p.msb, p.lsb));
            let stale = |want: Option<u8>, have: Option<u8>| want.is_some() && want != have;
            if stale(log.entry_msb, msb) || stale(log.entry_lsb, lsb) {
                r.select(ch, id);
                if let Some(v) = log.entry_msb {
                    r.cc(ch, 6, v);
                }
                if let Some(v) = log.entry_lsb {
                    r.cc(ch, 38, v);
                }
            }
        }
        // E: a transaction is in progress on the last log's parameter; else none is selected.
        let want = if m.e { last } else { None };
        if r.chan(ch).selection.current() != want {
            let null = ParamId {
                nrpn: false,
                number: NULL_PARAM,
            };
            r.select(ch, want.unwrap_or(null));
        }
    }

    if let Some(wh) = cj.w.filter(|w| !skip(w.single)) {
        let value = u16::from(wh.first) | (u16::from(wh.second) << 7);
        if r.chan(ch).bend.map(|b| b.value) != Some(value) {
            r.send(&[status::PITCH_BEND | ch, wh.first, wh.second]);
        }
    }

    if let Some(n) = cj.n {
        let off_velocity = |note: u8| {
            cj.e.and_then(|e| {
                e.logs()
                    .find(|l| l.number == note && l.flag)
                    .map(|l| l.value)
            })
            .unwrap_or(64)
        };
        for log in n.logs().filter(|l| !skip(l.single)) {
            let on = r.chan(ch).notes[usize::from(log.number)].on;
            if n.offbit(log.number) {
                // Struck and released within the loss: only make sure it is not left on.
                if on {
                    let v = off_velocity(log.number);
                    r.send(&[status::NOTE_OFF | ch, log.number, v]);
                }
            } else if !on && log.flag && log.value != 0 {
                r.send(&[status::NOTE_ON | ch, log.number, log.value]);
            }
        }
        // B is the S bit of the OFFBITS (A.6).
        if !skip(n.b) {
            for note in n.offbit_notes() {
                let has_log = n.logs().any(|l| l.number == note);
                if !has_log && r.chan(ch).notes[usize::from(note)].on {
                    let v = off_velocity(note);
                    r.send(&[status::NOTE_OFF | ch, note, v]);
                }
            }
        }
    }

    if let Some(t) = cj.t.filter(|t| !skip(t.single)) {
        if r.chan(ch).pressure.map(|p| p.value) != Some(t.pressure) {
            r.send(&[status::CHANNEL_PRESSURE | ch, t.pressure]);
        }
    }

    if let Some(a) = cj.a.filter(|a| !skip(a.single)) {
        // X = 1: a NoteOff came after the pressure; the value no longer applies.
        for log in a.logs().filter(|l| !skip(l.single) && !l.flag) {
            if r.chan(ch).poly[usize::from(log.number)].map(|p| p.value) != Some(log.value) {
                r.send(&[status::POLY_PRESSURE | ch, log.number, log.value]);
            }
        }
    }
}
