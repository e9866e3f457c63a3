//! Hot path: a route guard's `admit` + `finish` on every request of a route with a
//! breaker, an isolation group's permit, and a retry budget's count of a request (shared
//! by every worker for routes with `retries`, per worker for the others). Question: what
//! does the shared, lock-free bookkeeping cost per request, alone and with a second
//! thread hammering the same counters (the cross-core case), and for the adaptive
//! throttle; and what does the per-worker budget save?

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::config::{BreakerMode, FailureOn, RouteBreaker};
use ringgate::resilience::breaker::BreakerConfig;
use ringgate::resilience::budget::RetryBudget;
use ringgate::resilience::bulkhead::{Bulkhead, BulkheadConfig};
use ringgate::resilience::guard::{Outcome, RouteGuard};
use ringgate::resilience::local_budget::LocalRetryBudget;

fn guard(mode: BreakerMode) -> RouteGuard {
    let config = RouteBreaker {
        mode,
        failure_on: FailureOn {
            connect: true,
            timeout: true,
            status_5xx: true,
        },
    };
    RouteGuard::new(&config, Instant::now())
}

fn breaker() -> BreakerMode {
    BreakerMode::Breaker(BreakerConfig {
        consecutive_failures: Some(5),
        error_rate: Some(0.5),
        window: Duration::from_secs(10),
        min_requests: 20,
        open_for: Duration::from_secs(5),
        probes: 3,
    })
}

fn one_request(g: &RouteGuard, now: Instant) {
    if let Ok(ticket) = g.admit(now, 0.5) {
        g.finish(ticket, Outcome::Status(200), now);
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("guard");
    for (name, mode) in [
        ("breaker", breaker()),
        (
            "adaptive",
            BreakerMode::Adaptive {
                k: 2.0,
                window: Duration::from_secs(10),
            },
        ),
    ] {
        let g = guard(mode);
        group.bench_function(format!("{name}/alone"), |b| {
            b.iter(|| one_request(black_box(&g), Instant::now()))
        });
        // A second thread records outcomes on the same counters all along.
        let g = Arc::new(g);
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let (g, stop) = (g.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    one_request(&g, Instant::now());
                }
            })
        };
        group.bench_function(format!("{name}/contended"), |b| {
            b.iter(|| one_request(black_box(&g), Instant::now()))
        });
        stop.store(true, Ordering::Relaxed);
        let _ = other.join();
    }
    group.finish();

    // An isolation group: take a permit and give it back, alone and contended.
    let mut group = c.benchmark_group("bulkhead");
    let bulkhead = Arc::new(Bulkhead::new(BulkheadConfig {
        name: "bench".into(),
        max_in_flight: 1_000_000,
        queue: 0,
        queue_timeout: Duration::from_millis(100),
    }));
    group.bench_function("permit/alone", |b| {
        b.iter(|| drop(black_box(bulkhead.try_take())))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (bulkhead, stop) = (bulkhead.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(bulkhead.try_take());
            }
        })
    };
    group.bench_function("permit/contended", |b| {
        b.iter(|| drop(black_box(bulkhead.try_take())))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    group.finish();

    // A retry budget counting a request: shared (alone, contended) and per worker.
    let mut group = c.benchmark_group("retry_budget");
    let shared = Arc::new(RetryBudget::new(
        0.2,
        3,
        Duration::from_secs(10),
        Instant::now(),
    ));
    group.bench_function("shared/alone", |b| {
        b.iter(|| black_box(&shared).request(Instant::now()))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                shared.request(Instant::now());
            }
        })
    };
    group.bench_function("shared/contended", |b| {
        b.iter(|| black_box(&shared).request(Instant::now()))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    let local = LocalRetryBudget::default();
    group.bench_function("per_worker", |b| {
        b.iter(|| black_box(&local).request(Instant::now()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
