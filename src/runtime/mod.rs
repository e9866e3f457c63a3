//! The thread-per-core runtime: one pinned worker thread per CPU, each with its own
//! monoio runtime and SO_REUSEPORT listeners; the control side (admin, signals) talks to
//! them through crossbeam channels and a few atomics. The control side plugs in through
//! `ControlSide` (see `crate::gateway`), so this module never imports it.

mod control_side;
mod driver;
mod handover;
mod listener;
mod refuse;
mod reload;
mod worker;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

pub use control_side::{AdminListener, ControlSide};
pub use driver::DriverKind;
pub use listener::Inherited;
pub use worker::WorkerCommand;
use worker::{WorkerAppsLink, WorkerLimitsLink, WorkerSpec};

use crate::auth::cache::{CacheStats, MAX_QUEUED_FETCHES};
use crate::auth::directory::{Directory, DirectoryStats};
use crate::auth::fleet_nonces::{FleetNonceStats, FleetTarget};
use crate::auth::nonce::NonceCache;
use crate::auth::store::RedisStore;
use crate::config::{AppsSource, ClusterConfig, Config, ListenConfig, WorkerCount};
use crate::limits::lease::ClusterStatus;
use crate::limits::reconciler::{PredecessorUse, Reconciler, ReconcilerSpec};
use crate::limits::state;
use crate::redis_link::RedisLink;
use crate::snapshot::Snapshot;

/// State the control side and workers share. Touched at start, drain and by health
/// checks only, never per request.
pub struct GatewayState {
    pub workers: usize,
    /// Per worker: when its event loop last ticked (ms since `started`), for the systemd
    /// watchdog: a worker whose loop is stuck stops the pings.
    pub worker_ticks: Vec<AtomicU64>,
    pub started: Instant,
    pub ready_workers: AtomicUsize,
    pub draining: AtomicBool,
    pub failed: AtomicBool,
    pub unfinished_connections: AtomicUsize,
    pub drivers: Mutex<Vec<Option<DriverKind>>>,
    /// Nonces of signed requests, shared by all workers so a replay is caught whichever
    /// core it lands on. Outlives config generations.
    pub nonces: Arc<NonceCache>,
    /// The newest config generation handed to the workers.
    pub generation: AtomicU64,
    /// Per worker: app cache counters (Redis-backed registry).
    pub app_cache_stats: Vec<Arc<CacheStats>>,
    /// Store-side counters of the Redis-backed registry.
    pub directory_stats: Arc<DirectoryStats>,
    /// Cluster limits (`[cluster]`): connected or holding limits locally.
    pub cluster: Option<Arc<ClusterStatus>>,
    /// Fleet-wide nonces (`[cluster]`): where workers claim them, and their counts.
    pub fleet_nonces: Option<(FleetTarget, Arc<FleetNonceStats>)>,
    /// The newest config generation, for the admin side (breaker, group, target state).
    pub snapshot: std::sync::RwLock<Arc<Snapshot>>,
    /// Each worker's command channel, for the admin side (metrics scrapes).
    pub worker_commands: Mutex<Vec<crossbeam_channel::Sender<WorkerCommand>>>,
    /// Reloads refused (bad config), for `/metrics`.
    pub reload_failures: AtomicU64,
    /// The access log's writer (`[access_log]`), for the workers and `/metrics`.
    pub access_log: Option<crate::access_log::LogLink>,
    /// The bound data-plane addresses (a reload cannot change them).
    listen: Vec<SocketAddr>,
    /// A copy of every listening socket, named, to hand to a successor at an upgrade.
    handover: Mutex<Vec<(String, OwnedFd)>>,
    /// The limit key hash's seeds, for a successor (set once the reconciler has them).
    key_seeds: Mutex<Option<[u64; 4]>>,
    /// Another process holds these listening sockets too (an upgrade under way): a
    /// drain must not shut them down, which would stop them there as well.
    pub listeners_shared: AtomicBool,
    /// The listeners as configured at start, to tell a reload that changes them.
    listen_config: Vec<ListenConfig>,
    /// The bound `[tls]` listener addresses, in `tls.listen` order.
    tls_listen: Vec<SocketAddr>,
    /// `[apps] timestamp_window`, `replay_capacity` and the registry source as started.
    fixed_at_start: (Duration, usize, AppsSource),
    /// `[cluster]` as started: the lease thread and the workers' nonce connections keep it.
    cluster_at_start: Option<ClusterConfig>,
    /// The config file reloads read (none for the embedded demo config).
    pub config_path: Mutex<Option<std::path::PathBuf>>,
    reloading: Mutex<()>,
    /// Admin edits of the config files, one at a time (each with its reload).
    pub editing: Mutex<()>,
    /// Each worker's last metrics report, for a scrape it misses.
    last_reports: Mutex<Vec<Option<crate::metrics::WorkerReport>>>,
    /// The admin listener's address as bound at start (a reload cannot move it).
    admin_bound: Option<SocketAddr>,
    /// The control side's hooks: health checks per generation, the config watcher.
    control: Arc<dyn ControlSide>,
}

