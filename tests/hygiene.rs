//! Response hygiene over real sockets, both drivers: exactly one IMF-fixdate `Date` on
//! every response (forwarded or made by the gateway), upstream failures told to the
//! client in safe words with the detail in the access log under the same request id, and
//! `TRACE` refused unless a route lists it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

const KEY: &str = "app-hyg-01";
const SECRET: &str = "hygiene-secret-0001";

// ---------------------------------------------------------------- Date

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), checking
/// every part of its form, the weekday included.
fn parse_imf_fixdate(s: &str) -> Result<u64, String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bad = || format!("not an IMF-fixdate: {s:?}");
    let b = s.as_bytes();
    if b.len() != 29
        || &s[3..5] != ", "
        || b[7] != b' '
        || b[11] != b' '
        || b[16] != b' '
        || b[19] != b':'
        || b[22] != b':'
        || &s[25..] != " GMT"
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            Ok(t.parse().unwrap())
        } else {
            Err(bad())
        }
    };
    let (day, year) = (num(5..7)?, num(12..16)?);
    let (hour, min, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    let month = MONTHS
        .iter()
        .position(|m| *m == &s[8..11])
        .ok_or_else(bad)? as i64
        + 1;
    if !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if DAYS[days.rem_euclid(7) as usize] != &s[..3] {
        return Err(format!("wrong weekday in {s:?}"));
    }
    Ok((days * 86_400 + hour * 3600 + min * 60 + sec) as u64)
}

#[test]
fn the_date_parser_knows_the_form() {
    assert_eq!(
        parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
        Ok(784_111_777)
    );
    assert_eq!(
        parse_imf_fixdate("Sat, 05 Dec 2026 08:43:05 GMT"),
        Ok(1_796_460_185)
    );
    assert!(parse_imf_fixdate("Mon, 06 Nov 1994 08:49:37 GMT").is_err());
    assert!(parse_imf_fixdate("Sunday, 06-Nov-94 08:49:37 GMT").is_err());
    assert!(parse_imf_fixdate("Sun Nov  6 08:49:37 1994").is_err());
    assert!(parse_imf_fixdate("Sun, 6 Nov 1994 08:49:37 GMT").is_err());
}

/// The response's one `Date`, asserted to be an IMF-fixdate.
fn the_date(r: &Response, what: &str) -> String {
    let dates: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("date"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dates.len(), 1, "{what}: one Date, got {:?}", r.headers);
    if let Err(e) = parse_imf_fixdate(dates[0]) {
        panic!("{what}: {e}");
    }
    dates[0].to_string()
}

/// Asserts the response has one `Date` within a few seconds of now.
fn assert_dated_now(r: &Response, what: &str) {
    let date = parse_imf_fixdate(&the_date(r, what)).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        date.abs_diff(now) <= 5,
        "{what}: Date is {}s away from now ({:?})",
        date.abs_diff(now),
        r.header("date")
    );
}

/// An upstream that records requests and answers each with `head` (a complete head
/// without framing) and a 2-byte body.
fn answering_with(head: &'static str) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let raw = format!("{head}content-length: 2\r\n\r\nok");
            if !c.write(raw.as_bytes()) {
                return;
            }
        }
    })
}

/// An upstream that reads a request, then holds it until the gate opens.
fn gated() -> (Upstream, Arc<(Mutex<bool>, Condvar)>) {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let up = Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let (open, cv) = &*g;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            drop(open);
            if !c.respond(b"ok") {
                return;
            }
        }
    });
    (up, gate)
}

/// An upstream that reads a request and never answers (until the gateway hangs up).
fn stalling() -> Upstream {
    Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            while c.read_request().is_some() {}
        }
    })
}

fn write_apps(dir: &Path) -> String {
    write_apps_file(
        dir,
        &format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\n"),
    )
}

