//! The sending side: MIDI state since the checkpoint, written as a recovery journal.

use super::state::{
    bits, controller_journalled, ChannelState, MidiState, Stamped, SysexAssembler,
    PARAMS_PER_CHANNEL,
};
use super::wire::*;
use super::JournalError;

/// Octets of SysEx kept for chapter X; older SysEx is forgotten beyond this.
pub const SYSEX_JOURNAL_CAP: usize = 2048;
/// Longest single SysEx the sender reassembles and journals.
pub const SYSEX_MAX: usize = 1024;

/// `a` is `b` or later, in extended sequence numbers that may wrap.
pub(crate) fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// The checkpoint history of the packet being built: stamps in `[checkpoint, seq)`.
#[derive(Clone, Copy)]
struct Window {
    checkpoint: u32,
    seq: u32,
}

impl Window {
    fn has(&self, stamp: u32) -> bool {
        at_or_after(stamp, self.checkpoint) && !at_or_after(stamp, self.seq)
    }

    /// The S bit of an element last changed at `stamp` (RFC 6295 A.1): 0 only when the
    /// command was in packet `seq - 1`.
    fn s(&self, stamp: u32) -> bool {
        stamp != self.seq.wrapping_sub(1)
    }
}

/// What goes into the journal when it does not fit in the room the caller gives, in the order
/// it is dropped (the first level that fits is used):
/// 0. everything;
/// 1. without chapter X (SysEx is bulky and the least urgent);
/// 2. without the system journal and chapters E and A (timing and pressure details);
/// 3. chapter N only (notes: a stuck note is the one loss a musician cannot live with);
/// 4. chapter N OFFBITS only (note-offs: safety first; a lost note-on stays silent).
///
/// When even level 4 does not fit, no journal is sent for that packet.
const LEVELS: u8 = 5;

/// SysEx commands sent since the checkpoint, kept as chapter X logs (B.5.1) in one buffer: a
/// journal copies them as they are, rather than encoding each SysEx again for every packet.
/// Each entry keeps the sequence numbers of its first and last segment: it is journalled from
/// the packet after its first segment (a receiver that lost that one needs the whole command)
/// until the receiver confirms its last segment.
#[derive(Debug)]
struct SysexLog {
    /// The logs: a header octet (S set), the data octets, the top bit set on the last. A log's
    /// S bit is clear only in the journal of the packet right after one of its segments, so
    /// each journal clears it on its newest logs instead of setting it on every log.
    buf: Vec<u8>,
    /// Each log's span and where it ends in `buf`, oldest first: spans only grow, so the logs
    /// of a window are consecutive and found by bisection.
    entries: Vec<(SysexSpan, usize)>,
}

#[derive(Clone, Copy, Debug)]
struct SysexSpan {
    first: u32,
    last: u32,
}

impl Window {
    fn s_span(&self, span: SysexSpan) -> bool {
        self.s(span.first) && self.s(span.last)
    }
}