impl GatewayState {
    /// Workers whose event loop has not ticked for `longer_than` (a worker ticks every
    /// 10 ms; one that is blocked, or spins without yielding, does not).
    pub fn stuck_workers(&self, longer_than: Duration) -> Vec<usize> {
        let now = self.started.elapsed().as_millis() as u64;
        let limit = longer_than.as_millis() as u64;
        self.worker_ticks
            .iter()
            .enumerate()
            .filter(|(_, t)| now.saturating_sub(t.load(Ordering::Relaxed)) > limit)
            .map(|(i, _)| i)
            .collect()
    }

    /// Marks worker `id`'s loop alive now.
    pub fn worker_ticked(&self, id: usize) {
        if let Some(t) = self.worker_ticks.get(id) {
            t.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// A copy of every worker's metrics: each answers on its next tick; one that has not
    /// within `within` is left out.
    pub fn scrape_metrics(&self, within: Duration) -> Vec<crate::metrics::WorkerReport> {
        let (reply, replies) = crossbeam_channel::unbounded();
        let asked = match self.worker_commands.lock() {
            Ok(commands) => commands
                .iter()
                .filter(|c| c.send(WorkerCommand::Scrape(reply.clone())).is_ok())
                .count(),
            Err(_) => 0,
        };
        drop(reply);
        let deadline = std::time::Instant::now() + within;
        let mut reports = Vec::with_capacity(asked);
        while reports.len() < asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match replies.recv_timeout(left) {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        // A worker too busy to answer in time is shown as it last answered: leaving it
        // out would look to Prometheus like its counters were reset.
        let Ok(mut last) = self.last_reports.lock() else {
            return reports;
        };
        for r in &reports {
            if last.len() <= r.worker {
                last.resize(r.worker + 1, None);
            }
            last[r.worker] = Some(r.clone());
        }
        for earlier in last.iter().flatten() {
            if !reports.iter().any(|r| r.worker == earlier.worker) {
                reports.push(earlier.clone());
            }
        }
        reports.sort_by_key(|r| r.worker);
        reports
    }

    /// Every worker listens and none is draining.
    pub fn healthy(&self) -> bool {
        self.ready_workers.load(Ordering::SeqCst) == self.workers
            && !self.draining.load(Ordering::SeqCst)
            && !self.failed.load(Ordering::SeqCst)
    }
}

/// Shards of the replay cache: enough that workers rarely wait on the same lock. Its size
/// is `[apps] replay_capacity`, fixed at start (a reload does not resize it).
const NONCE_SHARDS: usize = 64;

/// A running gateway.
pub struct GatewayHandle {
    state: Arc<GatewayState>,
    workers: Vec<(JoinHandle<()>, Sender<WorkerCommand>)>,
    admin: Option<Box<dyn AdminListener>>,
    /// The Redis-backed registry's control-side thread, if any.
    directory: Option<Directory>,
    /// The limit reconciler's thread.
    reconciler: Option<Reconciler>,
    /// Taking over at an upgrade with a quota state file: to count what the predecessor
    /// used after this process read the file.
    predecessor_use: Option<PredecessorUse>,
}

/// How a drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still busy when the drain timeout ran out.
    pub unfinished_connections: usize,
}

/// The CPUs workers are pinned to: `server.cpus`, else the process's affinity mask.
fn worker_cpus(config: &Config) -> Vec<Option<usize>> {
    let mask: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cpus: Vec<usize> = config.server.cpus.clone().unwrap_or(mask);
    let count = match config.server.workers {
        WorkerCount::Fixed(n) => n,
        WorkerCount::Auto => cpus.len().max(1),
    };
    (0..count)
        .map(|i| {
            if cpus.is_empty() {
                None
            } else {
                Some(cpus[i % cpus.len()])
            }
        })
        .collect()
}

/// Starts workers and, through `control`, the admin listener and health checks. Returns
/// once every listener is bound (binding errors are reported here); workers finish
/// starting in the background (see `wait_ready`). `crate::gateway::start` passes the
/// control side.
///
/// `inherited`: the listening sockets a predecessor handed over at an upgrade (empty
/// otherwise); `inheriting` says an upgrade is under way, so the sockets are shared with
/// the predecessor until `listeners_released`.
pub fn start(
    config: Config,
    control: Arc<dyn ControlSide>,
    mut inherited: Inherited,
    inheriting: bool,
) -> Result<GatewayHandle, String> {
    let snapshot = Snapshot::build(config, 1).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    control.serving(&snapshot);
    let server = &snapshot.config.server;
    let fixed_at_start = (
        snapshot.config.apps.timestamp_window,
        snapshot.config.apps.replay_capacity,
        snapshot.config.apps.source.clone(),
    );
    let cpus = worker_cpus(&snapshot.config);
    let n = cpus.len();
    let tls_listen = snapshot
        .config
        .tls
        .as_ref()
        .map(|t| t.listen.clone())
        .unwrap_or_default();
    let configured: Vec<ListenConfig> = server.listen.iter().chain(&tls_listen).copied().collect();
    let bound = listener::bind_all(
        &configured,
        snapshot.config.admin.listen,
        n,
        server.backlog,
        &mut inherited,
    )?;
    let listeners_shared = !inherited.is_empty() || inheriting;
    let inherited_seeds = inherited.key_seeds();
    let replay_capacity = snapshot.config.apps.replay_capacity.div_ceil(NONCE_SHARDS);
    let nonces = match inherited.nonce_keys() {
        Some(keys) => NonceCache::with_keys(NONCE_SHARDS, replay_capacity, keys),
        None => NonceCache::new(NONCE_SHARDS, replay_capacity),
    };
    // What the predecessor had seen, known before a worker serves.
    let left_out = nonces.insert_entries(&inherited.take_nonce_entries());
    if left_out > 0 {
        log::warn!("upgrade: {left_out} of the old process's nonces did not fit in the replay cache (apps.replay_capacity)");
    }
    listener::drop_leftover(inherited);
    let cluster_status = snapshot
        .config
        .traffic
        .cluster
        .as_ref()
        .map(|_| Arc::new(ClusterStatus::default()));
    let state = Arc::new(GatewayState {
        worker_ticks: (0..n).map(|_| AtomicU64::new(0)).collect(),
        started: Instant::now(),
        listen: bound.listen,
        tls_listen: bound.tls,
        listen_config: configured,
        handover: Mutex::new(bound.handover),
        key_seeds: Mutex::new(None),
        listeners_shared: AtomicBool::new(listeners_shared),
        fixed_at_start,
        cluster_at_start: snapshot.config.traffic.cluster.clone(),
        config_path: Mutex::new(None),
        reloading: Mutex::new(()),
        editing: Mutex::new(()),
        last_reports: Mutex::new(Vec::new()),
        admin_bound: snapshot.config.admin.listen,
        control: control.clone(),
        snapshot: std::sync::RwLock::new(snapshot.clone()),
        worker_commands: Mutex::new(Vec::new()),
        reload_failures: AtomicU64::new(0),
        access_log: match &snapshot.config.access_log {
            Some(c) => Some(crate::access_log::start(c).map_err(|e| {
                format!(
                    "access_log.path {}: {e}",
                    c.path
                        .as_deref()
                        .map_or("-".into(), |p| p.display().to_string())
                )
            })?),
            None => None,
        },
        workers: n,
        ready_workers: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        unfinished_connections: AtomicUsize::new(0),
        drivers: Mutex::new(vec![None; n]),
        nonces: Arc::new(nonces),
        generation: AtomicU64::new(1),
        app_cache_stats: (0..n).map(|_| Arc::new(CacheStats::default())).collect(),
        directory_stats: Arc::new(DirectoryStats::default()),
        fleet_nonces: fleet_nonces(&snapshot.config, cluster_status.as_ref()),
        cluster: cluster_status,
    });
    // The Redis-backed registry: one control-side thread talks to Redis; workers talk to
    // it through channels and never block.
    let mut links: Vec<Option<WorkerAppsLink>> = (0..n).map(|_| None).collect();
    let directory = match &snapshot.config.apps.source {
        AppsSource::File => None,
        AppsSource::Redis {
            target,
            cache_ttl,
            cache_size,
        } => {
            let link = RedisLink::new(target).map_err(|e| format!("apps.redis: {e}"))?;
            let store = RedisStore::new(link);
            let (requests, requests_rx) = crossbeam_channel::bounded(MAX_QUEUED_FETCHES);
            let mut update_txs = Vec::with_capacity(n);
            for (i, link) in links.iter_mut().enumerate() {
                let (tx, rx) = crossbeam_channel::unbounded();
                update_txs.push(tx);
                *link = Some(WorkerAppsLink {
                    requests: requests.clone(),
                    updates: rx,
                    stats: state.app_cache_stats[i].clone(),
                    store_up: state.directory_stats.store_up.clone(),
                    capacity: *cache_size,
                    ttl: *cache_ttl,
                });
            }
            Some(
                Directory::start(
                    store,
                    requests_rx,
                    update_txs,
                    state.directory_stats.clone(),
                )
                .map_err(|e| format!("cannot start the app directory: {e}"))?,
            )
        }
    };
    // Limits: the reconciler starts first, so the quota use it restores from the state
    // file is in every worker's channel before the worker serves.
    let traffic = &snapshot.config.traffic;
    let (mut seeds, mut saved) = state::load_state(traffic.state_file.as_deref());
    // At an upgrade, keys are hashed as the predecessor hashes them. Its seeds differ from
    // the file's only when it had not saved yet (a fresh file), or the file is not its.
    if let Some(theirs) = inherited_seeds.filter(|&theirs| theirs != seeds) {
        if !saved.is_empty() {
            log::warn!("traffic.state_file: not the running gateway's; its saved use is left out");
        }
        seeds = theirs;
        saved.clear();
    }
    let saved_at_start = if inheriting {
        saved.clone()
    } else {
        Vec::new()
    };
    let (reports_tx, reports_rx) = crossbeam_channel::unbounded();
    let mut limit_links = Vec::with_capacity(n);
    let mut update_txs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded();
        update_txs.push(tx);
        limit_links.push(WorkerLimitsLink {
            reports: reports_tx.clone(),
            updates: rx,
            ids: state::key_hasher(seeds),
            workers: n,
            max_keys: traffic.max_keys_per_worker,
        });
    }
    if let Ok(mut s) = state.key_seeds.lock() {
        *s = Some(seeds);
    }
    let reconciler = Reconciler::start(ReconcilerSpec {
        workers: n,
        interval: traffic.reconcile_interval,
        state_file: traffic.state_file.clone(),
        reports: reports_rx,
        updates: update_txs,
        seeds,
        saved,
        cluster: traffic.cluster.clone().zip(state.cluster.clone()),
        successor: inheriting,
    })?;
    // At an upgrade, the predecessor goes on counting (and saving) for a while.
    let predecessor_use = inheriting.then(|| PredecessorUse {
        path: traffic.state_file.clone(),
        read_at_start: saved_at_start,
        reconciler: reconciler.handover(),
    });
    let admin = match bound.admin {
        Some(socket) => Some(
            control
                .start_admin(socket, state.clone())
                .map_err(|e| format!("admin.listen: {e}"))?,
        ),
        None => None,
    };
    let mut workers = Vec::with_capacity(n);
    let mut limit_links = limit_links.into_iter();
    for (id, ((listeners, cpu), apps)) in bound
        .per_worker
        .into_iter()
        .zip(cpus)
        .zip(links)
        .enumerate()
    {
        let (tx, rx) = crossbeam_channel::unbounded();
        let spec = WorkerSpec {
            id,
            cpu,
            listeners,
            snapshot: snapshot.clone(),
            commands: rx,
            state: state.clone(),
            apps,
            limits: limit_links.next().ok_or("worker without a limits link")?,
        };
        let handle = std::thread::Builder::new()
            .name(format!("ringgate-w{id}"))
            .spawn(move || worker::run(spec))
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        if let Ok(mut commands) = state.worker_commands.lock() {
            commands.push(tx.clone());
        }
        workers.push((handle, tx));
    }
    Ok(GatewayHandle {
        state,
        workers,
        admin,
        directory,
        reconciler: Some(reconciler),
        predecessor_use,
    })
}

impl GatewayHandle {
    /// The bound data-plane addresses, in `server.listen` order (real ports for `:0`).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.state.listen
    }