fn every_response_carries_one_date(driver: Driver) {
    let dir = temp_dir("date");
    let plain = Upstream::echo();
    let dated = answering_with("HTTP/1.1 200 OK\r\nDate: Tue, 15 Nov 1994 08:12:31 GMT\r\n");
    let twice = answering_with(
        "HTTP/1.1 200 OK\r\ndate: Tue, 15 Nov 1994 08:12:31 GMT\r\nDate: Wed, 16 Nov 1994 08:12:31 GMT\r\n",
    );
    let failing = answering_with("HTTP/1.1 500 Internal Server Error\r\n");
    let (held, gate) = gated();
    let stall = stalling();
    let body = format!(
        "[apps]\nfile = \"{}\"\ntimestamp_window = \"300s\"\n\
         [[isolation]]\nname = \"one\"\nmax_in_flight = 1\n\
         [[upstreams]]\nname = \"plain\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"dated\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"twice\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"failing\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"held\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"stall\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"dead\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"plain\"\npath = \"/plain/*\"\nupstream = \"plain\"\n\
         [[routes]]\nname = \"dated\"\npath = \"/dated/*\"\nupstream = \"dated\"\n\
         [[routes]]\nname = \"twice\"\npath = \"/twice/*\"\nupstream = \"twice\"\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"plain\"\nauth = \"hmac\"\n\
         [[routes]]\nname = \"limited\"\npath = \"/limited/*\"\nupstream = \"plain\"\n\
         limits = [ {{ key = \"route\", rate = \"1/min\" }} ]\n\
         [[routes]]\nname = \"dead\"\npath = \"/dead/*\"\nupstream = \"dead\"\n\
         [[routes]]\nname = \"circuit\"\npath = \"/circuit/*\"\nupstream = \"failing\"\n\
         breaker = {{ consecutive_failures = 1, open_for = \"60s\" }}\n\
         [[routes]]\nname = \"iso\"\npath = \"/iso/*\"\nupstream = \"held\"\nisolation = \"one\"\n\
         [[routes]]\nname = \"slow\"\npath = \"/slow/*\"\nupstream = \"stall\"\n\
         timeouts = {{ response = \"100ms\" }}\n",
        write_apps(&dir),
        plain.addr,
        dated.addr,
        twice.addr,
        failing.addr,
        held.addr,
        stall.addr,
        dead_addr(),
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let get = |path: &str| Client::connect(gw.addr).get(path);

    // Forwarded: the gateway adds a Date when the origin sent none...
    let r = get("/plain/x");
    assert_eq!(r.status, 200);
    assert_dated_now(&r, "proxied without a Date");
    // ...and keeps the origin's exactly when it sent one (or the first of two).
    let r = get("/dated/x");
    assert_eq!(r.status, 200);
    assert_eq!(
        the_date(&r, "proxied with a Date"),
        "Tue, 15 Nov 1994 08:12:31 GMT"
    );
    let r = get("/twice/x");
    assert_eq!(r.status, 200);
    assert_eq!(
        the_date(&r, "proxied with two Dates"),
        "Tue, 15 Nov 1994 08:12:31 GMT"
    );
    // A forwarded error keeps the same rule.
    let r = get("/circuit/x");
    assert_eq!(r.status, 500);
    assert_dated_now(&r, "proxied 500");

    // Made by the gateway.
    let expect = |path: &str, status: u16, code: &str| {
        let r = get(path);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{path}: {}",
            r.body_str()
        );
        assert_dated_now(&r, &format!("{status} {code}"));
    };
    let r = exchange(
        gw.addr,
        b"GET /plain/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
    assert_dated_now(&r, "400 bad_request");
    expect("/signed/x", 401, "unauthorized");
    expect("/nowhere", 404, "route_not_found");
    assert_eq!(get("/limited/x").status, 200);
    expect("/limited/x", 429, "rate_limited");
    expect("/dead/x", 502, "upstream_unavailable");
    expect("/circuit/x", 503, "circuit_open");
    expect("/slow/x", 504, "upstream_timeout");

    // An isolation group that is full: one request held in the upstream, the next refused.
    let mut first = Client::connect(gw.addr);
    first.send(b"GET /iso/a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || held.requests().len() == 1));
    expect("/iso/b", 503, "overloaded");
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    let r = first.read_response();
    assert_eq!(r.status, 200);
    assert_dated_now(&r, "the held request");
    assert_eq!(held.requests().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- safe error bodies

/// The access log's lines once one has `request_id` (the writer flushes within ~100 ms).
fn log_line(path: &Path, request_id: &str) -> Value {
    let mut found = None;
    let mut text = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == request_id);
        found.is_some()
    });
    assert!(
        ok,
        "no line for {request_id} in {}:\n{text}",
        path.display()
    );
    found.unwrap()
}

/// The JSON error body: (code, message, request_id).
fn error_body(r: &Response) -> (String, String, String) {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body_str()));
    let field = |k: &str| v["error"][k].as_str().unwrap_or_default().to_string();
    (field("code"), field("message"), field("request_id"))
}

