//! One access-log line: a JSON object per request (see `access_log`), written straight
//! into the worker's log buffer: no allocation, no formatting machinery, and the
//! timestamp's date and time re-rendered only when the second changes.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client::LogFields;
use crate::http::headers::push_decimal;
use crate::trace::{RequestId, TraceContext};

/// What the connection loop knows about a finished request.
pub struct Finished<'a> {
    pub request_id: RequestId,
    pub trace: Option<TraceContext>,
    pub client: &'a str,
    pub app: Option<&'a str>,
    /// `""` when no route matched.
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub total: Duration,
    pub log: &'a LogFields,
    /// The connection's TLS, on a `[tls]` listener.
    pub tls: Option<&'a crate::tls::conn::TlsFacts>,
}

thread_local! {
    /// The last second rendered (`2026-11-21T09:58:20`) and its Unix time.
    static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

pub fn write_line(out: &mut Vec<u8>, r: &Finished) {
    out.extend_from_slice(b"{\"time\":\"");
    timestamp(out);
    out.extend_from_slice(b"\",\"request_id\":\"");
    out.extend_from_slice(r.request_id.as_bytes());
    out.extend_from_slice(b"\",\"trace_id\":");
    match &r.trace {
        Some(t) => quoted(out, t.trace_id_str()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client\":");
    quoted(out, r.client);
    out.extend_from_slice(b",\"app\":");
    optional(out, r.app);
    out.extend_from_slice(b",\"route\":");
    quoted(out, r.route);
    out.extend_from_slice(b",\"method\":");
    quoted(out, r.method);
    out.extend_from_slice(b",\"path\":");
    quoted(out, r.path);
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(r.status));
    out.extend_from_slice(b",\"bytes\":");
    push_decimal(out, r.log.bytes);
    out.extend_from_slice(b",\"upstream\":");
    match r.log.upstream {
        Some(a) => {
            out.push(b'"');
            let _ = write!(out, "{a}");
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_ms\":");
    match r.log.upstream_time {
        Some(d) => millis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"total_ms\":");
    millis(out, r.total);
    out.extend_from_slice(b",\"error\":");
    optional(out, r.log.error);
    out.extend_from_slice(b",\"detail\":");
    optional(out, r.log.detail.as_deref());
    if let Some(tls) = r.tls {
        out.extend_from_slice(b",\"tls\":{\"version\":");
        quoted(out, tls.version);
        out.extend_from_slice(b",\"cipher\":");
        quoted(out, tls.cipher);
        out.extend_from_slice(b",\"sni\":");
        optional(out, tls.sni.as_deref());
        out.extend_from_slice(b",\"alpn\":");
        optional(out, tls.alpn.as_deref());
        out.extend_from_slice(b",\"resumed\":");
        out.extend_from_slice(if tls.resumed { b"true" } else { b"false" });
        out.extend_from_slice(b",\"client\":");
        match &tls.client {
            None => out.extend_from_slice(b"null"),
            Some(id) => {
                out.extend_from_slice(b"{\"sha256\":");
                quoted(out, &id.sha256_hex);
                out.extend_from_slice(b",\"subject\":");
                quoted(out, &id.subject);
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// `2026-11-21T09:58:20.745Z`
fn timestamp(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cell| {
        let mut second = cell.borrow_mut();
        if second.0 != now.as_secs() {
            let mut text = Vec::with_capacity(24);
            crate::access_log::rfc3339_millis(
                UNIX_EPOCH + Duration::from_secs(now.as_secs()),
                &mut text,
            );
            // Keep `YYYY-MM-DDTHH:MM:SS`; the milliseconds are added per line.
            text.truncate(19);
            *second = (now.as_secs(), text);
        }
        out.extend_from_slice(&second.1);
    });
    let ms = now.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Milliseconds with three decimals (microsecond precision).
fn millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_decimal(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn quoted(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    // Most values need no escaping: copy them whole.
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(v.as_bytes());
    } else {
        let mut escaped = String::new();
        crate::http::error_response::push_json_escaped(&mut escaped, v);
        out.extend_from_slice(escaped.as_bytes());
    }
    out.push(b'"');
}

fn optional(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => quoted(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_with_escapes_and_times() {
        let r = Finished {
            request_id: RequestId::from_header(b"r-1").unwrap(),
            trace: None,
            client: "10.0.0.1",
            app: Some("app\"x"),
            route: "",
            method: "GET",
            path: "/a\\b\n",
            status: 502,
            total: Duration::from_micros(12_345),
            log: &LogFields {
                upstream: Some("127.0.0.1:9".parse().unwrap()),
                upstream_time: Some(Duration::from_micros(7)),
                bytes: 10,
                error: Some("upstream_unavailable"),
                detail: Some("connect to 127.0.0.1:9 failed".into()),
                answered_at: None,
            },
            tls: Some(&crate::tls::conn::TlsFacts {
                version: "TLSv1_3",
                cipher: "TLS13_AES_128_GCM_SHA256",
                sni: Some("a\"b.example".into()),
                alpn: None,
                resumed: true,
                client: Some(crate::tls::identity::ClientIdentity {
                    sha256: [0xab; 32],
                    sha256_hex: "ab".repeat(32),
                    subject: "CN=\"x\"".into(),
                }),
            }),
        };
        let mut out = Vec::new();
        write_line(&mut out, &r);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["app"], "app\"x");
        assert_eq!(v["tls"]["sni"], "a\"b.example");
        assert_eq!(v["tls"]["alpn"], serde_json::Value::Null);
        assert_eq!(v["tls"]["resumed"], true);
        assert_eq!(v["tls"]["client"]["sha256"], "ab".repeat(32));
        assert_eq!(v["tls"]["client"]["subject"], "CN=\"x\"");
        assert_eq!(v["path"], "/a\\b\n");
        assert_eq!(v["total_ms"].as_f64(), Some(12.345));
        assert_eq!(v["upstream_ms"].as_f64(), Some(0.007));
        assert_eq!(v["upstream"], "127.0.0.1:9");
        assert_eq!(v["detail"], "connect to 127.0.0.1:9 failed");
        let time = v["time"].as_str().unwrap();
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z'));
    }
}
