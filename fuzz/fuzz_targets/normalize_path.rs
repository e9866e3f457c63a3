//! Path normalization, before any route or ACL decision: never a panic; a path it
//! accepts comes out absolute, with no dot segment and no empty segment, and normalizing
//! it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::normalize::normalize_path;

fuzz_target!(|data: &[u8]| {
    let mut out = String::new();
    if normalize_path(data, &mut out).is_err() {
        return;
    }
    assert!(out.starts_with('/'), "{out:?}");
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        assert!(*seg != "." && *seg != "..", "{out:?}");
        // Only the last segment may be empty (a trailing slash).
        assert!(!seg.is_empty() || i == segments.len() - 1, "{out:?}");
    }
    let mut again = String::new();
    normalize_path(out.as_bytes(), &mut again).expect("a normalized path normalizes");
    assert_eq!(again, out);
});
