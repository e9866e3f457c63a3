//! Load shedding (`server.max_loop_delay`): a worker offered more than it can do sheds a
//! share of new requests right after their heads (503 `overloaded`, `retry-after: 1`,
//! the connection kept), before the upstream sees them, counts them, and stops once it
//! has caught up; a flood of new TLS connections is met by closing a share of them
//! before their handshakes. The figures at twice the capacity are in
//! `benches/soak/RESULTS.md` (`benches/load/overload.sh`); here the outcomes are
//! asserted exactly.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// What the overloading clients saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    shed: AtomicU64,
}

/// `threads` x `per_thread` keep-alive connections, each sending its next request as
/// soon as its answer is read, until `stop`: the worker always has every connection's
/// request to serve. Every answer must be a 200 or a shed 503 on a connection that
/// stays open.
fn overload(
    addr: std::net::SocketAddr,
    threads: usize,
    per_thread: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                const REQUEST: &[u8] = b"GET /load HTTP/1.1\r\nHost: test\r\n\r\n";
                let mut conns: Vec<Client> =
                    (0..per_thread).map(|_| Client::connect(addr)).collect();
                for c in &mut conns {
                    c.send(REQUEST);
                }
                while !stop.load(Ordering::Relaxed) {
                    for c in &mut conns {
                        let r = c.read_response();
                        match r.status {
                            200 => seen.ok.fetch_add(1, Ordering::Relaxed),
                            503 => {
                                assert_eq!(r.error_code(), "overloaded");
                                assert_eq!(r.header("retry-after"), Some("1"));
                                assert_ne!(r.header("connection"), Some("close"));
                                seen.shed.fetch_add(1, Ordering::Relaxed)
                            }
                            other => panic!("status {other}: {}", r.body_str()),
                        };
                        c.send(REQUEST);
                    }
                }
                // The last requests sent are answered too.
                for c in &mut conns {
                    match c.read_response().status {
                        200 => seen.ok.fetch_add(1, Ordering::Relaxed),
                        _ => seen.shed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect()
}

fn shed_ratio(admin: std::net::SocketAddr) -> f64 {
    let text = Client::connect(admin).get("/metrics").body_str();
    text.lines()
        .find(|l| l.starts_with("ringgate_worker_shed_ratio{worker=\"0\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("ringgate_worker_shed_ratio in /metrics")
}

fn sheds_when_behind_and_recovers(driver: Driver) {
    let upstream = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "max_loop_delay = \"5ms\"\n",
        &simple_routes(upstream.addr, "", ""),
    );
    let admin = gw.admin.unwrap();
    // Light load: nothing shed.
    let mut c = gw.connect();
    for _ in 0..50 {
        assert_eq!(c.get("/light").status, 200);
    }
    assert_eq!(
        metric(admin, "ringgate_requests_shed_total{worker=\"0\""),
        Some(0)
    );

    // 384 connections always waiting: the worker's loop runs persistently late.
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Seen::default()));
    let clients = overload(gw.addr, 8, 48, stop.clone(), seen.clone());
    let began = Instant::now();
    let mut ratio_seen = 0.0f64;
    while began.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        ratio_seen = ratio_seen.max(shed_ratio(admin));
        if seen.shed.load(Ordering::Relaxed) >= 200 && began.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().expect("an overloading client failed");
    }
    let (ok, shed) = (
        seen.ok.load(Ordering::Relaxed),
        seen.shed.load(Ordering::Relaxed),
    );
    eprintln!(
        "{driver:?}: {ok} served, {shed} shed in {:?}, worst shed ratio {ratio_seen}",
        began.elapsed()
    );
    assert!(
        shed >= 200,
        "shed {shed} (served {ok}) in {:?}",
        began.elapsed()
    );
    assert!(ok > 0, "some requests are still served while shedding");
    assert!(ratio_seen > 0.0);
    // Counted exactly, and shed before the upstream: it saw only the served ones.
    assert_eq!(
        metric(admin, "ringgate_requests_shed_total{worker=\"0\""),
        Some(shed)
    );
    assert_eq!(upstream.requests().len() as u64, 50 + ok);

    // Caught up: the share comes back to nothing and every request is served.
    assert!(
        eventually(Duration::from_secs(5), || shed_ratio(admin) == 0.0),
        "still shedding {} after the load stopped",
        shed_ratio(admin)
    );
    let mut c = gw.connect();
    for _ in 0..50 {
        assert_eq!(c.get("/light").status, 200);
    }
    assert_eq!(
        metric(admin, "ringgate_requests_shed_total{worker=\"0\""),
        Some(shed)
    );
}

/// Switched off, the same load is served in full, however late the loop runs.
fn off_never_sheds(driver: Driver) {
    let upstream = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "max_loop_delay = \"off\"\n",
        &simple_routes(upstream.addr, "", ""),
    );
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Seen::default()));
    let clients = overload(gw.addr, 8, 48, stop.clone(), seen.clone());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().expect("an overloading client failed");
    }
    assert_eq!(seen.shed.load(Ordering::Relaxed), 0);
    assert!(seen.ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        metric(
            gw.admin.unwrap(),
            "ringgate_requests_shed_total{worker=\"0\""
        ),
        Some(0)
    );
}

