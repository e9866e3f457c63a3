//! Hot path: `WorkerLimiter::check` on every request of a route with `limits`, plus the
//! RateLimit header rendering and the per-round report. Question: what does a per-core
//! limit check cost per request, against a bare token bucket on a local struct and the
//! shared alternative the design avoids (one token counter or one locked bucket for all
//! cores, contended by a second thread), all measured in this run?

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ringgate::auth::registry::{App, AppLimits};
use ringgate::config::{self, RouteConfig};
use ringgate::limits::bucket::{Bucket, BucketParams};
use ringgate::limits::headers::HeaderWriter;
use ringgate::limits::spec::LimitSpec;
use ringgate::limits::worker::{RequestFacts, WorkerLimiter};
use ringgate::limits::Update;

/// Limits far above what a bench can spend, so every check admits (the cost measured is
/// the admitting path, the one every request of a healthy route takes).
/// (`[apps] redis` only satisfies validation: the app record is built in the bench.)
const CONFIG: &str = r#"
[apps]
redis = "redis://127.0.0.1:1/0"
[[upstreams]]
name = "up"
targets = ["127.0.0.1:9001"]
[[routes]]
name = "route"
path = "/route/*"
upstream = "up"
limits = [ { key = "route", rate = "100000000/s" } ]
[[routes]]
name = "three"
path = "/three/*"
upstream = "up"
group = "bench"
auth = "hmac"
limits = [
  { key = "route", rate = "100000000/s" },
  { key = "ip", rate = "100000000/s" },
  { key = "app", rate = "100000000/s" },
]
[[routes]]
name = "quota"
path = "/quota/*"
upstream = "up"
limits = [ { key = "route", quota = "1000000000000/day" } ]
[[routes]]
name = "groups"
path = "/groups/*"
upstream = "up"
limits = [ { key = "route", rate = "100000000/s", groups = { critical = 0.7, normal = 0.3 }, group_by = "header:x-priority" } ]
[[routes]]
name = "ip"
path = "/ip/*"
upstream = "up"
limits = [ { key = "ip", rate = "100000000/s" } ]
"#;

fn route<'a>(routes: &'a [RouteConfig], name: &str) -> &'a [LimitSpec] {
    &routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("route {name}"))
        .limits
}

