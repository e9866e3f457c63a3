//! `[admin] watch = true`: a control-side thread that reloads when the config file
//! changes. It polls the file's modification time and size twice a second (no inotify:
//! editors and config managers replace files in ways that lose watches), waits for
//! writes to settle, then reloads exactly as SIGHUP does; a file that does not load is
//! logged and counted, and the running config keeps serving.

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
    let first = stamp(&path);
    let spawned = std::thread::Builder::new()
        .name("ringgate-watch".into())
        .spawn(move || run(&state, &path, first));
    if let Err(e) = spawned {
        log::error!("admin.watch: cannot start the config watcher: {e}");
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn run(state: &GatewayState, path: &Path, mut last: Option<(SystemTime, u64)>) {
    // Ends with the gateway: draining, or its state dropped (only this thread holds it).
    while !state.draining.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        let now = stamp(path);
        if now.is_none() || now == last {
            continue;
        }
        std::thread::sleep(SETTLE);
        last = stamp(path);
        match state.reload_file(path) {
            Ok(generation) => log::info!(
                "admin.watch: {} changed; generation {generation} serving",
                path.display()
            ),
            Err(e) => log::error!(
                "admin.watch: {} changed but was refused, still serving the previous config:\n{e}",
                path.display()
            ),
        }
    }
}
