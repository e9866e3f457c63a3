//! The per-worker app cache for the Redis-backed registry. Workers never wait on Redis:
//! a lookup answers from an LRU of app records (fresh, or stale for a bounded grace time
//! while a refresh is under way), from the Bloom filter (a key it does not contain is
//! unknown, at once), or asks the control side to fetch the record and lets the request
//! wait for it asynchronously. Single-threaded (`RefCell`s): each worker has its own.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::bloom::Bloom;
use crate::config::apps::App;
use crate::signal::LocalSignal;

/// A worker asks the control side for one app's record.
#[derive(Debug)]
pub struct FetchRequest {
    pub worker: usize,
    pub key: String,
}

/// The control side's answer for one key.
pub enum Fetched {
    App(Arc<App>),
    /// The store has no such app.
    Missing,
    /// The store has a record that does not validate: the app is refused (an operator
    /// fixing or revoking an app must never leave the old record in force).
    Invalid,
    /// The store could not be read.
    Unavailable,
}

/// What the control side sends a worker.
pub enum AppUpdate {
    Fetched {
        key: String,
        result: Fetched,
    },
    /// A new filter of every key in the store.
    Keys(Arc<Bloom>),
}

pub enum Lookup {
    Found(Arc<App>),
    /// Not in the store (or refused): answer 401 at once.
    Unknown,
    /// Being fetched: wait on `WorkerApps::changed` and look again.
    Fetching,
    /// The store cannot be read and nothing usable is cached.
    Unavailable,
}

