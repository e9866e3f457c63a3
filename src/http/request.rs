//! Request heads: httparse does the tokenizing; this file adds every RFC 9112 rule a
//! proxy needs to be safe from request smuggling, and the limits (414, 431).

use std::mem::MaybeUninit;

use httparse::Header;

use super::headers::ConnectionOptions;
use super::{has_bare_lf, parse_content_length, Framing, HttpLimits};
use crate::error::{ErrorKind, ProxyError};

/// A parsed, validated request head. Borrows the connection's read buffer.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    /// The origin-form target: path and optional query (absolute-form is reduced to it).
    pub target: &'b str,
    pub http10: bool,
    pub headers: &'h [Header<'b>],
    /// Bytes of the head including the final empty line.
    pub head_len: usize,
    pub framing: Framing,
    /// Host from the absolute-form target, else the Host header; empty when absent (HTTP/1.0).
    pub host: &'b [u8],
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub connection: ConnectionOptions,
}

fn bad(message: &'static str) -> ProxyError {
    ProxyError::client(ErrorKind::BadRequest, message)
}

/// Parses a request head from the start of `buf`.
/// `Ok(None)`: incomplete, read more (unless `buf` already holds `max_header_bytes`, which
/// is reported as 431/414 here).
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut [MaybeUninit<Header<'b>>],
    limits: &HttpLimits,
) -> Result<Option<RequestHead<'h, 'b>>, ProxyError> {
    let mut req = httparse::Request::new(&mut []);
    let max = limits.max_headers.min(storage.len());
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut storage[..max],
    );
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(buf, limits).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::client(
                ErrorKind::HeadersTooLarge,
                "too many header fields",
            ))
        }
        Err(httparse::Error::HeaderName) => {
            return Err(bad(
                "invalid header name (whitespace before ':' is not allowed)",
            ))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(bad("invalid character in a header value"))
        }
        Err(httparse::Error::NewLine) => {
            return Err(bad("invalid line ending (obs-fold is not allowed)"))
        }
        Err(httparse::Error::Version) => {
            return Err(bad("unsupported HTTP version: only HTTP/1.0 and HTTP/1.1"))
        }
        Err(httparse::Error::Token) => return Err(bad("invalid request method")),
        Err(_) => return Err(bad("malformed request line")),
    };
    if head_len > limits.max_header_bytes {
        return Err(ProxyError::client(
            ErrorKind::HeadersTooLarge,
            "request head is larger than the limit",
        ));
    }
    if has_bare_lf(&buf[..head_len]) {
        return Err(bad("bare LF line ending in the request head"));
    }
    let (Some(method), Some(raw_target), Some(version)) = (req.method, req.path, req.version)
    else {
        return Err(bad("malformed request line"));
    };
    if raw_target.contains('#') {
        // A fragment is never sent (RFC 9112 3.2); forwarded raw, a '#' in the query
        // would be read by the upstream as the end of it.
        return Err(bad("fragment ('#') in the request target"));
    }
    if raw_target.len() > limits.max_uri_bytes {
        return Err(ProxyError::client(
            ErrorKind::UriTooLong,
            "request target is longer than the limit",
        ));
    }
    let http10 = version == 0;
    let headers: &'h [Header<'b>] = req.headers;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut host_header: Option<&'b [u8]> = None;
    let mut connection = ConnectionOptions::default();
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(bad("duplicate Content-Length"));
            }
            content_length =
                Some(parse_content_length(h.value).ok_or_else(|| bad("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a single, final "chunked" is accepted: any other coding (or "chunked"
            // twice) is a framing another hop could read differently.
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(bad(
                        "unsupported Transfer-Encoding: only a single \"chunked\" is accepted",
                    ));
                }
                chunked = true;
            }
            if !chunked {
                return Err(bad("empty Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(bad("repeated Host header"));
            }
            if !is_valid_host(h.value) {
                return Err(bad("invalid Host header"));
            }
            host_header = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        } else if name.eq_ignore_ascii_case("expect") && !http10 {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ProxyError::client(
                    ErrorKind::ExpectationFailed,
                    "only \"Expect: 100-continue\" is supported",
                ));
            }
            expect_continue = true;
        }
    }
    let framing = match (content_length, chunked) {
        (Some(_), true) => return Err(bad("both Content-Length and Transfer-Encoding")),
        (_, true) if http10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (_, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::None,
        (Some(n), false) => Framing::Length(n),
    };
    if host_header.is_none() && !http10 {
        return Err(bad("missing Host header"));
    }
    if method == "CONNECT" {
        return Err(ProxyError::client(
            ErrorKind::NotImplemented,
            "CONNECT is not supported",
        ));
    }
    let (target, host) = match split_absolute_form(raw_target)? {
        Some((authority, path)) => (path, authority),
        None => (raw_target, host_header.unwrap_or(b"")),
    };
    let keep_alive = !connection.close && (!http10 || connection.keep_alive);
    Ok(Some(RequestHead {
        method,
        target,
        http10,
        headers,
        head_len,
        framing,
        host,
        keep_alive,
        expect_continue,
        connection,
    }))
}

