//! Every input a fuzz target (fuzz/) ever failed on, replayed against the same code and
//! checked for the outcome the fix gives. Inputs live in tests/fuzz_regressions/TARGET/,
//! named for what they found; each target's check is here.

use std::mem::MaybeUninit;
use std::path::Path;

use ringgate::http::parse_response;

/// The files under tests/fuzz_regressions/`target`.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

/// `response_head` (first byte: whether the request was HEAD): a status of 000-099 was
/// accepted and then skipped as informational, so the next bytes became the response.
/// Now it is a malformed head (502).
#[test]
fn response_heads_the_fuzzer_broke() {
    for (name, data) in inputs("response_head") {
        let (flags, input) = data.split_first().unwrap();
        let mut storage = [const { MaybeUninit::uninit() }; 256];
        match parse_response(input, &mut storage, flags & 1 == 1, 16 * 1024) {
            Ok(Some(head)) => assert!(
                (100..=999).contains(&head.status),
                "{name}: {}",
                head.status
            ),
            Ok(None) => {}
            Err(e) => assert_eq!(e.kind.code(), "upstream_unavailable", "{name}"),
        }
    }
}
