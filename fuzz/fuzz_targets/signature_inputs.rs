//! The canonical query and the string to sign: never a panic; a canonical query is its
//! own canonical form, and the string to sign splits back into exactly its parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::auth::sign::{canonical_query, string_to_sign};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut canonical = String::new();
    if canonical_query(text, &mut canonical).is_err() {
        return;
    }
    let mut twice = String::new();
    canonical_query(&canonical, &mut twice).expect("a canonical query is valid");
    assert_eq!(twice, canonical);
    // No part but the query can hold a newline in a request the gateway accepts; the
    // canonical query never does (it is percent-encoded).
    assert!(!canonical.contains('\n'));
    let mut out = String::new();
    let body = [b'a'; 64];
    string_to_sign("GET", "/p", &canonical, "1700000000", "nonce", &body, &mut out);
    let parts: Vec<&str> = out.split('\n').collect();
    assert_eq!(parts.len(), 6);
    assert_eq!(parts[2], canonical);
});
