//! The Redis app store against a real redis-server (started from PATH on a free port;
//! each test is skipped, saying so, when redis-server is missing).

#[path = "support/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use redis_support::RedisServer;
use ringgate::auth::store::{RedisStore, StoreError, KEY_PREFIX};

const SECRET: &str = "current-secret-0001";
const PREVIOUS: &str = "previous-secret-001";

/// Generous for a loaded CI machine, far below anything that would look like a hang.
const QUICK: Duration = Duration::from_millis(1500);

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::from_url(&server.url()).expect("valid url")
}

fn expect_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn fetches_an_app_with_every_field() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    server.hset(
        "rg:app:app-7f3a",
        &[
            ("secret", SECRET),
            ("previous_secret", PREVIOUS),
            ("name", "Example shop"),
            ("groups", "trade,logistics"),
            ("allow_ips", "203.0.113.0/24,2001:db8::/32"),
            ("enabled", "true"),
        ],
    );
    let app = store(&server)
        .fetch("app-7f3a")
        .unwrap()
        .expect("app exists");
    assert_eq!(app.key, "app-7f3a");
    assert_eq!(app.secrets(), vec![SECRET.as_bytes(), PREVIOUS.as_bytes()]);
    assert_eq!(app.name, "Example shop");
    assert_eq!(app.groups, ["trade", "logistics"]);
    assert!(app.ip_allowed("203.0.113.9".parse().unwrap()));
    assert!(app.ip_allowed("2001:db8::1".parse().unwrap()));
    assert!(!app.ip_allowed("198.51.100.1".parse().unwrap()));
    assert!(app.enabled);
}

#[test]
fn missing_app_is_none() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert!(store.fetch("nobody").unwrap().is_none());
    // A record that is deleted is gone at once.
    server.hset("rg:app:gone", &[("secret", SECRET)]);
    assert!(store.fetch("gone").unwrap().is_some());
    server.del("rg:app:gone");
    assert!(store.fetch("gone").unwrap().is_none());
}

#[test]
fn invalid_record_is_reported_without_its_secret() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    server.hset(
        "rg:app:weak",
        &[("secret", "too-short"), ("allow_ips", "10.0.0.0/33")],
    );
    match store.fetch("weak") {
        Err(StoreError::Invalid(m)) => {
            assert!(m.starts_with("rg:app:weak: "), "{m}");
            assert!(
                m.contains("at least 16 bytes") && m.contains("allow_ips[0]"),
                "{m}"
            );
            assert!(!m.contains("too-short"), "{m}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    server.hset("rg:app:nosecret", &[("name", "No secret")]);
    let err = store.fetch("nosecret").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid app record: rg:app:nosecret: missing field \"secret\""
    );
    // A key of another type is a broken record, not an outage.
    server.cmd(&["SET", "rg:app:string", "x"]);
    let err = store.fetch("string").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid app record: rg:app:string: not a hash"
    );
    // The connection survives server-side errors.
    assert!(store.fetch("nobody").unwrap().is_none());
}

#[test]
fn all_keys_scans_past_one_batch() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert!(store.all_keys().unwrap().is_empty());
    const N: usize = 2500;
    // One scripted round trip per 500 hashes keeps the setup fast.
    let names: Vec<String> = (0..N).map(|i| format!("{KEY_PREFIX}app-{i:05}")).collect();
    let script = "for _, k in ipairs(KEYS) do redis.call('HSET', k, 'secret', ARGV[1]) end";
    for chunk in names.chunks(500) {
        let count = chunk.len().to_string();
        let mut args = vec!["EVAL", script, &count];
        args.extend(chunk.iter().map(String::as_str));
        args.push(SECRET);
        server.cmd(&args);
    }
    // Keys outside the prefix are not apps.
    server.cmd(&["SET", "other:key", "x"]);
    server.hset("rg:apps-not-an-app", &[("secret", SECRET)]);

    let keys = store.all_keys().unwrap();
    assert_eq!(keys.len(), N);
    let want: Vec<String> = (0..N).map(|i| format!("app-{i:05}")).collect();
    assert_eq!(keys, want);
}

#[test]
fn stopped_redis_is_unavailable_quickly_then_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.hset("rg:app:a", &[("secret", SECRET)]);
    let mut store = store(&server);
    assert!(store.fetch("a").unwrap().is_some());

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let m = expect_unavailable(store.fetch("a"));
        assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
        assert!(m.contains(&format!("127.0.0.1:{}", server.port)), "{m}");
        expect_unavailable(store.all_keys());
    }

    // The same store reconnects on its own; the restarted server has lost its data.
    server.restart();
    assert!(store.fetch("a").unwrap().is_none());
    server.hset("rg:app:a", &[("secret", SECRET)]);
    assert!(store.fetch("a").unwrap().is_some());
    assert_eq!(store.all_keys().unwrap(), ["a"]);
}

#[test]
fn restart_between_calls_is_invisible() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert!(store.fetch("a").unwrap().is_none());
    // The store's connection is now dead; the next call replaces it at once.
    server.restart();
    server.hset("rg:app:a", &[("secret", SECRET)]);
    assert!(store.fetch("a").unwrap().is_some());
}

#[test]
fn wedged_redis_is_unavailable_quickly_then_recovers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    server.hset("rg:app:a", &[("secret", SECRET)]);
    let mut connected = store(&server);
    assert!(connected.fetch("a").unwrap().is_some());
    let mut fresh = store(&server);

    server.pause();
    // An open connection times out on its read; a new one on its handshake.
    for _ in 0..2 {
        for store in [&mut connected, &mut fresh] {
            let started = Instant::now();
            expect_unavailable(store.fetch("a"));
            assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
        }
    }

    server.resume();
    assert!(connected.fetch("a").unwrap().is_some());
    assert!(fresh.fetch("a").unwrap().is_some());
}
