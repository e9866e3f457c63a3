//! Which targets of an upstream may get traffic: the verdict of active health checks
//! (written by the control-side checker) and passive outlier ejection (written by the
//! workers from live traffic), both in atomics that every worker reads without a lock.
//!
//! - **Active.** A target turns unhealthy after `unhealthy` failed checks in a row and
//!   healthy again after `healthy` passed ones (`CheckStreak`, pure). Targets start
//!   healthy, so a gateway serves before its first round of checks.
//! - **Passive.** `consecutive_failures` failed exchanges in a row eject a target for
//!   `base_ejection x 2^(ejections so far)`, at most `max_ejection`; a success resets the
//!   streak. A target that comes back and fails again is out for twice as long.
//! - **Per-target breakers** (optional): each target's own `Breaker`, tripping on failures
//!   in a row or an error rate, half-opening to a few probes. An open target is skipped
//!   like an ejected one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::breaker::{Admission, Breaker, BreakerConfig};
pub use crate::config::model_resilience::{HealthCheckConfig, OutlierConfig};

/// An active checker's count of results in a row for one target (pure).
#[derive(Debug, Clone, Default)]
pub struct CheckStreak {
    passed: u32,
    failed: u32,
}

impl CheckStreak {
    /// Takes one check result; returns the new verdict when it changes.
    pub fn observe(
        &mut self,
        passed: bool,
        healthy_now: bool,
        c: &HealthCheckConfig,
    ) -> Option<bool> {
        if passed {
            self.passed = self.passed.saturating_add(1);
            self.failed = 0;
            (!healthy_now && self.passed >= c.healthy).then_some(true)
        } else {
            self.failed = self.failed.saturating_add(1);
            self.passed = 0;
            (healthy_now && self.failed >= c.unhealthy).then_some(false)
        }
    }
}

#[derive(Debug, Default)]
struct Target {
    /// The active checks' verdict (true until a check says otherwise).
    unhealthy: AtomicBool,
    failures_in_a_row: AtomicU32,
    /// Ejected until this time, in ns since the epoch (0: not ejected).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

/// One upstream's targets as every worker sees them.
pub struct UpstreamHealth {
    epoch: Instant,
    targets: Vec<Target>,
    outlier: Option<OutlierConfig>,
    /// Per target, with `[[upstreams]] breaker`.
    breakers: Vec<Breaker>,
}

impl std::fmt::Debug for UpstreamHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamHealth({} targets)", self.targets.len())
    }
}

/// A request's admission by its target's breaker (none without one); hand it back to
/// `finish`.
#[derive(Debug, Clone, Copy)]
pub struct TargetTicket(Option<(Admission, u64)>);

impl UpstreamHealth {
    pub fn new(
        targets: usize,
        outlier: Option<OutlierConfig>,
        breaker: Option<&BreakerConfig>,
        epoch: Instant,
    ) -> UpstreamHealth {
        UpstreamHealth {
            epoch,
            targets: (0..targets).map(|_| Target::default()).collect(),
            outlier,
            breakers: breaker.map_or_else(Vec::new, |c| {
                (0..targets)
                    .map(|_| Breaker::new(c.clone(), epoch))
                    .collect()
            }),
        }
    }

    /// Whether `target` may get traffic now.
    pub fn available(&self, target: usize, now: Instant) -> bool {
        self.targets.get(target).is_some_and(|t| {
            !t.unhealthy.load(Relaxed) && t.ejected_until.load(Relaxed) <= self.ns(now)
        }) && self.breakers.get(target).is_none_or(|b| b.may_admit(now))
    }

    /// Whether live outcomes matter here (outlier ejection or target breakers): without
    /// either, the request path records nothing and reads no clock for it.
    pub fn tracks_outcomes(&self) -> bool {
        self.outlier.is_some() || !self.breakers.is_empty()
    }

    /// Admits a request to the target chosen (`available` said yes; under a race
    /// between cores its breaker may still refuse, and the request goes uncounted).
    pub fn admit(&self, target: usize, now: Instant) -> TargetTicket {
        TargetTicket(self.breakers.get(target).map(|b| {
            let round = b.round();
            (b.admit(now), round)
        }))
    }

