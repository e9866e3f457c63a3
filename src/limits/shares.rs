//! How the reconciler splits one rate limit between workers.
//!
//! Each worker reports, every round, how many requests it saw for a key (admitted or
//! not) and over how long. That demand is smoothed per worker, and the limit's rate is
//! split:
//!
//! - total demand below the rate: every worker gets its demand plus an equal part of what
//!   is left, so a worker that sees its first request in a while still finds tokens;
//! - total demand at or above the rate: every worker gets its part of the demand, so all
//!   cores reject the same fraction and nothing is left unused on an idle core.
//!
//! Shares always sum to one, so the workers together never refill faster than the limit.
//! In a cluster the workers split this gateway's part of the limit instead (`scale`, from
//! its leases), and their shares sum to that part.
//! Pure: the caller supplies each worker's demand in requests per second.

/// Weight of the newest round in the smoothed demand: after 3 rounds (30 ms at the
/// default interval) a change of load is 90% seen, while one odd round moves it half way.
const SMOOTHING: f64 = 0.5;

/// A share change smaller than this is not worth a message to the worker.
const MIN_CHANGE: f64 = 0.002;

#[derive(Debug, Clone)]
pub struct RateShares {
    /// Requests per second per worker, smoothed.
    demand: Box<[f64]>,
    /// The shares the workers were told (or start with: an equal split).
    told: Box<[f64]>,
}

impl RateShares {
    /// The state every worker starts in without being told: an equal split of `scale`,
    /// this gateway's part of the limit (1 without a cluster).
    pub fn new(workers: usize, scale: f64) -> RateShares {
        let workers = workers.max(1);
        RateShares {
            demand: vec![0.0; workers].into(),
            told: vec![scale / workers as f64; workers].into(),
        }
    }

    /// This gateway's demand for the key, in requests per second (smoothed).
    pub fn total_demand(&self) -> f64 {
        self.demand.iter().sum()
    }

    /// Takes one round's demand: `per_sec[w]` requests a second for worker `w`, or
    /// `None` when the worker's report has not arrived this round. Its estimate is kept
    /// then: counting a late report as no demand would cut its share for a round and
    /// give it back the next, and a share applied late on one core and early on another
    /// loses tokens every time it swings.
    pub fn observe(&mut self, per_sec: &[Option<f64>]) {
        for (d, rate) in self.demand.iter_mut().zip(per_sec) {
            if let Some(rate) = rate {
                *d += SMOOTHING * (rate - *d);
            }
        }
    }

    /// No worker has asked for this key for a while.
    pub fn idle(&self) -> bool {
        self.demand.iter().all(|&d| d < 1e-3)
    }

    /// The split of `scale` of `rate_per_sec` (this gateway's part of the limit); returns
    /// the workers whose share changed enough to be worth telling, with their new share
    /// as a fraction of the whole limit (and records them as told).
    pub fn rebalance(&mut self, rate_per_sec: f64, scale: f64) -> Vec<(usize, f64)> {
        let target: Vec<f64> = split(&self.demand, rate_per_sec * scale)
            .into_iter()
            .map(|s| s * scale)
            .collect();
        let worth_it = target.iter().zip(self.told.iter()).any(|(&new, &told)| {
            (new - told).abs() >= MIN_CHANGE * scale || (new == 0.0) != (told == 0.0)
        });
        if !worth_it {
            return Vec::new();
        }
        // All or nothing: the told shares must keep summing to one.
        let mut changes = Vec::new();
        for (w, (&new, told)) in target.iter().zip(self.told.iter_mut()).enumerate() {
            if new != *told {
                *told = new;
                changes.push((w, new));
            }
        }
        changes
    }

    pub fn shares(&self) -> &[f64] {
        &self.told
    }
}

