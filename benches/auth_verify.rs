//! Hot path: `RG-HMAC-SHA256` verification on every signed request (canonical query,
//! string to sign, HMAC check, body hash, cross-core nonce set). Question: what does each
//! step cost, how much of verification is HMAC rather than a plain SHA-256 of the same string
//! (measured in this run), and what does the shared nonce set cost a worker while another
//! one hammers it, compared with one thread alone and with a single unsharded lock?

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringgate::auth::nonce::{NonceCache, Seen};
use ringgate::auth::sign::{
    body_sha256_hex, canonical_query, sign, string_to_sign, verify, BodyHasher,
};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const QUERY: &str = "page_size=50&status=paid&fields=id%2Ctotal&q=caf%c3%a9+bar&page=3";
const NONCE: &str = "n0nce-0123456789abcdef";
const TIMESTAMP: &str = "1700000000";

fn bench_canonical_query(c: &mut Criterion) {
    let mut out = String::new();
    c.bench_function("canonical_query/5_params", |b| {
        b.iter(|| canonical_query(black_box(QUERY), &mut out))
    });
}

fn bench_verify(c: &mut Criterion) {
    let mut query = String::new();
    let _ = canonical_query(QUERY, &mut query);
    let empty = body_sha256_hex(b"");
    let mut sts = String::new();
    string_to_sign(
        "GET",
        "/v1/orders/42",
        &query,
        TIMESTAMP,
        NONCE,
        &empty,
        &mut sts,
    );
    let good = sign(b"current-secret", &sts);

    let mut g = c.benchmark_group("verify_empty_body");
    // Baseline: hashing the same bytes with plain SHA-256; the gap is HMAC's share
    // (key setup plus the outer hash).
    g.bench_function("baseline_sha256_of_string_to_sign", |b| {
        let mut s = String::new();
        b.iter(|| {
            string_to_sign(
                "GET",
                "/v1/orders/42",
                &query,
                TIMESTAMP,
                NONCE,
                &empty,
                &mut s,
            );
            Sha256::digest(black_box(s.as_bytes()))
        })
    });
    g.bench_function("string_to_sign+verify/1_secret", |b| {
        let mut s = String::new();
        b.iter(|| {
            string_to_sign(
                "GET",
                "/v1/orders/42",
                &query,
                TIMESTAMP,
                NONCE,
                &empty,
                &mut s,
            );
            assert!(verify(&[b"current-secret"], black_box(&s), &good));
        })
    });
    // During rotation a client still on the old secret costs two HMACs.
    g.bench_function("string_to_sign+verify/2_secrets_second_matches", |b| {
        let old = sign(b"previous-secret", &sts);
        let mut s = String::new();
        b.iter(|| {
            string_to_sign(
                "GET",
                "/v1/orders/42",
                &query,
                TIMESTAMP,
                NONCE,
                &empty,
                &mut s,
            );
            assert!(verify(
                &[b"current-secret", b"previous-secret"],
                black_box(&s),
                &old
            ));
        })
    });
    g.finish();
}

fn bench_body_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("body_sha256");
    for size in [1024usize, 64 * 1024] {
        let body = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("whole", size), &body, |b, body| {
            b.iter(|| body_sha256_hex(black_box(body)))
        });
        // As the proxy feeds it: 16 KiB chunks.
        g.bench_with_input(BenchmarkId::new("streamed_16k", size), &body, |b, body| {
            b.iter(|| {
                let mut h = BodyHasher::new();
                for chunk in black_box(body).chunks(16 * 1024) {
                    h.update(chunk);
                }
                h.finish()
            })
        });
    }
    g.finish();
}

/// Distinct nonces cycled through: after each lap `now` jumps past every expiry, so every
/// call is a `Fresh` insert into a set of steady size (expired slots are reused).
const LAP: u64 = 1 << 14;
const WINDOW: u64 = 300;

struct Inserter {
    nonces: Vec<String>,
    /// Calls made so far; keeps increasing across criterion samples so time never rewinds.
    done: u64,
}

impl Inserter {
    fn new(tag: usize) -> Self {
        let nonces = (0..LAP).map(|i| format!("t{tag}-nonce-{i:016}")).collect();
        Inserter { nonces, done: 0 }
    }

    fn run(&mut self, cache: &NonceCache, iters: u64) {
        for _ in 0..iters {
            let now = 1_700_000_000 + (self.done / LAP) * 2 * WINDOW;
            let nonce = &self.nonces[(self.done % LAP) as usize];
            let seen = cache.check_and_insert("app-7f3a", nonce, now + WINDOW, now);
            debug_assert_eq!(seen, Seen::Fresh);
            black_box(seen);
            self.done += 1;
        }
    }
}

fn bench_nonce(c: &mut Criterion) {
    let mut g = c.benchmark_group("nonce_check_and_insert");
    for (label, shards) in [("64_shards", 64), ("1_shard_baseline", 1)] {
        let cache = NonceCache::new(shards, 1 << 20);
        let mut one = Inserter::new(0);
        g.bench_function(BenchmarkId::new("1_thread", label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                one.run(&cache, iters);
                start.elapsed()
            })
        });

        // Both threads insert `iters` each at the same time; reported time is wall time /
        // iters, i.e. the latency one worker sees while another hammers the same set.
        let cache = NonceCache::new(shards, 1 << 20);
        let mut pair = [Inserter::new(1), Inserter::new(2)];
        g.bench_function(BenchmarkId::new("2_threads", label), |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(2);
                let times: Vec<Duration> = std::thread::scope(|s| {
                    let handles: Vec<_> = pair
                        .iter_mut()
                        .map(|ins| {
                            let (cache, barrier) = (&cache, &barrier);
                            s.spawn(move || {
                                barrier.wait();
                                let start = Instant::now();
                                ins.run(cache, iters);
                                start.elapsed()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_default())
                        .collect()
                });
                times.into_iter().max().unwrap_or_default()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_canonical_query, bench_verify, bench_body_hash, bench_nonce
}
criterion_main!(benches);
