//! The one error type of the request path, and the one place that maps errors to an HTTP
//! status, a stable code and the JSON error body.

use std::borrow::Cow;
use std::fmt;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or went away.
    Downstream,
    /// The upstream refused, reset, stalled or answered garbage.
    Upstream,
    /// The gateway itself (configuration, routing, limits).
    Internal,
}

/// What went wrong, as far as the client is concerned. Each kind has one status and one
/// stable snake_case code (the product's public contract, see DESIGN.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    ExpectationFailed,
    HeadersTooLarge,
    RateLimited,
    QuotaExceeded,
    NotImplemented,
    Overloaded,
    CircuitOpen,
    /// Every target of the upstream is unhealthy or ejected (503, `upstream_unavailable`).
    NoHealthyTarget,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl ErrorKind {
    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::RouteNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
            ErrorKind::NotImplemented => 501,
            ErrorKind::UpstreamUnavailable => 502,
            ErrorKind::Overloaded | ErrorKind::CircuitOpen | ErrorKind::NoHealthyTarget => 503,
            ErrorKind::UpstreamTimeout => 504,
        }
    }

    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RouteNotFound => "route_not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::ExpectationFailed => "expectation_failed",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::UpstreamUnavailable | ErrorKind::NoHealthyTarget => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// What a client is told when the failure is not its own: words safe for outsiders.
    pub const fn safe_message(self) -> &'static str {
        match self {
            ErrorKind::Overloaded => "the service is overloaded; try again shortly",
            ErrorKind::CircuitOpen => "the upstream service is failing; try again later",
            ErrorKind::NoHealthyTarget | ErrorKind::UpstreamUnavailable => "upstream unavailable",
            ErrorKind::UpstreamTimeout => "upstream timed out",
            ErrorKind::RequestTimeout => "request timed out",
            ErrorKind::PayloadTooLarge => "request body too large",
            ErrorKind::RateLimited => "rate limit exceeded",
            ErrorKind::QuotaExceeded => "quota exceeded",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RouteNotFound => "no route for this request",
            ErrorKind::MethodNotAllowed => "method not allowed",
            _ => "the gateway could not handle this request",
        }
    }

    pub const fn reason(self) -> &'static str {
        crate::http::reason_phrase(self.status())
    }

    /// Whether the connection must be closed after the error response: after a framing or
    /// parsing error the byte stream can no longer be trusted (request smuggling).
    pub const fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::RequestTimeout
                | ErrorKind::PayloadTooLarge
                | ErrorKind::UriTooLong
                | ErrorKind::HeadersTooLarge
                | ErrorKind::NotImplemented
        )
    }
}

/// An error on the request path: what happened, who caused it, and whether trying again
/// (on another connection or target) is safe.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    pub retryable: bool,
    pub message: Cow<'static, str>,
    /// Extra header lines for the error response (e.g. Retry-After on a 429).
    pub headers: Option<Box<[u8]>>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, side: Side, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            kind,
            side,
            retryable: false,
            message: message.into(),
            headers: None,
        }
    }

    pub fn client(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Downstream, message)
    }

    pub fn upstream(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Upstream, message)
    }

    /// Adds complete header lines (`name: value\r\n`) to the error response.
    pub fn with_headers(mut self, lines: Vec<u8>) -> Self {
        self.headers = Some(lines.into_boxed_slice());
        self
    }

    /// What the client is told. Its own mistakes are described (the message is about
    /// its request); failures on the upstream's or the gateway's side get safe words
    /// only. `message` keeps the detail (upstream names, addresses, OS errors, paths)
    /// for the access and daemon logs, under the same request id.
    pub fn client_message(&self) -> &str {
        match self.side {
            Side::Downstream => &self.message,
            Side::Upstream | Side::Internal => self.kind.safe_message(),
        }
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} side): {}",
            self.kind.code(),
            self.side,
            self.message
        )
    }
}

impl std::error::Error for ProxyError {}

/// Appends a complete error response (head and JSON body) to `out`. A 401 challenges
/// with the gateway's signature scheme unless `extra_headers` names its own
/// `www-authenticate` (the admin API's Bearer).
/// `head_request`: the answer to HEAD has the same head but no body (the Content-Length
/// still says how long the body would be), or the client would read the body as the next
/// response.
pub fn write_error_response(
    out: &mut Vec<u8>,
    kind: ErrorKind,
    message: &str,
    request_id: &str,
    close: bool,
    head_request: bool,
    extra_headers: &[u8],
) {
    let mut body = String::with_capacity(96 + message.len() + request_id.len());
    body.push_str("{\"error\":{\"code\":\"");
    body.push_str(kind.code());
    body.push_str("\",\"message\":\"");
    push_json_escaped(&mut body, message);
    body.push_str("\",\"request_id\":\"");
    push_json_escaped(&mut body, request_id);
    body.push_str("\"}}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {}\r\n{}{}",
        kind.status(),
        kind.reason(),
        body.len(),
        request_id,
        if kind == ErrorKind::Unauthorized && !names_challenge(extra_headers) {
            "www-authenticate: RG-HMAC-SHA256\r\n"
        } else {
            ""
        },
        if close { "connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

fn names_challenge(headers: &[u8]) -> bool {
    headers
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 17 && line[..17].eq_ignore_ascii_case(b"www-authenticate:"))
}

pub(crate) fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_code_message_and_request_id() {
        let mut out = Vec::new();
        write_error_response(
            &mut out,
            ErrorKind::RouteNotFound,
            "no route for \"/x\"",
            "abc",
            false,
            false,
            b"",
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "route_not_found");
        assert_eq!(v["error"]["message"], "no route for \"/x\"");
        assert_eq!(v["error"]["request_id"], "abc");
    }
}
