//! DNS messages: arbitrary bytes never panic the parser; whatever parses re-emits to bytes
//! that parse to the same message. An announced responder (answering as an mDNS peer and as
//! a legacy resolver would ask) and a browser get the bytes too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::mdns::{Browser, Message, Responder};
use protocol::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let bytes = msg.to_bytes();
        assert_eq!(Message::parse(&bytes).as_ref(), Ok(&msg));
    }
    let mut now = Instant::from_micros(1_000_000);
    let addr = "10.0.0.1".parse().unwrap();
    let mut responder = Responder::new(now, "host", vec![addr], 1).unwrap();
    responder.add_service(now, "Studio", 5004, vec![]).unwrap();
    while let Some(t) = responder.poll_timeout() {
        now = t;
        responder.handle_timeout(now);
    }
    while responder.poll_transmit().is_some() {}
    for from in ["10.0.0.2:5353", "10.0.0.2:40000"] {
        responder.handle_datagram(now, from.parse().unwrap(), data);
    }
    responder.handle_timeout(now + Duration::from_secs(1));
    while let Some(t) = responder.poll_transmit() {
        assert!(Message::parse(&t.payload).is_ok());
    }
    let mut browser = Browser::new(now, 1);
    browser.handle_datagram(now, "10.0.0.2:5353".parse().unwrap(), data);
    browser.handle_timeout(now + Duration::from_secs(1));
    while let Some(t) = browser.poll_transmit() {
        assert!(Message::parse(&t.payload).is_ok());
    }
});
