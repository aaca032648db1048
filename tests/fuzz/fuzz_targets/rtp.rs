//! RTP header: parse must not panic; a parsed packet re-emits (without CSRCs, extension and
//! padding) to bytes that parse to the same header and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::wire::rtp::Packet;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let mut buf = vec![0; packet.buffer_len()];
    assert_eq!(packet.emit(&mut buf), Ok(buf.len()));
    assert_eq!(Packet::parse(&buf), Ok(packet));
});
