//! Wire layout of the recovery journal (RFC 6295 §5, Appendix A (channel chapters) and
//! Appendix B (system chapters)).
//!
//! [`Journal::parse`] walks and checks the whole journal once; after that the views and their
//! iterators cannot fail or panic (every access is `get`-based). Emission is done by the sender
//! through [`Writer`], which reports overflow instead of writing past the buffer.

use super::JournalError;

// Journal header (RFC 6295 §5, figure 8): |S|Y|A|H|TOTCHAN| checkpoint seqnum (16) |
pub const JOURNAL_HEADER_LEN: usize = 3;
pub const J_S: u8 = 0x80;
pub const J_Y: u8 = 0x40;
pub const J_A: u8 = 0x20;
pub const J_H: u8 = 0x10;
pub const J_TOTCHAN: u8 = 0x0F;

// System journal header (§5, figure 10): |S|D|V|Q|F|X| LENGTH (10) |
pub const SYSTEM_HEADER_LEN: usize = 2;
pub const SJ_S: u8 = 0x80;
pub const SJ_D: u8 = 0x40;
pub const SJ_V: u8 = 0x20;
pub const SJ_Q: u8 = 0x10;
pub const SJ_F: u8 = 0x08;
pub const SJ_X: u8 = 0x04;

// Channel journal header (§5, figure 9): |S| CHAN (4) |H| LENGTH (10) |P|C|M|W|N|E|T|A|
pub const CHANNEL_HEADER_LEN: usize = 3;
pub const CJ_S: u8 = 0x80;
pub const CJ_CHAN_MASK: u8 = 0x78;
pub const CJ_CHAN_SHIFT: u8 = 3;
pub const CJ_H: u8 = 0x04;
pub const TOC_P: u8 = 0x80;
pub const TOC_C: u8 = 0x40;
pub const TOC_M: u8 = 0x20;
pub const TOC_W: u8 = 0x10;
pub const TOC_N: u8 = 0x08;
pub const TOC_E: u8 = 0x04;
pub const TOC_T: u8 = 0x02;
pub const TOC_A: u8 = 0x01;

/// 10-bit LENGTH fields (system journal, channel journal, chapter M, chapter D J/K fields).
pub const MAX_LENGTH10: usize = 0x3FF;

/// The S bit and the 7-bit value of the many one-octet `|S| value |` fields.
pub const S_BIT: u8 = 0x80;
pub const LOW7: u8 = 0x7F;

// Chapter M (Appendix A.4): |S|P|E|U|W|Z| LENGTH (10) | then optional |Q| PENDING |
pub const M_P: u8 = 0x40;
pub const M_E: u8 = 0x20;
pub const M_U: u8 = 0x10;
pub const M_W: u8 = 0x08;
pub const M_Z: u8 = 0x04;
// Parameter log table of contents (figure A.4.2): |J|K|L|M|N|T|V|R|
pub const ML_J: u8 = 0x80;
pub const ML_K: u8 = 0x40;
pub const ML_L: u8 = 0x20;
pub const ML_M: u8 = 0x10;
pub const ML_N: u8 = 0x08;
/// T: the count tool codes the parameter; V: the value tool does.
pub const ML_T: u8 = 0x04;
pub const ML_V: u8 = 0x02;

// Chapter D (Appendix B.1): |S|B|G|H|J|K|Y|Z|
pub const D_B: u8 = 0x40;
pub const D_G: u8 = 0x20;
pub const D_H: u8 = 0x10;
pub const D_J: u8 = 0x08;
pub const D_K: u8 = 0x04;
pub const D_Y: u8 = 0x02;
pub const D_Z: u8 = 0x01;
// Chapter D common (F4/F5) field header: |S|C|V|L|DSZ(2)| LENGTH (10) |
pub const DC_C: u8 = 0x40;
// Chapter D realtime (F9/FD) field header: |S|C|L| LENGTH (5) |
pub const DR_C: u8 = 0x40;
pub const DR_LENGTH: u8 = 0x1F;

// Chapter Q (Appendix B.3): |S|N|D|C|T| TOP (3) | CLOCK (16) if C | TIMETOOLS (24) if T |
pub const Q_N: u8 = 0x40;
pub const Q_D: u8 = 0x20;
pub const Q_C: u8 = 0x10;
pub const Q_T: u8 = 0x08;
pub const Q_TOP: u8 = 0x07;

// Chapter F (Appendix B.4): |S|C|P|Q|D|POINT (3)| COMPLETE (32) if C | PARTIAL (32) if P |
pub const F_C: u8 = 0x40;
pub const F_P: u8 = 0x20;
pub const F_Q: u8 = 0x10;
pub const F_D: u8 = 0x08;
pub const F_POINT: u8 = 0x07;

