//! One worker thread: pinned to its CPU, one monoio runtime, its own listeners, its own
//! connections and pools. Talks to the control side only through its command channel
//! (polled between events, never blocking) and a few atomics.

use std::net::TcpListener as StdListener;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::auth::cache::{AppUpdate, CacheStats, FetchRequest, WorkerApps};
use crate::auth::fleet_nonces::FleetNonces;
use monoio::io::Canceller;
use monoio::net::TcpListener;

use super::driver::run_on_driver;
use super::refuse::{refuse, Refusals};
use super::GatewayState;
use crate::config::ListenConfig;
use crate::limits::worker::WorkerLimiter;
use crate::limits::{Report, Update};
use crate::proxy::{conn, tls_accept, WorkerCtx};
use crate::snapshot::Snapshot;

/// Messages from the control side to a worker.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Stop accepting, finish in-flight requests, close idle connections, exit.
    Drain,
    /// An upgrade: another process now accepts on these listeners. Stop accepting, finish
    /// in-flight requests, serve each idle connection's next request (`Connection:
    /// close`) until it closes, times out or `drain_timeout` passes, exit.
    HandOver,
    /// Prepare this config generation (build the worker's state for it) and say so.
    Prepare(Arc<Snapshot>, crossbeam_channel::Sender<usize>),
    /// Serve new requests with the prepared generation.
    Commit(u64),
    /// Drop the prepared generation: the reload was aborted.
    Abort(u64),
    /// Take the connections waiting on this worker's listeners that no accept was woken
    /// for (see `sweep`): after an upgrade's successor failed.
    Sweep,
    /// Send a copy of this worker's metrics (a scrape of `/metrics`).
    Scrape(crossbeam_channel::Sender<crate::metrics::WorkerReport>),
}

/// How often a worker looks at its command channel and sweeps idle upstream connections.
const TICK: Duration = Duration::from_millis(10);
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Connections parked (since the worker last returned free memory) before it does again.
const COLLECT_AFTER_PARKED: usize = 128;
/// ... at the latest: during a long run of parking, every this many parked.
const COLLECT_DURING_PARKING: usize = 16 * COLLECT_AFTER_PARKED;
/// Accepts each listener keeps in flight on each io_uring worker. One accept completes
/// once per turn of the event loop, so with one a busy worker (turns of 10-50 ms with
/// thousands of connections) took new connections at 20-100 a second, and clients
/// waited in the backlog for seconds; with eight it takes up to eight a turn.
const URING_ACCEPTS_IN_FLIGHT: usize = 8;
/// On epoll one accept loop per listener (monoio wakes only the last task waiting on a
/// socket, so more would wait in vain), which takes up to this many connections before
/// it lets the loop turn: epoll's accept completes at once while the backlog holds
/// connections, and a flood was otherwise taken whole in one turn (1 500 TLS handshakes,
/// 1.8 s in which no timer fired and no other connection was served), waiting in no
/// queue that load shedding could see.
const EPOLL_ACCEPTS_PER_TURN: usize = 16;
/// How often parked connections' deadlines are checked: their precision.
const PARK_SWEEP_EVERY: Duration = Duration::from_millis(50);

/// One of a worker's listening sockets, with what its connections start with.
pub struct WorkerListener {
    pub socket: StdListener,
    pub config: ListenConfig,
}

pub struct WorkerSpec {
    pub id: usize,
    pub cpu: Option<usize>,
    pub listeners: Vec<WorkerListener>,
    pub snapshot: Arc<Snapshot>,
    pub commands: Receiver<WorkerCommand>,
    pub state: Arc<GatewayState>,
    /// With the Redis-backed registry: the channels to the control side's directory.
    pub apps: Option<WorkerAppsLink>,
    pub limits: WorkerLimitsLink,
}

