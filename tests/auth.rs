//! App authentication over real sockets: RG-HMAC-SHA256 signatures, tampering, replays
//! across connections and workers, the timestamp window, secret rotation, disabled apps,
//! group and IP denials, and identity headers sent upstream.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-7f3a";
const SECRET: &str = "current-secret-0001";
const OLD_SECRET: &str = "previous-secret-001";

fn apps_file() -> String {
    write_apps(&[SECRET, OLD_SECRET])
}

/// Writes an apps file whose first app has these secrets; returns its path.
fn write_apps(secrets: &[&str]) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    let secrets = secrets.join(", ");
    let dir = std::env::temp_dir().join(format!(
        "ringgate-auth-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("apps.toml");
    std::fs::write(
        &path,
        format!(
            "[[apps]]\nkey = \"{KEY}\"\nsecrets = [{secrets}]\nname = \"Example shop\"\ngroups = [\"trade\"]\n\
             [[apps]]\nkey = \"app-other\"\nsecrets = [\"other-secret-00001\"]\ngroups = [\"marketing\"]\n\
             [[apps]]\nkey = \"app-off\"\nsecrets = [\"off-secret-0000001\"]\ngroups = [\"trade\"]\nenabled = false\n\
             [[apps]]\nkey = \"app-lan\"\nsecrets = [\"lan-secret-0000001\"]\ngroups = [\"trade\"]\nallow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn gateway(driver: Driver, workers: usize, up: SocketAddr) -> Gateway {
    Gateway::start(driver, workers, "", &routes(up, &apps_file()))
}

/// A one-worker gateway whose `[apps]` table gets these extra lines.
fn gateway_with_apps(driver: Driver, up: SocketAddr, apps_extra: &str) -> Gateway {
    let body = routes(up, &apps_file()).replace(
        "timestamp_window = \"300s\"",
        &format!("timestamp_window = \"300s\"\n{apps_extra}"),
    );
    Gateway::start(driver, 1, "", &body)
}

fn routes(up: SocketAddr, apps: &str) -> String {
    format!(
            "[apps]\nfile = \"{}\"\ntimestamp_window = \"300s\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
             [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\nmax_body_bytes = 1024\n\
             [[routes]]\nname = \"public\"\npath = \"/public/*\"\nupstream = \"up\"\n",
        apps
    )
}

fn now() -> u64 {
    ringgate::auth::check::unix_now()
}

fn nonce() -> String {
    format!(
        "nonce-{:016x}-{}",
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    )
}

/// A signed request as raw bytes; `path` and `query` are what gets signed. Takes what
/// `sign_request` takes.
#[allow(clippy::too_many_arguments)]
fn signed(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    ts: u64,
    nonce: &str,
) -> Vec<u8> {
    let s = sign_request(key, secret.as_bytes(), method, path, query, body, ts, nonce).unwrap();
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: api.test\r\nX-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        s.key,
        s.timestamp,
        s.nonce,
        s.signature,
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn valid_calls_pass_and_carry_the_identity(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let r = exchange(
        gw.addr,
        &signed(
            KEY,
            SECRET,
            "GET",
            "/v1/orders/42",
            "b=2&a=1",
            b"",
            now(),
            &nonce(),
        ),
    );
    // The upstream gets the query as signed (canonical), not the raw form.
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "GET /v1/orders/42?a=1&b=2 0")
    );
    let seen = up.last();
    assert_eq!(seen.header("x-rg-app"), Some(KEY));
    for h in ["x-rg-key", "x-rg-timestamp", "x-rg-nonce", "x-rg-signature"] {
        assert_eq!(seen.header(h), None, "{h} is not forwarded");
    }
    // With a body: the signature covers its hash, and the body arrives intact.
    let r = exchange(
        gw.addr,
        &signed(
            KEY,
            SECRET,
            "POST",
            "/v1/orders/new",
            "",
            b"{\"qty\":3}",
            now(),
            &nonce(),
        ),
    );
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "POST /v1/orders/new 9")
    );
    assert_eq!(up.last().body, b"{\"qty\":3}");
    // The previous secret still works during a rotation.
    let r = exchange(
        gw.addr,
        &signed(
            KEY,
            OLD_SECRET,
            "GET",
            "/v1/orders/1",
            "",
            b"",
            now(),
            &nonce(),
        ),
    );
    assert_eq!(r.status, 200);
}

fn chunked_signed_body_is_verified(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let body = b"hello signed world";
    let s = sign_request(
        KEY,
        SECRET.as_bytes(),
        "PUT",
        "/v1/orders/9",
        "",
        body,
        now(),
        &nonce(),
    )
    .unwrap();
    let raw = format!(
        "PUT /v1/orders/9 HTTP/1.1\r\nHost: a\r\nX-Rg-Key: {KEY}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nd\r\n signed world\r\n0\r\n\r\n",
        s.timestamp, s.nonce, s.signature
    );
    let r = exchange(gw.addr, raw.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body, body);
}

fn every_tampered_part_fails(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let ts = now();
    // Each case signs one request (method, query, body, secret) and sends another.
    let cases = [
        ("method", "GET", "", &b""[..], SECRET),
        ("path", "GET", "", b"", SECRET),
        ("query value", "GET", "a=1", b"", SECRET),
        ("body", "POST", "", b"amount=1", SECRET),
        ("timestamp", "GET", "", b"", SECRET),
        ("nonce", "GET", "", b"", SECRET),
        ("key", "GET", "", b"", SECRET),
        ("secret", "GET", "", b"", "not-the-secret-000"),
    ];
    for (what, method, query, body, secret) in cases {
        let original = signed(
            KEY,
            secret,
            method,
            "/v1/orders/1",
            query,
            body,
            ts,
            &nonce(),
        );
        let text = String::from_utf8(original).unwrap();
        let tampered = match what {
            "method" => text.replacen("GET", "DELETE", 1),
            "path" => text.replacen("/v1/orders/1", "/v1/orders/2", 1),
            "query value" => text.replacen("a=1", "a=2", 1),
            "body" => text.replace("amount=1", "amount=9"),
            "timestamp" => text.replace(
                &format!("X-Rg-Timestamp: {ts}"),
                &format!("X-Rg-Timestamp: {}", ts - 1),
            ),
            "nonce" => text.replacen("X-Rg-Nonce: nonce-", "X-Rg-Nonce: nonce-x", 1),
            "key" => text.replace(&format!("X-Rg-Key: {KEY}"), "X-Rg-Key: app-other"),
            _ => text,
        };
        let r = exchange(gw.addr, tampered.as_bytes());
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthorized"),
            "tampered {what}: {}",
            r.body_str()
        );
        assert_eq!(r.header("www-authenticate"), Some("RG-HMAC-SHA256"));
        let message = r.body_str();
        assert!(!message.contains(SECRET), "no secret in errors");
    }
    assert!(
        up.requests().is_empty(),
        "nothing tampered reached the upstream"
    );
}

