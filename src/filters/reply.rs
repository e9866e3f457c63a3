//! A response the gateway gives instead of forwarding: an error (mapped to its status and
//! the JSON error body in one place, `http::error_response`) or a complete response a
//! filter made (a CORS preflight, a fallback).

use std::sync::Arc;

use crate::error::ProxyError;

pub enum Reply {
    Error(ProxyError),
    Made(MadeResponse),
}

/// A response made by a filter. The writer adds the framing, `Date`, `X-Request-Id`,
/// the chain's response headers and `Connection`.
pub struct MadeResponse {
    pub status: u16,
    /// Complete header lines (`name: value\r\n`), `Content-Type` included when there is
    /// a body.
    pub headers: Vec<u8>,
    pub body: Arc<[u8]>,
    /// The error code it stands in for (a fallback), for metrics and the access log.
    pub instead_of: Option<&'static str>,
}

impl From<ProxyError> for Reply {
    fn from(error: ProxyError) -> Self {
        Reply::Error(error)
    }
}
