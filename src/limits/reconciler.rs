//! The reconciler: a control-side thread that keeps the workers' local limits adding up
//! to the configured ones.
//!
//! Every round (`[traffic] reconcile_interval`, 10 ms by default) it reads the workers'
//! reports, moves rate shares towards the cores that use them (`shares`), tops up and
//! takes back quota grants (`quota`), forgets keys that went idle, and sends each worker
//! what changed for it. Workers never wait for it: between rounds they decide alone.
//! Once a second it saves daily quota use to the state file, if there is one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::quota::{default_grant, restored_grant, QuotaLedger};
use super::shares::RateShares;
use super::spec::day_of;
use super::state::{self, QuotaState, SavedQuota};
use super::{KeyId, Params, Report, Update};

const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Rounds without a report from a worker after which it counts as idle for every key.
/// Workers report every round of their own (10 ms), even with nothing in it, so one
/// missing from a round is late (rounds drift apart, a core is busy); this long, it is
/// stalled.
const SILENT_ROUNDS: u32 = 10;

/// A rate key idle this long is forgotten, at least: by then every worker's bucket for it
/// is full again, so starting afresh admits nothing extra.
const FORGET_RATE_AFTER: Duration = Duration::from_secs(2);

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
}

/// The running reconciler thread.
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Reads the state file at start: the hash seeds to use and today's saved quota use.
/// A corrupt file is set aside and reported, and counting starts afresh.
pub fn load_state(path: Option<&std::path::Path>) -> ([u64; 4], Vec<SavedQuota>) {
    let fresh = || {
        let r = ahash::RandomState::new();
        let mut seeds = [0u64; 4];
        for (i, s) in seeds.iter_mut().enumerate() {
            *s = r.hash_one(i);
        }
        seeds
    };
    let Some(path) = path else {
        return (fresh(), Vec::new());
    };
    match state::load(path) {
        Ok(Some(s)) => {
            let today = day_of(super::super::auth::check::unix_now(), 0);
            // Quota days may be offset by up to 14 hours either way: keep yesterday's too.
            let quotas = s
                .quotas
                .into_iter()
                .filter(|q| q.day + 1 >= today)
                .collect();
            (s.seeds, quotas)
        }
        Ok(None) => (fresh(), Vec::new()),
        Err(e) => {
            let bad = state::set_aside(path);
            log::error!(
                "traffic.state_file: {e}; starting with empty quotas (kept as {})",
                bad.display()
            );
            (fresh(), Vec::new())
        }
    }
}

/// The key hash every worker uses.
pub fn key_hasher(seeds: [u64; 4]) -> ahash::RandomState {
    ahash::RandomState::with_seeds(seeds[0], seeds[1], seeds[2], seeds[3])
}

impl Reconciler {
    /// Starts the thread. Saved quotas are announced to the workers first, so that no
    /// worker serves a saved key on a default grant.
    pub fn start(spec: ReconcilerSpec) -> std::io::Result<Reconciler> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut core = Core::new(&spec);
        core.announce_saved(&spec.saved);
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ringgate-limits".into())
            .spawn(move || core.run(&flag))?;
        Ok(Reconciler {
            stop,
            handle: Some(handle),
        })
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
    per_sec: f64,
    burst: f64,
    idle_since: Option<Instant>,
    /// Tokens workers gave up this round, to hand to the others.
    surrendered: f64,
}

struct QuotaKey {
    ledger: QuotaLedger,
    text: Arc<str>,
    per_day: u64,
    day: u32,
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
}

