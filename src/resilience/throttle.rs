//! Adaptive throttling (Google SRE book, "Handling Overload": client-side throttling),
//! the alternative breaker mode. Over a sliding window the gateway counts the requests it
//! was asked to send and those the upstream accepted, and refuses a request locally with
//! probability `max(0, (requests - k x accepts) / (requests + 1))`. A healthy upstream
//! (accepts close to requests) is never throttled; one that fails everything sheds load
//! in proportion, while a trickle still gets through to notice recovery. `k` (default 2)
//! is how much more than it accepts the upstream is sent.
//!
//! Shared by every worker through lock-free counters (see `window`).

use std::time::{Duration, Instant};

use super::window::Window;

pub struct Throttle {
    k: f64,
    /// Requests asked for (refused here included), and requests the upstream accepted.
    window: Window,
}

impl Throttle {
    pub fn new(k: f64, window: Duration, epoch: Instant) -> Throttle {
        Throttle {
            k,
            window: Window::new(window, epoch),
        }
    }

    /// The probability of refusing a request now.
    pub fn reject_probability(&self, now: Instant) -> f64 {
        let (requests, accepts) = self.window.sum(now);
        ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
    }

    /// Whether to send a request, given a uniform random number in [0, 1). A refused
    /// request counts as asked for, so throttling itself keeps the probability up while
    /// the upstream keeps failing.
    pub fn admit(&self, now: Instant, random: f64) -> bool {
        let refuse = random < self.reject_probability(now);
        if refuse {
            self.window.add(now, 1, 0);
        }
        !refuse
    }

    /// The outcome of a request `admit` let through.
    pub fn record(&self, accepted: bool, now: Instant) {
        self.window.add(now, 1, u32::from(accepted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_upstream_is_never_throttled() {
        let t0 = Instant::now();
        let t = Throttle::new(2.0, Duration::from_secs(10), t0);
        for _ in 0..1000 {
            assert!(t.admit(t0, 0.0));
            t.record(true, t0);
        }
        assert_eq!(t.reject_probability(t0), 0.0);
        // Half the requests failing is still within k = 2.
        for i in 0..1000 {
            t.record(i % 2 == 0, t0);
        }
        assert_eq!(t.reject_probability(t0), 0.0);
    }

    #[test]
    fn a_failing_upstream_sheds_load_but_keeps_a_trickle() {
        let t0 = Instant::now();
        let t = Throttle::new(2.0, Duration::from_secs(10), t0);
        for _ in 0..100 {
            t.record(true, t0);
        }
        // Then everything fails: 100 accepts, n requests: p = (n - 200) / (n + 1).
        for _ in 0..300 {
            t.record(false, t0);
        }
        let p = t.reject_probability(t0);
        assert!((p - 200.0 / 401.0).abs() < 1e-9, "{p}");
        // Sending only what random draws allow: the rest counts as asked for.
        let (mut sent, mut refused) = (0, 0);
        for i in 0..10_000 {
            if t.admit(t0, (i % 100) as f64 / 100.0) {
                sent += 1;
                t.record(false, t0);
            } else {
                refused += 1;
            }
        }
        assert!(refused > 9 * sent, "sent {sent}, refused {refused}");
        assert!(sent > 0, "a trickle still probes the upstream");
        // Ten seconds on, the window forgot it all.
        assert_eq!(t.reject_probability(t0 + Duration::from_secs(11)), 0.0);
    }
}
