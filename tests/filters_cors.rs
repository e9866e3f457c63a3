//! The `cors` filter over real sockets, both drivers: preflights answered by the gateway
//! (never the upstream, routed by the method they ask about, before any signature or
//! limit), disallowed origins refused without a CORS header, actual requests answered with
//! the policy's headers (the upstream's own dropped), wildcard origins, CORS headers on
//! the route's error responses, and the config problems reported with their paths.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-cors-01";
const SECRET: &str = "cors-secret-000001";
const APP: &str = "https://app.example.com";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Every value of header `name`, in order.
fn values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The names of every `access-control-*` header in the response.
fn cors_headers(r: &Response) -> Vec<String> {
    r.headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// Whether some `Vary` header lists `origin`.
fn varies_by_origin(r: &Response) -> bool {
    values(r, "vary")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin"))
}

/// An upstream that answers 200 with CORS headers of its own (which a CORS route drops).
fn upstream() -> Upstream {
    Upstream::start(|mut c, seen| {
        while let Some(req) = c.read_request() {
            let body = format!("{} {}", req.method, req.target);
            seen.lock().unwrap().push(req);
            let head = format!(
                "HTTP/1.1 200 OK\r\naccess-control-allow-origin: https://evil.example\r\n\
                 access-control-allow-credentials: true\r\naccess-control-expose-headers: x-secret\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            );
            if !(c.write(head.as_bytes()) && c.write(body.as_bytes())) {
                return;
            }
        }
    })
}

fn write_apps() -> String {
    let apps = format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\n");
    write_apps_file(&temp_dir("cors"), &apps)
}

/// Routes:
/// - `api` (`/api/*`, GET POST PUT): listed and wildcard origins, credentials, explicit
///   methods and headers, exposed headers, max age;
/// - `signed` (`/signed/*`): hmac, 1 request a minute, one origin, every default;
/// - `open` (`/open/*`, GET): any origin;
/// - `plain` (`/plain/*`): no CORS at all.
fn gateway(driver: Driver, up: SocketAddr) -> Gateway {
    let body = format!(
        "[apps]\nfile = \"{}\"\ntimestamp_window = \"300s\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[routes]]\nname = \"api\"\npath = \"/api/*\"\nmethods = [\"GET\", \"POST\", \"PUT\"]\nupstream = \"up\"\n\
         [routes.cors]\nallow_origins = [\"{APP}\", \"https://*.example.org\"]\n\
         allow_methods = [\"GET\", \"POST\"]\nallow_headers = [\"content-type\", \"x-rg-key\"]\n\
         expose_headers = [\"x-request-id\"]\nallow_credentials = true\nmax_age = \"10m\"\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\nauth = \"hmac\"\n\
         limits = [ {{ key = \"route\", rate = \"1/min\" }} ]\n\
         [routes.cors]\nallow_origins = [\"{APP}\"]\n\
         [[routes]]\nname = \"open\"\npath = \"/open/*\"\nmethods = [\"GET\"]\nupstream = \"up\"\n\
         [routes.cors]\nallow_origins = [\"*\"]\n\
         [[routes]]\nname = \"plain\"\npath = \"/plain/*\"\nupstream = \"up\"\n",
        write_apps()
    );
    Gateway::start(driver, 1, "", &body)
}

fn preflight(c: &mut Client, path: &str, origin: &str, method: &str, headers: &str) -> Response {
    let asked = if headers.is_empty() {
        String::new()
    } else {
        format!("Access-Control-Request-Headers: {headers}\r\n")
    };
    c.send(
        format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: api.test\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: {method}\r\n{asked}\r\n"
        )
        .as_bytes(),
    );
    c.read_response()
}

fn get_from(c: &mut Client, path: &str, origin: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nOrigin: {origin}\r\n\r\n").as_bytes());
    c.read_response()
}

fn signed_get(path: &str, origin: &str) -> Vec<u8> {
    let nonce = format!(
        "nonce-{:016x}-{}",
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    );
    let now = ringgate::auth::check::unix_now();
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", path, "", b"", now, &nonce).unwrap();
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nOrigin: {origin}\r\nX-Rg-Key: {}\r\n\
         X-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    )
    .into_bytes()
}

