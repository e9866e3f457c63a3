//! Hot path: `normalize_path` + `Router::lookup` on every request. Question: what does a
//! lookup cost in a ~200-route table, and how much does the compiled host/segment trie save
//! over a linear scan of the same routes with the same precedence (measured in this run)?

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringgate::http::normalize::normalize_path;
use ringgate::router::{Match, RouteId, RouteSpec, Router};
use std::hint::black_box;
use std::time::Duration;

const RESOURCES: &[&str] = &[
    "orders",
    "users",
    "products",
    "payments",
    "invoices",
    "shipments",
    "carts",
    "reviews",
    "coupons",
    "refunds",
    "messages",
    "tokens",
    "webhooks",
    "apps",
    "quotas",
    "stores",
];

/// Owned route table; `RouteSpec` borrows from it.
struct Table {
    routes: Vec<(Option<String>, String, &'static [&'static str])>,
}

impl Table {
    /// ~200 routes shaped like an open platform: a versioned API host, a partner wildcard
    /// host, and host-less docs/static prefixes and open endpoints.
    fn realistic() -> Table {
        let mut routes = Vec::new();
        let mut add = |host: Option<&str>, path: String, methods: &'static [&'static str]| {
            routes.push((host.map(str::to_string), path, methods));
        };
        for version in ["v1", "v2"] {
            for res in RESOURCES {
                let api = Some("api.example.com");
                add(api, format!("/{version}/{res}"), &["GET", "POST"]);
                add(
                    api,
                    format!("/{version}/{res}/{{id}}"),
                    &["GET", "PUT", "DELETE"],
                );
                add(api, format!("/{version}/{res}/{{id}}/items"), &["GET"]);
                add(api, format!("/{version}/{res}/{{id}}/items/{{item}}"), &[]);
            }
        }
        for res in RESOURCES {
            let partner = Some("*.partner.example.com");
            add(partner, format!("/p/{res}"), &["GET"]);
            add(partner, format!("/p/{res}/{{id}}"), &["GET"]);
            add(partner, format!("/p/{res}/{{id}}/status"), &["GET"]);
            add(partner, format!("/p/{res}/batch/*"), &["POST"]);
            add(None, format!("/open/{res}/{{id}}"), &["GET"]);
        }
        add(Some("api.example.com"), "/v2/stores/{id}/*".into(), &[]);
        for prefix in [
            "/static/*",
            "/docs/*",
            "/assets/img/*",
            "/assets/*",
            "/health",
        ] {
            add(None, prefix.into(), &["GET"]);
        }
        Table { routes }
    }

    fn specs(&self) -> Vec<RouteSpec<'_>> {
        (0u32..)
            .zip(&self.routes)
            .map(|(i, (host, path, methods))| RouteSpec {
                id: RouteId(i),
                host: host.as_deref(),
                path,
                methods,
            })
            .collect()
    }
}

/// The baseline: what a first version would do. Patterns are pre-split (so the scan pays
/// only for matching, not parsing), every route is tried, and the most specific match is
/// kept by the same precedence as the router.
struct Linear {
    routes: Vec<LinearRoute>,
}

struct LinearRoute {
    id: RouteId,
    host: Option<String>,
    segments: Vec<Option<String>>, // None = {param}
    prefix: bool,
    methods: &'static [&'static str],
}

/// Lower sorts first: host tier, full before prefix, then per segment static < param <
/// prefix end, then a listed method before "any method".
type Rank = (u8, usize, bool, [u8; 16], bool);

impl Linear {
    fn new(table: &Table) -> Linear {
        let routes = (0u32..)
            .zip(&table.routes)
            .map(|(i, (host, path, methods))| {
                let pattern = path.strip_suffix("/*").unwrap_or(path);
                let segments = pattern
                    .split('/')
                    .skip(1)
                    .filter(|s| !s.is_empty())
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect();
                LinearRoute {
                    id: RouteId(i),
                    host: host.clone(),
                    segments,
                    prefix: path.ends_with("/*"),
                    methods,
                }
            })
            .collect();
        Linear { routes }
    }