// Chapter X (Appendix B.5): |S|T|C|F|D|L|STA (2)| TCOUNT | COUNT | FIRST (1-4) | DATA ... |
pub const X_T: u8 = 0x40;
pub const X_C: u8 = 0x20;
pub const X_F: u8 = 0x10;
pub const X_D: u8 = 0x08;
pub const X_L: u8 = 0x04;
pub const X_STA: u8 = 0x03;

fn take(buf: &[u8], n: usize) -> Result<(&[u8], &[u8]), JournalError> {
    if buf.len() < n {
        Err(JournalError::Truncated)
    } else {
        Ok(buf.split_at(n))
    }
}

fn len10(hi: u8, lo: u8) -> usize {
    (usize::from(hi & 0x03) << 8) | usize::from(lo)
}

fn byte(buf: &[u8], i: usize) -> u8 {
    buf.get(i).copied().unwrap_or(0)
}

/// Journal header (RFC 6295 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalHeader {
    /// S: set when nothing in the journal is about the packet just before this one.
    pub single: bool,
    /// Y: a system journal follows.
    pub system: bool,
    /// A: channel journals follow.
    pub channels: bool,
    /// H: enhanced Chapter C encoding (Appendix A.3.3).
    pub enhanced: bool,
    /// TOTCHAN: number of channel journals minus one.
    pub totchan: u8,
    pub checkpoint: u16,
}

impl JournalHeader {
    pub fn parse(buf: &[u8]) -> Result<Self, JournalError> {
        let (h, _) = take(buf, JOURNAL_HEADER_LEN)?;
        Ok(JournalHeader {
            single: h[0] & J_S != 0,
            system: h[0] & J_Y != 0,
            channels: h[0] & J_A != 0,
            enhanced: h[0] & J_H != 0,
            totchan: h[0] & J_TOTCHAN,
            checkpoint: u16::from_be_bytes([h[1], h[2]]),
        })
    }

    /// Writes the 3 header octets; `buf` must hold at least [`JOURNAL_HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), JournalError> {
        let b = buf
            .get_mut(..JOURNAL_HEADER_LEN)
            .ok_or(JournalError::Truncated)?;
        b[0] = flag(self.single, J_S)
            | flag(self.system, J_Y)
            | flag(self.channels, J_A)
            | flag(self.enhanced, J_H)
            | (self.totchan & J_TOTCHAN);
        b[1..3].copy_from_slice(&self.checkpoint.to_be_bytes());
        Ok(())
    }
}

pub(crate) fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

/// A whole recovery journal, checked.
#[derive(Clone, Copy, Debug)]
pub struct Journal<'a> {
    pub header: JournalHeader,
    pub system: Option<SystemJournal<'a>>,
    channels: &'a [u8],
    count: usize,
    /// Octets the journal occupies (header, system journal and channel journals).
    pub len: usize,
}

impl<'a> Journal<'a> {
    /// Parses and checks every journal, chapter and log. Bytes after the last channel journal
    /// are not part of the journal (see [`Journal::len`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self, JournalError> {
        let header = JournalHeader::parse(buf)?;
        let mut rest = buf.get(JOURNAL_HEADER_LEN..).unwrap_or(&[]);
        let mut len = JOURNAL_HEADER_LEN;
        let system = if header.system {
            let (sys, n) = SystemJournal::parse(rest)?;
            rest = rest.get(n..).unwrap_or(&[]);
            len += n;
            Some(sys)
        } else {
            None
        };
        let count = if header.channels {
            usize::from(header.totchan) + 1
        } else {
            0
        };
        let start = rest;
        let mut used = 0;
        for _ in 0..count {
            let (_, n) = ChannelJournal::parse(rest)?;
            rest = rest.get(n..).unwrap_or(&[]);
            used += n;
        }
        Ok(Journal {
            header,
            system,
            channels: start.get(..used).unwrap_or(&[]),
            count,
            len: len + used,
        })
    }

    pub fn channels(&self) -> ChannelJournals<'a> {
        ChannelJournals {
            rest: self.channels,
            left: self.count,
        }
    }
}

/// Iterator over the (already checked) channel journals.
#[derive(Clone, Debug)]
pub struct ChannelJournals<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for ChannelJournals<'a> {
    type Item = ChannelJournal<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (cj, n) = ChannelJournal::parse(self.rest).ok()?;
        self.rest = self.rest.get(n..).unwrap_or(&[]);
        Some(cj)
    }
}

/// System journal (§5, Appendix B).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemJournal<'a> {
    pub single: bool,
    pub d: Option<ChapterD<'a>>,
    pub v: Option<ChapterV>,
    pub q: Option<ChapterQ>,
    pub f: Option<ChapterF>,
    pub x: Option<ChapterX<'a>>,
}

