//! The local quota state file: daily quota use survives a restart without Redis.
//!
//! JSON, written to a temporary file and renamed over the old one (a crash never leaves
//! half a file), once a second while anything changed and when the gateway stops. It also
//! holds the seed of the key hash, so key ids stay the same across restarts and the
//! reconciler can tell workers about saved keys before they serve. Up to a second of use
//! is lost if the process is killed without a chance to save.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaState {
    pub version: u32,
    /// Seeds of the key hash.
    pub seeds: [u64; 4],
    pub quotas: Vec<SavedQuota>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedQuota {
    pub id: u64,
    /// `<scope>/<limit>:<value>`, for people reading the file.
    pub text: String,
    pub day: u32,
    pub per_day: u64,
    pub used: u64,
}

const VERSION: u32 = 1;

/// Reads the state file. A missing file is a fresh start (`Ok(None)`); an unreadable or
/// corrupt one is an error the caller reports (and then starts afresh, keeping the bad
/// file aside so nothing is silently lost).
pub fn load(path: &Path) -> Result<Option<QuotaState>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let state: QuotaState = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a ringgate quota state file: {e}", path.display()))?;
    if state.version != VERSION {
        return Err(format!(
            "{}: unsupported version {} (expected {VERSION})",
            path.display(),
            state.version
        ));
    }
    Ok(Some(state))
}

/// Moves an unusable state file aside (`<file>.bad`).
pub fn set_aside(path: &Path) -> PathBuf {
    let mut bad = path.as_os_str().to_owned();
    bad.push(".bad");
    let bad = PathBuf::from(bad);
    let _ = std::fs::rename(path, &bad);
    bad
}

/// Writes the state atomically (temporary file, fsync, rename).
pub fn save(path: &Path, state: &QuotaState) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(
            &mut f,
            &QuotaState {
                version: VERSION,
                ..state.clone()
            },
        )?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        // A partial temporary file (a full disk) is not left behind; the state file it
        // would have replaced is untouched.
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Reads the state file at start: the hash seeds to use and today's saved quota use.
/// A corrupt file is set aside and reported, and counting starts afresh.
pub fn load_state(path: Option<&std::path::Path>) -> ([u64; 4], Vec<SavedQuota>) {
    let fresh = || {
        let r = ahash::RandomState::new();
        let mut seeds = [0u64; 4];
        for (i, s) in seeds.iter_mut().enumerate() {
            *s = r.hash_one(i);
        }
        seeds
    };
    let Some(path) = path else {
        return (fresh(), Vec::new());
    };
    match load(path) {
        Ok(Some(s)) => {
            let today = super::spec::day_of(crate::clock::unix_now(), 0);
            // Quota days may be offset by up to 14 hours either way: keep yesterday's too.
            let quotas = s
                .quotas
                .into_iter()
                .filter(|q| q.day + 1 >= today)
                .collect();
            (s.seeds, quotas)
        }
        Ok(None) => (fresh(), Vec::new()),
        Err(e) => {
            let bad = set_aside(path);
            log::error!(
                "traffic.state_file: {e}; starting with empty quotas (kept as {})",
                bad.display()
            );
            (fresh(), Vec::new())
        }
    }
}

/// The key hash every worker uses.
pub fn key_hasher(seeds: [u64; 4]) -> ahash::RandomState {
    ahash::RandomState::with_seeds(seeds[0], seeds[1], seeds[2], seeds[3])
}

/// The use in `now` beyond what `before` had, key by key (same key, same day): what a
/// predecessor used after its successor read the state file (an upgrade).
pub fn use_since(before: &[SavedQuota], now: &[SavedQuota]) -> Vec<SavedQuota> {
    now.iter()
        .filter_map(|q| {
            let earlier = before
                .iter()
                .find(|b| b.id == q.id && b.day == q.day)
                .map_or(0, |b| b.used);
            let more = q.used.saturating_sub(earlier);
            (more > 0).then(|| SavedQuota {
                used: more,
                ..q.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "rg-state-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip() {
        let path = dir().join("q.json");
        assert_eq!(load(&path), Ok(None));
        let state = QuotaState {
            version: VERSION,
            seeds: [1, 2, 3, 4],
            quotas: vec![SavedQuota {
                id: 9,
                text: "r/app-day:a".into(),
                day: 20_000,
                per_day: 100,
                used: 42,
            }],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path), Ok(Some(state)));
    }

    #[test]
    fn corrupt_files_are_reported_and_set_aside() {
        let path = dir().join("q.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path)
            .unwrap_err()
            .contains("not a ringgate quota state file"));
        let bad = set_aside(&path);
        assert!(bad.exists() && !path.exists());
    }

    #[test]
    fn use_since_counts_what_was_added_per_key_and_day() {
        let q = |id, day, used| SavedQuota {
            id,
            text: format!("k{id}"),
            day,
            per_day: 100,
            used,
        };
        let before = [q(1, 10, 5), q(2, 10, 7), q(3, 9, 4)];
        let now = [q(1, 10, 9), q(2, 10, 7), q(3, 10, 2), q(4, 10, 1)];
        let extra = use_since(&before, &now);
        let got: Vec<(u64, u32, u64)> = extra.iter().map(|q| (q.id, q.day, q.used)).collect();
        // Key 2 unchanged; key 3 on a new day counts whole; key 4 is new.
        assert_eq!(got, vec![(1, 10, 4), (3, 10, 2), (4, 10, 1)]);
    }
}
