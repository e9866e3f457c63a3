//! A circuit breaker shared by every worker: lock-free counters, so all cores trip,
//! half-open and close together.
//!
//! - **Closed**: requests go through. Each outcome is counted: consecutive failures, and
//!   requests and failures in a sliding window of ten buckets. The breaker trips when the
//!   failures in a row reach `consecutive_failures`, or when the window holds at least
//!   `min_requests` and its error rate reaches `error_rate`.
//! - **Open**: every request is refused at once (`circuit_open`) until `open_for` passed.
//! - **Half-open**: up to `probes` requests go through as probes; the rest are refused.
//!   That many successes close it (counters start afresh), one failure opens it again.
//!
//! Counters are atomics updated with relaxed ordering (see `window`). State changes go
//! through compare-and-swap, so exactly one core trips or closes the breaker. Pure
//! otherwise: time comes in as `Instant`s.

use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicU8,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::{Duration, Instant};

use super::window::Window;
pub use crate::config::model_resilience::BreakerConfig;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Half-open: this request is one of the probes; report its outcome.
    Probe,
    Refused,
}

/// The state as the admin side shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

pub struct Breaker {
    config: BreakerConfig,
    epoch: Instant,
    state: AtomicU8,
    /// When it opened, in ns since `epoch`.
    opened_at: AtomicU64,
    consecutive: AtomicU32,
    probes_started: AtomicU32,
    probes_passed: AtomicU32,
    /// Requests and failures.
    window: Window,
    /// Times it tripped (for /stats).
    trips: AtomicU64,
}

impl Breaker {
    pub fn new(config: BreakerConfig, epoch: Instant) -> Breaker {
        Breaker {
            epoch,
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            probes_started: AtomicU32::new(0),
            probes_passed: AtomicU32::new(0),
            window: Window::new(config.window, epoch),
            trips: AtomicU64::new(0),
            config,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        match self.state.load(Relaxed) {
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            _ => State::Closed,
        }
    }

    pub fn trips(&self) -> u64 {
        self.trips.load(Relaxed)
    }

    /// Which round of the breaker this is (it changes every time it opens): an outcome
    /// from a request admitted in an earlier round says nothing about this one.
    pub fn round(&self) -> u64 {
        self.trips.load(Acquire)
    }

    /// Whether a request may go to the upstream now.
    pub fn admit(&self, now: Instant) -> Admission {
        // Acquire: a core that sees the breaker open also sees when it opened, and the
        // probe counters it reset (see `open`).
        match self.state.load(Acquire) {
            CLOSED => Admission::Allowed,
            OPEN => {
                let open_for = self.config.open_for.as_nanos() as u64;
                if self.ns(now).saturating_sub(self.opened_at.load(Relaxed)) < open_for {
                    return Admission::Refused;
                }
                // The cool-down is over: the first core to notice half-opens it (the
                // probe counters were reset when it opened).
                let _ = self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed);
                self.take_probe()
            }
            _ => self.take_probe(),
        }
    }

    /// Whether `admit` would let a request through now, without taking anything (for
    /// choosing between targets; the caller then admits the one it chose).
    pub fn may_admit(&self, now: Instant) -> bool {
        match self.state.load(Acquire) {
            CLOSED => true,
            OPEN => {
                let open_for = self.config.open_for.as_nanos() as u64;
                self.ns(now).saturating_sub(self.opened_at.load(Relaxed)) >= open_for
            }
            _ => self.probes_started.load(Relaxed) < self.config.probes,
        }
    }

    /// Seconds until the breaker may let a probe through (for `Retry-After`).
    pub fn retry_after(&self, now: Instant) -> Duration {
        let open_for = self.config.open_for.as_nanos() as u64;
        let since = self.ns(now).saturating_sub(self.opened_at.load(Relaxed));
        Duration::from_nanos(open_for.saturating_sub(since))
    }

