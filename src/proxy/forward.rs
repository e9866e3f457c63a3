//! Forwarding a request its chain let through: the target the balancer (or, for a retry,
//! the rotation) picks, one `exchange` attempt on it, and another attempt elsewhere when
//! the route's retries and retry budget allow, all within the route's total timeout.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use super::client::{After, ClientConn};
use super::exchange::{exchange, Attempt, Failed};
use super::request::Request;
use super::targets::{note_target_health, Outstanding, TargetAdmission};
use super::upstream::WorkerUpstreams;
use super::worker::{WorkerCtx, WorkerGen};
use crate::error::{ErrorKind, ProxyError};
use crate::resilience::budget::RetryBudget;
use crate::resilience::guard::Outcome;
use crate::resilience::local_budget::LocalRetryBudget;
use crate::snapshot::Snapshot;

/// Forwards a request its chain let through: retries as the route allows, all within
/// the route's total timeout. The outcome is left in the request's context for the
/// filters' `on_done` (the breaker counts it). On failure the caller answers the client,
/// unless `respond` says that is no longer possible.
pub async fn forward(
    c: &mut ClientConn,
    req: &mut Request<'_>,
    gen: &WorkerGen,
    worker: &WorkerCtx,
    body: Option<&[u8]>,
) -> Result<After, Failed> {
    let snap: &Snapshot = gen;
    // Set once the response is on its way to the client: a total timeout after that can
    // only close the connection.
    let touched = Cell::new(false);
    let budget = match snap.retry_budget(req.route) {
        Some(shared) => Budget::Shared(shared),
        None => Budget::Local(&gen.local_budgets[req.route.0 as usize]),
    };
    let tries = send_with_retries(c, req, snap, worker, &gen.upstreams, body, &touched, budget);
    let result = match snap.route(req.route).total_timeout {
        None => tries.await,
        Some(total) => match monoio::time::timeout(total, tries).await {
            Ok(result) => result,
            Err(_) => Err(Failed {
                respond: !touched.get(),
                neutral: true,
                ..ProxyError::upstream(
                    ErrorKind::UpstreamTimeout,
                    format!("no complete response within the route's total timeout {total:?}"),
                )
                .into()
            }),
        },
    };
    req.ctx.outcome = match &result {
        Ok((_, status)) => Outcome::Status(*status),
        Err(f) => f.outcome(),
    };
    result.map(|(after, _)| after)
}

/// The retry budget a route's retries draw on: its `retries` section's, shared by every
/// worker, or without one the worker's own.
#[derive(Clone, Copy)]
enum Budget<'a> {
    Shared(&'a RetryBudget),
    Local(&'a LocalRetryBudget),
}

impl Budget<'_> {
    fn request(self, now: Instant) {
        match self {
            Budget::Shared(b) => b.request(now),
            Budget::Local(b) => b.request(now),
        }
    }

    fn try_retry(self, now: Instant) -> bool {
        match self {
            Budget::Shared(b) => b.try_retry(now),
            Budget::Local(b) => b.try_retry(now),
        }
    }
}

/// Sends the request, to another target after a connect failure, a connection that
/// failed before any response byte (idempotent requests), or a status to retry on, as
/// the route's `retries` (default: one attempt) and retry budget allow.
#[allow(clippy::too_many_arguments)]
async fn send_with_retries(
    c: &mut ClientConn,
    req: &Request<'_>,
    snap: &Snapshot,
    worker: &WorkerCtx,
    ups: &RefCell<WorkerUpstreams>,
    body_bytes: Option<&[u8]>,
    touched: &Cell<bool>,
    budget: Budget<'_>,
) -> Result<(After, u16), Failed> {
    let retries = snap.route(req.route).retries.as_ref();
    // One clock read for the first attempt; a retry reads it again.
    let mut now = Instant::now();
    budget.request(now);
    let health = snap.health(req.upstream);
    let targets = snap.upstream(req.upstream).targets.len();
    // A retry needs somewhere to go and the budget. A single target is retried itself
    // only when the route asks for retries; by default, as nginx's `proxy_next_upstream`,
    // a retry goes to another target or nowhere.
    let may_retry = |failed: usize| {
        let now = Instant::now();
        let elsewhere = (targets == 1 && retries.is_some())
            || (0..targets).any(|t| t != failed && health.available(t, now));
        elsewhere && budget.try_retry(now)
    };
    let mut attempts_left = retries.map_or(1, |r| r.attempts);
    let mut avoid = None;
    loop {
        if avoid.is_some() {
            now = Instant::now();
        }
        let picked = ups.borrow_mut().get(req.upstream).pick_available(
            worker.rng.next(),
            req.hash_key,
            avoid,
            |t| health.available(t, now),
        );
        let Some(target) = picked else {
            return Err(Failed::from(ProxyError::upstream(
                ErrorKind::NoHealthyTarget,
                format!(
                    "upstream {:?}: no healthy target",
                    snap.upstream(req.upstream).name
                ),
            )));
        };
        // Ended when the attempt is over, even if a total timeout drops it midway.
        let _outstanding = Outstanding::begin(ups, req.upstream, target);
        let admission = TargetAdmission::admit(health, target, now);
        // Statuses are retried only for requests that can be sent again as they were.
        let retry_on = match retries {
            Some(r) if attempts_left > 0 && req.retry_safe => &r.on_status[..],
            _ => &[],
        };
        let attempt = Attempt {
            target,
            body: body_bytes,
            retry_on,
            may_retry: &may_retry,
            touched,
        };
        let result = exchange(c, req, snap, worker, ups, attempt).await;
        note_target_health(
            snap,
            req.upstream,
            worker,
            admission,
            target_success(&result),
        );
        match result {
            // Nothing was sent: any request may go to another target. Nothing came back
            // for one that may be sent again: the same.
            Err(f) if (f.connect || f.unanswered) && attempts_left > 0 && may_retry(target) => {}
            Err(f) if f.retried_status.is_some() => {}
            result => return result,
        }
        attempts_left -= 1;
        avoid = Some(target);
    }
}

/// What an attempt says about its target's health (`None`: nothing).
fn target_success(result: &Result<(After, u16), Failed>) -> Option<bool> {
    match result {
        Ok((_, status)) => Some(*status < 500),
        Err(Failed {
            retried_status: Some(status),
            ..
        }) => Some(*status < 500),
        Err(f) => match f.outcome() {
            Outcome::Neutral => None,
            _ => Some(false),
        },
    }
}
