//! DNS messages: arbitrary bytes never panic the parser; whatever parses re-emits to bytes
//! that parse to the same message. The responder and browser get the bytes too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::mdns::{Browser, Message, Responder};
use protocol::time::Instant;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let bytes = msg.to_bytes();
        assert_eq!(Message::parse(&bytes).as_ref(), Ok(&msg));
    }
    let now = Instant::from_micros(1_000_000);
    let from = "10.0.0.2:5353".parse().unwrap();
    let mut responder = Responder::new(now, "host", vec!["10.0.0.1".parse().unwrap()], 1).unwrap();
    responder.add_service(now, "Studio", 5004, vec![]).unwrap();
    responder.handle_datagram(now, from, data);
    let mut browser = Browser::new(now, 1);
    browser.handle_datagram(now, from, data);
    browser.handle_timeout(now);
    while browser.poll_transmit().is_some() {}
});
