//! Protecting upstreams over real sockets, two workers, both drivers: a route's breaker
//! trips on every core together and answers `circuit_open` without touching the upstream,
//! half-opens after its cool-down and closes (or opens again) on its probes; error-rate
//! trips; what counts as a failure; the adaptive throttle; static fallbacks; per-route
//! timeouts; and the config errors.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// An upstream that answers 500 while `failing` is set, 200 otherwise.
fn switchable() -> (Upstream, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let up = Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let ok = if flag.load(Ordering::SeqCst) {
                c.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops")
            } else {
                c.respond(b"fine")
            };
            if !ok {
                return;
            }
        }
    });
    (up, failing)
}

fn gateway(driver: Driver, up: SocketAddr, route_extra: &str) -> Gateway {
    Gateway::start(driver, 2, "", &simple_routes(up, "", route_extra))
}

/// One request on a fresh connection (spread over both workers by SO_REUSEPORT).
fn get(gw: &Gateway) -> Response {
    Client::connect(gw.addr).get("/x")
}

fn breaker_trips_on_every_core_and_recovers(driver: Driver) {
    let (up, failing) = switchable();
    let gw = gateway(
        driver,
        up.addr,
        "breaker = { consecutive_failures = 3, open_for = \"400ms\", probes = 2 }",
    );
    for _ in 0..3 {
        assert_eq!(get(&gw).status, 500, "failures pass through until it trips");
    }
    // A request's outcome is counted once its response is out (`on_done`): a client as
    // quick as this one can otherwise send the next before the third is counted.
    std::thread::sleep(Duration::from_millis(50));
    // Open on both workers: refused at once, the upstream untouched.
    for _ in 0..10 {
        let r = get(&gw);
        assert_eq!((r.status, r.error_code().as_str()), (503, "circuit_open"));
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(up.requests().len(), 3);

    // After the cool-down, probes go through: both succeed and it closes.
    failing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(get(&gw).status, 200);
    assert_eq!(get(&gw).status, 200);
    for _ in 0..10 {
        assert_eq!(get(&gw).status, 200);
    }
    assert_eq!(up.requests().len(), 15);
}

fn a_failed_probe_opens_it_again(driver: Driver) {
    let (up, _failing) = switchable();
    let gw = gateway(
        driver,
        up.addr,
        "breaker = { consecutive_failures = 2, open_for = \"300ms\", probes = 1 }",
    );
    assert_eq!(get(&gw).status, 500);
    assert_eq!(get(&gw).status, 500);
    assert_eq!(get(&gw).error_code(), "circuit_open");
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(
        get(&gw).status,
        500,
        "the probe reaches the upstream and fails"
    );
    assert_eq!(get(&gw).error_code(), "circuit_open", "open again at once");
    assert_eq!(up.requests().len(), 3);
}

fn error_rate_trips_only_with_enough_requests(driver: Driver) {
    // Every other request fails.
    let up = Upstream::start(|mut c, seen| {
        while let Some(req) = c.read_request() {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(req);
                seen.len()
            };
            let ok = if n % 2 == 0 {
                c.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            } else {
                c.respond(b"ok")
            };
            if !ok {
                return;
            }
        }
    });
    let gw = gateway(
        driver,
        up.addr,
        "breaker = { error_rate = 0.5, min_requests = 10, window = \"10s\" }",
    );
    let mut c = Client::connect(gw.addr);
    for i in 1..=9 {
        let r = c.get("/x");
        assert_eq!(r.status, if i % 2 == 0 { 503 } else { 200 });
    }
    // The tenth request (a failure) brings the window to 10 requests, 5 failures.
    assert_eq!(c.get("/x").status, 503);
    let r = c.get("/x");
    assert_eq!(r.error_code(), "circuit_open", "tripped: {}", r.body_str());
    assert_eq!(up.requests().len(), 10);
}

fn resets_and_stalls_count_as_failures(driver: Driver) {
    // An upstream that resets every connection once it has read the request.
    let resetting = Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.reset();
        }
    });
    let gw = gateway(
        driver,
        resetting.addr,
        "breaker = { consecutive_failures = 2 }",
    );
    assert_eq!(get(&gw).status, 502);
    assert_eq!(get(&gw).status, 502);
    assert_eq!(get(&gw).error_code(), "circuit_open");
    assert_eq!(resetting.requests().len(), 2);
    // One that stalls past the response timeout.
    let stalling = slow(1_000);
    let gw = gateway(
        driver,
        stalling.addr,
        "timeouts = { response = \"50ms\" }\nbreaker = { consecutive_failures = 2 }",
    );
    assert_eq!(get(&gw).error_code(), "upstream_timeout");
    assert_eq!(get(&gw).error_code(), "upstream_timeout");
    assert_eq!(get(&gw).error_code(), "circuit_open");
}