impl<'a> SystemJournal<'a> {
    /// Returns the journal and its LENGTH.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, _) = take(buf, SYSTEM_HEADER_LEN)?;
        let length = len10(h[0], h[1]);
        if length < SYSTEM_HEADER_LEN {
            return Err(JournalError::BadLength);
        }
        let (all, _) = take(buf, length)?;
        let mut body = all.get(SYSTEM_HEADER_LEN..).unwrap_or(&[]);
        let mut sys = SystemJournal {
            single: h[0] & SJ_S != 0,
            ..SystemJournal::default()
        };
        if h[0] & SJ_D != 0 {
            let (d, n) = ChapterD::parse(body)?;
            sys.d = Some(d);
            body = body.get(n..).unwrap_or(&[]);
        }
        if h[0] & SJ_V != 0 {
            let (v, rest) = take(body, 1)?;
            sys.v = Some(ChapterV {
                single: v[0] & S_BIT != 0,
                count: v[0] & LOW7,
            });
            body = rest;
        }
        if h[0] & SJ_Q != 0 {
            let (q, n) = ChapterQ::parse(body)?;
            sys.q = Some(q);
            body = body.get(n..).unwrap_or(&[]);
        }
        if h[0] & SJ_F != 0 {
            let (f, n) = ChapterF::parse(body)?;
            sys.f = Some(f);
            body = body.get(n..).unwrap_or(&[]);
        }
        if h[0] & SJ_X != 0 {
            // Chapter X is last and runs to the end of the system journal (Appendix B.5).
            sys.x = Some(ChapterX::parse(body)?);
        } else if !body.is_empty() {
            return Err(JournalError::BadLength);
        }
        Ok((sys, length))
    }
}

/// Channel journal (§5, Appendix A).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelJournal<'a> {
    pub single: bool,
    pub channel: u8,
    pub enhanced: bool,
    pub p: Option<ChapterP>,
    pub c: Option<ChapterC<'a>>,
    pub m: Option<ChapterM<'a>>,
    pub w: Option<ChapterW>,
    pub n: Option<ChapterN<'a>>,
    pub e: Option<ChapterE<'a>>,
    pub t: Option<ChapterT>,
    pub a: Option<ChapterA<'a>>,
}

impl<'a> ChannelJournal<'a> {
    /// Returns the journal and its LENGTH, which must match its chapters exactly.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, _) = take(buf, CHANNEL_HEADER_LEN)?;
        let length = len10(h[0], h[1]);
        if length < CHANNEL_HEADER_LEN {
            return Err(JournalError::BadLength);
        }
        let (all, _) = take(buf, length)?;
        let mut body = all.get(CHANNEL_HEADER_LEN..).unwrap_or(&[]);
        let toc = h[2];
        let mut cj = ChannelJournal {
            single: h[0] & CJ_S != 0,
            channel: (h[0] & CJ_CHAN_MASK) >> CJ_CHAN_SHIFT,
            enhanced: h[0] & CJ_H != 0,
            ..ChannelJournal::default()
        };
        if toc & TOC_P != 0 {
            let (p, rest) = take(body, ChapterP::LEN)?;
            cj.p = Some(ChapterP::parse(p)?);
            body = rest;
        }
        if toc & TOC_C != 0 {
            let (c, n) = ChapterC::parse(body)?;
            cj.c = Some(c);
            body = body.get(n..).unwrap_or(&[]);
        }
        if toc & TOC_M != 0 {
            let (m, n) = ChapterM::parse(body)?;
            cj.m = Some(m);
            body = body.get(n..).unwrap_or(&[]);
        }
        if toc & TOC_W != 0 {
            let (w, rest) = take(body, ChapterW::LEN)?;
            cj.w = Some(ChapterW::parse(w)?);
            body = rest;
        }
        if toc & TOC_N != 0 {
            let (n_, n) = ChapterN::parse(body)?;
            cj.n = Some(n_);
            body = body.get(n..).unwrap_or(&[]);
        }
        if toc & TOC_E != 0 {
            let (e, n) = ChapterE::parse(body)?;
            cj.e = Some(e);
            body = body.get(n..).unwrap_or(&[]);
        }
        if toc & TOC_T != 0 {
            let (t, rest) = take(body, 1)?;
            cj.t = Some(ChapterT {
                single: t[0] & S_BIT != 0,
                pressure: t[0] & LOW7,
            });
            body = rest;
        }
        if toc & TOC_A != 0 {
            let (a, n) = ChapterA::parse(body)?;
            cj.a = Some(a);
            body = body.get(n..).unwrap_or(&[]);
        }
        // RFC 6295 §5: LENGTH covers exactly the header and the chapters the TOC lists.
        if !body.is_empty() {
            return Err(JournalError::BadLength);
        }
        Ok((cj, length))
    }
}