    fn lookup(&self, host: &str, method: &str, path: &str) -> Option<RouteId> {
        let host = host.split(':').next().unwrap_or(host);
        let mut best: Option<(Rank, RouteId)> = None;
        for r in &self.routes {
            let (tier, suffix_rank) = match r.host.as_deref() {
                None => (2, 0),
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => {
                        let split = host.len().saturating_sub(suffix.len() + 1);
                        if split == 0
                            || !host.is_char_boundary(split)
                            || !host[split..].starts_with('.')
                            || !host[split + 1..].eq_ignore_ascii_case(suffix)
                        {
                            continue;
                        }
                        (1, usize::MAX - suffix.len())
                    }
                    None if h.eq_ignore_ascii_case(host) => (0, 0),
                    None => continue,
                },
            };
            let method_listed = r.methods.contains(&method);
            if !method_listed && !r.methods.is_empty() {
                continue;
            }
            let Some(kinds) = r.match_path(path) else {
                continue;
            };
            let rank = (tier, suffix_rank, r.prefix, kinds, !method_listed);
            if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                best = Some((rank, r.id));
            }
        }
        best.map(|(_, id)| id)
    }
}

impl LinearRoute {
    fn match_path(&self, path: &str) -> Option<[u8; 16]> {
        let mut kinds = [0u8; 16];
        let rest = path.strip_prefix('/')?;
        let mut segs = (!rest.is_empty())
            .then(|| rest.split('/'))
            .into_iter()
            .flatten();
        for (i, want) in self.segments.iter().enumerate() {
            let seg = segs.next()?;
            match want {
                Some(s) if s == seg => {}
                None if !seg.is_empty() => kinds[i] = 1,
                _ => return None,
            }
        }
        if self.prefix {
            kinds[self.segments.len()] = 2;
        } else if segs.next().is_some() {
            return None;
        }
        Some(kinds)
    }
}

fn lookup(c: &mut Criterion) {
    let table = Table::realistic();
    let router = match Router::build(&table.specs()) {
        Ok(router) => router,
        Err(errors) => panic!("bench routes do not build: {errors:?}"),
    };
    let linear = Linear::new(&table);
    let cases = [
        (
            "deep_hit",
            "api.example.com:443",
            "GET",
            "/v2/stores/12345/items/9",
        ),
        ("param_hit", "api.example.com", "GET", "/v1/orders/12345"),
        (
            "wildcard_hit",
            "eu.partner.example.com",
            "GET",
            "/p/refunds/77/status",
        ),
        (
            "prefix_hit",
            "www.example.com",
            "GET",
            "/assets/img/logo/v3/large.png",
        ),
        ("miss", "api.example.com", "GET", "/v3/unknown/path"),
    ];
    let mut group = c.benchmark_group("route_lookup");
    println!("{} routes", table.routes.len());
    for (name, host, method, path) in cases {
        // Both sides must agree, or the comparison means nothing.
        let found = match router.lookup(host.as_bytes(), method.as_bytes(), path) {
            Match::Found(id) => Some(id),
            Match::MethodNotAllowed | Match::NotFound => None,
        };
        assert_eq!(found, linear.lookup(host, method, path), "{name}");
        assert_eq!(found.is_none(), name == "miss", "{name}");

        group.bench_function(BenchmarkId::new("trie", name), |b| {
            b.iter(|| {
                router.lookup(
                    black_box(host.as_bytes()),
                    black_box(method.as_bytes()),
                    black_box(path),
                )
            })
        });
        group.bench_function(BenchmarkId::new("linear_scan", name), |b| {
            b.iter(|| linear.lookup(black_box(host), black_box(method), black_box(path)))
        });
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let cases = [
        ("clean", "/v1/orders/12345/items/678"),
        (
            "dirty",
            "/v1/./orders//%7Euser/../12345/items/%2e%2E/678/%2fx",
        ),
    ];
    let mut group = c.benchmark_group("normalize_path");
    let mut out = String::with_capacity(256);
    for (name, raw) in cases {
        group.bench_function(BenchmarkId::new("normalize", name), |b| {
            b.iter(|| normalize_path(black_box(raw.as_bytes()), &mut out))
        });
        // Floor: copying the bytes into the same buffer, which any normalizer must do.
        group.bench_function(BenchmarkId::new("copy_only", name), |b| {
            b.iter(|| {
                out.clear();
                out.push_str(black_box(raw));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = lookup, normalize
}
criterion_main!(benches);
