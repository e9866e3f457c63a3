//! Properties, checked over generated inputs (proptest): path normalization is idempotent
//! and never leaves the root; the canonical query is its own canonical form; the chunked
//! decoder gives back what was encoded, however it is split; a token bucket never admits
//! more than rate x window + burst in any window, groups or not; and a request the
//! gateway accepts reaches the upstream as exactly one request with the same method,
//! normalized path and body bytes, whatever framing it came in (a differential check
//! through a recording upstream, fed by a generator of tricky framings).

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ringgate::auth::sign::canonical_query;
use ringgate::http::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use ringgate::http::normalize::normalize_path;
use ringgate::limits::bucket::{Bucket, BucketParams};
use support::*;

/// Paths made of the pieces that make normalization hard.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E%2e", "%2F", "a", "b%41", "~", ";x", "%", "%zz", "é",
        "%7e", "-_", "x.y", "...",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(Config::with_cases(2000))]

    #[test]
    fn normalization_is_idempotent_and_stays_under_the_root(path in tricky_path()) {
        let mut out = String::new();
        if normalize_path(path.as_bytes(), &mut out).is_ok() {
            prop_assert!(out.starts_with('/'));
            for segment in out.split('/').skip(1) {
                prop_assert!(segment != "." && segment != "..", "{out:?} from {path:?}");
            }
            let mut again = String::new();
            prop_assert!(normalize_path(out.as_bytes(), &mut again).is_ok());
            prop_assert_eq!(&again, &out);
        }
    }

    #[test]
    fn a_canonical_query_is_canonical(
        pairs in prop::collection::vec(("[a-c%+=&]{0,4}", "[a-c%+= ]{0,4}"), 0..6)
    ) {
        let raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let raw = raw.join("&");
        let mut once = String::new();
        if canonical_query(&raw, &mut once).is_ok() {
            let mut twice = String::new();
            prop_assert!(canonical_query(&once, &mut twice).is_ok());
            prop_assert_eq!(twice, once);
        }
    }

    #[test]
    fn chunked_decoding_gives_back_what_was_encoded(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..6),
        piece in 1usize..40,
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            write_chunk_header(&mut wire, c.len());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(LAST_CHUNK);
        let mut d = ChunkedDecoder::new();
        let (mut body, mut pending) = (Vec::new(), Vec::new());
        for part in wire.chunks(piece) {
            pending.extend_from_slice(part);
            while !d.is_done() {
                let step = d.decode(&pending).expect("valid framing");
                if let Some(r) = step.data {
                    body.extend_from_slice(&pending[r]);
                }
                pending.drain(..step.consumed);
                if step.consumed == 0 {
                    break;
                }
            }
        }
        prop_assert!(d.is_done());
        prop_assert_eq!(body, chunks.concat());
    }

    #[test]
    fn a_bucket_never_admits_more_than_rate_times_window_plus_burst(
        rate in 1.0f64..500.0,
        burst in 1.0f64..50.0,
        groups in prop::sample::select(vec![0usize, 2, 3]),
        gaps_us in prop::collection::vec(0u64..20_000, 1..400),
        picks in prop::collection::vec(0usize..3, 400),
    ) {
        let ratios: Vec<f64> = match groups {
            0 => Vec::new(),
            2 => vec![0.7, 0.3],
            _ => vec![0.5, 0.3, 0.2],
        };
        let p = BucketParams { rate_per_sec: rate, burst, ratios: &ratios };
        let mut now = 1_000_000_000u64;
        let mut bucket = Bucket::new(&p, now);
        let mut admitted: Vec<u64> = Vec::new();
        for (gap, pick) in gaps_us.iter().zip(&picks) {
            now += gap * 1000;
            let group = if groups == 0 { 0 } else { pick % groups };
            if bucket.try_take(group, &p, now).is_some() {
                admitted.push(now);
            }
        }
        // Every window that starts and ends at an admission.
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let window = (admitted[j] - admitted[i]) as f64 / 1e9;
                let count = (j - i + 1) as f64;
                prop_assert!(
                    count <= rate * window + burst + 1e-6,
                    "{count} admitted in {window} s at {rate}/s, burst {burst}"
                );
            }
        }
    }
}

/// One generated request: its framing, and what the upstream must see if it is accepted.
#[derive(Debug, Clone)]
struct Framed {
    raw: Vec<u8>,
    method: &'static str,
    path: String,
    body: Vec<u8>,
}