/// Chapter P, program change (Appendix A.2): |S|PROGRAM|B|BANK-MSB|X|BANK-LSB|
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterP {
    pub single: bool,
    pub program: u8,
    /// B: the bank fields hold the bank select values in force at the program change.
    pub bank_valid: bool,
    pub bank_msb: u8,
    /// X: set by senders when controller 0/32 came in an unusual order (A.2); kept as is.
    pub x: bool,
    pub bank_lsb: u8,
}

impl ChapterP {
    pub const LEN: usize = 3;

    pub fn parse(buf: &[u8]) -> Result<Self, JournalError> {
        let (b, _) = take(buf, Self::LEN)?;
        Ok(ChapterP {
            single: b[0] & S_BIT != 0,
            program: b[0] & LOW7,
            bank_valid: b[1] & S_BIT != 0,
            bank_msb: b[1] & LOW7,
            x: b[2] & S_BIT != 0,
            bank_lsb: b[2] & LOW7,
        })
    }

    pub fn emit(&self, w: &mut Writer) -> Result<(), JournalError> {
        w.put(&[
            flag(self.single, S_BIT) | (self.program & LOW7),
            flag(self.bank_valid, S_BIT) | (self.bank_msb & LOW7),
            flag(self.x, S_BIT) | (self.bank_lsb & LOW7),
        ])
    }
}

/// Chapter W, pitch wheel (Appendix A.5): |S| FIRST |R| SECOND |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterW {
    pub single: bool,
    /// First data octet of the pitch wheel command (LSB).
    pub first: u8,
    pub r: bool,
    /// Second data octet (MSB).
    pub second: u8,
}

impl ChapterW {
    pub const LEN: usize = 2;

    pub fn parse(buf: &[u8]) -> Result<Self, JournalError> {
        let (b, _) = take(buf, Self::LEN)?;
        Ok(ChapterW {
            single: b[0] & S_BIT != 0,
            first: b[0] & LOW7,
            r: b[1] & S_BIT != 0,
            second: b[1] & LOW7,
        })
    }

    pub fn emit(&self, w: &mut Writer) -> Result<(), JournalError> {
        w.put(&[
            flag(self.single, S_BIT) | (self.first & LOW7),
            flag(self.r, S_BIT) | (self.second & LOW7),
        ])
    }
}

/// Chapter T, channel pressure (Appendix A.8): |S| PRESSURE |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterT {
    pub single: bool,
    pub pressure: u8,
}

/// Chapter V, active sensing (Appendix B.2): |S| COUNT |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterV {
    pub single: bool,
    pub count: u8,
}

/// A two-octet log `|S| NUMBER |X| VALUE |` as chapters C, N, E and A use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2 {
    pub single: bool,
    pub number: u8,
    /// The second octet's top bit: A (chapter C), Y (N), V (E), X (A).
    pub flag: bool,
    pub value: u8,
}

impl Log2 {
    fn from(b: [u8; 2]) -> Self {
        Log2 {
            single: b[0] & S_BIT != 0,
            number: b[0] & LOW7,
            flag: b[1] & S_BIT != 0,
            value: b[1] & LOW7,
        }
    }

    pub fn emit(&self, w: &mut Writer) -> Result<(), JournalError> {
        w.put(&[
            flag(self.single, S_BIT) | (self.number & LOW7),
            flag(self.flag, S_BIT) | (self.value & LOW7),
        ])
    }
}

/// Iterator over two-octet logs.
#[derive(Clone, Debug)]
pub struct Logs2<'a>(core::slice::ChunksExact<'a, u8>);

impl Iterator for Logs2<'_> {
    type Item = Log2;
    fn next(&mut self) -> Option<Log2> {
        let c = self.0.next()?;
        Some(Log2::from([byte(c, 0), byte(c, 1)]))
    }
}

/// A chapter that is `|S| LEN |` then LEN+1 two-octet logs: C (A.3), E (A.7), A (A.9).
#[derive(Clone, Copy, Debug)]
pub struct LogList<'a> {
    pub single: bool,
    logs: &'a [u8],
}

impl<'a> LogList<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, rest) = take(buf, 1)?;
        let n = (usize::from(h[0] & LOW7) + 1) * 2;
        let (logs, _) = take(rest, n)?;
        Ok((
            LogList {
                single: h[0] & S_BIT != 0,
                logs,
            },
            1 + n,
        ))
    }

    pub fn logs(&self) -> Logs2<'a> {
        Logs2(self.logs.chunks_exact(2))
    }
}

/// Chapter C: controller logs; `flag` is A (0: value tool; 1: ALT with T = value bit 6).
pub type ChapterC<'a> = LogList<'a>;
/// Chapter E: note extras; `flag` is V (1: NoteOff velocity, 0: NoteOn count).
pub type ChapterE<'a> = LogList<'a>;
/// Chapter A: poly pressure; `flag` is X (1: a NoteOff followed the pressure command).
pub type ChapterA<'a> = LogList<'a>;

