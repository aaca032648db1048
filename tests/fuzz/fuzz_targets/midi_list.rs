//! RTP-MIDI command section parser (RFC 6295 §3): no panic on any input, and whatever parses
//! writes back to a list that parses to the same commands at the same times.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::sysex::SysExAssembler;
use protocol::wire::midi_list::{self, CommandKind, ListWriter};

fuzz_target!(|data: &[u8]| {
    let Ok((list, _journal)) = midi_list::parse(data) else {
        return;
    };
    let mut assembler = SysExAssembler::new(256);
    let mut commands = Vec::new();
    for command in list.commands() {
        let Ok(command) = command else {
            break;
        };
        if let CommandKind::SysEx(segment) = &command.kind {
            let pushed = assembler.push(segment);
            if let Some(message) = pushed.message {
                assert!(message.as_bytes().len() <= 256);
            }
        }
        commands.push(command);
    }

    // Realtime bytes inside a SysEx segment split it: "F7 a FF b F0" comes back as
    // "F7 a F0 / FF / F7 b F0" with a delta before each, up to three times the input.
    let mut buf = vec![0u8; 4 * data.len() + 16];
    let mut writer = ListWriter::new(&mut buf);
    for c in &commands {
        writer.push(c.delta, &c.kind).expect("room for what was parsed");
    }
    let header = list.header();
    let n = writer.finish(header.journal, header.phantom);
    let (again, rest) = midi_list::parse(&buf[..n]).expect("own output parses");
    assert!(rest.is_empty());
    let reparsed: Vec<_> = again
        .commands()
        .map(|c| c.expect("own output parses"))
        .collect();
    assert_eq!(reparsed.len(), commands.len());
    for (a, b) in reparsed.iter().zip(&commands) {
        assert_eq!((a.time, &a.kind), (b.time, &b.kind));
    }
});