fn query_order_and_encoding_are_canonical(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    // Signed as "a=1&b=x y" canonically; sent reordered and with different but
    // equivalent escapes: still the same canonical query.
    let n = nonce();
    let s = sign_request(
        KEY,
        SECRET.as_bytes(),
        "GET",
        "/v1/orders/q",
        "b=x%20y&a=1",
        b"",
        now(),
        &n,
    )
    .unwrap();
    let raw = format!(
        "GET /v1/orders/q?a=%31&b=x%20y HTTP/1.1\r\nHost: a\r\nX-Rg-Key: {KEY}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {n}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.timestamp, s.signature
    );
    assert_eq!(exchange(gw.addr, raw.as_bytes()).status, 200);
}

fn replays_fail_on_any_connection_and_worker(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 2, up.addr);
    let raw = signed(KEY, SECRET, "GET", "/v1/orders/7", "", b"", now(), &nonce());
    assert_eq!(exchange(gw.addr, &raw).status, 200);
    // Fresh connections land on either worker (SO_REUSEPORT); every replay fails.
    for _ in 0..8 {
        let r = exchange(gw.addr, &raw);
        assert_eq!(r.status, 401);
        assert!(r.body_str().contains("replay"), "{}", r.body_str());
    }
    // And on the same keep-alive connection.
    let mut c = gw.connect();
    c.send(&raw);
    assert_eq!(c.read_response().status, 401);
    assert_eq!(up.requests().len(), 1);
}

fn timestamp_window_edges(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let t = now();
    for (ts, status) in [
        (t - 290, 200),
        (t + 290, 200),
        (t - 310, 401),
        (t + 310, 401),
    ] {
        let r = exchange(
            gw.addr,
            &signed(KEY, SECRET, "GET", "/v1/orders/w", "", b"", ts, &nonce()),
        );
        assert_eq!(r.status, status, "timestamp now{:+}", ts as i64 - t as i64);
    }
}