/// Chapter N, note on/off (Appendix A.6): |B| LEN |LOW|HIGH| note logs | OFFBITS |
#[derive(Clone, Copy, Debug)]
pub struct ChapterN<'a> {
    /// B: the S bit of the chapter header and the OFFBITS.
    pub b: bool,
    pub low: u8,
    pub high: u8,
    logs: &'a [u8],
    offbits: &'a [u8],
}

impl<'a> ChapterN<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, rest) = take(buf, 2)?;
        let low = h[1] >> 4;
        let high = h[1] & 0x0F;
        let mut nlogs = usize::from(h[0] & LOW7);
        // A.6: LOW > HIGH codes "no OFFBITS"; only 15/0 and 15/1 are legal that way, and
        // LEN = 127 with 15/0 codes 128 note logs.
        let noff = match (low, high) {
            (l, h) if l <= h => usize::from(h - l) + 1,
            (15, 0) => {
                if nlogs == 127 {
                    nlogs = 128;
                }
                0
            }
            (15, 1) => 0,
            _ => return Err(JournalError::BadOffbits),
        };
        let (logs, rest) = take(rest, nlogs * 2)?;
        let (offbits, _) = take(rest, noff)?;
        Ok((
            ChapterN {
                b: h[0] & S_BIT != 0,
                low,
                high,
                logs,
                offbits,
            },
            2 + nlogs * 2 + noff,
        ))
    }

    /// Note logs; `flag` is Y (the receiver should play the note).
    pub fn logs(&self) -> Logs2<'a> {
        Logs2(self.logs.chunks_exact(2))
    }

    /// Whether OFFBITS marks `note` as turned off.
    pub fn offbit(&self, note: u8) -> bool {
        let octet = usize::from(note / 8);
        let first = usize::from(self.low);
        if octet < first {
            return false;
        }
        let bits = self.offbits.get(octet - first).copied().unwrap_or(0);
        bits & (0x80 >> (note % 8)) != 0
    }

    /// Notes whose OFFBIT is set, in increasing order.
    pub fn offbit_notes(&self) -> impl Iterator<Item = u8> + 'a {
        let first = self.low;
        let bits = self.offbits;
        (0..bits.len() * 8).filter_map(move |i| {
            let b = bits.get(i / 8).copied().unwrap_or(0);
            let note = usize::from(first) * 8 + i;
            (b & (0x80 >> (i % 8)) != 0 && note < 128).then_some(note as u8)
        })
    }
}

/// One parameter log of chapter M (figure A.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamLog {
    pub single: bool,
    /// Q: NRPN (true) or RPN (false).
    pub nrpn: bool,
    /// 14-bit parameter number.
    pub number: u16,
    pub entry_msb: Option<u8>,
    pub entry_lsb: Option<u8>,
    /// A-BUTTON (data increment count) with its G bit.
    pub a_button: Option<u16>,
    /// C-BUTTON (data decrement count) with its G bit.
    pub c_button: Option<u16>,
    pub count: Option<u8>,
}

/// Chapter M, parameter system (Appendix A.4).
#[derive(Clone, Copy, Debug)]
pub struct ChapterM<'a> {
    pub single: bool,
    /// PENDING with its Q bit, when P is set: a parameter number MSB sent without its LSB.
    pub pending: Option<(bool, u8)>,
    /// E: a parameter transaction is in progress; the last log is the selected parameter.
    pub e: bool,
    pub u: bool,
    pub w: bool,
    pub z: bool,
    logs: &'a [u8],
}

