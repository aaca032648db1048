//! Sending side of the command section: a queue of timed MIDI messages packed into MIDI lists,
//! many commands per packet, with delta times, running status, and long SysEx split into
//! segments across packets (RFC 6295 §3.2).
use std::collections::VecDeque;

use crate::midi::{self, MidiMessage, ShortMessage};
use crate::wire::midi_list::{ListWriter, SegmentKind, MAX_DELTA};

/// RTP fixed header (RFC 3550 §5.1), no CSRC: what the MTU must leave room for.
const RTP_HEADER_LEN: usize = 12;
/// Capacity an emptied queue keeps: a burst may have grown it to thousands of messages, and
/// an idle session should not hold that.
const QUEUE_KEEP: usize = 16;
/// SysEx octets an emptied queue keeps room for.
const SYSEX_KEEP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Largest UDP payload sent: RTP header, command section and journal.
    pub mtu: usize,
    /// Largest number of MIDI bytes waiting in the queue.
    pub budget: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            mtu: 1400,
            budget: 1024 * 1024,
        }
    }
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its byte budget already.
    Full,
    /// A SysEx without `F0 .. F7` framing or with a status byte inside.
    Invalid,
}

/// A command section written by [`Outbox::emit_section`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// Octets written at the start of the buffer (header and MIDI list).
    pub len: usize,
    /// The RTP timestamp for the packet: the first command's tick, truncated to 32 bits.
    pub timestamp: u32,
    /// The first command's tick, untruncated.
    pub tick: u64,
}

/// A SysEx too long for one packet, being sent segment by segment.
#[derive(Clone, Debug)]
struct Split {
    tick: u64,
    /// The whole message, `F0 .. F7`.
    message: Vec<u8>,
    /// Data bytes already sent.
    sent: usize,
}

impl Split {
    fn data(&self) -> &[u8] {
        let inner = self
            .message
            .get(1..self.message.len().saturating_sub(1))
            .unwrap_or_default();
        inner.get(self.sent..).unwrap_or_default()
    }
}

/// A queued message: a short one, or a SysEx whose octets (`F0 .. F7`) are the next this
/// many of [`Outbox::sysex`].
#[derive(Clone, Copy, Debug)]
enum Queued {
    Short(ShortMessage),
    SysEx(usize),
}

/// The queue of messages to send to one peer. Ticks are 10 kHz ticks since the session's start
/// on the caller's clock; they are made non-decreasing on the way in.
#[derive(Clone, Debug)]
pub struct Outbox {
    config: OutboxConfig,
    queue: VecDeque<(u64, Queued)>,
    /// The queued SysEx messages' octets, in queue order, in one buffer kept from message to
    /// message: queueing a SysEx (as a hub does for each of its peers) allocates nothing.
    sysex: VecDeque<u8>,
    split: Option<Split>,
    /// Bytes in `queue` and `split`.
    queued_bytes: usize,
    /// Latest tick pushed.
    last_pushed: u64,
    /// Tick of the last command emitted: no command goes out earlier.
    last_emitted: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(OutboxConfig::default())
    }
}

impl Outbox {
    pub fn new(config: OutboxConfig) -> Self {
        Outbox {
            config,
            queue: VecDeque::new(),
            sysex: VecDeque::new(),
            split: None,
            queued_bytes: 0,
            last_pushed: 0,
            last_emitted: 0,
        }
    }

    pub fn config(&self) -> OutboxConfig {
        self.config
    }

    /// Room for the command section and journal in one packet: the MTU less the RTP header.
    pub fn max_payload_len(&self) -> usize {
        self.config.mtu.saturating_sub(RTP_HEADER_LEN)
    }

