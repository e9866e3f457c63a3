//! The `headers` filter over real sockets, both drivers: request edits as the upstream
//! sees them (`set` replaces every client header of the name, `add` appends, `remove`
//! drops, variables rendered, an empty value not sent), response edits as the client sees
//! them (on forwarded and gateway-made responses), and the config problems reported with
//! their paths when the snapshot is built.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-hdr-01";
const SECRET: &str = "headers-secret-0001";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The contract's example edits, on a route named `edited`.
const EDITS: &str = r#"
[routes.headers.request]
set = { "x-api-version" = "2", "x-caller" = "$app_key", "x-route" = "$route" }
add = { "x-trace-tag" = "id=$request_id ip=$client_ip", "x-price" = "cost $$5 on $$route" }
remove = ["x-debug"]
[routes.headers.response]
set = { "cache-control" = "no-store" }
add = { "x-served-by" = "ringgate" }
remove = ["server"]
"#;

/// Every value of header `name` in a client's response, in order.
fn values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// An upstream that records each request and answers 200 with headers the response
/// edits act on: two `Cache-Control`, a `Server` and its own `X-Served-By`.
fn upstream_with_headers() -> Upstream {
    Upstream::start(|mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let ok = c.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: max-age=60\r\n\
                  server: origin-server/1.2\r\ncache-control: public\r\nx-served-by: origin\r\n\
                  x-other: kept\r\ncontent-length: 2\r\n\r\nok",
            );
            if !ok {
                return;
            }
        }
    })
}

/// Routes: `edited` (`/e/*`, anonymous, the edits), `signed` (`/s/*`, hmac, the edits)
/// and `dead` (`/dead/*`, the edits, an upstream nothing listens on).
fn gateway(driver: Driver, up: SocketAddr) -> Gateway {
    let apps = write_apps();
    let body = format!(
        "[apps]\nfile = \"{apps}\"\ntimestamp_window = \"300s\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[upstreams]]\nname = \"gone\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"edited\"\npath = \"/e/*\"\nupstream = \"up\"\n{EDITS}\n\
         [[routes]]\nname = \"signed\"\npath = \"/s/*\"\nupstream = \"up\"\nauth = \"hmac\"\n{EDITS}\n\
         [[routes]]\nname = \"dead\"\npath = \"/dead/*\"\nupstream = \"gone\"\n{EDITS}\n",
        dead_addr()
    );
    Gateway::start(driver, 1, "", &body)
}

fn write_apps() -> String {
    let apps = format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\n");
    write_apps_file(&temp_dir("headers"), &apps)
}

