//! Per-worker upstream state: a balancer and a keep-alive connection pool per target.
//! Owned by one worker thread (`!Send`), so no locks: checkout and return are plain
//! `Vec` pushes and pops.
//!
//! The pool is sized by what the worker needs, not by a fixed cap: it keeps as many idle
//! connections as were recently in use at once (the peak of the last ten seconds), reuses
//! the most recently used first (so rarely needed ones age out), and `idle_timeout`
//! closes the rest. A small fixed cap would make every request beyond it open a new
//! origin connection under load. An idle connection holds no read buffer: buffers go back
//! to the upstream's spare list and are taken again at checkout.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::balance::Balancer;
use super::io::{peer_closed_or_dirty, ReadBuf, SpareBuffers};
use super::wire::Stream;
use crate::config::{UpstreamConfig, UpstreamId, UpstreamTls};
use crate::snapshot::Snapshot;
use crate::tls::conn::TlsConn;

/// Size of an upstream connection's read buffer; response heads must fit in it.
pub const UPSTREAM_BUF: usize = 16 * 1024;

/// Sweeps (one a second) over which the peak of connections in use is remembered.
const PEAK_WINDOW: usize = 10;

/// Spare read buffers a worker keeps for connections coming out of the pool.
const SPARE_BUFFERS: usize = 256;

/// A connection to one target's count of open and busy connections.
#[derive(Debug, Default)]
pub struct TargetCount {
    /// Open connections, busy or idle.
    open: Cell<usize>,
    /// Connections serving a request (or being opened for one).
    busy: Cell<usize>,
    /// The most busy at once since the last sweep.
    peak: Cell<usize>,
}

impl TargetCount {
    fn busy_up(&self) {
        self.busy.set(self.busy.get() + 1);
        self.peak.set(self.peak.get().max(self.busy.get()));
    }
}

/// A connection to one upstream target.
pub struct UpstreamConn {
    pub stream: Stream,
    pub rbuf: ReadBuf,
    pub target: usize,
    /// Came from the pool: a failure before any response byte may mean the peer closed
    /// it while idle, which makes an idempotent request safe to retry.
    pub reused: bool,
    /// The target's counts this connection is part of (busy while out of the pool).
    count: Rc<TargetCount>,
    busy: bool,
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.count.open.set(self.count.open.get() - 1);
        if self.busy {
            self.count.busy.set(self.count.busy.get() - 1);
        }
    }
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

struct TargetPool {
    addr: SocketAddr,
    /// Oldest first: checkout pops the most recently used, trimming takes the oldest.
    idle: Vec<Idle>,
    count: Rc<TargetCount>,
    /// The peaks of the last `PEAK_WINDOW` sweeps.
    peaks: [usize; PEAK_WINDOW],
}

pub struct WorkerUpstream {
    pub balancer: Balancer,
    targets: Vec<TargetPool>,
    max_idle: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout: Duration,
    /// Read buffers of connections that went idle, for the next checkout or connect.
    spare: SpareBuffers,
}

