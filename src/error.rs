//! The one error type of the request path, and the one place that maps errors to an HTTP
//! status and a stable code. A leaf: the JSON error body that carries them is written by
//! `http::error_response`, so the codec can use these types without a circle.

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
    /// A TLS request for a host its connection's certificate does not name (421).
    Misdirected,
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
            ErrorKind::Misdirected => 421,
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
            ErrorKind::Misdirected => "misdirected_request",
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
            ErrorKind::Misdirected => "this connection does not serve that host",
            _ => "the gateway could not handle this request",
        }
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
