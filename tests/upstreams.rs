//! Upstream faults, connection pooling and load balancing over real sockets: dead,
//! resetting, closing, garbage-speaking and stalling upstreams; pooled connection reuse,
//! idle limits and stale connections (with the retry rules for idempotent requests);
//! round robin, random, least outstanding and hash balancing.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const SEC: Duration = Duration::from_secs(2);

fn conns(up: &Upstream) -> usize {
    up.connections.load(Ordering::SeqCst)
}

/// One upstream `up` with `upstream_extra` lines, routed by `/*`.
fn gateway(driver: Driver, up: SocketAddr, upstream_extra: &str) -> Gateway {
    Gateway::start(driver, 1, "", &simple_routes(up, upstream_extra, ""))
}

/// Answers every request with its own name as the body, on keep-alive.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            if !c.respond(name.as_bytes()) {
                return;
            }
        }
    })
}

/// Reads everything until the gateway closes the connection.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut all = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match stream.read(&mut tmp) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the gateway did not close the connection; got {:?}",
                    String::from_utf8_lossy(&all)
                )
            }
            Err(_) => return all,
        }
    }
}

// ---------------------------------------------------------------- faults

/// A dead upstream is a 502, and the client connection carries on: a second route on the
/// same connection still works.
fn upstream_down_is_502_and_client_connection_survives(driver: Driver) {
    let good = Upstream::echo();
    let body = format!(
        "[[upstreams]]\nname = \"dead\"\ntargets = [\"{}\"]\n[[upstreams]]\nname = \"good\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"dead\"\npath = \"/dead/*\"\nupstream = \"dead\"\n\
         [[routes]]\nname = \"good\"\npath = \"/*\"\nupstream = \"good\"\n",
        dead_addr(),
        good.addr
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let mut c = gw.connect();
    let r = c.get("/dead/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_unavailable");
    assert_eq!(
        r.header("connection"),
        None,
        "a bodiless request keeps its connection"
    );
    let r = c.get("/dead/y");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    let r = c.get("/ok");
    assert_eq!((r.status, r.body_str().as_str()), (200, "GET /ok 0"));
    assert!(!c.is_closed(Duration::from_millis(50)));
}

fn upstream_reset_after_request_is_502(driver: Driver) {
    let up = Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.reset();
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let r = c.get("/r");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(up.requests().len(), 1, "a fresh connection is not retried");
    assert_eq!(
        c.get("/again").status,
        502,
        "client connection still usable"
    );
    assert_eq!(up.requests().len(), 2);
}

fn upstream_close_without_response_is_502(driver: Driver) {
    let up = Upstream::start(|mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.close();
        }
    });
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let r = c.get("/c");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(up.requests().len(), 1);
    assert_eq!(conns(&up), 1);
    assert_eq!(
        c.get("/again").status,
        502,
        "client connection still usable"
    );
}

fn upstream_garbage_is_502(driver: Driver) {
    let up = Upstream::raw_once(b"this is not HTTP at all\r\n\r\n");
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    let r = c.get("/g");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    // A status line that is almost right is garbage too.
    let up = Upstream::raw_once(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n");
    let gw = Gateway::simple(driver, up.addr);
    let r = gw.connect().get("/g");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
}

/// Reads one request and then neither answers nor closes until the gateway gives up.
fn stalling_upstream(head: &'static [u8]) -> Upstream {
    Upstream::start(move |mut c, seen| {
        if let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.write(head);
            // Blocks until the gateway closes its side.
            while c.read_request().is_some() {}
        }
    })
}

fn upstream_stall_before_head_is_504(driver: Driver) {
    let up = stalling_upstream(b"");
    let gw = gateway(driver, up.addr, "response_timeout = \"300ms\"");
    let mut c = gw.connect();
    let t = Instant::now();
    let r = c.get("/slow");
    let took = t.elapsed();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(up.requests().len(), 1, "a timeout is not retried");
    // The client connection carries on; the stalled upstream connection was dropped.
    assert_eq!(c.get("/again").status, 504);
    assert_eq!(conns(&up), 2);
}

