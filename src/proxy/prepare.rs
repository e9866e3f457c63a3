//! From a complete request head to an upstream request head: parse strictly, normalize
//! the path, route, and write the head the upstream will receive. Synchronous, so the
//! borrowed head never lives across an `.await`.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::net::IpAddr;

use super::balance::hash_key;
use super::request_id::{RequestId, RequestIdGen};
use crate::auth::cache::{Lookup, WorkerApps};
use crate::auth::check::{self, unix_now, Pending, Requirement, SignedParts};
use crate::auth::nonce::NonceCache;
use crate::config::{AppsSource, AuthMode};
use crate::config::{HashOn, UpstreamId};
use crate::error::{ErrorKind, ProxyError};
use crate::http::headers::{must_drop, push_decimal, write_header};
use crate::http::normalize::normalize_path;
use crate::http::{parse_request, Framing, RequestHead, MAX_HEADERS_LIMIT};
use crate::limits::headers::HeaderWriter;
use crate::limits::spec::{GroupBy, KeyBy};
use crate::limits::worker::{RequestFacts, WorkerLimiter};
use crate::router::{Match, RouteId};
use crate::snapshot::Snapshot;
use std::time::Instant;

/// SHA-256 of the empty body, lowercase hex.
pub const EMPTY_BODY_SHA256: [u8; 64] =
    *b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What the connection driver needs to know about a request once its head is prepared.
#[derive(Debug)]
pub struct Prepared {
    pub head_len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub is_head: bool,
    /// Safe to send twice (RFC 9110 9.2.2) when it carries no body.
    pub retry_safe: bool,
    pub http10: bool,
    pub route: RouteId,
    /// The W3C trace this request belongs to (continued or started here).
    pub trace: super::trace::TraceContext,
    /// The authenticated app's key (for the access log).
    pub app: Option<String>,
    /// The method as a metrics label index (`metrics::METHODS`).
    pub method: u8,
    pub upstream: UpstreamId,
    pub hash_key: u64,
    pub max_body: u64,
    pub request_id: RequestId,
    /// Authentication that still needs the request body's hash (auth routes with a body).
    pub pending_auth: Option<Box<Pending>>,
    /// The route's RateLimit headers for the response (empty without limits).
    pub limit_headers: HeaderWriter,
    /// Limits checked only once the pending signature checks out: the header values
    /// their keys need, copied out of the head.
    pub deferred_limits: Option<Box<DeferredLimits>>,
}

/// What a limit check after body authentication needs from the (by then consumed) head.
#[derive(Debug, Default)]
pub struct DeferredLimits {
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A request answered by the gateway itself.
#[derive(Debug)]
pub struct Rejected {
    pub error: ProxyError,
    pub request_id: RequestId,
    /// The connection can carry on after the error response.
    pub keep_alive: bool,
    /// Bytes of the rejected head, to consume before reading the next request (0 when the
    /// head did not parse; the connection then closes anyway).
    pub head_len: usize,
    /// The request was HEAD: the error response gets no body.
    pub is_head: bool,
    /// The route it matched, if it got that far (for metrics and logs).
    pub route: Option<RouteId>,
    /// The method as a metrics label index.
    pub method: u8,
}

/// Why `prepare` did not produce a request to forward.
#[derive(Debug)]
pub enum Stop {
    /// Answered by the gateway itself.
    Rejected(Rejected),
    /// The app record is being fetched: wait for `WorkerApps::changed`, then prepare the
    /// same head again.
    AwaitApp,
}

/// Per-connection facts and reusable scratch space.
pub struct PrepareCtx<'a> {
    pub client_ip: IpAddr,
    /// `client_ip` as text, formatted once per connection.
    pub client_ip_text: &'a str,
    pub ids: &'a RequestIdGen,
    pub path: &'a mut String,
    /// Replay protection shared by every worker.
    pub nonces: &'a NonceCache,
    /// The worker's app cache (Redis-backed registry only).
    pub apps: Option<&'a WorkerApps>,
    /// The request already waited for its app record (counted once in the stats).
    pub app_retry: bool,
    /// The worker's rate-limit buckets and quota grants.
    pub limiter: &'a WorkerLimiter,
}

