//! Universal MIDI Packets (M2-104-UM): the [`Ump`] type, translation to MIDI 1.0 ([`ToMidi1`])
//! and from it ([`midi1_to_ump`] in the MIDI 1.0 protocol, [`ToMidi2`] in the MIDI 2.0
//! protocol), and the UMP stream messages a UMP endpoint answers ([`StreamResponder`]).
use crate::midi::{self, status, MidiMessage, ShortMessage};
use crate::sysex::SysExAssembler;
use crate::wire::midi_list::{SegmentKind, SysExSegment};

/// One Universal MIDI Packet: 1 to 4 32-bit words, the count set by the message type in the top
/// nibble (M2-104-UM, table of message types).
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

/// UMP message types (M2-104-UM).
pub mod mt {
    pub const UTILITY: u8 = 0x0;
    pub const SYSTEM: u8 = 0x1;
    pub const MIDI1_CHANNEL_VOICE: u8 = 0x2;
    pub const DATA64: u8 = 0x3;
    pub const MIDI2_CHANNEL_VOICE: u8 = 0x4;
    pub const STREAM: u8 = 0xF;
}

/// Status of a 7-bit SysEx (Data 64) packet, bits 23-20 of its first word.
mod sysex7 {
    pub const COMPLETE: u8 = 0x0;
    pub const START: u8 = 0x1;
    pub const CONTINUE: u8 = 0x2;
    pub const END: u8 = 0x3;
    /// Data bytes one packet carries.
    pub const BYTES: usize = 6;
}

/// MIDI 2.0 channel voice opcodes that have no MIDI 1.0 status of the same number.
mod opcode {
    pub const REGISTERED_CONTROLLER: u8 = 0x2;
    pub const ASSIGNABLE_CONTROLLER: u8 = 0x3;
    pub const NOTE_OFF: u8 = 0x8;
    pub const NOTE_ON: u8 = 0x9;
    pub const POLY_PRESSURE: u8 = 0xA;
    pub const CONTROL_CHANGE: u8 = 0xB;
    pub const PROGRAM_CHANGE: u8 = 0xC;
    pub const CHANNEL_PRESSURE: u8 = 0xD;
    pub const PITCH_BEND: u8 = 0xE;
}

/// MIDI 1.0 controllers the translation reads or writes (MIDI 1.0 spec, table III).
mod cc {
    pub const BANK_MSB: u8 = 0;
    pub const BANK_LSB: u8 = 32;
    pub const DATA_ENTRY_MSB: u8 = 6;
    pub const DATA_ENTRY_LSB: u8 = 38;
    pub const NRPN_LSB: u8 = 98;
    pub const NRPN_MSB: u8 = 99;
    pub const RPN_LSB: u8 = 100;
    pub const RPN_MSB: u8 = 101;
}

/// Scales `value` of `src_bits` up to `dst_bits` so that minimum, center and maximum map to
/// minimum, center and maximum (M2-104-UM translation appendix, "min-center-max" scaling):
/// below the center a plain shift, above it the lower bits repeated into the new ones.
pub fn scale_up(value: u32, src_bits: u32, dst_bits: u32) -> u32 {
    let shift = dst_bits - src_bits;
    let shifted = value << shift;
    let center = 1u32 << (src_bits - 1);
    if value <= center {
        return shifted;
    }
    let repeat_bits = src_bits - 1;
    let mut repeat = value & ((1u32 << repeat_bits) - 1);
    repeat = if shift > repeat_bits {
        repeat << (shift - repeat_bits)
    } else {
        repeat >> (repeat_bits - shift)
    };
    let mut out = shifted;
    while repeat != 0 {
        out |= repeat;
        repeat >>= repeat_bits;
    }
    out
}

/// Scales down by dropping the low bits (translation appendix).
pub fn scale_down(value: u32, src_bits: u32, dst_bits: u32) -> u32 {
    value >> (src_bits - dst_bits)
}

/// A MIDI 1.0 message from a UMP, with the UMP group it came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMessage {
    pub group: u8,
    pub message: MidiMessage,
}

/// UMP to MIDI 1.0: types 1 (system), 2 (MIDI 1.0 channel voice), 3 (7-bit SysEx, reassembled
/// per group) and 4 (MIDI 2.0 channel voice, by the rules of the M2-104-UM translation
/// appendix). Other types (utility, stream, data 128, flex data) have no MIDI 1.0 form and give
/// nothing.
#[derive(Clone, Debug)]
pub struct ToMidi1 {
    sysex: Vec<SysExAssembler>,
    /// SysEx messages dropped: too long, or their segments out of order.
    pub sysex_dropped: u64,
}

impl ToMidi1 {
    /// `max_sysex`: longest SysEx reassembled, `F0` and `F7` included.
    pub fn new(max_sysex: usize) -> Self {
        ToMidi1 {
            sysex: (0..16).map(|_| SysExAssembler::new(max_sysex)).collect(),
            sysex_dropped: 0,
        }
    }