/// Whether a partial head that grew from `scanned` to `data.len()` bytes is worth
/// parsing again: on the first bytes (garbage is refused at once), when a new line ended
/// (the head may be complete, or a header line bad), or when a size limit was crossed.
/// Skipping the rest keeps a head trickled in byte by byte linear in cost, not quadratic.
pub fn worth_parsing(data: &[u8], scanned: usize, limits: &HttpLimits) -> bool {
    let uri_limit = limits.max_uri_bytes + 16;
    scanned == 0
        || memchr::memchr(b'\n', &data[scanned.min(data.len())..]).is_some()
        || (scanned <= uri_limit && data.len() > uri_limit)
        || data.len() >= limits.max_header_bytes
}

/// An incomplete head is fine until it reaches the size limit.
fn partial(buf: &[u8], limits: &HttpLimits) -> Result<(), ProxyError> {
    let line_done = memchr::memchr(b'\n', buf).is_some();
    if !line_done && buf.len() > limits.max_uri_bytes + 16 {
        return Err(ProxyError::client(
            ErrorKind::UriTooLong,
            "request target is longer than the limit",
        ));
    }
    if buf.len() >= limits.max_header_bytes {
        return Err(ProxyError::client(
            ErrorKind::HeadersTooLarge,
            "request head is larger than the limit",
        ));
    }
    Ok(())
}

/// Characters of a Host value: reg-name, IPv4, `[IPv6]`, and `:port`. Rejecting the
/// rest (`/`, `@`, spaces, commas...) keeps routing decisions unambiguous.
/// Host syntax (RFC 9110 7.2, RFC 3986 3.2.2): a reg-name or IPv4 address, or an IPv6
/// literal in brackets, then an optional `:port`. Anything looser (`a:b:c`, `host:x`)
/// would let the router and the upstream read different hosts. Empty is allowed (RFC
/// 9112 3.2: a target without an authority).
fn is_valid_host(v: &[u8]) -> bool {
    let (name_ok, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &v[1..end];
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &v[end + 1..])
    } else {
        let split = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..split];
        let ok = name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'%'));
        (ok, &v[split..])
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    name_ok && port_ok
}

/// `http://host:port/path?q` -> `(host:port, /path?q)`. Origin-form targets give `None`.
fn split_absolute_form(target: &str) -> Result<Option<(&[u8], &str)>, ProxyError> {
    if target.starts_with('/') {
        return Ok(None);
    }
    let rest =
        match target.find("://") {
            Some(i)
                if target[..i].eq_ignore_ascii_case("http")
                    || target[..i].eq_ignore_ascii_case("https") =>
            {
                &target[i + 3..]
            }
            _ => return Err(bad(
                "request target must be origin-form (/path) or absolute-form (http://host/path)",
            )),
        };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || !is_valid_host(authority.as_bytes()) {
        return Err(bad("invalid authority in the request target"));
    }
    // "http://host?q" has an empty path; the origin-form of it is "/?q". Only "/" is
    // representable without allocating, so a bare query is rejected rather than guessed.
    match path.as_bytes().first() {
        None => Ok(Some((authority.as_bytes(), "/"))),
        Some(b'/') => Ok(Some((authority.as_bytes(), path))),
        _ => Err(bad("absolute-form target with a query but no path")),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