/// `Ok(None)`: the head is not complete yet. On success the upstream head is in `out`.
// A large `Err`: refusals are the cold path, and boxing them would cost an allocation
// on every 4xx, including each 429 of a client hammering a limit.
#[allow(clippy::result_large_err)]
pub fn prepare(
    data: &[u8],
    snap: &Snapshot,
    ctx: &mut PrepareCtx<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<Prepared>, Stop> {
    let mut storage = [const { MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
    let head = match parse_request(data, &mut storage, &snap.config.server.limits) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(Stop::Rejected(Rejected {
                error,
                request_id: ctx.ids.next_id(),
                keep_alive: false,
                head_len: 0,
                is_head: false,
                route: None,
                method: crate::metrics::method_index(""),
            }))
        }
    };
    let request_id = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| RequestId::from_header(h.value))
        .unwrap_or_else(|| ctx.ids.next_id());
    let reject = |error: ProxyError| {
        Stop::Rejected(Rejected {
            keep_alive: head.keep_alive
                && !error.kind.closes_connection()
                && head.framing == Framing::None,
            head_len: head.head_len,
            is_head: head.method == "HEAD",
            error,
            request_id,
            route: None,
            method: crate::metrics::method_index(head.method),
        })
    };

    let (raw_path, query) = match head.target.find('?') {
        Some(i) => head.target.split_at(i),
        None => (head.target, ""),
    };
    normalize_path(raw_path.as_bytes(), ctx.path).map_err(|e| {
        reject(ProxyError::client(
            ErrorKind::BadRequest,
            format!("invalid request path: {e}"),
        ))
    })?;
    let route = match snap
        .router
        .lookup(head.host, head.method.as_bytes(), ctx.path)
    {
        Match::Found(id) => id,
        Match::MethodNotAllowed => {
            return Err(reject(ProxyError::client(
                ErrorKind::MethodNotAllowed,
                format!("method {} is not allowed on {}", head.method, ctx.path),
            )))
        }
        Match::NotFound => {
            return Err(reject(ProxyError::client(
                ErrorKind::RouteNotFound,
                format!("no route for {}", ctx.path),
            )))
        }
    };
    // From here on a refusal is counted on the route it matched.
    let reject = |error: ProxyError| match reject(error) {
        Stop::Rejected(mut r) => {
            r.route = Some(route);
            Stop::Rejected(r)
        }
        other => other,
    };
    let rc = snap.route(route);
    if let Framing::Length(n) = head.framing {
        if n > rc.max_body_bytes {
            return Err(reject(ProxyError::client(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body of {n} bytes exceeds the limit of {} bytes",
                    rc.max_body_bytes
                ),
            )));
        }
    }
    let mut signed_query = String::new();
    let mut limit_app: Option<std::sync::Arc<crate::auth::registry::App>> = None;
    let (identity, pending_auth) = match rc.auth {
        AuthMode::None => (None, None),
        AuthMode::Hmac => {
            let key = check::app_key(head.headers).map_err(reject)?;
            let app = match &snap.config.apps.source {
                AppsSource::File => snap.config.apps.registry.get(key).cloned(),
                AppsSource::Redis { .. } => match ctx
                    .apps
                    .map(|a| a.lookup(key, Instant::now(), !ctx.app_retry))
                {
                    Some(Lookup::Found(app)) => Some(app),
                    Some(Lookup::Unknown) | None => None,
                    // The head stays in the buffer; the connection waits for the record
                    // without blocking the worker, then prepares the request again.
                    Some(Lookup::Fetching) => return Err(Stop::AwaitApp),
                    Some(Lookup::Unavailable) => {
                        return Err(reject(ProxyError::new(
                            ErrorKind::Overloaded,
                            crate::error::Side::Internal,
                            "the app registry is unavailable; try again shortly",
                        )))
                    }
                },
            };
            let need = Requirement {
                group: rc.group.as_deref(),
                window_secs: snap.config.apps.timestamp_window.as_secs(),
            };
            let parts = SignedParts {
                method: head.method,
                path: ctx.path,
                query: query.strip_prefix('?').unwrap_or(query),
                headers: head.headers,
                client_ip: ctx.client_ip,
            };
            let now = unix_now();
            let pending = check::begin(&parts, app, &need, now).map_err(reject)?;
            let key = pending.app.key.clone();
            let q = pending.canonical_query();
            if !q.is_empty() {
                signed_query = format!("?{q}");
            }
            if head.framing == Framing::None {
                limit_app = Some(
                    pending
                        .finish(&EMPTY_BODY_SHA256, ctx.nonces, now)
                        .map_err(reject)?,
                );
                (Some(key), None)
            } else {
                // Sent only if the signature over the body checks out (forward.rs).
                (Some(key), Some(Box::new(pending)))
            }
        }
    };
    // Limits come after authentication (an unsigned request must not spend an app's
    // budget); with a body still to verify, they wait for the signature (forward.rs).
    let mut limit_headers = HeaderWriter::default();
    let mut deferred_limits = None;
    if !rc.limits.is_empty() {
        if pending_auth.is_some() {
            deferred_limits = Some(Box::new(defer_limits(rc, head.headers)));
        } else {
            let facts = RequestFacts {
                route: &rc.name,
                app: limit_app.as_deref(),
                client_ip: ctx.client_ip,
                headers: head.headers,
                unix_secs: unix_now(),
            };
            ctx.limiter
                .check(&rc.limits, &facts, Instant::now(), &mut limit_headers)
                .map_err(|refusal| reject(refusal.into_error()))?;
        }
    }
    // On a signed route the upstream gets the query exactly as signed (canonical), never
    // a raw form it might parse differently ('+', ';', duplicate order, bare names).
    let query: Cow<str> = match rc.auth {
        AuthMode::Hmac => Cow::Owned(signed_query),
        AuthMode::None => Cow::Borrowed(query),
    };
    let upstream = snap.upstream(rc.upstream);
    let hash_key = match &upstream.balance {
        crate::config::Balance::Hash(on) => request_hash_key(&head, on, ctx.client_ip),
        _ => 0,
    };

    out.clear();
    write_request_line(out, &head, rc, ctx.path, &query);
    let trace = super::trace::TraceContext::from_headers(head.headers, ctx.ids);
    let fwd = Forwarded {
        trace: &trace,
        client_ip: ctx.client_ip_text,
        trust_forwarded: snap.config.server.trust_forwarded,
        fallback_host: &upstream.name,
        request_id: &request_id,
        app: identity.as_deref(),
    };
    write_forwarded_headers(out, &head, &fwd);
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");

    let is_head = head.method == "HEAD";
    Ok(Some(Prepared {
        head_len: head.head_len,
        framing: head.framing,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        is_head,
        retry_safe: head.framing == Framing::None
            && matches!(
                head.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
        http10: head.http10,
        method: crate::metrics::method_index(head.method),
        trace,
        app: identity,
        route,
        upstream: rc.upstream,
        hash_key,
        max_body: rc.max_body_bytes,
        request_id,
        pending_auth,
        limit_headers,
        deferred_limits,
    }))
}