impl<'a> ChapterM<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, _) = take(buf, 2)?;
        let length = len10(h[0], h[1]);
        let (all, _) = take(buf, length)?;
        let mut body = all.get(2..).ok_or(JournalError::BadLength)?;
        let pending = if h[0] & M_P != 0 {
            let (p, rest) = take(body, 1).map_err(|_| JournalError::BadLength)?;
            body = rest;
            Some((p[0] & S_BIT != 0, p[0] & LOW7))
        } else {
            None
        };
        let m = ChapterM {
            single: h[0] & S_BIT != 0,
            pending,
            e: h[0] & M_E != 0,
            u: h[0] & M_U != 0,
            w: h[0] & M_W != 0,
            z: h[0] & M_Z != 0,
            logs: body,
        };
        // Every log must end exactly at LENGTH.
        let mut rest = body;
        while !rest.is_empty() {
            let (_, n) = m.parse_log(rest).ok_or(JournalError::BadLength)?;
            rest = rest.get(n..).unwrap_or(&[]);
        }
        Ok((m, length))
    }

    /// Field removal (A.4.1): with Z and U or W set, logs carry no `|Q|PNUM-MSB|` octet.
    fn msb_removed(&self) -> bool {
        self.z && (self.u || self.w)
    }

    fn parse_log(&self, buf: &[u8]) -> Option<(ParamLog, usize)> {
        let mut i = 0;
        let mut next = |n: usize| {
            let s = buf.get(i..i + n);
            i += n;
            s
        };
        let lsb = *next(1)?.first()?;
        let (nrpn, msb) = if self.msb_removed() {
            (self.w, 0)
        } else {
            let b = *next(1)?.first()?;
            (b & S_BIT != 0, b & LOW7)
        };
        let toc = *next(1)?.first()?;
        let mut log = ParamLog {
            single: lsb & S_BIT != 0,
            nrpn,
            number: (u16::from(msb) << 7) | u16::from(lsb & LOW7),
            entry_msb: None,
            entry_lsb: None,
            a_button: None,
            c_button: None,
            count: None,
        };
        if toc & ML_J != 0 {
            log.entry_msb = Some(next(1)?.first()? & LOW7);
        }
        if toc & ML_K != 0 {
            log.entry_lsb = Some(next(1)?.first()? & LOW7);
        }
        if toc & ML_L != 0 {
            let b = next(2)?;
            log.a_button = Some(u16::from_be_bytes([byte(b, 0), byte(b, 1)]));
        }
        if toc & ML_M != 0 {
            let b = next(2)?;
            log.c_button = Some(u16::from_be_bytes([byte(b, 0), byte(b, 1)]));
        }
        if toc & ML_N != 0 {
            log.count = Some(next(1)?.first()? & LOW7);
        }
        Some((log, i))
    }

    pub fn logs(&self) -> impl Iterator<Item = ParamLog> + '_ {
        let mut rest = self.logs;
        core::iter::from_fn(move || {
            let (log, n) = self.parse_log(rest)?;
            rest = rest.get(n..).unwrap_or(&[]);
            Some(log)
        })
    }
}

/// Chapter D, simple system commands (Appendix B.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChapterD<'a> {
    pub single: bool,
    /// B: System Reset count (mod 128) with its S bit.
    pub reset: Option<(bool, u8)>,
    /// G: Tune Request count.
    pub tune_request: Option<(bool, u8)>,
    /// H: Song Select value.
    pub song_select: Option<(bool, u8)>,
    /// J, K: the F4 and F5 fields (S bit, COUNT if present, whole field).
    pub f4: Option<CommonField<'a>>,
    pub f5: Option<CommonField<'a>>,
    /// Y, Z: the F9 and FD fields.
    pub f9: Option<CommonField<'a>>,
    pub fd: Option<CommonField<'a>>,
}

/// An undefined-command field of chapter D: its S bit, COUNT (if C) and raw octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonField<'a> {
    pub single: bool,
    pub count: Option<u8>,
    pub raw: &'a [u8],
}

impl<'a> ChapterD<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, mut rest) = take(buf, 1)?;
        let mut d = ChapterD {
            single: h[0] & S_BIT != 0,
            ..ChapterD::default()
        };
        let mut used = 1;
        let mut one = |rest: &mut &'a [u8]| -> Result<(bool, u8), JournalError> {
            let (b, r) = take(rest, 1)?;
            *rest = r;
            used += 1;
            Ok((b[0] & S_BIT != 0, b[0] & LOW7))
        };
        if h[0] & D_B != 0 {
            d.reset = Some(one(&mut rest)?);
        }
        if h[0] & D_G != 0 {
            d.tune_request = Some(one(&mut rest)?);
        }
        if h[0] & D_H != 0 {
            d.song_select = Some(one(&mut rest)?);
        }
        for (bit, common) in [(D_J, true), (D_K, true), (D_Y, false), (D_Z, false)] {
            if h[0] & bit == 0 {
                continue;
            }
            let field = if common {
                let (fh, _) = take(rest, 2)?;
                let len = len10(fh[0], fh[1]);
                let (raw, _) = take(rest, len)?;
                if len < 2 || (fh[0] & DC_C != 0 && len < 3) {
                    return Err(JournalError::BadLength);
                }
                CommonField {
                    single: fh[0] & S_BIT != 0,
                    count: (fh[0] & DC_C != 0).then(|| byte(raw, 2)),
                    raw,
                }
            } else {
                let (fh, _) = take(rest, 1)?;
                let len = usize::from(fh[0] & DR_LENGTH);
                let (raw, _) = take(rest, len)?;
                if len < 1 || (fh[0] & DR_C != 0 && len < 2) {
                    return Err(JournalError::BadLength);
                }
                CommonField {
                    single: fh[0] & S_BIT != 0,
                    count: (fh[0] & DR_C != 0).then(|| byte(raw, 1)),
                    raw,
                }
            };
            rest = rest.get(field.raw.len()..).unwrap_or(&[]);
            used += field.raw.len();
            match bit {
                D_J => d.f4 = Some(field),
                D_K => d.f5 = Some(field),
                D_Y => d.f9 = Some(field),
                _ => d.fd = Some(field),
            }
        }
        Ok((d, used))
    }
}

