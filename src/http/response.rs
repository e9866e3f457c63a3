//! Upstream response heads, held to the same strictness as requests: anything ambiguous
//! becomes a 502 for the client and a closed upstream connection, never a desync.

use std::mem::MaybeUninit;

use httparse::Header;

use super::headers::ConnectionOptions;
use super::{has_bare_lf, parse_content_length, Framing};
use crate::error::{ErrorKind, ProxyError};

#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub http10: bool,
    pub headers: &'h [Header<'b>],
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream connection may be reused after this response.
    pub keep_alive: bool,
    pub connection: ConnectionOptions,
}

fn malformed(message: &'static str) -> ProxyError {
    ProxyError::upstream(ErrorKind::UpstreamUnavailable, message)
}

/// Parses a response head. `request_was_head`: the response to HEAD never has a body.
/// Informational (1xx) heads are returned as they are; the caller skips them.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut [MaybeUninit<Header<'b>>],
    request_was_head: bool,
    max_header_bytes: usize,
) -> Result<Option<ResponseHead<'h, 'b>>, ProxyError> {
    let mut res = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, storage)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_header_bytes => {
            return Err(malformed("upstream response head is larger than the limit"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(malformed("malformed upstream response head")),
    };
    if head_len > max_header_bytes {
        return Err(malformed("upstream response head is larger than the limit"));
    }
    if has_bare_lf(&buf[..head_len]) {
        return Err(malformed(
            "bare LF line ending in the upstream response head",
        ));
    }
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err(malformed("malformed upstream status line"));
    };
    // Three digits, but 000-099 is no status (RFC 9110 15): taken for an informational
    // one it would be skipped, and whatever follows read as the response (found by the
    // `response_head` fuzz target).
    if status < 100 {
        return Err(malformed("upstream status code below 100"));
    }
    let headers: &'h [Header<'b>] = res.headers;
    let http10 = version == 0;
    let mut content_length = None;
    let mut chunked = false;
    let mut connection = ConnectionOptions::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(malformed(
                    "duplicate Content-Length in the upstream response",
                ));
            }
            content_length = Some(
                parse_content_length(h.value)
                    .ok_or_else(|| malformed("invalid Content-Length in the upstream response"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(malformed(
                        "unsupported Transfer-Encoding in the upstream response",
                    ));
                }
                chunked = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        }
    }
    if chunked && http10 {
        // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(malformed(
            "Transfer-Encoding in an HTTP/1.0 upstream response",
        ));
    }
    if content_length.is_some() && chunked {
        return Err(malformed(
            "both Content-Length and Transfer-Encoding in the upstream response",
        ));
    }
    let bodiless = request_was_head || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else {
        match content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive =
        framing != Framing::UntilClose && !connection.close && (!http10 || connection.keep_alive);
    Ok(Some(ResponseHead {
        status,
        reason: res.reason.unwrap_or(""),
        http10,
        headers,
        head_len,
        framing,
        keep_alive,
        connection,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head: bool) -> Result<Option<(u16, Framing, bool)>, ProxyError> {
        let mut storage = [const { MaybeUninit::uninit() }; 32];
        parse_response(raw, &mut storage, head, 8192)
            .map(|o| o.map(|r| (r.status, r.framing, r.keep_alive)))
    }

    #[test]
    fn framing_rules() {
        let ok = |raw: &[u8], head| parse(raw, head).unwrap().unwrap();
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            (200, Framing::None, true)
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (200, Framing::Chunked, true)
        );
        assert_eq!(
            ok(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (204, Framing::None, true)
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false
            ),
            (304, Framing::None, true)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (200, Framing::Length(1), false)
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (200, Framing::Length(1), false)
        );
        assert_eq!(
            ok(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            (100, Framing::None, true)
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Len", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn malformed_responses_are_rejected() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
            b"garbage garbage\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            let err = parse(raw, false).unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::UpstreamUnavailable,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
