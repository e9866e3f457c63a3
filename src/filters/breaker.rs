//! The route's breaker or adaptive throttle (`[routes.breaker]`): while the upstream
//! fails, requests are refused at once (`503 circuit_open` with `Retry-After`) instead of
//! piling onto it. The decision is the shared, lock-free `RouteGuard` in the generation;
//! this filter admits a request before it goes upstream and hands its outcome back once
//! the request is over, whoever answered it.

use std::time::Instant;

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::error::{ErrorKind, ProxyError};

pub struct Breaker;

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(b.route
        .breaker
        .is_some()
        .then_some(Filter::Breaker(Breaker)))
}

impl Phases for Breaker {
    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let Some(guard) = env.snap.guard(ctx.route) else {
            return Flow::Continue;
        };
        match guard.admit(Instant::now(), env.rng.unit()) {
            Ok(ticket) => {
                ctx.held.ticket = Some(ticket);
                Flow::Continue
            }
            Err(wait) => {
                let retry_after = wait.as_secs_f64().ceil().max(1.0);
                Flow::Respond(
                    ProxyError::upstream(
                        ErrorKind::CircuitOpen,
                        format!(
                            "route {:?}: its upstream is failing; the circuit is open",
                            env.snap.route(ctx.route).name
                        ),
                    )
                    .with_headers(format!("retry-after: {retry_after}\r\n").into_bytes())
                    .into(),
                )
            }
        }
    }

    fn on_done(&self, ctx: &mut RequestCtx, env: &Env) {
        if let (Some(guard), Some(ticket)) = (env.snap.guard(ctx.route), ctx.held.ticket.take()) {
            guard.finish(ticket, ctx.outcome, Instant::now());
        }
    }
}