    /// The outcome of a request `admit` let through.
    pub fn record(&self, admission: Admission, success: bool, now: Instant) {
        match admission {
            Admission::Refused => {}
            Admission::Probe => {
                if !success {
                    self.open(HALF_OPEN, now);
                } else if self.probes_passed.fetch_add(1, Relaxed) + 1 >= self.config.probes
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Relaxed, Relaxed)
                        .is_ok()
                {
                    self.reset_counts();
                }
            }
            Admission::Allowed => self.count(success, now),
        }
    }

    /// A request let through whose outcome says nothing about the upstream (the client
    /// went away): a probe slot it held goes back, or half-open could wait forever.
    pub fn release(&self, admission: Admission) {
        if admission == Admission::Probe {
            let _ = self
                .probes_started
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }

    fn take_probe(&self) -> Admission {
        // Counted only when granted, so a released slot can be taken again.
        let probes = self.config.probes;
        match self
            .probes_started
            .fetch_update(Relaxed, Relaxed, |n| (n < probes).then_some(n + 1))
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Refused,
        }
    }

    fn count(&self, success: bool, now: Instant) {
        self.window.add(now, 1, u32::from(!success));
        if success {
            // Read first: a write on every success would bounce the line between cores.
            if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
            return;
        }
        let in_a_row = self.consecutive.fetch_add(1, Relaxed) + 1;
        let by_count = self
            .config
            .consecutive_failures
            .is_some_and(|n| in_a_row >= n);
        if by_count || self.rate_too_high(now) {
            self.open(CLOSED, now);
        }
    }

    fn rate_too_high(&self, now: Instant) -> bool {
        let Some(rate) = self.config.error_rate else {
            return false;
        };
        let (requests, failures) = self.window_counts(now);
        requests >= self.config.min_requests.max(1) as u64
            && failures as f64 >= rate * requests as f64
    }

    /// Requests and failures in the window ending at `now`.
    pub fn window_counts(&self, now: Instant) -> (u64, u64) {
        self.window.sum(now)
    }

    /// Opens from `from` (closed or half-open); only one core wins the swap. The time and
    /// the fresh probe counters are written first and published by the swap (Release),
    /// so no core can see the breaker open with an old time and skip the cool-down.
    fn open(&self, from: u8, now: Instant) {
        if self.state.load(Acquire) != from {
            return;
        }
        self.opened_at.store(self.ns(now), Relaxed);
        self.probes_started.store(0, Relaxed);
        self.probes_passed.store(0, Relaxed);
        if self
            .state
            .compare_exchange(from, OPEN, Release, Relaxed)
            .is_ok()
        {
            self.trips.fetch_add(1, Release);
        }
    }

    fn reset_counts(&self) {
        self.consecutive.store(0, Relaxed);
        self.window.clear();
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: Some(5),
            error_rate: Some(0.5),
            window: Duration::from_secs(10),
            min_requests: 20,
            open_for: Duration::from_secs(5),
            probes: 2,
        }
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn run(b: &Breaker, now: Instant, success: bool) -> Admission {
        let a = b.admit(now);
        b.record(a, success, now);
        a
    }

    #[test]
    fn trips_on_failures_in_a_row_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..4 {
            run(&b, t0, false);
        }
        run(&b, t0, true);
        for _ in 0..4 {
            run(&b, t0, false);
        }
        assert_eq!(b.state(), State::Closed, "never five in a row");
        run(&b, t0, false);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(at(t0, 4_999)), Admission::Refused);
        assert_eq!(b.trips(), 1);
        assert_eq!(b.retry_after(at(t0, 1_000)), Duration::from_secs(4));
    }

    #[test]
    fn trips_on_the_error_rate_only_with_enough_requests() {
        let t0 = Instant::now();
        let cfg = BreakerConfig {
            consecutive_failures: None,
            ..config()
        };
        let b = Breaker::new(cfg, t0);
        // Alternating: a 50% error rate, but only 19 requests so far.
        for i in 0..19 {
            run(&b, at(t0, i * 10), i % 2 == 1);
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.window_counts(at(t0, 190)), (19, 10));
        run(&b, at(t0, 200), true);
        assert_eq!(b.state(), State::Closed, "a success never trips it");
        run(&b, at(t0, 210), false);
        assert_eq!(b.state(), State::Open, "21 requests, 11 failures");
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t0 = Instant::now();
        let cfg = BreakerConfig {
            consecutive_failures: None,
            ..config()
        };
        let b = Breaker::new(cfg, t0);
        for _ in 0..15 {
            run(&b, t0, false);
        }
        for i in 0..15 {
            run(&b, at(t0, 100 + i), true);
        }
        // 11 s later the failures are gone; the window holds only what came since.
        for i in 0..19 {
            run(&b, at(t0, 11_000 + i), false);
        }
        assert_eq!(b.window_counts(at(t0, 11_100)), (19, 19));
        assert_eq!(b.state(), State::Closed, "19 < min_requests");
        run(&b, at(t0, 11_200), false);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn half_open_lets_probes_through_and_closes_on_their_success() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..5 {
            run(&b, t0, false);
        }
        let later = at(t0, 5_000);
        let first = b.admit(later);
        let second = b.admit(later);
        assert_eq!((first, second), (Admission::Probe, Admission::Probe));
        assert_eq!(b.admit(later), Admission::Refused, "only two probes");
        assert_eq!(b.state(), State::HalfOpen);
        b.record(first, true, later);
        assert_eq!(b.state(), State::HalfOpen);
        b.record(second, true, later);
        assert_eq!(b.state(), State::Closed);
        // Counting starts afresh: four failures do not trip it.
        for _ in 0..4 {
            run(&b, later, false);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_another_cool_down() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..5 {
            run(&b, t0, false);
        }
        let probe = b.admit(at(t0, 6_000));
        assert_eq!(probe, Admission::Probe);
        b.record(probe, false, at(t0, 6_000));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(at(t0, 10_999)), Admission::Refused);
        assert_eq!(b.admit(at(t0, 11_000)), Admission::Probe);
        assert_eq!(b.trips(), 2);
    }

    #[test]
    fn a_released_probe_slot_can_be_taken_again() {
        let t0 = Instant::now();
        let b = Breaker::new(config(), t0);
        for _ in 0..5 {
            run(&b, t0, false);
        }
        let later = at(t0, 5_000);
        let (p1, p2) = (b.admit(later), b.admit(later));
        for _ in 0..10 {
            assert_eq!(b.admit(later), Admission::Refused);
        }
        // The first probe's client went away: its slot comes back despite the refusals.
        b.release(p1);
        let p3 = b.admit(later);
        assert_eq!(p3, Admission::Probe);
        b.record(p2, true, later);
        b.record(p3, true, later);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn every_thread_sees_it_trip() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(Breaker::new(config(), t0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        run(&b, t0, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.trips(), 1, "one core wins the trip");
    }
}