fn only_configured_failures_count(driver: Driver) {
    let (up, _failing) = switchable();
    let gw = gateway(
        driver,
        up.addr,
        "breaker = { consecutive_failures = 2, failure_on = [\"connect\", \"timeout\"] }",
    );
    for _ in 0..10 {
        assert_eq!(get(&gw).status, 500, "5xx is not a failure here");
    }
    // Connect failures are.
    let gw = gateway(
        driver,
        dead_addr(),
        "breaker = { consecutive_failures = 2, failure_on = [\"connect\"] }",
    );
    assert_eq!(get(&gw).error_code(), "upstream_unavailable");
    assert_eq!(get(&gw).error_code(), "upstream_unavailable");
    assert_eq!(get(&gw).error_code(), "circuit_open");
}

fn fallback_answers_for_an_open_circuit_and_a_failing_upstream(driver: Driver) {
    let (up, _failing) = switchable();
    let fallback = "fallback = { status = 200, body = '{\"orders\":[]}', headers = { \"cache-control\" = \"no-store\" } }";
    let gw = gateway(
        driver,
        up.addr,
        &format!("breaker = {{ consecutive_failures = 1, open_for = \"5s\" }}\n{fallback}"),
    );
    // A 500 from the upstream is its answer; then the circuit is open: the fallback.
    assert_eq!(get(&gw).status, 500);
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        let r = c.get("/x");
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "{\"orders\":[]}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("x-ringgate-fallback"), Some("circuit_open"));
        assert!(r.header("x-request-id").is_some());
    }
    // An upstream that cannot be reached gets the fallback too, on keep-alive.
    let gw = gateway(driver, dead_addr(), fallback);
    let mut c = Client::connect(gw.addr);
    for _ in 0..2 {
        let r = c.get("/x");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ringgate-fallback"),
            Some("upstream_unavailable")
        );
    }
    // HEAD gets the head only.
    c.send(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("13"));
}

fn route_timeouts_override_the_upstreams(driver: Driver) {
    let up = Upstream::start(|mut c, _| {
        while c.read_request().is_some() {
            std::thread::sleep(Duration::from_millis(400));
            if !c.respond(b"slow") {
                return;
            }
        }
    });
    let gw = gateway(driver, up.addr, "timeouts = { response = \"100ms\" }");
    let started = Instant::now();
    let r = get(&gw);
    assert_eq!(r.error_code(), "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    // Without the override the upstream's default (much longer) applies.
    let gw = gateway(driver, up.addr, "");
    assert_eq!(get(&gw).status, 200);
    // A total timeout bounds the whole exchange: before the head, a 504...
    let gw = gateway(driver, up.addr, "timeouts = { total = \"150ms\" }");
    let started = Instant::now();
    assert_eq!(get(&gw).error_code(), "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    // ...after it, with the body still coming, the connection is closed.
    let trickle = Upstream::start(|mut c, _| {
        while c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab");
            std::thread::sleep(Duration::from_millis(500));
            if !c.write(b"cdefghij") {
                return;
            }
        }
    });
    let gw = gateway(driver, trickle.addr, "timeouts = { total = \"150ms\" }");
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        c.try_read_response(false).is_err(),
        "the response is cut short, not completed"
    );
}

fn adaptive_throttle_sheds_load_to_a_failing_upstream(driver: Driver) {
    let (up, failing) = switchable();
    let gw = gateway(
        driver,
        up.addr,
        "breaker = { mode = \"adaptive\", k = 2.0, window = \"10s\" }",
    );
    // Healthy: nothing is throttled.
    failing.store(false, Ordering::SeqCst);
    let mut c = Client::connect(gw.addr);
    for _ in 0..50 {
        assert_eq!(c.get("/x").status, 200);
    }
    failing.store(true, Ordering::SeqCst);
    let (mut sent, mut throttled) = (0, 0);
    for _ in 0..1000 {
        let r = c.get("/x");
        match r.status {
            500 => sent += 1,
            503 => {
                assert_eq!(r.error_code(), "circuit_open");
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Accepts stay at 50, so after n requests a request is refused with probability
    // (n - 100) / (n + 1): about 50 go through before it starts, then
    // 101 x ln(1051 / 101) = 237 more, some 290 in all; the rest is refused here.
    assert!(
        (200..400).contains(&sent) && throttled > 600,
        "sent {sent}, throttled {throttled}"
    );
    assert_eq!(up.requests().len(), 50 + sent);
}

/// An upstream that holds every request for `ms` before answering 200.
fn slow(ms: u64) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            std::thread::sleep(Duration::from_millis(ms));
            if !c.respond(b"slow") {
                return;
            }
        }
    })
}

