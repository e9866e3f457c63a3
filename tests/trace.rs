//! W3C Trace Context over real sockets, both drivers: a valid `traceparent` is continued
//! upstream with the gateway's own span and its `tracestate`; a missing or invalid one
//! starts a new trace, and a stray `tracestate` does not go along.

mod support;

use support::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; returns (trace id, parent id).
fn fields(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    assert!(v
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    (parts[1].to_owned(), parts[2].to_owned())
}

fn trace_context_is_continued_or_started(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let mut c = Client::connect(gw.addr);

    c.send(
        format!(
            "GET /a HTTP/1.1\r\nHost: t\r\ntraceparent: {PARENT}\r\ntracestate: vendor=1\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 200);
    let seen = up.last();
    assert_eq!(seen.headers_named("traceparent").len(), 1);
    let (trace, parent) = fields(seen.header("traceparent").unwrap());
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the gateway's span is the upstream's parent"
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));

    assert_eq!(c.get("/b").status, 200);
    let first = fields(up.last().header("traceparent").unwrap()).0;
    assert_eq!(c.get("/c").status, 200);
    let second = fields(up.last().header("traceparent").unwrap()).0;
    assert_ne!(first, second, "each request without a trace starts its own");

    c.send(b"GET /d HTTP/1.1\r\nHost: t\r\ntraceparent: 00-xyz\r\ntracestate: vendor=1\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    let seen = up.last();
    let (trace, _) = fields(seen.header("traceparent").unwrap());
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        seen.header("tracestate"),
        None,
        "state of a trace not continued"
    );
}

on_both_drivers!(trace_context_is_continued_or_started);
