//! Responses the gateway makes itself: errors (status and JSON error body, mapped in
//! `error` and written by `write_error_response`) and responses a filter made (a CORS
//! preflight, a fallback). Each carries `Date`, `X-Request-Id` and, on a routed request,
//! the headers the route's chain adds; then the connection is kept or closed lingering.

use std::time::{Duration, Instant};

use super::client::{After, ClientConn, CLIENT_BUF};
use super::io::write_all;
use crate::config::ServerConfig;
use crate::error::ProxyError;
use crate::filters::{MadeResponse, Reply, RequestCtx, RouteChain};
use crate::http::date::write_date_header;
use crate::http::error_response::write_error_response;
use crate::http::headers::{push_decimal, write_header};

/// How an answer goes out.
pub struct Answer<'a, 'g> {
    pub request_id: &'a str,
    /// The connection may carry on after this response.
    pub keep_alive: bool,
    /// The request was HEAD: the response gets no body.
    pub is_head: bool,
    /// The routed request's chain and context, whose response headers go along.
    pub chain: Option<(&'a RouteChain, &'a RequestCtx<'g>)>,
}

/// What the gateway's own answers always say about themselves.
const OWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "date",
    "x-request-id",
    "connection",
    "www-authenticate",
];

impl Answer<'_, '_> {
    /// Header lines the chain adds to any response on its route, except those naming a
    /// header the answer already carries (in `present`, or one of `OWN_HEADERS`): a
    /// route's edits never contradict what the gateway's answer says about itself, and
    /// never send a header twice.
    fn chain_headers(&self, present: &[u8], out: &mut Vec<u8>) {
        let Some((chain, ctx)) = self.chain else {
            return;
        };
        let mut lines = Vec::new();
        chain.on_response(ctx, &mut lines);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let named = |l: &[u8]| {
                l.len() > name.len()
                    && l[name.len()] == b':'
                    && l[..name.len()].eq_ignore_ascii_case(name)
            };
            let own = OWN_HEADERS
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(name));
            if !own && !present.split_inclusive(|&b| b == b'\n').any(named) {
                out.extend_from_slice(line);
            }
        }
    }
}

/// Sends `reply` and says whether the connection carries on.
pub async fn respond(
    c: &mut ClientConn,
    server: &ServerConfig,
    reply: &Reply,
    a: Answer<'_, '_>,
) -> After {
    match reply {
        Reply::Error(error) => respond_error(c, server, error, a).await,
        Reply::Made(made) => respond_made(c, server, made, a).await,
    }
}

/// The JSON error response. The connection stays open only when the error leaves the
/// byte stream in a known state.
pub async fn respond_error(
    c: &mut ClientConn,
    server: &ServerConfig,
    error: &ProxyError,
    a: Answer<'_, '_>,
) -> After {
    let keep_alive = a.keep_alive && !error.kind.closes_connection();
    c.status = error.kind.status();
    let mut extra = Vec::with_capacity(128);
    let own = error.headers.as_deref().unwrap_or_default();
    extra.extend_from_slice(own);
    write_date_header(&mut extra);
    a.chain_headers(own, &mut extra);
    c.scratch.clear();
    write_error_response(
        &mut c.scratch,
        error.kind,
        error.client_message(),
        a.request_id,
        !keep_alive,
        a.is_head,
        &extra,
    );
    c.log.error = Some(error.kind.code());
    c.log.detail = Some(error.message.clone());
    c.log.bytes = c.scratch.len() as u64;
    send_scratch(c, server, keep_alive).await
}

async fn respond_made(
    c: &mut ClientConn,
    server: &ServerConfig,
    made: &MadeResponse,
    a: Answer<'_, '_>,
) -> After {
    c.status = made.status;
    let out = &mut c.scratch;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(made.status));
    out.push(b' ');
    out.extend_from_slice(crate::http::reason_phrase(made.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&made.headers);
    let has_body = !matches!(made.status, 100..=199 | 204 | 304);
    if has_body {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, made.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    write_date_header(out);
    write_header(out, "x-request-id", a.request_id.as_bytes());
    a.chain_headers(&made.headers, out);
    if !a.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if has_body && !a.is_head {
        out.extend_from_slice(&made.body);
    }
    c.log.error = made.instead_of;
    c.log.bytes = c.scratch.len() as u64;
    send_scratch(c, server, a.keep_alive).await
}

/// Sends the complete response in `c.scratch`; then keeps the connection or closes it
/// (lingering, so the response is not lost to a reset).
async fn send_scratch(c: &mut ClientConn, server: &ServerConfig, keep_alive: bool) -> After {
    let sent = write_all(&mut c.stream, &mut c.scratch, server.body_timeout).await;
    c.log.answered_at = Some(Instant::now());
    c.scratch.clear();
    if keep_alive && sent.is_ok() {
        return After::KeepAlive;
    }
    if sent.is_ok() {
        linger_close(c).await;
    }
    // Lingering said the goodbye (`close_notify` and FIN); a failed write has none to say.
    After::Drop
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy
/// the error response before the client reads it (a client still uploading a body it was
/// refused, say). So: shut down our side, then read and discard for a bounded time.
async fn linger_close(c: &mut ClientConn) {
    use super::wire::Wire;
    if c.stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut discarded = 0usize;
    while discarded < 1 << 20 {
        c.rbuf.consume(c.rbuf.len());
        let left = deadline.saturating_duration_since(Instant::now());
        match c
            .rbuf
            .read_from(
                &mut c.stream,
                CLIENT_BUF,
                left.max(Duration::from_millis(1)),
            )
            .await
        {
            Ok(n) if n > 0 && !left.is_zero() => discarded += n,
            _ => return,
        }
    }
}
