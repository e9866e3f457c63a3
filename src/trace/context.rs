//! W3C Trace Context: a request's `traceparent` is continued (same trace id, the gateway's
//! own span id as the upstream's parent, same flags) and its `tracestate` passed along;
//! a request without a valid one starts a new trace. The upstream always gets exactly
//! one `traceparent`, and the trace id is kept for the access log.

use super::request_id::{hex16, RequestIdGen};

/// The trace a request belongs to and the span the gateway adds to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: [u8; 32],
    span_id: [u8; 16],
    flags: [u8; 2],
    /// Whether the client sent a valid `traceparent` (its `tracestate` then goes along).
    pub continued: bool,
}

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.trace_id_str())
    }
}

impl TraceContext {
    /// From the request's `traceparent` headers (exactly one, valid), or a new trace.
    pub fn from_headers(headers: &[httparse::Header], ids: &RequestIdGen) -> TraceContext {
        let mut parents = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("traceparent"));
        let parsed = match (parents.next(), parents.next()) {
            (Some(h), None) => parse(h.value),
            _ => None,
        };
        let mut span_id = [0u8; 16];
        hex16(ids.next_random() | 1, &mut span_id);
        match parsed {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
                continued: true,
            },
            None => {
                let mut trace_id = [0u8; 32];
                hex16(ids.next_random() | 1, &mut trace_id[..16]);
                hex16(ids.next_random(), &mut trace_id[16..]);
                TraceContext {
                    trace_id,
                    span_id,
                    flags: *b"01",
                    continued: false,
                }
            }
        }
    }

    pub fn trace_id_str(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// `traceparent: 00-<trace id>-<gateway span id>-<flags>`
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"traceparent: 00-");
        out.extend_from_slice(&self.trace_id);
        out.push(b'-');
        out.extend_from_slice(&self.span_id);
        out.push(b'-');
        out.extend_from_slice(&self.flags);
        out.extend_from_slice(b"\r\n");
    }
}

/// Version 00: `00-` 32 hex `-` 16 hex `-` 2 hex, lowercase, ids not all zero. Later
/// versions are read the same way for their first 55 bytes, as the spec asks.
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 2])> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let shaped = v[2] == b'-' && v[35] == b'-' && v[52] == b'-';
    let valid = shaped
        && hex(version)
        && version != b"ff"
        && (version != b"00" || v.len() == 55)
        && hex(trace)
        && hex(parent)
        && hex(flags)
        && trace.iter().any(|&b| b != b'0')
        && parent.iter().any(|&b| b != b'0');
    valid.then(|| {
        let mut t = [0u8; 32];
        t.copy_from_slice(trace);
        let mut f = [0u8; 2];
        f.copy_from_slice(flags);
        (t, f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a [u8]) -> httparse::Header<'a> {
        httparse::Header { name, value }
    }

    const PARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let ids = RequestIdGen::new(7);
        let t = TraceContext::from_headers(&[header("TraceParent", PARENT)], &ids);
        assert!(t.continued);
        assert_eq!(t.trace_id_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut out = Vec::new();
        t.write_header(&mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(line.ends_with("-01\r\n"));
        assert!(
            !line.contains("00f067aa0ba902b7"),
            "the gateway's own span: {line}"
        );
    }

    #[test]
    fn anything_else_starts_a_new_trace() {
        let ids = RequestIdGen::new(7);
        let bad: [&[u8]; 7] = [
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"",
        ];
        for v in bad {
            let t = TraceContext::from_headers(&[header("traceparent", v)], &ids);
            assert!(!t.continued, "{}", String::from_utf8_lossy(v));
            assert!(
                parse(&t.trace_id_with_span()).is_some(),
                "a valid new trace"
            );
        }
        // Two of them is invalid too.
        let two = [header("traceparent", PARENT), header("traceparent", PARENT)];
        assert!(!TraceContext::from_headers(&two, &ids).continued);
        // A later version is read for its first fields.
        let v1 = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::from_headers(&[header("traceparent", v1)], &ids).continued);
        // New traces differ.
        let a = TraceContext::from_headers(&[], &ids);
        let b = TraceContext::from_headers(&[], &ids);
        assert_ne!(a.trace_id, b.trace_id);
    }

    impl TraceContext {
        fn trace_id_with_span(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.write_header(&mut out);
            out[13..out.len() - 2].to_vec()
        }
    }
}