/// Copies the header values a route's limits key on or group by.
fn defer_limits(rc: &crate::config::RouteConfig, headers: &[httparse::Header]) -> DeferredLimits {
    let mut out = DeferredLimits::default();
    for l in &rc.limits {
        let group_header = l.groups.as_ref().and_then(|g| match &g.by {
            GroupBy::Header(h) => Some(h),
            GroupBy::App => None,
        });
        let key_header = match &l.key {
            KeyBy::Header(h) => Some(h),
            _ => None,
        };
        for name in [key_header, group_header].into_iter().flatten() {
            if let Some(h) = headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)) {
                out.headers.push((name.clone(), h.value.to_vec()));
            }
        }
    }
    out
}

/// `METHOD /upstream/path?query HTTP/1.1`, with the route's prefix rewrite applied to the
/// normalized path, never to the raw one.
fn write_request_line(
    out: &mut Vec<u8>,
    head: &RequestHead,
    rc: &crate::config::RouteConfig,
    path: &str,
    query: &str,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    let mut rest = path;
    if let Some(strip) = rc.strip_prefix.as_deref() {
        if let Some(r) = path.strip_prefix(strip) {
            if r.is_empty() || r.starts_with('/') {
                rest = r;
            }
        }
    }
    // `/api` -> `/internal` and `/api/x` -> `/internal/x`: the add prefix replaces the
    // stripped one exactly; only a path that would otherwise be empty becomes "/".
    let add = rc.add_prefix.as_deref().unwrap_or("");
    out.extend_from_slice(add.as_bytes());
    if rest.is_empty() && add.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(rest.as_bytes());
    }
    out.extend_from_slice(query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// What the gateway states about the client on the upstream request.
struct Forwarded<'a> {
    client_ip: &'a str,
    /// Keep what the client says about earlier hops (only behind a trusted LB).
    trust_forwarded: bool,
    /// Host to send when the client sent none (HTTP/1.0): the upstream's name, as nginx
    /// does, because an HTTP/1.1 request without Host is invalid.
    fallback_host: &'a str,
    request_id: &'a RequestId,
    /// The authenticated app, sent as X-Rg-App.
    app: Option<&'a str>,
    trace: &'a super::trace::TraceContext,
}

