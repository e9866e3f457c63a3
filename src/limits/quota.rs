//! How the reconciler hands out one daily quota to workers.
//!
//! A worker admits a request while its `used` count is below its `granted` count; both
//! only grow and are totals since the process started counting this key today, so
//! messages either way can be repeated or reordered without double counting. A worker
//! that meets a key for the first time holds an implicit default grant, so its first
//! requests need not wait for the reconciler; the ledger counts those grants from the
//! start, so they are never handed out twice.
//!
//! Every round the ledger tops up workers that are using their grant (enough for a few
//! rounds at their current pace) from what is left, and when nothing is left it takes
//! unused grants back from workers that went idle. The quota is held exactly: the units
//! used plus those granted and not yet used never exceed the cap.
//!
//! Pure; the reconciler feeds it reports and sends what `rebalance` returns.

/// Rounds of a worker's current demand a top-up covers: a worker that suddenly gets busy
/// runs out at most once before the next round tops it up again.
const LOOKAHEAD_ROUNDS: f64 = 4.0;

/// Rounds without a request after which a worker's unused grant may be taken back.
const IDLE_ROUNDS: u32 = 5;

const SMOOTHING: f64 = 0.5;

/// The grant a worker holds for a key before the reconciler tells it anything, so a fresh
/// key is served at once: its fair part (limit / workers) up to 64 units, so a small quota
/// is not refused after one request while the first top-up is on its way; of a larger
/// quota a 64th of the fair part (at most 1000), so that however the first requests land
/// most of it stays with the reconciler for the cores that turn out busy. Never more than
/// the fair part: with fewer units than workers a worker starts with none, or the grants
/// together would exceed the quota.
pub fn default_grant(limit: u64, workers: usize) -> u64 {
    let fair = limit / workers.max(1) as u64;
    (fair / 64).max(fair.min(64)).min(1_000)
}

/// The grant a worker starts with for a key in cluster mode, where the gateway knows
/// nothing of the key's use elsewhere until its first lease (a round or two later): a
/// thousandth of the fair part (at least 1, at most 64). So a gateway restarted or joining
/// after the quota is used up admits at most this per worker for each key.
pub fn cluster_default_grant(limit: u64, holders: usize) -> u64 {
    let fair = limit / holders.max(1) as u64;
    (fair / 1024).clamp(1, 64).min(fair)
}

/// What a worker holds of a key before it is told anything: `cluster_default_grant`
/// with `Some(gateways)` sharing the limits, else `default_grant`.
pub fn initial_grant(limit: u64, workers: usize, cluster_gateways: Option<usize>) -> u64 {
    match cluster_gateways {
        Some(g) => cluster_default_grant(limit, workers * g),
        None => default_grant(limit, workers),
    }
}

/// The grant each worker starts with for a key restored from the state file with `used`
/// units already spent: the default grant while enough is left for every worker, else an
/// equal part of what is left.
pub fn restored_grant(limit: u64, used: u64, workers: usize) -> u64 {
    let workers = workers.max(1) as u64;
    let left = limit.saturating_sub(used);
    let d = default_grant(limit, workers as usize);
    if left >= d * workers {
        d
    } else {
        left / workers
    }
}

#[derive(Debug, Clone)]
pub struct QuotaLedger {
    /// Units this ledger may hand out in all (the quota, less what others used).
    cap: u64,
    /// Units used before this ledger started counting (state file, earlier process).
    base_used: u64,
    used: Box<[u64]>,
    granted: Box<[u64]>,
    /// Requests per round per worker, smoothed.
    demand: Box<[f64]>,
    attempts_this_round: Box<[u32]>,
    idle_rounds: Box<[u32]>,
}

