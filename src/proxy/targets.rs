//! A request's bookkeeping on the target it was sent to: the balancer's count of
//! requests in flight, and the exchange's outcome for passive outlier ejection.

use std::cell::RefCell;
use std::time::Instant;

use super::forward::{After, Failed};
use super::prepare::Prepared;
use super::upstream::WorkerUpstreams;
use super::worker::WorkerCtx;
use crate::config::Snapshot;
use crate::resilience::guard::Outcome;

/// A target's count of requests in flight (least_outstanding balancing), held for one
/// attempt.
pub(super) struct Outstanding<'a> {
    ups: &'a RefCell<WorkerUpstreams>,
    upstream: crate::config::UpstreamId,
    target: usize,
}

impl<'a> Outstanding<'a> {
    pub(super) fn begin(
        ups: &'a RefCell<WorkerUpstreams>,
        upstream: crate::config::UpstreamId,
        target: usize,
    ) -> Self {
        ups.borrow_mut().get(upstream).balancer.begin(target);
        Outstanding {
            ups,
            upstream,
            target,
        }
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.ups
            .borrow_mut()
            .get(self.upstream)
            .balancer
            .end(self.target);
    }
}

/// Passive outlier ejection: the exchange's outcome, as far as the target is concerned.
pub(super) fn note_target_health(
    snap: &Snapshot,
    p: &Prepared,
    worker: &WorkerCtx,
    target: usize,
    result: &Result<(After, u16), Failed>,
) {
    let success = match result {
        Ok((_, status)) => *status < 500,
        Err(Failed {
            retried_status: Some(status),
            ..
        }) => *status < 500,
        Err(f) => match f.outcome() {
            Outcome::Neutral => return,
            _ => false,
        },
    };
    let ucfg = snap.upstream(p.upstream);
    if let Some(out_for) = snap
        .health(p.upstream)
        .record(target, success, Instant::now())
    {
        worker.warn_limited(|| {
            format!(
                "upstream {:?}: target {} ejected for {out_for:?} after failures in a row",
                ucfg.name, ucfg.targets[target].addr
            )
        });
    }
}
