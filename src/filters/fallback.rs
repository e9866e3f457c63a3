//! Degradation (`[routes.fallback]`): a static response given instead of an error when
//! the route's breaker is open or its upstream fails. It carries
//! `x-ringgate-fallback: <code>` (the error it stands in for), so clients and logs can
//! tell it from a real answer. Client-side errors (401, 429, ...) are never replaced.

use super::{BuildCtx, Filter, MadeResponse, Phases, Reply, RequestCtx};
use crate::config::ConfigError;
use crate::error::{ProxyError, Side};
use crate::http::headers::write_header;

pub struct Fallback {
    response: crate::config::Fallback,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(b.route
        .fallback
        .clone()
        .map(|response| Filter::Fallback(Fallback { response })))
}

impl Phases for Fallback {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_error(&self, error: &ProxyError, _ctx: &RequestCtx) -> Option<Reply> {
        if error.side != Side::Upstream {
            return None;
        }
        let f = &self.response;
        let mut headers = Vec::with_capacity(128);
        if f.status != 204 && f.status != 304 {
            write_header(&mut headers, "content-type", f.content_type.as_bytes());
        }
        for (name, value) in &f.headers {
            write_header(&mut headers, name, value.as_bytes());
        }
        let code = error.kind.code();
        write_header(&mut headers, "x-ringgate-fallback", code.as_bytes());
        Some(Reply::Made(MadeResponse {
            status: f.status,
            headers,
            body: f.body.clone(),
            instead_of: Some(code),
        }))
    }
}
