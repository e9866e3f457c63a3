//! A worker's token bucket for one key: its share of the limit's rate and burst,
//! optionally split between priority groups.
//!
//! Groups: each group has its own bucket refilled at `ratio x rate`; what a full group
//! bucket would waste spills into a shared overflow pool that any group may spend. So a
//! group that uses less than its ratio lends the rest, and under contention (every group
//! bucket drained, nothing spills) each group gets exactly its ratio. Tokens are never
//! created twice: every refilled token goes to one group or to the pool, and all of them
//! together never exceed the burst.
//!
//! Pure: time comes in as nanoseconds from any fixed origin.

/// This worker's part of a limit: the rate and burst after its share was applied, and the
/// group ratios (empty: no groups).
#[derive(Debug, Clone, Copy)]
pub struct BucketParams<'a> {
    pub rate_per_sec: f64,
    pub burst: f64,
    pub ratios: &'a [f64],
}

/// Where a taken token came from, so it can be given back when a later limit of the same
/// request refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken(usize);

#[derive(Debug, Clone)]
pub struct Bucket {
    /// One slot per group (one slot without groups), then the overflow pool when there
    /// are groups.
    tokens: Box<[f64]>,
    last_ns: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(p: &BucketParams, now_ns: u64) -> Bucket {
        let tokens: Box<[f64]> = if p.ratios.is_empty() {
            Box::new([p.burst])
        } else {
            p.ratios
                .iter()
                .map(|r| r * p.burst)
                .chain(std::iter::once(0.0))
                .collect()
        };
        Bucket {
            tokens,
            last_ns: now_ns,
        }
    }

    /// Takes one token for a request of `group` (0 without groups): from the group's own
    /// bucket first, then from the overflow pool.
    pub fn try_take(&mut self, group: usize, p: &BucketParams, now_ns: u64) -> Option<Taken> {
        self.refill(p, now_ns);
        let own = group.min(self.own_slots() - 1);
        for slot in [own, self.tokens.len() - 1] {
            if self.tokens[slot] >= 1.0 {
                self.tokens[slot] -= 1.0;
                return Some(Taken(slot));
            }
        }
        None
    }

    /// Gives back a token taken by `try_take`.
    pub fn refund(&mut self, taken: Taken) {
        self.tokens[taken.0] += 1.0;
    }

    /// Tokens a request of `group` could spend now (as of the last refill).
    pub fn available(&self, group: usize) -> f64 {
        let own = group.min(self.own_slots() - 1);
        let pool = if self.own_slots() < self.tokens.len() {
            self.tokens[self.tokens.len() - 1]
        } else {
            0.0
        };
        self.tokens[own] + pool
    }

    /// Seconds until a request of `group` would find a token, at this rate.
    pub fn wait_secs(&self, group: usize, p: &BucketParams) -> f64 {
        let missing = 1.0 - self.available(group);
        if missing <= 0.0 {
            return 0.0;
        }
        let rate = match p.ratios.get(group) {
            Some(r) => r * p.rate_per_sec,
            None => p.rate_per_sec,
        };
        if rate > 0.0 {
            missing / rate
        } else {
            f64::INFINITY
        }
    }

    /// Lowers the tokens to at most `cap` (a smaller share); returns how many were taken
    /// away, for the reconciler to hand to another core.
    pub fn surrender_above(&mut self, cap: f64) -> f64 {
        let total: f64 = self.tokens.iter().sum();
        if total <= cap || total <= 0.0 {
            return 0.0;
        }
        let f = cap.max(0.0) / total;
        self.tokens.iter_mut().for_each(|t| *t *= f);
        total - cap.max(0.0)
    }

    /// Adds tokens another core gave up, up to `cap` in all (into the shared pool when
    /// there are groups: they were nobody's in particular).
    pub fn receive(&mut self, tokens: f64, cap: f64) {
        let total: f64 = self.tokens.iter().sum();
        let add = tokens.min((cap - total).max(0.0));
        let last = self.tokens.len() - 1;
        self.tokens[last] += add;
    }

    fn own_slots(&self) -> usize {
        if self.tokens.len() == 1 {
            1
        } else {
            self.tokens.len() - 1
        }
    }

