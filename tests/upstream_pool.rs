//! The upstream pool is sized by what the worker needs: many concurrent clients share as
//! many origin connections as they have requests in flight, and a second wave reuses
//! them instead of opening new ones (a small fixed cap made every request beyond it open
//! a connection). `max_connections_per_target` bounds a target's connections; at the
//! bound a request waits for one, within its connect timeout.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// Answers every request after `delay`, on keep-alive, tracking the most connections
/// busy at once.
fn slow(delay: Duration, busy: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(delay);
            busy.fetch_sub(1, Ordering::SeqCst);
            if !c.respond(b"ok") {
                return;
            }
        }
    })
}

/// `clients` keep-alive clients at once, `each` requests apiece; every answer must be
/// `status`.
fn wave(gw: &Gateway, clients: usize, each: usize, status: u16) {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..each {
                    let r = c.get(&format!("/{i}/{j}"));
                    assert_eq!(r.status, status, "{}", r.body_str());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn concurrent_clients_reuse_a_pool_as_large_as_they_need(driver: Driver) {
    let (busy, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let up = slow(Duration::from_millis(10), busy, most.clone());
    let gw = Gateway::start(driver, 1, "", &simple_routes(up.addr, "", ""));
    // 150 in flight at most: never more origin connections than that.
    wave(&gw, 150, 8, 200);
    let first = up.connections.load(Ordering::SeqCst);
    assert!(first <= 150, "{first} origin connections for 150 clients");
    // A second wave finds them in the pool.
    wave(&gw, 150, 8, 200);
    let second = up.connections.load(Ordering::SeqCst) - first;
    assert!(
        second <= 150 - most.load(Ordering::SeqCst).min(first) + 8,
        "the second wave opened {second} more (first {first}, most busy {})",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(up.requests().len(), 2 * 150 * 8);
}

fn max_connections_per_target_bounds_a_targets_connections(driver: Driver) {
    let (busy, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let up = slow(Duration::from_millis(50), busy, most.clone());
    let gw = Gateway::start(
        driver,
        1,
        "",
        &simple_routes(up.addr, "max_connections_per_target = 2", ""),
    );
    // Eight clients, two connections: the others wait their turn (well within 2 s).
    wave(&gw, 8, 2, 200);
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

fn at_the_connection_bound_a_request_waits_at_most_its_connect_timeout(driver: Driver) {
    let (busy, most) = (Arc::default(), Arc::default());
    let up = slow(Duration::from_millis(1500), busy, most);
    let gw = Gateway::start(
        driver,
        1,
        "",
        &simple_routes(
            up.addr,
            "max_connections_per_target = 1\nconnect_timeout = \"300ms\"",
            "",
        ),
    );
    let addr = gw.addr;
    let first = std::thread::spawn(move || Client::connect(addr).get("/slow").status);
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let r = gw.connect().get("/waits");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

on_both_drivers!(
    concurrent_clients_reuse_a_pool_as_large_as_they_need,
    max_connections_per_target_bounds_a_targets_connections,
    at_the_connection_bound_a_request_waits_at_most_its_connect_timeout,
);

#[test]
fn pool_settings_are_checked() {
    let body = |extra: &str| {
        format!(
            "[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:9\"]\n{extra}\n\
             [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"u\"\n"
        )
    };
    assert_config_error(
        &body("max_connections_per_target = 0"),
        "upstreams[0].max_connections_per_target",
        "out of range",
    );
    assert_config_error(
        &body("max_idle_per_target = -1"),
        "upstreams[0].max_idle_per_target",
        "out of range",
    );
}
