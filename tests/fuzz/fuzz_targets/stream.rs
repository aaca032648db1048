//! MIDI 1.0 byte-stream normalizer: no panic on any input; every message it delivers is a valid
//! complete message within the SysEx limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::midi::MidiMessage;
use protocol::stream::StreamParser;

fuzz_target!(|data: &[u8]| {
    let mut parser = StreamParser::new(64);
    let mut delivered = 0u64;
    parser.feed(data, |m| {
        assert_eq!(MidiMessage::from_bytes(m.as_bytes()).as_ref(), Ok(&m));
        assert!(m.as_bytes().len() <= 64);
        delivered += 1;
    });
    assert!(delivered + parser.dropped() <= data.len() as u64);
});
