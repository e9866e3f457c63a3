//! Replay protection: the one cross-core set on the request path. A nonce accepted on any
//! worker must be refused on every other worker until its timestamp leaves the window.
//!
//! Sharded mutexes rather than one lock: a check holds a shard for one hash-map probe, and
//! with 64 shards two workers rarely meet. Entries are 128-bit keyed fingerprints of
//! (app key, nonce), not the strings, so an entry costs ~32 bytes of map space whatever the
//! lengths, and attacker-chosen nonces cannot aim at one shard (the hash keys are random,
//! made by the first process and passed on at each upgrade with the entries, unless the
//! new binary fingerprints differently: see `probe`). Timing is pure: `now` is an
//! argument.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use ahash::{AHashMap, RandomState};
use std::sync::Mutex;

/// Outcome of [`NonceCache::check_and_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen (or seen but expired): recorded now, the request may proceed.
    Fresh,
    /// Seen and not yet expired: a replay, refuse it.
    Replay,
    /// Not seen, but its shard is full of unexpired nonces, so it could not be recorded.
    /// The caller should refuse the request (503 `overloaded`, not 401: the client did
    /// nothing wrong). Evicting a live entry instead would let that nonce be replayed, and
    /// accepting without recording would let this one be; refusing keeps the guarantee and
    /// limits the damage of a flood to the shard it filled, for at most one window.
    Full,
}

/// One shard, aligned to its own cache lines so that workers locking neighbouring shards
/// do not bounce one line between cores.
#[repr(align(128))]
struct Shard {
    inner: Mutex<ShardMap>,
}

struct ShardMap {
    /// fingerprint -> expiry (unix seconds, last second at which it still counts as seen).
    map: AHashMap<u128, u64>,
    /// `now` of the last purge. A purge removes everything expired at that second, so a
    /// second purge within the same second can free nothing: at most one scan per second.
    purged_at: u64,
}

/// Seconds after which an insert purges its shard whatever its size.
const PURGE_AT_LEAST_EVERY: u64 = 60;

/// Set of recently seen (app key, nonce) pairs, shared by all workers through an `Arc`.
pub struct NonceCache {
    shards: Box<[Shard]>,
    mask: usize,
    max_per_shard: usize,
    /// Shard size above which an insert first purges expired entries: small shards are not
    /// worth a scan, and memory stays near the live set rather than at the cap.
    purge_threshold: usize,
    /// Two independently keyed hashers: together a 128-bit fingerprint, so a false replay
    /// (two live pairs with one fingerprint) is practically impossible.
    hash_lo: RandomState,
    hash_hi: RandomState,
    /// Their keys: a successor at an upgrade fingerprints alike, so the entries handed
    /// to it mean the same there.
    keys: [u64; 8],
}

/// A seen pair's fingerprint and expiry, as handed to a successor at an upgrade.
pub type Entry = (u128, u64);