/// Shares for the given per-worker demand (requests/s) under `rate` (requests/s).
pub fn split(demand: &[f64], rate: f64) -> Vec<f64> {
    let n = demand.len().max(1) as f64;
    let total: f64 = demand.iter().sum();
    if rate <= 0.0 || total <= 0.0 {
        return vec![1.0 / n; demand.len()];
    }
    if total >= rate {
        demand.iter().map(|d| d / total).collect()
    } else {
        let spare = (rate - total) / n;
        demand.iter().map(|d| (d + spare) / rate).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sums_to_one(s: &[f64]) {
        let sum: f64 = s.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn idle_keys_split_evenly() {
        assert_eq!(split(&[0.0, 0.0, 0.0, 0.0], 100.0), vec![0.25; 4]);
    }

    #[test]
    fn overload_on_one_core_gives_it_everything() {
        let s = split(&[5000.0, 0.0], 100.0);
        assert_eq!(s, vec![1.0, 0.0]);
    }

    #[test]
    fn overload_splits_by_demand() {
        let s = split(&[300.0, 100.0], 200.0);
        assert_eq!(s, vec![0.75, 0.25]);
        assert_sums_to_one(&s);
    }

    #[test]
    fn light_load_leaves_spare_capacity_everywhere() {
        let s = split(&[40.0, 0.0], 100.0);
        assert_sums_to_one(&s);
        // Worker 0 can take its 40/s, worker 1 still has 30/s for its next request.
        assert!((s[0] * 100.0 - 70.0).abs() < 1e-9);
        assert!((s[1] * 100.0 - 30.0).abs() < 1e-9);
    }

    #[test]
    fn the_split_is_continuous_at_the_rate() {
        let below = split(&[60.0, 39.999], 100.0);
        let at = split(&[60.0, 40.0], 100.0);
        assert!((below[0] - at[0]).abs() < 1e-4);
    }

    #[test]
    fn demand_moves_the_shares_within_a_few_rounds() {
        let mut r = RateShares::new(2, 1.0);
        assert_eq!(r.shares(), &[0.5, 0.5]);
        // All load lands on worker 0: 10 000 requests a second under a 1000/s limit.
        let mut told = Vec::new();
        for _ in 0..6 {
            r.observe(&[Some(10_000.0), Some(0.0)]);
            told.extend(r.rebalance(1000.0, 1.0));
        }
        assert!(r.shares()[0] > 0.999, "{:?}", r.shares());
        assert_sums_to_one(r.shares());
        assert!(told.iter().any(|&(w, s)| w == 1 && s == 0.0));
    }

    #[test]
    fn a_late_report_keeps_the_estimate() {
        let mut r = RateShares::new(2, 1.0);
        for _ in 0..6 {
            r.observe(&[Some(5000.0), Some(5000.0)]);
            r.rebalance(1000.0, 1.0);
        }
        // Worker 1's report missed the round: no news is not no demand.
        r.observe(&[Some(5000.0), None]);
        assert!(r.rebalance(1000.0, 1.0).is_empty(), "{:?}", r.shares());
    }

    #[test]
    fn small_changes_are_not_sent() {
        let mut r = RateShares::new(2, 1.0);
        r.observe(&[Some(1000.0), Some(1000.0)]);
        assert!(
            r.rebalance(10_000.0, 1.0).is_empty(),
            "an even split stays even"
        );
        assert!(!r.idle());
        for _ in 0..40 {
            r.observe(&[Some(0.0), Some(0.0)]);
        }
        assert!(r.idle());
    }

    #[test]
    fn a_gateways_part_is_split_between_its_workers() {
        // The gateway may use 40% of a 1000/s limit (400/s): worker 0 wants 300/s, worker
        // 1 wants 20/s, so each gets its demand plus 40/s, told as parts of the limit.
        let mut r = RateShares::new(2, 0.5);
        assert_eq!(r.shares(), &[0.25, 0.25]);
        r.observe(&[Some(600.0), Some(40.0)]);
        r.rebalance(1000.0, 0.4);
        let s = r.shares();
        assert!(
            (s[0] - 0.34).abs() < 1e-9 && (s[1] - 0.06).abs() < 1e-9,
            "{s:?}"
        );
        assert!((r.total_demand() - 320.0).abs() < 1e-9);
        // Its part shrinks to 10%: every worker is told, and the shares sum to it.
        let told = r.rebalance(1000.0, 0.1);
        assert_eq!(told.len(), 2);
        assert!((r.shares().iter().sum::<f64>() - 0.1).abs() < 1e-9);
    }
}
