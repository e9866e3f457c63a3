//! The route's breaker or adaptive throttle (`[routes.breaker]`): while the upstream
//! fails, requests are refused at once (`503 circuit_open` with `Retry-After`) instead of
//! piling onto it. The decision is the shared, lock-free `RouteGuard` in the generation;
//! this filter admits a request before it goes upstream and hands its outcome back once
//! the request is over, whoever answered it.

use std::sync::Arc;
use std::time::Instant;

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::error::{ErrorKind, ProxyError};
use crate::resilience::guard::RouteGuard;

pub struct Breaker {
    guard: Arc<RouteGuard>,
    route: Box<str>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(b.guard.map(|guard| {
        Filter::Breaker(Breaker {
            guard: guard.clone(),
            route: b.route.name.as_str().into(),
        })
    }))
}

impl Phases for Breaker {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        match self.guard.admit(Instant::now(), env.rng.unit()) {
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
                            self.route
                        ),
                    )
                    .with_headers(format!("retry-after: {retry_after}\r\n").into_bytes())
                    .into(),
                )
            }
        }
    }

    fn on_done(&self, ctx: &mut RequestCtx, _env: &Env) {
        if let Some(ticket) = ctx.held.ticket.take() {
            self.guard.finish(ticket, ctx.outcome, Instant::now());
        }
    }
}
