//! The Redis-backed app registry, end to end against a real redis-server started from
//! PATH (`.ci/run` installs it, so CI never skips): records fetched on first use without
//! blocking workers, changes picked up after the cache TTL, unknown keys answered from the
//! key filter at once, and Redis going away (cached records keep serving) and coming back.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use support::*;

const SECRET: &str = "redis-secret-00000001";
static NEXT: AtomicU64 = AtomicU64::new(0);

fn redis() -> Option<RedisServer> {
    RedisServer::start()
}

fn gateway(driver: Driver, redis: &RedisServer, up: SocketAddr) -> Gateway {
    gateway_with(driver, 2, redis, up)
}

fn gateway_with(driver: Driver, workers: usize, redis: &RedisServer, up: SocketAddr) -> Gateway {
    Gateway::start(
        driver,
        workers,
        "",
        &format!(
            "[apps]\nredis = \"{}\"\ncache_ttl = \"300ms\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
             [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\n",
            redis.url()
        ),
    )
}

fn call(gw: &Gateway, key: &str) -> Response {
    call_at(gw.addr, key)
}

/// A signed call of `key` on a new connection to `addr`.
fn call_at(addr: SocketAddr, key: &str) -> Response {
    let nonce = format!(
        "redis-nonce-{:08}-{}",
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    );
    signed_get(addr, key, SECRET, "/v1/orders/1", &nonce)
}

fn stats(gw: &Gateway) -> serde_json::Value {
    support::stats(gw.admin.unwrap())
}

fn records_are_fetched_cached_and_refreshed(driver: Driver) {
    let Some(redis) = redis() else { return };
    redis.hset(
        "rg:app:app-r1",
        &[
            ("secret", SECRET),
            ("groups", "trade"),
            ("name", "Redis app"),
        ],
    );
    let up = Upstream::echo();
    let gw = gateway(driver, &redis, up.addr);
    // First use: fetched by the control side while the request waits, then cached.
    assert_eq!(call(&gw, "app-r1").status, 200);
    assert_eq!(up.last().header("x-rg-app"), Some("app-r1"));
    for _ in 0..5 {
        assert_eq!(call(&gw, "app-r1").status, 200);
    }
    let s = stats(&gw);
    assert!(s["apps"]["cache"]["hits"].as_u64().unwrap() >= 1, "{s}");
    let lookups = s["apps"]["store"]["lookups"].as_u64().unwrap();
    assert!(
        lookups <= 2,
        "a record is fetched once per worker at most, then cached: {s}"
    );
    // A change in Redis is picked up after the TTL (served stale meanwhile, refreshed in
    // the background).
    redis.hset("rg:app:app-r1", &[("enabled", "0")]);
    let disabled = eventually(Duration::from_secs(3), || {
        let r = call(&gw, "app-r1");
        r.status == 401 && r.body_str().contains("disabled")
    });
    assert!(disabled, "the disabled flag was picked up");
}

fn unknown_keys_are_answered_without_the_store(driver: Driver) {
    let Some(redis) = redis() else { return };
    redis.hset("rg:app:app-r1", &[("secret", SECRET), ("groups", "trade")]);
    let up = Upstream::echo();
    // One worker, so "the worker has the filter" is observable through its answers.
    let gw = gateway_with(driver, 1, &redis, up.addr);
    // Let the key filter arrive, then probe random keys: none reaches Redis.
    assert!(eventually(Duration::from_secs(3), || stats(&gw)["apps"]
        ["store"]["keys_in_filter"]
        == 1));
    // The worker has it once a random key is answered without a store lookup.
    let mut probe = 0;
    assert!(eventually(Duration::from_secs(3), || {
        probe += 1;
        call(&gw, &format!("probe-{probe}")).status == 401
            && stats(&gw)["apps"]["cache"]["filtered_unknown"]
                .as_u64()
                .unwrap_or(0)
                > 0
    }));
    let before = stats(&gw)["apps"]["store"]["lookups"].as_u64().unwrap();
    for i in 0..20 {
        let r = call(&gw, &format!("random-key-{i}"));
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    }
    let after = stats(&gw);
    assert!(
        after["apps"]["store"]["lookups"].as_u64().unwrap() - before <= 1,
        "{after}"
    );
    assert!(
        after["apps"]["cache"]["filtered_unknown"].as_u64().unwrap() >= 19,
        "{after}"
    );
}

/// Apps `app-r1` and `app-r2` in Redis and a one-worker gateway (which worker a
/// connection lands on is the kernel's choice, and the claims are about a worker that
/// has the record cached) with `app-r1` cached and the key filter (both apps) in place.
fn cached_gateway(driver: Driver, redis: &RedisServer, up: &Upstream) -> Gateway {
    redis.hset("rg:app:app-r1", &[("secret", SECRET), ("groups", "trade")]);
    redis.hset("rg:app:app-r2", &[("secret", SECRET), ("groups", "trade")]);
    let gw = gateway_with(driver, 1, redis, up.addr);
    assert!(eventually(Duration::from_secs(3), || (0..6).all(|_| call(
        &gw, "app-r1"
    )
    .status
        == 200)));
    assert!(eventually(Duration::from_secs(3), || stats(&gw)["apps"]
        ["store"]["keys_in_filter"]
        == 2));
    gw
}

/// A call of `key`, an app the worker has not cached, while the registry cannot answer:
/// 503 `overloaded`.
fn assert_registry_unavailable(gw: &Gateway, key: &str) {
    let r = call(gw, key);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "overloaded"),
        "{}",
        r.body_str()
    );
}

