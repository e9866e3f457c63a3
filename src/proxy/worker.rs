//! `WorkerCtx`: everything one worker owns on the request path. Lives in an `Rc` shared
//! by the worker's tasks; never crosses threads.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buffered::BufferBudget;
use super::client::{CLIENT_BUF, SPARE_CLIENT_BUFFERS};
use super::io::SpareBuffers;
use super::parked::ParkedDeadlines;
use super::relay::{GATHER_MAX, SPARE_GATHER_BUFFERS};
use super::upstream::WorkerUpstreams;
use crate::auth::cache::WorkerApps;
use crate::auth::fleet_nonces::FleetNonces;
use crate::auth::nonce::NonceCache;
use crate::filters::Env;
use crate::limits::worker::WorkerLimiter;
use crate::mix::WorkerRng;
use crate::resilience::load_shed::LoadShed;
use crate::resilience::local_budget::LocalRetryBudget;
use crate::signal::LocalSignal;
use crate::snapshot::Snapshot;
use crate::trace::RequestIdGen;

fn install_metrics(metrics: &mut crate::metrics::WorkerMetrics, snapshot: &Snapshot) {
    let routes: Vec<&str> = snapshot
        .config
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let upstreams: Vec<&str> = snapshot
        .config
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    metrics.install(snapshot.generation, &routes, &upstreams);
}

pub struct WorkerCtx {
    pub id: usize,
    /// The current config generation. Cloning the `Rc` per request is a local,
    /// non-atomic increment: no cache line shared with other cores.
    current: RefCell<Rc<WorkerGen>>,
    /// A generation prepared by a reload, waiting for its commit.
    prepared: RefCell<Option<WorkerGen>>,
    pub ids: RequestIdGen,
    /// Replay protection, shared with every other worker.
    pub nonces: Arc<NonceCache>,
    /// With `[cluster]`: this worker's claims of nonces for the whole fleet.
    pub fleet_nonces: Option<Rc<FleetNonces>>,
    /// Request bodies held while their signatures are pending.
    pub buffered: BufferBudget,
    /// Read buffers of client connections gone idle, for those waking up.
    pub spare_buffers: SpareBuffers,
    /// Buffers that gather a small body with its head for one write (`relay`).
    pub gather_buffers: SpareBuffers,
    /// Deadlines of the connections parked between requests (swept on the tick).
    pub parked: ParkedDeadlines,
    /// App records cached from the Redis-backed registry (`None` with an apps file).
    pub apps: Option<WorkerApps>,
    /// This core's rate-limit buckets and quota grants.
    pub limiter: WorkerLimiter,
    /// Fired when the worker drains: it stops accepting, and every response from then on
    /// says `Connection: close`.
    pub drain: LocalSignal,
    /// Fired when connections between requests are to close now (a stop). A handover to a
    /// new process (an upgrade) leaves it unfired: an idle connection is served its next
    /// request (with `Connection: close`) rather than closed under a client that may be
    /// sending one, which would fail that request.
    pub close_idle: LocalSignal,
    /// This worker's request metrics (read by a scrape through the command channel).
    pub metrics: RefCell<crate::metrics::WorkerMetrics>,
    /// This worker's access-log buffer (`None` without `[access_log]`).
    pub log: Option<crate::access_log::WorkerLog>,
    open_connections: Cell<usize>,
    /// At most one warning per second per worker: during an upstream outage every
    /// request fails, and logging each one would block the worker on stderr.
    last_warning: Cell<Option<Instant>>,
    suppressed_warnings: Cell<u64>,
    /// Fast random numbers for balancing and adaptive throttling.
    pub rng: WorkerRng,
    /// Whether this worker, its loop running late, sheds new requests (fed by the tick
    /// with the loop's delay).
    pub shed: LoadShed,
    /// Whether it turns new TLS connections away before their handshakes: fed by the
    /// tick with the longer of the loop's delay and the longest a connection waited in
    /// the accept queue since the tick before (a flood of handshakes queues there, where
    /// the loop's delay does not see it). Plain connections are not refused this way: a
    /// refusal costs them what serving their first request would (a read and a write),
    /// and clients that reconnect at once only come back (measured).
    pub shed_connections: LoadShed,
    accept_wait: Cell<Duration>,
}

impl WorkerCtx {
    pub fn new(
        id: usize,
        snapshot: Arc<Snapshot>,
        seed: u64,
        nonces: Arc<NonceCache>,
        apps: Option<WorkerApps>,
        limiter: WorkerLimiter,
        log: Option<crate::access_log::WorkerLog>,
    ) -> Self {
        let metrics = RefCell::new(crate::metrics::WorkerMetrics::default());
        let limit = snapshot.config.server.max_loop_delay;
        let (shed, shed_connections) = (LoadShed::new(limit), LoadShed::new(limit));
        install_metrics(&mut metrics.borrow_mut(), &snapshot);
        WorkerCtx {
            id,
            metrics,
            log,
            current: RefCell::new(Rc::new(WorkerGen::new(snapshot))),
            prepared: RefCell::new(None),
            ids: RequestIdGen::new(seed),
            nonces,
            fleet_nonces: None,
            buffered: BufferBudget::default(),
            spare_buffers: SpareBuffers::new(CLIENT_BUF, SPARE_CLIENT_BUFFERS),
            gather_buffers: SpareBuffers::new(GATHER_MAX, SPARE_GATHER_BUFFERS),
            parked: ParkedDeadlines::default(),
            apps,
            limiter,
            drain: LocalSignal::default(),
            close_idle: LocalSignal::default(),
            open_connections: Cell::new(0),
            last_warning: Cell::new(None),
            suppressed_warnings: Cell::new(0),
            rng: WorkerRng::new(seed),
            shed,
            shed_connections,
            accept_wait: Cell::new(Duration::ZERO),
        }
    }

