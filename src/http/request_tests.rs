//! Unit tests for `parse_request`: framing (request smuggling), Host, Expect,
//! absolute-form targets, keep-alive and the head limits.

use super::*;

const LIMITS: HttpLimits = HttpLimits {
    max_header_bytes: 1024,
    max_headers: 8,
    max_uri_bytes: 64,
    max_body_bytes: 1 << 20,
};

/// What a successfully parsed head says, owned so it can outlive the buffer.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    method: String,
    target: String,
    host: String,
    http10: bool,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    head_len: usize,
}

fn parse_with(raw: &[u8], limits: &HttpLimits) -> Result<Option<Parsed>, ProxyError> {
    let mut storage = [const { MaybeUninit::uninit() }; 64];
    parse_request(raw, &mut storage, limits).map(|o| {
        o.map(|h| Parsed {
            method: h.method.to_string(),
            target: h.target.to_string(),
            host: String::from_utf8_lossy(h.host).into_owned(),
            http10: h.http10,
            framing: h.framing,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            head_len: h.head_len,
        })
    })
}

fn ok(raw: &[u8]) -> Parsed {
    match parse_with(raw, &LIMITS) {
        Ok(Some(p)) => p,
        other => panic!(
            "{:?} should parse, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn err(raw: &[u8]) -> ErrorKind {
    match parse_with(raw, &LIMITS) {
        Err(e) => {
            assert!(!e.message.is_empty());
            e.kind
        }
        other => panic!(
            "{:?} should be rejected, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn assert_rejected(kind: ErrorKind, cases: &[&[u8]]) {
    for raw in cases {
        assert_eq!(err(raw), kind, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn simple_get() {
    let raw = b"GET /a/b?c=d HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\nNEXT";
    let p = ok(raw);
    assert_eq!(
        p,
        Parsed {
            method: "GET".into(),
            target: "/a/b?c=d".into(),
            host: "api.test".into(),
            http10: false,
            framing: Framing::None,
            keep_alive: true,
            expect_continue: false,
            head_len: raw.len() - 4,
        }
    );
}

#[test]
fn incomplete_head_asks_for_more() {
    for raw in [
        &b""[..],
        b"GE",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
    ] {
        assert!(
            parse_with(raw, &LIMITS).unwrap().is_none(),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn content_length_framing() {
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").framing,
        Framing::Length(5)
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n").framing,
        Framing::None
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  7  \r\n\r\n").framing,
        Framing::Length(7)
    );
    assert_eq!(
        ok(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n").framing,
        Framing::Length(3),
        "HTTP/1.0 bodies use Content-Length"
    );
    assert_rejected(
        ErrorKind::BadRequest,
        &[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ],
    );
}

#[test]
fn transfer_encoding_framing() {
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
        Framing::Chunked
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n").framing,
        Framing::Chunked
    );
    assert_rejected(
        ErrorKind::BadRequest,
        &[
            // CL.TE and TE.CL: the classic smuggling pair.
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            // An HTTP/1.0 peer may not understand chunked at all.
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ],
    );
}

#[test]
fn host_rules() {
    assert_eq!(
        ok(b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n").host,
        "example.com:8080"
    );
    assert_eq!(
        ok(b"GET / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n").host,
        "[::1]:80"
    );
    assert_eq!(
        ok(b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n").host,
        "10.0.0.1"
    );
    let p = ok(b"GET / HTTP/1.0\r\n\r\n");
    assert!(p.http10);
    assert_eq!(p.host, "", "HTTP/1.0 may omit Host");
    assert_rejected(
        ErrorKind::BadRequest,
        &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\xc3\xa9\r\n\r\n",
        ],
    );
}

#[test]
fn expect_rules() {
    assert!(
        ok(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
            .expect_continue
    );
    assert!(
        ok(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nexpect: 100-Continue\r\n\r\n")
            .expect_continue
    );
    assert!(!ok(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n").expect_continue);
    // HTTP/1.0 has no Expect: ignored, not failed.
    assert!(
        !ok(b"PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n").expect_continue
    );
    assert!(
        !ok(b"PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: something-else\r\n\r\n")
            .expect_continue
    );
    assert_rejected(
        ErrorKind::ExpectationFailed,
        &[
            b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: something-else\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue, foo\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: \r\n\r\n",
        ],
    );
}

#[test]
fn absolute_form_targets() {
    let p = ok(b"GET http://example.com/a/b?c HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(
        (p.target.as_str(), p.host.as_str()),
        ("/a/b?c", "example.com"),
        "the target's authority wins over Host"
    );
    let p = ok(b"GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(
        (p.target.as_str(), p.host.as_str()),
        ("/", "example.com:8443")
    );
    let p = ok(b"GET http://h.test/ HTTP/1.0\r\n\r\n");
    assert_eq!((p.target.as_str(), p.host.as_str()), ("/", "h.test"));
    assert_rejected(
        ErrorKind::BadRequest,
        &[
            b"GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://user@h/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://h?q HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET example.com/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            // Absolute-form still needs a Host header on HTTP/1.1.
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        ],
    );
}

#[test]
fn connect_is_not_implemented() {
    assert_rejected(
        ErrorKind::NotImplemented,
        &[
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.0\r\n\r\n",
        ],
    );
}

#[test]
fn keep_alive_rules() {
    assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo, Close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn malformed_heads_are_rejected() {
    assert_rejected(
        ErrorKind::BadRequest,
        &[
            // Request line.
            b"garbage\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            // obs-fold, whitespace before the colon, bad names.
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n continued\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tcontinued\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n",
            // Control bytes in values.
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f2\r\n\r\n",
            // Bare LF anywhere in the head.
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
        ],
    );
}

#[test]
fn header_limits() {
    // max_headers = 8: exactly 8 is fine, 9 is 431.
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..7 {
        raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    ok(&raw);
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(b"X-8: v\r\n\r\n");
    assert_eq!(err(&raw), ErrorKind::HeadersTooLarge);

    // A complete head over max_header_bytes.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1100)
    );
    assert_eq!(err(big.as_bytes()), ErrorKind::HeadersTooLarge);
    // An incomplete one that already fills the limit.
    let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "b".repeat(1024));
    assert_eq!(err(partial.as_bytes()), ErrorKind::HeadersTooLarge);
    // Just under the limit is fine.
    let prefix = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ";
    let fits = format!("{prefix}{}\r\n\r\n", "b".repeat(1024 - prefix.len() - 4));
    assert_eq!(ok(fits.as_bytes()).head_len, 1024);
}

#[test]
fn uri_limits() {
    let at_limit = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(63));
    assert_eq!(ok(at_limit.as_bytes()).target.len(), 64);
    let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(64));
    assert_eq!(err(over.as_bytes()), ErrorKind::UriTooLong);
    // The request line has not even ended and is already too long.
    let unfinished = format!("GET /{}", "u".repeat(200));
    assert_eq!(err(unfinished.as_bytes()), ErrorKind::UriTooLong);
    // An absolute-form target counts in full.
    let absolute = format!(
        "GET http://h/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "u".repeat(60)
    );
    assert_eq!(err(absolute.as_bytes()), ErrorKind::UriTooLong);
}

#[test]
fn storage_smaller_than_max_headers_still_limits() {
    let limits = HttpLimits {
        max_headers: 100,
        ..LIMITS
    };
    let mut storage = [const { MaybeUninit::uninit() }; 2];
    let e = parse_request(
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n",
        &mut storage,
        &limits,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::HeadersTooLarge);
}