fn request_edits_reach_the_upstream(driver: Driver) {
    let up = upstream_with_headers();
    let gw = gateway(driver, up.addr);
    let mut c = Client::connect(gw.addr);
    c.send(
        b"GET /e/items HTTP/1.1\r\nHost: api.test\r\nX-Api-Version: 1\r\nx-api-version: 0\r\n\
          X-Caller: spoofed-app\r\nX-Debug: 1\r\nx-debug: 2\r\nX-Route: other\r\n\
          X-Trace-Tag: client-tag\r\nX-Keep: yes\r\nX-Request-Id: req-hdr-1\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let seen = up.last();
    // `set` replaces every client header of the name.
    assert_eq!(seen.headers_named("x-api-version"), ["2"]);
    assert_eq!(seen.headers_named("x-route"), ["edited"]);
    // `$app_key` renders empty on an anonymous route: no header, and the client's is gone.
    assert_eq!(seen.headers_named("x-caller"), Vec::<&str>::new());
    // `add` appends to what the client sent.
    assert_eq!(
        seen.headers_named("x-trace-tag"),
        ["client-tag", "id=req-hdr-1 ip=127.0.0.1"]
    );
    assert_eq!(seen.headers_named("x-price"), ["cost $5 on $route"]);
    // `remove` drops every header of the name; others pass untouched.
    assert_eq!(seen.headers_named("x-debug"), Vec::<&str>::new());
    assert_eq!(seen.headers_named("x-keep"), ["yes"]);
    assert_eq!(seen.headers_named("x-request-id"), ["req-hdr-1"]);
    assert_eq!(r.header("x-request-id"), Some("req-hdr-1"));
}

fn request_id_and_client_ip_are_the_gateways(driver: Driver) {
    let up = upstream_with_headers();
    let gw = gateway(driver, up.addr);
    // From another loopback address, without a request id of its own.
    let mut c = Client::connect_from(gw.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
    let r = c.get("/e/x");
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert!(!id.is_empty());
    let seen = up.last();
    assert_eq!(seen.headers_named("x-request-id"), [id.as_str()]);
    assert_eq!(
        seen.headers_named("x-trace-tag"),
        [format!("id={id} ip=127.0.0.7").as_str()]
    );
    // A second request gets its own id, rendered again.
    let r2 = c.get("/e/y");
    let id2 = r2.header("x-request-id").expect("x-request-id");
    assert_ne!(id2, id);
    assert_eq!(
        up.last().headers_named("x-trace-tag"),
        [format!("id={id2} ip=127.0.0.7").as_str()]
    );
}

fn app_key_is_the_signing_apps(driver: Driver) {
    let up = upstream_with_headers();
    let gw = gateway(driver, up.addr);
    let nonce = format!(
        "nonce-{:016x}-{}",
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    );
    let now = ringgate::auth::check::unix_now();
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", "/s/me", "", b"", now, &nonce).unwrap();
    let raw = format!(
        "GET /s/me HTTP/1.1\r\nHost: api.test\r\nX-Caller: someone-else\r\nX-Rg-Key: {}\r\n\
         X-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    );
    let r = exchange(gw.addr, raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = up.last();
    assert_eq!(seen.headers_named("x-caller"), [KEY]);
    assert_eq!(seen.headers_named("x-route"), ["signed"]);
    assert_eq!(seen.headers_named("x-rg-app"), [KEY]);
}

fn response_edits_reach_the_client(driver: Driver) {
    let up = upstream_with_headers();
    let gw = gateway(driver, up.addr);
    let r = Client::connect(gw.addr).get("/e/x");
    assert_eq!(r.status, 200);
    assert_eq!(values(&r, "cache-control"), ["no-store"]);
    assert_eq!(values(&r, "x-served-by"), ["origin", "ringgate"]);
    assert_eq!(values(&r, "server"), Vec::<&str>::new());
    assert_eq!(values(&r, "x-other"), ["kept"]);
    assert_eq!(r.body_str(), "ok");
}

fn response_edits_apply_to_gateway_made_responses(driver: Driver) {
    let up = upstream_with_headers();
    let gw = gateway(driver, up.addr);
    // A 502 of the route (its upstream is down) and a 401 (no signature).
    let r = Client::connect(gw.addr).get("/dead/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(values(&r, "cache-control"), ["no-store"]);
    assert_eq!(values(&r, "x-served-by"), ["ringgate"]);
    let r = Client::connect(gw.addr).get("/s/x");
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    assert_eq!(values(&r, "cache-control"), ["no-store"]);
    assert_eq!(values(&r, "x-served-by"), ["ringgate"]);
    // No route, no chain: no edits.
    let r = Client::connect(gw.addr).get("/nowhere");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "route_not_found")
    );
    assert_eq!(values(&r, "x-served-by"), Vec::<&str>::new());
    assert!(up.requests().is_empty());
}

on_both_drivers!(
    request_edits_reach_the_upstream,
    request_id_and_client_ip_are_the_gateways,
    app_key_is_the_signing_apps,
    response_edits_reach_the_client,
    response_edits_apply_to_gateway_made_responses,
);

// ---------------------------------------------------------------- config problems

/// A config whose second route (`routes[1]`) has `headers`, the TOML of its
/// `[routes.headers.*]` tables.
fn with_headers(headers: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"first\"\npath = \"/a/*\"\nupstream = \"up\"\n\
         [[routes]]\nname = \"second\"\npath = \"/b/*\"\nupstream = \"up\"\n{headers}\n"
    )
}

#[test]
fn the_example_config_builds() {
    let text = config_text(Driver::Epoll, 1, "", &with_headers(EDITS));
    let config = ringgate::config::parse(&text).expect("parses");
    assert!(ringgate::snapshot::Snapshot::build(config, 0).is_ok());
}

#[test]
fn gateway_owned_names_are_refused_with_their_path() {
    let owned = [
        "host",
        "Host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "expect",
        "date",
        "x-request-id",
        "X-Request-Id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "traceparent",
        "tracestate",
        "x-rg-app",
        "X-Rg-Key",
        "x_rg_app",
    ];
    for name in owned {
        for side in ["request", "response"] {
            for kind in ["set", "add"] {
                let body = with_headers(&format!(
                    "[routes.headers.{side}]\n{kind} = {{ \"{name}\" = \"v\" }}"
                ));
                assert_snapshot_error(
                    &body,
                    &format!("routes[1].headers.{side}.{kind}.{name}"),
                    "set by the gateway",
                );
            }
            let body = with_headers(&format!(
                "[routes.headers.{side}]\nremove = [\"x-fine\", \"{name}\"]"
            ));
            assert_snapshot_error(
                &body,
                &format!("routes[1].headers.{side}.remove[1]"),
                "set by the gateway",
            );
        }
    }
}

#[test]
fn unknown_variables_and_bad_names_are_refused() {
    assert_snapshot_error(
        &with_headers("[routes.headers.request]\nadd = { \"x-a\" = \"id=$request_idx\" }"),
        "routes[1].headers.request.add.x-a",
        "unknown variable $request_idx",
    );
    assert_snapshot_error(
        &with_headers("[routes.headers.response]\nset = { \"x-a\" = \"$host\" }"),
        "routes[1].headers.response.set.x-a",
        "unknown variable $host",
    );
    for bad in ["bad name", "x-a:b", "", "x-é"] {
        assert_snapshot_error(
            &with_headers(&format!(
                "[routes.headers.request]\nset = {{ \"{bad}\" = \"v\" }}"
            )),
            &format!("routes[1].headers.request.set.{bad}"),
            "invalid header name",
        );
    }
    assert_snapshot_error(
        &with_headers("[routes.headers.response]\nremove = [\"ok\", \"no good\"]"),
        "routes[1].headers.response.remove[1]",
        "invalid header name",
    );
    // A value that would split the header line.
    assert_snapshot_error(
        &with_headers("[routes.headers.request]\nset = { \"x-a\" = \"a\\r\\nx-b: c\" }"),
        "routes[1].headers.request.set.x-a",
        "control characters",
    );
    // Every problem of the section is reported, not only the first.
    let errors = snapshot_errors(&with_headers(
        "[routes.headers.request]\nset = { \"host\" = \"h\", \"x-a\" = \"$nope\" }\nremove = [\"date\"]",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "routes[1].headers.request.set.host",
        "routes[1].headers.request.set.x-a",
        "routes[1].headers.request.remove[0]",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}
