//! Isolation groups (bulkheads): a cap on the requests of a group of routes in flight at
//! once, across every worker, so a slow upstream fills its own group and nothing else.
//!
//! The count is one atomic shared by all cores (a request takes a permit with a
//! `fetch_add` and gives it back on drop), so the cap holds exactly whatever core the
//! requests land on: no per-core shares to add up. A full group can hold a short queue:
//! up to `queue` requests wait, polling for a permit every millisecond, for at most
//! `queue_timeout`; the rest are refused at once (`503 overloaded`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

pub use crate::config::model_resilience::BulkheadConfig;

#[derive(Debug)]
pub struct Bulkhead {
    pub config: BulkheadConfig,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    refused: AtomicU64,
}

/// A request's place in the group, given back when dropped.
#[derive(Debug)]
pub struct Permit<'a>(&'a Bulkhead);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A request's place in the queue, given back when dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a Bulkhead);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

/// What `try_enter` decided.
#[derive(Debug)]
pub enum Entry<'a> {
    Admitted(Permit<'a>),
    /// Full, with room in the queue: poll `try_take` until the queue timeout.
    Queued(Waiting<'a>),
    Refused,
}

impl Bulkhead {
    pub fn new(config: BulkheadConfig) -> Bulkhead {
        Bulkhead {
            config,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn try_enter(&self) -> Entry<'_> {
        if let Some(p) = self.try_take() {
            return Entry::Admitted(p);
        }
        if self.waiting.fetch_add(1, Relaxed) < self.config.queue {
            return Entry::Queued(Waiting(self));
        }
        self.waiting.fetch_sub(1, Relaxed);
        self.refuse();
        Entry::Refused
    }

    /// A permit if the group has room now.
    pub fn try_take(&self) -> Option<Permit<'_>> {
        if self.in_flight.fetch_add(1, Relaxed) < self.config.max_in_flight {
            Some(Permit(self))
        } else {
            self.in_flight.fetch_sub(1, Relaxed);
            None
        }
    }

    /// Counts a request sent away (queue full, or its wait timed out).
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(max: usize, queue: usize) -> Bulkhead {
        Bulkhead::new(BulkheadConfig {
            name: "g".into(),
            max_in_flight: max,
            queue,
            queue_timeout: Duration::from_millis(10),
        })
    }

    #[test]
    fn the_cap_holds_and_permits_come_back() {
        let g = group(2, 1);
        let a = g.try_enter();
        let b = g.try_enter();
        assert!(matches!(a, Entry::Admitted(_)) && matches!(b, Entry::Admitted(_)));
        let queued = g.try_enter();
        assert!(matches!(queued, Entry::Queued(_)));
        assert!(
            matches!(g.try_enter(), Entry::Refused),
            "the queue holds one"
        );
        assert_eq!(g.refused(), 1);
        assert!(g.try_take().is_none());
        drop(a);
        let c = g.try_take();
        assert!(c.is_some(), "a permit came back");
        drop(queued);
        assert!(
            matches!(g.try_enter(), Entry::Queued(_)),
            "so did the queue place"
        );
        assert_eq!(g.in_flight(), 2);
        drop((b, c));
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn the_cap_holds_across_threads() {
        let g = std::sync::Arc::new(group(8, 0));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (g, peak) = (g.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(p) = g.try_take() {
                            peak.fetch_max(g.in_flight(), Relaxed);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Relaxed) <= 8);
        assert_eq!(g.in_flight(), 0);
    }
}