    /// The outcome of an exchange with `target`: `None` when it says nothing about the
    /// target (the client went away). Returns the ejection time when this failure
    /// ejected it.
    pub fn finish(
        &self,
        target: usize,
        ticket: TargetTicket,
        success: Option<bool>,
        now: Instant,
    ) -> Option<Duration> {
        if let (Some(b), Some((admission, round))) = (self.breakers.get(target), ticket.0) {
            if b.round() == round {
                match success {
                    Some(ok) => b.record(admission, ok, now),
                    None => b.release(admission),
                }
            }
        }
        self.record(target, success?, now)
    }

    /// A target's breaker state and trips, when it has one.
    pub fn breaker(&self, target: usize) -> Option<(super::breaker::State, u64)> {
        self.breakers.get(target).map(|b| (b.state(), b.trips()))
    }

    pub fn healthy(&self, target: usize) -> bool {
        self.targets
            .get(target)
            .is_some_and(|t| !t.unhealthy.load(Relaxed))
    }

    /// The active checker's verdict.
    pub fn set_healthy(&self, target: usize, healthy: bool) {
        if let Some(t) = self.targets.get(target) {
            t.unhealthy.store(!healthy, Relaxed);
        }
    }

    /// The outcome of a live exchange with `target`; returns the ejection time when this
    /// failure ejected it.
    pub fn record(&self, target: usize, success: bool, now: Instant) -> Option<Duration> {
        let (Some(t), Some(o)) = (self.targets.get(target), &self.outlier) else {
            return None;
        };
        if success {
            if t.failures_in_a_row.load(Relaxed) != 0 {
                t.failures_in_a_row.store(0, Relaxed);
            }
            return None;
        }
        // Exchanges that were under way when it was ejected say nothing new.
        if t.ejected_until.load(Relaxed) > self.ns(now) {
            return None;
        }
        let streak = t.failures_in_a_row.fetch_add(1, Relaxed) + 1;
        // Only the core that takes the streak back to zero ejects it.
        if streak < o.consecutive_failures
            || t.failures_in_a_row
                .compare_exchange(streak, 0, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        let n = t.ejections.fetch_add(1, Relaxed).min(20);
        let ejection = o.base_ejection.saturating_mul(1 << n).min(o.max_ejection);
        t.ejected_until
            .store(self.ns(now) + ejection.as_nanos() as u64, Relaxed);
        Some(ejection)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy: 2,
            unhealthy: 3,
        }
    }

    #[test]
    fn thresholds_turn_the_verdict() {
        let c = check();
        let mut s = CheckStreak::default();
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(true, true, &c), None, "a pass breaks the streak");
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), Some(false));
        assert_eq!(s.observe(true, false, &c), None);
        assert_eq!(s.observe(true, false, &c), Some(true));
        assert_eq!(s.observe(true, true, &c), None, "already healthy");
    }

    #[test]
    fn failures_in_a_row_eject_for_a_growing_time() {
        let t0 = Instant::now();
        let outlier = OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(30),
        };
        let h = UpstreamHealth::new(2, Some(outlier), None, t0);
        assert!(h.available(0, t0) && h.available(1, t0));
        assert_eq!(h.record(0, false, t0), None);
        assert_eq!(h.record(0, true, t0), None, "a success resets the streak");
        assert_eq!(h.record(0, false, t0), None);
        assert_eq!(h.record(0, false, t0), None);
        assert_eq!(h.record(0, false, t0), Some(Duration::from_secs(10)));
        assert!(!h.available(0, t0 + Duration::from_secs(9)));
        assert!(h.available(1, t0), "the other target is untouched");
        let back = t0 + Duration::from_secs(10);
        assert!(h.available(0, back));
        for _ in 0..2 {
            h.record(0, false, back);
        }
        assert_eq!(h.record(0, false, back), Some(Duration::from_secs(20)));
        // Failures of exchanges still under way while it is out do not count.
        for _ in 0..5 {
            assert_eq!(h.record(0, false, back), None);
        }
        let again = back + Duration::from_secs(20);
        assert!(h.available(0, again));
        for _ in 0..2 {
            h.record(0, false, again);
        }
        assert_eq!(
            h.record(0, false, again),
            Some(Duration::from_secs(30)),
            "capped"
        );
    }

    #[test]
    fn active_verdicts_and_no_outlier_config() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(1, None, None, t0);
        for _ in 0..100 {
            assert_eq!(h.record(0, false, t0), None, "no ejection configured");
        }
        h.set_healthy(0, false);
        assert!(!h.available(0, t0) && !h.healthy(0));
        h.set_healthy(0, true);
        assert!(h.available(0, t0));
        assert!(!h.available(5, t0), "no such target");
    }
}