    /// The bound HTTPS addresses, in `tls.listen` order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.state.tls_listen
    }

    /// Reopens the access log file (SIGUSR1, after logrotate moved it away).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.state.access_log {
            log.counters.request_reopen();
        }
    }

    /// Reads the config file again and reloads it (SIGHUP).
    pub fn reload_file(&self, path: &std::path::Path) -> Result<u64, String> {
        self.state.reload_file(path)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    pub fn state(&self) -> &GatewayState {
        &self.state
    }

    /// The state, to share with a thread of the control side (the systemd supervisor).
    pub fn shared_state(&self) -> Arc<GatewayState> {
        self.state.clone()
    }

    /// Waits until every worker listens. False on timeout or if a worker failed to start.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state.failed.load(Ordering::SeqCst) {
                return false;
            }
            if self.state.ready_workers.load(Ordering::SeqCst) == self.state.workers {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// The drivers the workers ended up with (None: not started yet).
    pub fn drivers(&self) -> Vec<Option<DriverKind>> {
        self.state
            .drivers
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Hands a new config generation to every worker: requests that start after a
    /// worker's next tick (10 ms) use it, requests in flight finish on the one they began
    /// with. Listeners and the worker count stay as they were started (a change to
    /// `server.listen` or `server.workers` needs a restart and is reported as ignored).
    /// Returns the new generation number.
    pub fn reload(&self, config: Config) -> Result<u64, String> {
        self.state.reload(config)
    }

    /// The file a reload reads (SIGHUP, `POST /reload`); with `[admin] watch = true`,
    /// also watched for changes.
    pub fn set_config_path(&self, path: Option<std::path::PathBuf>) {
        let watch = self
            .state
            .snapshot
            .read()
            .map(|s| s.config.admin.watch)
            .unwrap_or(false);
        if let (true, Some(p)) = (watch, &path) {
            self.state.control.watch(self.state.clone(), p.clone());
        }
        if let Ok(mut p) = self.state.config_path.lock() {
            *p = path;
        }
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (up to the drain
    /// timeout), close idle connections, stop the workers and the admin listener.
    pub fn shutdown(self) -> DrainReport {
        self.drain(WorkerCommand::Drain, || {}, || {})
    }

    /// As `shutdown`, with `before_last_save` run once the workers are done and before
    /// the limits' last save (a successor waits there for its predecessor's last quota
    /// use, which the predecessor saves as it stops: it drained alongside).
    pub fn shutdown_after(self, before_last_save: impl FnOnce()) -> DrainReport {
        self.drain(WorkerCommand::Drain, || {}, before_last_save)
    }

    /// `server.drain_timeout` as configured now.
    pub fn drain_timeout(&self) -> Duration {
        self.state
            .snapshot
            .read()
            .map(|s| s.config.server.drain_timeout)
            .unwrap_or(Duration::from_secs(30))
    }

    fn drain(
        mut self,
        command: WorkerCommand,
        told: impl FnOnce(),
        before_last_save: impl FnOnce(),
    ) -> DrainReport {
        let handing_over = matches!(command, WorkerCommand::HandOver);
        self.state.draining.store(true, Ordering::SeqCst);
        // No successor is handed these copies any more (and the admin socket's copy
        // would keep it listening).
        if let Ok(mut sockets) = self.state.handover.lock() {
            sockets.clear();
        }
        for (_, tx) in &self.workers {
            let _ = tx.send(if handing_over {
                WorkerCommand::HandOver
            } else {
                WorkerCommand::Drain
            });
        }
        told();
        for (handle, _) in self.workers.drain(..) {
            let _ = handle.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(directory) = self.directory.take() {
            directory.stop();
        }
        before_last_save();
        // After the workers: their last reports are counted and saved.
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.stop();
        }
        DrainReport {
            unfinished_connections: self.state.unfinished_connections.load(Ordering::SeqCst),
        }
    }
}

/// With `[cluster]`, the Redis every gateway claims its nonces in (with Sentinel, the
/// master the lease thread found, published in `status`). A URL that cannot be used for
/// it (a unix socket, a host that does not resolve at start) leaves replay protection
/// per gateway, said once in the log, rather than failing the start: cluster limits do
/// not need it.
fn fleet_nonces(
    config: &Config,
    status: Option<&Arc<ClusterStatus>>,
) -> Option<(FleetTarget, Arc<FleetNonceStats>)> {
    let cluster = config.traffic.cluster.as_ref()?;
    match FleetTarget::new(&cluster.redis, &status?.redis_server) {
        Ok(target) => Some((target, Arc::new(FleetNonceStats::default()))),
        Err(e) => {
            log::warn!("cluster.redis: {e}; replay protection stays per gateway");
            None
        }
    }
}
