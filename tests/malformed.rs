//! Strict parsing, request smuggling and limits over real sockets, on io_uring and epoll.
//!
//! Every rejected request is checked end to end: the exact status and JSON error code,
//! that the gateway closes the connection where the byte stream can no longer be
//! trusted, and that nothing reached the upstream. Upstream responses get the same
//! scrutiny: a malformed one becomes a 502 (or a truncated, closed response when part of
//! it already went out), never a desync.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// How long a close may take to show up once the error response is in.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// Small timeouts so the slow cases finish quickly; `drain_timeout` keeps teardown short.
const SERVER: &str = "head_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"\nbody_timeout = \"2s\"\ndrain_timeout = \"1s\"\n";

fn gateway(driver: Driver, up: &Upstream) -> Gateway {
    Gateway::start(driver, 1, SERVER, &simple_routes(up.addr, "", ""))
}

#[track_caller]
fn assert_error(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: status (body {:?})", r.body_str());
    assert_eq!(r.error_code(), code, "{what}: error code");
}

/// Sends `raw` on a fresh connection and expects exactly one error response, marked
/// `connection: close`, after which the gateway closes the connection.
#[track_caller]
fn rejected_and_closed(gw: &Gateway, raw: &[u8], status: u16, code: &str, what: &str) {
    let mut c = gw.connect();
    c.send(raw);
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_error(&r, status, code, what);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "{what}: the error response announces the close"
    );
    assert!(
        c.is_closed(CLOSE_WITHIN),
        "{what}: the gateway must close the connection after the error"
    );
}

/// The upstream was never contacted: no request, not even a connection.
#[track_caller]
fn assert_untouched(up: &Upstream, what: &str) {
    assert!(
        up.requests().is_empty(),
        "{what}: the upstream saw {:?}",
        up.requests()
    );
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "{what}: the upstream was connected to"
    );
}

/// Runs a table of requests that must each get `status`/`code` and a closed connection
/// without the upstream being contacted.
fn table(driver: Driver, status: u16, code: &str, cases: &[(&str, &[u8])]) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    for (what, raw) in cases {
        rejected_and_closed(&gw, raw, status, code, what);
    }
    assert_untouched(&up, "table");
    // Positive control: the same gateway and upstream work for a well-formed request.
    let r = exchange(gw.addr, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /ok 0"));
}

// ---------------------------------------------------------------- request framing

