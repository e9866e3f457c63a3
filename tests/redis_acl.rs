//! Redis with ACL users: a gateway whose Redis URL names a user and password
//! (`redis://user:password@host:port/db`) reaches every piece of shared state as that
//! user, one allowed only the `rg:*` keys: the app registry, cluster quotas and the
//! fleet-wide nonces. A wrong password is an outage (the registry down, limits held
//! locally), never a failed start.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::time::Duration;

use redis_support::RedisServer;
use support::*;

const SECRET: &str = "acl-app-secret-00001";

fn gateway(redis: &RedisServer, password: &str, up: std::net::SocketAddr) -> Gateway {
    let url = format!("redis://ringgate:{password}@127.0.0.1:{}/0", redis.port);
    Gateway::start(
        Driver::IoUring,
        1,
        "",
        &format!(
            "[cluster]\nredis = \"{url}\"\ngateways = 1\n\
             [apps]\nredis = \"{url}\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
             [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\n\
             limits = [ {{ key = \"app\", quota = \"100/day\" }} ]\n"
        ),
    )
}

fn call(gw: &Gateway, nonce: &str) -> Response {
    signed_get(gw.addr, "app-acl", SECRET, "/v1/orders/1", nonce)
}

fn stats(gw: &Gateway) -> serde_json::Value {
    support::stats(gw.admin.unwrap())
}

fn keys(redis: &RedisServer, pattern: &str) -> usize {
    match redis.cmd(&["KEYS", pattern]) {
        redis::Value::Array(keys) => keys.len(),
        other => panic!("{other:?}"),
    }
}

/// A user allowed the `rg:*` keys only, and the app it serves.
fn acl_redis() -> Option<RedisServer> {
    let redis = RedisServer::start()?;
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "ringgate",
        "on",
        ">acl-redis-password-1",
        "~rg:*",
        "+@all",
    ]);
    redis.hset("rg:app:app-acl", &[("secret", SECRET), ("groups", "trade")]);
    Some(redis)
}

#[test]
fn every_shared_state_works_as_an_acl_user() {
    let Some(redis) = acl_redis() else { return };
    let up = Upstream::echo();
    let gw = gateway(&redis, "acl-redis-password-1", up.addr);
    // The registry answers (the record was fetched as that user)...
    assert!(
        eventually(Duration::from_secs(5), || call(&gw, &nonce()).status == 200),
        "{:?}",
        stats(&gw)
    );
    // ...the quota is leased in Redis, and nonces are claimed there.
    assert!(eventually(Duration::from_secs(5), || keys(
        &redis, "rg:q:*"
    ) == 1));
    assert!(keys(&redis, "rg:nonce:*") >= 1);
    let s = stats(&gw);
    assert_eq!(s["apps"]["store"]["up"], true, "{s}");
    assert_eq!(s["limits"]["cluster"]["mode"], "cluster", "{s}");
}

#[test]
fn a_wrong_password_is_an_outage_not_a_failed_start() {
    let Some(redis) = acl_redis() else { return };
    let up = Upstream::echo();
    let gw = gateway(&redis, "not-the-password", up.addr);
    assert_redis_outage(&gw, &call(&gw, &nonce()));
    assert_eq!(keys(&redis, "rg:q:*"), 0);
}

fn nonce() -> String {
    unique_nonce("acl-nonce")
}
