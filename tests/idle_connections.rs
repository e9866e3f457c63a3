//! A keep-alive connection idle for longer than a moment gives its buffers back and waits
//! for readability instead of with a read (see `proxy::conn::wait_idle`). Nothing of that
//! may show: its next request (pipelined ones too) is served, `keepalive_timeout` still
//! counts from the last response, and a drain still closes it at once.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Longer than the gateway's grace (250 ms) before an idle connection lets go.
const PAST_GRACE: Duration = Duration::from_millis(400);

fn gateway(driver: Driver, up: std::net::SocketAddr, keepalive: &str) -> Gateway {
    Gateway::start(
        driver,
        1,
        &format!("keepalive_timeout = \"{keepalive}\""),
        &simple_routes(up, "", ""),
    )
}

fn a_connection_idle_past_the_grace_serves_what_comes_next(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, up.addr, "10s");
    let mut c = gw.connect();
    assert_eq!(c.get("/first").status, 200);
    std::thread::sleep(PAST_GRACE);
    let r = c.get("/second");
    assert_eq!((r.status, r.body_str()), (200, "GET /second 0".to_string()));
    // Two pipelined requests and a body after another idle spell.
    std::thread::sleep(PAST_GRACE);
    c.send(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.read_response().body_str(), "GET /p1 0");
    assert_eq!(c.read_response().body_str(), "POST /p2 5");
    // A head that arrives in pieces across the wake-up.
    std::thread::sleep(PAST_GRACE);
    c.send(b"GET /sl");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"ow HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "GET /slow 0");
}

fn keepalive_timeout_counts_from_the_last_response(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, up.addr, "900ms");
    let mut c = gw.connect();
    assert_eq!(c.get("/a").status, 200);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.get("/b").status, 200, "still open within the timeout");
    let idle_from = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "closed once idle too long"
    );
    let after = idle_from.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_millis(1500),
        "closed {after:?} after the last response"
    );
}

fn a_drain_closes_connections_idle_past_the_grace(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, up.addr, "60s");
    let mut idle = gw.connect();
    assert_eq!(idle.get("/a").status, 200);
    std::thread::sleep(PAST_GRACE);
    let started = Instant::now();
    let report = gw.shutdown();
    assert_eq!(report.unfinished_connections, 0);
    assert!(idle.is_closed(Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

on_both_drivers!(
    a_connection_idle_past_the_grace_serves_what_comes_next,
    keepalive_timeout_counts_from_the_last_response,
    a_drain_closes_connections_idle_past_the_grace,
);