fn content_length_with_transfer_encoding(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            ("CL then TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("TE then CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            ("CL 0 with TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ],
    );
}

fn bad_content_length(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            ("duplicate CL, same value", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            ("duplicate CL, different values", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            ("non-numeric CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\nhello"),
            ("hex CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"),
            ("CL +5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"),
            ("CL -5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello"),
            ("CL list 5, 5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"),
            ("CL with inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello"),
            ("empty CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"),
            ("CL overflowing u64", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        ],
    );
}

fn bad_transfer_encoding(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            ("TE gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"),
            ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            ("TE chunked, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
            ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            ("empty TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
            (
                "two TE headers",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "two TE headers, gzip first",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("TE in HTTP/1.0 with Host", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ],
    );
}

/// Chunked bodies: the head is fine, so the error comes while streaming. The client still
/// gets 400 and a close, and the upstream never sees a complete request.
fn bad_chunked_bodies(driver: Driver) {
    let cases: &[(&str, &[u8])] = &[
        ("non-hex size", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size overflow", b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("empty size line", b"\r\nhello\r\n0\r\n\r\n"),
        ("space before size", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("space after size", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after data", b"5\r\nhelloXX0\r\n\r\n"),
        ("data longer than size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
        ("bare CR after data", b"5\r\nhello\r0\r\n\r\n"),
        ("bare LF after last chunk", b"5\r\nhello\r\n0\n\r\n"),
        ("bare LF ending the body", b"5\r\nhello\r\n0\r\n\n"),
        ("NUL in a trailer", b"5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n"),
    ];
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    for (what, body) in cases {
        let mut raw =
            b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        rejected_and_closed(&gw, &raw, 400, "bad_request", what);
    }
    assert!(
        up.requests().is_empty(),
        "no complete request reached the upstream: {:?}",
        up.requests()
    );
    let r = exchange(gw.addr, b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "POST /ok 5"),
        "a valid chunked body still works"
    );
}

// ---------------------------------------------------------------- head syntax

fn bad_header_syntax(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            (
                "obs-fold with space",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
            ),
            (
                "obs-fold with tab",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            ),
            (
                "first header line starts with space",
                b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            ),
            ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            (
                "tab before colon",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n",
            ),
            (
                "space before colon on TE",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            ),
            ("no colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n"),
            (
                "empty header name",
                b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
            ),
            (
                "NUL in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
            ),
            (
                "bare CR in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n",
            ),
            (
                "bare LF in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\n2\r\n\r\n",
            ),
            (
                "DEL in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f2\r\n\r\n",
            ),
            (
                "bare LF after the request line",
                b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            ),
            (
                "bare LF after a header",
                b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
            ),
            (
                "bare LF as the final line",
                b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            ),
            ("bare LF everywhere", b"GET / HTTP/1.1\nHost: a\n\n"),
        ],
    );
}

fn host_rules(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
            (
                "repeated Host, same value",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            ),
            (
                "repeated Host, different values",
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            ),
            ("space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            ("slash in Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            (
                "userinfo in Host",
                b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            ),
            ("comma in Host", b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"),
            (
                "non-ASCII Host",
                b"GET / HTTP/1.1\r\nHost: \xc3\xa9.test\r\n\r\n",
            ),
        ],
    );
}

fn bad_request_lines(driver: Driver) {
    table(
        driver,
        400,
        "bad_request",
        &[
            ("garbage", b"garbage\r\n\r\n"),
            ("method only", b"GET\r\n\r\n"),
            ("HTTP/0.9", b"GET /\r\n\r\n"),
            ("extra token", b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n"),
            ("bad method byte", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            (
                "TLS client hello",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
            ),
            (
                "authority-form outside CONNECT",
                b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            ("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "unknown scheme",
                b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ],
    );
}

fn path_escaping_the_root(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    for path in [
        "/../x",
        "/a/../../x",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/a/%2e%2e/%2e%2E/x",
        "/..",
        "/./../x",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        rejected_and_closed(&gw, raw.as_bytes(), 400, "bad_request", path);
    }
    assert_untouched(&up, "paths");
    // `..` that stays inside the root is resolved, and the upstream sees the result.
    let r = exchange(gw.addr, b"GET /a/b/../%2e%2e/c HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "GET /c 0");
}

fn connect_is_not_implemented(driver: Driver) {
    table(
        driver,
        501,
        "not_implemented",
        &[(
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        )],
    );
}

fn unsupported_expectation(driver: Driver) {
    table(
        driver,
        417,
        "expectation_failed",
        &[
            ("Expect: something-else", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\n"),
            ("Expect: 100-continue plus more", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue, x\r\n\r\n"),
        ],
    );
}

// ---------------------------------------------------------------- smuggling end to end

/// A framing conflict followed by a second request in the same packet: one 400, then
/// the connection closes; the upstream sees neither request (the "body" and the smuggled
/// request are never parsed as anything).
fn smuggling_attempts_are_refused_once(driver: Driver) {
    let cases: &[(&str, &[u8])] = &[
        (
            "CL.TE",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "TE.CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "TE.TE obfuscated",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "CL.CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "TE with space before colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "bare LF hiding a header",
            b"POST / HTTP/1.1\r\nHost: a\r\nX-A: 1\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ];
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    for (what, raw) in cases {
        let mut c = gw.connect();
        c.send(raw);
        let r = c.read_response();
        assert_error(&r, 400, "bad_request", what);
        assert!(
            c.is_closed(CLOSE_WITHIN),
            "{what}: exactly one response, then the connection closes"
        );
    }
    assert_untouched(&up, "smuggling");
}

// ---------------------------------------------------------------- limits

const LIMITS: &str =
    "max_header_bytes = 2048\nmax_headers = 10\nmax_uri_bytes = 256\nmax_body_bytes = 1000\n";

fn limits_gateway(driver: Driver, up: &Upstream) -> Gateway {
    let body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"small\"\npath = \"/small/*\"\nupstream = \"up\"\nmax_body_bytes = 100\n\n[[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n",
        up.addr
    );
    Gateway::start(driver, 1, &format!("{SERVER}{LIMITS}"), &body)
}

fn head_limits(driver: Driver) {
    let up = Upstream::echo();
    let gw = limits_gateway(driver, &up);
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2100)
    );
    rejected_and_closed(
        &gw,
        big_header.as_bytes(),
        431,
        "headers_too_large",
        "one header over max_header_bytes",
    );
    let mut many_bytes = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..8 {
        many_bytes.push_str(&format!("X-{i}: {}\r\n", "v".repeat(300)));
    }
    many_bytes.push_str("\r\n");
    rejected_and_closed(
        &gw,
        many_bytes.as_bytes(),
        431,
        "headers_too_large",
        "headers summing over max_header_bytes",
    );
    let unterminated = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "b".repeat(2100));
    rejected_and_closed(
        &gw,
        unterminated.as_bytes(),
        431,
        "headers_too_large",
        "an unterminated head reaching the limit",
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..10 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    rejected_and_closed(
        &gw,
        many.as_bytes(),
        431,
        "headers_too_large",
        "11 headers with max_headers = 10",
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(300));
    rejected_and_closed(
        &gw,
        long_uri.as_bytes(),
        414,
        "uri_too_long",
        "URI over max_uri_bytes",
    );
    let unterminated_uri = format!("GET /{}", "u".repeat(600));
    rejected_and_closed(
        &gw,
        unterminated_uri.as_bytes(),
        414,
        "uri_too_long",
        "unterminated request line over the limit",
    );
    assert_untouched(&up, "head limits");

    // Just inside every limit: served.
    let mut c = gw.connect();
    let prefix = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "u".repeat(255));
    let mut fits = prefix.clone();
    for i in 0..8 {
        fits.push_str(&format!("X-{i}: v\r\n"));
    }
    let pad = 2048 - fits.len() - "X-Pad: \r\n\r\n".len();
    fits.push_str(&format!("X-Pad: {}\r\n\r\n", "p".repeat(pad)));
    assert_eq!(fits.len(), 2048);
    c.send(fits.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last().target.len(), 256);
}

fn body_limits(driver: Driver) {
    let up = Upstream::echo();
    let gw = limits_gateway(driver, &up);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("route limit, head only", b"POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n".to_vec()),
        ("route limit, with body", format!("POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n{}", "x".repeat(101)).into_bytes()),
        (
            "route limit, with 100-continue",
            b"POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n".to_vec(),
        ),
        ("server limit", format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n{}", "x".repeat(1001)).into_bytes()),
        ("server limit, huge", b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n".to_vec()),
    ];
    for (what, raw) in &cases {
        // With `Expect: 100-continue` the 413 comes instead of the 100: the parser of
        // `rejected_and_closed` would choke on an interim response first.
        rejected_and_closed(&gw, raw, 413, "payload_too_large", what);
    }
    assert_untouched(&up, "body limits");

    // Chunked bodies are counted as they stream: 64 + 64 bytes over a limit of 100.
    for (path, chunk, n) in [("/small/x", 64, 2), ("/big", 600, 2)] {
        let mut c = gw.connect();
        c.send(
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .as_bytes(),
        );
        for _ in 0..n {
            let mut piece = format!("{chunk:x}\r\n").into_bytes();
            piece.extend(std::iter::repeat_n(b'c', chunk));
            piece.extend_from_slice(b"\r\n");
            if c.stream.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = c.stream.write_all(b"0\r\n\r\n");
        let r = c.read_response();
        assert_error(&r, 413, "payload_too_large", path);
        assert!(
            c.is_closed(CLOSE_WITHIN),
            "{path}: closed after a chunked body over the limit"
        );
    }
    assert!(
        up.requests().is_empty(),
        "no over-limit body reached the upstream complete: {:?}",
        up.requests()
    );

    // At the limits: served.
    let r = exchange(
        gw.addr,
        format!(
            "POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(100)
        )
        .as_bytes(),
    );
    assert_eq!(r.body_str(), "POST /small/x 100");
    let r = exchange(
        gw.addr,
        format!(
            "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}",
            "x".repeat(1000)
        )
        .as_bytes(),
    );
    assert_eq!(r.body_str(), "POST /big 1000");
    let mut chunked =
        b"POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(
        format!("32\r\n{0}\r\n32\r\n{0}\r\n0\r\n\r\n", "y".repeat(50)).as_bytes(),
    );
    assert_eq!(exchange(gw.addr, &chunked).body_str(), "POST /small/x 100");
}

/// True when something (bytes or EOF) can be read right now.
fn readable_now(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    s.set_nonblocking(false).unwrap();
    !matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Slowloris: a head trickled a byte at a time never completes within `head_timeout`
/// (300ms), so the gateway answers 408 and closes, long before the trickle would end.
fn slowloris_head_times_out(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    let head = format!(
        "GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(40)
    );
    let mut c = gw.connect();
    let start = Instant::now();
    let mut sent = 0;
    for b in head.bytes() {
        if readable_now(&c.stream) || c.stream.write_all(&[b]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c.read_response();
    let elapsed = start.elapsed();
    assert!(
        sent < head.len(),
        "the gateway waited for the whole trickled head"
    );
    assert_error(&r, 408, "request_timeout", "slowloris");
    assert!(c.is_closed(CLOSE_WITHIN));
    assert!(
        elapsed >= Duration::from_millis(250),
        "408 after {elapsed:?}, before head_timeout"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "408 only after {elapsed:?}"
    );
    assert_untouched(&up, "slowloris");
}

/// Idle connections are closed silently: after a response once `keepalive_timeout`
/// passes, and before any request once `head_timeout` passes.
fn idle_connections_are_closed_silently(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up);
    let mut c = gw.connect();
    assert_eq!(c.get("/").status, 200);
    let start = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "idle keep-alive connection closed without a response"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200),
        "closed after {elapsed:?}, before keepalive_timeout"
    );
    assert!(
        elapsed < Duration::from_millis(2000),
        "closed only after {elapsed:?}"
    );

    let mut idle = gw.connect();
    let start = Instant::now();
    assert!(
        idle.is_closed(Duration::from_secs(3)),
        "a connection that never sends is closed without a response"
    );
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// With `max_connections_per_worker = 2` and one worker, a third connection is turned
/// away at once: 503 `overloaded` with `retry-after`, closed, counted; the admitted ones
/// keep working, and once one closes a new connection is served.
fn connection_cap_per_worker(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "max_connections_per_worker = 2\ndrain_timeout = \"1s\"\n",
        &simple_routes(up.addr, "", ""),
    );
    let mut c1 = gw.connect();
    assert_eq!(c1.get("/1").status, 200);
    let mut c2 = gw.connect();
    assert_eq!(c2.get("/2").status, 200);
    let mut c3 = gw.connect();
    c3.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    let refused = c3.read_response();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.header("date").is_some());
    assert!(
        c3.is_closed(Duration::from_secs(2)),
        "the refused connection is closed"
    );
    assert_eq!(up.requests().len(), 2, "nothing of it reached the upstream");
    assert_eq!(
        c2.get("/2b").status,
        200,
        "the admitted connections keep working"
    );
    let admin = gw.admin.expect("admin listener");
    let refused = metric(admin, "ringgate_connections_refused_total{worker=\"0\"");
    assert_eq!(refused, Some(1));
    drop(c1);
    assert!(eventually(Duration::from_secs(5), || gw
        .connect()
        .get("/3")
        .status
        == 200));
    assert_eq!(c2.get("/2c").status, 200);
}

// ---------------------------------------------------------------- upstream responses

const FINE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine";

/// Malformed response heads, each answered on `/bad/<index>`; anything else gets `FINE`.
const BAD_RESPONSES: &[(&str, &[u8])] = &[
    ("garbage status line", b"garbage\r\n\r\n"),
    ("non-numeric status", b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"),
    ("two-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("unknown version", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("ICY status line", b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("CL with TE", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("duplicate CL, same", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
    ("duplicate CL, different", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
    ("negative CL", b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok"),
    ("TE gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"),
    ("TE chunked, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("bare LF in the status line", b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"),
    ("bare LF after a header", b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok"),
    ("NUL in a header value", b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok"),
    ("101 without an upgrade", b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
    ("bad chunk size before any data", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"),
    ("bare LF in the chunked body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n"),
    ("chunk without CRLF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n"),
];

fn scripted_upstream() -> Upstream {
    Upstream::start(|mut c, seen| {
        while let Some(req) = c.read_request() {
            let raw = req
                .target
                .strip_prefix("/bad/")
                .and_then(|i| i.parse::<usize>().ok())
                .map_or(FINE, |i| BAD_RESPONSES[i].1);
            seen.lock().unwrap().push(req);
            if !c.write(raw) {
                return;
            }
        }
    })
}

/// A malformed response that arrives in one piece: nothing went to the client yet, so it
/// gets a 502; the client connection stays usable and the next response is clean.
fn malformed_upstream_responses_are_502(driver: Driver) {
    let up = scripted_upstream();
    let gw = gateway(driver, &up);
    let mut c = gw.connect();
    for (i, (what, _)) in BAD_RESPONSES.iter().enumerate() {
        c.send(format!("GET /bad/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_error(&r, 502, "upstream_unavailable", what);
        let r = c.get("/after");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "fine"),
            "after {what}: the next request works"
        );
    }
    assert!(!c.is_closed(Duration::from_millis(50)));
    assert_eq!(
        up.requests().len(),
        2 * BAD_RESPONSES.len(),
        "no request was retried"
    );
}

/// The response head was good and part of the body went out when the upstream broke the
/// framing (or closed early): the only safe thing is to close the client connection, so
/// the client sees a truncated response, never a desync or a second response.
fn upstream_body_broken_midway(driver: Driver) {
    type Case = (
        &'static str,
        &'static [u8],
        Option<&'static [u8]>,
        &'static [u8],
    );
    let cases: [Case; 3] = [
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            Some(b"zz\r\nmore\r\n0\r\n\r\n"),
            b"5\r\nhello\r\n",
        ),
        (
            "bare LF in the body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            Some(b"4\nmore\r\n0\r\n\r\n"),
            b"5\r\nhello\r\n",
        ),
        (
            "Content-Length body cut short",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            None,
            b"hello",
        ),
    ];
    for (what, first, rest, client_body) in cases {
        let go = Arc::new(AtomicBool::new(false));
        let go_up = go.clone();
        let up = Upstream::start(move |mut c, seen| {
            if let Some(req) = c.read_request() {
                seen.lock().unwrap().push(req);
                c.write(first);
                assert!(eventually(Duration::from_secs(5), || go_up.load(Ordering::SeqCst)));
                match rest {
                    Some(rest) => {
                        c.write(rest);
                        // Hold the connection until the gateway drops it.
                        let _ = c.read_request();
                    }
                    None => c.close(),
                }
            }
        });
        let gw = gateway(driver, &up);
        let mut c = gw.connect();
        c.send(b"GET /midway HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut raw = Vec::new();
        let mut tmp = [0u8; 4096];
        while !raw.ends_with(client_body) {
            let n = c
                .stream
                .read(&mut tmp)
                .unwrap_or_else(|e| panic!("{what}: reading the first part: {e}"));
            assert!(
                n > 0,
                "{what}: closed before the first part: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&tmp[..n]);
        }
        go.store(true, Ordering::SeqCst);
        loop {
            match c.stream.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&tmp[..n]),
            }
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{what}: {text:?}");
        let body = &raw[find(&raw, b"\r\n\r\n").expect("a head") + 4..];
        assert_eq!(
            body, client_body,
            "{what}: exactly the good part, then the close: {text:?}"
        );
        assert_eq!(up.requests().len(), 1, "{what}: not retried");
    }
}

/// An upstream that sends bytes after a complete Content-Length body (here: a whole
/// second response, the classic desync payload). The gateway must not reuse that
/// connection, and the next request on the same client connection must get its own
/// correct response.
fn upstream_junk_after_body_is_not_reused(driver: Driver) {
    const EVIL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL";
    for split in [false, true] {
        let junk_written = Arc::new(AtomicBool::new(false));
        let flag = junk_written.clone();
        let up = Upstream::start(move |mut c, seen| {
            while let Some(req) = c.read_request() {
                let junk = req.target == "/junk";
                let body = format!("{} {}", req.target, c.id);
                seen.lock().unwrap().push(req);
                let mut raw = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes();
                if junk && !split {
                    raw.extend_from_slice(EVIL);
                }
                if !c.write(&raw) {
                    return;
                }
                if junk && split {
                    c.write(EVIL);
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
        let gw = gateway(driver, &up);
        let mut c = gw.connect();
        let r = c.get("/junk");
        assert_eq!(r.body_str(), "/junk 0", "split {split}");
        if split {
            assert!(eventually(Duration::from_secs(5), || junk_written
                .load(Ordering::SeqCst)));
        }
        for i in 0..3 {
            let r = c.get(&format!("/next{i}"));
            assert_eq!(r.status, 200, "split {split}");
            assert_eq!(
                r.body_str(),
                format!("/next{i} 1"),
                "split {split}: a fresh upstream connection, no leftover bytes"
            );
        }
        assert!(
            !c.is_closed(Duration::from_millis(50)),
            "split {split}: no stray bytes reached the client"
        );
        assert_eq!(up.connections.load(Ordering::SeqCst), 2, "split {split}");
    }
}

on_both_drivers!(
    content_length_with_transfer_encoding,
    bad_content_length,
    bad_transfer_encoding,
    bad_chunked_bodies,
    bad_header_syntax,
    host_rules,
    bad_request_lines,
    path_escaping_the_root,
    connect_is_not_implemented,
    unsupported_expectation,
    smuggling_attempts_are_refused_once,
    head_limits,
    body_limits,
    slowloris_head_times_out,
    idle_connections_are_closed_silently,
    connection_cap_per_worker,
    malformed_upstream_responses_are_502,
    upstream_body_broken_midway,
    upstream_junk_after_body_is_not_reused,
);