/// Routes `/slow/*` (group `slow`) and `/fast/*` (group `fast`) with their groups.
fn isolated(driver: Driver, slow: SocketAddr, fast: SocketAddr, slow_group: &str) -> Gateway {
    let body = format!(
        "[[isolation]]\n{slow_group}\n[[isolation]]\nname = \"fast\"\nmax_in_flight = 100\n\
         [[upstreams]]\nname = \"slow\"\ntargets = [\"{slow}\"]\n\
         [[upstreams]]\nname = \"fast\"\ntargets = [\"{fast}\"]\n\
         [[routes]]\nname = \"slow\"\npath = \"/slow/*\"\nupstream = \"slow\"\nisolation = \"slow\"\n\
         [[routes]]\nname = \"fast\"\npath = \"/fast/*\"\nupstream = \"fast\"\nisolation = \"fast\"\n"
    );
    Gateway::start(driver, 2, "", &body)
}

/// `n` requests to `path` at once, each on its own connection: (status, code, latency).
fn at_once(addr: SocketAddr, n: usize, path: &'static str) -> Vec<(u16, String, Duration)> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                let started = Instant::now();
                let r = c.get(path);
                let code = if r.status == 200 {
                    String::new()
                } else {
                    r.error_code()
                };
                (r.status, code, started.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn a_slow_group_does_not_slow_another(driver: Driver) {
    let (slow_up, fast_up) = (slow(600), Upstream::echo());
    let gw = isolated(
        driver,
        slow_up.addr,
        fast_up.addr,
        "name = \"slow\"\nmax_in_flight = 2",
    );
    let addr = gw.addr;
    let slow_calls = std::thread::spawn(move || at_once(addr, 8, "/slow/x"));
    // While the slow group is full, the fast one answers as fast as ever, error-free.
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(gw.addr);
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        assert_eq!(c.get("/fast/x").status, 200);
        worst = worst.max(started.elapsed());
    }
    eprintln!("fast group: 50 of 50 answered 200, slowest {worst:?}");
    assert!(worst < Duration::from_millis(300), "{worst:?}");
    let slow_results = slow_calls.join().unwrap();
    let served = slow_results.iter().filter(|r| r.0 == 200).count();
    let overloaded: Vec<_> = slow_results
        .iter()
        .filter(|r| r.1 == "overloaded")
        .collect();
    assert_eq!((served, overloaded.len()), (2, 6), "{slow_results:?}");
    // Refused at once, not after waiting for the slow upstream.
    assert!(overloaded.iter().all(|r| r.2 < Duration::from_millis(300)));
    assert_eq!(slow_up.requests().len(), 2);
}

fn a_queue_waits_for_a_permit_then_gives_up(driver: Driver) {
    let up = slow(200);
    let gw = isolated(
        driver,
        up.addr,
        up.addr,
        "name = \"slow\"\nmax_in_flight = 1\nqueue = 1\nqueue_timeout = \"1s\"",
    );
    let mut results = at_once(gw.addr, 3, "/slow/x");
    results.sort_by_key(|r| r.2);
    // One refused at once (the queue holds one), one served, one served after waiting.
    assert_eq!(results[0].0, 503, "{results:?}");
    assert_eq!(results[0].1, "overloaded");
    assert!(results[0].2 < Duration::from_millis(150), "{results:?}");
    assert_eq!((results[1].0, results[2].0), (200, 200), "{results:?}");
    assert!(results[2].2 >= Duration::from_millis(380), "{results:?}");

    // A queue timeout shorter than the wait: the queued request gives up.
    let gw = isolated(
        driver,
        up.addr,
        up.addr,
        "name = \"slow\"\nmax_in_flight = 1\nqueue = 1\nqueue_timeout = \"50ms\"",
    );
    let mut results = at_once(gw.addr, 2, "/slow/x");
    results.sort_by_key(|r| r.2);
    assert_eq!(results[0].1, "overloaded", "{results:?}");
    assert!(results[0].2 >= Duration::from_millis(45), "{results:?}");
    assert_eq!(results[1].0, 200);
}

/// An upstream answering every request with `status` (and recording it).
fn answering(status: u16) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: 1\r\n\r\n{}",
                status / 100
            );
            if !c.write(head.as_bytes()) {
                return;
            }
        }
    })
}

