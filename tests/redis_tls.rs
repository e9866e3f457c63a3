//! Redis over TLS (`redis = { url = "rediss://...", ca = ..., cert = ..., key = ... }`):
//! a redis-server that speaks only TLS to the gateway and asks for a client certificate.
//! Every piece of shared state goes over it: the app registry, cluster quotas and the
//! fleet-wide nonces (the workers' own connections). A CA that did not sign the server's
//! certificate is an outage, never a connection in the clear and never a failed start.

#[path = "support/redis.rs"]
mod redis_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::path::Path;
use std::time::Duration;

use redis_support::RedisServer;
use support::*;
use tls_support::Ca;

const SECRET: &str = "tls-app-secret-000001";

/// A TLS redis-server (port `tls_port`; its plain port stays for the test's own use),
/// its certificate signed by `ca.pem` in `dir`, and a client certificate `client.pem`.
fn tls_redis(dir: &Path) -> Option<RedisServer> {
    let ca = Ca::new(dir, "ca");
    ca.issue(dir, "redis", &["127.0.0.1"], "redis", 2100);
    ca.issue(dir, "client", &["ringgate"], "ringgate", 2100);
    let redis = RedisServer::start_tls(dir, "redis", "yes")?;
    redis.hset("rg:app:app-tls", &[("secret", SECRET), ("groups", "trade")]);
    Some(redis)
}

fn gateway(redis: &RedisServer, dir: &Path, ca: &str, up: std::net::SocketAddr) -> Gateway {
    let port = redis.tls_port.unwrap();
    let file = |name: &str| dir.join(name).display().to_string();
    let target = format!(
        "{{ url = \"rediss://127.0.0.1:{port}/0\", ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
        file(ca),
        file("client.pem"),
        file("client.key")
    );
    Gateway::start(
        Driver::IoUring,
        1,
        "",
        &format!(
            "[cluster]\nredis = {target}\ngateways = 1\n\
             [apps]\nredis = {target}\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
             [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\n\
             limits = [ {{ key = \"app\", quota = \"100/day\" }} ]\n"
        ),
    )
}

fn call(gw: &Gateway, nonce: &str) -> Response {
    signed_get(gw.addr, "app-tls", SECRET, "/v1/orders/1", nonce)
}

fn keys(redis: &RedisServer, pattern: &str) -> usize {
    match redis.cmd(&["KEYS", pattern]) {
        redis::Value::Array(keys) => keys.len(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_shared_state_goes_over_tls_with_a_client_certificate() {
    let dir = temp_dir("redis-tls");
    let Some(redis) = tls_redis(&dir) else { return };
    let up = Upstream::echo();
    let gw = gateway(&redis, &dir, "ca.pem", up.addr);
    // The registry answers (the record was fetched over TLS)...
    assert!(
        eventually(Duration::from_secs(5), || call(&gw, &nonce()).status == 200),
        "{:?}",
        stats(gw.admin.unwrap())
    );
    // ...the quota is leased in Redis, and the nonce claimed there by the worker.
    assert!(eventually(Duration::from_secs(5), || keys(
        &redis, "rg:q:*"
    ) == 1));
    assert!(keys(&redis, "rg:nonce:*") >= 1);
    let s = stats(gw.admin.unwrap());
    assert_eq!(s["apps"]["store"]["up"], true, "{s}");
    assert_eq!(s["limits"]["cluster"]["mode"], "cluster", "{s}");
    let port = redis.tls_port.unwrap();
    assert_eq!(
        s["limits"]["cluster"]["redis"],
        format!("127.0.0.1:{port}"),
        "{s}"
    );
    // The replay check is fleet-wide: a nonce used is refused.
    let mut used = nonce();
    // (A second call in a key's first moments may get 429 while its reservation is on
    // its way: documented.)
    assert!(eventually(Duration::from_secs(3), || {
        used = nonce();
        call(&gw, &used).status == 200
    }));
    let r = call(&gw, &used);
    assert_eq!(r.status, 401, "{}", r.body_str());
}

#[test]
fn a_ca_that_did_not_sign_the_server_is_an_outage_not_a_failed_start() {
    let dir = temp_dir("redis-tls-wrong-ca");
    let Some(redis) = tls_redis(&dir) else { return };
    Ca::new(&dir, "other-ca");
    let up = Upstream::echo();
    let gw = gateway(&redis, &dir, "other-ca.pem", up.addr);
    assert_redis_outage(&gw, &call(&gw, &nonce()));
    assert_eq!(keys(&redis, "rg:q:*"), 0);
}

fn nonce() -> String {
    unique_nonce("tls-nonce")
}