    fn refill(&mut self, p: &BucketParams, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        if p.ratios.is_empty() || self.tokens.len() != p.ratios.len() + 1 {
            // No groups (or the groups changed under a reload: start the split afresh).
            if self.tokens.len() != 1 && !p.ratios.is_empty() {
                let total: f64 = self.tokens.iter().sum();
                *self = Bucket::new(p, now_ns);
                self.scale_to(total, p);
                return;
            }
            if self.tokens.len() != 1 {
                let total: f64 = self.tokens.iter().sum();
                self.tokens = Box::new([total]);
            }
            self.tokens[0] = (self.tokens[0] + p.rate_per_sec * elapsed).min(p.burst);
            return;
        }
        let pool = p.ratios.len();
        let mut spill = 0.0;
        for (i, ratio) in p.ratios.iter().enumerate() {
            let cap = ratio * p.burst;
            let filled = self.tokens[i] + ratio * p.rate_per_sec * elapsed;
            if filled > cap {
                spill += filled - cap;
                self.tokens[i] = cap;
            } else {
                self.tokens[i] = filled;
            }
        }
        // The pool holds what the groups leave of the burst, so the whole never exceeds it.
        let in_groups: f64 = self.tokens[..pool].iter().sum();
        self.tokens[pool] = (self.tokens[pool] + spill).min((p.burst - in_groups).max(0.0));
    }

    /// Keeps at most `total` tokens (used when the group split changes).
    fn scale_to(&mut self, total: f64, p: &BucketParams) {
        let now: f64 = self.tokens.iter().sum();
        if now > total && now > 0.0 {
            let f = total.max(0.0) / now;
            self.tokens.iter_mut().for_each(|t| *t *= f);
        }
        let _ = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn plain(rate: f64, burst: f64) -> BucketParams<'static> {
        BucketParams {
            rate_per_sec: rate,
            burst,
            ratios: &[],
        }
    }

    /// Requests of `group` taken until refused, at one instant.
    fn drain(b: &mut Bucket, group: usize, p: &BucketParams, now: u64) -> usize {
        let mut n = 0;
        while b.try_take(group, p, now).is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let p = plain(10.0, 5.0);
        let mut b = Bucket::new(&p, 0);
        assert_eq!(drain(&mut b, 0, &p, 0), 5);
        assert_eq!(drain(&mut b, 0, &p, SEC / 2), 5, "half a second refills 5");
        assert_eq!(drain(&mut b, 0, &p, SEC / 2 + SEC / 10), 1);
        // A long pause refills only up to the burst.
        assert_eq!(drain(&mut b, 0, &p, 100 * SEC), 5);
    }

    #[test]
    fn admits_the_rate_over_time() {
        let p = plain(100.0, 10.0);
        let mut b = Bucket::new(&p, 0);
        let mut admitted = 0;
        // One attempt every millisecond for ten seconds: 10 000 attempts.
        for ms in 0..10_000u64 {
            admitted += b.try_take(0, &p, ms * 1_000_000).is_some() as usize;
        }
        assert_eq!(
            admitted,
            10 + 100 * 10 - 1,
            "burst + rate x time (the last refill is 1 ms short)"
        );
    }

    #[test]
    fn refund_gives_the_token_back() {
        let p = plain(1.0, 1.0);
        let mut b = Bucket::new(&p, 0);
        let t = b.try_take(0, &p, 0).unwrap();
        assert!(b.try_take(0, &p, 0).is_none());
        b.refund(t);
        assert!(b.try_take(0, &p, 0).is_some());
    }

