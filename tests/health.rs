//! Upstream health over real sockets, two workers, both drivers: active checks take a
//! failing target out of rotation and bring it back, an upstream with no healthy target
//! answers `503 upstream_unavailable` without trying, and passive outlier ejection takes
//! a target that fails live requests out for a growing time.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// An upstream whose `/healthz` answers 200, or 503 while `sick` is set; every other
/// request gets 200 and is recorded.
fn checked() -> (Upstream, Arc<AtomicBool>) {
    let sick = Arc::new(AtomicBool::new(false));
    let flag = sick.clone();
    let up = Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            let ok = if req.target == "/healthz" {
                let status = if flag.load(Ordering::SeqCst) {
                    "503 Sick"
                } else {
                    "200 OK"
                };
                c.write(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
            } else {
                seen.lock().unwrap().push(req);
                c.respond(b"ok")
            };
            if !ok {
                return;
            }
        }
    });
    (up, sick)
}

fn gateway(driver: Driver, targets: &[SocketAddr], upstream_extra: &str) -> Gateway {
    gateway_with_route(driver, targets, upstream_extra, "")
}

fn gateway_with_route(
    driver: Driver,
    targets: &[SocketAddr],
    upstream_extra: &str,
    route_extra: &str,
) -> Gateway {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{}]\n{upstream_extra}\n\
         [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"up\"\n{route_extra}\n",
        list.join(", ")
    );
    Gateway::start(driver, 2, "", &body)
}

const CHECKS: &str = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", healthy = 2, unhealthy = 2 }";

/// Sends `n` requests; returns how many each upstream got.
fn spread(gw: &Gateway, n: usize, a: &Upstream, b: &Upstream) -> (usize, usize) {
    let (a0, b0) = (a.requests().len(), b.requests().len());
    let mut c = Client::connect(gw.addr);
    for _ in 0..n {
        assert_eq!(c.get("/x").status, 200);
    }
    (a.requests().len() - a0, b.requests().len() - b0)
}

fn active_checks_remove_and_restore_targets(driver: Driver) {
    let ((a, a_sick), (b, _)) = (checked(), checked());
    let gw = gateway(driver, &[a.addr, b.addr], CHECKS);
    assert_eq!(spread(&gw, 10, &a, &b), (5, 5), "both healthy: round robin");
    a_sick.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || spread(&gw, 4, &a, &b).0 == 0),
        "a unhealthy: out of rotation"
    );
    assert_eq!(spread(&gw, 10, &a, &b), (0, 10));
    a_sick.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || spread(&gw, 4, &a, &b).0 > 0),
        "a healthy again: back in rotation"
    );
    assert_eq!(spread(&gw, 10, &a, &b), (5, 5));
}

fn no_healthy_target_is_a_503_without_trying(driver: Driver) {
    let (a, sick) = checked();
    let gw = gateway(driver, &[a.addr], CHECKS);
    assert_eq!(Client::connect(gw.addr).get("/x").status, 200);
    sick.store(true, Ordering::SeqCst);
    let mut c = Client::connect(gw.addr);
    assert!(
        eventually(Duration::from_secs(3), || c.get("/x").status == 503),
        "no healthy target"
    );
    let before = a.requests().len();
    let r = c.get("/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "upstream_unavailable")
    );
    assert_eq!(a.requests().len(), before, "the upstream was not tried");
}

fn failing_targets_are_ejected_for_a_growing_time(driver: Driver) {
    let (b, _) = checked();
    let outlier =
        "outlier = { consecutive_failures = 2, base_ejection = \"400ms\", max_ejection = \"10s\" }";
    // Without retries, so that each turn of the dead target shows as a 502.
    let gw = gateway_with_route(
        driver,
        &[dead_addr(), b.addr],
        outlier,
        "retries = { attempts = 0 }",
    );
    let mut c = Client::connect(gw.addr);
    // Round robin: the dead target's turns fail until its second failure ejects it.
    let mut failed = 0;
    for _ in 0..20 {
        if c.get("/x").status == 502 {
            failed += 1;
        }
    }
    // Two workers may each send it one before the shared count ejects it.
    assert!((2..=3).contains(&failed), "{failed}");
    // Out for 400 ms, then back (and failing): out again, for 800 ms.
    std::thread::sleep(Duration::from_millis(450));
    let mut failed = 0;
    for _ in 0..20 {
        if c.get("/x").status == 502 {
            failed += 1;
        }
    }
    assert!((1..=3).contains(&failed), "{failed}");
    std::thread::sleep(Duration::from_millis(450));
    for _ in 0..20 {
        assert_eq!(
            c.get("/x").status,
            200,
            "still out: the second ejection is longer"
        );
    }
}

/// An upstream answering every request 500.
fn failing() -> Upstream {
    Upstream::answering(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
}

fn a_target_breaker_takes_a_failing_target_out_and_probes_it(driver: Driver) {
    let (bad, (good, _)) = (failing(), checked());
    let gw = gateway(
        driver,
        &[bad.addr, good.addr],
        "breaker = { consecutive_failures = 2, open_for = \"300ms\", probes = 1 }",
    );
    let mut c = Client::connect(gw.addr);
    let statuses: Vec<u16> = (0..10).map(|_| c.get("/x").status).collect();
    // Round robin sends the bad target every other request until its second failure.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 500).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(bad.requests().len(), 2);
    let s = Client::connect(gw.admin.unwrap()).get("/stats").body_str();
    assert!(
        s.contains("\"available\":false,\"breaker\":\"open\",\"trips\":1"),
        "{s}"
    );
    // After the cool-down one probe goes to it, fails, and opens it again.
    std::thread::sleep(Duration::from_millis(350));
    let statuses: Vec<u16> = (0..10).map(|_| c.get("/x").status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 500).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(bad.requests().len(), 3);
}

on_both_drivers!(
    a_target_breaker_takes_a_failing_target_out_and_probes_it,
    active_checks_remove_and_restore_targets,
    no_healthy_target_is_a_503_without_trying,
    failing_targets_are_ejected_for_a_growing_time,
);

#[test]
fn health_config_errors_name_the_field() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "health = { path = \"healthz\" }",
            "upstreams[0].health.path",
            "start with '/'",
        ),
        (
            "health = { interval = \"1s\", timeout = \"2s\" }",
            "upstreams[0].health.timeout",
            "must not exceed",
        ),
        (
            "health = { unhealthy = 0 }",
            "upstreams[0].health.unhealthy",
            "out of range",
        ),
        (
            "outlier = { base_ejection = \"10s\", max_ejection = \"1s\" }",
            "upstreams[0].outlier.max_ejection",
            "at least",
        ),
        (
            "outlier = { consecutive_failures = 0 }",
            "upstreams[0].outlier.consecutive_failures",
            "out of range",
        ),
        (
            "breaker = { mode = \"adaptive\" }",
            "upstreams[0].breaker.mode",
            "not for a target breaker",
        ),
    ];
    for (extra, path, needle) in cases {
        assert_config_error(&simple_routes(up, extra, ""), path, needle);
    }
}
