//! The control-side half of the Redis-backed registry: one thread that owns the store
//! connection, answers workers' fetch requests, and rebuilds the Bloom filter of all app
//! keys. Blocking calls to Redis happen here and nowhere else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::bloom::Bloom;
use super::cache::{AppUpdate, FetchRequest};
use super::store::RedisStore;

/// How often the key filter is rebuilt: an app added to the store is usable within this.
pub const KEYS_REFRESH: Duration = Duration::from_secs(5);
/// False-positive rate of the key filter.
const FILTER_FP_RATE: f64 = 0.001;

/// Store-side counters for the admin endpoint.
#[derive(Default)]
pub struct DirectoryStats {
    pub store_lookups: AtomicU64,
    pub store_errors: AtomicU64,
    pub keys_in_filter: AtomicU64,
    pub store_up: AtomicBool,
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
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-apps".into())
            .spawn(move || {
                let mut next_keys = Instant::now();
                while !stop2.load(Ordering::SeqCst) {
                    if Instant::now() >= next_keys {
                        refresh_keys(&mut store, &workers, &stats);
                        next_keys = Instant::now() + KEYS_REFRESH;
                    }
                    match requests.recv_timeout(Duration::from_millis(50)) {
                        Ok(req) => {
                            stats.store_lookups.fetch_add(1, Ordering::Relaxed);
                            let result = store
                                .fetch(&req.key)
                                .map(|a| a.map(Arc::new))
                                .map_err(|e| e.to_string());
                            note_store(&stats, result.is_ok());
                            if let Some(tx) = workers.get(req.worker) {
                                let _ = tx.send(AppUpdate::Fetched {
                                    key: req.key,
                                    result,
                                });
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
