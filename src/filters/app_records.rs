//! Waiting for app records the control side is fetching from the Redis registry, shared
//! by the filters that find the caller's app (`app_signature`, `client_cert`): one
//! deadline across a request's waits, and the answer when the registry cannot help.

use std::time::{Duration, Instant};

use super::{Env, Flow, Phases, RequestCtx, RequestView};
use crate::error::{ErrorKind, ProxyError, Side};

/// How long a request waits for an app record the control side is fetching.
const APP_FETCH_WAIT: Duration = Duration::from_secs(2);

/// 503 `overloaded`: the registry cannot answer now.
pub(super) fn registry_unavailable(message: &'static str) -> Flow {
    Flow::Respond(ProxyError::new(ErrorKind::Overloaded, Side::Internal, message).into())
}

/// The `wait` phase of a filter that finds the caller's app: once new records arrived,
/// decide again from the top (`on_request`); past the deadline, the answer.
pub(super) async fn wait_and_retry<'g, F: Phases>(
    filter: &'g F,
    req: &RequestView<'_>,
    ctx: &mut RequestCtx<'g>,
    env: &Env<'g>,
) -> Flow {
    match records_arrived(ctx, env).await {
        Ok(()) => filter.on_request(req, ctx, env),
        Err(flow) => flow,
    }
}

/// Waits until the worker's cache gets new records (any: a batch of updates wakes every
/// waiter, so the caller looks again); `Err` with the answer once the request's deadline
/// passed, so a request never waits forever while other apps' records keep arriving.
async fn records_arrived(ctx: &mut RequestCtx<'_>, env: &Env<'_>) -> Result<(), Flow> {
    let deadline = *ctx
        .held
        .app_deadline
        .get_or_insert_with(|| Instant::now() + APP_FETCH_WAIT);
    let left = deadline.saturating_duration_since(Instant::now());
    let arrived = match env.apps.map(|a| a.changed()) {
        Some(signal) if !left.is_zero() => monoio::time::timeout(left, signal.wait()).await.is_ok(),
        _ => false,
    };
    if arrived {
        Ok(())
    } else {
        Err(registry_unavailable(
            "the app registry did not answer in time",
        ))
    }
}
