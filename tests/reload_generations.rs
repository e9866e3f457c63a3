//! Which config generation serves a request: the one current when its head arrives. A
//! keep-alive connection that sat idle through a reload gets the new rules on its very
//! first request after it: a new route, a disabled app, a new limit.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-reload";
const SECRET: &str = "reload-secret-000001";

/// Writes the apps file with the app enabled or not; returns its path.
fn write_apps(dir: &std::path::Path, enabled: bool) -> String {
    let apps =
        format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\nenabled = {enabled}\n");
    write_apps_file(dir, &apps)
}

/// Generation 1: `/a/*` and a signed `/signed/*`. Generation 2 adds `/b/*` and a limit on
/// `/a/*` (its RateLimit headers show it applied).
fn routes(up: SocketAddr, apps: &str, second: bool) -> String {
    let mut body = format!(
        "[apps]\nfile = \"{apps}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\nauth = \"hmac\"\n\
         [[routes]]\nname = \"a\"\npath = \"/a/*\"\nupstream = \"up\"\n"
    );
    if second {
        body.push_str("limits = [ { key = \"route\", rate = \"100000/s\" } ]\n");
        body.push_str("[[routes]]\nname = \"b\"\npath = \"/b/*\"\nupstream = \"up\"\n");
    }
    body
}

fn signed_get(path: &str, nonce: &str) -> Vec<u8> {
    let ts = ringgate::auth::check::unix_now();
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", path, "", b"", ts, nonce).unwrap();
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nX-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    )
    .into_bytes()
}

fn first_request_after_a_reload_uses_the_new_generation(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("reload-gen");
    let apps = write_apps(&dir, true);
    // One worker: once a fresh connection sees the new generation, every connection's
    // next request is on the worker that switched.
    let gw = Gateway::start(driver, 1, "", &routes(up.addr, &apps, false));

    // Keep-alive connections, each used once, then idle across the reload.
    let mut route = gw.connect();
    let mut app = gw.connect();
    let mut limit = gw.connect();
    assert_eq!(route.get("/b/x").status, 404);
    app.send(&signed_get("/signed/x", "nonce-reload-000000001"));
    assert_eq!(app.read_response().status, 200);
    let r = limit.get("/a/x");
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").is_none(), "no limit yet");

    write_apps(&dir, false);
    gw.reload(driver, 1, "", &routes(up.addr, &apps, true));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.connect().get("/b/x").status != 200 {
        assert!(Instant::now() < deadline, "the worker never switched");
    }

    // The very first request on each idle connection follows the new rules.
    assert_eq!(route.get("/b/x").status, 200, "the new route");
    app.send(&signed_get("/signed/x", "nonce-reload-000000002"));
    let r = app.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthorized"),
        "the disabled app"
    );
    assert!(r.body_str().contains("disabled"), "{}", r.body_str());
    let r = limit.get("/a/x");
    assert_eq!(r.status, 200);
    assert!(
        r.header("ratelimit-policy").is_some(),
        "the new limit applies: {:?}",
        r.headers
    );
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_drivers!(first_request_after_a_reload_uses_the_new_generation);
