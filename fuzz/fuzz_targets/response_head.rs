//! The upstream response head parser: any bytes from an upstream give a head, a request
//! for more, or an error (502), never a panic.
#![no_main]

use std::mem::MaybeUninit;

use libfuzzer_sys::fuzz_target;
use ringgate::http::parse_response;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let mut storage = [const { MaybeUninit::uninit() }; 256];
    if let Ok(Some(head)) = parse_response(input, &mut storage, flags & 1 == 1, 16 * 1024) {
        assert!(head.head_len <= input.len());
        assert!((100..=999).contains(&head.status));
    }
});
