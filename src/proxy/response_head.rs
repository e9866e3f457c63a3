//! The upstream's response head: read (skipping 1xx) within the response timeout,
//! checked, and rewritten into the head the client gets (hop-by-hop headers dropped, the
//! gateway's request id, a `Date` when the upstream sent none and the route chain's
//! response headers added, framing chosen for the client).

use std::mem::MaybeUninit;
use std::time::Instant;

use super::client::ClientConn;
use super::io::is_timeout;
use super::request::Request;
use super::upstream::{UpstreamConn, UPSTREAM_BUF};
use super::worker::WorkerCtx;
use crate::config::UpstreamConfig;
use crate::error::{ErrorKind, ProxyError};
use crate::http::date::write_date_header;
use crate::http::headers::{must_drop, write_header};
use crate::http::{parse_response, Framing, ResponseHead};

/// How the response travels on to the client.
pub(super) struct ResponseMeta {
    pub status: u16,
    pub framing: Framing,
    pub upstream_keep_alive: bool,
    pub client_chunked: bool,
    pub client_keep_alive: bool,
}

/// Reads the response head (skipping 1xx), checks it, and writes the client's response
/// head into `c.scratch`.
pub(super) async fn read_response_head(
    c: &mut ClientConn,
    req: &Request<'_>,
    ucfg: &UpstreamConfig,
    response_timeout: std::time::Duration,
    up: &mut UpstreamConn,
    worker: &WorkerCtx,
) -> Result<ResponseMeta, ProxyError> {
    let deadline = Instant::now() + response_timeout;
    let mut received_any = false;
    loop {
        if !up.rbuf.is_empty() {
            received_any = true;
            let mut storage = [const { MaybeUninit::uninit() }; 256];
            if let Some(head) =
                parse_response(up.rbuf.data(), &mut storage, req.is_head, UPSTREAM_BUF)?
            {
                let head_len = head.head_len;
                if head.status == 101 {
                    return Err(ProxyError::upstream(
                        ErrorKind::UpstreamUnavailable,
                        "upstream switched protocols without being asked",
                    ));
                }
                if head.status < 200 {
                    up.rbuf.consume(head_len);
                    continue;
                }
                // Drain is checked now, not when the request went out: a response finishing
                // during a drain tells the client to go elsewhere.
                let meta = write_client_head(&mut c.scratch, &head, req, worker.draining());
                up.rbuf.consume(head_len);
                return Ok(meta);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let res = up
            .rbuf
            .read_from(
                &mut up.stream,
                UPSTREAM_BUF,
                left.max(std::time::Duration::from_millis(1)),
            )
            .await;
        let err = match res {
            Ok(n) if n > 0 => continue,
            Ok(_) => ProxyError::upstream(
                ErrorKind::UpstreamUnavailable,
                format!(
                    "upstream {:?} closed the connection before a complete response",
                    ucfg.name
                ),
            ),
            Err(e) if is_timeout(&e) => {
                return Err(ProxyError::upstream(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "upstream {:?} did not respond within {:?}",
                        ucfg.name, response_timeout
                    ),
                ))
            }
            Err(e) => ProxyError::upstream(
                ErrorKind::UpstreamUnavailable,
                format!("upstream {:?}: reading the response failed: {e}", ucfg.name),
            ),
        };
        // Nothing at all came back: the request may be sent again (see `exchange`: on a
        // pooled connection the peer most likely closed it while it sat idle).
        return Err(if !received_any && req.retry_safe {
            err.retryable()
        } else {
            err
        });
    }
}

fn write_client_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    req: &Request<'_>,
    draining: bool,
) -> ResponseMeta {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for h in head.headers {
        // The client gets the gateway's request id, the one in its logs and errors.
        if must_drop(head.headers, &head.connection, h.name)
            || h.name.eq_ignore_ascii_case("x-request-id")
            || req.chain.drops_response_header(h.name)
        {
            continue;
        }
        // The origin's Date is kept as it is; exactly one goes to the client.
        if h.name.eq_ignore_ascii_case("date") {
            if dated {
                continue;
            }
            dated = true;
        }
        // Content-Length is rewritten below when there is a body; without one (HEAD,
        // 304) the upstream's value describes the representation and passes through.
        if h.name.eq_ignore_ascii_case("content-length")
            && (head.framing != Framing::None || head.status == 204)
        {
            continue;
        }
        write_header(out, h.name, h.value);
    }
    if !dated {
        write_date_header(out);
    }
    write_header(out, "x-request-id", req.ctx.request_id.as_bytes());
    req.chain.on_response(&req.ctx, out);
    let mut client_chunked = false;
    let mut close_delimited = false;
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::http::headers::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked | Framing::UntilClose if !req.http10 => {
            client_chunked = true;
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        Framing::Chunked | Framing::UntilClose => close_delimited = true,
        Framing::None => {}
    }
    let client_keep_alive = req.keep_alive && !draining && !close_delimited;
    if !client_keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ResponseMeta {
        status: head.status,
        framing: head.framing,
        upstream_keep_alive: head.keep_alive,
        client_chunked,
        client_keep_alive,
    }
}

fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}
