//! Replay protection across a fleet: two gateways (one io_uring, one epoll, two workers
//! each) sharing a real redis-server through `[cluster]`. A signed request accepted by
//! one is refused by the other; while Redis is down or wedged each gateway still refuses
//! its own replays and serves fresh requests, counting the fallback; once Redis is back
//! the fleet is one again.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use redis_support::RedisServer;
use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-fleet";
const SECRET: &str = "fleet-secret-000001";

fn gateway(driver: Driver, redis: &RedisServer, apps: &str) -> Gateway {
    let up = Upstream::echo();
    let body = format!(
        "[cluster]\nredis = \"{}\"\ngateways = 2\n\
         [apps]\nfile = \"{apps}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\nauth = \"hmac\"\n",
        redis.url(),
        up.addr
    );
    // The upstream lives as long as the test process: leaked on purpose.
    std::mem::forget(up);
    Gateway::start(driver, 2, "", &body)
}

fn signed_get(nonce: &str) -> Vec<u8> {
    let ts = ringgate::auth::check::unix_now();
    let s = sign_request(
        KEY,
        SECRET.as_bytes(),
        "GET",
        "/signed/x",
        "",
        b"",
        ts,
        nonce,
    )
    .unwrap();
    format!(
        "GET /signed/x HTTP/1.1\r\nHost: api.test\r\nX-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    )
    .into_bytes()
}

fn send(gw: &Gateway, raw: &[u8]) -> Response {
    let mut c = gw.connect();
    c.send(raw);
    c.read_response()
}

fn assert_replay(r: &Response) {
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    assert!(
        r.body_str().contains("nonce already used"),
        "{}",
        r.body_str()
    );
}

/// `ringgate_nonce_fleet_claims_total{result}` from the gateway's `/metrics`.
fn claims(gw: &Gateway, result: &str) -> u64 {
    let text = Client::connect(gw.admin.expect("admin"))
        .get("/metrics")
        .body_str();
    let needle = format!("ringgate_nonce_fleet_claims_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("no {needle} in /metrics"))
        .parse()
        .unwrap()
}

#[test]
fn a_nonce_is_accepted_once_across_the_fleet() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = temp_dir("fleet-nonces");
    let apps = write_apps_file(
        &dir,
        &format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\n"),
    );
    let a = gateway(Driver::IoUring, &redis, &apps);
    let b = gateway(Driver::Epoll, &redis, &apps);

    // Accepted by A, refused by B; and the other way round.
    let first = signed_get("fleet-nonce-00000001");
    assert_eq!(send(&a, &first).status, 200);
    assert_replay(&send(&b, &first));
    assert_replay(&send(&a, &first));
    let second = signed_get("fleet-nonce-00000002");
    assert_eq!(send(&b, &second).status, 200);
    assert_replay(&send(&a, &second));
    // Redis holds the claim for the rest of the timestamp window (300 s by default).
    let ttl = redis.cmd(&["PTTL", &format!("rg:nonce:{KEY}:fleet-nonce-00000001")]);
    assert!(
        matches!(ttl, redis::Value::Int(ms) if ms > 290_000 && ms <= 301_000),
        "{ttl:?}"
    );
    assert_eq!((claims(&a, "fresh"), claims(&b, "fresh")), (1, 1));
    assert_eq!((claims(&a, "replay"), claims(&b, "replay")), (1, 1));
    assert_eq!(claims(&a, "fallback"), 0);

    // Redis down: each gateway alone. Fresh requests pass, a gateway's own replays are
    // still refused, and the fallback is counted.
    redis.stop();
    let third = signed_get("fleet-nonce-00000003");
    assert_eq!(send(&a, &third).status, 200);
    assert_replay(&send(&a, &third));
    assert!(claims(&a, "fallback") >= 1);

    // Wedged (accepts, never answers): a request waits at most the claim bound.
    redis.restart();
    redis.pause();
    std::thread::sleep(Duration::from_millis(1100)); // past the retry pause
    let started = Instant::now();
    assert_eq!(send(&b, &signed_get("fleet-nonce-00000004")).status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(claims(&b, "fallback") >= 1);
    redis.resume();

    // Back: once the workers' retry pauses are over, the fleet is one again (connections
    // to the Redis that died are replaced without failing a claim).
    std::thread::sleep(Duration::from_millis(1100));
    let fifth = signed_get("fleet-nonce-00000005");
    let fresh = claims(&a, "fresh");
    assert_eq!(send(&a, &fifth).status, 200);
    assert_eq!(claims(&a, "fresh"), fresh + 1);
    assert_replay(&send(&b, &fifth));
    let _ = std::fs::remove_dir_all(&dir);
}
