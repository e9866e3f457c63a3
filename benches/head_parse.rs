//! Hot path: turning a request head into the upstream's head (`parse_request` strict
//! checks, then the pipeline's `begin_head`: normalize, route, run the route's filter
//! chain, write the upstream head). Question: what do the
//! gateway's checks and rewriting cost on top of bare httparse tokenizing, measured on
//! the same heads in the same run? (And on a route with limits, what the limit checks add
//! to `begin_head`, against the same head on an unlimited route.)

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};

mod common;

use common::BenchWorker;
use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::config;
use ringgate::http::{parse_request, MAX_HEADERS_LIMIT};
use ringgate::proxy::pipeline::{begin_head, Begin, Scratch};
use ringgate::snapshot::Snapshot;

/// A curl-like request and a browser-like one with a dozen headers.
const SMALL: &[u8] = b"GET /v1/orders/12345?fields=id,total HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n";
const TYPICAL: &[u8] = b"GET /v1/orders/12345/items?page=2&size=50 HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc\r\n\
X-Request-Id: 3f9a2c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
Cookie: session=abcdef0123456789; theme=dark\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\r\n";

const CONFIG: &str = r#"
[[upstreams]]
name = "orders"
targets = ["127.0.0.1:9001"]
[[routes]]
name = "orders.items"
host = "api.example.com"
path = "/v1/orders/{id}/items"
methods = ["GET"]
upstream = "orders"
[[routes]]
name = "orders.get"
host = "api.example.com"
path = "/v1/orders/{id}"
upstream = "orders"
[[routes]]
name = "orders.items.limited"
host = "limited.example.com"
path = "/v1/orders/{id}/items"
methods = ["GET"]
upstream = "orders"
limits = [ { key = "route", rate = "100000000/s" }, { key = "ip", rate = "100000000/s" } ]
[[routes]]
name = "fallback"
path = "/*"
upstream = "orders"
"#;

fn bench(c: &mut Criterion) {
    let snap = Snapshot::build(config::parse(CONFIG).expect("bench config"), 1).expect("snapshot");
    let limits = snap.config.server.limits;
    let worker = BenchWorker::new(8, 1024);
    let env = worker.env();
    let mut path = String::with_capacity(128);
    let mut out = Vec::with_capacity(2048);
    let mut client_text = String::new();
    // One request through the pipeline; true when it is to be forwarded.
    let mut run = |raw: &[u8], check_limits: bool| {
        path.clear();
        let scratch = Scratch {
            shed: false,
            path: &mut path,
            up_head: &mut out,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            peer_text: "127.0.0.1",
            scheme: "http",
            tls: None,
            client_text: &mut client_text,
        };
        match begin_head(raw, scratch, &snap, &env, &mut 0) {
            Begin::Forward(req) => !check_limits || !req.ctx.limit_headers.is_empty(),
            _ => false,
        }
    };
    let mut g = c.benchmark_group("head");
    // The typical head on the same route shape with a route and an ip limit (high enough
    // never to refuse): what the limit checks add to `begin_head`.
    let limited = String::from_utf8_lossy(TYPICAL)
        .replace("Host: api.example.com", "Host: limited.example.com")
        .into_bytes();
    for (name, raw) in [("small", SMALL), ("typical", TYPICAL)] {
        g.bench_function(format!("{name}/httparse_baseline"), |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                black_box(
                    req.parse(black_box(raw))
                        .map(|s| s.is_complete())
                        .unwrap_or(false),
                )
            })
        });
        g.bench_function(format!("{name}/parse_request_strict"), |b| {
            b.iter(|| {
                let mut storage = [const { MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
                black_box(
                    parse_request(black_box(raw), &mut storage, &limits)
                        .map(|h| h.is_some())
                        .unwrap_or(false),
                )
            })
        });
        g.bench_function(format!("{name}/begin_full"), |b| {
            b.iter(|| black_box(run(black_box(raw), false)))
        });
    }
    assert!(
        run(&limited, true),
        "the limited head must reach the limited route and be admitted"
    );
    g.bench_function("typical/begin_full_limited", |b| {
        b.iter(|| black_box(run(black_box(&limited), false)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
