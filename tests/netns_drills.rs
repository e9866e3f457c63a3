//! Gateways on separate hosts for real: each gateway process runs in a network namespace
//! of its own, reaching clients over one veth pair and Redis over another, so a drill can
//! cut one gateway's link to Redis while the process keeps running and serving. That
//! gateway falls back to its local share of the rate, the other stays in cluster mode,
//! the total stays within the documented bound (rate x (1 + 1/gateways)), and both are
//! back in cluster mode, holding the rate together, once the link returns.
//!
//! Needs root and a kernel that allows network namespaces; elsewhere it prints SKIPPED.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");
const RATE: f64 = 200.0;
/// The admin listeners are on the namespaces' outside addresses: they need a token.
const TOKEN: &str = "netns-drill-admin-token-01";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace with two veth pairs to this one: `10.77.<n>.0/24` for clients
/// and `10.78.<n>.0/24` for Redis (this side `.1`, the namespace `.2`). Removed on drop.
struct Host {
    ns: String,
    redis_link: String,
    n: u8,
}

impl Host {
    fn make(n: u8) -> Option<Host> {
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let host = Host {
            ns: format!("rgdrill{tag}"),
            redis_link: format!("rgr{tag}h"),
            n,
        };
        if !ip(&["netns", "add", &host.ns]) {
            return None;
        }
        for (kind, net) in [("c", 77), ("r", 78)] {
            let (outside, inside) = (format!("rg{kind}{tag}h"), format!("rg{kind}{tag}n"));
            let ok = ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]) && ip(&["link", "set", &inside, "netns", &host.ns])
                && ip(&[
                    "addr",
                    "add",
                    &format!("10.{net}.{n}.1/24"),
                    "dev",
                    &outside,
                ])
                && ip(&["link", "set", &outside, "up"])
                && ip(&[
                    "netns",
                    "exec",
                    &host.ns,
                    "ip",
                    "addr",
                    "add",
                    &format!("10.{net}.{n}.2/24"),
                    "dev",
                    &inside,
                ])
                && ip(&[
                    "netns", "exec", &host.ns, "ip", "link", "set", &inside, "up",
                ]);
            if !ok {
                return None;
            }
        }
        ip(&["netns", "exec", &host.ns, "ip", "link", "set", "lo", "up"]);
        Some(host)
    }

    fn addr(&self, port: u16) -> SocketAddr {
        format!("10.77.{}.2:{port}", self.n).parse().unwrap()
    }

    fn redis_link(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.redis_link,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes its ends of the pairs, and with them ours.
        ip(&["netns", "del", &self.ns]);
    }
}

/// An upstream on every address of this namespace, answering 200 on keep-alive.
fn upstream() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = find(&pending, b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// `ringgate run` inside `host`'s namespace, clients on 10.77.n.2:8080, admin on :9901.
struct Gateway {
    child: Child,
    admin: SocketAddr,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Gateway {
    fn start(host: &Host, redis_port: u16, up_port: u16) -> Gateway {
        let dir = temp_dir(&format!("netns-{}", host.n));
        let config = dir.join("ringgate.toml");
        let n = host.n;
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"10.77.{n}.2:8080\"]\nworkers = 2\n\
                 [admin]\nlisten = \"10.77.{n}.2:9901\"\ntoken = \"{TOKEN}\"\n\
                 [cluster]\nredis = \"redis://10.78.{n}.1:{redis_port}/0\"\ngateways = 2\ngateway_id = \"host-{n}\"\n\
                 [[upstreams]]\nname = \"up\"\ntargets = [\"10.77.{n}.1:{up_port}\"]\n\
                 [[routes]]\nname = \"r\"\npath = \"/r/*\"\nupstream = \"up\"\n\
                 limits = [ {{ key = \"route\", rate = \"{RATE}/s\", burst = 20 }} ]\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns, BIN, "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let g = Gateway {
            child,
            admin: host.addr(9901),
            addr: host.addr(8080),
            dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
                g.admin
            )
            .is_ok()),
            "the gateway in {} did not start: {}",
            host.ns,
            std::fs::read_to_string(g.dir.join("stderr")).unwrap_or_default()
        );
        g
    }

    fn mode(&self) -> String {
        let mut c = Client::connect(self.admin);
        c.send(
            format!("GET /stats HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
                .as_bytes(),
        );
        let body = c.read_response().body_str();
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        stats["limits"]["cluster"]["mode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keep-alive load on `addr` until stopped: when each answer came and whether it was a
/// 200 (a 429 is the limit; anything else fails the drill).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(Instant, bool)>> {
    std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let mut answers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let r = c.get("/r/x");
            assert!(
                matches!(r.status, 200 | 429),
                "{}: {}",
                r.status,
                r.body_str()
            );
            answers.push((Instant::now(), r.status == 200));
        }
        answers
    })
}