impl QuotaLedger {
    /// Every worker starts holding `initial_grant` (the default grant, or 0 when workers
    /// were told something else before they could serve).
    pub fn new(workers: usize, cap: u64, base_used: u64, initial_grant: u64) -> QuotaLedger {
        let n = workers.max(1);
        QuotaLedger {
            cap,
            base_used,
            used: vec![0; n].into(),
            granted: vec![initial_grant; n].into(),
            demand: vec![0.0; n].into(),
            attempts_this_round: vec![0; n].into(),
            idle_rounds: vec![IDLE_ROUNDS; n].into(),
        }
    }

    /// A worker's report: its `used` total and the requests it saw this round.
    pub fn observe(&mut self, worker: usize, used_total: u64, attempts: u32) {
        if let Some(u) = self.used.get_mut(worker) {
            *u = (*u).max(used_total);
            self.attempts_this_round[worker] =
                self.attempts_this_round[worker].saturating_add(attempts);
            // A worker may have used more than the ledger thought it held (a grant taken
            // back while it was spending it): it holds exactly what it used.
            self.granted[worker] = self.granted[worker].max(*u);
        }
    }

    /// Units used where this ledger could not see them (a predecessor process at an
    /// upgrade): they count as used before it started.
    pub fn add_used_elsewhere(&mut self, units: u64) {
        self.base_used = self.base_used.saturating_add(units);
    }

    pub fn set_cap(&mut self, cap: u64) {
        self.cap = cap;
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Units used, including those before this ledger started.
    pub fn used(&self) -> u64 {
        self.base_used + self.used.iter().sum::<u64>()
    }

    /// Units used plus units granted and not used yet.
    pub fn committed(&self) -> u64 {
        self.base_used + self.granted.iter().sum::<u64>()
    }

    /// More units workers would take if the cap allowed it (what a cluster lease asks).
    pub fn shortfall(&self) -> u64 {
        let wanted: u64 = (0..self.used.len()).map(|w| self.top_up(w)).sum();
        (self.committed() + wanted).saturating_sub(self.cap)
    }

    /// Units to reserve in a cluster: what the workers would use over `rounds` rounds at
    /// their current pace, less what is already reserved and not handed out yet (call
    /// after `rebalance`, which folds in the round's demand).
    pub fn lease_want(&self, rounds: f64) -> u64 {
        if self.idle() {
            return 0;
        }
        let pace: f64 = self.demand.iter().sum();
        let want = (pace * rounds).ceil().max(1.0) as u64;
        want.saturating_sub(self.left())
    }

    /// Nobody asked for a while, this round included (its attempts are folded in only by
    /// `rebalance`, which an idle ledger skips).
    pub fn idle(&self) -> bool {
        self.idle_rounds.iter().all(|&r| r >= IDLE_ROUNDS)
            && self.attempts_this_round.iter().all(|&a| a == 0)
    }

    /// Ends the round: updates demand, tops up busy workers from what is left (taking
    /// back idle workers' grants when nothing is), and returns the workers whose grant
    /// changed, with their new grant total.
    pub fn rebalance(&mut self) -> Vec<(usize, u64)> {
        for w in 0..self.used.len() {
            let a = std::mem::take(&mut self.attempts_this_round[w]);
            self.demand[w] += SMOOTHING * (a as f64 - self.demand[w]);
            self.idle_rounds[w] = if a > 0 {
                0
            } else {
                self.idle_rounds[w].saturating_add(1)
            };
        }
        let mut changed = vec![false; self.used.len()];
        let wants: Vec<u64> = (0..self.used.len()).map(|w| self.top_up(w)).collect();
        if wants.iter().sum::<u64>() > self.left() {
            for (w, changed) in changed.iter_mut().enumerate() {
                if self.idle_rounds[w] >= IDLE_ROUNDS && self.granted[w] > self.used[w] {
                    self.granted[w] = self.used[w];
                    *changed = true;
                }
            }
        }
        for (w, want) in wants.into_iter().enumerate() {
            let give = want.min(self.left());
            if give > 0 {
                self.granted[w] += give;
                changed[w] = true;
            }
        }
        changed
            .iter()
            .enumerate()
            .filter(|(_, &c)| c)
            .map(|(w, _)| (w, self.granted[w]))
            .collect()
    }

    /// Workers that asked this round and hold no unused units, with their grant (call
    /// after `rebalance`). They are told the key's use every round, so that they can tell
    /// a quota used up (refused until the day ends) from one still being shared out
    /// (refused for a moment).
    pub fn short(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.used.len())
            .filter(|&w| self.idle_rounds[w] == 0 && self.used[w] >= self.granted[w])
            .map(|w| (w, self.granted[w]))
    }

