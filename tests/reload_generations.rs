//! Which config generation serves a request: the one current when its head arrives. A
//! keep-alive connection that sat idle through a reload gets the new rules on its very
//! first request after it: a new route, a disabled app, a new limit.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-reload";
const SECRET: &str = "reload-secret-000001";

/// Writes the apps file with the app enabled or not; returns its path.
fn write_apps(dir: &std::path::Path, enabled: bool) -> String {
    let apps =
        format!("[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\nenabled = {enabled}\n");
    write_apps_file(dir, &apps)
}

/// Generation 1: `/a/*` and a signed `/signed/*`. Generation 2 adds `/b/*` and a limit on
/// `/a/*` (its RateLimit headers show it applied).
fn routes(up: SocketAddr, apps: &str, second: bool) -> String {
    let mut body = format!(
        "[apps]\nfile = \"{apps}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\nauth = \"hmac\"\n\
         [[routes]]\nname = \"a\"\npath = \"/a/*\"\nupstream = \"up\"\n"
    );
    if second {
        body.push_str("limits = [ { key = \"route\", rate = \"100000/s\" } ]\n");
        body.push_str("[[routes]]\nname = \"b\"\npath = \"/b/*\"\nupstream = \"up\"\n");
    }
    body
}

fn signed_get(path: &str, nonce: &str) -> Vec<u8> {
    let ts = ringgate::auth::check::unix_now();
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", path, "", b"", ts, nonce).unwrap();
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nX-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    )
    .into_bytes()
}

fn first_request_after_a_reload_uses_the_new_generation(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("reload-gen");
    let apps = write_apps(&dir, true);
    // One worker: once a fresh connection sees the new generation, every connection's
    // next request is on the worker that switched.
    let gw = Gateway::start(driver, 1, "", &routes(up.addr, &apps, false));

    // Keep-alive connections, each used once, then idle across the reload.
    let mut route = gw.connect();
    let mut app = gw.connect();
    let mut limit = gw.connect();
    assert_eq!(route.get("/b/x").status, 404);
    app.send(&signed_get("/signed/x", "nonce-reload-000000001"));
    assert_eq!(app.read_response().status, 200);
    let r = limit.get("/a/x");
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").is_none(), "no limit yet");

    write_apps(&dir, false);
    gw.reload(driver, 1, "", &routes(up.addr, &apps, true));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.connect().get("/b/x").status != 200 {
        assert!(Instant::now() < deadline, "the worker never switched");
    }

    // The very first request on each idle connection follows the new rules.
    assert_eq!(route.get("/b/x").status, 200, "the new route");
    app.send(&signed_get("/signed/x", "nonce-reload-000000002"));
    let r = app.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthorized"),
        "the disabled app"
    );
    assert!(r.body_str().contains("disabled"), "{}", r.body_str());
    let r = limit.get("/a/x");
    assert_eq!(r.status, 200);
    assert!(
        r.header("ratelimit-policy").is_some(),
        "the new limit applies: {:?}",
        r.headers
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload one worker cannot prepare in time is aborted everywhere: the worker that did
/// prepare drops what it built, the late one drops it once it gets to it, every worker
/// keeps serving the running generation, the reload says why, and the next reload (all
/// workers answering) goes through.
fn a_reload_a_stalled_worker_cannot_prepare_is_aborted(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("reload-abort");
    let apps = write_apps(&dir, true);
    let gw = Gateway::start(driver, 2, "", &routes(up.addr, &apps, false));
    let state = gw.handle().state();

    // Hold worker 0's thread: it answers a metrics scrape into a rendezvous channel that
    // nobody reads yet, so it blocks there: no ticks, no commands, no requests.
    let (report_tx, report_rx) = crossbeam_channel::bounded(0);
    let stalled = state.worker_commands.lock().unwrap()[0].clone();
    stalled
        .send(ringgate::runtime::WorkerCommand::Scrape(report_tx))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // its next 10 ms tick takes it

    let text = config_text(driver, 2, "", &routes(up.addr, &apps, true));
    let started = Instant::now();
    let refused = gw
        .handle()
        .reload(ringgate::config::parse(&text).unwrap())
        .expect_err("a worker that cannot prepare aborts the reload");
    assert!(
        refused.contains("1 of 2 workers did not prepare generation 2")
            && refused.contains("nothing changed"),
        "{refused}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited out the deadline"
    );

    // Free the worker: it now handles the late Prepare, then the Abort behind it.
    let report = report_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the stalled worker answers once unblocked");
    assert_eq!(report.worker, 0);
    std::thread::sleep(Duration::from_millis(100));
    // Fresh connections spread over both workers: every one is on generation 1.
    for _ in 0..16 {
        assert_eq!(gw.connect().get("/b/x").status, 404, "still generation 1");
        assert_eq!(gw.connect().get("/a/x").status, 200);
    }
    assert_eq!(state.generation.load(Ordering::SeqCst), 1);
    assert_eq!(state.reload_failures.load(Ordering::SeqCst), 1, "counted");

    // The same reload again, with every worker answering, goes through.
    let generation = gw
        .handle()
        .reload(ringgate::config::parse(&text).unwrap())
        .expect("the next reload succeeds");
    assert_eq!(generation, 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut live = 0;
    while live < 16 {
        assert!(Instant::now() < deadline, "generation 2 never went live");
        live = if gw.connect().get("/b/x").status == 200 {
            live + 1
        } else {
            0
        };
    }
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_drivers!(
    first_request_after_a_reload_uses_the_new_generation,
    a_reload_a_stalled_worker_cannot_prepare_is_aborted,
);
