//! The minimum request body rate (`server.min_body_rate`): a body trickled just inside
//! every `body_timeout` is cut once it falls behind `body_timeout` plus a second for
//! every `min_body_rate` bytes (408 `request_timeout`, connection closed, nothing
//! forwarded whole), both where the body streams to the upstream and where a signature
//! check reads it first; a slow body that keeps the pace passes, and `"off"` leaves only
//! each silence bounded.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-rate";
const SECRET: &str = "rate-secret-000001";

/// A gateway with `body_timeout = "1s"`, the given `min_body_rate`, a plain route
/// (`/plain/*`, the body streams) and a signed one (`/signed/*`, the body is read whole
/// for its hash first).
fn gateway(driver: Driver, up: &Upstream, rate: &str) -> Gateway {
    let dir = temp_dir("body-rate");
    let apps = write_apps_file(
        &dir,
        &format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\ngroups = [\"g\"]\n"),
    );
    Gateway::start(
        driver,
        1,
        &format!("body_timeout = \"1s\"\nmin_body_rate = \"{rate}\"\n"),
        &format!(
            "[apps]\nfile = \"{apps}\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
             [[routes]]\nname = \"plain\"\npath = \"/plain/*\"\nupstream = \"up\"\n\
             [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\ngroup = \"g\"\nauth = \"hmac\"\n",
            up.addr
        ),
    )
}

/// The head of a POST of `body` to `path`, signed when the path is under `/signed/`.
fn head(path: &str, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n",
        body.len()
    );
    if path.starts_with("/signed/") {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nonce = format!("body-rate-nonce-{}-{n:08}", std::process::id());
        let s = sign_request(
            KEY,
            SECRET.as_bytes(),
            "POST",
            path,
            "",
            body,
            ringgate::auth::check::unix_now(),
            &nonce,
        )
        .unwrap();
        head.push_str(&format!(
            "X-Rg-Key: {KEY}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n",
            s.timestamp, s.nonce, s.signature
        ));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends the head, then `body` in pieces of `piece` bytes every `every`, until the body
/// is out or the gateway answers; returns the answer and when it came.
fn trickle(
    gw: &Gateway,
    path: &str,
    body: &[u8],
    piece: usize,
    every: Duration,
) -> (Response, Duration) {
    let mut c = gw.connect();
    c.send(&head(path, body));
    let began = Instant::now();
    for part in body.chunks(piece) {
        std::thread::sleep(every);
        // The gateway may have answered and closed already.
        if c.stream.write_all(part).is_err() {
            break;
        }
    }
    let r = c.read_response();
    (r, began.elapsed())
}

fn a_trickle_below_the_rate_is_cut(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up, "100B/s");
    let body = vec![b'x'; 2000];
    for path in ["/plain/upload", "/signed/upload"] {
        // 10 bytes every 200 ms: 50 B/s, each silence far inside body_timeout. Behind
        // the pace once 1 s + received/100 s passes: at about 2 s.
        let (r, took) = trickle(&gw, path, &body, 10, Duration::from_millis(200));
        assert_eq!(r.status, 408, "{path}: {}", r.body_str());
        assert_eq!(r.error_code(), "request_timeout");
        assert!(
            r.body_str()
                .contains("slower than the gateway's minimum rate"),
            "{}",
            r.body_str()
        );
        assert_eq!(r.header("connection"), Some("close"), "{path}");
        assert!(
            took > Duration::from_millis(1200) && took < Duration::from_millis(4000),
            "{path}: cut after {took:?}"
        );
    }
    assert!(
        up.requests().is_empty(),
        "no body reached the upstream whole"
    );
}

fn a_slow_body_that_keeps_the_pace_passes(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up, "100B/s");
    let body = vec![b'y'; 1000];
    for path in ["/plain/upload", "/signed/upload"] {
        // 100 bytes every 200 ms: 500 B/s, 2 s in all.
        let (r, _) = trickle(&gw, path, &body, 100, Duration::from_millis(200));
        assert_eq!(r.status, 200, "{path}: {}", r.body_str());
        assert_eq!(r.body_str(), format!("POST {path} 1000"));
    }
}

fn off_bounds_only_each_silence(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, &up, "off");
    let body = vec![b'z'; 150];
    let (r, took) = trickle(&gw, "/plain/upload", &body, 10, Duration::from_millis(200));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(took >= Duration::from_secs(3), "{took:?}");
}

on_both_drivers!(
    a_trickle_below_the_rate_is_cut,
    a_slow_body_that_keeps_the_pace_passes,
    off_bounds_only_each_silence
);

#[test]
fn min_body_rate_is_checked() {
    for (value, needle) in [
        ("\"1KiB\"", "expected a size a second"),
        ("\"0B/s\"", "must be at least 1B/s"),
        ("\"fast/s\"", "invalid size"),
        ("5", "must be a rate such as"),
    ] {
        assert_server_error(
            &format!("min_body_rate = {value}"),
            "server.min_body_rate",
            needle,
        );
    }
    let parsed = |extra: &str| {
        ringgate::config::parse(&config_text(Driver::Epoll, 1, extra, ""))
            .unwrap()
            .server
            .min_body_rate
    };
    assert_eq!(parsed("min_body_rate = \"2KiB/s\""), Some(2048));
    assert_eq!(parsed("min_body_rate = \"off\""), None);
    assert_eq!(parsed(""), Some(1024), "the default");
}