fn preflight_is_answered_by_the_gateway(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    // OPTIONS is not among the route's methods: routed by the method asked about.
    let r = preflight(&mut c, "/api/orders", APP, "POST", "content-type, x-custom");
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    assert_eq!(values(&r, "access-control-allow-credentials"), ["true"]);
    assert_eq!(values(&r, "access-control-allow-methods"), ["GET, POST"]);
    // The configured list, not what was asked.
    assert_eq!(
        values(&r, "access-control-allow-headers"),
        ["content-type, x-rg-key"]
    );
    assert_eq!(values(&r, "access-control-max-age"), ["600"]);
    assert!(varies_by_origin(&r), "{:?}", r.headers);
    assert!(r.body.is_empty());
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    // The connection carries on.
    let r = preflight(&mut c, "/api/orders", APP, "GET", "");
    assert_eq!(r.status, 204);
    assert_eq!(
        values(&r, "access-control-allow-headers"),
        ["content-type, x-rg-key"]
    );
    // Preflight-shaped but without `Origin`: not a preflight, so the route's methods
    // hold (405) and nothing reaches the upstream.
    c.send(
        b"OPTIONS /api/orders HTTP/1.1\r\nHost: api.test\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
}

fn preflight_defaults_follow_the_route(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    // No allow_methods and no route methods: the default list; no allow_headers: the
    // asked ones echoed; no max_age: not sent; no credentials: not sent.
    let r = preflight(
        &mut c,
        "/signed/x",
        APP,
        "DELETE",
        "x-rg-key, x-rg-signature",
    );
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    assert_eq!(
        values(&r, "access-control-allow-methods"),
        ["GET, HEAD, POST, PUT, PATCH, DELETE"]
    );
    assert_eq!(
        values(&r, "access-control-allow-headers"),
        ["x-rg-key, x-rg-signature"]
    );
    assert_eq!(values(&r, "access-control-max-age"), Vec::<&str>::new());
    assert_eq!(
        values(&r, "access-control-allow-credentials"),
        Vec::<&str>::new()
    );
    assert!(varies_by_origin(&r));
    // Any origin, no credentials: `*`, the route's methods, and no Vary on Origin.
    let r = preflight(&mut c, "/open/x", "https://anyone.test", "GET", "");
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(values(&r, "access-control-allow-origin"), ["*"]);
    assert_eq!(values(&r, "access-control-allow-methods"), ["GET"]);
    assert!(!varies_by_origin(&r), "{:?}", r.headers);
    assert!(up.requests().is_empty());
}

fn disallowed_origins_get_no_cors_headers(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    for origin in [
        "https://evil.example.com",
        "https://example.org",
        "http://a.example.org",
        "https://evilexample.org",
        "http://app.example.com",
        "https://app.example.com.evil.test",
        "https://app.example.com:8443",
        "null",
    ] {
        let r = preflight(&mut c, "/api/x", origin, "GET", "content-type");
        assert_eq!(r.status, 403, "{origin}: {}", r.body_str());
        assert_eq!(r.error_code(), "forbidden", "{origin}");
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{origin}");
        // An actual request is forwarded, and its response has no CORS header (the
        // upstream's own are dropped too).
        let r = get_from(&mut c, "/api/x", origin);
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "GET /api/x"),
            "{origin}"
        );
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{origin}");
    }
    // Only the actual requests reached the upstream.
    let seen = up.requests();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|s| s.method == "GET"));
}

fn wildcard_origins_match_subdomains_only(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    for origin in [APP, "https://a.example.org", "https://a.b.example.org"] {
        let r = preflight(&mut c, "/api/x", origin, "GET", "");
        assert_eq!(r.status, 204, "{origin}: {}", r.body_str());
        assert_eq!(values(&r, "access-control-allow-origin"), [origin]);
        let r = get_from(&mut c, "/api/x", origin);
        assert_eq!(r.status, 200);
        assert_eq!(values(&r, "access-control-allow-origin"), [origin]);
    }
    assert_eq!(up.requests().len(), 3);
}

fn actual_requests_carry_the_policy(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    let r = get_from(&mut c, "/api/x", APP);
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /api/x"));
    // Exactly the gateway's answers: the upstream's CORS headers are gone.
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    assert_eq!(values(&r, "access-control-allow-credentials"), ["true"]);
    assert_eq!(
        values(&r, "access-control-expose-headers"),
        ["x-request-id"]
    );
    let mut names = cors_headers(&r);
    names.sort();
    assert_eq!(
        names,
        [
            "access-control-allow-credentials",
            "access-control-allow-origin",
            "access-control-expose-headers"
        ]
    );
    assert!(varies_by_origin(&r));
    // Without an Origin: no CORS answer, still none of the upstream's.
    let r = c.get("/api/x");
    assert_eq!(r.status, 200);
    assert_eq!(cors_headers(&r), Vec::<String>::new());
    // Any origin: `*`, no credentials, no Vary on Origin.
    let r = get_from(&mut c, "/open/x", "https://anyone.test");
    assert_eq!(r.status, 200);
    assert_eq!(values(&r, "access-control-allow-origin"), ["*"]);
    assert_eq!(cors_headers(&r), ["access-control-allow-origin"]);
    assert!(!varies_by_origin(&r));
    // A route without CORS leaves the upstream's headers alone, and answers no preflight.
    let r = get_from(&mut c, "/plain/x", APP);
    assert_eq!(r.status, 200);
    assert_eq!(
        values(&r, "access-control-allow-origin"),
        ["https://evil.example"]
    );
    assert_eq!(values(&r, "access-control-expose-headers"), ["x-secret"]);
    let r = preflight(&mut c, "/plain/x", APP, "GET", "");
    assert_eq!((r.status, r.body_str().as_str()), (200, "OPTIONS /plain/x"));
    assert_eq!(up.requests().len(), 5);
}