fn redis_going_away_and_coming_back(driver: Driver) {
    let Some(mut redis) = redis() else { return };
    let up = Upstream::echo();
    let gw = cached_gateway(driver, &redis, &up);
    redis.stop();
    // Cached records keep serving (stale after the TTL, their refresh failing)...
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..6 {
        assert_eq!(call(&gw, "app-r1").status, 200);
    }
    // ...unknown keys are still answered at once from the key filter (a filter false
    // positive, about 1 in 100 keys, looks the key up and gets a quick 503 instead, so
    // three keys are tried: one at least is a 401)...
    let started = Instant::now();
    let statuses: Vec<u16> = ["no-such-app", "nor-this-one", "nor-that-one"]
        .iter()
        .map(|k| call(&gw, k).status)
        .collect();
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    // "At once": well under the 2 s a request would wait for a record being fetched.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // ...and a known but uncached app gets a quick 503, not a hang.
    assert_registry_unavailable(&gw, "app-r2");
    assert!(eventually(Duration::from_secs(3), || stats(&gw)["apps"]
        ["store"]["up"]
        == false));
    redis.restart();
    redis.hset("rg:app:app-r2", &[("secret", SECRET), ("groups", "trade")]);
    assert!(
        eventually(Duration::from_secs(5), || call(&gw, "app-r2").status == 200),
        "back once Redis is"
    );
}

/// A Redis frozen mid-load (SIGSTOP: connections accepted, never answered) is an outage
/// too: calls of a cached app keep being served, every one of them, while it is frozen
/// and after; an app that was never cached gets a quick 503, not a hang; the store is
/// marked down, then up again once Redis answers.
fn redis_paused_under_load(driver: Driver) {
    let Some(redis) = redis() else { return };
    let up = Upstream::echo();
    let gw = cached_gateway(driver, &redis, &up);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr) = (stop.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    statuses.push(call_at(addr, "app-r1").status);
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    redis.pause();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_registry_unavailable(&gw, "app-r2");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(eventually(Duration::from_secs(3), || stats(&gw)["apps"]
        ["store"]["up"]
        == false));
    std::thread::sleep(Duration::from_millis(1500));
    redis.resume();
    assert!(
        eventually(Duration::from_secs(5), || stats(&gw)["apps"]["store"]["up"]
            == true),
        "the store is up again once Redis answers"
    );
    assert!(eventually(Duration::from_secs(5), || call(&gw, "app-r2")
        .status
        == 200));
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    eprintln!(
        "{driver:?}: {} calls of a cached app while Redis froze and came back",
        statuses.len()
    );
    assert!(statuses.len() > 100, "the load ran: {}", statuses.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
}

/// A record changed in Redis is never trusted beyond twice the TTL: an idle app that was
/// disabled is refused on its very next call, and an invalid record refuses the app
/// (never leaving the old one in force, never looking like an outage).
fn changed_records_are_not_trusted_past_the_grace(driver: Driver) {
    let Some(redis) = redis() else { return };
    redis.hset("rg:app:app-r1", &[("secret", SECRET), ("groups", "trade")]);
    redis.hset("rg:app:app-r3", &[("secret", SECRET), ("groups", "trade")]);
    let up = Upstream::echo();
    let gw = gateway(driver, &redis, up.addr);
    assert!(eventually(Duration::from_secs(3), || (0..6).all(|_| call(
        &gw, "app-r1"
    )
    .status
        == 200)));
    assert!(eventually(Duration::from_secs(3), || (0..6).all(|_| call(
        &gw, "app-r3"
    )
    .status
        == 200)));
    redis.hset("rg:app:app-r1", &[("enabled", "0")]);
    redis.hset("rg:app:app-r3", &[("allow_ip", "10.0.0.0/8")]);
    // Idle for more than twice the 300 ms TTL: the next call must see the change.
    std::thread::sleep(Duration::from_millis(700));
    let r = call(&gw, "app-r1");
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert!(r.body_str().contains("disabled"));
    let r = call(&gw, "app-r3");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthorized"),
        "{}",
        r.body_str()
    );
    assert_eq!(
        stats(&gw)["apps"]["store"]["up"],
        true,
        "an invalid record is not an outage"
    );
}

on_both_drivers!(
    redis_paused_under_load,
    changed_records_are_not_trusted_past_the_grace,
    records_are_fetched_cached_and_refreshed,
    unknown_keys_are_answered_without_the_store,
    redis_going_away_and_coming_back,
);