    /// Drops SysEx in progress (UMPs were lost).
    pub fn abort(&mut self) {
        self.sysex.iter_mut().for_each(|a| {
            a.abort();
        });
    }

    /// The MIDI 1.0 messages `ump` stands for, appended to `out`.
    pub fn translate(&mut self, ump: &Ump, out: &mut Vec<GroupMessage>) {
        let w = ump.words();
        let group = ump.group();
        let [_, b1, b2, b3] = w[0].to_be_bytes();
        let mut short = |bytes: &[u8]| {
            if let Ok(m) = ShortMessage::from_bytes(bytes) {
                out.push(GroupMessage {
                    group,
                    message: MidiMessage::Short(m),
                });
            }
        };
        match ump.message_type() {
            mt::SYSTEM => match midi::data_len(b1) {
                Some(n) if (0xF1..=0xFF).contains(&b1) && b1 != status::SYSEX_END => {
                    short(&[b1, b2, b3][..1 + n])
                }
                _ => {}
            },
            mt::MIDI1_CHANNEL_VOICE => {
                if let Some(n) = midi::data_len(b1).filter(|_| midi::is_channel(b1)) {
                    short(&[b1, b2, b3][..1 + n])
                }
            }
            mt::DATA64 => self.sysex7(group, w, out),
            mt::MIDI2_CHANNEL_VOICE => midi2_to_midi1(w[0], w[1], &mut short),
            _ => {}
        }
    }

    /// [`ToMidi1::translate`] for each of `umps`.
    pub fn translate_all(&mut self, umps: &[Ump], out: &mut Vec<GroupMessage>) {
        umps.iter().for_each(|u| self.translate(u, out));
    }

    fn sysex7(&mut self, group: u8, w: &[u32], out: &mut Vec<GroupMessage>) {
        let bytes = [w[0].to_be_bytes(), w[1].to_be_bytes()].concat();
        let kind = match bytes[1] >> 4 {
            sysex7::COMPLETE => SegmentKind::Whole,
            sysex7::START => SegmentKind::First,
            sysex7::CONTINUE => SegmentKind::Middle,
            sysex7::END => SegmentKind::Last,
            _ => return,
        };
        let n = usize::from(bytes[1] & 0x0F).min(sysex7::BYTES);
        let segment = SysExSegment {
            kind,
            data: &bytes[2..2 + n],
        };
        let pushed = self.sysex[usize::from(group)].push(&segment);
        if pushed.error.is_some() {
            self.sysex_dropped += 1;
        }
        if let Some(message) = pushed.message {
            out.push(GroupMessage { group, message });
        }
    }
}

/// A MIDI 2.0 channel voice message (words `w0`, `w1`) as MIDI 1.0 (translation appendix): values
/// scaled down, registered / assignable controllers as RPN / NRPN sequences, program change with
/// bank as bank select then program change; per-note and relative messages have no MIDI 1.0
/// form and are dropped.
fn midi2_to_midi1(w0: u32, w1: u32, emit: &mut impl FnMut(&[u8])) {
    let [_, status_ch, index1, index2] = w0.to_be_bytes();
    let (op, ch) = (status_ch >> 4, status_ch & 0x0F);
    let with = |op: u8| (op << 4) | ch;
    let down7 = |v: u32| scale_down(v, 32, 7) as u8;
    let cc = |emit: &mut dyn FnMut(&[u8]), n: u8, v: u8| emit(&[with(0xB), n, v]);
    match op {
        opcode::NOTE_OFF | opcode::NOTE_ON => {
            let mut velocity = scale_down(w1 >> 16, 16, 7) as u8;
            // A MIDI 1.0 note on with velocity 0 is a note off: keep it a note on.
            if op == opcode::NOTE_ON && velocity == 0 {
                velocity = 1;
            }
            emit(&[with(op), index1 & 0x7F, velocity]);
        }
        opcode::POLY_PRESSURE => emit(&[with(op), index1 & 0x7F, down7(w1)]),
        opcode::CONTROL_CHANGE => emit(&[with(op), index1 & 0x7F, down7(w1)]),
        opcode::CHANNEL_PRESSURE => emit(&[with(op), down7(w1)]),
        opcode::PITCH_BEND => {
            let v = scale_down(w1, 32, 14);
            emit(&[with(op), (v & 0x7F) as u8, (v >> 7) as u8]);
        }
        opcode::PROGRAM_CHANGE => {
            let [program, _, bank_msb, bank_lsb] = w1.to_be_bytes();
            // Bank valid: bit 0 of the option flags (index2).
            if index2 & 1 != 0 {
                cc(emit, cc::BANK_MSB, bank_msb & 0x7F);
                cc(emit, cc::BANK_LSB, bank_lsb & 0x7F);
            }
            emit(&[with(op), program & 0x7F]);
        }
        opcode::REGISTERED_CONTROLLER | opcode::ASSIGNABLE_CONTROLLER => {
            let (msb, lsb) = if op == opcode::REGISTERED_CONTROLLER {
                (cc::RPN_MSB, cc::RPN_LSB)
            } else {
                (cc::NRPN_MSB, cc::NRPN_LSB)
            };
            let v = scale_down(w1, 32, 14);
            cc(emit, msb, index1 & 0x7F);
            cc(emit, lsb, index2 & 0x7F);
            cc(emit, cc::DATA_ENTRY_MSB, (v >> 7) as u8);
            cc(emit, cc::DATA_ENTRY_LSB, (v & 0x7F) as u8);
        }
        _ => {}
    }
}

