//! The upgrade's steps as the process's main thread takes them: the running gateway
//! starting its successor, and the successor taking over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Predecessor, Relaunch, Successor};
use crate::runtime::GatewayHandle;

/// How long a successor may take to serve (config, Redis, workers).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a successor waits for its predecessor to stop accepting (it does so as soon
/// as it hears the successor serves).
const RELEASE_WITHIN: Duration = Duration::from_secs(10);
/// Beyond its drain timeout, how long a predecessor may take to stop (its last save).
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// SIGUSR2: starts the binary at this process's path as its successor, hands it the
/// listening sockets and waits until it serves. On failure the successor is gone and
/// this process serves on, alone.
pub fn start_successor(
    handle: &GatewayHandle,
    relaunch: Result<&Relaunch, &std::io::Error>,
) -> Result<Successor, String> {
    let relaunch = relaunch.map_err(|e| format!("this process's binary is unknown: {e}"))?;
    log::info!("upgrade: starting {relaunch:?}");
    let mut successor = Successor::start(handle, relaunch)?;
    match successor.wait_ready(READY_WITHIN) {
        Ok(()) => Ok(successor),
        Err(e) => {
            successor.abandon(handle);
            Err(e)
        }
    }
}

/// A successor's view of its predecessor, once it serves: whether it has stopped yet.
pub struct TakenOver {
    finished: Arc<AtomicBool>,
    within: Duration,
}

impl TakenOver {
    /// The predecessor has stopped (or is gone, or took too long).
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Waits until the predecessor has stopped, at most as long as it may take: this
    /// process stopping meanwhile (`GatewayHandle::shutdown_after`) saves its quota use
    /// only with the predecessor's last use counted.
    pub fn wait_finished(&self) {
        let deadline = Instant::now() + self.within;
        while !self.finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Started by an upgrade and serving: tells the old process and waits until it no longer
/// accepts; from then on the listening sockets are this process's alone. Once it has
/// stopped, its last quota use is counted here.
pub fn take_over(predecessor: Predecessor, handle: &mut GatewayHandle) -> TakenOver {
    if let Err(e) = predecessor.ready() {
        log::warn!("upgrade: cannot tell the old process we serve ({e}); serving on");
    }
    if predecessor.wait_released(RELEASE_WITHIN) {
        log::info!("upgrade: took over from the old process");
    } else {
        log::warn!("upgrade: the old process did not let go within {RELEASE_WITHIN:?}; serving on");
    }
    handle.listeners_released();
    let count = handle.take_predecessor_use();
    let finished = Arc::new(AtomicBool::new(false));
    // Its drain timeout as it said (its config may differ from ours).
    let within = predecessor
        .drain_timeout()
        .unwrap_or_else(|| handle.drain_timeout())
        + STOP_MARGIN;
    let flag = finished.clone();
    let nonces = handle.state().nonces.clone();
    predecessor.when_finished(within, nonces, move || {
        if let Some(count) = count {
            count.count();
        }
        log::info!("upgrade: the old process has stopped");
        flag.store(true, Ordering::SeqCst);
    });
    TakenOver { finished, within }
}
