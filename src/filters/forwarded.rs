//! What the gateway states about a request to the upstream, on every route: the client
//! address (`X-Forwarded-For`), scheme and host (`X-Forwarded-Proto`, `-Host`), the
//! request id (`X-Request-Id`), the W3C trace (`traceparent`, the client's `tracestate`
//! with the trace it belongs to) and the authenticated app (`X-Rg-App`).
//!
//! The client's own versions of these headers stop here: a client must never pass for
//! another address, request or app. `X-Rg-*` belong to the gateway (the signature
//! headers end here, and a client's `X-Rg-App` is never an identity). Only a trusted
//! proxy (`server.trusted_proxies`) is believed about earlier hops: its `X-Forwarded-For`
//! list is kept (with its own address appended), its `X-Forwarded-Proto` and `-Host`
//! stand, and its `Forwarded` and `X-Real-IP` pass.

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::http::headers::write_header;
use crate::trace::TraceContext;

pub struct Forwarded;

pub fn build(_: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(Some(Filter::Forwarded(Forwarded)))
}

/// `X-Rg-*`, also spelled with underscores (`X_Rg_App`): CGI-style upstreams map both
/// spellings to the same variable, so either could pass for the gateway's identity.
pub fn is_gateway_header(name: &str) -> bool {
    name.len() >= 5
        && name
            .bytes()
            .take(5)
            .map(|b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .eq(*b"x-rg-")
}

/// The headers this filter writes itself, whatever the client sent.
pub fn is_forwarding_header(name: &str) -> bool {
    is_gateway_header(name)
        || name.eq_ignore_ascii_case("x-request-id")
        || name.eq_ignore_ascii_case("x-forwarded-for")
        || name.eq_ignore_ascii_case("x-forwarded-proto")
        || name.eq_ignore_ascii_case("x-forwarded-host")
        || name.eq_ignore_ascii_case("traceparent")
}

impl Phases for Forwarded {
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        ctx.trace = Some(TraceContext::from_headers(req.headers, env.ids));
        Flow::Continue
    }

    fn drops_request_header(&self, name: &str, req: &RequestView, ctx: &RequestCtx) -> bool {
        let continued = ctx.trace.is_some_and(|t| t.continued);
        is_forwarding_header(name)
            // A trace's state goes along only with the trace it belongs to.
            || (!continued && name.eq_ignore_ascii_case("tracestate"))
            // Other ways of claiming a client address would let a client spoof one.
            || (!req.peer_trusted
                && (name.eq_ignore_ascii_case("forwarded") || name.eq_ignore_ascii_case("x-real-ip")))
    }

    fn on_upstream_request(&self, req: &RequestView, ctx: &RequestCtx, out: &mut Vec<u8>) {
        let vouched = |name: &str| req.peer_trusted.then(|| req.header(name)).flatten();
        let host = vouched("x-forwarded-host").unwrap_or(req.authority);
        if !host.is_empty() {
            write_header(out, "x-forwarded-host", host);
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if req.peer_trusted {
            // Every X-Forwarded-For line, in order, is one list (RFC 9110 5.3).
            for h in req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
        // Each hop appends the address it took the connection from.
        out.extend_from_slice(req.peer_text.as_bytes());
        let scheme = match vouched("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
            Some(p) if p.eq_ignore_ascii_case(b"http") => "http",
            _ => req.scheme,
        };
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(scheme.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_header(out, "x-request-id", ctx.request_id.as_bytes());
        if let Some(trace) = &ctx.trace {
            trace.write_header(out);
        }
        if let Some(app) = ctx.app_key() {
            write_header(out, "x-rg-app", app.as_bytes());
        }
    }
}
