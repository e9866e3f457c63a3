//! The reconciler: a control-side thread that keeps the workers' local limits adding up
//! to the configured ones.
//!
//! Every round (`[traffic] reconcile_interval`, 10 ms by default) it reads the workers'
//! reports, moves rate shares towards the cores that use them (`shares`), tops up and
//! takes back quota grants (`quota`), forgets keys that went idle, and sends each worker
//! what changed for it. Workers never wait for it: between rounds they decide alone.
//! Once a second it saves daily quota use to the state file, if there is one.
//!
//! In cluster mode (`[cluster]`) it also leases every lease interval (100 ms): for each
//! rate key, its fair part of the rate from Redis, which scales what its workers split;
//! for each quota key, units reserved in Redis, which cap what its workers are granted.
//! The Redis calls run on the lease thread (`lease`); `cluster_mode` tracks whether they
//! succeed and falls back to local limits when they do not.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::cluster_mode::ClusterMode;
use super::lease::{self, ClusterStatus, LeaseBatch, LeaseReply, QuotaAsk, RateAsk};
use super::quota::{initial_grant, restored_grant, QuotaLedger};
use super::shares::RateShares;
use super::state::{self, QuotaState, SavedQuota};
use super::{KeyId, Params, Report, Update};
use crate::redis_link::RedisLink;
pub use handover::{Handover, PredecessorUse};

mod handover;
mod rebalance;

const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How long shutdown waits to charge quota use to Redis (a dead Redis answers sooner).
const EXIT_CHARGE_WITHIN: Duration = Duration::from_millis(1500);
/// A key in use is leased at least this often, for its view of the use everywhere (what
/// caps it while Redis is out of reach).
const VIEW_MAX_AGE: Duration = Duration::from_secs(1);

/// Rounds without a report from a worker after which it counts as idle for every key.
/// Workers report every round of their own (10 ms), even with nothing in it, so one
/// missing from a round is late (rounds drift apart, a core is busy); this long, it is
/// stalled.
const SILENT_ROUNDS: u32 = 10;

pub struct ReconcilerSpec {
    pub workers: usize,
    pub interval: Duration,
    pub state_file: Option<PathBuf>,
    pub reports: Receiver<Report>,
    pub updates: Vec<Sender<Update>>,
    /// Seeds of the key hash (the state file's, when it has them).
    pub seeds: [u64; 4],
    /// Quota use saved by an earlier process, for today and later.
    pub saved: Vec<SavedQuota>,
    /// Cluster mode: where limits are shared, and what `/stats` shows of it.
    pub cluster: Option<(crate::config::ClusterConfig, Arc<ClusterStatus>)>,
    /// Taking over from a running gateway (an upgrade): the state file is its to write
    /// until it has stopped and its last use is added here, and each quota is held to
    /// half of what was left until then (see `handover`).
    pub successor: bool,
}

/// The running reconciler thread.
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    handover: Sender<Handover>,
}

impl Reconciler {
    /// Starts the thread. Saved quotas are announced to the workers first, so that no
    /// worker serves a saved key on a default grant.
    pub fn start(spec: ReconcilerSpec) -> Result<Reconciler, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (handover, handovers) = crossbeam_channel::unbounded();
        let mut core = Core::new(&spec, handovers);
        if let Some((config, status)) = &spec.cluster {
            let link = RedisLink::new(&config.redis)
                .map_err(|e| format!("cluster.redis: {e}"))?
                .publishing_to(status.redis_server.clone());
            let store = super::cluster::ClusterStore::new(link);
            let (link, first_beat) =
                lease::start(store, config.gateway_id.clone(), config.lease_interval)
                    .map_err(|e| format!("cannot start the lease thread: {e}"))?;
            let mode = ClusterMode::new(
                link,
                config.lease_interval,
                config.gateways,
                first_beat,
                status.clone(),
            );
            // Before any worker serves, so fresh keys start within the cluster's limit.
            for out in &mut core.outbox {
                out.push(Update::Cluster {
                    gateways: mode.gateways(),
                });
            }
            core.cluster = Some(mode);
        }
        core.announce_saved(&spec.saved);
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ringgate-limits".into())
            .spawn(move || core.run(&flag))
            .map_err(|e| format!("cannot start the limit reconciler: {e}"))?;
        Ok(Reconciler {
            stop,
            handle: Some(handle),
            handover,
        })
    }

    /// Where an upgrade's steps are told (see `handover`).
    pub fn handover(&self) -> Sender<Handover> {
        self.handover.clone()
    }

    /// A successor is about to start: saves the state file (it reads it next) and holds
    /// each quota to half of what is left; returns once saved (at most a second).
    pub fn split_for_successor(&self) {
        let (saved, done) = crossbeam_channel::bounded(1);
        if self.handover.send(Handover::Split(saved)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }

    /// Stops the thread after a last round and a last save.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct RateKey {
    shares: RateShares,
    text: Arc<str>,
    per_sec: f64,
    burst: f64,
    /// The part of the limit this gateway may use: 1 without a cluster, else what its
    /// last lease granted (or 1/gateways while not connected).
    scale: f64,
    idle_since: Option<Instant>,
    /// Tokens workers gave up this round, to hand to the others.
    surrendered: f64,
}

