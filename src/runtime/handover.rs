//! The running gateway's part in an upgrade (see `crate::upgrade`): its listening
//! sockets and key seeds for a successor, the quota split while two processes serve, and
//! the drain that hands over rather than stops.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use super::{DrainReport, GatewayHandle, WorkerCommand};
use crate::limits::reconciler::{Handover, PredecessorUse};

impl GatewayHandle {
    /// Copies of every listening socket with its name (see `listener::data_key`), to
    /// hand to a successor. From then on the sockets count as shared: a drain leaves
    /// them listening, for the successor (see `listeners_released` if it fails).
    pub fn handover_sockets(&self) -> Vec<(String, OwnedFd)> {
        self.state.listeners_shared.store(true, Ordering::SeqCst);
        let Ok(sockets) = self.state.handover.lock() else {
            return Vec::new();
        };
        sockets
            .iter()
            .filter_map(|(key, fd)| Some((key.clone(), fd.try_clone().ok()?)))
            .collect()
    }

    /// What counts the predecessor's last quota use once it has stopped (an upgrade;
    /// `None` otherwise, or when taken already).
    pub fn take_predecessor_use(&mut self) -> Option<PredecessorUse> {
        self.predecessor_use.take()
    }

    /// A successor is about to start (an upgrade): the quota state file is saved now, for
    /// it to read, and each quota held to half of what is left (see
    /// `limits::reconciler::handover`).
    pub fn split_quotas_for_successor(&self) {
        if let Some(r) = &self.reconciler {
            r.split_for_successor();
        }
    }

    /// The successor failed: the whole quotas again.
    pub fn whole_quotas_again(&self) {
        if let Some(r) = &self.reconciler {
            let _ = r.handover().send(Handover::Unsplit);
        }
    }

    /// The seeds of the limit key hash, for a successor (see `Inherited`).
    pub fn key_seeds(&self) -> Option<[u64; 4]> {
        self.state.key_seeds.lock().ok().and_then(|s| *s)
    }

    /// No other process holds the listening sockets any more: the predecessor let go of
    /// them after an upgrade, or a successor that had them is gone.
    pub fn listeners_released(&self) {
        self.state.listeners_shared.store(false, Ordering::SeqCst);
    }

    /// Has every worker take the connections waiting on its listeners that no accept was
    /// woken for: after an upgrade's successor that held the sockets too is gone (see
    /// `worker::sweep`).
    pub fn sweep_listeners(&self) {
        for (_, tx) in &self.workers {
            let _ = tx.send(WorkerCommand::Sweep);
        }
    }

    /// After an upgrade's handover (the successor accepts on the same sockets): stop
    /// accepting (the admin listener first, so admin calls reach the successor), run
    /// `stopped_accepting` once every worker has been told to, let in-flight requests
    /// finish, serve each idle connection's next request with `Connection: close` (up to
    /// the drain timeout), stop.
    pub fn hand_over(mut self, stopped_accepting: impl FnOnce()) -> DrainReport {
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        self.drain(WorkerCommand::HandOver, stopped_accepting, || {})
    }
}