fn preflights_need_no_signature_and_spend_no_limit(driver: Driver) {
    let up = upstream();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        let r = preflight(&mut c, "/signed/x", APP, "GET", "x-rg-key");
        assert_eq!(r.status, 204, "{}", r.body_str());
        assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
        // No rate-limit headers or refusals: the limit was not consulted.
        assert_eq!(r.header("retry-after"), None);
    }
    // An unsigned actual request: a 401 the browser may read.
    let r = get_from(&mut c, "/signed/x", APP);
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    assert!(varies_by_origin(&r));
    assert!(up.requests().is_empty());
    // The one request a minute is still there after the preflights and the 401...
    c.send(&signed_get("/signed/x", APP));
    let r = c.read_response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /signed/x"));
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    // ...and it was the only one: the next is refused, readable by the browser too.
    c.send(&signed_get("/signed/x", APP));
    let r = c.read_response();
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));
    assert_eq!(values(&r, "access-control-allow-origin"), [APP]);
    // A refused origin's preflight is a 403 (not a 401), and its 401 has no CORS header.
    let r = preflight(&mut c, "/signed/x", "https://evil.example.com", "GET", "");
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    assert_eq!(cors_headers(&r), Vec::<String>::new());
    let r = get_from(&mut c, "/signed/x", "https://evil.example.com");
    assert_eq!(r.status, 401);
    assert_eq!(cors_headers(&r), Vec::<String>::new());
    assert_eq!(up.requests().len(), 1);
}

on_both_drivers!(
    preflight_is_answered_by_the_gateway,
    preflight_defaults_follow_the_route,
    disallowed_origins_get_no_cors_headers,
    wildcard_origins_match_subdomains_only,
    actual_requests_carry_the_policy,
    preflights_need_no_signature_and_spend_no_limit,
);

// ---------------------------------------------------------------- config problems

/// A config whose second route (`routes[1]`) has this `[routes.cors]` body.
fn with_cors(cors: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"first\"\npath = \"/a/*\"\nupstream = \"up\"\n\
         [[routes]]\nname = \"second\"\npath = \"/b/*\"\nupstream = \"up\"\n[routes.cors]\n{cors}\n"
    )
}

fn assert_cors_error(cors: &str, path: &str, needle: &str) {
    assert_snapshot_error(&with_cors(cors), path, needle);
}

#[test]
fn good_policies_build() {
    for cors in [
        "allow_origins = [\"*\"]",
        "allow_origins = [\"https://app.example.com\", \"https://*.example.org\", \"http://localhost:3000\"]\nallow_credentials = true\nmax_age = \"10m\"",
    ] {
        let text = config_text(Driver::Epoll, 1, "", &with_cors(cors));
        let config = ringgate::config::parse(&text).expect("parses");
        assert!(
            ringgate::snapshot::Snapshot::build(config, 0).is_ok(),
            "{cors}"
        );
    }
}

#[test]
fn bad_policies_are_refused_with_their_path() {
    assert_cors_error(
        "allow_origins = [\"*\"]\nallow_credentials = true",
        "routes[1].cors.allow_credentials",
        "cannot be true",
    );
    assert_cors_error(
        "allow_origins = [\"https://ok.example.com\", \"app.example.com\"]",
        "routes[1].cors.allow_origins[1]",
        "needs a scheme",
    );
    assert_cors_error(
        "allow_origins = [\"https://app.example.com/path\"]",
        "routes[1].cors.allow_origins[0]",
        "without a path",
    );
    assert_cors_error(
        "allow_origins = []",
        "routes[1].cors.allow_origins",
        "at least one origin",
    );
    assert_cors_error(
        "allow_credentials = false",
        "routes[1].cors.allow_origins",
        "at least one origin",
    );
    for bad in ["soon", "10", "-1s", "5 minutes"] {
        assert_cors_error(
            &format!("allow_origins = [\"*\"]\nmax_age = \"{bad}\""),
            "routes[1].cors.max_age",
            "invalid duration",
        );
    }
    assert_cors_error(
        "allow_origins = [\"*\"]\nallow_methods = [\"GET\", \"NOT A METHOD\"]",
        "routes[1].cors.allow_methods[1]",
        "invalid name",
    );
}
