//! Prints packets built with this crate's emitters, one per line, for tests/tshark.sh to decode
//! with Wireshark's dissectors and compare:
//!
//! ```text
//! <kind> <udp-port> <hex> [<field>=<value> ...]
//! ```
//!
//! - `kind` is a Wireshark protocol name that must appear in the frame's `frame.protocols`
//!   (`applemidi`, `rtp`, `rtpmidi`); the script also requires a few fields per kind.
//! - `udp-port` is the destination port: 5004 control, 5005 data.
//! - each `field=value` is a tshark field and the value it must decode to: numbers in decimal
//!   or `0x` hex (compared as numbers), anything else as text, percent-encoded (`%20` for a
//!   space). A field that occurs several times is compared as its comma-joined values.
//!
//! To check a packet only loosely (say an RTP-MIDI packet with a journal), list only the fields
//! worth comparing; the script still fails on malformed or undissected packets.
use protocol::midi::MidiMessage;
use protocol::outbox::{Outbox, OutboxConfig};
use protocol::wire::applemidi::{Clock, Command, End, Feedback, Invitation};
use protocol::wire::midi_list::{self, CommandKind, SegmentKind};
use protocol::wire::rtp::{Header, Packet, PAYLOAD_TYPE_MIDI};

const CONTROL_PORT: u16 = 5004;
const DATA_PORT: u16 = 5005;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes all but `[A-Za-z0-9._-]` so a value never contains a space.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn line(kind: &str, port: u16, bytes: &[u8], fields: &[(&str, String)]) {
    let mut out = format!("{kind} {port} {}", hex(bytes));
    for (name, value) in fields {
        out.push_str(&format!(" {name}={value}"));
    }
    println!("{out}");
}

fn session(port: u16, cmd: Command<'_>) {
    let mut buf = vec![0; cmd.buffer_len()];
    cmd.emit(&mut buf).expect("buffer of buffer_len()");
    let code = cmd.code();
    let mut fields = vec![
        (
            "applemidi.command",
            format!("0x{:02x}{:02x}", code[0], code[1]),
        ),
        ("applemidi.sender_ssrc", format!("0x{:08x}", cmd.ssrc())),
    ];
    match cmd {
        Command::Invitation(i) | Command::Accept(i) | Command::Reject(i) => {
            fields.push(("applemidi.protocol_version", "2".into()));
            fields.push(("applemidi.initiator_token", format!("0x{:08x}", i.token)));
            if let Some(name) = i.name {
                fields.push(("applemidi.name", encode(name)));
            }
        }
        Command::End(e) => {
            fields.push(("applemidi.protocol_version", "2".into()));
            fields.push(("applemidi.initiator_token", format!("0x{:08x}", e.token)));
        }
        Command::Clock(c) => {
            fields.push(("applemidi.count", c.count.to_string()));
            let names = [
                "applemidi.timestamp1",
                "applemidi.timestamp2",
                "applemidi.timestamp3",
            ];
            for (name, ts) in names.into_iter().zip(c.timestamps) {
                fields.push((name, format!("0x{ts:x}")));
            }
        }
        Command::Feedback(f) => {
            fields.push(("applemidi.rtp_sequence_number", f.seq.to_string()));
        }
    }
    line("applemidi", port, &buf, &fields);
}

fn rtp(header: Header, payload: &[u8]) {
    let packet = Packet { header, payload };
    let mut buf = vec![0; packet.buffer_len()];
    packet.emit(&mut buf).expect("buffer of buffer_len()");
    let fields = [
        ("rtp.version", "2".to_string()),
        ("rtp.marker", u8::from(header.marker).to_string()),
        ("rtp.p_type", header.payload_type.to_string()),
        ("rtp.seq", header.sequence.to_string()),
        ("rtp.timestamp", header.timestamp.to_string()),
        ("rtp.ssrc", format!("0x{:08x}", header.ssrc)),
    ];
    line("rtp", DATA_PORT, &buf, &fields);
}

