//! Header semantics shared by requests and responses: the `Connection` header, and which
//! headers are hop-by-hop (RFC 9110 section 7.6.1) and so never forwarded.

use httparse::Header;

/// What the `Connection` header(s) of a message say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    /// Tokens other than close/keep-alive name extra hop-by-hop headers to drop.
    pub names_other_headers: bool,
}

impl ConnectionOptions {
    pub fn add(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                self.names_other_headers = true;
            }
        }
    }
}

/// The fixed hop-by-hop set; `Transfer-Encoding` is here because the gateway re-frames
/// every body itself. `Proxy-Authorization` belongs to the client-gateway hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether `name` is listed in any `Connection` header (and so is hop-by-hop too).
pub fn named_in_connection(headers: &[Header], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| {
            h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        })
}

/// Whether a header must not be forwarded to the next hop.
pub fn must_drop(headers: &[Header], opts: &ConnectionOptions, name: &str) -> bool {
    is_hop_by_hop(name) || (opts.names_other_headers && named_in_connection(headers, name))
}

pub fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through the formatting machinery.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens() {
        let mut o = ConnectionOptions::default();
        o.add(b"Keep-Alive, X-Secret ,");
        assert!(o.keep_alive && o.names_other_headers && !o.close);
        o.add(b"CLOSE");
        assert!(o.close);
    }

    #[test]
    fn hop_by_hop_includes_connection_named_headers() {
        let headers = [Header {
            name: "Connection",
            value: b"x-internal, close",
        }];
        let mut o = ConnectionOptions::default();
        o.add(headers[0].value);
        assert!(must_drop(&headers, &o, "X-Internal"));
        assert!(must_drop(&headers, &o, "Transfer-Encoding"));
        assert!(!must_drop(&headers, &o, "Accept"));
    }
}