/// The worker's channels to the limit reconciler.
pub struct WorkerLimitsLink {
    pub reports: crossbeam_channel::Sender<Report>,
    pub updates: Receiver<Update>,
    pub ids: ahash::RandomState,
    pub workers: usize,
    pub max_keys: usize,
}

/// What a worker needs to build its app cache (which is `!Send`, so it is built on the
/// worker's own thread).
pub struct WorkerAppsLink {
    pub requests: crossbeam_channel::Sender<FetchRequest>,
    pub updates: Receiver<AppUpdate>,
    pub stats: Arc<CacheStats>,
    pub store_up: Arc<std::sync::atomic::AtomicBool>,
    pub capacity: usize,
    pub ttl: Duration,
}

pub fn run(spec: WorkerSpec) {
    let (id, cpu, state) = (spec.id, spec.cpu, spec.state.clone());
    let pinned = cpu.map(|c| core_affinity::set_for_current(core_affinity::CoreId { id: c }));
    let server = spec.snapshot.config.server.clone();
    let result = run_on_driver(&server, |driver, why| {
        match (cpu, pinned) {
            (Some(c), Some(true)) => log::info!(
                "worker {id}: pinned to CPU {c}, driver {} ({why})",
                driver.name()
            ),
            (Some(c), _) => log::warn!(
                "worker {id}: could not pin to CPU {c}; driver {} ({why})",
                driver.name()
            ),
            (None, _) => log::info!("worker {id}: not pinned, driver {} ({why})", driver.name()),
        }
        state.drivers.lock().map(|mut d| d[id] = Some(driver)).ok();
        worker_main(driver, spec)
    });
    if let Err(e) = result {
        log::error!("worker {id}: {e}");
        state.failed.store(true, Ordering::SeqCst);
    }
}

