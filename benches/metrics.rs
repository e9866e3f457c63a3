//! Hot path: recording one finished request in the worker's metrics (a counter and a
//! latency histogram, worker-local). Question: what does the observing add per request?

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::metrics::{method_index, WorkerMetrics};

fn bench(c: &mut Criterion) {
    let mut m = WorkerMetrics::default();
    let routes: Vec<String> = (0..200).map(|i| format!("route-{i}")).collect();
    let names: Vec<&str> = routes.iter().map(String::as_str).collect();
    m.install(1, &names, &["up"]);
    let get = method_index("GET");
    let mut i = 0u64;
    c.bench_function("metrics/request", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            let route = (i % 200) as usize;
            m.request(
                1,
                Some((route, names[route])),
                get,
                200,
                Duration::from_micros(100 + i % 5000),
            );
            black_box(&m);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