fn upstream_stall_in_body_closes_client_with_truncated_body(driver: Driver) {
    let up = stalling_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let gw = gateway(driver, up.addr, "body_timeout = \"300ms\"");
    let mut c = gw.connect();
    c.send(b"GET /body HTTP/1.1\r\nHost: a\r\n\r\n");
    let t = Instant::now();
    let raw = read_to_eof(&mut c.stream);
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("content-length: 10\r\n"), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\nabc"),
        "only the 3 body bytes that came: {text:?}"
    );
    assert!(
        took >= Duration::from_millis(250),
        "closed after the body timeout, not before: {took:?}"
    );
}

fn upstream_close_in_body_closes_client_with_truncated_body(driver: Driver) {
    let up =
        Upstream::raw_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    c.send(b"GET /body HTTP/1.1\r\nHost: a\r\n\r\n");
    let text = String::from_utf8_lossy(&read_to_eof(&mut c.stream)).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\n3\r\nabc\r\n"),
        "no terminating chunk: {text:?}"
    );
}

/// A listener whose accept queue is full drops further SYNs (Linux, with the default
/// `tcp_abort_on_overflow = 0`), so a connect to it hangs until its timeout.
fn connect_timeout_is_504(driver: Driver) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    let full =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(150)) {
                Ok(s) => {
                    queued.push(s);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(
        full,
        "the accept queue never filled ({} connections queued)",
        queued.len()
    );
    let gw = gateway(driver, addr, "connect_timeout = \"200ms\"");
    let mut c = gw.connect();
    let t = Instant::now();
    let r = c.get("/x");
    let took = t.elapsed();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(1),
        "took {took:?}"
    );
    drop(listener);
}

// ---------------------------------------------------------------- pool

fn sequential_requests_reuse_one_upstream_connection(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    // Different client connections share the worker's pool.
    for i in 0..5 {
        assert_eq!(gw.connect().get(&format!("/{i}")).status, 200);
    }
    assert_eq!(conns(&up), 1);
    assert!(up.requests().iter().all(|s| s.connection == 0));
}

fn max_idle_zero_opens_a_connection_per_request(driver: Driver) {
    let up = Upstream::echo();
    let gw = gateway(driver, up.addr, "max_idle_per_target = 0");
    let mut c = gw.connect();
    for i in 0..4 {
        assert_eq!(c.get(&format!("/{i}")).status, 200);
    }
    assert_eq!(conns(&up), 4);
    let ids: Vec<usize> = up.requests().iter().map(|s| s.connection).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
}

fn idle_timeout_closes_pooled_connections(driver: Driver) {
    let closed = Arc::new(AtomicUsize::new(0));
    let closed2 = closed.clone();
    let up = Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            seen.lock().unwrap().push(req);
            c.respond(b"ok");
        }
        closed2.fetch_add(1, Ordering::SeqCst);
    });
    let gw = gateway(driver, up.addr, "idle_timeout = \"200ms\"");
    let mut c = gw.connect();
    assert_eq!(c.get("/1").status, 200);
    assert_eq!(c.get("/2").status, 200);
    assert_eq!(conns(&up), 1, "reused within the idle timeout");
    // The worker's sweep closes the idle connection once it has sat idle too long.
    assert!(
        eventually(Duration::from_secs(3), || closed.load(Ordering::SeqCst)
            == 1),
        "idle connection closed by the gateway"
    );
    assert_eq!(c.get("/3").status, 200);
    assert_eq!(conns(&up), 2, "a new connection after the idle timeout");
    assert_eq!(up.last().connection, 1);
}