/// Every upstream of one config generation, for one worker.
pub struct WorkerUpstreams {
    upstreams: Vec<WorkerUpstream>,
    sweeps: usize,
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
            sweeps: 0,
        }
    }

    /// Takes over the idle connections of `old` (the previous generation, `old_snap`)
    /// for every target this generation still has: same upstream name and TLS settings,
    /// same address.
    /// A reload then costs unchanged upstreams no new connections.
    pub fn adopt_idle(&mut self, snap: &Snapshot, old: &mut WorkerUpstreams, old_snap: &Snapshot) {
        for (u, cfg) in self.upstreams.iter_mut().zip(&snap.config.upstreams) {
            // Connections made with other TLS settings (or without TLS) are not reused.
            let tls_settings = |c: &UpstreamConfig| c.tls.as_ref().map(|t| t.settings);
            let Some(o) = old_snap
                .config
                .upstreams
                .iter()
                .position(|c| c.name == cfg.name && tls_settings(c) == tls_settings(cfg))
            else {
                continue;
            };
            let max_idle = u.max_idle.unwrap_or(usize::MAX);
            for (t, pool) in u.targets.iter_mut().enumerate() {
                let Some(from) = old.upstreams[o]
                    .targets
                    .iter_mut()
                    .find(|p| p.addr == pool.addr)
                else {
                    continue;
                };
                pool.peaks = from.peaks;
                for mut idle in from.idle.drain(..) {
                    if pool.idle.len() < max_idle {
                        idle.conn.target = t;
                        idle.conn.count_in(&pool.count);
                        pool.idle.push(idle);
                    }
                }
            }
        }
    }

    pub fn get(&mut self, id: UpstreamId) -> &mut WorkerUpstream {
        &mut self.upstreams[id.0 as usize]
    }

    /// Once a second: closes idle connections that timed out or that their peer closed,
    /// and those beyond what the last ten seconds needed at once.
    pub fn sweep(&mut self, now: Instant) {
        self.sweeps += 1;
        let slot = self.sweeps % PEAK_WINDOW;
        for u in &mut self.upstreams {
            let timeout = u.idle_timeout;
            for t in &mut u.targets {
                t.peaks[slot] = t.count.peak.get();
                t.count.peak.set(t.count.busy.get());
                let needed = t.peaks.iter().max().copied().unwrap_or(0);
                let keep = needed.saturating_sub(t.count.busy.get());
                let excess = t.idle.len().saturating_sub(keep);
                t.idle.drain(..excess);
                t.idle
                    .retain_mut(|i| now.duration_since(i.since) < timeout && i.conn.is_clean());
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
                    count: Rc::default(),
                    peaks: [0; PEAK_WINDOW],
                })
                .collect(),
            max_idle: cfg.max_idle_per_target,
            max_connections: cfg.max_connections_per_target,
            idle_timeout: cfg.idle_timeout,
            spare: SpareBuffers::new(UPSTREAM_BUF, SPARE_BUFFERS),
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
        while let Some(mut idle) = pool.pop() {
            // Always peeked, however briefly idle: a close, or stray bytes an upstream
            // sent after its response (a body on a HEAD or 204, in a later segment),
            // must never be read as the next client's response. A readiness poll kept
            // armed on idle connections (io_uring PollAdd, cancelled at checkout) makes
            // no syscall, but measured 12% more CPU per request than this one peek: two
            // queued operations, each with its fd lookup, socket poll and wait-queue
            // locking, against one short syscall (benches/load/RESULTS.md, 2026-12-05).
            if now.saturating_duration_since(idle.since) < self.idle_timeout && idle.conn.is_clean()
            {
                let mut conn = idle.conn;
                conn.reused = true;
                conn.rbuf = self.spare.take();
                conn.set_busy(true);
                return Some(conn);
            }
        }
        None
    }

    /// Whether a new connection to `target` may be opened now
    /// (`max_connections_per_target`).
    pub fn may_open(&self, target: usize) -> bool {
        self.max_connections
            .is_none_or(|max| self.targets[target].count.open.get() < max)
    }

    /// Counts a connection being opened to `target` (as busy) and hands it the read
    /// buffer and count it will have once it is open.
    pub fn opening(&mut self, target: usize) -> Opening {
        let count = self.targets[target].count.clone();
        count.open.set(count.open.get() + 1);
        count.busy_up();
        Opening {
            target,
            count: Some(count),
            buf: self.spare.take(),
        }
    }

    /// Returns a connection that finished a response cleanly and may be reused; its read
    /// buffer goes to the spare list.
    pub fn checkin(&mut self, mut conn: UpstreamConn, now: Instant) {
        let max_idle = self.max_idle.unwrap_or(usize::MAX);
        let pool = &mut self.targets[conn.target].idle;
        if pool.len() < max_idle && conn.rbuf.is_empty() && !conn.stream.has_buffered() {
            conn.set_busy(false);
            // (A buffer a large response grew is freed, not kept.)
            self.spare.put(std::mem::take(&mut conn.rbuf));
            pool.push(Idle { conn, since: now });
        }
    }
}

impl UpstreamConn {
    /// Whether an idle connection may serve the next request: its peer has not closed it
    /// and nothing arrived unasked (on TLS, not even a record: a close_notify or a
    /// stray response byte alike make it unusable).
    fn is_clean(&mut self) -> bool {
        !self.stream.has_buffered() && !peer_closed_or_dirty(self.stream.tcp())
    }

    fn set_busy(&mut self, busy: bool) {
        if busy && !self.busy {
            self.count.busy_up();
        } else if !busy && self.busy {
            self.count.busy.set(self.count.busy.get() - 1);
        }
        self.busy = busy;
    }

    /// Moves this (idle) connection to another generation's count of its target.
    fn count_in(&mut self, count: &Rc<TargetCount>) {
        self.count.open.set(self.count.open.get() - 1);
        count.open.set(count.open.get() + 1);
        self.count = count.clone();
    }
}

/// A connection being opened: counted from the start, so concurrent requests see it
/// against `max_connections_per_target`; uncounted if the connect fails.
pub struct Opening {
    target: usize,
    count: Option<Rc<TargetCount>>,
    buf: ReadBuf,
}

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(count) = self.count.take() {
            count.open.set(count.open.get() - 1);
            count.busy.set(count.busy.get() - 1);
        }
    }
}

/// Opens a new connection to `addr` within `timeout`, the TLS handshake included when
/// the upstream has `tls`.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    mut opening: Opening,
    timeout: Duration,
) -> io::Result<UpstreamConn> {
    let open = async {
        let tcp = TcpStream::connect_addr(addr).await?;
        tcp.set_nodelay(true)?;
        io::Result::Ok(match tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let name = tls.server_name(addr);
                Stream::Tls(Box::new(
                    TlsConn::connect(tcp, tls.client.clone(), name).await?,
                ))
            }
        })
    };
    let stream = match monoio::time::timeout(timeout, open).await {
        Ok(r) => r?,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    };
    let rbuf = std::mem::take(&mut opening.buf);
    let Some(count) = opening.count.take() else {
        return Err(io::Error::other("connection counted twice"));
    };
    Ok(UpstreamConn {
        stream,
        rbuf,
        target: opening.target,
        reused: false,
        count,
        busy: true,
    })
}
