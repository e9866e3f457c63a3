//! `[admin] watch = true`: a control-side thread that reloads when the config file, or a
//! file it names (certificates, keys, CA files, the apps file, fallback bodies: see
//! `Config::files`), changes. It polls each file's modification time and size twice a
//! second (no inotify: editors, config managers and certificate renewal tools replace
//! files in ways that lose watches), waits for writes to settle, then reloads exactly as
//! SIGHUP does; a config that does not load is logged and counted, and the running one
//! keeps serving. After each reload the files of the config now serving are watched.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::runtime::GatewayState;

const POLL: Duration = Duration::from_millis(500);
/// A change is read this long after it was seen, so a file being written is read whole.
const SETTLE: Duration = Duration::from_millis(100);

pub fn start(state: Arc<GatewayState>, path: PathBuf) {
    // Stamped now, not when the thread first runs: a change made in between would
    // otherwise become the baseline and never be reloaded.
    let first = Stamps::take(watched(&state, &path));
    let spawned = std::thread::Builder::new()
        .name("ringgate-watch".into())
        .spawn(move || run(&state, &path, first));
    if let Err(e) = spawned {
        log::error!("admin.watch: cannot start the config watcher: {e}");
    }
}

/// The config file, then the files the serving config read.
fn watched(state: &GatewayState, config: &Path) -> Vec<PathBuf> {
    let mut files = vec![config.to_path_buf()];
    if let Ok(snap) = state.snapshot.read() {
        files.extend(snap.config.files.iter().cloned());
    }
    files
}

/// Each watched file's modification time and size (`None`: missing or unreadable).
struct Stamps(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Stamps {
    fn take(files: Vec<PathBuf>) -> Stamps {
        Stamps(
            files
                .into_iter()
                .map(|f| {
                    let stamp = stamp(&f);
                    (f, stamp)
                })
                .collect(),
        )
    }

    /// The first file whose stamp differs from `self`'s, if any. A file that went
    /// missing counts only once it is back (a renewal tool may replace it in two steps).
    fn changed(&self) -> Option<&Path> {
        self.0.iter().find_map(|(path, before)| {
            let now = stamp(path);
            (now.is_some() && now != *before).then_some(path.as_path())
        })
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn run(state: &GatewayState, config: &Path, mut last: Stamps) {
    // Ends with the gateway: draining, or its state dropped (only this thread holds it).
    while !state.draining.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        let Some(changed) = last.changed().map(Path::to_path_buf) else {
            continue;
        };
        std::thread::sleep(SETTLE);
        // Stamped before the reload reads them: a change made during it is seen next time.
        let stamped = Stamps::take(last.0.iter().map(|(p, _)| p.clone()).collect());
        let result = state.reload_file(config);
        // The serving config's files: new ones if the reload took; if it was refused,
        // the refused config's files too (a certificate it names may appear later).
        let mut files = watched(state, config);
        if result.is_err() {
            for f in crate::config::named_files(config) {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        last = if stamped.0.iter().map(|(p, _)| p).eq(files.iter()) {
            stamped
        } else {
            Stamps::take(files)
        };
        match result {
            Ok(generation) => log::info!(
                "admin.watch: {} changed; generation {generation} serving",
                changed.display()
            ),
            Err(e) => log::error!(
                "admin.watch: {} changed but the config was refused, still serving the previous one:\n{e}",
                changed.display()
            ),
        }
    }
}