/// MIDI 1.0 to UMP in the MIDI 1.0 protocol (what a network peer gets from a MIDI 1.0 port):
/// system messages as type 1, channel voice as type 2, SysEx as type 3 packets of six bytes.
pub fn midi1_to_ump(group: u8, message: &MidiMessage, out: &mut Vec<Ump>) {
    let g = u32::from(group & 0x0F) << 24;
    match message {
        MidiMessage::Short(m) => {
            let bytes = m.as_bytes();
            let byte = |i: usize| u32::from(bytes.get(i).copied().unwrap_or(0));
            let t = if midi::is_channel(m.status()) {
                mt::MIDI1_CHANNEL_VOICE
            } else {
                mt::SYSTEM
            };
            let word = (u32::from(t) << 28) | g | (byte(0) << 16) | (byte(1) << 8) | byte(2);
            out.extend(Ump::new(&[word]));
        }
        MidiMessage::SysEx(bytes) => {
            let data = match bytes.as_slice() {
                [status::SYSEX_START, inner @ .., status::SYSEX_END] => inner,
                _ => return,
            };
            let chunks: Vec<&[u8]> = if data.is_empty() {
                vec![&[]]
            } else {
                data.chunks(sysex7::BYTES).collect()
            };
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.iter().enumerate() {
                let kind = match (i, last) {
                    (0, 0) => sysex7::COMPLETE,
                    (0, _) => sysex7::START,
                    (i, last) if i == last => sysex7::END,
                    _ => sysex7::CONTINUE,
                };
                let mut b = [0u8; 8];
                b[0] = (mt::DATA64 << 4) | (group & 0x0F);
                b[1] = (kind << 4) | chunk.len() as u8;
                b[2..2 + chunk.len()].copy_from_slice(chunk);
                let w0 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let w1 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                out.extend(Ump::new(&[w0, w1]));
            }
        }
    }
}

/// What a channel has selected for MIDI 1.0 to MIDI 2.0 translation.
#[derive(Clone, Copy, Debug, Default)]
struct ChannelState {
    bank_msb: Option<u8>,
    bank_lsb: Option<u8>,
    /// (registered?, msb, lsb) of the parameter data entry goes to.
    parameter: (bool, Option<u8>, Option<u8>),
    data_msb: u8,
}

/// MIDI 1.0 to UMP in the MIDI 2.0 protocol (translation appendix): channel voice becomes type 4
/// with values scaled up min-center-max; bank select is held for the next program change (bank
/// valid); RPN / NRPN selection and data entry become one registered / assignable controller
/// message, sent on data entry MSB and again, finer, on data entry LSB. System messages and
/// SysEx are as in [`midi1_to_ump`].
#[derive(Clone, Debug, Default)]
pub struct ToMidi2 {
    channels: [[ChannelState; 16]; 16],
}