    /// Units not yet granted to anyone.
    fn left(&self) -> u64 {
        self.cap.saturating_sub(self.committed())
    }

    /// What a busy worker should get to keep going for a few rounds.
    fn top_up(&self, w: usize) -> u64 {
        if self.idle_rounds[w] >= IDLE_ROUNDS {
            return 0;
        }
        let outstanding = self.granted[w] - self.used[w].min(self.granted[w]);
        let want = (self.demand[w] * LOOKAHEAD_ROUNDS).ceil().max(1.0) as u64;
        want.saturating_sub(outstanding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates workers spending grants: each round worker `w` tries `load[w]` requests.
    struct Sim {
        ledger: QuotaLedger,
        used: Vec<u64>,
        granted: Vec<u64>,
        admitted: u64,
        refused: u64,
    }

    impl Sim {
        fn new(workers: usize, limit: u64, base_used: u64) -> Sim {
            let d = restored_grant(limit, base_used, workers);
            Sim {
                ledger: QuotaLedger::new(workers, limit, base_used, d),
                used: vec![0; workers],
                granted: vec![d; workers],
                admitted: 0,
                refused: 0,
            }
        }

        fn round(&mut self, load: &[u32]) {
            for (w, &n) in load.iter().enumerate() {
                for _ in 0..n {
                    if self.used[w] < self.granted[w] {
                        self.used[w] += 1;
                        self.admitted += 1;
                    } else {
                        self.refused += 1;
                    }
                }
                self.ledger.observe(w, self.used[w], n);
            }
            for (w, g) in self.ledger.rebalance() {
                // As a worker applies it: never below what it already used.
                self.granted[w] = g.max(self.used[w]);
            }
        }
    }

    #[test]
    fn default_grants_are_small_slices() {
        assert_eq!(default_grant(100_000, 2), 781);
        assert_eq!(default_grant(u64::MAX / 2, 1), 1_000);
        // Small quotas: the whole fair part, and never more than the quota in all.
        assert_eq!(default_grant(5, 1), 5);
        assert_eq!(default_grant(5, 2), 2);
        assert_eq!(default_grant(1_000, 4), 64);
        assert_eq!(default_grant(10, 16), 0);
        assert_eq!(cluster_default_grant(60, 4), 1);
        assert_eq!(cluster_default_grant(100_000, 4), 24);
        assert_eq!(cluster_default_grant(u64::MAX, 4), 64);
        assert_eq!(cluster_default_grant(3, 4), 0);
    }

    #[test]
    fn a_small_quota_is_served_in_full_before_any_round() {
        let mut s = Sim::new(1, 5, 0);
        // All five arrive before the reconciler has seen a report.
        for _ in 0..5 {
            assert!(s.used[0] < s.granted[0]);
            s.used[0] += 1;
        }
        s.round(&[1]);
        assert_eq!(s.refused, 1);
        assert_eq!(s.ledger.used(), 5);
    }

    /// The reconciler skips idle ledgers; a key's first report must wake it, or no worker
    /// ever gets more than its default grant.
    #[test]
    fn a_report_wakes_an_idle_ledger() {
        let mut l = QuotaLedger::new(2, 1_000, 0, default_grant(1_000, 2));
        assert!(l.idle());
        l.observe(0, 64, 70);
        assert!(!l.idle(), "asked this round");
        assert_eq!(l.rebalance().len(), 1, "worker 0 topped up");
        for _ in 0..IDLE_ROUNDS {
            assert!(!l.idle());
            l.rebalance();
        }
        assert!(l.idle());
    }

    #[test]
    fn short_workers_are_the_busy_ones_holding_nothing() {
        let mut l = QuotaLedger::new(2, 4, 0, 2);
        l.observe(0, 2, 5);
        l.observe(1, 1, 1);
        l.rebalance();
        // Worker 0 got nothing more (worker 1 is not idle): it is short.
        assert_eq!(l.short().collect::<Vec<_>>(), [(0, 2)]);
        l.rebalance();
        assert_eq!(l.short().count(), 0, "not asking this round");
    }

    #[test]
    fn holds_the_quota_exactly_on_one_core() {
        let mut s = Sim::new(4, 10_000, 0);
        for _ in 0..200 {
            s.round(&[300, 0, 0, 0]);
        }
        assert_eq!(s.admitted, 10_000);
        assert_eq!(s.ledger.used(), 10_000);
    }

    #[test]
    fn holds_the_quota_exactly_spread_unevenly() {
        let mut s = Sim::new(3, 5_000, 0);
        for i in 0..300u32 {
            s.round(&[50, 7 + i % 5, (i % 3 == 0) as u32 * 20]);
        }
        assert_eq!(s.admitted, 5_000);
    }

    #[test]
    fn busy_workers_rarely_wait_while_quota_is_left() {
        let mut s = Sim::new(2, 1_000_000, 0);
        for _ in 0..100 {
            s.round(&[100, 100]);
        }
        // Only the first round, before the first top-up, may find a worker short.
        assert!(s.refused <= 200, "refused {}", s.refused);
        assert_eq!(s.admitted + s.refused, 20_000);
    }

    #[test]
    fn idle_workers_give_back_their_grants() {
        let mut s = Sim::new(2, 2_000, 0);
        // Worker 1 gets busy, then idle, holding a top-up.
        for _ in 0..3 {
            s.round(&[0, 100]);
        }
        for _ in 0..100 {
            s.round(&[100, 0]);
        }
        assert_eq!(
            s.admitted, 2_000,
            "worker 1's unused grant went to worker 0"
        );
    }

    #[test]
    fn earlier_use_counts() {
        let mut s = Sim::new(1, 100, 95);
        // The restored grant is inside the quota; the rest is what is left.
        for _ in 0..10 {
            s.round(&[10]);
        }
        assert_eq!(s.admitted, 5);
        assert_eq!(s.ledger.used(), 100);
    }

    #[test]
    fn a_lease_asks_for_a_few_rounds_of_the_pace_less_what_is_left() {
        // Reserved nothing yet; the workers hold their default grants of 2.
        let mut l = QuotaLedger::new(2, 0, 0, 2);
        assert_eq!(l.lease_want(20.0), 0, "idle: nothing to ask");
        l.observe(0, 2, 10);
        l.rebalance();
        // Demand 5 a round (smoothed from 10) for 20 rounds.
        assert_eq!(l.lease_want(20.0), 100);
        l.set_cap(64);
        // 64 reserved; worker 0 holds 2 (worker 1, idle, gave its grant back when the
        // round found nothing left): 62 left to hand out.
        assert_eq!(l.lease_want(20.0), 38);
    }

    #[test]
    fn shortfall_is_what_busy_workers_would_take_beyond_the_cap() {
        let mut l = QuotaLedger::new(1, 10, 0, 1);
        l.observe(0, 1, 40);
        l.rebalance();
        assert_eq!(l.committed(), 10);
        l.observe(0, 10, 40);
        assert!(l.shortfall() > 0);
        l.set_cap(100);
        let g = l.rebalance();
        assert_eq!(g.len(), 1);
        assert!(g[0].1 > 10);
    }
}