/// Copies end-to-end headers and sets Host, the X-Forwarded-* family and X-Request-Id.
fn write_forwarded_headers(out: &mut Vec<u8>, head: &RequestHead, fwd: &Forwarded) {
    for h in head.headers {
        let name = h.name;
        // X-Rg-* belong to the gateway: the signature headers stop here, and a client's
        // own X-Rg-App must never pass for an authenticated identity.
        let gateway_owned = is_gateway_header(name)
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-request-id")
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("traceparent")
            // A trace's state goes along only with the trace it belongs to.
            || (!fwd.trace.continued && name.eq_ignore_ascii_case("tracestate"));
        // Other ways of claiming a client address would let a client spoof one.
        let spoofable = !fwd.trust_forwarded
            && (name.eq_ignore_ascii_case("forwarded") || name.eq_ignore_ascii_case("x-real-ip"));
        if gateway_owned || spoofable || must_drop(head.headers, &head.connection, name) {
            continue;
        }
        write_header(out, name, h.value);
    }
    let host = if head.host.is_empty() {
        fwd.fallback_host.as_bytes()
    } else {
        head.host
    };
    write_header(out, "host", host);
    if !head.host.is_empty() {
        write_header(out, "x-forwarded-host", head.host);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if fwd.trust_forwarded {
        // Every X-Forwarded-For line, in order, is one list (RFC 9110 5.3).
        for h in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    write_header(out, "x-request-id", fwd.request_id.as_bytes());
    fwd.trace.write_header(out);
    if let Some(app) = fwd.app {
        write_header(out, "x-rg-app", app.as_bytes());
    }
}

/// `X-Rg-*`, also spelled with underscores (`X_Rg_App`): CGI-style upstreams map both
/// spellings to the same variable, so either could pass for the gateway's identity.
fn is_gateway_header(name: &str) -> bool {
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

fn request_hash_key(head: &RequestHead, on: &HashOn, client_ip: IpAddr) -> u64 {
    match on {
        HashOn::ClientIp => match client_ip {
            IpAddr::V4(v4) => hash_key(&v4.octets()),
            IpAddr::V6(v6) => hash_key(&v6.octets()),
        },
        HashOn::Header(name) => head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map_or(0, |h| hash_key(h.value)),
    }
}