/// Serves `n` requests per connection for connections with id < `fragile`, then closes
/// (flagging it); later connections echo forever.
fn closes_after(n: usize, fragile: usize, closed: Arc<AtomicUsize>) -> Upstream {
    Upstream::start(move |mut c, seen| {
        let mut served = 0;
        while let Some(req) = c.read_request() {
            let body = format!("{} {} conn{}", req.method, req.target, c.id);
            seen.lock().unwrap().push(req);
            c.respond(body.as_bytes());
            served += 1;
            if c.id < fragile && served == n {
                std::thread::sleep(Duration::from_millis(50));
                c.close();
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    })
}

/// An idle pooled connection the upstream closed is noticed at checkout (a non-blocking
/// peek sees the FIN), so nothing is sent on it: a POST with a body succeeds on a fresh
/// connection just like a GET, and nothing is sent twice.
fn stale_idle_connection_is_detected_at_checkout(driver: Driver) {
    let closed = Arc::new(AtomicUsize::new(0));
    let up = closes_after(1, 2, closed.clone());
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    assert_eq!(c.get("/first").body_str(), "GET /first conn0");
    assert!(eventually(SEC, || closed.load(Ordering::SeqCst) == 1));
    std::thread::sleep(Duration::from_millis(20)); // let the FIN reach the gateway's socket
    c.send(b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "POST /post conn1"));
    assert!(eventually(SEC, || closed.load(Ordering::SeqCst) == 2));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(c.get("/get").body_str(), "GET /get conn2");
    assert_eq!(conns(&up), 3);
    let seen: Vec<(String, usize)> = up
        .requests()
        .iter()
        .map(|s| (s.target.clone(), s.connection))
        .collect();
    assert_eq!(
        seen,
        [
            ("/first".to_string(), 0),
            ("/post".to_string(), 1),
            ("/get".to_string(), 2)
        ]
    );
    assert_eq!(up.requests()[1].body, b"hello");
}

/// The upstream closes (or resets) a reused connection right after reading the next
/// request, before answering. Nothing came back, so an idempotent bodiless request is
/// retried once on a fresh connection; anything else gets a 502.
fn race_upstream(reset: bool) -> Upstream {
    Upstream::start(move |mut c, seen| {
        let mut served = 0;
        while let Some(req) = c.read_request() {
            let body = format!("{} {} conn{}", req.method, req.target, c.id);
            seen.lock().unwrap().push(req);
            if c.id == 0 && served == 1 {
                if reset {
                    c.reset();
                } else {
                    c.close();
                }
                return;
            }
            c.respond(body.as_bytes());
            served += 1;
        }
    })
}

fn seen_list(up: &Upstream) -> Vec<(String, String, usize)> {
    up.requests()
        .iter()
        .map(|s| (s.method.clone(), s.target.clone(), s.connection))
        .collect()
}

fn s(m: &str, t: &str, conn: usize) -> (String, String, usize) {
    (m.to_string(), t.to_string(), conn)
}

fn reused_connection_closed_mid_request_retries_get_once(driver: Driver) {
    for reset in [false, true] {
        let up = race_upstream(reset);
        let gw = Gateway::simple(driver, up.addr);
        let mut c = gw.connect();
        assert_eq!(c.get("/one").body_str(), "GET /one conn0");
        let r = c.get("/two");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "GET /two conn1"),
            "reset={reset}"
        );
        assert_eq!(
            seen_list(&up),
            [
                s("GET", "/one", 0),
                s("GET", "/two", 0),
                s("GET", "/two", 1)
            ],
            "reset={reset}"
        );
        assert_eq!(conns(&up), 2);
        assert_eq!(
            c.get("/three").body_str(),
            "GET /three conn1",
            "the fresh connection was pooled"
        );
    }
}