/// Asserts the body says nothing of the gateway's insides.
fn assert_safe(r: &Response, dead: SocketAddr) {
    let body = r.body_str();
    for leak in [
        "127.0.0.1".to_string(),
        dead.port().to_string(),
        "billing".to_string(),
        "refused".to_string(),
        "os error".to_string(),
        "connect".to_string(),
    ] {
        assert!(!body.contains(&leak), "{leak:?} leaked in {body}");
    }
}

fn upstream_failures_are_told_in_safe_words(driver: Driver) {
    let dir = temp_dir("safe");
    let log = dir.join("access.log");
    let dead = dead_addr();
    let stall = stalling();
    let garbled = Upstream::raw_once(b"SMTP ready\r\n\r\n");
    let body = format!(
        "[access_log]\npath = \"{}\"\n\
         [[upstreams]]\nname = \"billing-internal\"\ntargets = [\"{dead}\"]\n\
         [[upstreams]]\nname = \"billing-slow\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"pay\"\npath = \"/pay/*\"\nupstream = \"billing-internal\"\n\
         [[routes]]\nname = \"slow\"\npath = \"/slow/*\"\nupstream = \"billing-slow\"\n\
         timeouts = {{ response = \"100ms\" }}\n\
         [[upstreams]]\nname = \"billing-garbled\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"garbled\"\npath = \"/garbled/*\"\nupstream = \"billing-garbled\"\n",
        log.display(),
        stall.addr,
        garbled.addr
    );
    let gw = Gateway::start(driver, 1, "", &body);

    let r = Client::connect(gw.addr).get("/pay/invoice");
    assert_eq!(r.status, 502, "{}", r.body_str());
    let (code, message, id) = error_body(&r);
    assert_eq!(code, "upstream_unavailable");
    assert_eq!(message, "upstream unavailable");
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert!(!id.is_empty());
    assert_safe(&r, dead);
    let line = log_line(&log, &id);
    assert_eq!(line["status"], 502);
    assert_eq!(line["error"], "upstream_unavailable");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("billing-internal") && detail.contains(&dead.to_string()),
        "the log names the upstream and target: {line}"
    );

    let r = Client::connect(gw.addr).get("/slow/report");
    assert_eq!(r.status, 504, "{}", r.body_str());
    let (code, message, id) = error_body(&r);
    assert_eq!(code, "upstream_timeout");
    assert_eq!(message, "upstream timed out");
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_safe(&r, stall.addr);
    let line = log_line(&log, &id);
    assert_eq!(line["status"], 504);
    assert_eq!(line["error"], "upstream_timeout");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("billing-slow"),
        "the log names the upstream: {line}"
    );
    // An upstream that answers garbage: the same safe words, the detail in the log.
    let r = Client::connect(gw.addr).get("/garbled/x");
    assert_eq!(r.status, 502, "{}", r.body_str());
    let (code, message, id) = error_body(&r);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("upstream_unavailable", "upstream unavailable")
    );
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_safe(&r, garbled.addr);
    assert_eq!(garbled.requests().len(), 1);
    let line = log_line(&log, &id);
    assert_eq!(line["error"], "upstream_unavailable");
    assert!(
        line["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "the log has the detail: {line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- TRACE

fn trace_is_refused_unless_listed(driver: Driver) {
    let up = Upstream::echo();
    let body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"any\"\npath = \"/any/*\"\nupstream = \"up\"\n\
         [[routes]]\nname = \"traced\"\npath = \"/traced/*\"\nmethods = [\"GET\", \"TRACE\"]\nupstream = \"up\"\n",
        up.addr
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = Client::connect(gw.addr);
    c.send(b"TRACE /any/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer secret\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_dated_now(&r, "405");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // The route itself works, on the same connection.
    let r = c.get("/any/x");
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /any/x 0"));
    // Listed: forwarded.
    c.send(b"TRACE /traced/x HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "TRACE /traced/x 0")
    );
    assert_eq!(up.last().method, "TRACE");
    assert_eq!(up.requests().len(), 2);
}

on_both_drivers!(
    every_response_carries_one_date,
    upstream_failures_are_told_in_safe_words,
    trace_is_refused_unless_listed,
);
