//! A sliding window of two counters shared by every worker: ten buckets, each a tenth of
//! the window, tagged with the slice of time they count. Lock-free: a bucket that still
//! holds an older slice is emptied by the first core to reach it (under a race a count or
//! two may be lost as it rolls over, which moves a rate by a hair and never blocks).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

#[derive(Default)]
struct Bucket {
    /// Slice number + 1 (0: never used).
    slice: AtomicU64,
    a: AtomicU32,
    b: AtomicU32,
}

pub struct Window {
    epoch: Instant,
    /// Width of one bucket in ns.
    width: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub fn new(window: Duration, epoch: Instant) -> Window {
        Window {
            epoch,
            width: (window.as_nanos() as u64 / BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    /// Adds to the counters of the slice `now` falls in.
    pub fn add(&self, now: Instant, a: u32, b: u32) {
        let slice = self.slice(now);
        let tag = slice + 1;
        let bucket = &self.buckets[(slice % BUCKETS as u64) as usize];
        let old = bucket.slice.load(Relaxed);
        if old != tag
            && bucket
                .slice
                .compare_exchange(old, tag, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.a.store(0, Relaxed);
            bucket.b.store(0, Relaxed);
        }
        bucket.a.fetch_add(a, Relaxed);
        bucket.b.fetch_add(b, Relaxed);
    }

    /// Takes back one count of the second counter added at `now` (a claim that turned out
    /// to be over a limit). Never below zero.
    pub fn take_back_b(&self, now: Instant) {
        let slice = self.slice(now);
        let bucket = &self.buckets[(slice % BUCKETS as u64) as usize];
        if bucket.slice.load(Relaxed) == slice + 1 {
            let _ = bucket
                .b
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Both counters summed over the window ending at `now`.
    pub fn sum(&self, now: Instant) -> (u64, u64) {
        let current = self.slice(now);
        let (mut a, mut b) = (0u64, 0u64);
        for bucket in &self.buckets {
            let tag = bucket.slice.load(Relaxed);
            // Counted when its slice is one of the last ten (a tag from the future, a
            // race with a core whose clock read was later, counts too).
            if tag != 0 && (current + 1).saturating_sub(tag) < BUCKETS as u64 {
                a += bucket.a.load(Relaxed) as u64;
                b += bucket.b.load(Relaxed) as u64;
            }
        }
        (a, b)
    }

    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.slice.store(0, Relaxed);
            bucket.a.store(0, Relaxed);
            bucket.b.store(0, Relaxed);
        }
    }

    fn slice(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64 / self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_after_one_window() {
        let t0 = Instant::now();
        let w = Window::new(Duration::from_secs(10), t0);
        w.add(t0, 3, 1);
        w.add(t0 + Duration::from_secs(5), 2, 2);
        assert_eq!(w.sum(t0 + Duration::from_secs(9)), (5, 3));
        // The first slice (0-1 s) is out of the window from 10 s on.
        assert_eq!(w.sum(t0 + Duration::from_secs(10)), (2, 2));
        // Its bucket is reused for a new slice and starts from zero.
        w.add(t0 + Duration::from_secs(10), 1, 0);
        assert_eq!(w.sum(t0 + Duration::from_secs(10)), (3, 2));
        assert_eq!(w.sum(t0 + Duration::from_secs(30)), (0, 0));
        w.clear();
        assert_eq!(w.sum(t0 + Duration::from_secs(10)), (0, 0));
    }
}