fn admitted(answers: &[(Instant, bool)], from: Instant, to: Instant) -> f64 {
    answers
        .iter()
        .filter(|(t, ok)| *ok && *t >= from && *t < to)
        .count() as f64
}

fn window(ms: u64) -> (Instant, Instant) {
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    (from, Instant::now())
}

#[test]
fn a_gateway_cut_off_from_redis_falls_back_and_the_other_holds_on() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (Some(a), Some(b)) = (Host::make(1), Host::make(2)) else {
        eprintln!("SKIPPED: network namespaces cannot be made here (needs root and ip netns)");
        return;
    };
    let bound = redis.cmd(&["CONFIG", "SET", "bind", "127.0.0.1 10.78.1.1 10.78.2.1"]);
    assert_eq!(
        bound,
        redis::Value::Okay,
        "Redis listens on the namespaces' links"
    );
    redis.cmd(&["CONFIG", "SET", "protected-mode", "no"]);
    let up = upstream();
    let (ga, gb) = (
        Gateway::start(&a, redis.port, up),
        Gateway::start(&b, redis.port, up),
    );
    assert!(eventually(Duration::from_secs(5), || ga.mode()
        == "cluster"
        && gb.mode() == "cluster"));
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [
        load(ga.addr, stop.clone()),
        load(ga.addr, stop.clone()),
        load(gb.addr, stop.clone()),
        load(gb.addr, stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    let together = window(1500);

    a.redis_link(false);
    let cut_at = Instant::now();
    assert!(eventually(Duration::from_secs(8), || ga.mode() == "local_fallback"));
    let fell_back = cut_at.elapsed();
    assert_eq!(gb.mode(), "cluster", "b keeps its link");
    // b's demand alone counts once a's report has expired (three lease intervals).
    std::thread::sleep(Duration::from_millis(500));
    let apart = window(1500);

    a.redis_link(true);
    let back_at = Instant::now();
    assert!(eventually(Duration::from_secs(8), || ga.mode() == "cluster"));
    let recovered = back_at.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let again = window(1500);
    stop.store(true, Ordering::Relaxed);
    let [la1, la2, lb1, lb2] = loads.map(|t| t.join().expect("no request failed"));
    let sa: Vec<_> = la1.into_iter().chain(la2).collect();
    let sb: Vec<_> = lb1.into_iter().chain(lb2).collect();
    let rate = |w: (Instant, Instant), s: &[(Instant, bool)]| {
        admitted(s, w.0, w.1) / (w.1 - w.0).as_secs_f64()
    };
    let (t_a, t_b) = (rate(together, &sa), rate(together, &sb));
    let (p_a, p_b) = (rate(apart, &sa), rate(apart, &sb));
    let (r_a, r_b) = (rate(again, &sa), rate(again, &sb));
    eprintln!(
        "together {t_a:.0}+{t_b:.0}/s; a cut off: fell back in {fell_back:?}, {p_a:.0}+{p_b:.0}/s; \
         link back: cluster again in {recovered:?}, {r_a:.0}+{r_b:.0}/s (rate {RATE}/s)"
    );
    let near = |v: f64, want: f64| (v - want).abs() <= want * 0.12;
    assert!(near(t_a + t_b, RATE), "together: {t_a:.0}+{t_b:.0}");
    // Cut off, a holds half the rate; b, alone in Redis's view, may take all of it:
    // the total stays within rate x (1 + 1/gateways).
    assert!(near(p_a, RATE / 2.0), "a alone: {p_a:.0}");
    assert!(p_a + p_b <= RATE * 1.5 * 1.12, "apart: {p_a:.0}+{p_b:.0}");
    assert!(near(r_a + r_b, RATE), "again: {r_a:.0}+{r_b:.0}");
}