impl NonceCache {
    /// `shards` is rounded up to a power of two (at least 1); `max_entries_per_shard` caps
    /// memory (~32-40 bytes an entry plus map slack). Size it for the peak nonce rate times
    /// the accept span: with a window of W seconds a nonce stays for up to 2W seconds.
    pub fn new(shards: usize, max_entries_per_shard: usize) -> Self {
        let random = RandomState::new();
        let mut keys = [0u64; 8];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = random.hash_one(i);
        }
        NonceCache::with_keys(shards, max_entries_per_shard, keys)
    }

    /// As `new`, fingerprinting with these keys (a predecessor's, at an upgrade).
    pub fn with_keys(shards: usize, max_entries_per_shard: usize, keys: [u64; 8]) -> Self {
        let n = shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| Shard {
                inner: Mutex::new(ShardMap {
                    map: AHashMap::new(),
                    purged_at: 0,
                }),
            })
            .collect();
        NonceCache {
            shards,
            mask: n - 1,
            max_per_shard: max_entries_per_shard,
            purge_threshold: (max_entries_per_shard / 4).max(64),
            hash_lo: RandomState::with_seeds(keys[0], keys[1], keys[2], keys[3]),
            hash_hi: RandomState::with_seeds(keys[4], keys[5], keys[6], keys[7]),
            keys,
        }
    }

    /// The fingerprint keys (see `with_keys`).
    pub fn keys(&self) -> [u64; 8] {
        self.keys
    }

    /// The fingerprint of a fixed pair: a successor built differently (another ahash,
    /// another `Hash` for tuples) computes another one with the same keys, and then must
    /// not take this cache's entries, which would match nothing.
    pub fn probe(&self) -> u128 {
        self.fingerprint("", "ringgate-upgrade-probe")
    }

    /// Calls `each` with the entries of one shard at a time that are not expired at
    /// `now` (each shard locked only while copied: an upgrade's, not the request path's).
    pub fn for_each_live_shard(&self, now: u64, mut each: impl FnMut(&[Entry])) {
        for shard in self.shards.iter() {
            let live: Vec<Entry> = {
                let s = shard.inner.lock().unwrap_or_else(|e| e.into_inner());
                s.map
                    .iter()
                    .filter(|(_, &exp)| exp >= now)
                    .map(|(&fp, &exp)| (fp, exp))
                    .collect()
            };
            if !live.is_empty() {
                each(&live);
            }
        }
    }

    /// Records entries a predecessor saw (fingerprinted with the same keys), each until
    /// the later of its expiry and any this cache holds. A full shard takes no more:
    /// returns how many were left out.
    pub fn insert_entries(&self, entries: &[Entry]) -> usize {
        let mut left_out = 0;
        for &(fp, expires_at) in entries {
            let shard = &self.shards[((fp >> 64) as usize) & self.mask];
            let mut s = shard.inner.lock().unwrap_or_else(|e| e.into_inner());
            let full = s.map.len() >= self.max_per_shard;
            match s.map.get_mut(&fp) {
                Some(exp) => *exp = (*exp).max(expires_at),
                None if !full => {
                    s.map.insert(fp, expires_at);
                }
                None => left_out += 1,
            }
        }
        left_out
    }

    fn fingerprint(&self, app_key: &str, nonce: &str) -> u128 {
        let lo = self.hash_lo.hash_one((app_key, nonce));
        let hi = self.hash_hi.hash_one((app_key, nonce));
        (u128::from(hi) << 64) | u128::from(lo)
    }

    /// Records (app key, nonce) as seen until `expires_at` (unix seconds, inclusive: at
    /// `now == expires_at` it is still a replay). Returns [`Seen::Replay`] if it was already
    /// seen and has not expired, [`Seen::Full`] if it is new but its shard is full of live
    /// entries, else [`Seen::Fresh`]. Callers pass `expires_at = timestamp + window`: past
    /// that the timestamp check refuses the request anyway.
    pub fn check_and_insert(&self, app_key: &str, nonce: &str, expires_at: u64, now: u64) -> Seen {
        // Tuple hashing writes each str with a terminator, so ("ab","c") != ("a","bc").
        let fp = self.fingerprint(app_key, nonce);
        let shard = &self.shards[((fp >> 64) as usize) & self.mask];
        // A panic elsewhere while holding the lock cannot leave the map inconsistent for
        // our purposes (each operation is a single insert/retain), so keep serving.
        let mut s = shard.inner.lock().unwrap_or_else(|e| e.into_inner());

        if let Some(exp) = s.map.get_mut(&fp) {
            if *exp >= now {
                return Seen::Replay;
            }
            // Expired: reuse the slot, no growth.
            *exp = expires_at;
            return Seen::Fresh;
        }
        // A big shard is purged before it grows (at most once a second), and any shard at
        // least once a minute: memory then follows the live set (rate x window), not the
        // cap, which a steady signed load would otherwise fill for hours (soak: +3.4 MiB
        // a minute for ten minutes at 1 500 signed calls a second, no plateau).
        let due = (s.map.len() >= self.purge_threshold && s.purged_at != now)
            || now >= s.purged_at + PURGE_AT_LEAST_EVERY;
        if due {
            s.map.retain(|_, exp| *exp >= now);
            s.purged_at = now;
        }
        if s.map.len() >= self.max_per_shard {
            return Seen::Full;
        }
        s.map.insert(fp, expires_at);
        Seen::Fresh
    }

    /// Entries held, including expired ones not yet purged. Locks each shard in turn, so
    /// it is for stats and tests, not the request path.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of shards (a power of two).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    const NONCE: &str = "abcdefghijklmnop";

    #[test]
    fn fresh_then_replay_until_expiry() {
        let c = NonceCache::new(64, 1000);
        assert_eq!(c.check_and_insert("app", NONCE, 1300, 1000), Seen::Fresh);
        assert_eq!(c.check_and_insert("app", NONCE, 1300, 1000), Seen::Replay);
        assert_eq!(c.check_and_insert("app", NONCE, 1301, 1299), Seen::Replay);
        // Inclusive: still seen at the expiry second, fresh one second after.
        assert_eq!(c.check_and_insert("app", NONCE, 1600, 1300), Seen::Replay);
        assert_eq!(c.check_and_insert("app", NONCE, 1601, 1301), Seen::Fresh);
        assert_eq!(c.check_and_insert("app", NONCE, 1601, 1302), Seen::Replay);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn nonces_are_per_app() {
        let c = NonceCache::new(4, 1000);
        assert_eq!(c.check_and_insert("app-a", NONCE, 100, 0), Seen::Fresh);
        assert_eq!(c.check_and_insert("app-b", NONCE, 100, 0), Seen::Fresh);
        // The pair is hashed unambiguously: moving bytes between key and nonce is new.
        assert_eq!(
            c.check_and_insert("app-ab", "cdefghijklmnop", 100, 0),
            Seen::Fresh
        );
        assert_eq!(
            c.check_and_insert("app-a", "bcdefghijklmnop", 100, 0),
            Seen::Fresh
        );
        assert_eq!(c.check_and_insert("app-b", NONCE, 100, 0), Seen::Replay);
        assert_eq!(c.len(), 4);
        assert!(!c.is_empty());
    }

    #[test]
    fn shard_count_is_a_power_of_two() {
        assert_eq!(NonceCache::new(0, 1).shards(), 1);
        assert_eq!(NonceCache::new(1, 1).shards(), 1);
        assert_eq!(NonceCache::new(48, 1).shards(), 64);
        assert_eq!(NonceCache::new(64, 1).shards(), 64);
        assert!(NonceCache::new(8, 1).is_empty());
    }

    #[test]
    fn full_shard_refuses_until_entries_expire() {
        // One shard so the cap is exact.
        let c = NonceCache::new(1, 100);
        for i in 0..100 {
            let n = format!("nonce-{i:010}");
            assert_eq!(c.check_and_insert("app", &n, 1000 + i, 0), Seen::Fresh);
        }
        assert_eq!(
            c.check_and_insert("app", "one-too-many-000", 5000, 0),
            Seen::Full
        );
        // A full shard still recognises replays.
        assert_eq!(
            c.check_and_insert("app", "nonce-0000000005", 5000, 0),
            Seen::Replay
        );
        // At 1010 the first ten (expiring 1000..=1009) are gone, so ten more fit.
        for i in 0..10 {
            let n = format!("later-{i:010}");
            assert_eq!(
                c.check_and_insert("app", &n, 2000, 1010),
                Seen::Fresh,
                "{i}"
            );
        }
        assert_eq!(
            c.check_and_insert("app", "later-0000000010", 2000, 1010),
            Seen::Full
        );
        assert_eq!(c.len(), 100);
        // Everything expired: the next insert purges the shard down to itself.
        assert_eq!(
            c.check_and_insert("app", "after-all-expired", 9000, 8000),
            Seen::Fresh
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn expired_entries_are_purged_lazily_above_the_threshold() {
        let c = NonceCache::new(1, 10_000); // purge threshold 2500
        for i in 0..2500 {
            let n = format!("nonce-{i:010}");
            assert_eq!(c.check_and_insert("app", &n, 100, 0), Seen::Fresh);
        }
        // Below the threshold nothing is scanned, so expired entries stay counted.
        assert_eq!(c.len(), 2500);
        assert_eq!(
            c.check_and_insert("app", "fresh-nonce-0000", 500, 200),
            Seen::Fresh
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn small_shards_are_purged_once_a_minute() {
        let c = NonceCache::new(1, 10_000); // purge threshold 2500: never reached here
        for i in 0..10 {
            let n = format!("nonce-{i:010}");
            assert_eq!(c.check_and_insert("app", &n, 100, 0), Seen::Fresh);
        }
        assert_eq!(
            c.check_and_insert("app", "at-59-seconds-000", 400, 59),
            Seen::Fresh
        );
        assert_eq!(c.len(), 11, "not a minute yet");
        assert_eq!(
            c.check_and_insert("app", "at-160-seconds-00", 400, 160),
            Seen::Fresh
        );
        assert_eq!(c.len(), 2, "the ten expired ones went");
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let c = NonceCache::new(4, 0);
        assert_eq!(c.check_and_insert("app", NONCE, 100, 0), Seen::Full);
        assert!(c.is_empty());
    }

    #[test]
    fn poisoned_shard_keeps_serving() {
        let c = Arc::new(NonceCache::new(1, 100));
        assert_eq!(c.check_and_insert("app", NONCE, 100, 0), Seen::Fresh);
        let c2 = Arc::clone(&c);
        let r = std::thread::spawn(move || {
            let _guard = c2.shards[0].inner.lock();
            panic!("poison the shard");
        })
        .join();
        assert!(r.is_err());
        assert!(c.shards[0].inner.is_poisoned());
        assert_eq!(c.check_and_insert("app", NONCE, 100, 0), Seen::Replay);
        assert_eq!(
            c.check_and_insert("app", "another-nonce-000", 100, 0),
            Seen::Fresh
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn concurrent_workers_accept_each_nonce_once() {
        const THREADS: usize = 4;
        const NONCES: usize = 2000;
        let c = NonceCache::new(8, 10_000);
        let nonces: Vec<String> = (0..NONCES).map(|i| format!("nonce-{i:010}")).collect();
        let start = Barrier::new(THREADS);
        let fresh: Vec<Vec<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (c, nonces, start) = (&c, &nonces, &start);
                    s.spawn(move || {
                        start.wait();
                        // Different orders so threads really race on the same entries.
                        let mut got = vec![false; NONCES];
                        for k in 0..NONCES {
                            let i = if t % 2 == 0 { k } else { NONCES - 1 - k };
                            got[i] =
                                c.check_and_insert("app", &nonces[i], 1300, 1000) == Seen::Fresh;
                        }
                        got
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for i in 0..NONCES {
            let n = fresh.iter().filter(|f| f[i]).count();
            assert_eq!(n, 1, "nonce {i} accepted {n} times");
        }
        assert_eq!(c.len(), NONCES);
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NonceCache>();
    }

    #[test]
    fn entries_handed_over_are_replays_in_a_cache_with_the_same_keys() {
        let old = NonceCache::new(4, 100);
        assert_eq!(old.check_and_insert("app", "n1", 200, 100), Seen::Fresh);
        assert_eq!(old.check_and_insert("app", "n2", 150, 100), Seen::Fresh);
        // At 160 n2 has expired: only n1 is handed over.
        let mut live = Vec::new();
        old.for_each_live_shard(160, |entries| live.extend_from_slice(entries));
        assert_eq!(live.len(), 1);
        let new = NonceCache::with_keys(4, 100, old.keys());
        assert_eq!(new.probe(), old.probe());
        assert_eq!(new.insert_entries(&live), 0);
        assert_eq!(new.check_and_insert("app", "n1", 260, 160), Seen::Replay);
        assert_eq!(new.check_and_insert("app", "n2", 260, 160), Seen::Fresh);
        // A cache with other keys fingerprints differently.
        let other = NonceCache::new(4, 100);
        assert_ne!(other.probe(), old.probe());
        other.insert_entries(&live);
        assert_eq!(other.check_and_insert("app", "n1", 260, 160), Seen::Fresh);
    }
}