impl ToMidi2 {
    pub fn translate(&mut self, group: u8, message: &MidiMessage, out: &mut Vec<Ump>) {
        let m = match message {
            MidiMessage::Short(m) if midi::is_channel(m.status()) => m,
            _ => return midi1_to_ump(group, message, out),
        };
        let group = group & 0x0F;
        let (op, ch) = (m.status() >> 4, m.status() & 0x0F);
        let (d1, d2) = (m.data1(), m.data2());
        let state = &mut self.channels[usize::from(group)][usize::from(ch)];
        let mut push = |op: u8, index1: u8, index2: u8, w1: u32| {
            let w0 = (u32::from(mt::MIDI2_CHANNEL_VOICE) << 28)
                | (u32::from(group) << 24)
                | (u32::from((op << 4) | ch) << 16)
                | (u32::from(index1) << 8)
                | u32::from(index2);
            out.extend(Ump::new(&[w0, w1]));
        };
        let up7 = |v: u8| scale_up(u32::from(v), 7, 32);
        match op {
            opcode::NOTE_ON if d2 == 0 => {
                // Note on with velocity 0 is a note off; its velocity is the default, 64.
                push(opcode::NOTE_OFF, d1, 0, scale_up(64, 7, 16) << 16)
            }
            opcode::NOTE_OFF | opcode::NOTE_ON => {
                push(op, d1, 0, scale_up(u32::from(d2), 7, 16) << 16)
            }
            opcode::POLY_PRESSURE => push(op, d1, 0, up7(d2)),
            opcode::CHANNEL_PRESSURE => push(op, 0, 0, up7(d1)),
            opcode::PITCH_BEND => {
                let v = u32::from(d1) | (u32::from(d2) << 7);
                push(op, 0, 0, scale_up(v, 14, 32))
            }
            opcode::PROGRAM_CHANGE => {
                let bank = state.bank_msb.is_some() || state.bank_lsb.is_some();
                let w1 = (u32::from(d1) << 24)
                    | (u32::from(state.bank_msb.unwrap_or(0)) << 8)
                    | u32::from(state.bank_lsb.unwrap_or(0));
                push(op, 0, u8::from(bank), w1)
            }
            opcode::CONTROL_CHANGE => match d1 {
                cc::BANK_MSB => state.bank_msb = Some(d2),
                cc::BANK_LSB => state.bank_lsb = Some(d2),
                cc::RPN_MSB | cc::NRPN_MSB => {
                    state.parameter = (d1 == cc::RPN_MSB, Some(d2), state.parameter.2)
                }
                cc::RPN_LSB | cc::NRPN_LSB => {
                    state.parameter = (d1 == cc::RPN_LSB, state.parameter.1, Some(d2))
                }
                cc::DATA_ENTRY_MSB | cc::DATA_ENTRY_LSB => match state.parameter {
                    // 127/127 is the null parameter: data entry goes nowhere.
                    (registered, Some(msb), Some(lsb)) if (msb, lsb) != (127, 127) => {
                        let (data_msb, data_lsb) = if d1 == cc::DATA_ENTRY_MSB {
                            state.data_msb = d2;
                            (d2, 0)
                        } else {
                            (state.data_msb, d2)
                        };
                        let v = (u32::from(data_msb) << 7) | u32::from(data_lsb);
                        let op = if registered {
                            opcode::REGISTERED_CONTROLLER
                        } else {
                            opcode::ASSIGNABLE_CONTROLLER
                        };
                        push(op, msb, lsb, scale_up(v, 14, 32))
                    }
                    _ => push(op, d1, 0, up7(d2)),
                },
                _ => push(op, d1, 0, up7(d2)),
            },
            _ => {}
        }
    }
}

/// UMP stream message statuses (M2-104-UM, UMP stream messages), bits 25-16 of the first word.
pub mod stream {
    pub const ENDPOINT_DISCOVERY: u16 = 0x000;
    pub const ENDPOINT_INFO: u16 = 0x001;
    pub const DEVICE_IDENTITY: u16 = 0x002;
    pub const ENDPOINT_NAME: u16 = 0x003;
    pub const PRODUCT_INSTANCE_ID: u16 = 0x004;
    pub const CONFIG_REQUEST: u16 = 0x005;
    pub const CONFIG_NOTIFICATION: u16 = 0x006;
    pub const FUNCTION_BLOCK_DISCOVERY: u16 = 0x010;
    pub const FUNCTION_BLOCK_INFO: u16 = 0x011;
    pub const FUNCTION_BLOCK_NAME: u16 = 0x012;

    /// Endpoint discovery filter bits.
    pub const WANT_INFO: u32 = 1 << 0;
    pub const WANT_NAME: u32 = 1 << 2;
    pub const WANT_PRODUCT_ID: u32 = 1 << 3;
    pub const WANT_CONFIG: u32 = 1 << 4;
    /// Function block discovery filter bits.
    pub const WANT_FB_INFO: u8 = 1 << 0;
    pub const WANT_FB_NAME: u8 = 1 << 1;
    /// Stream configuration protocols.
    pub const PROTOCOL_MIDI1: u8 = 0x01;
    pub const PROTOCOL_MIDI2: u8 = 0x02;
}

/// Form of a multi-packet stream message: complete, start, continue, end.
fn form(index: usize, count: usize) -> u32 {
    match (index, count) {
        (_, 1) => 0,
        (0, _) => 1,
        (i, n) if i + 1 == n => 3,
        _ => 2,
    }
}

/// A stream UMP: form, status and the low 16 bits of the first word, then three words.
fn stream_ump(form: u32, status: u16, low: u32, rest: [u32; 3]) -> Ump {
    let w0 = (u32::from(mt::STREAM) << 28) | (form << 26) | (u32::from(status) << 16) | low;
    Ump {
        words: [w0, rest[0], rest[1], rest[2]],
        len: 4,
    }
}

/// A text in stream packets: `first` bytes in the low bits of word 0 (after `prefix`, which
/// takes its high byte when set), 12 in the other words.
fn text_packets(status: u16, prefix: Option<u8>, text: &[u8], out: &mut Vec<Ump>) {
    let first = if prefix.is_some() { 1 } else { 2 };
    let per = first + 12;
    let count = text.len().div_ceil(per).max(1);
    for i in 0..count {
        let chunk = text
            .get(i * per..((i + 1) * per).min(text.len()))
            .unwrap_or(&[]);
        let mut b = [0u8; 14];
        let offset = usize::from(prefix.is_some());
        if let Some(p) = prefix {
            b[0] = p;
        }
        b[offset..offset + chunk.len()].copy_from_slice(chunk);
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let low = (u32::from(b[0]) << 8) | u32::from(b[1]);
        out.push(stream_ump(
            form(i, count),
            status,
            low,
            [word(2), word(6), word(10)],
        ));
    }
}

