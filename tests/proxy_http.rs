//! HTTP/1.1 proxying over real sockets: framing both ways, keep-alive and pipelining,
//! 100-continue, bodiless responses, hop-by-hop headers, X-Forwarded-* and request ids.

mod support;

use std::time::Duration;

use support::*;

fn get_through_gateway(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(
        gw.addr,
        b"GET /hello?x=1 HTTP/1.1\r\nHost: api.test\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "GET /hello?x=1 0");
    let seen = up.last();
    assert_eq!(seen.header("host"), Some("api.test"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.test"));
    let id = seen.header("x-request-id").expect("request id generated");
    assert_eq!(id.len(), 32);
    assert_eq!(
        r.header("x-request-id"),
        Some(id),
        "the client sees the same id"
    );
}

fn request_id_kept_when_valid_and_replaced_when_not(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n",
    );
    assert_eq!(up.last().header("x-request-id"), Some("abc-123"));
    exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: bad id!\r\n\r\n",
    );
    let seen = up.last();
    assert_eq!(seen.headers_named("x-request-id").len(), 1);
    assert_ne!(seen.header("x-request-id"), Some("bad id!"));
}

fn forwarded_for_is_replaced_not_trusted(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n");
    let seen = up.last();
    assert_eq!(seen.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.headers_named("x-forwarded-proto"), ["http"]);
}

fn hop_by_hop_headers_are_removed(driver: Driver) {
    let up = Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-up-secret\r\nX-Up-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok");
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Authorization: Basic eA==\r\nX-Normal: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-up-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-kept"), Some("yes"));
    let seen = up.last();
    for h in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert_eq!(seen.header(h), None, "{h} must not be forwarded");
    }
    assert_eq!(seen.header("x-normal"), Some("1"));
}

fn keep_alive_reuses_both_connections(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    for i in 0..20 {
        let r = c.get(&format!("/n/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), format!("GET /n/{i} 0"));
    }
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
}

fn pipelined_requests_are_answered_in_order(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend_from_slice(
            format!(
                "POST /p/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {i}\r\n\r\n{}",
                "x".repeat(i)
            )
            .as_bytes(),
        );
    }
    c.send(&batch);
    for i in 0..10 {
        let r = c.read_response();
        assert_eq!(r.body_str(), format!("POST /p/{i} {i}"));
    }
}

fn chunked_request_is_reframed(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(
        gw.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
}

fn chunked_and_close_delimited_responses(driver: Driver) {
    let up = Upstream::start(|mut c, _| {
        while let Some(req) = c.read_request() {
            if req.target == "/chunked" {
                c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
            } else {
                c.write(b"HTTP/1.1 200 OK\r\n\r\nuntil-close body");
                return;
            }
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let r = c.get("/chunked");
    assert_eq!(r.body_str(), "abcdefg");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let r = c.get("/close");
    assert_eq!(r.body_str(), "until-close body");
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "re-framed for an HTTP/1.1 client"
    );
    assert_eq!(
        c.get("/chunked").status,
        200,
        "client connection still usable"
    );
    // An HTTP/1.0 client gets the close-delimited body as it is.
    let mut c10 = gw.connect();
    c10.send(b"GET /close HTTP/1.0\r\n\r\n");
    let r = c10.read_response();
    assert_eq!(r.body_str(), "until-close body");
    assert_eq!(r.header("transfer-encoding"), None);
}

fn bodiless_responses(driver: Driver) {
    let up = Upstream::start(|mut c, _| {
        while let Some(req) = c.read_request() {
            let raw: &[u8] = match req.target.as_str() {
                "/204" => b"HTTP/1.1 204 No Content\r\n\r\n",
                "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            };
            c.write(raw);
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    c.send(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
    let r = c.get("/204");
    assert_eq!((r.status, r.header("content-length")), (204, None));
    let r = c.get("/304");
    assert_eq!((r.status, r.header("etag")), (304, Some("\"x\"")));
    // The connection is still in sync: no stray body bytes were forwarded.
    c.send(b"HEAD /y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_head_response().status, 200);
    assert!(!c.is_closed(Duration::from_millis(100)));
}

fn expect_100_continue(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    c.send(b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.body_str(), "PUT /up 5");
    assert_eq!(
        up.last().header("expect"),
        None,
        "the gateway answered the expectation itself"
    );
}

fn connection_close_is_honoured(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(Duration::from_secs(2)));
    // HTTP/1.0 without keep-alive closes too; with keep-alive it stays open.
    let mut c = gw.connect();
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    c.read_response();
    assert!(c.is_closed(Duration::from_secs(2)));
}

on_both_drivers!(
    get_through_gateway,
    request_id_kept_when_valid_and_replaced_when_not,
    forwarded_for_is_replaced_not_trusted,
    hop_by_hop_headers_are_removed,
    keep_alive_reuses_both_connections,
    pipelined_requests_are_answered_in_order,
    chunked_request_is_reframed,
    chunked_and_close_delimited_responses,
    bodiless_responses,
    expect_100_continue,
    connection_close_is_honoured,
);
