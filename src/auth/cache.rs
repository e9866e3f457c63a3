//! The per-worker app cache for the Redis-backed registry. Workers never wait on Redis:
//! a lookup answers from an LRU of app records (fresh, or stale while a refresh is under
//! way), from the Bloom filter (a key it does not contain is unknown, at once), or asks the
//! control side to fetch the record and lets the request wait for it asynchronously.
//! Single-threaded (`RefCell`s): each worker has its own.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::bloom::Bloom;
use super::registry::App;
use crate::proxy::signal::LocalSignal;

/// A worker asks the control side for one app's record.
#[derive(Debug)]
pub struct FetchRequest {
    pub worker: usize,
    pub key: String,
}

/// What the control side sends a worker.
pub enum AppUpdate {
    /// The record of `key` (`Ok(None)`: no such app), or why it could not be read.
    Fetched {
        key: String,
        result: Result<Option<Arc<App>>, String>,
    },
    /// A new filter of every key in the store.
    Keys(Arc<Bloom>),
}

pub enum Lookup {
    Found(Arc<App>),
    /// Not in the store: answer 401 at once.
    Unknown,
    /// Being fetched: wait on `WorkerApps::changed` and look again.
    Fetching,
    /// The store could not be read and nothing is cached.
    Unavailable,
}

struct Entry {
    /// `None`: the store said there is no such app (a negative entry).
    app: Option<Arc<App>>,
    fetched: Instant,
}

/// Counters one worker bumps and the admin endpoint reads (each worker has its own set:
/// no cache line is written by two cores).
#[derive(Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub stale_hits: AtomicU64,
    pub misses: AtomicU64,
    pub filtered: AtomicU64,
    pub unavailable: AtomicU64,
}

/// How long a failed fetch is remembered before the next request tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct WorkerApps {
    worker: usize,
    lru: RefCell<lru::LruCache<String, Entry>>,
    keys: RefCell<Option<Arc<Bloom>>>,
    in_flight: RefCell<HashSet<String>>,
    failed: RefCell<lru::LruCache<String, Instant>>,
    ttl: Duration,
    requests: Sender<FetchRequest>,
    changed: RefCell<Rc<LocalSignal>>,
    dirty: Cell<bool>,
    pub stats: Arc<CacheStats>,
}