/// Command sections as the session's Outbox packs them: every kind of MIDI message, running
/// status, delta times, and a SysEx split over several packets by a small MTU.
fn outbox_packets(ssrc: u32) {
    let messages: &[&[u8]] = &[
        &[0x90, 0x3C, 0x64],
        &[0x90, 0x40, 0x64],
        &[0x80, 0x3C, 0x00],
        &[0xA1, 0x40, 0x20],
        &[0xB2, 0x07, 0x50],
        &[0xB2, 0x65, 0x00],
        &[0xC3, 0x05],
        &[0xD4, 0x33],
        &[0xE5, 0x00, 0x40],
        &[0xF1, 0x21],
        &[0xF2, 0x10, 0x02],
        &[0xF3, 0x04],
        &[0xF6],
        &[0xF8],
        &[0xFA],
        &[0xFB],
        &[0xFC],
        &[0xFE],
        &[0xFF],
        &[0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7],
    ];
    let mut sysex = vec![0xF0, 0x7D];
    sysex.extend((0..300).map(|i| (i % 128) as u8));
    sysex.push(0xF7);
    let mut outbox = Outbox::new(OutboxConfig {
        mtu: 120,
        ..OutboxConfig::default()
    });
    for (i, bytes) in messages.iter().enumerate() {
        let message = MidiMessage::from_bytes(bytes).expect("valid MIDI");
        outbox
            .push(1_000 + 7 * i as u64, &message)
            .expect("queue room");
    }
    outbox
        .push(2_000, &MidiMessage::SysEx(sysex))
        .expect("queue room");
    let mut sequence = 100;
    let mut section = [0u8; 120];
    while let Some(emitted) = outbox.emit_section(&mut section, false, |_| {}) {
        let header = Header {
            marker: true,
            payload_type: PAYLOAD_TYPE_MIDI,
            sequence,
            timestamp: emitted.timestamp,
            ssrc,
        };
        let packet = Packet {
            header,
            payload: &section[..emitted.len],
        };
        let mut buf = vec![0; packet.buffer_len()];
        packet.emit(&mut buf).expect("buffer of buffer_len()");
        let mut fields = vec![
            ("rtp.seq", sequence.to_string()),
            ("rtp.timestamp", emitted.timestamp.to_string()),
        ];
        // Wireshark files the data of middle and last SysEx segments under unknown_data.
        let continued: Vec<String> = midi_list::parse(&section[..emitted.len])
            .expect("our own section parses")
            .0
            .commands()
            .filter_map(|c| match c.expect("our own command parses").kind {
                CommandKind::SysEx(s)
                    if matches!(s.kind, SegmentKind::Middle | SegmentKind::Last) =>
                {
                    Some(hex(s.data))
                }
                _ => None,
            })
            .collect();
        if !continued.is_empty() {
            fields.push(("rtpmidi.unknown_data", continued.join(",")));
        }
        line("rtpmidi", DATA_PORT, &buf, &fields);
        sequence += 1;
    }
}

fn main() {
    let token = 0xF8D1_8B04;
    let (ours, theirs) = (0x1C84_737A, 0xDEAD_BEEF);
    let invite = |ssrc, name| Invitation { token, ssrc, name };

    // Handshake on the control port, then on the data port, as an initiator does it.
    session(CONTROL_PORT, Command::Invitation(invite(ours, Some("Mac"))));
    session(
        CONTROL_PORT,
        Command::Accept(invite(theirs, Some("rtpmidid Stage ü"))),
    );
    session(DATA_PORT, Command::Invitation(invite(ours, Some("Mac"))));
    session(DATA_PORT, Command::Accept(invite(theirs, Some(""))));
    session(CONTROL_PORT, Command::Reject(invite(theirs, None)));
    session(CONTROL_PORT, Command::Reject(invite(theirs, Some("busy"))));

    // A clock round on the data port, and a CK0 on the control port as Windows rtpMIDI sends.
    let (t1, t2, t3) = (0x0C3A_8F10, 0x0012_3456_789A, 0x0C3A_8F4E);
    for (count, timestamps) in [(0, [t1, 0, 0]), (1, [t1, t2, 0]), (2, [t1, t2, t3])] {
        let ssrc = if count == 1 { theirs } else { ours };
        let ck = Clock {
            ssrc,
            count,
            timestamps,
        };
        session(DATA_PORT, Command::Clock(ck));
    }
    let ck0 = Clock {
        ssrc: ours,
        count: 0,
        timestamps: [u64::MAX, 0, 0],
    };
    session(CONTROL_PORT, Command::Clock(ck0));

    session(
        DATA_PORT,
        Command::Feedback(Feedback {
            ssrc: theirs,
            seq: 0x8C24,
        }),
    );
    session(
        DATA_PORT,
        Command::Feedback(Feedback {
            ssrc: theirs,
            seq: 0xFFFF,
        }),
    );

    // RTP headers with small fixed command sections (RFC 6295 §3: LEN, then MIDI).
    let header = Header {
        marker: false,
        payload_type: PAYLOAD_TYPE_MIDI,
        sequence: 0x4A2F,
        timestamp: 750_000,
        ssrc: ours,
    };
    rtp(header, &[0x03, 0x90, 0x3C, 0x64]);
    let wrapped = Header {
        marker: true,
        sequence: 0xFFFF,
        timestamp: u32::MAX,
        ..header
    };
    rtp(wrapped, &[0x01, 0xF8]);
    let next = Header {
        sequence: 0,
        timestamp: 0,
        ..header
    };
    rtp(next, &[0x00]);

    outbox_packets(ours);

    session(CONTROL_PORT, Command::End(End { token, ssrc: ours }));
}
