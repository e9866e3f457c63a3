//! Requests whose signature covers their body: the body is read (up to the configured
//! limit) and hashed, the signature and nonce are checked, and the route's limits that
//! were deferred until then are checked, all before anything reaches the upstream.

use super::buffered::{read_body, BodyError, BudgetShare};
use super::conn::{respond_error, ClientConn};
use super::forward::After;
use super::prepare::Prepared;
use super::worker::WorkerCtx;
use crate::auth::check::{unix_now, Pending};
use crate::auth::sign::body_sha256_hex;
use crate::error::{ProxyError, Side};
use crate::snapshot::Snapshot;

/// Reads the body of a signed request, checks the signature over its hash and records
/// the nonce; answers the client itself when that fails. Nothing reaches the upstream
/// before the check passes.
pub(super) async fn authenticate_body<'w>(
    c: &mut ClientConn,
    p: &mut Prepared,
    pending: Pending,
    snap: &Snapshot,
    worker: &'w WorkerCtx,
) -> Result<(Vec<u8>, BudgetShare<'w>), After> {
    let route = snap.route(p.route);
    let server = &snap.config.server;
    let read = read_body(
        c,
        p.framing,
        p.expect_continue,
        route.max_body_bytes,
        server.body_timeout,
        &worker.buffered,
        snap.config.apps.max_buffered_bytes,
    )
    .await;
    let (error, body_read) = match read {
        Ok((body, share)) => {
            match pending.finish(&body_sha256_hex(&body), &worker.nonces, unix_now()) {
                Ok(app) => match check_deferred_limits(c, p, route, &app, worker) {
                    Ok(()) => return Ok((body, share)),
                    Err(e) => (e, true),
                },
                Err(e) => (e, true),
            }
        }
        Err(BodyError {
            client_gone: true, ..
        }) => return Err(After::Close),
        Err(BodyError { error, .. }) => (error, false),
    };
    if error.side == Side::Internal {
        worker.warn_limited(|| format!("request {:?}: {}", p.request_id, error));
    }
    // With the whole body read the connection is still in step and may carry on.
    Err(respond_error(
        c,
        snap,
        &error,
        p.request_id.as_str(),
        p.keep_alive && body_read,
        p.is_head,
    )
    .await)
}

/// The route's limits for a request whose signature covered its body: checked now that
/// the app is known to be who it says.
fn check_deferred_limits(
    c: &ClientConn,
    p: &mut Prepared,
    route: &crate::config::RouteConfig,
    app: &crate::auth::registry::App,
    worker: &WorkerCtx,
) -> Result<(), ProxyError> {
    let Some(deferred) = p.deferred_limits.take() else {
        return Ok(());
    };
    let headers: Vec<httparse::Header> = deferred
        .headers
        .iter()
        .map(|(name, value)| httparse::Header { name, value })
        .collect();
    let facts = crate::limits::worker::RequestFacts {
        route: &route.name,
        app: Some(app),
        client_ip: c.peer.ip(),
        headers: &headers,
        unix_secs: unix_now(),
    };
    worker
        .limiter
        .check(
            &route.limits,
            &facts,
            std::time::Instant::now(),
            &mut p.limit_headers,
        )
        .map_err(|refusal| refusal.into_error())
}