fn denials(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let cases = [
        (
            "app-off",
            "off-secret-0000001",
            401,
            "unauthorized",
            "disabled",
        ),
        ("app-other", "other-secret-00001", 403, "forbidden", "group"),
        (
            "app-lan",
            "lan-secret-0000001",
            403,
            "forbidden",
            "allow list",
        ),
        (
            "app-nobody",
            "whatever-secret-01",
            401,
            "unauthorized",
            "unknown app",
        ),
    ];
    for (key, secret, status, code, says) in cases {
        let r = exchange(
            gw.addr,
            &signed(key, secret, "GET", "/v1/orders/1", "", b"", now(), &nonce()),
        );
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{key}");
        assert!(r.body_str().contains(says), "{key}: {}", r.body_str());
    }
    // Missing and malformed credentials.
    for raw in [
        &b"GET /v1/orders/1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /v1/orders/1 HTTP/1.1\r\nHost: a\r\nX-Rg-Key: app-7f3a\r\nX-Rg-Timestamp: soon\r\nX-Rg-Nonce: nonce-0123456789abcdef\r\nX-Rg-Signature: 00\r\n\r\n",
        b"GET /v1/orders/1 HTTP/1.1\r\nHost: a\r\nX-Rg-Key: app-7f3a\r\nX-Rg-Timestamp: 1\r\nX-Rg-Nonce: short\r\nX-Rg-Signature: 00\r\n\r\n",
    ] {
        let r = exchange(gw.addr, raw);
        assert_eq!((r.status, r.header("www-authenticate")), (401, Some("RG-HMAC-SHA256")));
    }
    assert!(up.requests().is_empty());
}

fn identity_cannot_be_spoofed_and_bodies_are_bounded(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    exchange(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Rg-App: app-7f3a\r\nX_Rg_App: evil\r\nX-Rg-Whatever: 1\r\n\r\n",
    );
    let seen = up.last();
    assert_eq!(seen.header("x-rg-app"), None);
    assert_eq!(
        seen.header("x_rg_app"),
        None,
        "the underscore spelling is stripped too"
    );
    assert_eq!(seen.header("x-rg-whatever"), None);
    let big = vec![b'x'; 2000];
    let r = exchange(
        gw.addr,
        &signed(
            KEY,
            SECRET,
            "POST",
            "/v1/orders/big",
            "",
            &big,
            now(),
            &nonce(),
        ),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
}

/// Rotation without downtime: both secrets work, then a reload with only the new one
/// retires the old, while the new one keeps working throughout.
fn secret_rotation_by_reload(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 2, up.addr);
    let call = |secret: &str| {
        exchange(
            gw.addr,
            &signed(KEY, secret, "GET", "/v1/orders/r", "", b"", now(), &nonce()),
        )
        .status
    };
    assert_eq!((call(SECRET), call(OLD_SECRET)), (200, 200));
    let generation = gw.reload(driver, 2, "", &routes(up.addr, &write_apps(&[SECRET])));
    assert_eq!(generation, 2);
    // Workers pick the new generation up within a tick; poll instead of sleeping.
    assert!(eventually(std::time::Duration::from_secs(2), || (0..4)
        .all(|_| call(OLD_SECRET) == 401)));
    assert_eq!(call(SECRET), 200);
}