/// Chapter Q, sequencer state (Appendix B.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterQ {
    pub single: bool,
    /// N: the sequencer is running (Start or Continue was the last of Start/Stop/Continue).
    pub running: bool,
    pub d: bool,
    /// The 19-bit song position in MIDI clocks (TOP and CLOCK), when C is set.
    pub clock: Option<u32>,
    pub timetools: Option<u32>,
}

impl ChapterQ {
    pub fn parse(buf: &[u8]) -> Result<(Self, usize), JournalError> {
        let (h, mut rest) = take(buf, 1)?;
        let mut used = 1;
        let clock = if h[0] & Q_C != 0 {
            let (c, r) = take(rest, 2)?;
            rest = r;
            used += 2;
            Some((u32::from(h[0] & Q_TOP) << 16) | u32::from(u16::from_be_bytes([c[0], c[1]])))
        } else {
            None
        };
        let timetools = if h[0] & Q_T != 0 {
            let (t, _) = take(rest, 3)?;
            used += 3;
            Some(u32::from_be_bytes([0, t[0], t[1], t[2]]))
        } else {
            None
        };
        Ok((
            ChapterQ {
                single: h[0] & S_BIT != 0,
                running: h[0] & Q_N != 0,
                d: h[0] & Q_D != 0,
                clock,
                timetools,
            },
            used,
        ))
    }

    pub fn emit(&self, w: &mut Writer) -> Result<(), JournalError> {
        let clock = self.clock.unwrap_or(0) & 0x7_FFFF;
        w.put(&[flag(self.single, S_BIT)
            | flag(self.running, Q_N)
            | flag(self.d, Q_D)
            | flag(self.clock.is_some(), Q_C)
            | flag(self.timetools.is_some(), Q_T)
            | (clock >> 16) as u8])?;
        if self.clock.is_some() {
            w.put(&(clock as u16).to_be_bytes())?;
        }
        if let Some(t) = self.timetools {
            w.put(&t.to_be_bytes()[1..])?;
        }
        Ok(())
    }
}

/// Chapter F, MIDI time code (Appendix B.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterF {
    pub single: bool,
    /// COMPLETE: HR MN SC FR octets, or (with Q) the eight quarter-frame nibbles MT0..MT7.
    pub complete: Option<u32>,
    pub partial: Option<u32>,
    /// Q: COMPLETE is coded as quarter-frame nibbles.
    pub quarter: bool,
    /// D: time code runs backwards.
    pub reverse: bool,
    /// POINT: the last quarter frame sent (0-7).
    pub point: u8,
}

impl ChapterF {
    pub fn parse(buf: &[u8]) -> Result<(Self, usize), JournalError> {
        let (h, mut rest) = take(buf, 1)?;
        let mut used = 1;
        let mut word = |on: bool, rest: &mut &[u8]| -> Result<Option<u32>, JournalError> {
            if !on {
                return Ok(None);
            }
            let (b, r) = take(rest, 4)?;
            *rest = r;
            used += 4;
            Ok(Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        };
        let complete = word(h[0] & F_C != 0, &mut rest)?;
        let partial = word(h[0] & F_P != 0, &mut rest)?;
        Ok((
            ChapterF {
                single: h[0] & S_BIT != 0,
                complete,
                partial,
                quarter: h[0] & F_Q != 0,
                reverse: h[0] & F_D != 0,
                point: h[0] & F_POINT,
            },
            used,
        ))
    }

    pub fn emit(&self, w: &mut Writer) -> Result<(), JournalError> {
        w.put(&[flag(self.single, S_BIT)
            | flag(self.complete.is_some(), F_C)
            | flag(self.partial.is_some(), F_P)
            | flag(self.quarter, F_Q)
            | flag(self.reverse, F_D)
            | (self.point & F_POINT)])?;
        for v in [self.complete, self.partial].into_iter().flatten() {
            w.put(&v.to_be_bytes())?;
        }
        Ok(())
    }
}

/// Chapter X, System Exclusive (Appendix B.5): a list of command logs running to the end of
/// the system journal. The S bit of the first log is the chapter's S bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChapterX<'a> {
    pub single: bool,
    logs: &'a [u8],
}

/// STA values of a chapter X log (B.5.1): the state of the SysEx command it codes.
pub const STA_UNFINISHED: u8 = 0;
pub const STA_CANCELLED: u8 = 1;
/// Finished, sent with the "dropped F7" construction.
pub const STA_DROPPED_F7: u8 = 2;
pub const STA_FINISHED: u8 = 3;

