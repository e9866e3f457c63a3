//! The PROXY protocol header parser (v1 and v2): never a panic, and a header it accepts
//! lies within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::proxy_protocol::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(preface)) = parse(data) {
        assert!(preface.len <= data.len() && preface.len > 0);
    }
});