/// Runs `f` in a second thread until the returned guard is dropped.
struct Contender {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Contender {
    fn start(mut f: impl FnMut() + Send + 'static) -> Contender {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    f();
                }
            }
        });
        Contender {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bench(c: &mut Criterion) {
    let cfg = config::parse(CONFIG).expect("bench config");
    let routes = &cfg.routes;
    let app = App::from_parts(
        "app-bench".into(),
        vec!["bench-secret-0000000001".into()],
        None,
        vec!["bench".into()],
        &[],
        true,
    )
    .expect("app")
    .with_limits(AppLimits::default());
    let headers = [httparse::Header {
        name: "X-Priority",
        value: b"critical",
    }];
    let facts = |route: &'static str| RequestFacts {
        route,
        app: Some(&app),
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        headers: &headers,
        unix_secs: 1_763_683_200,
    };
    // One worker: its default share is the whole limit, as with `workers = 1`.
    let limiter = WorkerLimiter::new(0, 1, ahash::RandomState::new(), 100_000);
    // Time advances 10 ns a check: at 1e8/s that refills the token each check takes, so
    // the bucket never runs dry however long criterion runs. No clock read in the loop
    // (its cost is measured on its own below).
    let mut now = Instant::now();
    let step = Duration::from_nanos(10);

    let mut g = c.benchmark_group("limit_check");

    // Baselines: the bare bucket arithmetic, and the shared counters a lock-based or
    // atomic design would put every core on.
    let p = BucketParams {
        rate_per_sec: 1e8,
        burst: 1e8,
        ratios: &[],
    };
    let mut bucket = Bucket::new(&p, 0);
    let mut now_ns = 0u64;
    g.bench_function("baseline/bucket_try_take", |b| {
        b.iter(|| {
            now_ns += 10;
            black_box(bucket.try_take(0, black_box(&p), now_ns).is_some())
        })
    });
    let tokens = Arc::new(AtomicU64::new(u64::MAX / 2));
    g.bench_function("baseline/atomic_fetch_sub/1_thread", |b| {
        b.iter(|| black_box(tokens.fetch_sub(1, Ordering::AcqRel) > 0))
    });
    {
        let t = tokens.clone();
        let _other = Contender::start(move || {
            black_box(t.fetch_sub(1, Ordering::AcqRel));
        });
        g.bench_function("baseline/atomic_fetch_sub/2_threads", |b| {
            b.iter(|| black_box(tokens.fetch_sub(1, Ordering::AcqRel) > 0))
        });
    }
    let shared = Arc::new(Mutex::new(Bucket::new(&p, 0)));
    let mut shared_ns = 0u64;
    let take_shared = |m: &Mutex<Bucket>, ns: u64| {
        let mut b = m.lock().unwrap_or_else(|e| e.into_inner());
        b.try_take(0, &p, ns).is_some()
    };
    g.bench_function("baseline/mutex_bucket/1_thread", |b| {
        b.iter(|| {
            shared_ns += 10;
            black_box(take_shared(&shared, shared_ns))
        })
    });
    {
        let s = shared.clone();
        let mut ns = 0u64;
        let _other = Contender::start(move || {
            ns += 10;
            let mut b = s.lock().unwrap_or_else(|e| e.into_inner());
            black_box(b.try_take(0, &p, ns));
        });
        g.bench_function("baseline/mutex_bucket/2_threads", |b| {
            b.iter(|| {
                shared_ns += 10;
                black_box(take_shared(&shared, shared_ns))
            })
        });
    }
    g.bench_function("baseline/instant_now", |b| b.iter(Instant::now));

    // The per-core check, as `prepare` calls it: a fresh HeaderWriter per request.
    for (name, r) in [
        ("route", "route"),
        ("route+ip+app", "three"),
        ("quota", "quota"),
        ("groups", "groups"),
    ] {
        let limits = route(routes, r);
        let f = facts(r);
        if r == "quota" {
            // A worker holds a small default grant until the reconciler grants more;
            // grant the whole quota, as the reconciler does for a lone busy worker.
            let mut w = HeaderWriter::default();
            limiter
                .check(limits, &f, now, &mut w)
                .expect("quota admits");
            for e in limiter.end_round().expect("a report").entries {
                limiter.apply(Update::Grant {
                    id: e.id,
                    granted_total: 1 << 40,
                    used_everywhere: 0,
                });
            }
        }
        g.bench_function(format!("check/{name}"), |b| {
            b.iter(|| {
                now += step;
                let mut w = HeaderWriter::default();
                let ok = limiter.check(black_box(limits), &f, now, &mut w).is_ok();
                black_box(&w);
                ok
            })
        });
    }
    // The same checks with one writer reused (cleared): the difference is what the
    // header buffers' allocations cost.
    for (name, r) in [("route", "route"), ("route+ip+app", "three")] {
        let limits = route(routes, r);
        let f = facts(r);
        let mut w = HeaderWriter::default();
        g.bench_function(format!("check/{name}/reused_writer"), |b| {
            b.iter(|| {
                now += step;
                w.clear();
                let ok = limiter.check(black_box(limits), &f, now, &mut w).is_ok();
                black_box(&w);
                ok
            })
        });
    }
    g.finish();

    // Rendering the headers into the response head (one limit, three limits).
    let mut g = c.benchmark_group("limit_headers");
    for (name, r) in [("1_limit", "route"), ("3_limits", "three")] {
        let mut w = HeaderWriter::default();
        limiter
            .check(route(routes, r), &facts(r), now, &mut w)
            .expect("admits");
        let mut out = Vec::with_capacity(512);
        g.bench_function(format!("write_to/{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&w).write_to(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();

    // The round's report with N keys touched (ip-keyed, N client addresses). The setup
    // (N checks) is not measured.
    let mut g = c.benchmark_group("limit_end_round");
    g.sample_size(30);
    let ip_limits = route(routes, "ip");
    let _ = limiter.end_round();
    for n in [1u32, 100, 10_000] {
        let addrs: Vec<IpAddr> = (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        g.bench_with_input(BenchmarkId::new("keys", n), &addrs, |b, addrs| {
            b.iter_batched(
                || {
                    let mut w = HeaderWriter::default();
                    for &ip in addrs {
                        let f = RequestFacts {
                            client_ip: ip,
                            ..facts("ip")
                        };
                        w.clear();
                        let _ = limiter.check(ip_limits, &f, now, &mut w);
                    }
                },
                |()| black_box(limiter.end_round().map(|r| r.entries.len())),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