impl WorkerApps {
    pub fn new(
        worker: usize,
        capacity: usize,
        ttl: Duration,
        requests: Sender<FetchRequest>,
        stats: Arc<CacheStats>,
    ) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        WorkerApps {
            worker,
            lru: RefCell::new(lru::LruCache::new(cap)),
            keys: RefCell::new(None),
            in_flight: RefCell::new(HashSet::new()),
            failed: RefCell::new(lru::LruCache::new(cap)),
            ttl,
            requests,
            changed: RefCell::new(Rc::new(LocalSignal::default())),
            dirty: Cell::new(false),
            stats,
        }
    }

    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        if let Some(entry) = self.lru.borrow_mut().get(key) {
            if now.saturating_duration_since(entry.fetched) >= self.ttl {
                // Stale: keep serving it while the control side refreshes it.
                self.request(key);
                count(&self.stats.stale_hits);
            } else {
                count(&self.stats.hits);
            }
            return entry.app.clone().map_or(Lookup::Unknown, Lookup::Found);
        }
        if self
            .keys
            .borrow()
            .as_ref()
            .is_some_and(|b| !b.contains(key))
        {
            count(&self.stats.filtered);
            return Lookup::Unknown;
        }
        if let Some(&at) = self.failed.borrow_mut().get(key) {
            if now.saturating_duration_since(at) < RETRY_AFTER {
                count(&self.stats.unavailable);
                return Lookup::Unavailable;
            }
        }
        count(&self.stats.misses);
        self.request(key);
        Lookup::Fetching
    }

    fn request(&self, key: &str) {
        if self.in_flight.borrow_mut().insert(key.to_string()) {
            let sent = self.requests.send(FetchRequest {
                worker: self.worker,
                key: key.to_string(),
            });
            if sent.is_err() {
                self.in_flight.borrow_mut().remove(key);
            }
        }
    }

    /// Applies an update from the control side; waiters are woken by `notify`.
    pub fn apply(&self, update: AppUpdate, now: Instant) {
        match update {
            AppUpdate::Keys(bloom) => *self.keys.borrow_mut() = Some(bloom),
            AppUpdate::Fetched { key, result } => {
                self.in_flight.borrow_mut().remove(&key);
                match result {
                    Ok(app) => {
                        self.failed.borrow_mut().pop(&key);
                        self.lru.borrow_mut().put(key, Entry { app, fetched: now });
                    }
                    // A stale record keeps serving, and is not asked for again until
                    // RETRY_AFTER has passed (a store that is down is not hammered by
                    // every request); without one, requests get 503 for a moment instead
                    // of waiting on it.
                    Err(_) if self.lru.borrow().contains(&key) => {
                        if let Some(entry) = self.lru.borrow_mut().get_mut(&key) {
                            let backoff = self.ttl.saturating_sub(RETRY_AFTER);
                            entry.fetched = now.checked_sub(backoff).unwrap_or(entry.fetched);
                        }
                    }
                    Err(_) => {
                        self.failed.borrow_mut().put(key, now);
                    }
                }
            }
        }
        self.dirty.set(true);
    }

    /// Wakes every request waiting for a record, if anything changed since the last call.
    pub fn notify(&self) {
        if self.dirty.replace(false) {
            let old = std::mem::replace(
                &mut *self.changed.borrow_mut(),
                Rc::new(LocalSignal::default()),
            );
            old.fire();
        }
    }

    /// A signal that fires at the next batch of updates.
    pub fn changed(&self) -> Rc<LocalSignal> {
        self.changed.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(key: &str) -> Arc<App> {
        Arc::new(
            App::from_parts(
                key.into(),
                vec!["secret-0123456789".into()],
                None,
                vec![],
                &[],
                true,
            )
            .unwrap(),
        )
    }

    fn cache(ttl_ms: u64) -> (WorkerApps, crossbeam_channel::Receiver<FetchRequest>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            WorkerApps::new(0, 16, Duration::from_millis(ttl_ms), tx, Arc::default()),
            rx,
        )
    }

    #[test]
    fn miss_fetch_hit_stale_refresh() {
        let (c, rx) = cache(100);
        let t0 = Instant::now();
        assert!(matches!(c.lookup("a", t0), Lookup::Fetching));
        assert!(matches!(c.lookup("a", t0), Lookup::Fetching));
        assert_eq!(
            rx.try_iter().count(),
            1,
            "one fetch however many requests wait"
        );
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Ok(Some(app("a"))),
            },
            t0,
        );
        assert!(matches!(c.lookup("a", t0), Lookup::Found(_)));
        assert_eq!(rx.try_iter().count(), 0, "fresh: no store traffic");
        let later = t0 + Duration::from_millis(150);
        assert!(
            matches!(c.lookup("a", later), Lookup::Found(_)),
            "stale keeps serving"
        );
        assert_eq!(
            rx.try_iter().count(),
            1,
            "and is refreshed in the background"
        );
    }

    #[test]
    fn negative_entries_filter_and_failures() {
        let (c, rx) = cache(100);
        let t0 = Instant::now();
        c.apply(
            AppUpdate::Fetched {
                key: "gone".into(),
                result: Ok(None),
            },
            t0,
        );
        assert!(matches!(c.lookup("gone", t0), Lookup::Unknown));
        c.apply(
            AppUpdate::Keys(Arc::new(Bloom::from_keys(["known"].into_iter(), 0.01))),
            t0,
        );
        assert!(
            matches!(c.lookup("random", t0), Lookup::Unknown),
            "the filter answers at once"
        );
        assert!(matches!(c.lookup("known", t0), Lookup::Fetching));
        c.apply(
            AppUpdate::Fetched {
                key: "known".into(),
                result: Err("down".into()),
            },
            t0,
        );
        assert!(matches!(c.lookup("known", t0), Lookup::Unavailable));
        assert!(
            matches!(c.lookup("known", t0 + RETRY_AFTER), Lookup::Fetching),
            "tried again later"
        );
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn waiters_are_woken_once_per_batch() {
        let (c, _rx) = cache(100);
        let signal = c.changed();
        c.notify();
        assert!(!signal.is_fired(), "nothing changed");
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Ok(Some(app("a"))),
            },
            Instant::now(),
        );
        c.notify();
        assert!(signal.is_fired());
        assert!(!c.changed().is_fired(), "a fresh signal for the next batch");
    }
}
