//! Hot path: a route's filter chain (`RouteChain`), without parsing or I/O. Question: what
//! does running every phase of the chain cost per request (`on_request`, the header
//! decisions and lines for the upstream request and the response, `on_done`), for an
//! empty chain, the plain route's (the forwarding headers only) and a full one (CORS, app
//! signature, permission group, IP allow list, two limits, breaker, isolation, header
//! edits)? Baseline: the empty chain, measured in the same run on the same inputs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};

mod common;

use common::BenchWorker;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use httparse::Header;
use ringgate::auth::sign::sign_request;
use ringgate::filters::{Env, RequestCtx, RequestView, RouteChain, Step};
use ringgate::router::RouteId;
use ringgate::snapshot::Snapshot;

const KEY: &str = "app-bench";
const SECRET: &str = "bench-secret-0000000001";
const PATH: &str = "/v1/orders/12345";

const CONFIG: &str = r#"
[apps]
file = "apps.toml"
[[upstreams]]
name = "orders"
targets = ["127.0.0.1:9001"]
[[isolation]]
name = "orders"
max_in_flight = 100000
[[routes]]
name = "plain"
path = "/plain/*"
upstream = "orders"
[[routes]]
name = "full"
path = "/v1/orders/{id}"
upstream = "orders"
auth = "hmac"
group = "bench"
limits = [ { key = "app", rate = "100000000/s" }, { key = "ip", rate = "100000000/s" } ]
breaker = { consecutive_failures = 5, error_rate = 0.5, window = "10s" }
isolation = "orders"
[routes.cors]
allow_origins = ["https://app.example.com"]
[routes.headers.request]
set = { "x-api-version" = "2" }
add = { "x-caller" = "$app_key" }
remove = ["x-debug"]
[routes.headers.response]
set = { "cache-control" = "no-store" }
remove = ["server"]
"#;

const APPS: &str = r#"
[[apps]]
key = "app-bench"
secrets = ["bench-secret-0000000001"]
groups = ["bench"]
allow_ips = ["127.0.0.0/8"]
"#;

/// A signed request's headers, each with its own nonce (the chain refuses replays).
fn signed_headers(n: u64) -> Vec<(String, Vec<u8>)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce = format!("bench-{n:016x}");
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", PATH, "", b"", ts, &nonce).unwrap();
    vec![
        ("Host".into(), b"api.example.com".to_vec()),
        ("User-Agent".into(), b"bench/1.0".to_vec()),
        ("Accept".into(), b"application/json".to_vec()),
        ("Origin".into(), b"https://app.example.com".to_vec()),
        ("X-Rg-Key".into(), s.key.into_bytes()),
        ("X-Rg-Timestamp".into(), s.timestamp.into_bytes()),
        ("X-Rg-Nonce".into(), s.nonce.into_bytes()),
        ("X-Rg-Signature".into(), s.signature.into_bytes()),
    ]
}

/// Every phase of one request through `chain`; returns the bytes written, so nothing is
/// optimized away.
fn run(
    chain: &RouteChain,
    route: RouteId,
    owned: &[(String, Vec<u8>)],
    env: &Env,
    out: &mut Vec<u8>,
) -> usize {
    let headers: Vec<Header> = owned
        .iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    let view = RequestView {
        method: "GET",
        authority: b"api.example.com",
        path: PATH,
        query: None,
        headers: &headers,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_ip_text: "127.0.0.1",
        peer_text: "127.0.0.1",
        peer_trusted: false,
        scheme: "http",
        has_body: false,
    };
    let mut ctx = RequestCtx::new(route, env.ids.next_id(), view.client_ip);
    assert!(matches!(
        chain.on_request(0, &view, &mut ctx, env),
        Step::Forward
    ));
    out.clear();
    for h in view.headers {
        if !chain.drops_request_header(h.name, &view, &ctx) {
            out.extend_from_slice(h.value);
        }
    }
    chain.on_upstream_request(&view, &ctx, out);
    for name in [
        "content-type",
        "server",
        "cache-control",
        "access-control-allow-origin",
    ] {
        black_box(chain.drops_response_header(name));
    }
    chain.on_response(&ctx, out);
    chain.on_done(&mut ctx, env);
    out.len()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("ringgate-chain-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("apps.toml"), APPS).unwrap();
    let config = ringgate::config::parse_in(CONFIG, Some(&dir)).expect("bench config");
    let snap = Snapshot::build(config, 1).expect("snapshot");
    let worker = BenchWorker::new(64, 1 << 20);
    let env = worker.env();
    let empty = RouteChain::default();
    let (plain, full) = (RouteId(0), RouteId(1));
    let next = AtomicU64::new(0);
    let fresh = || signed_headers(next.fetch_add(1, Ordering::Relaxed));
    let mut out = Vec::with_capacity(2048);
    let mut g = c.benchmark_group("chain");
    g.bench_function("empty", |b| {
        b.iter_batched_ref(
            fresh,
            |h| black_box(run(&empty, plain, h, &env, &mut out)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("plain_route", |b| {
        b.iter_batched_ref(
            fresh,
            |h| black_box(run(snap.chain(plain), plain, h, &env, &mut out)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("full_route", |b| {
        b.iter_batched_ref(
            fresh,
            |h| black_box(run(snap.chain(full), full, h, &env, &mut out)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