/// 300 TLS clients connect and send their ClientHellos at once: the worker, taking eight
/// connections a turn and signing for each (RSA 3072: milliseconds a handshake), leaves
/// the last ones waiting in the accept queue far longer than `max_loop_delay`, and
/// closes a share of them before their handshakes. Every client either completes its request (200) or is closed before any
/// server bytes; the closes are counted; once the flood is over, new clients are served.
fn tls_flood_is_refused_before_handshakes(driver: Driver) {
    use std::io::{Read, Write};
    let dir = temp_dir("overload-tls");
    let cert = tls_support::make_rsa_cert(&dir, "api", &["api.example.com"]);
    let upstream = Upstream::echo();
    let d = dir.display();
    let gw = Gateway::start(
        driver,
        1,
        "max_loop_delay = \"5ms\"\n",
        &format!(
            "{}[tls]\nlisten = [\"127.0.0.1:0\"]\nsession_resumption = false\n\
             [[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n",
            simple_routes(upstream.addr, "", "")
        ),
    );
    let admin = gw.admin.unwrap();
    let config = tls_support::client(&[&cert], false, &["http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
    let hello = |tcp: &mut std::net::TcpStream| {
        let mut conn = rustls::ClientConnection::new(config.clone(), name.clone()).unwrap();
        conn.write_tls(tcp).unwrap();
        conn
    };
    // A flood, not a burst: a burst is taken in one late turn of the loop, which alone
    // is no overload (`ONSET`).
    let began = Instant::now();
    let mut clients = Vec::new();
    while began.elapsed() < Duration::from_millis(1500) && clients.len() < 1500 {
        let mut tcp = std::net::TcpStream::connect(gw.tls_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = hello(&mut tcp);
        clients.push(rustls::StreamOwned::new(conn, tcp));
    }
    let (mut served, mut shed, mut refused) = (0u64, 0u64, 0u64);
    for mut s in clients {
        let asked = s
            .write_all(b"GET /flood HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
            .and_then(|_| s.flush());
        let mut answer = [0u8; 12];
        match asked.and_then(|_| s.read_exact(&mut answer)) {
            Ok(()) if &answer == b"HTTP/1.1 200" => served += 1,
            // Handshaken, then the request was shed: the loop ran late too.
            Ok(()) if &answer == b"HTTP/1.1 503" => shed += 1,
            Ok(()) => panic!("{}", String::from_utf8_lossy(&answer)),
            Err(_) => {
                assert!(
                    s.conn.is_handshaking(),
                    "closed after its handshake, not before"
                );
                refused += 1;
            }
        }
    }
    let report = Client::connect(admin).get("/metrics").body_str();
    eprintln!(
        "{driver:?}: {served} served, {shed} shed, {refused} closed before the handshake\n{}",
        report
            .lines()
            .filter(|l| l.starts_with("ringgate_worker_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(refused > 0, "nothing refused ({served} served)");
    assert!(served > 0, "some handshakes are still completed");
    assert_eq!(
        metric(admin, "ringgate_connections_shed_total{worker=\"0\""),
        Some(refused)
    );
    assert_eq!(
        metric(admin, "ringgate_tls_handshakes_total{result=\"full\"}"),
        Some(served + shed)
    );
    assert_eq!(
        metric(admin, "ringgate_requests_shed_total{worker=\"0\""),
        Some(shed)
    );
    // The flood is over: the share comes back to nothing and new clients are served.
    assert!(eventually(Duration::from_secs(5), || {
        let text = Client::connect(admin).get("/metrics").body_str();
        text.lines().any(|l| {
            l.starts_with("ringgate_worker_shed_connections_ratio{worker=\"0\"")
                && l.ends_with(" 0")
        })
    }));
    for _ in 0..5 {
        let mut s = tls_support::connect(gw.tls_addr(), config.clone(), "api.example.com");
        assert_eq!(tls_support::get(&mut s, "api.example.com", "/after").0, 200);
    }
}

on_both_drivers!(
    sheds_when_behind_and_recovers,
    off_never_sheds,
    tls_flood_is_refused_before_handshakes
);

#[test]
fn max_loop_delay_is_checked() {
    for (value, needle) in [
        ("\"1ms\"", "must be between 5ms and 10s, or \"off\""),
        ("\"11s\"", "must be between 5ms and 10s"),
        ("\"soon\"", "invalid duration"),
    ] {
        assert_server_error(
            &format!("max_loop_delay = {value}"),
            "server.max_loop_delay",
            needle,
        );
    }
    let text = config_text(Driver::Epoll, 1, "max_loop_delay = \"20ms\"", "");
    let config = ringgate::config::parse(&text).expect("20ms is fine");
    assert_eq!(
        config.server.max_loop_delay,
        Some(Duration::from_millis(20))
    );
    // (Not through `config_text`, which turns shedding off for the other tests.)
    let config = ringgate::config::parse("[server]\nlisten = [\"127.0.0.1:0\"]\n").unwrap();
    assert_eq!(
        config.server.max_loop_delay,
        Some(Duration::from_millis(50)),
        "the default"
    );
}
