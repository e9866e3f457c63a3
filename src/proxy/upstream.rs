//! Per-worker upstream state: a balancer and a keep-alive connection pool per target.
//! Owned by one worker thread (`!Send`), so no locks: checkout and return are plain
//! `Vec` pushes and pops.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::balance::Balancer;
use super::io::{peer_closed_or_dirty, ReadBuf};
use crate::config::{UpstreamConfig, UpstreamId};
use crate::snapshot::Snapshot;

/// Size of an upstream connection's read buffer; response heads must fit in it.
pub const UPSTREAM_BUF: usize = 16 * 1024;

/// A connection to one upstream target.
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub rbuf: ReadBuf,
    pub target: usize,
    /// Came from the pool: a failure before any response byte may mean the peer closed
    /// it while idle, which makes an idempotent request safe to retry.
    pub reused: bool,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

struct TargetPool {
    addr: SocketAddr,
    idle: Vec<Idle>,
}

pub struct WorkerUpstream {
    pub balancer: Balancer,
    targets: Vec<TargetPool>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// Every upstream of one config generation, for one worker.
pub struct WorkerUpstreams {
    upstreams: Vec<WorkerUpstream>,
}

impl WorkerUpstreams {
    pub fn build(snapshot: &Snapshot) -> Self {
        WorkerUpstreams {
            upstreams: snapshot
                .config
                .upstreams
                .iter()
                .map(WorkerUpstream::new)
                .collect(),
        }
    }

    /// Takes over the idle connections of `old` (the previous generation, `old_snap`)
    /// for every target this generation still has: same upstream name, same address.
    /// A reload then costs unchanged upstreams no new connections.
    pub fn adopt_idle(&mut self, snap: &Snapshot, old: &mut WorkerUpstreams, old_snap: &Snapshot) {
        for (u, cfg) in self.upstreams.iter_mut().zip(&snap.config.upstreams) {
            let Some(o) = old_snap
                .config
                .upstreams
                .iter()
                .position(|c| c.name == cfg.name)
            else {
                continue;
            };
            let max_idle = u.max_idle;
            for (t, pool) in u.targets.iter_mut().enumerate() {
                let Some(from) = old.upstreams[o]
                    .targets
                    .iter_mut()
                    .find(|p| p.addr == pool.addr)
                else {
                    continue;
                };
                for mut idle in from.idle.drain(..) {
                    if pool.idle.len() < max_idle {
                        idle.conn.target = t;
                        pool.idle.push(idle);
                    }
                }
            }
        }
    }

    pub fn get(&mut self, id: UpstreamId) -> &mut WorkerUpstream {
        &mut self.upstreams[id.0 as usize]
    }

    /// Closes idle connections that timed out or that their peer closed.
    pub fn sweep(&mut self, now: Instant) {
        for u in &mut self.upstreams {
            let timeout = u.idle_timeout;
            for t in &mut u.targets {
                t.idle.retain(|i| {
                    now.duration_since(i.since) < timeout && !peer_closed_or_dirty(&i.conn.stream)
                });
            }
        }
    }
}

impl WorkerUpstream {
    fn new(cfg: &UpstreamConfig) -> Self {
        WorkerUpstream {
            balancer: Balancer::new(&cfg.balance, &cfg.targets),
            targets: cfg
                .targets
                .iter()
                .map(|t| TargetPool {
                    addr: t.addr,
                    idle: Vec::new(),
                })
                .collect(),
            max_idle: cfg.max_idle_per_target,
            idle_timeout: cfg.idle_timeout,
        }
    }

    /// The balancer's pick, or for a retry the target after the one that failed (the
    /// balancer is not asked again, so retries do not skew its rotation); when that one
    /// is not `available` (unhealthy, ejected), the next that is. `None`: none is.
    pub fn pick_available(
        &mut self,
        random: u64,
        key: u64,
        failed: Option<usize>,
        available: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.targets.len();
        let first = match failed {
            Some(f) => (f + 1) % n.max(1),
            None => self.balancer.pick(random, key),
        };
        // A retry goes elsewhere when there is an elsewhere.
        let may_use = |t: usize| available(t) && (n == 1 || Some(t) != failed);
        (0..n).map(|i| (first + i) % n).find(|&t| may_use(t))
    }

    pub fn addr(&self, target: usize) -> SocketAddr {
        self.targets[target].addr
    }

    /// The most recently used live idle connection to `target`, if any.
    pub fn checkout(&mut self, target: usize, now: Instant) -> Option<UpstreamConn> {
        let pool = &mut self.targets[target].idle;
        while let Some(idle) = pool.pop() {
            // Always peeked, however briefly idle: a close, or stray bytes an upstream
            // sent after its response (a body on a HEAD or 204, in a later segment),
            // must never be read as the next client's response.
            if now.saturating_duration_since(idle.since) < self.idle_timeout
                && !peer_closed_or_dirty(&idle.conn.stream)
            {
                let mut conn = idle.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection that finished a response cleanly and may be reused.
    pub fn checkin(&mut self, mut conn: UpstreamConn, now: Instant) {
        // A large response grew the buffer; idle connections keep only the head size.
        conn.rbuf.shrink_if_empty(UPSTREAM_BUF);
        let pool = &mut self.targets[conn.target].idle;
        if pool.len() < self.max_idle && conn.rbuf.is_empty() {
            pool.push(Idle { conn, since: now });
        }
    }
}

/// Opens a new connection to `addr` within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    target: usize,
    timeout: Duration,
) -> io::Result<UpstreamConn> {
    let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    };
    stream.set_nodelay(true)?;
    Ok(UpstreamConn {
        stream,
        rbuf: ReadBuf::with_capacity(UPSTREAM_BUF),
        target,
        reused: false,
    })
}