/// One function block of our endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionBlock {
    pub name: String,
    pub first_group: u8,
    pub groups: u8,
    /// 1 input, 2 output, 3 both (as seen from the endpoint).
    pub direction: u8,
    /// 0 not MIDI 1.0, 1 MIDI 1.0 at any speed, 2 MIDI 1.0 at 31.25 kb/s.
    pub midi1: u8,
    /// 0 unknown, 1 receiver, 2 sender, 3 both.
    pub ui_hint: u8,
}

/// What our UMP endpoint says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Endpoint name (at most 98 bytes) and product instance id (at most 42).
    pub name: String,
    pub product_id: String,
    pub function_blocks: Vec<FunctionBlock>,
    /// Protocols we take: we translate MIDI 2.0 channel voice down, so both by default.
    pub midi1: bool,
    pub midi2: bool,
    /// The protocol we send (stream configuration notification): MIDI 1.0 for a MIDI 1.0 bridge.
    pub protocol: u8,
}

impl EndpointInfo {
    /// One bidirectional MIDI 1.0 function block on group 1 named after the endpoint.
    pub fn new(name: &str, product_id: &str) -> Self {
        EndpointInfo {
            name: name.to_string(),
            product_id: product_id.to_string(),
            function_blocks: vec![FunctionBlock {
                name: name.to_string(),
                first_group: 0,
                groups: 1,
                direction: 3,
                midi1: 1,
                ui_hint: 3,
            }],
            midi1: true,
            midi2: true,
            protocol: stream::PROTOCOL_MIDI1,
        }
    }
}

/// Answers the UMP stream messages a peer sends to learn about our endpoint: endpoint
/// discovery, stream configuration request, function block discovery.
#[derive(Clone, Debug)]
pub struct StreamResponder {
    info: EndpointInfo,
}

/// UMP version we speak: 1.1 (M2-104-UM v1.1).
const UMP_VERSION: u32 = 0x0101;

impl StreamResponder {
    pub fn new(info: EndpointInfo) -> Self {
        StreamResponder { info }
    }

