//! Regression tests for problems found in review: responses that must never cross
//! between clients, HEAD error responses, requests without Host, spoofable client
//! address headers, host and path forms other servers read differently, and a trickled
//! head that must still be served.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::*;

/// An upstream that sends stray bytes after a complete response, in a later segment,
/// must not have them read as the next client's response.
fn stray_upstream_bytes_never_reach_another_client(driver: Driver) {
    let (junk_sent_tx, junk_sent) = mpsc::channel::<()>();
    let junk_sent_tx = Mutex::new(junk_sent_tx);
    let up = Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            let first = req.target == "/first";
            seen.lock().unwrap().push(req.clone());
            if !c.respond(format!("for {}", req.target).as_bytes()) {
                return;
            }
            if first {
                std::thread::sleep(Duration::from_millis(1));
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Injected: yes\r\n\r\nEVIL");
                junk_sent_tx.lock().unwrap().send(()).unwrap();
            }
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    assert_eq!(gw.connect().get("/first").body_str(), "for /first");
    junk_sent.recv_timeout(Duration::from_secs(5)).unwrap();
    for who in ["/second", "/third"] {
        let r = gw.connect().get(who);
        assert_eq!((r.status, r.body_str()), (200, format!("for {who}")));
        assert_eq!(r.header("x-injected"), None);
    }
}

fn head_error_responses_have_no_body(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "",
        &format!(
            "[[upstreams]]\nname = \"dead\"\ntargets = [\"{dead}\"]\n[[routes]]\nname = \"dead\"\npath = \"/dead/*\"\nupstream = \"dead\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{ok}\"]\n[[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"up\"\n",
            dead = dead_addr(),
            ok = up.addr
        ),
    );
    let mut c = gw.connect();
    // A 404 and a 502 to HEAD, each followed by a pipelined GET on the same connection.
    c.send(b"HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\nHEAD /dead/x HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 404);
    assert!(
        r.header("content-length").is_some_and(|n| n != "0"),
        "length of the body a GET would get"
    );
    assert_eq!(c.read_head_response().status, 502);
    let r = c.read_response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /ok 0"));
}

fn http10_without_host_gets_a_host_upstream(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(gw.addr, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers_named("host"),
        ["up"],
        "the upstream's name, as nginx does"
    );
    assert_eq!(seen.header("x-forwarded-host"), None);
}

fn client_address_headers_cannot_be_spoofed(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    );
    let seen = up.last();
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.headers_named("x-forwarded-for"), ["127.0.0.1"]);
}

fn trusted_forwarded_for_keeps_every_hop(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "trusted_proxies = [\"127.0.0.1\"]",
        &simple_routes(up.addr, "", ""),
    );
    exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-For: 3.3.3.3\r\n\r\n",
    );
    assert_eq!(
        up.last().headers_named("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"]
    );
}

fn the_client_sees_the_gateways_request_id(driver: Driver) {
    let up = Upstream::start(|mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.write(
                b"HTTP/1.1 200 OK\r\nX-Request-Id: upstream-made\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-id-1\r\n\r\n",
    );
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
            .count(),
        1
    );
}

fn ambiguous_hosts_and_servlet_dot_segments_are_refused(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n",
        b"GET /public/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /public/.;x/admin HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let r = exchange(gw.addr, raw);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_request"),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    for ok in [
        &b"GET / HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"GET /a;v=1/b HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
    ] {
        assert_eq!(
            exchange(gw.addr, ok).status,
            200,
            "{}",
            String::from_utf8_lossy(ok)
        );
    }
    assert!(up.requests().iter().all(|r| !r.target.contains("admin")));
}

fn chunked_http10_upstream_response_is_refused(driver: Driver) {
    let up = Upstream::raw_once(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    );
    let gw = Gateway::simple(driver, up.addr);
    let r = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
}

/// A head trickled in a byte at a time (within the head timeout) is still served.
fn trickled_head_is_served(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let raw = format!(
        "GET /slow HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(300)
    );
    for b in raw.as_bytes() {
        c.send(&[*b]);
    }
    assert_eq!(c.read_response().body_str(), "GET /slow 0");
}

on_both_drivers!(
    stray_upstream_bytes_never_reach_another_client,
    head_error_responses_have_no_body,
    http10_without_host_gets_a_host_upstream,
    client_address_headers_cannot_be_spoofed,
    trusted_forwarded_for_keeps_every_hop,
    the_client_sees_the_gateways_request_id,
    ambiguous_hosts_and_servlet_dot_segments_are_refused,
    chunked_http10_upstream_response_is_refused,
    trickled_head_is_served,
);

/// One client trickling bytes at the admin listener must not hold up health checks.
#[test]
fn a_slow_admin_client_does_not_block_healthz() {
    let up = Upstream::echo();
    let gw = Gateway::simple(Driver::Epoll, up.addr);
    let admin = gw.admin.unwrap();
    let mut slow = TcpStream::connect(admin).unwrap();
    slow.write_all(b"GET /hea").unwrap();
    let started = Instant::now();
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered while the slow client waits"
    );
    // The slow client is cut off at the request deadline (2 s) rather than held forever.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
