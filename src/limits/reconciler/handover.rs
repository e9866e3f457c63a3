//! An upgrade, as the reconciler sees it. Two processes serve for a while: the old one
//! until it has drained, the new one from its start. Without a shared counter (cluster
//! mode has Redis) neither sees the other's use of a daily quota, so each holds to half
//! of what was left when they split: the old one saves the state file and halves its
//! caps before the new one starts and reads the file; the new one, having read it,
//! halves its own. Together they stay within the quota. Once the old one has stopped,
//! the new one adds what it used since the file was read, and takes the whole quota
//! again (and only then saves the file, which the old one wrote until it stopped).

use std::path::PathBuf;

use crossbeam_channel::Sender;

use super::Core;
use crate::limits::state::{self, SavedQuota};

/// What an upgrade tells the reconciler.
pub enum Handover {
    /// (old process) A successor is about to start: save now (it reads the file next),
    /// then hold each quota key to half of what is left. Answered once saved.
    Split(Sender<()>),
    /// (old process) The successor failed: the whole quota again.
    Unsplit,
    /// (new process) The predecessor has stopped: its use since this process read the
    /// state file.
    Absorb(Vec<SavedQuota>),
}

impl Core {
    pub(super) fn on_handover(&mut self, message: Handover) {
        match message {
            Handover::Split(saved) => {
                self.quota_changed = true;
                self.save();
                self.halve_quotas();
                let _ = saved.send(());
            }
            Handover::Unsplit => self.whole_quotas(),
            Handover::Absorb(extra) => {
                self.saves_held = false;
                self.whole_quotas();
                self.absorb(&extra);
            }
        }
    }

    /// From now on each quota key may use half of what is left of it (cluster mode:
    /// unchanged, Redis counts for both processes).
    pub(super) fn halve_quotas(&mut self) {
        if self.cluster.is_some() || self.state_file.is_none() {
            return;
        }
        self.halved = true;
        for key in self.quotas.values_mut() {
            key.held_from = key.ledger.used();
            key.ledger.set_cap(key.halved_cap());
        }
    }

    fn whole_quotas(&mut self) {
        if !self.halved {
            return;
        }
        self.halved = false;
        for key in self.quotas.values_mut() {
            key.ledger.set_cap(key.per_day);
        }
    }

    /// Adds a predecessor's use since this process read the state file. In cluster mode
    /// Redis counted it already (the predecessor charged its use before it exited).
    fn absorb(&mut self, extra: &[SavedQuota]) {
        if self.cluster.is_some() {
            return;
        }
        for q in extra {
            match self.quotas.get_mut(&q.id) {
                Some(key) if key.day == q.day => {
                    key.ledger.add_used_elsewhere(q.used);
                    self.quota_changed = true;
                }
                // The key moved on to a new day here: that day's use there is lost.
                Some(_) => {}
                None => {
                    self.announce_saved(std::slice::from_ref(q));
                    self.quota_changed = true;
                }
            }
        }
    }
}

/// What a successor needs to count its predecessor's last quota use (an upgrade): the
/// state file (if any) as it read it at start, and the reconciler to tell.
pub struct PredecessorUse {
    pub path: Option<PathBuf>,
    pub read_at_start: Vec<SavedQuota>,
    pub reconciler: crossbeam_channel::Sender<Handover>,
}

impl PredecessorUse {
    /// The predecessor has stopped (its last save is written, or it is gone): adds what
    /// it used since this process read the file, and lets this process save again.
    pub fn count(self) {
        let now = match self.path.as_deref().map(state::load) {
            None => Vec::new(),
            Some(Ok(Some(state))) => state.quotas,
            Some(Ok(None)) => Vec::new(),
            Some(Err(e)) => {
                log::error!("traffic.state_file: {e}; the old process's last use is not counted");
                Vec::new()
            }
        };
        let extra = state::use_since(&self.read_at_start, &now);
        if !extra.is_empty() {
            log::info!(
                "upgrade: counting the old process's last use: {} unit(s) of {} quota key(s)",
                extra.iter().map(|q| q.used).sum::<u64>(),
                extra.len()
            );
        }
        let _ = self.reconciler.send(Handover::Absorb(extra));
    }
}