    /// If `ump` is a stream message: appends the answers to `out` and returns true (the caller
    /// passes it no further). Other UMPs: false, nothing appended.
    pub fn handle(&self, ump: &Ump, out: &mut Vec<Ump>) -> bool {
        if ump.message_type() != mt::STREAM {
            return false;
        }
        let w = ump.words();
        let status = ((w[0] >> 16) & 0x3FF) as u16;
        match status {
            stream::ENDPOINT_DISCOVERY => {
                let filter = w[1];
                if filter & stream::WANT_INFO != 0 {
                    out.push(self.endpoint_info());
                }
                if filter & stream::WANT_NAME != 0 {
                    let name = truncated(&self.info.name, 98);
                    text_packets(stream::ENDPOINT_NAME, None, name, out);
                }
                if filter & stream::WANT_PRODUCT_ID != 0 {
                    let id = truncated(&self.info.product_id, 42);
                    text_packets(stream::PRODUCT_INSTANCE_ID, None, id, out);
                }
                if filter & stream::WANT_CONFIG != 0 {
                    out.push(self.config_notification());
                }
            }
            // We keep our protocol whatever is asked; the notification says which it is.
            stream::CONFIG_REQUEST => out.push(self.config_notification()),
            stream::FUNCTION_BLOCK_DISCOVERY => {
                let [_, _, wanted, filter] = w[0].to_be_bytes();
                for (i, fb) in self.info.function_blocks.iter().enumerate().take(32) {
                    if wanted != 0xFF && usize::from(wanted) != i {
                        continue;
                    }
                    if filter & stream::WANT_FB_INFO != 0 {
                        out.push(function_block_info(i as u8, fb));
                    }
                    if filter & stream::WANT_FB_NAME != 0 {
                        let name = truncated(&fb.name, 91);
                        text_packets(stream::FUNCTION_BLOCK_NAME, Some(i as u8), name, out);
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn endpoint_info(&self) -> Ump {
        let blocks = self.info.function_blocks.len().min(32) as u32;
        // Static function blocks (bit 31), their count (bits 30-24), protocols M2 (bit 9) and
        // M1 (bit 8); no jitter reduction timestamps.
        let w1 = (1 << 31)
            | (blocks << 24)
            | (u32::from(self.info.midi2) << 9)
            | (u32::from(self.info.midi1) << 8);
        stream_ump(0, stream::ENDPOINT_INFO, UMP_VERSION, [w1, 0, 0])
    }

    fn config_notification(&self) -> Ump {
        let low = u32::from(self.info.protocol) << 8;
        stream_ump(0, stream::CONFIG_NOTIFICATION, low, [0, 0, 0])
    }
}

fn function_block_info(index: u8, fb: &FunctionBlock) -> Ump {
    // Active (bit 15), block number (14-8), UI hint (5-4), MIDI 1.0 (3-2), direction (1-0).
    let low = (1 << 15)
        | (u32::from(index & 0x7F) << 8)
        | (u32::from(fb.ui_hint & 3) << 4)
        | (u32::from(fb.midi1 & 3) << 2)
        | u32::from(fb.direction & 3);
    // First group, groups spanned, MIDI-CI version (none), SysEx8 streams (none).
    let w1 = (u32::from(fb.first_group) << 24) | (u32::from(fb.groups) << 16);
    stream_ump(0, stream::FUNCTION_BLOCK_INFO, low, [w1, 0, 0])
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncated(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn short(bytes: &[u8]) -> MidiMessage {
        MidiMessage::Short(ShortMessage::from_bytes(bytes).unwrap())
    }

    fn down(words: &[u32]) -> Vec<Vec<u8>> {
        let mut t = ToMidi1::new(1 << 16);
        let mut out = Vec::new();
        t.translate(&Ump::new(words).unwrap(), &mut out);
        out.iter().map(|m| m.message.as_bytes().to_vec()).collect()
    }

    fn up(messages: &[&[u8]]) -> Vec<Ump> {
        let mut t = ToMidi2::default();
        let mut out = Vec::new();
        for m in messages {
            t.translate(0, &MidiMessage::from_bytes(m).unwrap(), &mut out);
        }
        out
    }

    #[test]
    fn sizes_by_message_type() {
        assert!(Ump::new(&[0x2090_3C64]).is_ok());
        assert_eq!(Ump::new(&[0x4090_3C00]), Err(UmpError::BadLength));
        assert_eq!(Ump::new(&[]), Err(UmpError::BadLength));
        let u = Ump::new(&[0xF000_0101, 0, 0, 0]).unwrap();
        assert_eq!((u.message_type(), u.group(), u.words().len()), (0xF, 0, 4));
        let split = Ump::split(&[0x2390_3C64, 0x4090_3C00, 0xFFFF_0000, 0x10F8_0000]).unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split[0].group(), 3);
        assert!(Ump::split(&[0x4090_3C00]).is_none());
    }

    #[test]
    fn min_center_max_scaling() {
        assert_eq!(scale_up(0, 7, 32), 0);
        assert_eq!(scale_up(64, 7, 32), 0x8000_0000);
        assert_eq!(scale_up(127, 7, 32), 0xFFFF_FFFF);
        assert_eq!(scale_up(127, 7, 16), 0xFFFF);
        assert_eq!(scale_up(65, 7, 16), 0x8208);
        assert_eq!(scale_up(0x2000, 14, 32), 0x8000_0000);
        assert_eq!(scale_up(0x3FFF, 14, 32), 0xFFFF_FFFF);
        for v in 0..128 {
            assert_eq!(scale_down(scale_up(v, 7, 32), 32, 7), v);
            assert_eq!(scale_down(scale_up(v, 7, 16), 16, 7), v);
        }
        for v in (0..0x4000).step_by(7) {
            assert_eq!(scale_down(scale_up(v, 14, 32), 32, 14), v);
        }
    }

    #[test]
    fn midi1_protocol_packets() {
        let mut out = Vec::new();
        midi1_to_ump(2, &short(&[0x93, 60, 100]), &mut out);
        midi1_to_ump(0, &short(&[0xF2, 0x10, 0x20]), &mut out);
        midi1_to_ump(0, &short(&[0xF8]), &mut out);
        let words: Vec<u32> = out.iter().flat_map(|u| u.words().to_vec()).collect();
        assert_eq!(words, [0x2293_3C64, 0x10F2_1020, 0x10F8_0000]);
    }

    #[test]
    fn sysex_splits_in_six_byte_packets_and_back() {
        let mut bytes = vec![0xF0];
        bytes.extend(1..=13u8);
        bytes.push(0xF7);
        let mut out = Vec::new();
        midi1_to_ump(1, &MidiMessage::SysEx(bytes.clone()), &mut out);
        let words: Vec<u32> = out.iter().flat_map(|u| u.words().to_vec()).collect();
        assert_eq!(
            words,
            [
                0x3116_0102,
                0x0304_0506,
                0x3126_0708,
                0x090A_0B0C,
                0x3131_0D00,
                0
            ]
        );
        let mut t = ToMidi1::new(1 << 16);
        let mut got = Vec::new();
        out.iter().for_each(|u| t.translate(u, &mut got));
        assert_eq!(
            got,
            [GroupMessage {
                group: 1,
                message: MidiMessage::SysEx(bytes)
            }]
        );
        // Empty SysEx: one complete packet with no data.
        let mut out = Vec::new();
        midi1_to_ump(0, &MidiMessage::SysEx(vec![0xF0, 0xF7]), &mut out);
        assert_eq!(out[0].words(), [0x3000_0000, 0]);
    }

    #[test]
    fn sysex_interleaved_on_two_groups() {
        let a = MidiMessage::SysEx([&[0xF0][..], &[1; 20], &[0xF7]].concat());
        let b = MidiMessage::SysEx([&[0xF0][..], &[2; 9], &[0xF7]].concat());
        let (mut ua, mut ub) = (Vec::new(), Vec::new());
        midi1_to_ump(0, &a, &mut ua);
        midi1_to_ump(5, &b, &mut ub);
        let mut t = ToMidi1::new(1000);
        let mut got = Vec::new();
        for i in 0..ua.len().max(ub.len()) {
            for u in [ua.get(i), ub.get(i)].into_iter().flatten() {
                t.translate(u, &mut got);
            }
        }
        let mut messages: Vec<_> = got.into_iter().map(|g| (g.group, g.message)).collect();
        messages.sort_by_key(|m| m.0);
        assert_eq!(messages, [(0, a), (5, b)]);
    }

    #[test]
    fn midi2_channel_voice_down() {
        // Note on, velocity full scale and zero (kept a note on).
        assert_eq!(down(&[0x4091_3C00, 0xFFFF_0000]), [vec![0x91, 60, 127]]);
        assert_eq!(down(&[0x4091_3C00, 0x0000_1234]), [vec![0x91, 60, 1]]);
        assert_eq!(down(&[0x4081_3C00, 0x8000_0000]), [vec![0x81, 60, 64]]);
        // Control change, channel pressure, pitch bend centre.
        assert_eq!(down(&[0x40B0_0700, 0xFFFF_FFFF]), [vec![0xB0, 7, 127]]);
        assert_eq!(down(&[0x40D2_0000, 0x8000_0000]), [vec![0xD2, 64]]);
        assert_eq!(down(&[0x40E0_0000, 0x8000_0000]), [vec![0xE0, 0, 64]]);
        // Registered controller 1/2 (bank/index) = half scale: RPN then data entry.
        assert_eq!(
            down(&[0x4020_0102, 0x8000_0000]),
            [
                vec![0xB0, 101, 1],
                vec![0xB0, 100, 2],
                vec![0xB0, 6, 64],
                vec![0xB0, 38, 0]
            ]
        );
        // Assignable controller: NRPN.
        assert_eq!(
            down(&[0x4035_0304, 0xFFFF_FFFF])[..2],
            [vec![0xB5, 99, 3], vec![0xB5, 98, 4]]
        );
        // Program change with bank valid, then without.
        assert_eq!(
            down(&[0x40C0_0001, 0x0500_0203]),
            [vec![0xB0, 0, 2], vec![0xB0, 32, 3], vec![0xC0, 5]]
        );
        assert_eq!(down(&[0x40C0_0000, 0x0500_0203]), [vec![0xC0, 5]]);
        // Per-note pitch bend, per-note controller, per-note management: no MIDI 1.0 form.
        assert!(down(&[0x4060_3C00, 0x8000_0000]).is_empty());
        assert!(down(&[0x4000_3C01, 0x8000_0000]).is_empty());
        assert!(down(&[0x40F0_3C00, 0]).is_empty());
    }

    #[test]
    fn midi1_up_to_midi2() {
        let u = up(&[&[0x90, 60, 100]]);
        assert_eq!(u[0].words(), [0x4090_3C00, scale_up(100, 7, 16) << 16]);
        // Velocity 0 note on: a note off at the default velocity.
        assert_eq!(up(&[&[0x92, 60, 0]])[0].words(), [0x4082_3C00, 0x8000_0000]);
        assert_eq!(up(&[&[0xE0, 0, 64]])[0].words(), [0x40E0_0000, 0x8000_0000]);
        // Bank select is held for the program change.
        let u = up(&[&[0xB0, 0, 2], &[0xB0, 32, 3], &[0xC0, 5]]);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].words(), [0x40C0_0001, 0x0500_0203]);
        // RPN 0/0 (pitch bend range) = 2 semitones: one registered controller per data entry.
        let u = up(&[
            &[0xB0, 101, 0],
            &[0xB0, 100, 0],
            &[0xB0, 6, 2],
            &[0xB0, 38, 0],
        ]);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].words(), [0x4020_0000, scale_up(2 << 7, 14, 32)]);
        // NRPN, and data entry after the null parameter is a plain controller.
        let u = up(&[&[0xB1, 99, 5], &[0xB1, 98, 6], &[0xB1, 6, 127]]);
        assert_eq!(u[0].words()[0], 0x4031_0506);
        let u = up(&[&[0xB1, 101, 127], &[0xB1, 100, 127], &[0xB1, 6, 1]]);
        assert_eq!(u[0].words()[0], 0x40B1_0600);
        // System messages keep their MIDI 1.0 form.
        assert_eq!(up(&[&[0xFA]])[0].words(), [0x10FA_0000]);
    }

    proptest! {
        #[test]
        fn midi1_round_trips_through_both_protocols(
            status in 0x80u8..0xF0, d1 in 0u8..128, d2 in 1u8..128, group in 0u8..16
        ) {
            let len = 1 + midi::data_len(status).unwrap();
            let bytes = [status, d1, d2];
            let m = short(&bytes[..len]);
            let mut ums = Vec::new();
            midi1_to_ump(group, &m, &mut ums);
            let mut back = Vec::new();
            ToMidi1::new(64).translate(&ums[0], &mut back);
            prop_assert_eq!(&back, &vec![GroupMessage { group, message: m.clone() }]);
            // Through MIDI 2.0: everything but bank select and parameter selection comes back.
            let absorbed = status >> 4 == 0xB && [0, 32, 98, 99, 100, 101].contains(&d1);
            let mut ums = Vec::new();
            ToMidi2::default().translate(group, &m, &mut ums);
            let mut back = Vec::new();
            ToMidi1::new(64).translate_all(&ums, &mut back);
            if !absorbed {
                prop_assert_eq!(back, vec![GroupMessage { group, message: m }]);
            }
        }

        #[test]
        fn sysex_of_any_length_round_trips(data in proptest::collection::vec(0u8..128, 0..200)) {
            let bytes = [&[0xF0][..], &data, &[0xF7]].concat();
            let mut ums = Vec::new();
            midi1_to_ump(0, &MidiMessage::SysEx(bytes.clone()), &mut ums);
            prop_assert_eq!(ums.len(), data.len().div_ceil(6).max(1));
            let mut back = Vec::new();
            ToMidi1::new(1000).translate_all(&ums, &mut back);
            let want = GroupMessage { group: 0, message: MidiMessage::SysEx(bytes) };
            prop_assert_eq!(back, vec![want]);
        }

        #[test]
        fn translation_never_panics(w in any::<[u32; 4]>()) {
            let len = words_for_type((w[0] >> 28) as u8);
            let ump = Ump::new(&w[..len]).unwrap();
            let mut out = Vec::new();
            ToMidi1::new(64).translate(&ump, &mut out);
            for m in out {
                prop_assert!(MidiMessage::from_bytes(m.message.as_bytes()).is_ok());
            }
            StreamResponder::new(EndpointInfo::new("x", "y")).handle(&ump, &mut Vec::new());
        }
    }

    /// The text of a run of stream packets with `first` text bytes in word 0.
    fn text_of(packets: &[Ump], first: usize) -> (Vec<u32>, Vec<u8>) {
        let mut forms = Vec::new();
        let mut text = Vec::new();
        for p in packets {
            let w = p.words();
            forms.push((w[0] >> 26) & 3);
            let mut b: Vec<u8> = w[0].to_be_bytes()[4 - first..].to_vec();
            for word in &w[1..] {
                b.extend_from_slice(&word.to_be_bytes());
            }
            text.extend(b.into_iter().filter(|&c| c != 0));
        }
        (forms, text)
    }

    #[test]
    fn endpoint_discovery_is_answered() {
        let mut info = EndpointInfo::new("rtpmidid network bridge", "host-42");
        info.function_blocks[0].first_group = 2;
        let r = StreamResponder::new(info);
        let mut out = Vec::new();
        // Endpoint discovery, UMP 1.1, all of info, name, product id, configuration.
        let discovery = Ump::new(&[0xF000_0101, 0x1F, 0, 0]).unwrap();
        assert!(r.handle(&discovery, &mut out));
        let status = |u: &Ump| ((u.words()[0] >> 16) & 0x3FF) as u16;
        assert_eq!(out[0].words(), [0xF001_0101, 0x8100_0300, 0, 0]);
        let names: Vec<Ump> = out
            .iter()
            .filter(|u| status(u) == stream::ENDPOINT_NAME)
            .copied()
            .collect();
        assert_eq!(
            text_of(&names, 2),
            (vec![1, 3], b"rtpmidid network bridge".to_vec())
        );
        let ids: Vec<Ump> = out
            .iter()
            .filter(|u| status(u) == stream::PRODUCT_INSTANCE_ID)
            .copied()
            .collect();
        assert_eq!(text_of(&ids, 2), (vec![0], b"host-42".to_vec()));
        assert_eq!(out.last().unwrap().words(), [0xF006_0100, 0, 0, 0]);

        // Function block discovery: all blocks, info and name.
        let mut out = Vec::new();
        assert!(r.handle(&Ump::new(&[0xF010_FF03, 0, 0, 0]).unwrap(), &mut out));
        assert_eq!(out[0].words(), [0xF011_8037, 0x0201_0000, 0, 0]);
        let (forms, name) = text_of(&out[1..], 1);
        assert_eq!(forms, [1, 3]);
        assert_eq!(name, b"rtpmidid network bridge");
        assert_eq!((out[1].words()[0] >> 8) & 0xFF, 0, "block number");

        // Not a stream message: left to the caller.
        assert!(!r.handle(&Ump::new(&[0x2090_3C64]).unwrap(), &mut Vec::new()));
    }
}