/// Route `/*` over `targets` (round robin) with `route_extra`.
fn over(driver: Driver, targets: &[SocketAddr], route_extra: &str) -> Gateway {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{}]\n\
         [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"up\"\n{route_extra}\n",
        list.join(", ")
    );
    Gateway::start(driver, 2, "", &body)
}

fn connect_failures_are_retried_on_another_target(driver: Driver) {
    let up = Upstream::echo();
    let targets = [dead_addr(), up.addr];
    // With retries off, the dead target's turns fail.
    let gw = over(driver, &targets, "retries = { attempts = 0 }");
    let mut c = Client::connect(gw.addr);
    let failed = (0..10).filter(|_| c.get("/x").status == 502).count();
    assert!(failed >= 4, "{failed}");
    // By default one retry on another target, within the worker's own budget (a fifth
    // of its requests, at least 3 per 10 s): 6 requests need 3.
    let gw = over(driver, &targets, "");
    let mut c = Client::connect(gw.addr);
    for _ in 0..6 {
        assert_eq!(c.get("/x").status, 200);
    }
    // The budget spent, the dead target's next turns fail.
    let failed = (0..10).filter(|_| c.get("/x").status == 502).count();
    assert!(failed >= 2, "{failed}");
    // With them, every request lands on the live one, POSTs with bodies too.
    // (A budget of one retry per request: every other request needs one here.)
    let gw = over(driver, &targets, "retries = { attempts = 1, budget = 1.0 }");
    let mut c = Client::connect(gw.addr);
    for _ in 0..10 {
        assert_eq!(c.get("/x").status, 200);
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "POST /p 3"));
    }
}

/// An origin shutting down: it reads each request, then closes or resets the connection
/// without a byte of response. By default a GET goes on to the other target (as nginx's
/// `proxy_next_upstream error`); a POST is not sent twice.
fn requests_the_upstream_dropped_unanswered_are_retried_elsewhere(driver: Driver) {
    let dropping = Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            // Half its connections reset, half close.
            if c.id % 2 == 0 {
                c.reset();
            } else {
                c.close();
            }
        }
    });
    let live = Upstream::echo();
    // One worker: one round-robin rotation for the whole test.
    let gw = Gateway::start(
        driver,
        1,
        "",
        &format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\", \"{}\"]\n\
             [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"up\"\n",
            dropping.addr, live.addr
        ),
    );
    let mut c = Client::connect(gw.addr);
    for i in 0..6 {
        let r = c.get(&format!("/get/{i}"));
        assert_eq!((r.status, r.body_str()), (200, format!("GET /get/{i} 0")));
    }
    assert_eq!(
        dropping.requests().len(),
        3,
        "every other request met it first"
    );
    // A request with a body may have been acted on: never sent twice. (The rotation
    // is at the dropping target again: retries do not move it.)
    let mut posts = Vec::new();
    for _ in 0..2 {
        c = Client::connect(gw.addr);
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        posts.push(c.read_response().status);
    }
    assert_eq!(posts, [502, 200]);
    let seen_posts = |u: &Upstream| u.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!((seen_posts(&dropping), seen_posts(&live)), (1, 1));
}

fn statuses_are_retried_for_idempotent_requests_only(driver: Driver) {
    let (bad, good) = (answering(503), answering(200));
    let gw = over(
        driver,
        &[bad.addr, good.addr],
        "retries = { attempts = 1, on_status = [503] }",
    );
    let mut c = Client::connect(gw.addr);
    for _ in 0..6 {
        assert_eq!(
            c.get("/x").status,
            200,
            "a 503 is retried on the other target"
        );
    }
    assert_eq!(
        bad.requests().len(),
        3,
        "round robin sent half the first tries there"
    );
    // A POST with a body streamed upstream cannot be sent again: its 503 passes through.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nz");
        statuses.push(c.read_response().status);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        2,
        "{statuses:?}"
    );
}

fn retries_stay_within_their_budget(driver: Driver) {
    let (a, b) = (answering(503), answering(503));
    let gw = over(
        driver,
        &[a.addr, b.addr],
        "retries = { attempts = 3, on_status = [503], budget = 0.2 }",
    );
    let mut c = Client::connect(gw.addr);
    for _ in 0..100 {
        assert_eq!(c.get("/x").status, 503);
    }
    // 100 requests may add 20 retries (and a quiet route's minimum of 3), not 300.
    let sent = a.requests().len() + b.requests().len();
    eprintln!("100 requests to a failing upstream: {sent} sent upstream");
    assert!((115..=123).contains(&sent), "{sent}");
}

