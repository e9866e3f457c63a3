//! Access logs over real sockets, both drivers: one JSON line per request with the
//! documented fields matching what was sent and answered, sampling, and a reopen after
//! the file was moved away (what logrotate does before SIGUSR1).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringgate-access-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The log's lines once there are `n` (the writer flushes within ~100 ms).
fn lines(path: &Path, n: usize) -> Vec<Value> {
    let mut text = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().count() >= n
    });
    assert!(ok, "expected {n} lines in {}:\n{text}", path.display());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn by_request_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["request_id"] == id)
        .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
}

fn every_request_gets_a_json_line(driver: Driver) {
    let dir = temp_dir(driver.name());
    let path = dir.join("access.log");
    let up = Upstream::echo();
    let body = format!(
        "[access_log]\npath = \"{}\"\n{}",
        path.display(),
        simple_routes(up.addr, "", "")
    );
    let gw = Gateway::start(driver, 2, "", &body);
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /a/b?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-ok\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    c.send(
        b"POST /p HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-post\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(c.read_response().status, 200);
    // A refused head (Content-Length with Transfer-Encoding): a 400, no route.
    c.send(
        b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(c.read_response().status, 400);

    let logged = lines(&path, 3);
    let ok = by_request_id(&logged, "req-ok");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "all");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/a/b");
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["app"], Value::Null);
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["upstream"], up.addr.to_string());
    assert!(ok["upstream_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(ok["total_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    assert_eq!(ok["error"], Value::Null);
    // Head and body: the body's bytes plus a head of some dozens.
    let bytes = ok["bytes"].as_u64().unwrap() as usize;
    assert!(
        (r.body.len() + 40..r.body.len() + 1000).contains(&bytes),
        "{bytes} for a {}-byte body",
        r.body.len()
    );
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(by_request_id(&logged, "req-post")["method"], "POST");
    // A head refused before it was read whole keeps no client id: found by its status.
    let bad = logged.iter().find(|l| l["status"] == 400).expect("the 400");
    assert!(
        bad["total_ms"].as_f64().unwrap() < 400.0,
        "not the lingering close: {bad}"
    );
    assert_eq!(
        (bad["status"].as_u64(), bad["route"].as_str()),
        (Some(400), Some(""))
    );
    assert_eq!(bad["error"], "bad_request");
    assert_eq!(bad["upstream"], Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_drivers!(every_request_gets_a_json_line);

#[test]
fn sampling_and_reopen() {
    let dir = temp_dir("sample");
    let path = dir.join("access.log");
    let up = Upstream::echo();
    let body = format!(
        "[access_log]\npath = \"{}\"\nsample = 0.25\n{}",
        path.display(),
        simple_routes(up.addr, "", "")
    );
    let gw = Gateway::start(Driver::Epoll, 1, "", &body);
    let mut c = Client::connect(gw.addr);
    for _ in 0..40 {
        assert_eq!(c.get("/x").status, 200);
    }
    assert_eq!(lines(&path, 10).len(), 10, "a quarter of 40, exactly");
    // logrotate moves the file away, then signals: new lines go to a new file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.handle().reopen_logs();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..8 {
        assert_eq!(c.get("/x").status, 200);
    }
    assert_eq!(lines(&path, 2).len(), 2);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        10
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn access_log_config_errors() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (extra, path, needle) in [
        (
            "[access_log]\npath = \"\"\n",
            "access_log.path",
            "file path or",
        ),
        (
            "[access_log]\npath = \"-\"\nsample = 0.0\n",
            "access_log.sample",
            "above 0",
        ),
        (
            "[access_log]\npath = \"-\"\nbuffer = \"1KiB\"\n",
            "access_log.buffer",
            "between 4KiB",
        ),
    ] {
        assert_config_error(
            &format!("{extra}{}", simple_routes(up, "", "")),
            path,
            needle,
        );
    }
}