    #[test]
    fn wait_secs_is_the_time_to_the_next_token() {
        let p = plain(4.0, 1.0);
        let mut b = Bucket::new(&p, 0);
        assert_eq!(b.wait_secs(0, &p), 0.0);
        b.try_take(0, &p, 0).unwrap();
        assert!((b.wait_secs(0, &p) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn surrendered_tokens_move_between_buckets() {
        let p = plain(10.0, 10.0);
        let mut a = Bucket::new(&p, 0);
        assert_eq!(a.surrender_above(4.0), 6.0);
        assert_eq!(drain(&mut a, 0, &plain(10.0, 4.0), 0), 4);
        let mut b = Bucket::new(&p, 0);
        drain(&mut b, 0, &p, 0);
        b.receive(6.0, 5.0);
        assert_eq!(drain(&mut b, 0, &p, 0), 5, "received up to the cap");
    }

    #[test]
    fn a_smaller_share_clamps_the_tokens() {
        let mut b = Bucket::new(&plain(100.0, 100.0), 0);
        let small = plain(10.0, 10.0);
        assert_eq!(drain(&mut b, 0, &small, 0), 10);
    }

    const RATIOS: [f64; 2] = [0.7, 0.3];

    fn grouped(rate: f64, burst: f64) -> BucketParams<'static> {
        BucketParams {
            rate_per_sec: rate,
            burst,
            ratios: &RATIOS,
        }
    }

    /// Both groups ask for more than they can get: each gets exactly its ratio.
    #[test]
    fn under_contention_each_group_gets_its_ratio() {
        let p = grouped(1000.0, 10.0);
        let mut b = Bucket::new(&p, 0);
        let mut got = [0usize; 2];
        // Every 100 us both groups try 5 times: 100 000 attempts a second each.
        for step in 0..10_000u64 {
            let now = step * 100_000;
            for _ in 0..5 {
                for (g, n) in got.iter_mut().enumerate() {
                    *n += b.try_take(g, &p, now).is_some() as usize;
                }
            }
        }
        // One second: 1000 tokens plus the initial burst (7 + 3), less the fractions
        // each group holds at the end.
        assert!((1007..=1009).contains(&(got[0] + got[1])), "{got:?}");
        assert!((695..=707).contains(&got[0]), "{got:?}");
        assert!((296..=303).contains(&got[1]), "{got:?}");
    }

    /// A group alone borrows what the idle group leaves.
    #[test]
    fn an_idle_groups_capacity_is_lent() {
        let p = grouped(1000.0, 10.0);
        let mut b = Bucket::new(&p, 0);
        let mut got = 0;
        for step in 0..10_000u64 {
            for _ in 0..5 {
                got += b.try_take(1, &p, step * 100_000).is_some() as usize;
            }
        }
        // Its own 300/s plus the 700/s the critical group leaves unused (less what fills
        // the critical bucket first).
        assert!(got >= 990, "got {got}");
        assert!(
            got <= 1000 + 3,
            "never more than the rate plus its burst: {got}"
        );
    }

    /// Critical traffic arriving while normal traffic borrows everything gets at least its
    /// ratio at once: its own bucket was never lent out.
    #[test]
    fn a_returning_group_gets_its_ratio_back() {
        let p = grouped(1000.0, 10.0);
        let mut b = Bucket::new(&p, 0);
        for step in 0..5_000u64 {
            for _ in 0..5 {
                let _ = b.try_take(1, &p, step * 100_000);
            }
        }
        let mut got = [0usize; 2];
        for step in 5_000..15_000u64 {
            for _ in 0..5 {
                for (g, n) in got.iter_mut().enumerate() {
                    *n += b.try_take(g, &p, step * 100_000).is_some() as usize;
                }
            }
        }
        assert!(got[0] >= 695, "critical got {got:?}");
        assert!(got[0] + got[1] <= 1000 + 10, "{got:?}");
    }

    #[test]
    fn the_total_never_exceeds_the_burst() {
        let p = grouped(1000.0, 10.0);
        let mut b = Bucket::new(&p, 0);
        // Long idle: groups full, the pool holds nothing beyond the burst.
        b.refill(&p, 1000 * SEC);
        let total: f64 = b.tokens.iter().sum();
        assert!((total - 10.0).abs() < 1e-9, "{total}");
        assert_eq!(drain(&mut b, 1, &p, 1000 * SEC), 3);
    }

    #[test]
    fn groups_changed_by_a_reload_keep_the_total() {
        let mut b = Bucket::new(&plain(10.0, 10.0), 0);
        let p = plain(10.0, 10.0);
        assert_eq!(drain(&mut b, 0, &p, 0), 10);
        let g = grouped(10.0, 10.0);
        assert_eq!(
            drain(&mut b, 0, &g, 0),
            0,
            "no tokens appear from a regrouping"
        );
    }
}