struct Entry {
    /// `None`: no such app, or an invalid record (refused either way).
    app: Option<Arc<App>>,
    fetched: Instant,
    /// After a failed refresh: when to ask again.
    retry_at: Option<Instant>,
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
/// Requests queued for the control side, all workers together; beyond it lookups answer
/// `Unavailable` rather than queueing without bound behind a stalled store.
pub const MAX_QUEUED_FETCHES: usize = 4096;

pub struct WorkerApps {
    worker: usize,
    lru: RefCell<lru::LruCache<String, Entry>>,
    keys: RefCell<Option<Arc<Bloom>>>,
    in_flight: RefCell<HashSet<String>>,
    failed: RefCell<lru::LruCache<String, Instant>>,
    ttl: Duration,
    requests: Sender<FetchRequest>,
    /// The control side's view of the store; while it is down, uncached lookups answer
    /// at once instead of queueing behind timeouts.
    store_up: Arc<AtomicBool>,
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
        store_up: Arc<AtomicBool>,
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
            store_up,
            changed: RefCell::new(Rc::new(LocalSignal::default())),
            dirty: Cell::new(false),
            stats,
        }
    }

    /// `first_try`: false when a request looks again after waiting, so counters count
    /// each request once.
    pub fn lookup(&self, key: &str, now: Instant, first_try: bool) -> Lookup {
        let count = |c: &AtomicU64| {
            if first_try {
                c.fetch_add(1, Ordering::Relaxed);
            }
        };
        let store_up = self.store_up.load(Ordering::Relaxed);
        {
            let mut lru = self.lru.borrow_mut();
            if let Some(entry) = lru.get_mut(key) {
                let age = now.saturating_duration_since(entry.fetched);
                let answer = entry.app.clone().map_or(Lookup::Unknown, Lookup::Found);
                if age < self.ttl {
                    count(&self.stats.hits);
                    return answer;
                }
                // Stale: served while a refresh is under way, but only for one more TTL,
                // or as long as the store is down; a disabled or deleted app must stop
                // working soon after its record changed.
                if age < self.ttl * 2 || !store_up {
                    if entry.retry_at.is_none_or(|t| now >= t) {
                        self.request(key);
                    }
                    count(&self.stats.stale_hits);
                    return answer;
                }
                // Too old to trust without asking: the request waits for the refresh.
                // The record stays, so if the refresh finds the store down, the request
                // is served from it after all (stale while down).
                drop(lru);
                if self.request(key) {
                    count(&self.stats.misses);
                    return Lookup::Fetching;
                }
                count(&self.stats.unavailable);
                return Lookup::Unavailable;
            }
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
        let recently_failed = self
            .failed
            .borrow_mut()
            .get(key)
            .is_some_and(|&at| now.saturating_duration_since(at) < RETRY_AFTER);
        if recently_failed || !store_up || !self.request(key) {
            count(&self.stats.unavailable);
            return Lookup::Unavailable;
        }
        count(&self.stats.misses);
        Lookup::Fetching
    }

    /// Asks the control side for `key` unless already asked; false if it cannot be asked.
    fn request(&self, key: &str) -> bool {
        if self.in_flight.borrow().contains(key) {
            return true;
        }
        let req = FetchRequest {
            worker: self.worker,
            key: key.to_string(),
        };
        if self.requests.try_send(req).is_err() {
            return false;
        }
        self.in_flight.borrow_mut().insert(key.to_string());
        true
    }

    /// Applies an update from the control side; waiters are woken by `notify`.
    pub fn apply(&self, update: AppUpdate, now: Instant) {
        match update {
            AppUpdate::Keys(bloom) => {
                self.drop_contradicted(&bloom);
                *self.keys.borrow_mut() = Some(bloom);
            }
            AppUpdate::Fetched { key, result } => {
                self.in_flight.borrow_mut().remove(&key);
                let app = match result {
                    Fetched::App(app) => Some(app),
                    Fetched::Missing | Fetched::Invalid => None,
                    Fetched::Unavailable => {
                        let mut lru = self.lru.borrow_mut();
                        match lru.get_mut(&key) {
                            // A stale record keeps serving (within its grace) and is not
                            // asked for again before RETRY_AFTER.
                            Some(entry) => entry.retry_at = Some(now + RETRY_AFTER),
                            None => {
                                self.failed.borrow_mut().put(key, now);
                            }
                        }
                        self.dirty.set(true);
                        return;
                    }
                };
                self.failed.borrow_mut().pop(&key);
                self.lru.borrow_mut().put(
                    key,
                    Entry {
                        app,
                        fetched: now,
                        retry_at: None,
                    },
                );
            }
        }
        self.dirty.set(true);
    }

    /// The filter has no false negatives: a cached app whose key it lacks was deleted, and
    /// a "no such app" for a key it has may be a new app. Both are forgotten.
    fn drop_contradicted(&self, bloom: &Bloom) {
        let mut lru = self.lru.borrow_mut();
        // A certificate's entry (`#...`) also goes when its app's key went: the index
        // key may outlive the app it names.
        let app_gone = |e: &Entry| e.app.as_ref().is_some_and(|a| !bloom.contains(&a.key));
        let stale: Vec<String> = lru
            .iter()
            .filter(|(k, e)| {
                e.app.is_some() != bloom.contains(k) || (k.starts_with('#') && app_gone(e))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            lru.pop(&k);
        }
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
        let (c, rx, _up) = cache_with_store_flag(ttl_ms);
        (c, rx)
    }

    /// Also returns the flag the directory flips when the store goes down.
    fn cache_with_store_flag(
        ttl_ms: u64,
    ) -> (
        WorkerApps,
        crossbeam_channel::Receiver<FetchRequest>,
        Arc<AtomicBool>,
    ) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let up = Arc::new(AtomicBool::new(true));
        let ttl = Duration::from_millis(ttl_ms);
        let c = WorkerApps::new(0, 16, ttl, tx, up.clone(), Arc::default());
        (c, rx, up)
    }

    #[test]
    fn miss_fetch_hit_stale_refresh() {
        let (c, rx) = cache(100);
        let t0 = Instant::now();
        assert!(matches!(c.lookup("a", t0, true), Lookup::Fetching));
        assert!(matches!(c.lookup("a", t0, true), Lookup::Fetching));
        assert_eq!(
            rx.try_iter().count(),
            1,
            "one fetch however many requests wait"
        );
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::App(app("a")),
            },
            t0,
        );
        assert!(matches!(c.lookup("a", t0, true), Lookup::Found(_)));
        assert_eq!(rx.try_iter().count(), 0, "fresh: no store traffic");
        let later = t0 + Duration::from_millis(150);
        assert!(
            matches!(c.lookup("a", later, true), Lookup::Found(_)),
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
                result: Fetched::Missing,
            },
            t0,
        );
        assert!(matches!(c.lookup("gone", t0, true), Lookup::Unknown));
        c.apply(
            // A false-positive rate this low keeps the filter's verdicts from making the
            // test flaky (its hash seed is random).
            AppUpdate::Keys(Arc::new(Bloom::from_keys(["known"].into_iter(), 1e-12))),
            t0,
        );
        assert!(
            matches!(c.lookup("random", t0, true), Lookup::Unknown),
            "the filter answers at once"
        );
        assert!(matches!(c.lookup("known", t0, true), Lookup::Fetching));
        c.apply(
            AppUpdate::Fetched {
                key: "known".into(),
                result: Fetched::Unavailable,
            },
            t0,
        );
        assert!(matches!(c.lookup("known", t0, true), Lookup::Unavailable));
        assert!(
            matches!(c.lookup("known", t0 + RETRY_AFTER, true), Lookup::Fetching),
            "tried again later"
        );
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn invalid_records_are_refused_and_the_filter_corrects_the_cache() {
        let (c, _rx) = cache(60_000);
        let t0 = Instant::now();
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::App(app("a")),
            },
            t0,
        );
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::Invalid,
            },
            t0,
        );
        assert!(
            matches!(c.lookup("a", t0, true), Lookup::Unknown),
            "the old record is not kept"
        );
        c.apply(
            AppUpdate::Fetched {
                key: "b".into(),
                result: Fetched::App(app("b")),
            },
            t0,
        );
        c.apply(
            AppUpdate::Fetched {
                key: "new".into(),
                result: Fetched::Missing,
            },
            t0,
        );
        c.apply(
            // A false-positive rate this low keeps the filter's verdicts from making the
            // test flaky (its hash seed is random).
            AppUpdate::Keys(Arc::new(Bloom::from_keys(["new"].into_iter(), 1e-12))),
            t0,
        );
        assert!(
            matches!(c.lookup("b", t0, true), Lookup::Unknown),
            "deleted: gone from the filter"
        );
        assert!(
            matches!(c.lookup("new", t0, true), Lookup::Fetching),
            "created: fetched again"
        );
    }

    #[test]
    fn store_down_answers_at_once_and_stale_records_keep_serving() {
        let (c, rx, up) = cache_with_store_flag(100);
        let t0 = Instant::now();
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::App(app("a")),
            },
            t0,
        );
        up.store(false, Ordering::Relaxed);
        let much_later = t0 + Duration::from_secs(3600);
        assert!(
            matches!(c.lookup("a", much_later, true), Lookup::Found(_)),
            "kept while the store is down"
        );
        assert!(
            matches!(c.lookup("b", much_later, true), Lookup::Unavailable),
            "no queueing behind a dead store"
        );
        assert_eq!(rx.try_iter().filter(|r| r.key == "b").count(), 0);
    }

    /// A record too old to trust is kept while its refresh is under way: when the refresh
    /// finds the store down, it serves after all.
    #[test]
    fn too_old_record_serves_when_its_refresh_finds_the_store_down() {
        let (c, _rx, up) = cache_with_store_flag(100);
        let t0 = Instant::now();
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::App(app("a")),
            },
            t0,
        );
        let later = t0 + Duration::from_millis(500);
        assert!(matches!(c.lookup("a", later, true), Lookup::Fetching));
        // What the directory does on a failed fetch: mark the store down, then answer.
        up.store(false, Ordering::Relaxed);
        c.apply(
            AppUpdate::Fetched {
                key: "a".into(),
                result: Fetched::Unavailable,
            },
            later,
        );
        assert!(matches!(c.lookup("a", later, false), Lookup::Found(_)));
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
                result: Fetched::App(app("a")),
            },
            Instant::now(),
        );
        c.notify();
        assert!(signal.is_fired());
        assert!(!c.changed().is_fired(), "a fresh signal for the next batch");
    }
}