    /// Nothing left to send.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.split.is_none()
    }

    /// Messages waiting, a SysEx being split counted as one.
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.split.is_some())
    }

    /// MIDI bytes waiting, a SysEx being split included.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The most octets a command section of everything waiting can take (list header, a
    /// 4-octet delta time per command), or `None` while a SysEx is being split.
    pub fn section_len_at_most(&self) -> Option<usize> {
        self.split
            .is_none()
            .then(|| 2 + self.queued_bytes + 4 * self.queue.len())
    }

    /// Drops everything waiting.
    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.sysex = VecDeque::new();
        self.split = None;
        self.queued_bytes = 0;
    }

    /// Queues `message` to go out at `tick` (raised to the latest tick pushed so far).
    pub fn push(&mut self, tick: u64, message: &MidiMessage) -> Result<(), PushError> {
        if let MidiMessage::SysEx(bytes) = message {
            if !midi::is_sysex(bytes) {
                return Err(PushError::Invalid);
            }
        }
        let len = message.as_bytes().len();
        if self.queued_bytes + len > self.config.budget {
            return Err(PushError::Full);
        }
        self.last_pushed = self.last_pushed.max(tick);
        self.queued_bytes += len;
        let queued = match message {
            MidiMessage::Short(m) => Queued::Short(*m),
            MidiMessage::SysEx(bytes) => {
                self.sysex.extend(bytes);
                Queued::SysEx(len)
            }
        };
        self.queue.push_back((self.last_pushed, queued));
        Ok(())
    }

    /// Packs pending messages into a command section at the start of `buf` (cut to
    /// [`Self::max_payload_len`]); the caller sizes `buf` to leave room for a journal. Delta
    /// times count from the first command, whose tick is the packet's timestamp. A SysEx that
    /// does not fit goes whole into the next packet if it would fit there, else is split
    /// F0..F0, F7..F0, .., F7..F7 over successive packets; Real-time messages queued behind it
    /// go out between its segments, other messages wait for its end. `on_command` sees each
    /// message packed, as complete bytes (status included), or a segment as on the wire.
    /// Returns `None` when nothing is pending or `buf` is too small for the next command (a
    /// segment may need up to 9 octets, long header and 4-octet delta time included).
    pub fn emit_section(
        &mut self,
        buf: &mut [u8],
        journal: bool,
        mut on_command: impl FnMut(&[u8]),
    ) -> Option<Emitted> {
        let cap = buf.len().min(self.max_payload_len());
        let mut packet = Packet {
            writer: ListWriter::new(&mut buf[..cap]),
            first: None,
            prev: self.last_emitted,
        };
        // Queued SysEx are then slices of one piece (a no-op unless the ring wrapped).
        self.sysex.make_contiguous();
        loop {
            if self.split.is_some() {
                self.pack_realtime(&mut packet, &mut on_command);
                if !self.pack_segment(&mut packet, &mut on_command) || self.split.is_some() {
                    break;
                }
                continue;
            }
            let Some(&(tick, queued)) = self.queue.front() else {
                break;
            };
            let Some((tick, delta)) = packet.delta(tick) else {
                break;
            };
            let written = match queued {
                Queued::Short(m) => packet.writer.push_short(delta, &m).is_ok(),
                Queued::SysEx(len) => {
                    let data = &self.sysex.as_slices().0[1..len - 1];
                    packet
                        .writer
                        .push_sysex(delta, SegmentKind::Whole, data)
                        .is_ok()
                }
            };
            if written {
                packet.commit(tick);
                self.queue.pop_front();
                match queued {
                    Queued::Short(m) => {
                        self.queued_bytes -= m.as_bytes().len();
                        on_command(m.as_bytes());
                    }
                    Queued::SysEx(len) => {
                        self.queued_bytes -= len;
                        on_command(&self.sysex.as_slices().0[..len]);
                        self.sysex.drain(..len);
                    }
                }
                continue;
            }
            match queued {
                // Too long for what is left: split it, starting in an empty packet.
                Queued::SysEx(len) if packet.first.is_none() => {
                    self.queue.pop_front();
                    self.split = Some(Split {
                        tick,
                        message: self.sysex.drain(..len).collect(),
                        sent: 0,
                    });
                }
                _ => break,
            }
        }
        if self.queue.is_empty() {
            self.queue.shrink_to(QUEUE_KEEP);
            self.sysex.shrink_to(SYSEX_KEEP);
        }
        let first = packet.first?;
        self.last_emitted = packet.prev;
        let len = packet.writer.finish(journal, false);
        Some(Emitted {
            len,
            timestamp: first as u32,
            tick: first,
        })
    }

    /// Moves every queued Real-time message that fits into the packet (while a SysEx is split).
    fn pack_realtime(&mut self, packet: &mut Packet<'_>, on_command: &mut impl FnMut(&[u8])) {
        let mut i = 0;
        while let Some(&(tick, queued)) = self.queue.get(i) {
            let Queued::Short(m) = queued else {
                i += 1;
                continue;
            };
            if !midi::is_realtime(m.status()) {
                i += 1;
                continue;
            }
            let Some((tick, delta)) = packet.delta(tick) else {
                return;
            };
            if packet.writer.push_short(delta, &m).is_err() {
                return;
            }
            packet.commit(tick);
            on_command(m.as_bytes());
            self.queued_bytes -= m.as_bytes().len();
            self.queue.remove(i);
        }
    }

    /// Writes the next segment of the split SysEx; false if not even one data byte fits.
    fn pack_segment(
        &mut self,
        packet: &mut Packet<'_>,
        on_command: &mut impl FnMut(&[u8]),
    ) -> bool {
        let Some(split) = &mut self.split else {
            return false;
        };
        let Some((tick, delta)) = packet.delta(split.tick) else {
            return false;
        };
        let room = packet.writer.sysex_room(delta);
        let rest = split.data();
        let last = rest.len() <= room;
        if !last && room == 0 {
            return false;
        }
        let kind = match (split.sent == 0, last) {
            (true, true) => SegmentKind::Whole,
            (true, false) => SegmentKind::First,
            (false, false) => SegmentKind::Middle,
            (false, true) => SegmentKind::Last,
        };
        let take = rest.len().min(room);
        if packet
            .writer
            .push_sysex(delta, kind, &rest[..take])
            .is_err()
        {
            return false;
        }
        packet.commit(tick);
        on_command(packet.writer.last_written());
        split.sent += take;
        if last {
            self.queued_bytes -= split.message.len();
            self.split = None;
        }
        true
    }
}