async fn worker_main(driver: super::driver::DriverKind, spec: WorkerSpec) {
    let WorkerSpec {
        id,
        listeners,
        snapshot,
        commands,
        state,
        apps,
        limits,
        ..
    } = spec;
    let server = snapshot.config.server.clone();
    let seed = (id as u64) << 56 ^ std::process::id() as u64 ^ nanos_now();
    let (app_cache, app_updates) = match apps {
        Some(link) => (
            Some(WorkerApps::new(
                id,
                link.capacity,
                link.ttl,
                link.requests,
                link.store_up,
                link.stats,
            )),
            Some(link.updates),
        ),
        None => (None, None),
    };
    let limiter = WorkerLimiter::new(id, limits.workers, limits.ids.clone(), limits.max_keys);
    // Fleet-wide nonces: this worker's own connection to the cluster's Redis.
    let fleet = state.fleet_nonces.as_ref().map(|(target, stats)| {
        let fleet = FleetNonces::new(target.clone(), stats.clone(), seed);
        monoio::spawn(fleet.clone().run());
        fleet
    });
    let ctx = Rc::new(
        WorkerCtx::new(
            id,
            snapshot,
            seed,
            state.nonces.clone(),
            app_cache,
            limiter,
            state
                .access_log
                .clone()
                .map(crate::access_log::WorkerLog::new),
        )
        .with_fleet_nonces(fleet),
    );
    // What the reconciler restored (saved quota use) applies before the first request.
    exchange_limits(&ctx, &limits);
    let listening: Vec<RawFd> = listeners.iter().map(|l| l.socket.as_raw_fd()).collect();
    let accepting = Rc::new(std::cell::Cell::new(0usize));
    // Copies of the listeners for sweeps (see `sweep`).
    let mut sweepers: Vec<(StdListener, ListenConfig)> = listeners
        .iter()
        .filter_map(|l| Some((l.socket.try_clone().ok()?, l.config)))
        .collect();
    for l in listeners {
        match TcpListener::from_std(l.socket) {
            Ok(socket) => {
                let socket = Rc::new(socket);
                let refusals = Rc::new(Refusals::default());
                let epoll = driver == super::driver::DriverKind::Epoll;
                let (loops, per_turn) = if epoll {
                    (1, Some(EPOLL_ACCEPTS_PER_TURN))
                } else {
                    (URING_ACCEPTS_IN_FLIGHT, None)
                };
                for _ in 0..loops {
                    monoio::spawn(accept_loop(
                        socket.clone(),
                        AcceptLoop {
                            config: l.config,
                            max_connections: server.max_connections_per_worker,
                            per_turn,
                        },
                        ctx.clone(),
                        refusals.clone(),
                        AcceptLoopAlive::count(&accepting),
                    ));
                }
            }
            Err(e) => {
                log::error!("worker {id}: cannot register listener: {e}");
                state.failed.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
    state.worker_ticked(id);
    state.ready_workers.fetch_add(1, Ordering::SeqCst);
    let mut last_sweep = Instant::now();
    let mut parked_since_collect = 0;
    let mut last_park_sweep = last_sweep;
    while !ctx.draining() {
        let asleep = Instant::now();
        monoio::time::sleep(TICK).await;
        // Woken late by however long the loop took to come back to this task: how far
        // behind the worker is (its load shedding's signal).
        let woke = Instant::now();
        ctx.on_tick(woke, woke.duration_since(asleep).saturating_sub(TICK));
        state.worker_ticked(id);
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                WorkerCommand::Drain => {
                    if !ctx.draining() {
                        // The sockets stop taking connections at once (new clients are
                        // refused and retry elsewhere), even if this worker's runtime
                        // ends before its accept tasks run again. Done before the drain
                        // fires: until then no accept task has closed its listener, so
                        // no fd here can have been reused by another socket. Not while
                        // another process holds the same sockets (an upgrade under
                        // way): a shutdown would stop them there too.
                        if !state.listeners_shared.load(Ordering::SeqCst) {
                            for &fd in &listening {
                                crate::sys::stop_listening(fd);
                            }
                        }
                        ctx.stop_shedding();
                        ctx.drain.fire();
                    }
                    ctx.close_idle.fire();
                }
                WorkerCommand::HandOver => {
                    // The new process accepts on the same sockets: this worker only
                    // stops accepting (its accept loops end and close their copies).
                    if !ctx.draining() {
                        ctx.stop_shedding();
                        ctx.drain.fire();
                    }
                }
                WorkerCommand::Sweep => sweep(&sweepers, &ctx),
                WorkerCommand::Scrape(reply) => {
                    let report = ctx.metrics.borrow().report(
                        id,
                        ctx.open_connections(),
                        &ctx.shed,
                        &ctx.shed_connections,
                    );
                    let _ = reply.send(report);
                }
                WorkerCommand::Prepare(snapshot, ready) => {
                    ctx.prepare(snapshot);
                    let _ = ready.send(id);
                }
                WorkerCommand::Commit(generation) => ctx.commit(generation),
                WorkerCommand::Abort(generation) => ctx.abort(generation),
            }
        }
        apply_app_updates(&ctx, app_updates.as_ref());
        exchange_limits(&ctx, &limits);
        if !ctx.parked.is_empty() && last_park_sweep.elapsed() >= PARK_SWEEP_EVERY {
            last_park_sweep = Instant::now();
            ctx.parked.sweep(last_park_sweep);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            ctx.generation().upstreams.borrow_mut().sweep(last_sweep);
            // Many connections went idle (and gave their buffers back): return the pages,
            // once they have settled (a second with no parking), so the last of a wave
            // is returned too. Only then: collecting walks the worker's whole heap, a
            // stall a busy worker (with a large replay cache, say) must not take every
            // second.
            let parked_now = ctx.parked.take_parked();
            parked_since_collect += parked_now;
            if parked_since_collect >= COLLECT_DURING_PARKING
                || (parked_since_collect >= COLLECT_AFTER_PARKED && parked_now == 0)
            {
                crate::sys::return_free_memory();
                parked_since_collect = 0;
            }
        }
    }
    let deadline = Instant::now() + server.drain_timeout;
    // Accept loops still running have an accept in flight: on io_uring the kernel may
    // complete it (taking a connection off the queue) until its cancellation is through,
    // and a connection taken by an accept whose ring is torn down would be closed unseen.
    // At a handover nothing shut the sockets down, so this is no rare race.
    // At a handover idle connections are left to send their next request; those still
    // idle this close to the deadline are closed, so that only requests in flight are
    // cut when it passes (a stop closed them at once).
    let close_idle_at = deadline - (server.drain_timeout / 4).min(Duration::from_secs(1));
    while (ctx.open_connections() > 0 || accepting.get() > 0 || !sweepers.is_empty())
        && Instant::now() < deadline
    {
        if accepting.get() == 0 && !sweepers.is_empty() {
            // Every accept of ours is through: what is queued now and found nobody
            // awake to take it is served here (see `sweep`).
            sweep(&sweepers, &ctx);
            sweepers.clear();
        }
        monoio::time::sleep(TICK).await;
        state.worker_ticked(id);
        let now = Instant::now();
        if now >= close_idle_at && !ctx.close_idle.is_fired() {
            ctx.close_idle.fire();
        }
        // Parked connections reach their keep-alive timeout as they would serving.
        if !ctx.parked.is_empty() && now.duration_since(last_park_sweep) >= PARK_SWEEP_EVERY {
            last_park_sweep = now;
            ctx.parked.sweep(now);
        }
        // Requests in flight may be waiting for an app record.
        apply_app_updates(&ctx, app_updates.as_ref());
        exchange_limits(&ctx, &limits);
    }
    // The last requests' quota use must reach the reconciler before it saves.
    exchange_limits(&ctx, &limits);
    let left = ctx.open_connections();
    if left > 0 {
        log::warn!(
            "worker {id}: drain timeout, closing {left} connections with requests in flight"
        );
    }
    state
        .unfinished_connections
        .fetch_add(left, Ordering::SeqCst);
}

/// Hands the control side's app records and key filter to the worker's cache and wakes
/// the requests waiting for them.
fn apply_app_updates(ctx: &WorkerCtx, updates: Option<&Receiver<AppUpdate>>) {
    if let (Some(updates), Some(cache)) = (updates, &ctx.apps) {
        let now = Instant::now();
        for update in updates.try_iter() {
            cache.apply(update, now);
        }
        cache.notify();
    }
}

/// Applies the reconciler's updates and sends this round's report; hands the round's
/// access-log lines to the writer.
fn exchange_limits(ctx: &WorkerCtx, link: &WorkerLimitsLink) {
    if let Some(log) = &ctx.log {
        log.flush();
    }
    for update in link.updates.try_iter() {
        ctx.limiter.apply(update);
    }
    if let Some(report) = ctx.limiter.end_round() {
        let _ = link.reports.send(report);
    }
}

/// How an accept loop runs.
#[derive(Clone, Copy)]
struct AcceptLoop {
    config: ListenConfig,
    max_connections: usize,
    /// Let the event loop turn after this many connections (epoll; see `next_turn`).
    per_turn: Option<usize>,
}

fn serve_accepted(
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    config: ListenConfig,
    ctx: &Rc<WorkerCtx>,
) {
    if config.tls {
        monoio::spawn(tls_accept::serve_tls(stream, peer, config, ctx.clone()));
    } else {
        monoio::spawn(conn::serve(stream, peer, config, ctx.clone()));
    }
}

/// Connections a sweep takes at most per listener (the rest wait for the accept loops).
const SWEEP_AT_MOST: usize = 1024;

/// Takes what waits on `listeners` without blocking, and serves it. Needed because an
/// io_uring accept waits for its socket with an *exclusive* wakeup (one waiter is woken
/// per new connection): when a process's accept is cancelled (a handover) or dies (a
/// failed successor) just as it is woken, the wakeup is spent and the connection waits
/// in the queue until the next one arrives, which at low traffic may be never. Swept
/// once the old accepts are gone, nothing is left behind: later connections wake the
/// accepts still waiting.
fn sweep(listeners: &[(StdListener, ListenConfig)], ctx: &Rc<WorkerCtx>) {
    for (listener, config) in listeners {
        for _ in 0..SWEEP_AT_MOST {
            let Ok((stream, peer)) = listener.accept() else {
                break;
            };
            let adopted = stream
                .set_nonblocking(true)
                .and_then(|()| monoio::net::TcpStream::from_std(stream));
            match adopted {
                Ok(stream) => serve_accepted(stream, peer, *config, ctx),
                Err(e) => ctx.warn_limited(|| format!("cannot serve a swept connection: {e}")),
            }
        }
    }
}

/// Counts an accept loop as running for as long as it is.
struct AcceptLoopAlive(Rc<std::cell::Cell<usize>>);

impl AcceptLoopAlive {
    fn count(running: &Rc<std::cell::Cell<usize>>) -> AcceptLoopAlive {
        running.set(running.get() + 1);
        AcceptLoopAlive(running.clone())
    }
}

impl Drop for AcceptLoopAlive {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// One of a listener's accept loops on this worker.
async fn accept_loop(
    listener: Rc<TcpListener>,
    how: AcceptLoop,
    ctx: Rc<WorkerCtx>,
    refusals: Rc<Refusals>,
    _alive: AcceptLoopAlive,
) {
    let AcceptLoop {
        config,
        max_connections,
        per_turn,
    } = how;
    let mut this_turn = 0;
    loop {
        // Cancelled rather than dropped on drain: an accept that already completed
        // still hands over its connection, which is then served, not leaked.
        let canceller = Canceller::new();
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let mut draining = false;
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = ctx.drain.wait() => {
                let _cancelled = canceller.cancel();
                draining = true;
                accept.await
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                // The accept-queue wait (a syscall) only matters while shedding is on.
                if config.tls && ctx.shed_connections.is_on() {
                    if let Some(waited) = crate::sys::since_last_segment(stream.as_raw_fd()) {
                        ctx.note_accept_wait(waited);
                    }
                }
                // At the cap, or (TLS) while the worker sheds load, in the share it
                // sheds: turned away at once (503 on plain listeners, closed before the
                // handshake on TLS ones), counted, rather than left in the backlog where
                // the client sees nothing, or served late.
                let at_cap = ctx.open_connections() >= max_connections;
                if !draining && (at_cap || (config.tls && ctx.sheds_new_connection())) {
                    let mut metrics = ctx.metrics.borrow_mut();
                    if at_cap {
                        metrics.refused_connections += 1;
                    } else {
                        metrics.shed_connections += 1;
                    }
                    drop(metrics);
                    let id = ctx.ids.next_id().as_str().to_string();
                    monoio::spawn(refuse(stream, !config.tls, id, refusals.clone()));
                    continue;
                }
                serve_accepted(stream, peer, config, &ctx);
                if draining {
                    return;
                }
                this_turn += 1;
                if per_turn.is_some_and(|most| this_turn >= most) {
                    this_turn = 0;
                    next_turn().await;
                }
            }
            // A drain shut the socket down: the accept fails, which is no news.
            Err(_) if draining || ctx.draining() => return,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error (the
                // connection stays in the backlog and is accepted once an fd frees up),
                // and say so at most once a second.
                ctx.metrics.borrow_mut().accept_errors += 1;
                ctx.warn_limited(|| format!("accept failed (backing off 10 ms): {e}"));
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits for the next turn of the event loop: a timer due now fires when the loop next
/// waits for I/O (monoio rounds it up to the next millisecond, and runs timers only when
/// no task is ready). Yielding to the back of the task queue is not enough: the loop
/// keeps running ready tasks without waiting, and its timers starve.
async fn next_turn() {
    monoio::time::sleep(Duration::ZERO).await;
}

fn nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
