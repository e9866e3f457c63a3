//! The retry budget of a route without a `retries` section, kept by each worker for
//! itself: plain counters, no atomics, because every request counts in it and a counter
//! shared across cores on every request would cost more than the retries it guards.
//! Each worker allows retries of at most `RATIO` of its own requests over the current
//! and previous 10 s window (at least `MIN_RETRIES` per window), so the whole gateway
//! does too.

use std::cell::Cell;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const RATIO: f64 = 0.2;
const MIN_RETRIES: u32 = 3;

#[derive(Debug, Default)]
pub struct LocalRetryBudget {
    started: Cell<Option<Instant>>,
    requests: Cell<u32>,
    retries: Cell<u32>,
    /// The previous window's counts (zero when it was not the one just before).
    earlier_requests: Cell<u32>,
    earlier_retries: Cell<u32>,
}

impl LocalRetryBudget {
    /// Counts a request (its first attempt).
    pub fn request(&self, now: Instant) {
        self.roll(now);
        self.requests.set(self.requests.get().saturating_add(1));
    }

    /// Takes one retry, if the budget has one left.
    pub fn try_retry(&self, now: Instant) -> bool {
        self.roll(now);
        let requests = self.requests.get() + self.earlier_requests.get();
        let allowed = (RATIO * f64::from(requests)).max(f64::from(MIN_RETRIES));
        let retries = self.retries.get() + self.earlier_retries.get();
        if f64::from(retries) < allowed {
            self.retries.set(self.retries.get() + 1);
            true
        } else {
            false
        }
    }

    fn roll(&self, now: Instant) {
        let started = *self.started.get().get_or_insert(now);
        let age = now.saturating_duration_since(started);
        if age < WINDOW {
            self.started.set(Some(started));
            return;
        }
        let (requests, retries) = if age < 2 * WINDOW {
            (self.requests.get(), self.retries.get())
        } else {
            (0, 0)
        };
        self.earlier_requests.set(requests);
        self.earlier_retries.set(retries);
        self.requests.set(0);
        self.retries.set(0);
        self.started.set(Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_the_workers_requests() {
        let t0 = Instant::now();
        let b = LocalRetryBudget::default();
        // A quiet route still gets its minimum.
        assert!(b.try_retry(t0) && b.try_retry(t0) && b.try_retry(t0));
        assert!(!b.try_retry(t0));
        let mut retried = 3;
        for _ in 0..1000 {
            b.request(t0);
            if b.try_retry(t0) {
                retried += 1;
            }
        }
        assert_eq!(retried, 200, "20% of 1000 requests");
        // The next window still remembers this one; two windows on, all is forgotten.
        assert!(!b.try_retry(t0 + WINDOW));
        let later = t0 + 3 * WINDOW;
        assert!(b.try_retry(later) && b.try_retry(later) && b.try_retry(later));
        assert!(!b.try_retry(later));
    }
}
