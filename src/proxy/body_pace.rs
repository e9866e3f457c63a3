//! The pace a request body must keep (`server.min_body_rate`): each silence is bounded by
//! `body_timeout`, and the whole body by `body_timeout` plus one second for every
//! `min_body_rate` bytes received (as Apache's `mod_reqtimeout` does). A client that
//! trickles a byte just inside every `body_timeout` would otherwise hold a connection
//! and its buffers for as long as it likes. Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// A request body's deadline, from when its reading began.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    started: Instant,
    grace: Duration,
    /// Bytes a second; `None`: no minimum (only each silence is bounded).
    rate: Option<u64>,
}

impl BodyPace {
    pub fn new(started: Instant, grace: Duration, rate: Option<u64>) -> BodyPace {
        BodyPace {
            started,
            grace,
            rate,
        }
    }

    /// How long the next read may wait at `now`, `received` bytes in: the silence bound,
    /// or less as the deadline nears. `None`: the deadline has passed (too slow).
    pub fn next_wait(&self, now: Instant, received: u64, silence: Duration) -> Option<Duration> {
        let Some(rate) = self.rate else {
            return Some(silence);
        };
        let earned = Duration::from_secs_f64(received as f64 / rate as f64);
        let deadline = self.started + self.grace + earned;
        let left = deadline.checked_duration_since(now)?;
        (!left.is_zero()).then(|| silence.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_body_earns_a_second_for_every_rate_bytes() {
        let t = Instant::now();
        let pace = BodyPace::new(t, S(30), Some(1024));
        assert_eq!(pace.next_wait(t, 0, S(30)), Some(S(30)));
        assert_eq!(pace.next_wait(t + S(25), 0, S(30)), Some(S(5)));
        assert_eq!(pace.next_wait(t + S(30), 0, S(30)), None);
        // 10 KiB in: 10 s more.
        assert_eq!(pace.next_wait(t + S(35), 10 * 1024, S(30)), Some(S(5)));
        assert_eq!(pace.next_wait(t + S(40), 10 * 1024, S(30)), None);
        // A fast body is bounded by the silence alone.
        assert_eq!(pace.next_wait(t + S(1), 1 << 20, S(30)), Some(S(30)));
    }

    #[test]
    fn without_a_rate_only_silences_are_bounded() {
        let t = Instant::now();
        let pace = BodyPace::new(t, S(30), None);
        assert_eq!(pace.next_wait(t + S(3600), 1, S(30)), Some(S(30)));
    }
}
