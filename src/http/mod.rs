//! Strict HTTP/1.1 codec (RFC 9112): request and response heads parsed with httparse and
//! then checked for everything that enables request smuggling or desync; body framing
//! (Content-Length and chunked) as small synchronous state machines; limits.
//!
//! Nothing here does I/O: the connection driver in `proxy` feeds bytes in and writes
//! what comes out, so every rule is unit-testable.

pub mod chunked;
pub mod date;
pub mod error_response;
pub mod forwarded_for;
pub mod headers;
pub mod normalize;
pub mod request;
pub mod response;

pub use request::{parse_request, RequestHead};
pub use response::{parse_response, ResponseHead};

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only, e.g. HTTP/1.0 upstreams).
    UntilClose,
}

/// The size limits a request head and body are held to (`[server] max_*`, validated by
/// `config`, which re-exports this type).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
}

/// The most headers any config may allow; sizes the on-stack parse array.
pub const MAX_HEADERS_LIMIT: usize = 1024;

/// RFC 9110 `tchar`: the bytes allowed in tokens (methods, header names, codings).
pub const fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Parses a Content-Length value: ASCII digits only (no sign, no spaces, no list).
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Rejects a head that uses a bare LF as a line ending. httparse tolerates it (RFC 9112
/// allows that leniency), but a proxy must not: a peer that reads LF differently from us
/// is how requests get smuggled.
pub fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The reason phrase the gateway writes for a status it answers itself (errors,
/// fallbacks); `""` for any other, which HTTP/1.1 allows.
pub const fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"1234"), Some(1234));
        assert_eq!(parse_content_length(b"+5"), None);
        assert_eq!(parse_content_length(b"-5"), None);
        assert_eq!(parse_content_length(b"5, 5"), None);
        assert_eq!(parse_content_length(b"0x10"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn bare_lf_detection() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\n\r\n"));
    }
}