on_both_drivers!(
    connect_failures_are_retried_on_another_target,
    requests_the_upstream_dropped_unanswered_are_retried_elsewhere,
    statuses_are_retried_for_idempotent_requests_only,
    retries_stay_within_their_budget,
    a_slow_group_does_not_slow_another,
    a_queue_waits_for_a_permit_then_gives_up,
    breaker_trips_on_every_core_and_recovers,
    a_failed_probe_opens_it_again,
    error_rate_trips_only_with_enough_requests,
    only_configured_failures_count,
    resets_and_stalls_count_as_failures,
    fallback_answers_for_an_open_circuit_and_a_failing_upstream,
    route_timeouts_override_the_upstreams,
    adaptive_throttle_sheds_load_to_a_failing_upstream,
);

#[test]
fn stats_show_breakers_groups_and_targets() {
    let (up, _failing) = switchable();
    let body = format!(
        "[[isolation]]\nname = \"g\"\nmax_in_flight = 7\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         outlier = {{ consecutive_failures = 100 }}\n\
         [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"up\"\nisolation = \"g\"\n\
         breaker = {{ consecutive_failures = 1, open_for = \"5s\" }}\n",
        up.addr
    );
    let gw = Gateway::start(Driver::Epoll, 1, "", &body);
    let stats = || {
        let r = Client::connect(gw.admin.expect("admin listener")).get("/stats");
        assert_eq!(r.status, 200);
        r.body_str()
    };
    assert!(
        stats().contains("\"routes\":[{\"name\":\"r\",\"breaker\":\"closed\",\"trips\":0}]"),
        "{}",
        stats()
    );
    assert_eq!(get(&gw).status, 500);
    let s = stats();
    assert!(
        s.contains("\"breaker\":\"open\",\"trips\":1")
            && s.contains("\"isolation\":[{\"name\":\"g\",\"in_flight\":0,\"max_in_flight\":7,\"refused\":0}]")
            && s.contains(&format!(
                "\"upstreams\":[{{\"name\":\"up\",\"targets\":[{{\"addr\":\"{}\",\"healthy\":true,\"available\":true}}]}}]",
                up.addr
            )),
        "{s}"
    );
}

#[test]
fn resilience_config_errors_name_the_field() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "breaker = { mode = \"fuse\" }",
            "routes[0].breaker.mode",
            "unknown mode",
        ),
        (
            "breaker = { error_rate = 1.5 }",
            "routes[0].breaker.error_rate",
            "at most 1",
        ),
        (
            "breaker = { consecutive_failures = 0 }",
            "routes[0].breaker.consecutive_failures",
            "out of range",
        ),
        (
            "breaker = { failure_on = [\"4xx\"] }",
            "routes[0].breaker.failure_on[0]",
            "unknown failure",
        ),
        (
            "breaker = { mode = \"adaptive\", probes = 2 }",
            "routes[0].breaker.probes",
            "not used with",
        ),
        (
            "breaker = { k = 3.0 }",
            "routes[0].breaker.k",
            "only `mode = \"adaptive\"`",
        ),
        (
            "breaker = { open_for = \"soon\" }",
            "routes[0].breaker.open_for",
            "",
        ),
        (
            "timeouts = { response = \"0s\" }",
            "routes[0].timeouts.response",
            "between 1ms",
        ),
        (
            "fallback = { status = 99 }",
            "routes[0].fallback.status",
            "out of range",
        ),
        (
            "fallback = { body = \"x\", file = \"f\" }",
            "routes[0].fallback.file",
            "not both",
        ),
        (
            "fallback = { file = \"/nonexistent/fallback.json\" }",
            "routes[0].fallback.file",
            "cannot read",
        ),
        (
            "fallback = { headers = { \"content-length\" = \"5\" } }",
            "routes[0].fallback.headers.content-length",
            "header name other than",
        ),
        (
            "fallback = { headers = { \"x-a\" = \"a\\r\\nb: c\" } }",
            "routes[0].fallback.headers.x-a",
            "CR, LF",
        ),
        ("breaker = { windows = \"1s\" }", "", "unknown field"),
        (
            "isolation = \"nope\"",
            "routes[0].isolation",
            "unknown isolation group",
        ),
        (
            "retries = { attempts = 11 }",
            "routes[0].retries.attempts",
            "out of range",
        ),
        (
            "retries = { on_status = [200] }",
            "routes[0].retries.on_status[0]",
            "out of range",
        ),
        (
            "retries = { budget = 0.0 }",
            "routes[0].retries.budget",
            "above 0",
        ),
    ];
    for (extra, path, needle) in cases {
        assert_config_error(&simple_routes(up, "", extra), path, needle);
    }
}
