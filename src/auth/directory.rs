//! The control-side half of the Redis-backed registry: one thread that owns the store
//! connection, answers workers' fetch requests, and rebuilds the Bloom filter of all app
//! keys. Blocking calls to Redis happen here and nowhere else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::bloom::Bloom;
use super::cache::{AppUpdate, FetchRequest, Fetched};
use super::store::{RedisStore, StoreError};

/// How often the key filter is rebuilt: an app added to the store is usable within this.
pub const KEYS_REFRESH: Duration = Duration::from_secs(5);
/// How often a store that is down is tried again.
const PROBE_WHILE_DOWN: Duration = Duration::from_secs(1);
/// False-positive rate of the key filter.
const FILTER_FP_RATE: f64 = 0.001;

/// Store-side counters for the admin endpoint.
#[derive(Default)]
pub struct DirectoryStats {
    pub store_lookups: AtomicU64,
    pub store_errors: AtomicU64,
    pub keys_in_filter: AtomicU64,
    /// Read by every worker's cache (rarely written: only when the store goes or comes).
    pub store_up: Arc<AtomicBool>,
}

pub struct Directory {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Directory {
    /// Starts the thread. `workers[i]` receives worker i's updates.
    pub fn start(
        mut store: RedisStore,
        requests: Receiver<FetchRequest>,
        workers: Vec<Sender<AppUpdate>>,
        stats: Arc<DirectoryStats>,
    ) -> std::io::Result<Directory> {
        // Optimistic until a call fails: requests at start must not be refused.
        stats.store_up.store(true, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-apps".into())
            .spawn(move || {
                let mut next_keys = Instant::now();
                while !stop2.load(Ordering::SeqCst) {
                    if Instant::now() >= next_keys {
                        refresh_keys(&mut store, &workers, &stats);
                        // While the store is down nothing else tries it (workers answer
                        // uncached lookups at once), so probe it more often.
                        let up = stats.store_up.load(Ordering::Relaxed);
                        next_keys =
                            Instant::now() + if up { KEYS_REFRESH } else { PROBE_WHILE_DOWN };
                    }
                    match requests.recv_timeout(Duration::from_millis(50)) {
                        Ok(req) => {
                            let down = !serve(&mut store, req, &workers, &stats);
                            if down {
                                next_keys = next_keys.min(Instant::now() + PROBE_WHILE_DOWN);
                                // Everything queued behind a failed call gets an answer at
                                // once instead of a timeout each.
                                for req in requests.try_iter() {
                                    send(&workers, req.worker, req.key, Fetched::Unavailable);
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Directory {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fetches one record for a worker; false when the store could not be read.
fn serve(
    store: &mut RedisStore,
    req: FetchRequest,
    workers: &[Sender<AppUpdate>],
    stats: &DirectoryStats,
) -> bool {
    stats.store_lookups.fetch_add(1, Ordering::Relaxed);
    // `#sha256:...` and `#subject:...` are client certificates, looked up by index.
    let fetched = match req.key.strip_prefix('#') {
        Some(lookup) => store.fetch_by_cert(lookup),
        None => store.fetch(&req.key),
    };
    let (result, reachable) = match fetched {
        Ok(Some(app)) => (Fetched::App(Arc::new(app)), true),
        Ok(None) => (Fetched::Missing, true),
        Err(StoreError::Invalid(why)) => {
            log::error!(
                "app record {:?} in Redis is invalid, refusing the app: {why}",
                req.key
            );
            (Fetched::Invalid, true)
        }
        Err(StoreError::Unavailable(_)) => (Fetched::Unavailable, false),
    };
    note_store(stats, reachable);
    send(workers, req.worker, req.key, result);
    reachable
}

fn send(workers: &[Sender<AppUpdate>], worker: usize, key: String, result: Fetched) {
    if let Some(tx) = workers.get(worker) {
        let _ = tx.send(AppUpdate::Fetched { key, result });
    }
}

fn note_store(stats: &DirectoryStats, ok: bool) {
    let was_up = stats.store_up.swap(ok, Ordering::Relaxed);
    if !ok {
        stats.store_errors.fetch_add(1, Ordering::Relaxed);
    }
    if was_up != ok {
        if ok {
            log::info!("app store (Redis) reachable again");
        } else {
            log::warn!("app store (Redis) unreachable: cached app records keep serving");
        }
    }
}

/// On failure the workers keep their last filter: unknown keys are still answered at
/// once while Redis is away.
fn refresh_keys(store: &mut RedisStore, workers: &[Sender<AppUpdate>], stats: &DirectoryStats) {
    match store.all_keys() {
        Ok(keys) => {
            note_store(stats, true);
            let bloom = Arc::new(Bloom::from_keys(
                keys.iter().map(String::as_str),
                FILTER_FP_RATE,
            ));
            stats
                .keys_in_filter
                .store(keys.len() as u64, Ordering::Relaxed);
            for tx in workers {
                let _ = tx.send(AppUpdate::Keys(bloom.clone()));
            }
        }
        Err(_) => note_store(stats, false),
    }
}