    /// Claims nonces fleet-wide too (`[cluster]`).
    pub fn with_fleet_nonces(mut self, fleet: Option<Rc<FleetNonces>>) -> Self {
        self.fleet_nonces = fleet;
        self
    }

    /// The generation a new request starts with; it keeps it to the end, so a reload
    /// never changes anything under a request in flight.
    pub fn generation(&self) -> Rc<WorkerGen> {
        self.current.borrow().clone()
    }

    /// Builds this worker's state for a new generation, not yet serving.
    pub fn prepare(&self, snapshot: Arc<Snapshot>) {
        *self.prepared.borrow_mut() = Some(WorkerGen::new(snapshot));
    }

    /// Switches new requests to the prepared generation, which takes over the old one's
    /// idle connections to targets it still has.
    pub fn commit(&self, generation: u64) {
        // Taken in its own statement: the borrow must end before the put-back below.
        let prepared = self.prepared.borrow_mut().take();
        let fresh = match prepared {
            Some(g) if g.snapshot.generation == generation => g,
            other => {
                *self.prepared.borrow_mut() = other;
                return;
            }
        };
        install_metrics(&mut self.metrics.borrow_mut(), &fresh.snapshot);
        let limit = fresh.snapshot.config.server.max_loop_delay;
        self.shed.set_limit(limit);
        self.shed_connections.set_limit(limit);
        {
            let old = self.current.borrow();
            fresh.upstreams.borrow_mut().adopt_idle(
                &fresh.snapshot,
                &mut old.upstreams.borrow_mut(),
                &old.snapshot,
            );
        }
        *self.current.borrow_mut() = Rc::new(fresh);
    }

    /// Drops a prepared generation whose reload was aborted.
    pub fn abort(&self, generation: u64) {
        let mut prepared = self.prepared.borrow_mut();
        if prepared
            .as_ref()
            .is_some_and(|g| g.snapshot.generation == generation)
        {
            *prepared = None;
        }
    }

    pub fn draining(&self) -> bool {
        self.drain.is_fired()
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.get()
    }

    /// Logs a warning unless one was logged in the last second; says how many were
    /// suppressed since. The message is only built when it is logged.
    pub fn warn_limited(&self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last_warning
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed_warnings
                .set(self.suppressed_warnings.get() + 1);
            return;
        }
        self.last_warning.set(Some(now));
        match self.suppressed_warnings.replace(0) {
            0 => log::warn!("worker {}: {}", self.id, message()),
            n => log::warn!(
                "worker {}: {} ({n} similar warnings suppressed)",
                self.id,
                message()
            ),
        }
    }

    /// Counts a connection for its lifetime.
    pub fn connection_guard(self: &Rc<Self>) -> ConnectionGuard {
        self.open_connections.set(self.open_connections.get() + 1);
        ConnectionGuard(self.clone())
    }

    /// Whether a new request is to be shed (refused at once, 503 `overloaded`) because
    /// this worker is behind; see `LoadShed`.
    pub fn sheds_next_request(&self) -> bool {
        !self.shed.admit(|| self.rng.unit())
    }

    /// Whether a new TLS connection is to be turned away before its handshake because
    /// this worker is behind (`LoadShed::refuse_connection`).
    pub fn sheds_new_connection(&self) -> bool {
        self.shed_connections.refuse_connection(|| self.rng.unit())
    }

    /// A connection just accepted had waited `waited` in the accept queue, as the
    /// kernel counts it: in ticks of up to 10 ms (HZ=100), one of which is discounted so
    /// that a connection accepted at once never reads as late.
    pub fn note_accept_wait(&self, waited: Duration) {
        let waited = waited.saturating_sub(Duration::from_millis(10));
        if waited > self.accept_wait.get() {
            self.accept_wait.set(waited);
        }
    }

    /// Draining: nothing new is taken anyway, and what is in flight is not refused on
    /// the strength of a share measured before.
    pub fn stop_shedding(&self) {
        self.shed.set_limit(None);
        self.shed_connections.set_limit(None);
    }

    /// The tick: how late it woke (`delay`) at `now` feeds both shedding controllers.
    pub fn on_tick(&self, now: Instant, delay: Duration) {
        self.shed.on_tick(now, delay);
        let waited = self.accept_wait.replace(Duration::ZERO);
        self.shed_connections.on_tick(now, delay.max(waited));
    }

    /// What the filters of a request may use of this worker.
    pub fn env(&self) -> Env<'_> {
        Env {
            ids: &self.ids,
            nonces: &self.nonces,
            fleet_nonces: self.fleet_nonces.as_deref(),
            apps: self.apps.as_ref(),
            limiter: &self.limiter,
            rng: &self.rng,
        }
    }
}

/// One config generation as a worker uses it: the shared snapshot plus the worker's own
/// upstream state built for it (pools and balancers are indexed by that snapshot's ids).
pub struct WorkerGen {
    pub snapshot: Arc<Snapshot>,
    pub upstreams: RefCell<WorkerUpstreams>,
    /// Per route: this worker's retry budget, for routes without a `retries` section.
    pub local_budgets: Vec<LocalRetryBudget>,
}

impl WorkerGen {
    fn new(snapshot: Arc<Snapshot>) -> Self {
        WorkerGen {
            upstreams: RefCell::new(WorkerUpstreams::build(&snapshot)),
            local_budgets: snapshot
                .config
                .routes
                .iter()
                .map(|_| LocalRetryBudget::default())
                .collect(),
            snapshot,
        }
    }
}

impl std::ops::Deref for WorkerGen {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

pub struct ConnectionGuard(Rc<WorkerCtx>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let n = &self.0.open_connections;
        n.set(n.get().saturating_sub(1));
    }
}
