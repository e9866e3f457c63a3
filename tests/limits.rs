//! Route limits over real sockets: rates held across workers under even and skewed load,
//! separate budgets per app, app x route, header value and client address, several limits
//! on one route (a refusal costs no other limit anything), the 429 and the RateLimit
//! headers, priority groups under contention, daily quotas (per-app overrides, the state
//! file across a restart, a corrupt state file), limits checked after a signed body, and
//! the config errors.
//!
//! Exact-count tests run one worker and per-minute rates or daily quotas, so nothing
//! refills while they run and every count is exact.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ringgate::auth::sign::sign_request;
use support::*;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh directory for this test's files, removed with everything in it on drop.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "ringgate-limits-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

const SECRET_A: &str = "secret-of-app-a-0001";
const SECRET_B: &str = "secret-of-app-b-0001";
const SECRET_SMALL: &str = "secret-of-small-0001";

/// Apps `app-a` and `app-b` with no overrides, `app-small` whose record overrides the
/// rate (2/min) and the quota (3/day), `app-crit` in traffic group `critical`.
fn write_apps(dir: &Path) -> String {
    let path = dir.join("apps.toml");
    std::fs::write(
        &path,
        format!(
            "[[apps]]\nkey = \"app-a\"\nsecrets = [\"{SECRET_A}\"]\n\
             [[apps]]\nkey = \"app-b\"\nsecrets = [\"{SECRET_B}\"]\n\
             [[apps]]\nkey = \"app-small\"\nsecrets = [\"{SECRET_SMALL}\"]\nrate = \"2/min\"\nquota = \"3/day\"\n\
             [[apps]]\nkey = \"app-crit\"\nsecrets = [\"secret-of-crit-00001\"]\ntraffic_group = \"critical\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn secret_of(key: &str) -> &'static str {
    match key {
        "app-a" => SECRET_A,
        "app-b" => SECRET_B,
        "app-small" => SECRET_SMALL,
        _ => "secret-of-crit-00001",
    }
}

/// Upstream `up`, then each `(name, path, extra route lines)`; with `apps`, an `[apps]`
/// table for that file first.
fn config(up: SocketAddr, apps: Option<&str>, routes: &[(&str, &str, &str)]) -> String {
    let mut text = String::new();
    if let Some(apps) = apps {
        text += &format!("[apps]\nfile = \"{apps}\"\ntimestamp_window = \"300s\"\n");
    }
    text += &format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n");
    for (name, path, extra) in routes {
        text += &format!(
            "[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"up\"\n{extra}\n"
        );
    }
    text
}

fn nonce() -> String {
    format!(
        "nonce-{:016x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A request signed by `key`, as raw bytes (keep-alive).
fn signed(key: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    signed_with(key, secret_of(key), method, path, body)
}

fn signed_with(key: &str, secret: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let now = ringgate::auth::check::unix_now();
    let s = sign_request(
        key,
        secret.as_bytes(),
        method,
        path,
        "",
        body,
        now,
        &nonce(),
    )
    .unwrap();
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\nX-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature, body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn send(c: &mut Client, raw: &[u8]) -> Response {
    c.send(raw);
    c.read_response()
}

fn get_with(c: &mut Client, path: &str, headers: &str) -> Response {
    send(
        c,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
    )
}

/// Sends `request()` until a refusal (at most `max` times); returns how many were
/// admitted and the refusal.
fn admitted_until_refused(
    c: &mut Client,
    max: usize,
    mut request: impl FnMut() -> Vec<u8>,
) -> (usize, Response) {
    for admitted in 0..max {
        let r = send(c, &request());
        match r.status {
            200 => {}
            429 => return (admitted, r),
            other => panic!("unexpected {other}: {}", r.body_str()),
        }
    }
    panic!("still admitted after {max} requests");
}

fn assert_refused(r: &Response, code: &str) {
    assert_eq!(r.status, 429, "{}", r.body_str());
    assert_eq!(r.error_code(), code);
}

fn retry_after(r: &Response) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {:?}", r.headers))
        .parse()
        .expect("retry-after is whole seconds")
}

// ---------------------------------------------------------------- rates across workers

#[derive(Debug)]
struct Hammered {
    admitted: u64,
    refused: u64,
    elapsed: f64,
}

/// `conns` keep-alive connections, each on its own thread, send `GET path` (with
/// `headers`) back to back for `secs`; counts 200s and 429s. `elapsed` runs from the
/// first thread's start to the last thread's end, as each thread saw them (the main
/// thread may wake late on a loaded machine).
fn hammer(addr: SocketAddr, conns: usize, secs: f64, path: &str, headers: &str) -> Hammered {
    let start = Arc::new(Barrier::new(conns));
    let raw: Arc<[u8]> = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n")
        .into_bytes()
        .into();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (start, raw) = (start.clone(), raw.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                // Connections are open but no request has been sent: the key's bucket
                // does not exist yet, so every token admitted below is created after
                // the earliest `began`.
                start.wait();
                let began = Instant::now();
                let deadline = began + Duration::from_secs_f64(secs);
                let (mut ok, mut refused) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let r = send(&mut c, &raw);
                    match r.status {
                        200 => ok += 1,
                        429 => refused += 1,
                        other => panic!("unexpected {other}: {}", r.body_str()),
                    }
                }
                (ok, refused, began, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first = results.iter().map(|r| r.2).min().unwrap();
    let last = results.iter().map(|r| r.3).max().unwrap();
    Hammered {
        admitted: results.iter().map(|r| r.0).sum(),
        refused: results.iter().map(|r| r.1).sum(),
        elapsed: (last - first).as_secs_f64(),
    }
}

const RATE: f64 = 200.0;
/// Half a second of the rate: a core the scheduler stalls for a while (a loaded CI
/// machine) finds its tokens waiting rather than lost past a full bucket.
const BURST: f64 = 100.0;
const WORKERS: usize = 2;

fn rate_gateway(driver: Driver, up: SocketAddr) -> Gateway {
    Gateway::start(
        driver,
        WORKERS,
        "",
        &config(
            up,
            None,
            &[(
                "lim",
                "/lim/*",
                "limits = [ { key = \"route\", rate = \"200/s\", burst = 100 } ]",
            )],
        ),
    )
}

/// The admitted count must be burst + rate x elapsed within 2%. Below that, one more
/// allowance, stated: each worker starts with the default share (1/2 of the rate and of
/// the burst), and until the reconciler has moved the share of a worker that sees no
/// traffic to the busy one (a few 10 ms rounds; 50 ms allowed), that half of the rate is
/// not spent. (Its half of the burst is not lost: an untouched bucket's tokens go to the
/// core that gained its share.) With the load spread over both workers the allowance is
/// not needed, but the kernel may put every connection on one worker.
fn assert_rate_held(h: &Hammered, what: &str) {
    let idle_part = (WORKERS - 1) as f64 / WORKERS as f64;
    let expected = BURST + RATE * h.elapsed;
    let allowance = idle_part * RATE * 0.050;
    let (low, high) = (expected * 0.98 - allowance, expected * 1.02);
    eprintln!(
        "{what}: admitted {} in {:.3} s, expected {expected:.0} ({:+.2}%)",
        h.admitted,
        h.elapsed,
        (h.admitted as f64 / expected - 1.0) * 100.0
    );
    assert!(
        h.refused > h.admitted,
        "{what}: the load must exceed the limit for the test to mean anything: {} admitted, {} refused",
        h.admitted,
        h.refused
    );
    assert!(
        (low..=high).contains(&(h.admitted as f64)),
        "{what}: {} admitted in {:.3} s, expected {expected:.0} ({low:.0}..={high:.0}); {} refused",
        h.admitted,
        h.elapsed,
        h.refused
    );
}

/// Six connections, spread over the workers by SO_REUSEPORT.
fn rate_is_held_under_even_load(driver: Driver) {
    let up = Upstream::echo();
    let gw = rate_gateway(driver, up.addr);
    let h = hammer(gw.addr, 6, 2.0, "/lim/x", "");
    assert_rate_held(&h, "six connections");
    assert_eq!(
        up.requests().len() as u64,
        h.admitted,
        "only admitted ones go up"
    );
}

/// One keep-alive connection: all load on one worker, which must get the whole rate.
fn rate_is_held_under_skewed_load(driver: Driver) {
    let up = Upstream::echo();
    let gw = rate_gateway(driver, up.addr);
    let h = hammer(gw.addr, 1, 2.0, "/lim/x", "");
    // Without the shares moving, the one worker would admit half of it.
    assert_rate_held(&h, "one connection");
}

// ---------------------------------------------------------------- separate budgets

/// Per app (each its own budget; the app record's `rate` overrides), per app x route,
/// per header value (a missing header is one more value), per client address; and one
/// budget for two routes sharing a route-keyed limit.
fn each_key_has_its_own_budget(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("keys");
    let apps = write_apps(&dir);
    let body = config(
        up.addr,
        Some(&apps),
        &[
            (
                "per-app",
                "/app/*",
                "auth = \"hmac\"\nlimits = [ { key = \"app\", rate = \"5/min\" } ]",
            ),
            (
                "per-app-route-1",
                "/ar1/*",
                "auth = \"hmac\"\nlimits = [ { key = \"app_route\", rate = \"3/min\", shared = \"ar\" } ]",
            ),
            (
                "per-app-route-2",
                "/ar2/*",
                "auth = \"hmac\"\nlimits = [ { key = \"app_route\", rate = \"3/min\", shared = \"ar\" } ]",
            ),
            (
                "tenant",
                "/tenant/*",
                "limits = [ { key = \"header:X-Tenant\", rate = \"3/min\" } ]",
            ),
            (
                "ip",
                "/ip/*",
                "limits = [ { key = \"ip\", rate = \"4/min\", name = \"per-ip\" } ]",
            ),
            (
                "pair-1",
                "/pair1/*",
                "limits = [ { key = \"route\", rate = \"4/min\", shared = \"pair\" } ]",
            ),
            (
                "pair-2",
                "/pair2/*",
                "limits = [ { key = \"route\", rate = \"4/min\", shared = \"pair\" } ]",
            ),
        ],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();

    for (app, budget) in [("app-a", 5), ("app-b", 5), ("app-small", 2)] {
        let (n, refusal) = admitted_until_refused(&mut c, 10, || signed(app, "GET", "/app/1", b""));
        assert_eq!(n, budget, "{app}");
        assert_refused(&refusal, "rate_limited");
    }
    // app x route: the same app has a budget on each route, even with the limit shared.
    for path in ["/ar1/x", "/ar2/x"] {
        let (n, _) = admitted_until_refused(&mut c, 10, || signed("app-a", "GET", path, b""));
        assert_eq!(n, 3, "app-a on {path}");
    }
    let (n, _) = admitted_until_refused(&mut c, 10, || signed("app-b", "GET", "/ar1/x", b""));
    assert_eq!(n, 3, "app-b");

    for tenant in ["X-Tenant: red\r\n", "X-Tenant: blue\r\n", ""] {
        let raw = format!("GET /tenant/1 HTTP/1.1\r\nHost: t\r\n{tenant}\r\n");
        let (n, refusal) = admitted_until_refused(&mut c, 10, || raw.clone().into_bytes());
        assert_eq!(n, 3, "tenant {tenant:?}");
        assert_refused(&refusal, "rate_limited");
    }

    // Loopback is 127.0.0.0/8: a second client address without any network setup.
    let (n, refusal) = admitted_until_refused(&mut c, 10, || {
        b"GET /ip/1 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()
    });
    assert_eq!(n, 4, "127.0.0.1");
    assert_eq!(
        refusal.header("ratelimit-policy"),
        Some("\"per-ip\";q=4;w=60")
    );
    let mut other = Client::connect_from(gw.addr, "127.0.0.2".parse().unwrap());
    let (n, _) = admitted_until_refused(&mut other, 10, || {
        b"GET /ip/1 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()
    });
    assert_eq!(n, 4, "127.0.0.2");

    let statuses: Vec<u16> = [
        "/pair1/a", "/pair2/a", "/pair1/b", "/pair2/b", "/pair1/c", "/pair2/c",
    ]
    .iter()
    .map(|path| c.get(path).status)
    .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "one shared budget of 4"
    );
}

/// `group_by = "app"`: the app record's `traffic_group` picks the group, an app without
/// one is in the default group. A burst of 10 split 70/30, and nothing refills while the
/// test runs: exactly 7 for the critical app, 3 for the others together.
fn groups_by_app_record(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("groups");
    let apps = write_apps(&dir);
    let body = config(
        up.addr,
        Some(&apps),
        &[(
            "grouped",
            "/g/*",
            "auth = \"hmac\"\nlimits = [ { key = \"route\", rate = \"10/min\", groups = { critical = 0.7, normal = 0.3 }, group_by = \"app\", default_group = \"normal\" } ]",
        )],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let (n, _) = admitted_until_refused(&mut c, 20, || signed("app-a", "GET", "/g/1", b""));
    assert_eq!(n, 3, "app-a, in the default group");
    let (n, _) = admitted_until_refused(&mut c, 20, || signed("app-b", "GET", "/g/1", b""));
    assert_eq!(n, 0, "app-b shares the default group's part");
    let (n, refusal) =
        admitted_until_refused(&mut c, 20, || signed("app-crit", "GET", "/g/1", b""));
    assert_eq!(n, 7, "app-crit, critical");
    assert_refused(&refusal, "rate_limited");
}

/// Limits are checked in order and all must admit; a request the second refuses gives
/// back the token it took from the first.
fn every_limit_must_admit_and_a_refusal_costs_nothing(driver: Driver) {
    let up = Upstream::echo();
    let body = config(
        up.addr,
        None,
        &[(
            "two",
            "/two/*",
            "limits = [ { key = \"route\", rate = \"10/min\", name = \"all\" }, { key = \"header:X-Tenant\", rate = \"2/min\", name = \"tenant\" } ]",
        )],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let mut per_tenant = Vec::new();
    for tenant in ["a", "b", "c", "d", "e", "f"] {
        let (n, refusal) = admitted_until_refused(&mut c, 10, || {
            format!("GET /two/1 HTTP/1.1\r\nHost: t\r\nX-Tenant: {tenant}\r\n\r\n").into_bytes()
        });
        let refused_by = refusal
            .header("ratelimit-policy")
            .unwrap_or_default()
            .to_string();
        per_tenant.push((n, refused_by));
    }
    let tenant = "\"tenant\";q=2;w=60".to_string();
    let all = "\"all\";q=10;w=60".to_string();
    // Five tenants get two each: the ten of `all`, which then refuses e's third request
    // and f's first. Had each refusal by `tenant` kept its `all` token, `all` would have
    // been spent after three tenants (3 x 3 = 9, then d gets 1).
    assert_eq!(
        per_tenant,
        [
            (2, tenant.clone()),
            (2, tenant.clone()),
            (2, tenant.clone()),
            (2, tenant),
            (2, all.clone()),
            (0, all)
        ]
    );
    assert_eq!(up.requests().len(), 10);
}

/// The 429: JSON error body, Retry-After, the refusing limit's RateLimit headers; every
/// admitted response carries the route's headers; HEAD gets no body; the connection
/// stays open.
fn refusals_are_429s_with_headers_and_keep_alive(driver: Driver) {
    let up = Upstream::echo();
    let body = config(
        up.addr,
        None,
        &[
            (
                "lim",
                "/lim/*",
                "limits = [ { key = \"route\", rate = \"2/min\" }, { key = \"ip\", rate = \"100/min\", name = \"per-ip\" } ]",
            ),
            ("free", "/free/*", ""),
        ],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let r = c.get("/lim/1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"route\";q=2;w=60, \"per-ip\";q=100;w=60")
    );
    // One of two left, back in full in 30 s (a token at 2/min); 99 of 100, full in 0.6 s
    // (rounded up to 1 s).
    assert_eq!(
        r.header("ratelimit"),
        Some("\"route\";r=1;t=30, \"per-ip\";r=99;t=1")
    );
    let r = c.get("/lim/2");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit"),
        Some("\"route\";r=0;t=60, \"per-ip\";r=98;t=2")
    );

    c.send(b"GET /lim/3 HTTP/1.1\r\nHost: t\r\nX-Request-Id: limited-3\r\n\r\n");
    let r = c.read_response();
    assert_refused(&r, "rate_limited");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["request_id"], "limited-3");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only `error`: {v}");
    assert_eq!(v["error"].as_object().map(|o| o.len()), Some(3), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The next token comes 30 s after the first was taken.
    let wait = retry_after(&r);
    assert!((29..=30).contains(&wait), "retry-after {wait}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"route\";q=2;w=60"));
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"route\";r=0;t={wait}").as_str())
    );
    assert_eq!(r.header("connection"), None, "kept alive");

    // HEAD: the same head, no body; the connection stays in step.
    c.send(b"HEAD /lim/4 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 429);
    assert!(r.body.is_empty());
    assert!(r.header("retry-after").is_some());

    let r = c.get("/free/1");
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /free/1 0"));
    assert_eq!(r.header("ratelimit-policy"), None, "unlimited route");
    assert_eq!(r.header("ratelimit"), None);
    assert_eq!(up.requests().len(), 3);
}

/// A signed body is verified before the limits are checked: a forged request spends
/// nothing of the app's budget, and a genuine one is counted once.
fn signed_bodies_count_only_when_genuine(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("signed");
    let apps = write_apps(&dir);
    let body = config(
        up.addr,
        Some(&apps),
        &[(
            "orders",
            "/orders/*",
            "auth = \"hmac\"\nlimits = [ { key = \"app\", rate = \"3/min\" } ]",
        )],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let post = |key: &str| signed(key, "POST", "/orders/new", b"{\"qty\":1}");
    let forged = || {
        signed_with(
            "app-a",
            "not-the-secret-0000",
            "POST",
            "/orders/new",
            b"{\"qty\":1}",
        )
    };

    let r = send(&mut c, &post("app-a"));
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "POST /orders/new 9")
    );
    assert_eq!(r.header("ratelimit"), Some("\"app\";r=2;t=20"));
    for _ in 0..5 {
        let r = send(&mut c, &forged());
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    }
    // A signed GET (checked at once, no body) shares the budget.
    let r = send(&mut c, &signed("app-a", "GET", "/orders/1", b""));
    assert_eq!(r.status, 200);
    let r = send(&mut c, &post("app-a"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"app\";r=0;t=60"));
    let r = send(&mut c, &post("app-a"));
    assert_refused(&r, "rate_limited");
    // The refused body was read: the connection carries on, and app-b is untouched.
    let r = send(&mut c, &post("app-b"));
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().len(), 4);
}

// ---------------------------------------------------------------- quotas

/// Seconds to the next midnight at `offset` east of UTC, as the gateway computes them at
/// some instant between `before` and now.
fn assert_secs_to_midnight(got: u64, offset: i64, before: u64) {
    let after = ringgate::auth::check::unix_now();
    let left = |t: u64| 86_400 - (t as i64 + offset).rem_euclid(86_400) as u64;
    let ok = (before..=after).any(|t| left(t) == got);
    assert!(ok, "{got} s is not the time to midnight at {offset:+} s");
}

/// `quota = "5/day"`: exactly five, then `quota_exceeded` until midnight (UTC, or the
/// limit's offset); the app record's `quota` overrides an app-keyed quota.
fn daily_quota_is_exact(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("quota");
    let apps = write_apps(&dir);
    let body = config(
        up.addr,
        Some(&apps),
        &[
            (
                "app-day",
                "/app/*",
                "auth = \"hmac\"\nlimits = [ { key = \"app\", quota = \"5/day\" } ]",
            ),
            (
                "route-day",
                "/route/*",
                "limits = [ { key = \"route\", quota = \"4/day\", utc_offset = \"+08:00\", name = \"daily\" } ]",
            ),
        ],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let before = ringgate::auth::check::unix_now();
    for (app, quota) in [("app-a", 5), ("app-b", 5), ("app-small", 3)] {
        let (n, refusal) = admitted_until_refused(&mut c, 10, || signed(app, "GET", "/app/1", b""));
        assert_eq!(n, quota, "{app}");
        assert_refused(&refusal, "quota_exceeded");
        let wait = retry_after(&refusal);
        assert_secs_to_midnight(wait, 0, before);
        assert_eq!(
            refusal.header("ratelimit-policy"),
            Some(format!("\"app-day\";q={quota};w=86400").as_str())
        );
        assert_eq!(
            refusal.header("ratelimit"),
            Some(format!("\"app-day\";r=0;t={wait}").as_str())
        );
    }
    let r = get_with(&mut c, "/route/1", "");
    assert_eq!(r.status, 200);
    let state = r.header("ratelimit").unwrap_or_default().to_string();
    assert!(state.starts_with("\"daily\";r=3;t="), "{state}");
    let (n, refusal) = admitted_until_refused(&mut c, 10, || {
        b"GET /route/1 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()
    });
    assert_eq!(n, 3);
    assert_refused(&refusal, "quota_exceeded");
    assert_secs_to_midnight(retry_after(&refusal), 8 * 3600, before);
}

/// Each of `conns` connections sends requests until told the quota is used up; a
/// `rate_limited` refusal (units left, none on that core yet) must say Retry-After: 1.
/// Returns each connection's (admitted, short refusals).
fn use_up_quota(addr: SocketAddr, conns: usize, path: &'static str) -> Vec<(u64, u64)> {
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let deadline = Instant::now() + Duration::from_secs(5);
                let (mut admitted, mut waits) = (0u64, 0u64);
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "never told the quota is used up: {admitted} admitted, {waits} waits"
                    );
                    let r = c.get(path);
                    match r.status {
                        200 => admitted += 1,
                        429 if r.error_code() == "rate_limited" => {
                            assert_eq!(retry_after(&r), 1, "{}", r.body_str());
                            waits += 1;
                            // Far less than the second it asks for: the test wants the
                            // moment the units arrive, not a polite client.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        _ => {
                            assert_refused(&r, "quota_exceeded");
                            assert!(retry_after(&r) > 1);
                            return (admitted, waits);
                        }
                    }
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Two workers, 300/day: each starts with a grant of 64 and the rest flows through the
/// reconciler. One connection (one core) gets exactly the whole quota, the idle core's
/// grant included; then connections on any core are told it is used up (a core that
/// never served the key may first refuse for a moment, until it learns the key's use).
/// Four connections on a fresh key share exactly the quota too.
fn daily_quota_is_exact_across_workers(driver: Driver) {
    let up = Upstream::echo();
    let limits = "limits = [ { key = \"route\", quota = \"300/day\" } ]";
    let body = config(
        up.addr,
        None,
        &[("one", "/one/*", limits), ("many", "/many/*", limits)],
    );
    let gw = Gateway::start(driver, 2, "", &body);
    let one = use_up_quota(gw.addr, 1, "/one/1");
    assert_eq!(one[0].0, 300, "one connection: {one:?}");
    let after = use_up_quota(gw.addr, 4, "/one/1");
    assert!(after.iter().all(|r| r.0 == 0), "used up: {after:?}");

    let many = use_up_quota(gw.addr, 4, "/many/1");
    let admitted: u64 = many.iter().map(|r| r.0).sum();
    assert_eq!(admitted, 300, "per connection (admitted, waits): {many:?}");
    assert_eq!(up.requests().len(), 600);
}

fn quota_gateway(driver: Driver, up: SocketAddr, state_file: &Path) -> Gateway {
    let body = config(
        up,
        None,
        &[(
            "day",
            "/day/*",
            "limits = [ { key = \"route\", quota = \"5/day\" } ]",
        )],
    );
    let traffic = format!("[traffic]\nstate_file = \"{}\"\n", state_file.display());
    Gateway::start(driver, 1, "", &format!("{traffic}{body}"))
}

fn get_day(c: &mut Client) -> u16 {
    c.get("/day/1").status
}

/// Use saved at shutdown is restored by the next process with the same state file.
fn quota_use_survives_a_restart(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("restart");
    let state = dir.join("quotas.json");
    let gw = quota_gateway(driver, up.addr, &state);
    let mut c = gw.connect();
    let statuses: Vec<u16> = (0..3).map(|_| get_day(&mut c)).collect();
    assert_eq!(statuses, [200; 3]);
    drop(c);
    gw.shutdown();
    assert!(state.exists(), "saved at shutdown");

    let gw = quota_gateway(driver, up.addr, &state);
    let mut c = gw.connect();
    let statuses: Vec<u16> = (0..4).map(|_| get_day(&mut c)).collect();
    assert_eq!(statuses, [200, 200, 429, 429], "two of five left");
    assert_eq!(up.requests().len(), 5);
}

/// A state file that is not one is set aside as `<file>.bad`; the gateway starts with
/// fresh quotas.
fn corrupt_state_file_is_set_aside(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("corrupt");
    let state = dir.join("quotas.json");
    std::fs::write(&state, "{\"version\": 1, \"seeds\": [1, 2").unwrap();
    let gw = quota_gateway(driver, up.addr, &state);
    let bad = state.with_file_name("quotas.json.bad");
    assert_eq!(
        std::fs::read_to_string(&bad).unwrap(),
        "{\"version\": 1, \"seeds\": [1, 2"
    );
    let mut c = gw.connect();
    let statuses: Vec<u16> = (0..6).map(|_| get_day(&mut c)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    drop(c);
    gw.shutdown();
    // The new file is a good one: the next start restores it.
    let gw = quota_gateway(driver, up.addr, &state);
    assert_eq!(get_day(&mut gw.connect()), 429);
}

// ---------------------------------------------------------------- priority groups

/// 400/s split 70/30 by `X-Priority` on one worker. Both groups hammering get their
/// ratios; the normal group alone borrows the idle critical group's rate, but not the
/// critical group's part of the burst, which stays reserved for it. Each phase starts on
/// a fresh key (its own route), every bucket full. (The burst is a second of the rate,
/// so a loaded machine's scheduling stalls lose no tokens.)
fn priority_groups_split_under_contention(driver: Driver) {
    const RATE: f64 = 400.0;
    const BURST: f64 = 400.0;
    let up = Upstream::echo();
    let limits = "limits = [ { key = \"route\", rate = \"400/s\", burst = 400, groups = { critical = 0.7, normal = 0.3 }, group_by = \"header:X-Priority\", default_group = \"normal\" } ]";
    let body = config(
        up.addr,
        None,
        &[("both", "/both/*", limits), ("alone", "/alone/*", limits)],
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let addr = gw.addr;
    let crit =
        std::thread::spawn(move || hammer(addr, 2, 1.5, "/both/c", "X-Priority: critical\r\n"));
    // No header: the default group.
    let normal = hammer(addr, 2, 1.5, "/both/n", "");
    let crit = crit.join().unwrap();
    let total = (crit.admitted + normal.admitted) as f64;
    assert!(
        crit.refused > crit.admitted && normal.refused > normal.admitted,
        "both groups far over their part: {crit:?} / {normal:?}"
    );
    let share = crit.admitted as f64 / total;
    assert!(
        (0.67..=0.73).contains(&share),
        "critical got {share:.3} of {total}: {} vs {}",
        crit.admitted,
        normal.admitted
    );
    let expected = BURST + RATE * crit.elapsed.max(normal.elapsed);
    assert!(
        (expected * 0.98..=expected * 1.02).contains(&total),
        "{total} admitted, expected {expected:.0}"
    );

    let alone = hammer(addr, 2, 1.0, "/alone/n", "X-Priority: normal\r\n");
    assert!(
        alone.refused > alone.admitted,
        "far over the whole rate: {alone:?}"
    );
    let expected = 0.3 * BURST + RATE * alone.elapsed;
    let got = alone.admitted as f64;
    assert!(
        (expected * 0.98..=expected * 1.02).contains(&got),
        "normal alone: {got} admitted, expected {expected:.0} (the critical 280 held back)"
    );
}

// ---------------------------------------------------------------- config errors

#[test]
fn config_errors_name_the_limit_and_field() {
    let dir = temp_dir("config");
    let apps = write_apps(&dir);
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let one = |auth: &str, limits: &str| {
        config(
            up,
            Some(&apps),
            &[(
                "r",
                "/r/*",
                &format!("auth = \"{auth}\"\nlimits = [ {limits} ]"),
            )],
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            one("none", "{ key = \"route\", rate = \"10/hour\" }"),
            "routes[0].limits[0].rate",
            "unknown rate unit",
        ),
        (
            one("none", "{ key = \"route\", rate = \"0/s\" }"),
            "routes[0].limits[0].rate",
            "between 1 and",
        ),
        (
            one("none", "{ key = \"route\", quota = \"10/week\" }"),
            "routes[0].limits[0].quota",
            "expected /day",
        ),
        (
            one("none", "{ key = \"user\", rate = \"10/s\" }"),
            "routes[0].limits[0].key",
            "expected route, app, app_route, ip or header:<name>",
        ),
        (
            one("none", "{ key = \"header:\", rate = \"10/s\" }"),
            "routes[0].limits[0].key",
            "non-empty token",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\" }, { key = \"app\", rate = \"1/s\" }"),
            "routes[0].limits[1].key",
            "need a route whose callers are apps",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\", groups = { a = 0.5, b = 0.5 }, group_by = \"app\" }"),
            "routes[0].limits[0].key",
            "need a route whose callers are apps",
        ),
        (
            one("hmac", "{ key = \"route\", rate = \"10/s\", groups = { a = 0.7, b = 0.4 }, group_by = \"app\" }"),
            "routes[0].limits[0].groups",
            "ratios must add up to 1",
        ),
        (
            one("hmac", "{ key = \"route\", rate = \"10/s\", groups = { a = 0.5, b = 0.5 } }"),
            "routes[0].limits[0].group_by",
            "groups need `group_by`",
        ),
        (
            one("hmac", "{ key = \"route\", rate = \"10/s\", groups = { a = 0.5, b = 0.5 }, group_by = \"app\", default_group = \"c\" }"),
            "routes[0].limits[0].default_group",
            "not one of the groups",
        ),
        (
            one("hmac", "{ key = \"route\", quota = \"10/day\", groups = { a = 1.0 }, group_by = \"app\" }"),
            "routes[0].limits[0].groups",
            "quotas have none",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\", quota = \"100/day\" }"),
            "routes[0].limits[0].rate",
            "exactly one of `rate`",
        ),
        (
            one("none", "{ key = \"route\" }"),
            "routes[0].limits[0].rate",
            "exactly one of `rate`",
        ),
        (
            one("none", "{ key = \"route\", quota = \"100/day\", burst = 5 }"),
            "routes[0].limits[0].burst",
            "only rates have a burst",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\", utc_offset = \"+08:00\" }"),
            "routes[0].limits[0].utc_offset",
            "only daily quotas",
        ),
        (
            one("none", "{ key = \"route\", quota = \"10/day\", utc_offset = \"+8\" }"),
            "routes[0].limits[0].utc_offset",
            "expected an offset",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\" }, { key = \"ip\", rate = \"5/s\", name = \"route\" }"),
            "routes[0].limits[1].name",
            "duplicate limit name \"route\"",
        ),
        (
            one("none", "{ key = \"route\", rate = \"10/s\", name = \"a\\\"b\" }"),
            "routes[0].limits[0].name",
            "no quotes",
        ),
        (
            config(
                up,
                None,
                &[
                    ("r1", "/a/*", "limits = [ { key = \"route\", rate = \"10/s\", shared = \"api\" } ]"),
                    ("r2", "/b/*", "limits = [ { key = \"route\", rate = \"20/s\", shared = \"api\" } ]"),
                ],
            ),
            "routes[1].limits[0]",
            "shared limit \"api\"/\"route\" is defined differently on routes[0]",
        ),
        (
            format!(
                "[traffic]\nreconcile_interval = \"5s\"\n{}",
                one("none", "{ key = \"route\", rate = \"10/s\" }")
            ),
            "traffic.reconcile_interval",
            "at most 1s",
        ),
        (
            format!(
                "[traffic]\nutc_offset = \"CET\"\n{}",
                one("none", "{ key = \"route\", quota = \"10/day\" }")
            ),
            "traffic.utc_offset",
            "expected an offset",
        ),
        (
            format!(
                "[cluster]\nredis = \"http://x\"\n{}",
                one("none", "{ key = \"route\", rate = \"10/s\" }")
            ),
            "cluster.redis",
            "expected a redis:// or rediss:// URL",
        ),
        (
            format!(
                "[cluster]\nredis = {{ sentinels = [\"redis://127.0.0.1:26379\"] }}\n{}",
                one("none", "{ key = \"route\", rate = \"10/s\" }")
            ),
            "cluster.redis.master_name",
            "required with `sentinels`",
        ),
        (
            format!(
                "[cluster]\nredis = \"redis://127.0.0.1:1/0\"\ngateways = 0\n{}",
                one("none", "{ key = \"route\", rate = \"10/s\" }")
            ),
            "cluster.gateways",
            "between 1 and 10000",
        ),
        (
            format!(
                "[cluster]\nredis = \"redis://127.0.0.1:1/0\"\nlease_interval = \"5ms\"\n{}",
                one("none", "{ key = \"route\", rate = \"10/s\" }")
            ),
            "cluster.lease_interval",
            "at least traffic.reconcile_interval",
        ),
        (
            format!(
                "[traffic]\nstate_file = \"q.json\"\n[cluster]\nredis = \"redis://127.0.0.1:1/0\"\n{}",
                one("none", "{ key = \"route\", quota = \"10/day\" }")
            ),
            "traffic.state_file",
            "kept in Redis",
        ),
    ];
    for (body, path, needle) in cases {
        let errors = assert_config_error(&body, path, needle);
        assert_eq!(errors.len(), 1, "one problem, one error: {errors:?}");
    }
    // The same limit shared the same way on two routes is fine.
    let shared = "limits = [ { key = \"route\", rate = \"10/s\", shared = \"api\" } ]";
    let ok = config(up, None, &[("r1", "/a/*", shared), ("r2", "/b/*", shared)]);
    ringgate::config::parse(&config_text(Driver::Epoll, 1, "", &ok)).expect("valid");
}

// Some tests run on one driver only: each costs seconds of load, or exercises the
// limiter and its files rather than the socket layer.
#[test]
fn priority_groups() {
    priority_groups_split_under_contention(Driver::IoUring);
}

#[test]
fn quota_restart() {
    quota_use_survives_a_restart(Driver::Epoll);
}

#[test]
fn corrupt_state_file() {
    corrupt_state_file_is_set_aside(Driver::IoUring);
}

on_both_drivers!(
    rate_is_held_under_even_load,
    rate_is_held_under_skewed_load,
    each_key_has_its_own_budget,
    every_limit_must_admit_and_a_refusal_costs_nothing,
    groups_by_app_record,
    refusals_are_429s_with_headers_and_keep_alive,
    signed_bodies_count_only_when_genuine,
    daily_quota_is_exact,
    daily_quota_is_exact_across_workers,
);
