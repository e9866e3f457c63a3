//! Degradation: a route's static fallback response, given instead of an error when its
//! breaker is open or its upstream fails. It carries `x-ringgate-fallback: <code>` (the
//! error it stands in for), so clients and logs can tell it from a real answer.

use super::conn::{send_scratch, ClientConn};
use super::forward::After;
use super::prepare::Prepared;
use crate::config::Fallback;
use crate::error::ErrorKind;
use crate::http::headers::{push_decimal, write_header};
use crate::snapshot::Snapshot;

pub async fn respond_fallback(
    c: &mut ClientConn,
    snap: &Snapshot,
    fallback: &Fallback,
    p: &Prepared,
    instead_of: ErrorKind,
    keep_alive: bool,
) -> After {
    c.status = fallback.status;
    c.scratch.clear();
    render(&mut c.scratch, fallback, p, instead_of, keep_alive);
    c.log.error = Some(instead_of.code());
    c.log.bytes = c.scratch.len() as u64;
    send_scratch(c, snap, keep_alive).await
}

fn render(out: &mut Vec<u8>, f: &Fallback, p: &Prepared, instead_of: ErrorKind, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, f.status as u64);
    out.push(b' ');
    out.extend_from_slice(crate::http::reason_phrase(f.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_body = f.status != 204 && f.status != 304;
    if has_body {
        write_header(out, "content-type", f.content_type.as_bytes());
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, f.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &f.headers {
        write_header(out, name, value.as_bytes());
    }
    write_header(out, "x-ringgate-fallback", instead_of.code().as_bytes());
    write_header(out, "x-request-id", p.request_id.as_bytes());
    p.limit_headers.write_to(out);
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if has_body && !p.is_head {
        out.extend_from_slice(&f.body);
    }
}