struct QuotaKey {
    ledger: QuotaLedger,
    text: Arc<str>,
    per_day: u64,
    day: u32,
    secs_left: u64,
    /// Cluster mode: units this gateway reserved or was charged in Redis, and the key's
    /// use there (every gateway's, reservations included) at the last lease.
    reserved: u64,
    cluster_used: u64,
    /// A lease for it was answered: until then its workers serve from default grants, so
    /// its first lease goes out at once rather than at the next lease interval.
    leased: bool,
    /// When a lease reply last told the key's use everywhere (`cluster_used`).
    viewed: Option<Instant>,
    /// Its use when an upgrade split it (see `handover`; 0 for a key new since).
    held_from: u64,
}

/// Half of what is left of a quota after `used`, on top of `used`.
fn halved_cap(used: u64, per_day: u64) -> u64 {
    used + per_day.saturating_sub(used) / 2
}

impl QuotaKey {
    /// Its cap while an upgrade has it split (see `handover`).
    fn halved_cap(&self) -> u64 {
        halved_cap(self.held_from, self.per_day)
    }

    /// A reservation of `want` units that also charges this process's use.
    fn ask(&self, id: KeyId, want: u64) -> QuotaAsk {
        QuotaAsk {
            id,
            key: format!("{}:{}", self.text, self.day),
            limit: self.per_day,
            want,
            used: self.ledger.used(),
            // Outlives the key's day, whatever its offset.
            ttl_secs: self.secs_left + 86_400,
        }
    }

    /// The key's use everywhere as workers should see it: in cluster mode the cluster's,
    /// less what this gateway reserved and has not used yet.
    fn used_everywhere(&self, cluster: bool) -> u64 {
        let used = self.ledger.used();
        if cluster {
            (self.cluster_used + used).saturating_sub(self.reserved)
        } else {
            used
        }
    }
}

struct Core {
    workers: usize,
    interval: Duration,
    state_file: Option<PathBuf>,
    seeds: [u64; 4],
    reports: Receiver<Report>,
    updates: Vec<Sender<Update>>,
    outbox: Vec<Vec<Update>>,
    rates: HashMap<KeyId, RateKey>,
    quotas: HashMap<KeyId, QuotaKey>,
    /// Per rate key, this round's attempts per worker.
    round: HashMap<KeyId, Vec<u32>>,
    /// Per worker, the seconds its reports this round cover (0: none arrived).
    report_secs: Vec<f64>,
    /// Per worker, rounds in a row without a report.
    silent_rounds: Vec<u32>,
    quota_changed: bool,
    /// Redis came back empty: the next batch charges every quota key's use again.
    recharge: bool,
    /// When a failed save was last logged (a full disk fails every round: said once
    /// every ten seconds, retried every round).
    save_error_said: Option<std::time::Instant>,
    cluster: Option<ClusterMode>,
    /// An upgrade's steps (see `handover`).
    handovers: Receiver<Handover>,
    /// Each quota key holds to half of what was left when an upgrade split it.
    halved: bool,
    /// A successor: the predecessor writes the state file until it has stopped.
    saves_held: bool,
}

impl Core {
    fn new(spec: &ReconcilerSpec, handovers: Receiver<Handover>) -> Core {
        Core {
            workers: spec.workers.max(1),
            interval: spec.interval,
            state_file: spec.state_file.clone(),
            seeds: spec.seeds,
            reports: spec.reports.clone(),
            updates: spec.updates.clone(),
            outbox: vec![Vec::new(); spec.workers.max(1)],
            rates: HashMap::new(),
            quotas: HashMap::new(),
            round: HashMap::new(),
            report_secs: vec![0.0; spec.workers.max(1)],
            silent_rounds: vec![SILENT_ROUNDS; spec.workers.max(1)],
            quota_changed: false,
            recharge: false,
            save_error_said: None,
            cluster: None,
            handovers,
            // Without a state file the two processes cannot learn each other's use
            // (and the quota starts afresh anyway); in cluster mode Redis counts.
            halved: spec.successor && spec.cluster.is_none() && spec.state_file.is_some(),
            saves_held: spec.successor,
        }
    }