/// One command log of chapter X (figure B.5.1):
/// `|S|T|C|F|D|L|STA| TCOUNT | COUNT | FIRST (1-4) | DATA ...` where DATA holds the command's
/// data octets, the last one with its top bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysexLog<'a> {
    pub single: bool,
    pub tcount: Option<u8>,
    pub count: Option<u8>,
    /// FIRST: data octets of the command that come before DATA.
    pub first: Option<u32>,
    data: Option<&'a [u8]>,
    /// L: the list tool codes the log (else the recency tool).
    pub list: bool,
    pub status: u8,
}

impl<'a> SysexLog<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), JournalError> {
        let (h, mut rest) = take(buf, 1)?;
        let mut used = 1;
        let mut one = |on: bool, rest: &mut &'a [u8]| -> Result<Option<u8>, JournalError> {
            if !on {
                return Ok(None);
            }
            let (b, r) = take(rest, 1)?;
            *rest = r;
            used += 1;
            Ok(Some(b[0]))
        };
        let tcount = one(h[0] & X_T != 0, &mut rest)?;
        let count = one(h[0] & X_C != 0, &mut rest)?;
        let first = if h[0] & X_F != 0 {
            // FIRST: 1-4 octets of 7 bits, top bit set on all but the last (like delta times).
            let n = rest
                .iter()
                .take(4)
                .position(|&b| b & S_BIT == 0)
                .ok_or(JournalError::Truncated)?
                + 1;
            let (f, r) = take(rest, n)?;
            rest = r;
            used += n;
            Some(f.iter().fold(0u32, |v, &b| (v << 7) | u32::from(b & LOW7)))
        } else {
            None
        };
        let data = if h[0] & X_D != 0 {
            let n = rest
                .iter()
                .position(|&b| b & S_BIT != 0)
                .ok_or(JournalError::Truncated)?
                + 1;
            used += n;
            rest.get(..n)
        } else {
            None
        };
        Ok((
            SysexLog {
                single: h[0] & S_BIT != 0,
                tcount,
                count,
                first,
                data,
                list: h[0] & X_L != 0,
                status: h[0] & X_STA,
            },
            used,
        ))
    }

    /// The data octets in DATA (7 bits each), if D was set.
    pub fn data(&self) -> Option<impl Iterator<Item = u8> + 'a> {
        self.data.map(|d| d.iter().map(|b| b & LOW7))
    }

    /// The whole command is here: finished, and DATA starts at its first data octet.
    pub fn complete(&self) -> bool {
        matches!(self.status, STA_FINISHED | STA_DROPPED_F7) && self.first.unwrap_or(0) == 0
    }
}

impl<'a> ChapterX<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, JournalError> {
        let (h, _) = take(buf, 1)?;
        let mut rest = buf;
        while !rest.is_empty() {
            let (_, n) = SysexLog::parse(rest).map_err(|_| JournalError::BadLength)?;
            rest = rest.get(n..).unwrap_or(&[]);
        }
        Ok(ChapterX {
            single: h[0] & S_BIT != 0,
            logs: buf,
        })
    }

    pub fn logs(&self) -> impl Iterator<Item = SysexLog<'a>> + 'a {
        let mut rest = self.logs;
        core::iter::from_fn(move || {
            let (log, n) = SysexLog::parse(rest).ok()?;
            rest = rest.get(n..).unwrap_or(&[]);
            Some(log)
        })
    }
}

/// A cursor over the caller's buffer that never writes past its end.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let end = self.pos + bytes.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(JournalError::NoRoom)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// The next `n` octets, to be filled by the caller (one bounds check for many logs).
    pub fn reserve(&mut self, n: usize) -> Result<&mut [u8], JournalError> {
        let at = self.pos;
        let dst = self.buf.get_mut(at..at + n).ok_or(JournalError::NoRoom)?;
        self.pos = at + n;
        Ok(dst)
    }

    /// Reserves `n` octets to be filled in later with [`Writer::patch`].
    pub fn skip(&mut self, n: usize) -> Result<usize, JournalError> {
        let at = self.pos;
        self.put(&[0; 4][..n.min(4)])?;
        Ok(at)
    }

    /// Forgets everything written from `at` on.
    pub fn truncate(&mut self, at: usize) {
        self.pos = self.pos.min(at);
    }

    pub fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    pub fn or_at(&mut self, at: usize, bits: u8) {
        if let Some(b) = self.buf.get_mut(at) {
            *b |= bits;
        }
    }

    pub fn and_at(&mut self, at: usize, bits: u8) {
        if let Some(b) = self.buf.get_mut(at) {
            *b &= bits;
        }
    }
}

/// Writes a 10-bit LENGTH into the low bits of the two octets at `at` (keeping the flags).
pub fn patch_len10(w: &mut Writer, at: usize, len: usize) -> Result<(), JournalError> {
    if len > MAX_LENGTH10 {
        return Err(JournalError::NoRoom);
    }
    w.or_at(at, (len >> 8) as u8 & 0x03);
    w.or_at(at + 1, len as u8);
    Ok(())
}
