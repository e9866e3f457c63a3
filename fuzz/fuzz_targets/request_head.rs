//! The HTTP/1.1 request head parser with its framing decisions: any bytes give a head, a
//! request for more, or an error, never a panic; and a head it accepts is framed one way
//! only, whatever bytes follow it.
#![no_main]

use std::mem::MaybeUninit;

use libfuzzer_sys::fuzz_target;
use ringgate::http::{parse_request, Framing, HttpLimits};

const LIMITS: HttpLimits = HttpLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
    max_uri_bytes: 8 * 1024,
    max_body_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let mut storage = [const { MaybeUninit::uninit() }; 128];
    let Ok(Some(head)) = parse_request(data, &mut storage, &LIMITS) else {
        return;
    };
    assert!(head.head_len <= data.len());
    let (len, framing) = (head.head_len, head.framing);
    assert!(head.target.starts_with('/'), "{:?}", head.target);
    // The same head alone, or with other bytes after it, parses the same way: what
    // follows a head never changes how it is framed (no smuggling through pipelining).
    let mut storage2 = [const { MaybeUninit::uninit() }; 128];
    let again = parse_request(&data[..len], &mut storage2, &LIMITS)
        .expect("a head that parsed with more bytes after it parses alone")
        .expect("complete");
    assert_eq!(again.head_len, len);
    assert_eq!(again.framing, framing);
    // A body is announced one way only: chunked with no length, or a length.
    if head.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        assert_eq!(framing, Framing::Chunked);
    }
});
