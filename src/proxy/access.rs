//! One access-log line: a JSON object per request (see `access_log`).

use std::time::{Duration, SystemTime};

use super::conn::LogFields;
use super::request_id::RequestId;
use super::trace::TraceContext;
use crate::error::push_json_escaped;

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
    pub log: LogFields,
}

pub fn write_line(out: &mut Vec<u8>, r: &Finished) {
    let mut s = String::with_capacity(320);
    let mut time = Vec::with_capacity(24);
    crate::access_log::rfc3339_millis(SystemTime::now(), &mut time);
    s.push_str("{\"time\":\"");
    s.push_str(std::str::from_utf8(&time).unwrap_or(""));
    s.push_str("\",\"request_id\":\"");
    s.push_str(r.request_id.as_str());
    s.push_str("\",\"trace_id\":");
    match &r.trace {
        Some(t) => quoted(&mut s, t.trace_id_str()),
        None => s.push_str("null"),
    }
    s.push_str(",\"client\":");
    quoted(&mut s, r.client);
    s.push_str(",\"app\":");
    optional(&mut s, r.app);
    s.push_str(",\"route\":");
    quoted(&mut s, r.route);
    s.push_str(",\"method\":");
    quoted(&mut s, r.method);
    s.push_str(",\"path\":");
    quoted(&mut s, r.path);
    s.push_str(&format!(
        ",\"status\":{},\"bytes\":{},\"upstream\":",
        r.status, r.log.bytes
    ));
    match r.log.upstream {
        Some(a) => quoted(&mut s, &a.to_string()),
        None => s.push_str("null"),
    }
    s.push_str(",\"upstream_ms\":");
    match r.log.upstream_time {
        Some(d) => s.push_str(&format!("{:.3}", d.as_secs_f64() * 1e3)),
        None => s.push_str("null"),
    }
    s.push_str(&format!(
        ",\"total_ms\":{:.3},\"error\":",
        r.total.as_secs_f64() * 1e3
    ));
    optional(&mut s, r.log.error);
    s.push('}');
    out.extend_from_slice(s.as_bytes());
}

fn quoted(s: &mut String, v: &str) {
    s.push('"');
    push_json_escaped(s, v);
    s.push('"');
}

fn optional(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => quoted(s, v),
        None => s.push_str("null"),
    }
}
