//! The control protocol (src/ctl/proto.rs and src/json.rs, included from the daemon's
//! sources): arbitrary bytes as a request line never panic the parser, and a request that
//! parses comes back the same from its wire form; as JSON, arbitrary answers to each kind of
//! request never panic the reply parser, and a reply that parses renders as text and JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../../src/json.rs"]
#[allow(dead_code)]
mod json;
#[path = "../../../src/options.rs"]
#[allow(dead_code)]
mod options;
#[path = "../../../src/seq/mod.rs"]
#[allow(dead_code)]
mod seq;
#[path = "../../../src/ctl/proto.rs"]
#[allow(dead_code)]
mod proto;

use proto::{Reply, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        let wire = request.to_json().to_string();
        assert_eq!(Request::parse(wire.as_bytes()), Ok(request));
    }
    let Some(answer) = std::str::from_utf8(data).ok().and_then(|t| json::parse(t).ok()) else {
        return;
    };
    let requests = [
        r#"{"cmd":"status"}"#,
        r#"{"cmd":"peers"}"#,
        r#"{"cmd":"connect","host":"192.0.2.1","port":5004}"#,
        r#"{"cmd":"disconnect","name":"Studio"}"#,
        r#"{"cmd":"export","port":"20:0"}"#,
        r#"{"cmd":"unexport","port":"20:0"}"#,
    ];
    for line in requests {
        let request = Request::parse(line.as_bytes()).unwrap();
        if let Ok(reply) = Reply::from_json(&request, &answer) {
            let _ = reply.to_text();
            let _ = reply.to_json().to_string();
        }
    }
});
