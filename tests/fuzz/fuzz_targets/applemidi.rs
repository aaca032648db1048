//! AppleMIDI session commands: parse must not panic; what parses re-emits to bytes that parse
//! to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::wire::applemidi::Command;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = Command::parse(data) else {
        return;
    };
    let mut buf = vec![0; cmd.buffer_len()];
    assert_eq!(cmd.emit(&mut buf), Ok(buf.len()));
    assert_eq!(Command::parse(&buf), Ok(cmd));
});
