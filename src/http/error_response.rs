//! The JSON error body every error response carries (DESIGN.md section 2), written from
//! an `ErrorKind`'s status and code. Here rather than in `error` so the error type stays a
//! leaf the codec can import.

use super::reason_phrase;
use crate::error::ErrorKind;

/// Appends a complete error response (head and JSON body) to `out`. A 401 challenges
/// with the gateway's signature scheme unless `extra_headers` names its own
/// `www-authenticate` (the admin API's Bearer).
/// `head_request`: the answer to HEAD has the same head but no body (the Content-Length
/// still says how long the body would be), or the client would read the body as the next
/// response.
pub fn write_error_response(
    out: &mut Vec<u8>,
    kind: ErrorKind,
    message: &str,
    request_id: &str,
    close: bool,
    head_request: bool,
    extra_headers: &[u8],
) {
    let mut body = String::with_capacity(96 + message.len() + request_id.len());
    body.push_str("{\"error\":{\"code\":\"");
    body.push_str(kind.code());
    body.push_str("\",\"message\":\"");
    push_json_escaped(&mut body, message);
    body.push_str("\",\"request_id\":\"");
    push_json_escaped(&mut body, request_id);
    body.push_str("\"}}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {}\r\n{}{}",
        kind.status(),
        reason_phrase(kind.status()),
        body.len(),
        request_id,
        if kind == ErrorKind::Unauthorized && !names_challenge(extra_headers) {
            "www-authenticate: RG-HMAC-SHA256\r\n"
        } else {
            ""
        },
        if close { "connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

fn names_challenge(headers: &[u8]) -> bool {
    headers
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 17 && line[..17].eq_ignore_ascii_case(b"www-authenticate:"))
}

pub(crate) fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_code_message_and_request_id() {
        let mut out = Vec::new();
        write_error_response(
            &mut out,
            ErrorKind::RouteNotFound,
            "no route for \"/x\"",
            "abc",
            false,
            false,
            b"",
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "route_not_found");
        assert_eq!(v["error"]["message"], "no route for \"/x\"");
        assert_eq!(v["error"]["request_id"], "abc");
    }
}
