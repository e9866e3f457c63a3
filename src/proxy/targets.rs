//! A request's bookkeeping on the target it was sent to: the balancer's count of
//! requests in flight, and the exchange's outcome for passive outlier ejection.

use std::cell::RefCell;
use std::time::Instant;

use super::upstream::WorkerUpstreams;
use super::worker::WorkerCtx;
use crate::resilience::health::{TargetTicket, UpstreamHealth};
use crate::snapshot::Snapshot;

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

/// A request's admission by its target's breaker, given back when the attempt ends: by
/// `note_target_health`, or as a neutral outcome when the attempt is dropped midway (a
/// total timeout), so a half-open probe slot is never lost.
pub(super) struct TargetAdmission<'a> {
    health: &'a UpstreamHealth,
    target: usize,
    ticket: Option<TargetTicket>,
}

impl<'a> TargetAdmission<'a> {
    pub(super) fn admit(health: &'a UpstreamHealth, target: usize, now: Instant) -> Self {
        TargetAdmission {
            health,
            target,
            ticket: Some(health.admit(target, now)),
        }
    }
}

impl Drop for TargetAdmission<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.health
                .finish(self.target, ticket, None, Instant::now());
        }
    }
}

/// The target's breaker and passive outlier ejection: the exchange's outcome, as far
/// as the target is concerned (`success`: `None` when it says nothing about the target).
pub(super) fn note_target_health(
    snap: &Snapshot,
    upstream: crate::config::UpstreamId,
    worker: &WorkerCtx,
    mut admission: TargetAdmission<'_>,
    success: Option<bool>,
) {
    let target = admission.target;
    let Some(ticket) = admission.ticket.take() else {
        return;
    };
    if !admission.health.tracks_outcomes() {
        return;
    }
    let ucfg = snap.upstream(upstream);
    if let Some(out_for) = snap
        .health(upstream)
        .finish(target, ticket, success, Instant::now())
    {
        worker.warn_limited(|| {
            format!(
                "upstream {:?}: target {} ejected for {out_for:?} after failures in a row",
                ucfg.name, ucfg.targets[target].addr
            )
        });
    }
}