/// Requests framed in the ways that have split proxies from backends: lengths and chunks
/// (sizes in either case, with leading zeros, extensions, trailers), header name case,
/// duplicate or conflicting framing headers, bare LF, obs-fold, whitespace before the
/// colon. Some must be refused; none may reach the upstream as anything but itself.
fn framed_request() -> impl Strategy<Value = Framed> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]);
    let body = prop::collection::vec(prop::sample::select(b"abcXYZ0\r\n".to_vec()), 0..40);
    let splits = prop::collection::vec(1usize..15, 1..5);
    // Half of them framed plainly (0-2, 5, 11), half with a trick that must be refused.
    let trick = prop_oneof![
        prop::sample::select(vec![0u8, 1, 2, 5, 11]),
        prop::sample::select(vec![3u8, 4, 6, 7, 8, 9, 10]),
    ];
    let piece = prop::sample::select(vec![
        "/", "//", "a", "b%41", "x.y", "%2F", "~", "-_", "/.", "/b/..",
    ]);
    let path = prop::collection::vec(piece, 0..8).prop_map(|p| format!("/{}", p.concat()));
    (method, path, body, splits, trick, any::<bool>()).prop_map(
        |(method, path, body, splits, trick, upper)| {
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: props.test\r\n");
            let te = if upper {
                "Transfer-Encoding"
            } else {
                "transfer-encoding"
            };
            let cl = if upper {
                "Content-Length"
            } else {
                "content-length"
            };
            let mut rest: Vec<u8> = Vec::new();
            let chunked = |ext: &str, zeros: bool, trailer: bool| {
                let mut out = Vec::new();
                let mut left = &body[..];
                for n in splits.iter().cycle() {
                    if left.is_empty() {
                        break;
                    }
                    let n = (*n).min(left.len());
                    let size = if zeros {
                        format!("00{n:x}")
                    } else {
                        format!("{n:X}")
                    };
                    out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                    out.extend_from_slice(&left[..n]);
                    out.extend_from_slice(b"\r\n");
                    left = &left[n..];
                }
                out.extend_from_slice(b"0\r\n");
                if trailer {
                    out.extend_from_slice(b"X-Trailer: t\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out
            };
            match trick {
                0 => head.push_str(&format!("{cl}: {}\r\n", body.len())),
                1 => {
                    head.push_str(&format!("{te}: chunked\r\n"));
                    rest = chunked("", false, false);
                }
                2 => {
                    head.push_str(&format!("{te}: chunked\r\n"));
                    rest = chunked(";name=value", true, true);
                }
                // Both: must be refused (or, if accepted, framed by chunked only).
                3 => {
                    head.push_str(&format!("{cl}: {}\r\n{te}: chunked\r\n", body.len() + 5));
                    rest = chunked("", false, false);
                }
                // Two lengths that disagree: refused.
                4 => head.push_str(&format!(
                    "{cl}: {}\r\n{cl}: {}\r\n",
                    body.len(),
                    body.len() + 1
                )),
                // Two that agree.
                5 => head.push_str(&format!("{cl}: {0}\r\n{cl}: {0}\r\n", body.len())),
                // A coding chain not ending in chunked: refused.
                6 => {
                    head.push_str(&format!("{te}: chunked, identity\r\n"));
                    rest = chunked("", false, false);
                }
                // Whitespace before the colon: refused.
                7 => head.push_str(&format!("{cl} : {}\r\n", body.len())),
                // obs-fold: refused.
                8 => head.push_str(&format!("X-Folded: a\r\n b\r\n{cl}: {}\r\n", body.len())),
                // Bare LF line ending: refused.
                9 => head.push_str(&format!("{cl}: {}\nX-A: b\r\n", body.len())),
                // A length with a sign or spaces inside: refused.
                10 => head.push_str(&format!("{cl}: +{}\r\n", body.len())),
                // No framing at all: no body.
                _ => {}
            }
            head.push_str("\r\n");
            let mut raw = head.into_bytes();
            let body = match trick {
                11 => Vec::new(),
                _ => body,
            };
            if rest.is_empty() && trick != 11 {
                raw.extend_from_slice(&body);
            } else {
                raw.extend_from_slice(&rest);
            }
            Framed {
                raw,
                method,
                path,
                body,
            }
        },
    )
}

fn accepted_requests_reach_the_upstream_as_themselves(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut runner = TestRunner::new(Config::with_cases(200));
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&framed_request(), |req| {
            let before = up.requests().len();
            let mut normalized = String::new();
            let path_ok = normalize_path(req.path.as_bytes(), &mut normalized).is_ok();
            let r = exchange(gw.addr, &req.raw);
            let seen = up.requests();
            if r.status != 200 {
                refused.set(refused.get() + 1);
                // Refused: nothing reached the upstream.
                prop_assert_eq!(
                    seen.len(),
                    before,
                    "refused with {} yet forwarded",
                    r.status
                );
                return Ok(());
            }
            prop_assert!(
                path_ok,
                "accepted a path that does not normalize: {:?}",
                req.path
            );
            // Exactly one request, the same one.
            prop_assert_eq!(seen.len(), before + 1);
            let got = &seen[before];
            prop_assert_eq!(&got.method, req.method);
            prop_assert_eq!(&got.target, &normalized);
            prop_assert_eq!(&got.body, &req.body);
            accepted.set(accepted.get() + 1);
            Ok(())
        })
        .unwrap();
    // Both outcomes were exercised, so the property did not hold by refusing everything.
    let (a, r) = (accepted.get(), refused.get());
    assert!(a >= 40 && r >= 40, "accepted {a}, refused {r}");
}

on_both_drivers!(accepted_requests_reach_the_upstream_as_themselves);
