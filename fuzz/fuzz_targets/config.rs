//! The config loader: any text gives a config or precise errors, never a panic nor a
//! hang. Relative file names resolve in an empty directory; absolute ones may name
//! anything, devices included (refused: not a regular file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::env::temp_dir().join("ringgate-fuzz-config-empty");
    let _ = std::fs::create_dir_all(&dir);
    if let Err(errors) = ringgate::config::parse_in(text, Some(&dir)) {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(!e.message.is_empty(), "{e:?}");
        }
    }
});