impl SysexLog {
    /// Empty, and allocated only when SysEx is sent: most sessions never carry any.
    fn new() -> Self {
        SysexLog {
            buf: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Logs `sysex` (`F0 .. F7`). The cap counts SysEx octets: a log is one shorter (its
    /// header takes the place of `F0` and `F7`).
    fn push(&mut self, span: SysexSpan, sysex: &[u8]) {
        if sysex.len() > SYSEX_JOURNAL_CAP {
            return;
        }
        while self.buf.len() + self.entries.len() + sysex.len() > SYSEX_JOURNAL_CAP
            || self.entries.len() == 64
        {
            self.drop_first(1);
        }
        let data = sysex.get(1..sysex.len().saturating_sub(1)).unwrap_or(&[]);
        self.buf
            .push(S_BIT | flag(!data.is_empty(), X_D) | STA_FINISHED);
        self.buf.extend_from_slice(data);
        if let Some(last) = self.buf.last_mut().filter(|_| !data.is_empty()) {
            *last |= S_BIT;
        }
        self.entries.push((span, self.buf.len()));
    }

    fn drop_first(&mut self, n: usize) {
        let n = n.min(self.entries.len());
        let Some(bytes) = n.checked_sub(1).map(|i| self.entries[i].1) else {
            return;
        };
        self.buf.drain(..bytes);
        self.entries.drain(..n);
        for e in &mut self.entries {
            e.1 -= bytes;
        }
    }

    fn trim(&mut self, checkpoint: u32) {
        let n = self
            .entries
            .partition_point(|e| !at_or_after(e.0.last, checkpoint));
        // All confirmed or not, the room stays (bounded by the caps): a stream of SysEx with
        // an RS a second would otherwise grow it again, reallocation by reallocation, after
        // every confirmation.
        self.drop_first(n);
    }

    /// Where entry `i` begins in `buf`.
    fn start_of(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |p| self.entries[p].1)
    }

    /// The entries in the window: those that end at or after its checkpoint and begin before
    /// its packet.
    fn in_window(&self, win: Window) -> core::ops::Range<usize> {
        let before = |e: &(SysexSpan, usize)| !at_or_after(e.0.last, win.checkpoint);
        let begun = |e: &(SysexSpan, usize)| !at_or_after(e.0.first, win.seq);
        // Usually all of them (confirmed ones are trimmed, the packet's own are held back):
        // the ends are looked at first, as a session's entries are seldom in the cache.
        let lo = match self.entries.first() {
            Some(e) if before(e) => self.entries.partition_point(before),
            _ => 0,
        };
        let hi = match self.entries.last() {
            Some(e) if !begun(e) => self.entries.partition_point(begun),
            _ => self.entries.len(),
        };
        lo..hi.max(lo)
    }

    /// Whether a log is in the window.
    fn any_in(&self, win: Window) -> bool {
        !self.in_window(win).is_empty()
    }

    /// Writes the logs in the window, each with its own S bit; returns whether all are set
    /// (the caller makes the first log's S bit the chapter's).
    fn write(&self, win: Window, w: &mut Writer) -> Result<bool, JournalError> {
        let range = self.in_window(win);
        if range.is_empty() {
            return Ok(true);
        }
        let start = self.start_of(range.start);
        let end = self.entries[range.end - 1].1;
        let out = w.reserve(end - start)?;
        out.copy_from_slice(&self.buf[start..end]);
        // Only logs that end at packet `seq - 1` or later can have touched it.
        let previous = win.seq.wrapping_sub(1);
        let mut single = true;
        for i in range.rev() {
            let span = self.entries[i].0;
            if !at_or_after(span.last, previous) {
                break;
            }
            if !win.s_span(span) {
                single = false;
                out[self.start_of(i) - start] &= !S_BIT;
            }
        }
        Ok(single)
    }
}

/// The sender's half of the recovery journal (RFC 6295 §4-5, RFC 4696 §4).
///
/// Call [`record`](Self::record) for every command put in a packet, [`emit`](Self::emit) to
/// append the journal to a packet, [`confirm`](Self::confirm) when the receiver's RS names a
/// sequence number. Memory is taken as used (a channel's state when it is first played on,
/// room for SysEx history once SysEx is sent, room for one packet's commands) and is bounded;
/// `emit` never allocates.
#[derive(Debug)]
pub struct JournalSender {
    state: MidiState,
    checkpoint: Option<u32>,
    /// Newest sequence number recorded or emitted, to ignore confirmations from the future.
    newest: Option<u32>,
    last_recorded: Option<u32>,
    assembler: SysexAssembler,
    /// Sequence number of the packet that carried the open SysEx's first segment.
    sysex_first: u32,
    sysex: SysexLog,
    truncated: u64,
    /// Commands of the packet being built (`pending_seq`), as 16-bit length + octets.
    pending: Vec<u8>,
    pending_seq: Option<u32>,
}

/// Room for the commands of one packet held back by [`JournalSender::record`].
const PENDING_CAP: usize = 4096;
/// What that room shrinks back to on a confirmation: a few commands' worth.
const PENDING_KEEP: usize = 64;

impl Default for JournalSender {
    fn default() -> Self {
        Self::new()
    }
}

impl JournalSender {
    pub fn new() -> Self {
        JournalSender {
            state: MidiState::tracking_notes(),
            checkpoint: None,
            newest: None,
            last_recorded: None,
            assembler: SysexAssembler::new(SYSEX_MAX),
            sysex_first: 0,
            sysex: SysexLog::new(),
            truncated: 0,
            pending: Vec::new(),
            pending_seq: None,
        }
    }

    /// The sender's view of the stream as sent so far.
    /// Takes in the commands recorded so far, so call it after the packet's `emit`.
    pub fn state(&mut self) -> &MidiState {
        self.flush();
        &self.state
    }

    /// First sequence number the journal covers (last confirmed + 1, or the first recorded).
    pub fn checkpoint(&self) -> Option<u32> {
        self.checkpoint
    }

    /// Journals that did not fit whole and were cut down (see [`emit`](Self::emit)), for statistics.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Whether something was recorded since the checkpoint, i.e. the receiver has not yet
    /// confirmed everything. Guard packets stop when this is false.
    pub fn has_pending(&self) -> bool {
        match (self.last_recorded, self.checkpoint) {
            (Some(last), Some(cp)) => at_or_after(last, cp),
            _ => false,
        }
    }

    fn see(&mut self, seq: u32) {
        if self.newest.is_none_or(|n| at_or_after(seq, n)) {
            self.newest = Some(seq);
        }
    }

    /// Records one complete MIDI command (or one SysEx segment as on the wire) sent in the
    /// packet with extended sequence number `seq`. Anything that is not MIDI is ignored.
    ///
    /// The commands of the packet being built are held back until a later packet: its journal
    /// describes the stream up to the packet before it, so `record` and `emit` for one packet
    /// may come in either order.
    pub fn record(&mut self, seq: u32, message: &[u8]) {
        let valid = match message.first() {
            Some(0xF0 | 0xF7) => message.len() >= 2,
            _ => crate::midi::ShortMessage::from_bytes(message).is_ok(),
        };
        if !valid {
            return;
        }
        if self.pending_seq != Some(seq) {
            self.flush();
            self.pending_seq = Some(seq);
        }
        if self.pending.len() + message.len() + 2 > PENDING_CAP {
            // More than a packet's worth: apply now rather than grow.
            self.apply(seq, message);
        } else {
            self.pending
                .extend_from_slice(&(message.len() as u16).to_be_bytes());
            self.pending.extend_from_slice(message);
        }
        self.see(seq);
        self.last_recorded = Some(seq);
        self.checkpoint.get_or_insert(seq);
    }

    /// Applies the held-back commands to the state.
    fn flush(&mut self) {
        let Some(seq) = self.pending_seq.take() else {
            return;
        };
        let pending = core::mem::take(&mut self.pending);
        let mut rest = &pending[..];
        while let [hi, lo, tail @ ..] = rest {
            let n = usize::from(u16::from_be_bytes([*hi, *lo]));
            let Some((msg, r)) = tail.split_at_checked(n) else {
                break;
            };
            self.apply(seq, msg);
            rest = r;
        }
        self.pending = pending;
        self.pending.clear();
    }

    fn apply(&mut self, seq: u32, message: &[u8]) {
        match message.first() {
            Some(&first) if first == 0xF0 || first == 0xF7 => {
                if first == 0xF0 {
                    self.sysex_first = seq;
                }
                let Some(sysex) = self.assembler.push(message) else {
                    return;
                };
                self.state.note_sysex(sysex);
                let span = SysexSpan {
                    first: self.sysex_first,
                    last: seq,
                };
                self.sysex.push(span, sysex);
            }
            _ => {
                self.state.apply_short(message, seq);
            }
        }
    }

    /// The receiver has everything up to and including `seq` (closed-loop, RFC 4696 §4.1):
    /// the checkpoint moves to `seq + 1` and older history is no longer sent.
    pub fn confirm(&mut self, seq: u32) {
        // Commands held back may belong to a confirmed packet: apply them first, so what is
        // forgotten below includes them.
        self.flush();
        let (Some(cp), Some(newest)) = (self.checkpoint, self.newest) else {
            return;
        };
        let next = seq.wrapping_add(1);
        if at_or_after(next, cp) && at_or_after(newest, seq) {
            self.checkpoint = Some(next);
            self.sysex.trim(next);
            self.state.forget_before(next);
            // A packet packed full of commands grew the held-back list: give that back now
            // and then (here, about once a second), not after every packet.
            self.pending.shrink_to(PENDING_KEEP);
        }
    }

    /// [`confirm`](Self::confirm) for the 16-bit sequence number an AppleMIDI RS carries,
    /// taken as the latest one at or before the newest packet sent.
    pub fn confirm_rs(&mut self, seq16: u16) {
        if let Some(newest) = self.newest {
            let back = (newest as u16).wrapping_sub(seq16);
            self.confirm(newest.wrapping_sub(u32::from(back)));
        }
    }

    /// Writes the journal for packet `seq` (covering the checkpoint up to `seq - 1`) into
    /// `out` and returns its length; 0 when there is nothing to journal or no room at all.
    /// The journal never exceeds `out.len()`; when it would not fit, chapter X goes first,
    /// then the system journal and chapters E and A, then all but chapter N, then the note-on
    /// logs: note-offs (OFFBITS) are the last to go.
    pub fn emit(&mut self, seq: u32, out: &mut [u8]) -> usize {
        self.see(seq);
        if self.pending_seq != Some(seq) {
            self.flush();
        }
        let Some(checkpoint) = self.checkpoint else {
            return 0;
        };
        if !self.has_pending() {
            return 0;
        }
        let win = Window { checkpoint, seq };
        for level in 0..LEVELS {
            let mut w = Writer::new(out);
            match self.write(win, level, &mut w) {
                Ok(true) => {
                    if level > 0 {
                        self.truncated += 1;
                    }
                    return w.pos();
                }
                Ok(false) => return 0,
                Err(_) => continue,
            }
        }
        0
    }

    fn write(&self, win: Window, level: u8, w: &mut Writer) -> Result<bool, JournalError> {
        let head = w.skip(JOURNAL_HEADER_LEN)?;
        let mut single = true;
        let system = if level <= 1 {
            self.write_system(win, level, w)?
        } else {
            None
        };
        if let Some(s) = system {
            single &= s;
        }
        let mut count = 0u8;
        for (ch, st) in self.state.channels.present() {
            if let Some(s) = write_channel(st, ch, win, level, w)? {
                single &= s;
                count += 1;
            }
        }
        if system.is_none() && count == 0 {
            return Ok(false);
        }
        let mut h = [0u8; JOURNAL_HEADER_LEN];
        JournalHeader {
            single,
            system: system.is_some(),
            channels: count > 0,
            enhanced: false,
            totchan: count.saturating_sub(1),
            checkpoint: win.checkpoint as u16,
        }
        .emit(&mut h)?;
        w.patch(head, &h);
        Ok(true)
    }

    /// Writes the system journal if anything system-wide changed; returns its S bit.
    fn write_system(
        &self,
        win: Window,
        level: u8,
        w: &mut Writer,
    ) -> Result<Option<bool>, JournalError> {
        let sys = &self.state.system;
        let counts = [
            (D_B, sys.reset),
            (D_G, sys.tune_request),
            (D_H, sys.song_select),
        ];
        let fields = [(D_J, sys.f4), (D_K, sys.f5), (D_Y, sys.f9), (D_Z, sys.fd)];
        let in_win = |c: Option<Stamped<u8>>| c.filter(|c| win.has(c.stamp));
        let d = counts
            .iter()
            .chain(&fields)
            .any(|(_, c)| in_win(*c).is_some());
        let v = in_win(sys.active_sensing);
        let q = sys.sequencer.filter(|s| win.has(s.stamp));
        let f = sys.timecode.filter(|s| win.has(s.stamp));
        // A SysEx begun in the history but not ended yet goes in as an unfinished log.
        let partial = self
            .assembler
            .partial()
            .filter(|_| level == 0 && win.has(self.sysex_first));
        let x = level == 0 && (self.sysex.any_in(win) || partial.is_some());
        if !d && v.is_none() && q.is_none() && f.is_none() && !x {
            return Ok(None);
        }
        let start = w.skip(SYSTEM_HEADER_LEN)?;
        let mut toc = 0;
        let mut single = true;
        if d {
            toc |= SJ_D;
            let at = w.skip(1)?;
            let mut dh = 0;
            let mut ds = true;
            for (bit, c) in counts {
                if let Some(c) = in_win(c) {
                    dh |= bit;
                    ds &= win.s(c.stamp);
                    w.put(&[flag(win.s(c.stamp), S_BIT) | c.value])?;
                }
            }
            for (bit, c) in fields {
                if let Some(c) = in_win(c) {
                    dh |= bit;
                    ds &= win.s(c.stamp);
                    let s = flag(win.s(c.stamp), S_BIT);
                    if bit == D_J || bit == D_K {
                        // |S|C|V|L|DSZ|LENGTH=3| COUNT
                        w.put(&[s | DC_C, 3, c.value])?;
                    } else {
                        // |S|C|L|LENGTH=2| COUNT
                        w.put(&[s | DR_C | 2, c.value])?;
                    }
                }
            }
            w.or_at(at, dh | flag(ds, S_BIT));
            single &= ds;
        }
        if let Some(v) = v {
            toc |= SJ_V;
            single &= win.s(v.stamp);
            w.put(&[flag(win.s(v.stamp), S_BIT) | v.value])?;
        }
        if let Some(q) = q {
            toc |= SJ_Q;
            single &= win.s(q.stamp);
            ChapterQ {
                single: win.s(q.stamp),
                running: q.value.running,
                d: false,
                clock: Some(q.value.position),
                timetools: None,
            }
            .emit(w)?;
        }
        if let Some(f) = f {
            toc |= SJ_F;
            single &= win.s(f.stamp);
            let nibbles = f
                .value
                .nibbles
                .iter()
                .fold(0u32, |acc, &n| (acc << 4) | u32::from(n & 0x0F));
            let complete = f.value.seen == 0xFF;
            ChapterF {
                single: win.s(f.stamp),
                complete: complete.then_some(nibbles),
                partial: (!complete).then_some(nibbles),
                quarter: complete,
                reverse: false,
                point: f.value.point,
            }
            .emit(w)?;
        }
        if x {
            toc |= SJ_X;
            // One log per SysEx (B.5.1): DATA = its data octets with the top bit set on the
            // last; the one still open, if any, last and unfinished. The first log's S bit is
            // the chapter's.
            let first_log = w.pos();
            let mut xs = self.sysex.write(win, w)?;
            if let Some(p) = partial {
                let s = win.s(self.sysex_first);
                let data = p.get(1..).unwrap_or(&[]);
                w.put(&[flag(s, S_BIT) | flag(!data.is_empty(), X_D) | STA_UNFINISHED])?;
                if let Some((last, body)) = data.split_last() {
                    w.put(body)?;
                    w.put(&[last | S_BIT])?;
                }
                xs &= s;
            }
            if !xs {
                w.and_at(first_log, !S_BIT);
            }
            single &= xs;
        }
        w.or_at(start, toc | flag(single, S_BIT));
        patch_len10(w, start, w.pos() - start)?;
        Ok(Some(single))
    }
}

/// Writes channel `ch`'s journal if anything on it changed; returns its S bit.
fn write_channel(
    st: &ChannelState,
    ch: u8,
    win: Window,
    level: u8,
    w: &mut Writer,
) -> Result<Option<bool>, JournalError> {
    if !st.last.is_some_and(|l| at_or_after(l, win.checkpoint)) {
        return Ok(None);
    }
    let start = w.skip(CHANNEL_HEADER_LEN)?;
    let mut toc = 0;
    let mut single = true;
    let full = level <= 2;

    if let Some(p) = st.program.filter(|p| full && win.has(p.stamp)) {
        toc |= TOC_P;
        single &= win.s(p.stamp);
        let (msb, lsb) = p.value.bank.unwrap_or((0, 0));
        ChapterP {
            single: win.s(p.stamp),
            program: p.value.program,
            bank_valid: p.value.bank.is_some(),
            bank_msb: msb,
            x: false,
            bank_lsb: lsb,
        }
        .emit(w)?;
    }

    // Only the entries set since the last trim are visited (bitmaps), not all 128.
    let ctrls = bits(st.controllers_set).filter_map(|c| {
        let v = st.controllers[usize::from(c)]?;
        (controller_journalled(c) && win.has(v.stamp)).then_some((c, false, v.value, v.stamp))
    });
    if full {
        if let Some(s) = write_list(w, ctrls, win)? {
            toc |= TOC_C;
            single &= s;
        }
    }

    if full {
        if let Some(s) = write_chapter_m(st, win, w)? {
            toc |= TOC_M;
            single &= s;
        }
    }

    if let Some(b) = st.bend.filter(|b| full && win.has(b.stamp)) {
        toc |= TOC_W;
        single &= win.s(b.stamp);
        ChapterW {
            single: win.s(b.stamp),
            first: (b.value & 0x7F) as u8,
            r: false,
            second: (b.value >> 7) as u8 & LOW7,
        }
        .emit(w)?;
    }

    let notes = NotesInWindow::of(st, win);
    if let Some(s) = notes.write_chapter_n(level <= 3, w)? {
        toc |= TOC_N;
        single &= s;
    }

    if level <= 1 {
        let extras = bits(notes.extras).filter_map(|n| {
            let note = st.notes[usize::from(n)];
            Some((n, true, note.off_velocity, note.stamp?))
        });
        if let Some(s) = write_list(w, extras, win)? {
            toc |= TOC_E;
            single &= s;
        }
    }

    if let Some(p) = st.pressure.filter(|p| full && win.has(p.stamp)) {
        toc |= TOC_T;
        single &= win.s(p.stamp);
        w.put(&[flag(win.s(p.stamp), S_BIT) | p.value])?;
    }

    if level <= 1 {
        let poly = bits(st.poly_set).filter_map(|n| {
            let p = st.poly[usize::from(n)]?;
            win.has(p.stamp).then_some((n, false, p.value, p.stamp))
        });
        if let Some(s) = write_list(w, poly, win)? {
            toc |= TOC_A;
            single &= s;
        }
    }

    if toc == 0 {
        w.truncate(start);
        return Ok(None);
    }
    w.patch(start, &[flag(single, CJ_S) | (ch << CJ_CHAN_SHIFT), 0, toc]);
    patch_len10(w, start, w.pos() - start)?;
    Ok(Some(single))
}

/// Chapter M (A.4): one parameter log (value tool: V set, ENTRY-MSB/LSB as last written)
/// per parameter changed since the checkpoint, oldest first. E is set while a parameter is
/// selected (a transaction in progress) and that parameter's log comes last, so the receiver
/// ends with the same selection; with E clear the selection is the null parameter.
fn write_chapter_m(
    st: &ChannelState,
    win: Window,
    w: &mut Writer,
) -> Result<Option<bool>, JournalError> {
    let current = st.selection.current();
    let mut order = [(0u32, 0usize); PARAMS_PER_CHANNEL];
    let mut n = 0;
    for (i, p) in st.params.iter().enumerate() {
        if let Some(p) = p.filter(|p| win.has(p.stamp) && Some(p.id) != current) {
            order[n] = (p.stamp.wrapping_sub(win.checkpoint), i);
            n += 1;
        }
    }
    let sel_stamp = st.selection.stamp.filter(|&s| win.has(s));
    let cur_param = current.and_then(|id| st.param(id));
    let cur_stamp = cur_param.map(|p| p.stamp).filter(|&s| win.has(s));
    if n == 0 && sel_stamp.is_none() && cur_stamp.is_none() {
        return Ok(None);
    }
    let order = &mut order[..n];
    order.sort_unstable();
    let s_of = |stamp: Option<u32>| stamp.is_none_or(|s| win.s(s));
    let cur_log = current.map(|id| {
        let (msb, lsb) = cur_param.map_or((None, None), |p| (p.msb, p.lsb));
        (id, msb, lsb, s_of(sel_stamp) && s_of(cur_stamp))
    });
    let logs = || {
        order
            .iter()
            .filter_map(|&(_, i)| st.params[i])
            .map(|p| (p.id, p.msb, p.lsb, win.s(p.stamp)))
            .chain(cur_log)
    };
    let any = logs().next().is_some();
    let all_nrpn = any && logs().all(|l| l.0.nrpn);
    let all_rpn = any && logs().all(|l| !l.0.nrpn);
    let start = w.skip(2)?;
    let mut single = s_of(sel_stamp);
    for (id, msb, lsb, s) in logs() {
        single &= s;
        let toc = ML_V | flag(msb.is_some(), ML_J) | flag(lsb.is_some(), ML_K);
        w.put(&[
            flag(s, S_BIT) | (id.number & 0x7F) as u8,
            flag(id.nrpn, S_BIT) | ((id.number >> 7) as u8 & LOW7),
            toc,
        ])?;
        for v in [msb, lsb].into_iter().flatten() {
            w.put(&[v & LOW7])?;
        }
    }
    w.or_at(
        start,
        flag(single, S_BIT)
            | flag(current.is_some(), M_E)
            | flag(all_rpn, M_U)
            | flag(all_nrpn, M_W),
    );
    patch_len10(w, start, w.pos() - start)?;
    Ok(Some(single))
}

/// Writes a `|S|LEN|` + two-octet-log chapter (C, E or A) if `logs` is not empty.
fn write_list(
    w: &mut Writer,
    logs: impl Iterator<Item = (u8, bool, u8, u32)>,
    win: Window,
) -> Result<Option<bool>, JournalError> {
    let start = w.pos();
    let mut n = 0usize;
    let mut single = true;
    for (number, f, value, stamp) in logs {
        if n == 0 {
            w.skip(1)?;
        }
        let s = win.s(stamp);
        single &= s;
        Log2 {
            single: s,
            number,
            flag: f,
            value,
        }
        .emit(w)?;
        n += 1;
    }
    if n == 0 {
        return Ok(None);
    }
    // LEN is the number of logs minus one; at most 128 controllers or notes exist.
    w.patch(start, &[flag(single, S_BIT) | ((n - 1) as u8 & LOW7)]);
    Ok(Some(single))
}

/// The notes changed since the checkpoint, as chapters N and E need them.
#[derive(Debug, PartialEq, Eq)]
struct NotesInWindow {
    /// Note logs of the notes on as on the wire with S set, oldest first (ties by note
    /// number); the last `latest_on` of them changed in packet `seq - 1` (S clear).
    logs: [[u8; 2]; 128],
    count: usize,
    latest_on: usize,
    /// Notes off, as chapter N's OFFBITS octets, and the first and last octet used.
    offbits: [u8; 16],
    low: usize,
    high: usize,
    /// Whether no note off changed in packet `seq - 1` (chapter N's B bit).
    b: bool,
    /// Notes off with a release velocity other than 64 (chapter E's logs).
    extras: u128,
}

impl NotesInWindow {
    fn of(st: &ChannelState, win: Window) -> Self {
        debug_assert!(st.track_notes, "a sender's channels track their notes");
        if !st.ordered {
            return Self::gathered(st, win);
        }
        let n = Self::tracked(st, win);
        debug_assert_eq!(n, Self::gathered(st, win), "tracked notes disagree");
        n
    }

    /// From what the channel tracks as it changes: only the notes changed in the last
    /// packet (or later) are looked at, at the end of the change order.
    fn tracked(st: &ChannelState, win: Window) -> Self {
        let prev = win.seq.wrapping_sub(1);
        // Notes applied ahead of this packet (not in its journal), then those of the last
        // packet; everything before is in the window, older than `seq - 1`.
        let (mut ahead, mut latest) = (0u128, 0u128);
        for n in st.note_order.iter_rev() {
            let stamp = st.notes[usize::from(n)].stamp.unwrap_or(prev);
            if !win.has(stamp) {
                ahead |= 1 << n;
            } else if stamp == prev {
                latest |= 1 << n;
            } else {
                break;
            }
        }
        let on = st.on_logs.logs();
        let note = |log: &[u8; 2]| 1u128 << (log[0] & LOW7);
        let count = on.len() - on.iter().rev().take_while(|l| ahead & note(l) != 0).count();
        let latest_on = on[..count]
            .iter()
            .rev()
            .take_while(|l| latest & note(l) != 0)
            .count();
        let mut logs = [[0u8; 2]; 128];
        logs[..count].copy_from_slice(&on[..count]);
        let off = st.off_set & !ahead;
        let mut offbits = [0u8; 16];
        for (k, octet) in offbits.iter_mut().enumerate() {
            // Note 8k is the octet's top bit.
            *octet = ((off >> (8 * k)) as u8).reverse_bits();
        }
        let (low, high) = if off == 0 {
            (16, 0)
        } else {
            (
                off.trailing_zeros() as usize / 8,
                (127 - off.leading_zeros() as usize) / 8,
            )
        };
        NotesInWindow {
            logs,
            count,
            latest_on,
            offbits,
            low,
            high,
            b: off & latest == 0,
            extras: st.extras_set & !ahead,
        }
    }

    /// By looking at every note changed since the checkpoint: for a channel whose stamps
    /// went back (commands recorded out of packet order).
    fn gathered(st: &ChannelState, win: Window) -> Self {
        let mut on = [0u64; 128];
        let mut on_count = 0;
        let mut n = NotesInWindow {
            logs: [[0; 2]; 128],
            count: 0,
            latest_on: 0,
            offbits: [0; 16],
            low: 16,
            high: 0,
            b: true,
            extras: 0,
        };
        for note in st.note_order.iter() {
            let i = usize::from(note);
            let state = st.notes[i];
            let Some(stamp) = state.stamp.filter(|&s| win.has(s)) else {
                continue;
            };
            if state.on {
                // Age relative to the checkpoint orders stamps across a wrap.
                let age = u64::from(stamp.wrapping_sub(win.checkpoint));
                on[on_count] = (age << 8) | u64::from(note);
                on_count += 1;
            } else {
                n.offbits[i / 8] |= 0x80 >> (i % 8);
                n.low = n.low.min(i / 8);
                n.high = n.high.max(i / 8);
                n.b &= win.s(stamp);
                if state.off_velocity != 64 {
                    n.extras |= 1 << i;
                }
            }
        }
        let on = &mut on[..on_count];
        on.sort_unstable();
        for (log, &key) in n.logs.iter_mut().zip(on.iter()) {
            let note = key as u8;
            *log = [S_BIT | note, S_BIT | st.notes[usize::from(note)].velocity];
        }
        n.count = on.len();
        n.latest_on = on
            .iter()
            .rev()
            .take_while(|&&key| !win.s(win.checkpoint.wrapping_add((key >> 8) as u32)))
            .count();
        n
    }

    /// Chapter N (A.6): a note log for each note on since the checkpoint (if `logs`), oldest
    /// first, and OFFBITS for each note turned off since the checkpoint. B is the S bit of the
    /// OFFBITS; the returned S bit covers the whole chapter.
    fn write_chapter_n(&self, logs: bool, w: &mut Writer) -> Result<Option<bool>, JournalError> {
        let (nlogs, latest) = if logs {
            (self.count, self.latest_on)
        } else {
            (0, 0)
        };
        if nlogs == 0 && self.low == 16 {
            return Ok(None);
        }
        let (lo, hi) = if self.low == 16 {
            // No OFFBITS: LOW 15, HIGH 1, or HIGH 0 with LEN 127 for 128 logs (A.6).
            (15, if nlogs == 128 { 0 } else { 1 })
        } else {
            (self.low, self.high)
        };
        w.put(&[
            flag(self.b, S_BIT) | (nlogs.min(127) as u8),
            ((lo as u8) << 4) | hi as u8,
        ])?;
        let out = w.reserve(2 * nlogs)?;
        out.copy_from_slice(self.logs[..nlogs].as_flattened());
        // S is clear on the logs of notes changed in packet `seq - 1` (A.1).
        for log in out.chunks_exact_mut(2).rev().take(latest) {
            log[0] &= !S_BIT;
        }
        if self.low != 16 {
            w.put(&self.offbits[self.low..=self.high])?;
        }
        Ok(Some(self.b && latest == 0))
    }
}
