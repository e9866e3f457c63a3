//! The retry budget: retries may be at most `ratio` of the requests over a sliding
//! window (default 20%), so that when an upstream fails everything, retries add at most
//! that much load instead of doubling it. A minimum of `min_retries` per window lets a
//! quiet route still retry a rare failure. Shared by every worker (see `window`).

use std::time::{Duration, Instant};

use super::window::Window;

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RetryBudget({})", self.ratio)
    }
}

pub struct RetryBudget {
    ratio: f64,
    min_retries: u32,
    /// Requests, and retries.
    window: Window,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_retries: u32, window: Duration, epoch: Instant) -> RetryBudget {
        RetryBudget {
            ratio,
            min_retries,
            window: Window::new(window, epoch),
        }
    }

    /// Counts a request (its first attempt).
    pub fn request(&self, now: Instant) {
        self.window.add(now, 1, 0);
    }

    /// Takes one retry from the budget, if there is one left. Claimed first and checked
    /// after (then given back if over), so cores racing for the last retry cannot both
    /// get it.
    pub fn try_retry(&self, now: Instant) -> bool {
        self.window.add(now, 0, 1);
        let (requests, retries) = self.window.sum(now);
        let allowed = (self.ratio * requests as f64).max(self.min_retries as f64);
        if retries as f64 <= allowed {
            true
        } else {
            self.window.take_back_b(now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_their_share_of_requests() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.2, 3, Duration::from_secs(10), t0);
        // A quiet route still gets its minimum.
        assert!(b.try_retry(t0) && b.try_retry(t0) && b.try_retry(t0));
        assert!(!b.try_retry(t0));
        // An outage: every request wants a retry; one in five gets it.
        let mut retried = 0;
        for _ in 0..1000 {
            b.request(t0);
            if b.try_retry(t0) {
                retried += 1;
            }
        }
        assert_eq!(retried + 3, 200, "20% of 1000 requests");
        // A window later the budget is back.
        assert!(b.try_retry(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn racing_threads_never_overdraw_it() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(RetryBudget::new(0.2, 3, Duration::from_secs(10), t0));
        let granted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (b, granted) = (b.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if b.try_retry(t0) {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(granted.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