impl Core {
    fn new(spec: &ReconcilerSpec) -> Core {
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
        }
    }

    /// Saved keys start with what is left split between the workers (the default grant
    /// when enough is left), told to every worker before it serves.
    fn announce_saved(&mut self, saved: &[SavedQuota]) {
        for q in saved {
            let grant = restored_grant(q.per_day, q.used, self.workers);
            let ledger = QuotaLedger::new(self.workers, q.per_day, q.used, grant);
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
            self.round_trip(now);
            if stopping || now.duration_since(last_save) >= SAVE_EVERY {
                last_save = now;
                self.save();
            }
            if stopping {
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
        self.rebalance_rates(now);
        self.rebalance_quotas();
        self.flush();
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
                    let key = self.rates.entry(e.id).or_insert_with(|| RateKey {
                        shares: RateShares::new(self.workers),
                        per_sec,
                        burst,
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
                Params::Quota { per_day, day, .. } => {
                    let workers = self.workers;
                    let key = self.quotas.entry(e.id).or_insert_with(|| QuotaKey {
                        ledger: QuotaLedger::new(
                            workers,
                            per_day,
                            0,
                            default_grant(per_day, workers),
                        ),
                        text: e.text.clone(),
                        per_day,
                        day,
                    });
                    if key.per_day != per_day {
                        // An app's quota changed: the new one applies from now on.
                        key.per_day = per_day;
                        key.ledger.set_cap(per_day);
                    }
                    key.ledger.observe(w, e.used_total, e.attempts);
                    self.quota_changed = true;
                }
            }
        }
    }

    fn rebalance_rates(&mut self, now: Instant) {
        let idle = vec![0u32; self.workers];
        let mut forget = Vec::new();
        let mut demand = vec![None; self.workers];
        for (&id, key) in self.rates.iter_mut() {
            let attempts = self.round.get(&id).unwrap_or(&idle);
            for (w, d) in demand.iter_mut().enumerate() {
                // A worker that reported this round but not this key is idle for it; one
                // that did not report at all is late, until it has been silent too long.
                *d = if self.report_secs[w] > 0.0 {
                    Some(attempts[w] as f64 / self.report_secs[w])
                } else if self.silent_rounds[w] >= SILENT_ROUNDS {
                    Some(0.0)
                } else {
                    None
                };
            }
            key.shares.observe(&demand);
            for (w, share) in key.shares.rebalance(key.per_sec) {
                self.outbox[w].push(Update::Share {
                    id,
                    rate_share: share,
                    burst_share: share,
                });
            }
            // Tokens given up by cores whose share shrank go to the cores holding the
            // share now, in proportion: the burst follows the traffic.
            let given = std::mem::take(&mut key.surrendered);
            if given > 0.0 {
                for (w, &share) in key.shares.shares().iter().enumerate() {
                    if share > 0.0 {
                        self.outbox[w].push(Update::Tokens {
                            id,
                            tokens: given * share,
                        });
                    }
                }
            }
            if key.shares.idle() {
                let since = *key.idle_since.get_or_insert(now);
                let refill = Duration::from_secs_f64((key.burst / key.per_sec).min(86_400.0));
                if now.duration_since(since) >= FORGET_RATE_AFTER.max(refill * 2) {
                    forget.push(id);
                }
            } else {
                key.idle_since = None;
            }
        }
        self.round.clear();
        for (secs, silent) in self.report_secs.iter_mut().zip(&mut self.silent_rounds) {
            *silent = if *secs > 0.0 {
                0
            } else {
                silent.saturating_add(1)
            };
            *secs = 0.0;
        }
        for id in forget {
            self.rates.remove(&id);
            for out in &mut self.outbox {
                out.push(Update::Forget { id });
            }
        }
    }

    fn rebalance_quotas(&mut self) {
        let today = day_of(crate::auth::check::unix_now(), 0);
        let mut over = Vec::new();
        for (&id, key) in self.quotas.iter_mut() {
            // Days are offset by at most 14 hours: two days on, the key's day is over
            // whatever its offset.
            if key.day + 2 <= today {
                over.push(id);
                continue;
            }
            if key.ledger.idle() {
                continue;
            }
            let used = key.ledger.used();
            let changed = key.ledger.rebalance();
            // A short worker that got nothing more still learns the key's use: whether to
            // refuse until the day ends or only until a grant frees up elsewhere.
            let short = key
                .ledger
                .short()
                .filter(|(w, _)| !changed.iter().any(|(c, _)| c == w));
            for (w, granted_total) in changed.iter().copied().chain(short) {
                self.outbox[w].push(Update::Grant {
                    id,
                    granted_total,
                    used_everywhere: used,
                });
            }
        }
        for id in over {
            self.quotas.remove(&id);
            for out in &mut self.outbox {
                out.push(Update::Forget { id });
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
        if let Err(e) = state::save(path, &state) {
            log::error!("traffic.state_file: {e}");
            self.quota_changed = true;
        }
    }
}