    /// Saved keys start with what is left split between the workers (the default grant
    /// when enough is left), told to every worker before it serves.
    fn announce_saved(&mut self, saved: &[SavedQuota]) {
        for q in saved {
            let cap = if self.halved {
                halved_cap(q.used, q.per_day)
            } else {
                q.per_day
            };
            let grant = restored_grant(cap, q.used, self.workers);
            let ledger = QuotaLedger::new(self.workers, cap, q.used, grant);
            for w in 0..self.workers {
                self.outbox[w].push(Update::Grant {
                    id: q.id,
                    granted_total: grant,
                    used_everywhere: q.used,
                });
            }
            self.quotas.insert(
                q.id,
                QuotaKey {
                    ledger,
                    text: q.text.as_str().into(),
                    per_day: q.per_day,
                    day: q.day,
                    secs_left: 0,
                    reserved: 0,
                    cluster_used: 0,
                    leased: false,
                    viewed: None,
                    held_from: q.used,
                },
            );
        }
        self.flush();
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut last_save = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let now = Instant::now();
            // Read after `stopping`: what was sent before the stop is in the last save.
            for message in self.handovers.try_iter().collect::<Vec<_>>() {
                self.on_handover(message);
            }
            self.round_trip(now);
            if stopping || (!self.saves_held && now.duration_since(last_save) >= SAVE_EVERY) {
                last_save = now;
                self.save();
            }
            if stopping {
                self.charge_before_exit();
                return;
            }
            // Wake early when reports arrive? No: rounds are the unit of smoothing; a
            // fixed pace keeps the demand estimate in requests per round comparable.
            std::thread::sleep(self.interval);
        }
    }

    fn round_trip(&mut self, now: Instant) {
        for report in self.reports.try_iter().collect::<Vec<_>>() {
            self.take_report(report);
        }
        self.take_leases(now);
        self.rebalance_rates(now);
        self.rebalance_quotas();
        self.send_leases(now);
        self.flush();
    }

    /// Cluster mode: applies what leases granted, or the local fallback.
    fn take_leases(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let gateways = cluster.gateways();
        let replies = cluster.poll(now);
        if cluster.gateways() != gateways {
            for out in &mut self.outbox {
                out.push(Update::Cluster {
                    gateways: cluster.gateways(),
                });
            }
        }
        if cluster.take_reset() {
            // Redis holds nothing of ours any more: charge every key's use again, idle
            // keys too (nothing else would ever mention them), at once.
            for key in self.quotas.values_mut() {
                // What Redis held for this gateway is gone from the cluster's count too
                // (else workers would see its use twice, and the quota used up).
                key.cluster_used = key.cluster_used.saturating_sub(key.reserved);
                key.reserved = 0;
            }
            self.recharge = true;
        }
        let lease_secs = cluster.interval.as_secs_f64();
        for LeaseReply { rates, quotas } in replies {
            for (id, granted) in rates.unwrap_or_default() {
                if let Some(key) = self.rates.get_mut(&id) {
                    let per_lease = (key.per_sec * lease_secs).max(f64::MIN_POSITIVE);
                    key.scale = (granted / per_lease).clamp(0.0, 1.0);
                }
            }
            for (id, grant) in quotas.unwrap_or_default() {
                if let Some(key) = self.quotas.get_mut(&id) {
                    key.reserved = grant.held;
                    key.cluster_used = grant.used;
                    key.leased = true;
                    key.viewed = Some(now);
                }
            }
        }
        if !cluster.connected() {
            let part = cluster.local_part();
            for key in self.rates.values_mut() {
                key.scale = part;
            }
        }
    }

    /// Cluster mode, at shutdown: charges what this process used beyond what Redis
    /// holds for it (Redis compares with its own count, so a stale view here is fine).
    fn charge_before_exit(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let batch = LeaseBatch {
            rates: Vec::new(),
            quotas: self
                .quotas
                .iter()
                .filter(|(_, k)| k.ledger.used() > 0)
                .map(|(&id, k)| k.ask(id, 0))
                .collect(),
        };
        cluster.charge_before_exit(batch, EXIT_CHARGE_WITHIN);
    }

    /// Cluster mode: every lease interval, one batch for every key.
    fn send_leases(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let lease_secs = cluster.interval.as_secs_f64();
        // Quota units for two lease intervals of the current pace.
        let rounds = 2.0 * lease_secs / self.interval.as_secs_f64().max(1e-3);
        // Out of touch, leases only charge what was used: when Redis returns, every
        // gateway re-charges its use before any reserves more, so none reserves units
        // another already spent (Redis may have come back empty).
        let reserving = cluster.connected();
        let (rates, quotas) = (&self.rates, &self.quotas);
        let urgent = quotas.values().any(|k| !k.leased && !k.ledger.idle());
        // A recharge goes at once even out of touch: it only charges.
        let sent = cluster.maybe_send(now, urgent, self.recharge, || LeaseBatch {
            rates: rates
                .iter()
                .map(|(&id, k)| RateAsk {
                    id,
                    key: k.text.to_string(),
                    rate_per_sec: k.per_sec,
                    // The cluster bucket holds at least two leases' worth, or leases
                    // could not deliver the rate.
                    burst: k.burst.max(2.0 * k.per_sec * lease_secs),
                    want: k.per_sec * lease_secs,
                    demand: k.shares.total_demand(),
                })
                .collect(),
            quotas: quotas
                .iter()
                .filter_map(|(&id, k)| {
                    let used = k.ledger.used();
                    let want = if reserving {
                        k.ledger.lease_want(rounds)
                    } else {
                        0
                    };
                    // Used beyond what Redis holds for it: to be charged. A key in use
                    // that needs neither is still asked about once a second: its view of
                    // the use everywhere is what caps it if Redis goes away.
                    let stale_view = !k.ledger.idle()
                        && k.viewed
                            .is_none_or(|t| now.duration_since(t) >= VIEW_MAX_AGE);
                    (used > k.reserved || want > 0 || stale_view).then(|| k.ask(id, want))
                })
                .collect(),
        });
        if sent {
            self.recharge = false;
        }
    }

    fn take_report(&mut self, report: Report) {
        let w = report.worker;
        if w >= self.workers {
            return;
        }
        // At least a millisecond: a report right after the previous one says little.
        self.report_secs[w] += report.secs.max(1e-3);
        for (id, share) in report.released {
            if let Some(key) = self.rates.get_mut(&id) {
                key.surrendered += share * key.burst;
            }
        }
        for e in report.entries {
            match e.params {
                Params::Rate { per_sec, burst } => {
                    let part = self.cluster.as_ref().map_or(1.0, ClusterMode::local_part);
                    let key = self.rates.entry(e.id).or_insert_with(|| RateKey {
                        shares: RateShares::new(self.workers, part),
                        text: e.text.clone(),
                        per_sec,
                        burst,
                        scale: part,
                        idle_since: None,
                        surrendered: 0.0,
                    });
                    key.per_sec = per_sec;
                    key.burst = burst;
                    key.surrendered += e.surrendered;
                    let attempts = self
                        .round
                        .entry(e.id)
                        .or_insert_with(|| vec![0; self.workers]);
                    attempts[w] = attempts[w].saturating_add(e.attempts);
                }
                Params::Quota {
                    per_day,
                    day,
                    secs_left,
                } => {
                    let workers = self.workers;
                    // What each worker holds before it is told anything (as it computed).
                    let gateways = self.cluster.as_ref().map(ClusterMode::gateways);
                    let initial = initial_grant(per_day, workers, gateways);
                    let key = self.quotas.entry(e.id).or_insert_with(|| QuotaKey {
                        ledger: QuotaLedger::new(workers, per_day, 0, initial),
                        text: e.text.clone(),
                        per_day,
                        day,
                        secs_left,
                        reserved: 0,
                        cluster_used: 0,
                        leased: false,
                        viewed: None,
                        held_from: 0,
                    });
                    key.secs_left = secs_left;
                    if key.per_day != per_day {
                        // An app's quota changed: the new one applies from now on (in
                        // cluster mode the cap follows the reservations).
                        key.per_day = per_day;
                        if self.cluster.is_none() {
                            key.ledger.set_cap(per_day);
                        }
                    }
                    key.ledger.observe(w, e.used_total, e.attempts);
                    self.quota_changed = true;
                }
            }
        }
    }

    fn flush(&mut self) {
        for (w, out) in self.outbox.iter_mut().enumerate() {
            for u in out.drain(..) {
                let _ = self.updates[w].send(u);
            }
        }
    }

    fn save(&mut self) {
        let Some(path) = &self.state_file else {
            return;
        };
        if !std::mem::take(&mut self.quota_changed) {
            return;
        }
        let state = QuotaState {
            version: 0,
            seeds: self.seeds,
            quotas: self
                .quotas
                .iter()
                .map(|(&id, k)| SavedQuota {
                    id,
                    text: k.text.to_string(),
                    day: k.day,
                    per_day: k.per_day,
                    used: k.ledger.used(),
                })
                .collect(),
        };
        match state::save(path, &state) {
            Ok(()) => {
                if self.save_error_said.take().is_some() {
                    log::info!("traffic.state_file: saved again");
                }
            }
            Err(e) => {
                let quiet = self
                    .save_error_said
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                if !quiet {
                    log::error!("traffic.state_file: {e}; serving on, retrying every round (the last saved state is intact)");
                    self.save_error_said = Some(std::time::Instant::now());
                }
                self.quota_changed = true;
            }
        }
    }
}