fn reused_connection_closed_mid_request_fails_post(driver: Driver) {
    let up = race_upstream(false);
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    assert_eq!(c.get("/one").body_str(), "GET /one conn0");
    c.send(b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(
        seen_list(&up),
        [s("GET", "/one", 0), s("POST", "/two", 0)],
        "the POST is not sent twice"
    );
    assert_eq!(conns(&up), 1);
    // After a request with a body fails the gateway does not keep the client connection.
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(SEC));
    // A bodiless POST is not idempotent either.
    let up = race_upstream(false);
    let gw = Gateway::simple(driver, up.addr);
    let mut c = gw.connect();
    assert_eq!(c.get("/one").status, 200);
    c.send(b"POST /two HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(seen_list(&up), [s("GET", "/one", 0), s("POST", "/two", 0)]);
    assert_eq!(
        c.get("/after").body_str(),
        "GET /after conn1",
        "no body left unread: the connection carries on"
    );
}

// ---------------------------------------------------------------- balancing

fn balanced(driver: Driver, targets: &[(&Upstream, u32)], extra: &str) -> Gateway {
    let list: Vec<String> = targets
        .iter()
        .map(|(u, w)| format!("{{ addr = \"{}\", weight = {w} }}", u.addr))
        .collect();
    let body = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{}]\n{extra}\n[[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n",
        list.join(", ")
    );
    Gateway::start(driver, 1, "", &body)
}

fn round_robin_follows_weights_exactly(driver: Driver) {
    let (a, b) = (named("a"), named("b"));
    let gw = balanced(driver, &[(&a, 1), (&b, 3)], "balance = \"round_robin\"");
    let mut c = gw.connect();
    let order: String = (0..40)
        .map(|i| c.get(&format!("/{i}")).body_str())
        .collect();
    assert_eq!((a.requests().len(), b.requests().len()), (10, 30));
    assert_eq!(&order[..8], "babbbabb", "smooth: no bursts");
    // Equal weights alternate.
    let (x, y, z) = (named("x"), named("y"), named("z"));
    let gw = balanced(driver, &[(&x, 1), (&y, 1), (&z, 1)], "");
    let mut c = gw.connect();
    let order: String = (0..9).map(|_| c.get("/").body_str()).collect();
    assert_eq!(order, "xyzxyzxyz");
}

fn random_roughly_follows_weights(driver: Driver) {
    let (a, b) = (named("a"), named("b"));
    let gw = balanced(driver, &[(&a, 1), (&b, 3)], "balance = \"random\"");
    let mut c = gw.connect();
    for i in 0..400 {
        assert_eq!(c.get(&format!("/{i}")).status, 200);
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 400);
    // Expected 100 : 300, standard deviation ~8.7.
    assert!((55..=145).contains(&na), "a got {na}, b got {nb}");
}

fn least_outstanding_avoids_busy_target(driver: Driver) {
    let release = Arc::new(AtomicBool::new(false));
    let gate = |name: &'static str| {
        let release = release.clone();
        Upstream::start(move |mut c, seen| {
            while let Some(req) = c.read_request() {
                let slow = req.target == "/slow";
                seen.lock().unwrap().push(req);
                while slow && !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                c.respond(name.as_bytes());
            }
        })
    };
    let (a, b) = (gate("a"), gate("b"));
    let gw = balanced(
        driver,
        &[(&a, 1), (&b, 1)],
        "balance = \"least_outstanding\"",
    );
    let mut slow = gw.connect();
    slow.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(eventually(SEC, || a.requests().len() + b.requests().len() == 1));
    let (busy, idle) = if a.requests().len() == 1 {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let mut c = gw.connect();
    for i in 0..8 {
        assert_eq!(
            c.get(&format!("/fast/{i}")).body_str(),
            idle,
            "request {i} while {busy} is busy"
        );
    }
    release.store(true, Ordering::SeqCst);
    assert_eq!(slow.read_response().body_str(), busy);
    // Both idle again: ties go round the targets.
    let both: Vec<String> = (0..4).map(|_| c.get("/").body_str()).collect();
    assert!(
        both.contains(&"a".to_string()) && both.contains(&"b".to_string()),
        "{both:?}"
    );
}

fn hash_on_header_is_sticky_and_spreads(driver: Driver) {
    let (a, b, c3) = (named("a"), named("b"), named("c"));
    let gw = balanced(
        driver,
        &[(&a, 1), (&b, 1), (&c3, 1)],
        "balance = \"hash\"\nhash_on = \"header:X-User\"",
    );
    let mut c = gw.connect();
    let mut first = Vec::new();
    for round in 0..3 {
        for u in 0..30 {
            c.send(
                format!("GET /r{round} HTTP/1.1\r\nHost: a\r\nx-user: user-{u}\r\n\r\n").as_bytes(),
            );
            let target = c.read_response().body_str();
            if round == 0 {
                first.push(target);
            } else {
                assert_eq!(target, first[u], "user-{u} moved in round {round}");
            }
        }
    }
    for t in ["a", "b", "c"] {
        let n = first.iter().filter(|x| *x == t).count();
        assert!(n >= 3, "target {t} got {n} of 30 users: {first:?}");
    }
    // The header name matches case-insensitively; a fresh connection changes nothing.
    let mut c2 = gw.connect();
    c2.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-USER: user-7\r\n\r\n");
    assert_eq!(c2.read_response().body_str(), first[7]);
    // Requests without the header all land on one target.
    let none: Vec<String> = (0..6).map(|_| c2.get("/").body_str()).collect();
    assert!(none.iter().all(|t| *t == none[0]), "{none:?}");
}

/// GET from a chosen loopback source address (all of 127.0.0.0/8 is local on Linux).
fn get_from(ip: IpAddr, gw: SocketAddr) -> String {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    sock.connect(&gw.into()).unwrap();
    let mut stream: TcpStream = sock.into();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let raw = read_to_eof(&mut stream);
    let at = find(&raw, b"\r\n\r\n").expect("a response head") + 4;
    String::from_utf8_lossy(&raw[at..]).into_owned()
}

fn hash_on_client_ip_is_sticky(driver: Driver) {
    let (a, b, c3) = (named("a"), named("b"), named("c"));
    let gw = balanced(
        driver,
        &[(&a, 1), (&b, 1), (&c3, 1)],
        "balance = \"hash\"\nhash_on = \"client_ip\"",
    );
    let mut picks = Vec::new();
    for host in 1..=24u8 {
        let ip = IpAddr::from([127, 0, 0, host]);
        let first = get_from(ip, gw.addr);
        for _ in 0..2 {
            assert_eq!(get_from(ip, gw.addr), first, "{ip} moved");
        }
        picks.push(first);
    }
    let all: Vec<Seen> = [&a, &b, &c3].iter().flat_map(|u| u.requests()).collect();
    assert_eq!(all.len(), 72);
    assert!(all.iter().all(|s| s
        .header("x-forwarded-for")
        .is_some_and(|v| v.starts_with("127.0.0."))));
    let used = ["a", "b", "c"]
        .iter()
        .filter(|t| picks.iter().any(|p| p == *t))
        .count();
    assert!(
        used >= 2,
        "24 client addresses all on one target: {picks:?}"
    );
    // Every request from one connection's address goes to the same target.
    let mut c = gw.connect();
    let one: Vec<String> = (0..5).map(|_| c.get("/").body_str()).collect();
    assert!(
        one.iter().all(|t| *t == picks[0]),
        "127.0.0.1 went to {one:?}, first to {}",
        picks[0]
    );
}

on_both_drivers!(
    upstream_down_is_502_and_client_connection_survives,
    upstream_reset_after_request_is_502,
    upstream_close_without_response_is_502,
    upstream_garbage_is_502,
    upstream_stall_before_head_is_504,
    upstream_stall_in_body_closes_client_with_truncated_body,
    upstream_close_in_body_closes_client_with_truncated_body,
    connect_timeout_is_504,
    sequential_requests_reuse_one_upstream_connection,
    max_idle_zero_opens_a_connection_per_request,
    idle_timeout_closes_pooled_connections,
    stale_idle_connection_is_detected_at_checkout,
    reused_connection_closed_mid_request_retries_get_once,
    reused_connection_closed_mid_request_fails_post,
    round_robin_follows_weights_exactly,
    random_roughly_follows_weights,
    least_outstanding_avoids_busy_target,
    hash_on_header_is_sticky_and_spreads,
    hash_on_client_ip_is_sticky,
);
