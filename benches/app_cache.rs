//! Hot path: finding the app record for a signed request with the Redis-backed registry
//! (the worker's LRU, and the key filter for unknown keys). Question: what does the cache
//! cost per lookup, against the plain hash map the file-backed registry uses?

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::auth::bloom::Bloom;
use ringgate::auth::cache::{AppUpdate, Fetched, Lookup, WorkerApps};
use ringgate::auth::registry::App;

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..10_000).map(|i| format!("app-{i:05}")).collect();
    let app = |k: &str| {
        Arc::new(
            App::from_parts(
                k.into(),
                vec!["bench-secret-000000".into()],
                None,
                vec!["trade".into()],
                &[],
                true,
            )
            .expect("app"),
        )
    };
    let (tx, _rx) = crossbeam_channel::unbounded();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cache = WorkerApps::new(
        0,
        100_000,
        Duration::from_secs(3600),
        tx,
        up,
        Arc::default(),
    );
    let now = Instant::now();
    let mut map = HashMap::new();
    for k in &keys {
        cache.apply(
            AppUpdate::Fetched {
                key: k.clone(),
                result: Fetched::App(app(k)),
            },
            now,
        );
        map.insert(k.clone(), app(k));
    }
    let bloom = Bloom::from_keys(keys.iter().map(String::as_str), 0.001);
    cache.apply(AppUpdate::Keys(Arc::new(bloom)), now);
    let filter = Bloom::from_keys(keys.iter().map(String::as_str), 0.001);

    let mut g = c.benchmark_group("app_lookup");
    g.bench_function("baseline_hashmap_get", |b| {
        b.iter(|| map.get(black_box("app-04242")).map(|a| a.enabled))
    });
    g.bench_function("worker_lru_hit", |b| {
        b.iter(|| {
            matches!(
                cache.lookup(black_box("app-04242"), now, true),
                Lookup::Found(_)
            )
        })
    });
    g.bench_function("worker_unknown_key_filtered", |b| {
        b.iter(|| {
            matches!(
                cache.lookup(black_box("no-such-app"), now, true),
                Lookup::Unknown
            )
        })
    });
    g.bench_function("bloom_contains_hit", |b| {
        b.iter(|| filter.contains(black_box("app-04242")))
    });
    g.bench_function("bloom_contains_miss", |b| {
        b.iter(|| filter.contains(black_box("no-such-app")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
