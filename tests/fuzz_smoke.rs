//! The fuzz targets build and run (`fuzz/run`, cargo-fuzz; nightly when installed, else
//! the installed toolchain with RUSTC_BOOTSTRAP=1), briefly, in CI:
//! `CI=1` runs every target for `RINGGATE_FUZZ_SECONDS` (default 10) and fails on any
//! crash, hang or leak. Elsewhere it runs only when `RINGGATE_FUZZ_SECONDS` is set (the
//! build alone takes minutes); long runs are `fuzz/run SECONDS` by hand.

use std::process::Command;

#[test]
fn every_fuzz_target_runs_without_a_crash() {
    let seconds = match (std::env::var("RINGGATE_FUZZ_SECONDS"), std::env::var("CI")) {
        (Ok(s), _) => s,
        (Err(_), Ok(ci)) if !ci.is_empty() => "10".to_string(),
        _ => {
            eprintln!("SKIPPED: set CI=1 or RINGGATE_FUZZ_SECONDS to run the fuzz targets");
            return;
        }
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/fuzz/run"))
        .arg(&seconds)
        .output()
        .expect("fuzz/run starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "fuzz/run failed:\n{stdout}\n{stderr}");
    // Every target reported a line, with runs counted.
    for target in [
        "request_head",
        "chunked",
        "response_head",
        "normalize_path",
        "signature_inputs",
        "config",
        "proxy_protocol",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(target) && l.contains(" runs in ") && l.ends_with("ok")),
            "{target} did not run:\n{stdout}\n{stderr}"
        );
    }
}