/// A replay cache too small for the traffic refuses with 503 rather than forgetting
/// nonces (which would let replays through).
fn full_replay_cache_refuses_instead_of_forgetting(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway_with_apps(driver, up.addr, "replay_capacity = 1024");
    let mut c = gw.connect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..1600 {
        let raw = signed(KEY, SECRET, "GET", "/v1/orders/f", "", b"", now(), &nonce());
        c.send(&raw);
        let r = c.read_response();
        match r.status {
            200 => accepted.push(raw),
            503 => {
                assert_eq!(r.error_code(), "overloaded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body_str()),
        }
    }
    assert!(refused > 0, "the cache filled up");
    assert!(
        accepted.len() <= 1024 + 64,
        "no more nonces than the capacity were taken"
    );
    // Every accepted nonce is still remembered: its replay fails.
    for raw in accepted.iter().take(50) {
        c.send(raw);
        assert_ne!(c.read_response().status, 200);
    }
}

/// A call refused for its group is refused before its nonce is recorded: forbidden
/// traffic cannot fill the replay cache, and the refused request's nonce stays unspent.
fn refused_calls_spend_no_nonce(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway_with_apps(driver, up.addr, "replay_capacity = 1024");
    let mut c = gw.connect();
    let forbidden_nonce = nonce();
    let forbidden = signed(
        "app-other",
        "other-secret-00001",
        "GET",
        "/v1/orders/f",
        "",
        b"",
        now(),
        &forbidden_nonce,
    );
    for _ in 0..3 {
        c.send(&forbidden);
        let r = c.read_response();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "forbidden"),
            "refused again, never a replay"
        );
    }
    // Far more forbidden calls than the cache holds: none takes a place in it.
    for _ in 0..1600 {
        c.send(&signed(
            "app-other",
            "other-secret-00001",
            "GET",
            "/v1/orders/f",
            "",
            b"",
            now(),
            &nonce(),
        ));
        assert_eq!(c.read_response().status, 403);
    }
    let r = exchange(
        gw.addr,
        &signed(
            KEY,
            SECRET,
            "GET",
            "/v1/orders/ok",
            "",
            b"",
            now(),
            &nonce(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.requests().len(), 1);
}

/// A body trickled in past the end of the timestamp window must not be accepted: its
/// nonce's entry may have expired by then (that would make a replay look fresh).
fn body_arriving_after_the_window_is_refused(driver: Driver) {
    let up = Upstream::echo();
    let body = routes(up.addr, &apps_file())
        .replace("timestamp_window = \"300s\"", "timestamp_window = \"2s\"");
    let gw = Gateway::start(driver, 1, "", &body);
    let raw = signed(
        KEY,
        SECRET,
        "POST",
        "/v1/orders/slow",
        "",
        b"late body",
        now() - 1,
        &nonce(),
    );
    let split = raw.len() - b"late body".len();
    let mut c = gw.connect();
    c.send(&raw[..split]);
    // The head was in the window; wait until the window has closed, then send the body.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    c.send(&raw[split..]);
    let r = c.read_response();
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert!(r.body_str().contains("window closed"));
    assert!(up.requests().is_empty());
}

/// The window and the replay cache size are fixed at start: a reload that changes them
/// is refused (a wider window would outlive the expiries of stored nonces).
fn reload_cannot_change_the_replay_window(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let widened = routes(up.addr, &apps_file())
        .replace("timestamp_window = \"300s\"", "timestamp_window = \"600s\"");
    let config = ringgate::config::parse(&config_text(driver, 1, "", &widened)).unwrap();
    let err = gw.handle().reload(config).unwrap_err();
    assert!(err.contains("fixed at start"), "{err}");
}

fn fragments_are_refused(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, 1, up.addr);
    let r = exchange(
        gw.addr,
        b"GET /public/x?a=1#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
}

/// Bodies awaiting their signature check share a per-worker memory budget: past it,
/// 503; the budget is back once a body is done with.
fn bodies_awaiting_authentication_share_a_budget(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway_with_apps(driver, up.addr, "max_buffered_bytes = 1000");
    let payload = vec![b'p'; 800];
    let first = signed(
        KEY,
        SECRET,
        "POST",
        "/v1/orders/a",
        "",
        &payload,
        now(),
        &nonce(),
    );
    let split = first.len() - payload.len();
    let mut a = gw.connect();
    a.send(&first[..split + 10]);
    // Once the worker has read `a`'s head it holds 800 bytes of budget, and another
    // 800-byte body does not fit (polled: `a`'s bytes may take a moment to be read).
    let refused = eventually(std::time::Duration::from_secs(2), || {
        let second = signed(
            KEY,
            SECRET,
            "POST",
            "/v1/orders/b",
            "",
            &payload,
            now(),
            &nonce(),
        );
        let r = exchange(gw.addr, &second);
        r.status == 503 && r.error_code() == "overloaded"
    });
    assert!(refused, "a second body over the budget is refused");
    a.send(&first[split + 10..]);
    assert_eq!(a.read_response().status, 200);
    let third = signed(
        KEY,
        SECRET,
        "POST",
        "/v1/orders/c",
        "",
        &payload,
        now(),
        &nonce(),
    );
    assert_eq!(
        exchange(gw.addr, &third).status,
        200,
        "the budget was given back"
    );
}

on_both_drivers!(
    refused_calls_spend_no_nonce,
    bodies_awaiting_authentication_share_a_budget,
    body_arriving_after_the_window_is_refused,
    reload_cannot_change_the_replay_window,
    fragments_are_refused,
    full_replay_cache_refuses_instead_of_forgetting,
    secret_rotation_by_reload,
    valid_calls_pass_and_carry_the_identity,
    chunked_signed_body_is_verified,
    every_tampered_part_fails,
    query_order_and_encoding_are_canonical,
    replays_fail_on_any_connection_and_worker,
    timestamp_window_edges,
    denials,
    identity_cannot_be_spoofed_and_bodies_are_bounded,
);
