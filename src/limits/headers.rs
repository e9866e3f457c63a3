//! What a limited route tells the client: the `RateLimit-Policy` and `RateLimit` headers
//! of the IETF httpapi draft (draft-ietf-httpapi-ratelimit-headers-08 onwards) on every
//! response, and on a refusal the 429 with `Retry-After`.
//!
//! `RateLimit-Policy: "orders.app";q=100;w=1, "orders.day";q=100000;w=86400`
//! `RateLimit: "orders.app";r=57;t=1, "orders.day";r=99811;t=40213`
//!
//! `q`/`w`: the limit's count and window in seconds; `r`: requests left (for a rate, this
//! core's tokens scaled by its share: an estimate); `t`: seconds until they are all back.

use crate::error::{ErrorKind, ProxyError};
use crate::http::headers::push_decimal;

/// Bytes first reserved for each header value: two or three policies fit.
const INITIAL_CAPACITY: usize = 128;

/// The two header values, built while the limits are checked.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    policy: Vec<u8>,
    state: Vec<u8>,
}

impl HeaderWriter {
    pub fn rate(&mut self, name: &str, per_sec: f64, burst: f64, remaining: f64) {
        let window = (burst / per_sec).round().max(1.0) as u64;
        let full_in = ((burst - remaining).max(0.0) / per_sec).ceil() as u64;
        self.push(
            name,
            burst as u64,
            window,
            remaining.max(0.0) as u64,
            full_in,
        );
    }

    pub fn quota(&mut self, name: &str, per_day: u64, remaining: u64, secs_left: u64) {
        self.push(name, per_day, 86_400, remaining, secs_left);
    }

    fn push(&mut self, name: &str, q: u64, w: u64, r: u64, t: u64) {
        for (buf, (k1, v1), (k2, v2)) in [
            (&mut self.policy, ("q", q), ("w", w)),
            (&mut self.state, ("r", r), ("t", t)),
        ] {
            if buf.is_empty() {
                // One allocation sized for a few policies, instead of a Vec grown from
                // nothing byte run by byte run on every limited request.
                buf.reserve(INITIAL_CAPACITY);
            } else {
                buf.extend_from_slice(b", ");
            }
            buf.push(b'"');
            buf.extend_from_slice(name.as_bytes());
            buf.push(b'"');
            for (k, v) in [(k1, v1), (k2, v2)] {
                buf.push(b';');
                buf.extend_from_slice(k.as_bytes());
                buf.push(b'=');
                push_decimal(buf, v);
            }
        }
    }

    pub fn clear(&mut self) {
        self.policy.clear();
        self.state.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.policy.is_empty()
    }

    /// Appends the header lines (nothing when no limit applied).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        out.extend_from_slice(b"ratelimit-policy: ");
        out.extend_from_slice(&self.policy);
        out.extend_from_slice(b"\r\nratelimit: ");
        out.extend_from_slice(&self.state);
        out.extend_from_slice(b"\r\n");
    }
}

/// A request a limit refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
    /// Whole seconds, at least 1.
    pub retry_after: u64,
    /// The refusing limit's policy, for the 429's headers.
    name: String,
    q: u64,
    w: u64,
}

impl Refusal {
    pub fn rate(name: &str, per_sec: f64, burst: f64, wait_secs: f64) -> Refusal {
        let retry_after = if wait_secs.is_finite() {
            wait_secs.ceil().max(1.0) as u64
        } else {
            // This core holds no share right now; the reconciler moves one here within a
            // few rounds.
            1
        };
        Refusal {
            kind: ErrorKind::RateLimited,
            message: format!("rate limit {name:?} exceeded; retry in {retry_after} s"),
            retry_after,
            name: name.to_owned(),
            q: burst as u64,
            w: (burst / per_sec).round().max(1.0) as u64,
        }
    }

    pub fn quota(name: &str, per_day: u64, secs_left: u64) -> Refusal {
        Refusal {
            kind: ErrorKind::QuotaExceeded,
            message: format!("daily quota {name:?} of {per_day} requests is used up"),
            retry_after: secs_left.max(1),
            name: name.to_owned(),
            q: per_day,
            w: 86_400,
        }
    }

    /// A daily quota with units left, none of them on this core yet: the reconciler
    /// moves some here within a few rounds, so the client is told to slow down for a
    /// second (`rate_limited`), not that the day's quota is gone.
    pub fn quota_pending(name: &str, per_day: u64) -> Refusal {
        Refusal {
            kind: ErrorKind::RateLimited,
            message: format!("daily quota {name:?} is being shared out; retry in 1 s"),
            retry_after: 1,
            name: name.to_owned(),
            q: per_day,
            w: 86_400,
        }
    }

    /// The 429 to send, with Retry-After and the refusing limit's headers.
    pub fn into_error(self) -> ProxyError {
        let mut headers = HeaderWriter::default();
        headers.push(&self.name, self.q, self.w, 0, self.retry_after);
        let mut extra = Vec::with_capacity(96);
        extra.extend_from_slice(b"retry-after: ");
        push_decimal(&mut extra, self.retry_after);
        extra.extend_from_slice(b"\r\n");
        headers.write_to(&mut extra);
        ProxyError::client(self.kind, self.message).with_headers(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_list_every_limit() {
        let mut h = HeaderWriter::default();
        h.rate("orders.app", 100.0, 100.0, 57.4);
        h.quota("orders.day", 100_000, 99_811, 40_213);
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ratelimit-policy: \"orders.app\";q=100;w=1, \"orders.day\";q=100000;w=86400\r\n\
             ratelimit: \"orders.app\";r=57;t=1, \"orders.day\";r=99811;t=40213\r\n"
        );
    }

    #[test]
    fn per_minute_window() {
        let mut h = HeaderWriter::default();
        h.rate("m", 2.0, 120.0, 0.0);
        let mut out = Vec::new();
        h.write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"m\";q=120;w=60"), "{text}");
        assert!(text.contains("\"m\";r=0;t=60"), "{text}");
    }

    #[test]
    fn nothing_without_limits() {
        let mut out = Vec::new();
        HeaderWriter::default().write_to(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn refusals_carry_retry_after() {
        let e = Refusal::rate("a", 10.0, 10.0, 0.05).into_error();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        let h = String::from_utf8(e.headers.clone().unwrap().into_vec()).unwrap();
        assert!(h.starts_with("retry-after: 1\r\n"), "{h}");
        assert!(h.contains("ratelimit: \"a\";r=0;t=1\r\n"), "{h}");
        let e = Refusal::quota("d", 5, 3600).into_error();
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e.message.contains("used up"));
        let e = Refusal::quota_pending("d", 5).into_error();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        let h = String::from_utf8(e.headers.clone().unwrap().into_vec()).unwrap();
        assert!(h.starts_with("retry-after: 1\r\n"), "{h}");
        assert!(h.contains("\"d\";q=5;w=86400"), "{h}");
    }
}
