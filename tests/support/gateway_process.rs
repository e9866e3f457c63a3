//! Gateway processes for the cluster drills (`cluster_limits.rs`, `sentinel_failover.rs`):
//! `ringgate run` with two workers, `[cluster]` on a given Redis, a route `/r/*` with
//! given limits; keep-alive load on it recording when each request was answered and
//! whether it was admitted. Included with `#[path]` beside `mod support;` and
//! `support/redis.rs` (as `redis_support`).
#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::redis_support::RedisServer;
use crate::support::{eventually, free_port, Client};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringgate");
/// A `ringgate run` process, killed on drop; its log goes to a file.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// Starts `ringgate run` with two workers on `driver`, `[cluster]` on `redis` plus
    /// `cluster_extra`, and route `/r/*` with `limits`. Ports are probed free, so another
    /// process may take one first: then the gateway exits and is started again.
    /// `redis`: the value of `[cluster] redis` as TOML (`quoted(url)`, or a table).
    pub fn start(name: &str, driver: &str, redis: &str, cluster_extra: &str, limits: &str) -> Self {
        let up = upstream();
        for attempt in 0.. {
            let dir = std::env::temp_dir().join(format!(
                "ringgate-cluster-{name}-{}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let (port, admin) = (free_port(), free_port());
            let config = dir.join("ringgate.toml");
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 2\ndriver = \"{driver}\"\n\
                     [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                     [cluster]\nredis = {redis}\ngateway_id = \"{name}\"\n{cluster_extra}\n\
                     [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
                     [[routes]]\nname = \"r\"\npath = \"/r/*\"\nupstream = \"up\"\nlimits = [ {limits} ]\n"
                ),
            )
            .unwrap();
            let log = dir.join("stderr.log");
            let child = Command::new(BIN)
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut g = Gateway {
                child,
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
                admin: format!("127.0.0.1:{admin}").parse().unwrap(),
                log,
                dir,
            };
            let ready = eventually(Duration::from_secs(10), || {
                g.exited() || g.stats().is_some()
            });
            if ready && !g.exited() {
                return g;
            }
            assert!(attempt < 3, "{name} did not start:\n{}", g.log_text());
        }
        unreachable!()
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// `GET /stats` from the admin listener (`None` until it listens).
    pub fn stats(&self) -> Option<String> {
        // Probed first: `Client::connect` panics when nothing listens.
        TcpStream::connect(self.admin).ok()?;
        let mut c = Client::connect(self.admin);
        let r = c.get("/stats");
        (r.status == 200).then(|| r.body_str())
    }

    pub fn mode(&self) -> String {
        let stats = self.stats().expect("stats");
        let at = stats.find("\"mode\":\"").expect("a cluster mode in /stats") + 8;
        stats[at..].split('"').next().unwrap().to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A URL as a TOML string.
pub fn quoted(url: &str) -> String {
    format!("\"{url}\"")
}

/// An upstream answering 200 on keep-alive, left running for the test process's life.
pub fn upstream() -> SocketAddr {
    crate::support::upstream_ok()
}

/// Load on one gateway from `conns` keep-alive connections until stopped: when each
/// request was answered and whether it was admitted, and every answer that was neither
/// 200 nor 429.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Outcome>>,
}

#[derive(Default)]
pub struct Outcome {
    pub answers: Vec<(Instant, bool)>,
    pub unexpected: Vec<String>,
}

impl Outcome {
    pub fn between(&self, from: Instant, to: Instant) -> impl Iterator<Item = bool> + '_ {
        self.answers
            .iter()
            .filter(move |(t, _)| *t >= from && *t < to)
            .map(|&(_, admitted)| admitted)
    }

    pub fn admitted_between(&self, from: Instant, to: Instant) -> usize {
        self.between(from, to).filter(|&a| a).count()
    }

    /// The fraction of requests admitted.
    pub fn admitted_part(&self, from: Instant, to: Instant) -> f64 {
        let all = self.between(from, to).count().max(1);
        self.admitted_between(from, to) as f64 / all as f64
    }
}

impl Load {
    /// Closed loop: each connection sends its next request as soon as it has an answer.
    pub fn start(addr: SocketAddr, conns: usize) -> Load {
        Load::run(addr, conns, None)
    }

    /// Each connection sends one request per `every` (as paced clients do, rather than
    /// retrying refused requests at once).
    pub fn paced(addr: SocketAddr, conns: usize, every: Duration) -> Load {
        Load::run(addr, conns, Some(every))
    }

    fn run(addr: SocketAddr, conns: usize, every: Option<Duration>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..conns)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let mut out = Outcome::default();
                    let mut due = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(every) = every {
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            due += every;
                        }
                        let r = c.get("/r/x");
                        match r.status {
                            200 | 429 => out.answers.push((Instant::now(), r.status == 200)),
                            other => out.unexpected.push(format!("{other} {}", r.body_str())),
                        }
                    }
                    out
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Outcome::default();
        for t in self.threads {
            let o = t.join().unwrap();
            out.answers.extend(o.answers);
            out.unexpected.extend(o.unexpected);
        }
        out
    }
}

pub fn wait_for_mode(gateways: &[&Gateway], mode: &str, within: Duration) {
    for g in gateways {
        assert!(
            eventually(within, || g.mode() == mode),
            "{} not in mode {mode}: {:?}",
            g.addr,
            g.stats()
        );
    }
}

/// Sleeps through a measuring window of `ms` and returns its bounds.
pub fn window(ms: u64) -> (Instant, Instant) {
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    (from, Instant::now())
}

/// The Redis key of the route's daily quota holds exactly what was admitted.
pub fn quota_used_in_redis(redis: &RedisServer) -> i64 {
    let keys = match redis.cmd(&["KEYS", "rg:q:*"]) {
        redis::Value::Array(keys) => keys,
        other => panic!("{other:?}"),
    };
    assert_eq!(keys.len(), 1, "{keys:?}");
    let redis::Value::BulkString(key) = &keys[0] else {
        panic!("{keys:?}")
    };
    match redis.cmd(&["HGET", std::str::from_utf8(key).unwrap(), "used"]) {
        redis::Value::BulkString(v) => std::str::from_utf8(&v).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

pub fn redis_has_quota_key(redis: &RedisServer) -> bool {
    matches!(redis.cmd(&["KEYS", "rg:q:*"]), redis::Value::Array(k) if !k.is_empty())
}
