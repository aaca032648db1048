//! Arbitrary octets as a recovery journal after one lost packet: must never panic, and a
//! journal the receiver accepts must fit in what it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::journal::JournalReceiver;

fuzz_target!(|data: &[u8]| {
    let mut rx = JournalReceiver::new();
    let mut sent = 0usize;
    if let Ok(used) = rx.recover(1000, data, 1, &mut |m: &[u8]| sent += m.len()) {
        assert!(used <= data.len());
    }
    // Several packets lost: every chapter applies.
    let _ = rx.recover(1001, data, 5, &mut |_: &[u8]| {});
});
