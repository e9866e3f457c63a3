//! Protection state across reloads: an open breaker stays open and an ejected target
//! stays out through a reload that changes something else; changing the protection's own
//! config starts it afresh.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

/// An upstream answering every request 500.
fn failing() -> Upstream {
    Upstream::answering(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
}

/// An upstream answering every request 202: a probe that reaches it knows the new
/// generation is live.
fn accepting() -> Upstream {
    Upstream::answering(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
}

/// `main` on `/*` with `main_extra`; `other` on `/other/*` from the second generation on.
fn config(up: &str, other: SocketAddr, main_extra: &str, with_other: bool) -> String {
    let mut body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{up}]\n\
         [[upstreams]]\nname = \"other\"\ntargets = [\"{other}\"]\n\
         [[routes]]\nname = \"main\"\npath = \"/*\"\nupstream = \"up\"\n{main_extra}\n"
    );
    if with_other {
        body.push_str("[[routes]]\nname = \"other\"\npath = \"/other/*\"\nupstream = \"other\"\n");
    }
    body
}

/// Reloads and waits until the (one) worker serves the new generation.
fn reload_and_wait(gw: &Gateway, driver: Driver, body: &str, probe: &str, status: u16) {
    gw.reload(driver, 1, "", body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.connect().get(probe).status != status {
        assert!(Instant::now() < deadline, "the reload never went live");
    }
}

fn an_open_breaker_stays_open_across_an_unrelated_reload(driver: Driver) {
    let up = failing();
    let other = Upstream::echo();
    let breaker = "breaker = { consecutive_failures = 2, open_for = \"60s\" }";
    let target = format!("\"{}\"", up.addr);
    let gw = Gateway::start(driver, 1, "", &config(&target, other.addr, breaker, false));
    let mut c = gw.connect();
    assert_eq!(c.get("/x").status, 500);
    assert_eq!(c.get("/x").status, 500);
    assert_eq!(c.get("/x").error_code(), "circuit_open");

    // Another route added: the breaker is untouched, still open.
    reload_and_wait(
        &gw,
        driver,
        &config(&target, other.addr, breaker, true),
        "/other/x",
        200,
    );
    for _ in 0..5 {
        assert_eq!(gw.connect().get("/x").error_code(), "circuit_open");
    }
    assert_eq!(up.requests().len(), 2, "the failing upstream was spared");

    // The breaker's own config changed: a new breaker, closed.
    let changed = "breaker = { consecutive_failures = 3, open_for = \"60s\" }";
    reload_and_wait(
        &gw,
        driver,
        &config(&target, other.addr, changed, false),
        "/other/x",
        500,
    );
    assert_eq!(
        gw.connect().get("/x").status,
        500,
        "closed again: it reaches the upstream"
    );
}

fn an_ejected_target_stays_out_across_an_unrelated_reload(driver: Driver) {
    let good = Upstream::echo();
    let other = accepting();
    let targets = format!("\"{}\", \"{}\"", dead_addr(), good.addr);
    // Retries off, so that a turn of the dead target shows as a 502.
    let with_outlier = |with_other: bool| {
        config(
            &targets,
            other.addr,
            "retries = { attempts = 0 }",
            with_other,
        )
        .replace(
            "name = \"up\"\n",
            "name = \"up\"\noutlier = { consecutive_failures = 2, base_ejection = \"60s\" }\n",
        )
    };
    let gw = Gateway::start(driver, 1, "", &with_outlier(false));
    let mut c = gw.connect();
    // Round robin: the dead target's turns fail until its second failure ejects it.
    let failed = (0..20).filter(|_| c.get("/x").status == 502).count();
    assert_eq!(failed, 2);

    reload_and_wait(&gw, driver, &with_outlier(true), "/other/x", 202);
    let mut c = gw.connect();
    for _ in 0..20 {
        assert_eq!(c.get("/x").status, 200, "the dead target is still out");
    }
}

on_both_drivers!(
    an_open_breaker_stays_open_across_an_unrelated_reload,
    an_ejected_target_stays_out_across_an_unrelated_reload,
);
