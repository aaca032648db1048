//! Hub tags ([`protocol::hubtag`]): any bytes parse or are refused without a panic, a parsed
//! tag emits the same bytes, and the seen-window takes any sequence of tags.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::hubtag::{Seen, Tag};

fuzz_target!(|data: &[u8]| {
    if let Some(tag) = Tag::parse(data) {
        assert_eq!(&tag.emit()[..], data);
    }
    let mut seen = Seen::default();
    for chunk in data.chunks(3) {
        let tag = Tag {
            origin: u32::from(chunk[0] % 4),
            seq: chunk[1..].iter().fold(0u32, |v, b| v << 8 | u32::from(*b)),
        };
        seen.first(tag);
        // Whatever came before, the same tag again is a copy.
        assert!(!seen.first(tag));
    }
});