/// A packet being filled.
struct Packet<'a> {
    writer: ListWriter<'a>,
    /// Tick of the first command.
    first: Option<u64>,
    /// Tick of the previous command.
    prev: u64,
}

impl Packet<'_> {
    /// The tick a command due at `tick` goes out at (never before the previous one) and its
    /// delta time, or `None` if the delta is too large for one list.
    fn delta(&self, tick: u64) -> Option<(u64, u32)> {
        let tick = tick.max(self.prev);
        if self.first.is_none() {
            return Some((tick, 0));
        }
        let delta = u32::try_from(tick - self.prev)
            .ok()
            .filter(|&d| d <= MAX_DELTA)?;
        Some((tick, delta))
    }

    fn commit(&mut self, tick: u64) {
        self.first.get_or_insert(tick);
        self.prev = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi::ShortMessage;
    use crate::sysex::SysExAssembler;
    use crate::wire::midi_list::{self, CommandKind};

    fn short(bytes: &[u8]) -> MidiMessage {
        MidiMessage::Short(ShortMessage::from_bytes(bytes).unwrap())
    }

    fn sysex(data_len: usize) -> MidiMessage {
        let mut v = vec![0xF0];
        v.extend((0..data_len).map(|i| (i % 0x80) as u8));
        v.push(0xF7);
        MidiMessage::SysEx(v)
    }

    /// A packet as the receiver sees it.
    struct Sent {
        section: Vec<u8>,
        timestamp: u32,
        recorded: Vec<Vec<u8>>,
    }

    /// Empties the outbox, `room` octets per section.
    fn drain(outbox: &mut Outbox, room: usize) -> Vec<Sent> {
        let mut sent = Vec::new();
        let mut buf = vec![0u8; room];
        while !outbox.is_empty() {
            let mut recorded = Vec::new();
            let e = outbox
                .emit_section(&mut buf, false, |b| recorded.push(b.to_vec()))
                .expect("progress");
            assert!(e.len <= room.min(outbox.max_payload_len()));
            sent.push(Sent {
                section: buf[..e.len].to_vec(),
                timestamp: e.timestamp,
                recorded,
            });
        }
        sent
    }

    /// Parses the sections and reassembles SysEx: (RTP tick of the command, message).
    fn receive(sent: &[Sent]) -> Vec<(u32, MidiMessage)> {
        let mut out = Vec::new();
        let mut assembler = SysExAssembler::new(1 << 20);
        for s in sent {
            let (list, rest) = midi_list::parse(&s.section).unwrap();
            assert!(rest.is_empty());
            for c in list.commands() {
                let c = c.unwrap();
                let at = s.timestamp.wrapping_add(c.time);
                match c.kind {
                    CommandKind::Short(m) => out.push((at, MidiMessage::Short(m))),
                    CommandKind::SysEx(seg) => {
                        let pushed = assembler.push(&seg);
                        assert_eq!(pushed.error, None);
                        if let Some(m) = pushed.message {
                            out.push((at, m));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn one_note_on() {
        let mut o = Outbox::default();
        o.push(1234, &short(&[0x90, 0x3C, 0x64])).unwrap();
        let mut buf = [0u8; 64];
        let mut recorded = Vec::new();
        let e = o
            .emit_section(&mut buf, true, |b| recorded.push(b.to_vec()))
            .unwrap();
        assert_eq!(
            e,
            Emitted {
                len: 4,
                timestamp: 1234,
                tick: 1234
            }
        );
        // J set, Z clear, LEN 3.
        assert_eq!(&buf[..4], &[0x43, 0x90, 0x3C, 0x64]);
        assert_eq!(recorded, vec![vec![0x90, 0x3C, 0x64]]);
        assert!(o.is_empty());
        assert_eq!(o.emit_section(&mut buf, false, |_| {}), None);
    }

    #[test]
    fn many_commands_with_deltas_and_running_status() {
        let mut o = Outbox::default();
        o.push(100, &short(&[0x90, 0x3C, 0x64])).unwrap();
        o.push(100, &short(&[0x90, 0x40, 0x64])).unwrap();
        o.push(110, &short(&[0xF8])).unwrap();
        o.push(300, &short(&[0x90, 0x3C, 0x00])).unwrap();
        // Earlier than the last push: raised to 300.
        o.push(250, &short(&[0xB0, 0x07, 0x50])).unwrap();
        let mut buf = [0u8; 64];
        let mut recorded = Vec::new();
        let e = o
            .emit_section(&mut buf, false, |b| recorded.push(b.to_vec()))
            .unwrap();
        assert_eq!(e.timestamp, 100);
        assert_eq!(
            &buf[..e.len],
            &[
                0x80, 0x10, 0x90, 0x3C, 0x64, // LEN 16: long header; first, no delta
                0x00, 0x40, 0x64, // running status
                0x0A, 0xF8, // +10
                0x81, 0x3E, 0x3C, 0x00, // +190, running status across the clock
                0x00, 0xB0, 0x07, 0x50,
            ][..]
        );
        assert_eq!(recorded.len(), 5);
        assert_eq!(recorded[3], vec![0x90, 0x3C, 0x00]);
    }

    #[test]
    fn sections_stay_under_the_mtu() {
        let mut o = Outbox::new(OutboxConfig {
            mtu: 100,
            ..OutboxConfig::default()
        });
        let mut want = Vec::new();
        for i in 0..500u64 {
            let m = short(&[0x90 | (i % 3) as u8, (i % 128) as u8, 0x40]);
            o.push(i * 7, &m).unwrap();
            want.push(((i * 7) as u32, m));
        }
        // The buffer is larger than the MTU allows: the outbox cuts it.
        let sent = drain(&mut o, 1500);
        assert!(sent.iter().all(|s| s.section.len() <= 100 - RTP_HEADER_LEN));
        assert!(sent.len() > 10);
        assert_eq!(receive(&sent), want);
    }

    #[test]
    fn long_sysex_over_many_packets() {
        // 64 KiB with framing, clock ticks queued behind it and a note after it.
        const LEN: usize = 64 * 1024;
        let big = sysex(LEN - 2);
        let mut o = Outbox::default();
        o.push(10, &short(&[0x90, 0x3C, 0x64])).unwrap();
        o.push(20, &big).unwrap();
        for t in 0..5 {
            o.push(30 + t, &short(&[0xF8])).unwrap();
        }
        o.push(40, &short(&[0x80, 0x3C, 0x40])).unwrap();
        let room = o.max_payload_len() - 100;
        let sent = drain(&mut o, room);
        assert!(sent.len() >= LEN / room);
        // Segments on the wire: the note alone (the SysEx waits for an empty packet), then
        // F0..F0 and the clocks, then F7..F0 .. F7..F7, then the note-off.
        assert_eq!(sent[0].recorded, vec![vec![0x90, 0x3C, 0x64]]);
        let first = &sent[1].recorded;
        assert_eq!(first.len(), 6);
        assert_eq!(first[..5], vec![vec![0xF8]; 5][..]);
        assert_eq!(first[5].first(), Some(&0xF0));
        assert_eq!(first[5].last(), Some(&0xF0));
        for s in &sent[2..sent.len() - 1] {
            assert_eq!(s.recorded[0][0], 0xF7);
        }
        let last = &sent.last().unwrap().recorded;
        assert_eq!(last.last().unwrap(), &vec![0x80, 0x3C, 0x40]);

        let mut assembler = SysExAssembler::default();
        let mut whole = None;
        for s in &sent {
            let (list, _) = midi_list::parse(&s.section).unwrap();
            for c in list.commands() {
                if let CommandKind::SysEx(seg) = c.unwrap().kind {
                    let pushed = assembler.push(&seg);
                    assert_eq!(pushed.error, None);
                    if pushed.message.is_some() {
                        whole = pushed.message;
                    }
                }
            }
        }
        assert_eq!(whole, Some(big));
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn sysex_that_fits_an_empty_packet_is_not_split() {
        let mut o = Outbox::new(OutboxConfig {
            mtu: RTP_HEADER_LEN + 60,
            ..OutboxConfig::default()
        });
        o.push(0, &short(&[0x90, 0x3C, 0x64])).unwrap();
        o.push(0, &sysex(55)).unwrap();
        let sent = drain(&mut o, 1000);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].recorded, vec![sysex(55).as_bytes().to_vec()]);
    }

    #[test]
    fn huge_delta_starts_a_new_packet() {
        let mut o = Outbox::default();
        o.push(0, &short(&[0xF8])).unwrap();
        o.push(u64::from(MAX_DELTA) + 1, &short(&[0xFA])).unwrap();
        o.push((1 << 32) + 5, &short(&[0xFC])).unwrap();
        let sent = drain(&mut o, 100);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].timestamp, MAX_DELTA + 1);
        // Truncated to 32 bits.
        assert_eq!(sent[2].timestamp, 5);
    }

    #[test]
    fn budget_and_invalid_sysex() {
        let mut o = Outbox::new(OutboxConfig {
            budget: 10,
            ..OutboxConfig::default()
        });
        o.push(0, &sysex(6)).unwrap();
        assert_eq!(o.queued_bytes(), 8);
        assert_eq!(o.len(), 1);
        assert_eq!(o.push(0, &short(&[0x90, 1, 2])), Err(PushError::Full));
        o.push(0, &short(&[0xC0, 1])).unwrap();
        assert_eq!(
            o.push(0, &MidiMessage::SysEx(vec![0xF0, 1])),
            Err(PushError::Invalid)
        );
        assert_eq!(
            o.push(0, &MidiMessage::SysEx(vec![])),
            Err(PushError::Invalid)
        );
        o.clear();
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn too_small_a_buffer_makes_no_progress() {
        let mut o = Outbox::default();
        o.push(0, &sysex(100)).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(o.emit_section(&mut buf, false, |_| {}), None);
        assert!(!o.is_empty());
        // Room for the long header kept by the writer and a first segment of 5 data bytes.
        let mut buf = [0u8; 9];
        let mut recorded = Vec::new();
        let e = o
            .emit_section(&mut buf, false, |b| recorded.push(b.to_vec()))
            .unwrap();
        assert_eq!(e.len, 8);
        assert_eq!(recorded, vec![vec![0xF0, 0, 1, 2, 3, 4, 0xF0]]);
    }

    mod prop {
        use super::*;
        use crate::wire::midi_list::tests_support::{message, sysex as any_sysex};
        use proptest::prelude::*;

        fn timed_messages(
            max_sysex: usize,
            max_gap: u64,
        ) -> impl Strategy<Value = Vec<(u64, MidiMessage)>> {
            let gap = prop_oneof![8 => 0u64..50, 1 => 0..max_gap];
            let msg = prop_oneof![6 => message(), 1 => any_sysex(max_sysex)];
            proptest::collection::vec((gap, msg), 0..80).prop_map(|v| {
                let mut tick = 0;
                v.into_iter()
                    .map(|(g, m)| {
                        tick += g;
                        (tick, m)
                    })
                    .collect()
            })
        }

        fn is_realtime(m: &MidiMessage) -> bool {
            matches!(m, MidiMessage::Short(s) if midi::is_realtime(s.status()))
        }

        proptest! {
            /// With room for any SysEx whole: the same messages, same order, same ticks.
            #[test]
            fn outbox_round_trip(msgs in timed_messages(300, 1 << 30), room in 320usize..1400) {
                let mut o = Outbox::default();
                for (t, m) in &msgs {
                    o.push(*t, m).unwrap();
                }
                let sent = drain(&mut o, room);
                let want: Vec<_> = msgs.iter().map(|(t, m)| (*t as u32, m.clone())).collect();
                prop_assert_eq!(receive(&sent), want);
            }

            /// Small packets split SysEx: all messages arrive; Real-time may overtake a split
            /// SysEx, everything else keeps its order; each message goes out at its tick or,
            /// if something before it went out later, at that later tick.
            #[test]
            fn outbox_round_trip_split(
                // Ticks stay below 2^32 (80 gaps under 2^25), so truncation is no issue.
                msgs in timed_messages(600, 1 << 25),
                room in 12usize..80,
            ) {
                let mut o = Outbox::default();
                for (t, m) in &msgs {
                    o.push(*t, m).unwrap();
                }
                let got = receive(&drain(&mut o, room));
                prop_assert_eq!(got.len(), msgs.len());
                // Due ticks of each class, in order.
                let class = |rt: bool| {
                    msgs.iter().filter(move |(_, m)| is_realtime(m) == rt)
                };
                let mut due = [class(false), class(true)];
                let mut prev = 0u64;
                for (at, m) in &got {
                    let (want_tick, want) = due[usize::from(is_realtime(m))].next().unwrap();
                    prop_assert_eq!(m, want);
                    prev = prev.max(*want_tick);
                    prop_assert_eq!(u64::from(*at), prev);
                }
            }
        }
    }
}
