//! The head the upstream receives: the request line with the route's prefix rewrite
//! applied to the normalized path, the client's end-to-end headers (hop-by-hop ones and
//! those the chain owns dropped), `Host`, the chain's own headers and the body framing.

use std::net::IpAddr;

use super::balance::hash_key;
use super::request::Request;
use crate::config::{HashOn, RouteConfig};
use crate::filters::RequestView;
use crate::http::headers::{must_drop, push_decimal, write_header};
use crate::http::Framing;

/// Writes the upstream request head into `out` (cleared first). `fallback_host`: the
/// Host to send when the client sent none (HTTP/1.0): the upstream's name, as nginx
/// does, because an HTTP/1.1 request without Host is invalid.
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    view: &RequestView,
    req: &Request,
    route: &RouteConfig,
    fallback_host: &str,
) {
    out.clear();
    write_request_line(out, view.method, route, view.path);
    // On a signed route the upstream gets the query exactly as signed (canonical), never
    // a raw form it might parse differently ('+', ';', duplicate order, bare names).
    match (&req.ctx.forward_query, view.query) {
        (Some(signed), _) => out.extend_from_slice(signed.as_bytes()),
        (None, Some(raw)) => {
            out.push(b'?');
            out.extend_from_slice(raw.as_bytes());
        }
        (None, None) => {}
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in view.headers {
        let name = h.name;
        let framing_or_host = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("host");
        if framing_or_host
            || must_drop(view.headers, &req.connection, name)
            || req.chain.drops_request_header(name, view, &req.ctx)
        {
            continue;
        }
        write_header(out, name, h.value);
    }
    let host = if view.authority.is_empty() {
        fallback_host.as_bytes()
    } else {
        view.authority
    };
    write_header(out, "host", host);
    req.chain.on_upstream_request(view, &req.ctx, out);
    match req.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// `METHOD /upstream/path`, with the route's prefix rewrite applied to the normalized
/// path, never to the raw one.
fn write_request_line(out: &mut Vec<u8>, method: &str, route: &RouteConfig, path: &str) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let mut rest = path;
    if let Some(strip) = route.strip_prefix.as_deref() {
        if let Some(r) = path.strip_prefix(strip) {
            if r.is_empty() || r.starts_with('/') {
                rest = r;
            }
        }
    }
    // `/api` -> `/internal` and `/api/x` -> `/internal/x`: the add prefix replaces the
    // stripped one exactly; only a path that would otherwise be empty becomes "/".
    let add = route.add_prefix.as_deref().unwrap_or("");
    out.extend_from_slice(add.as_bytes());
    if rest.is_empty() && add.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(rest.as_bytes());
    }
}

/// The key `hash` balancing picks a target by.
pub fn request_hash_key(view: &RequestView, on: &HashOn, client_ip: IpAddr) -> u64 {
    match on {
        HashOn::ClientIp => match client_ip {
            IpAddr::V4(v4) => hash_key(&v4.octets()),
            IpAddr::V6(v6) => hash_key(&v6.octets()),
        },
        HashOn::Header(name) => view.header(name).map_or(0, hash_key),
    }
}
