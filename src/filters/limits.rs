//! Rate limits and daily quotas (`[[routes.limits]]`): the worker's share of each
//! limit's tokens and grants decides, without locks or cross-core traffic (the
//! reconciler moves shares between workers and gateways in the background). Every
//! response on a limited route carries the `RateLimit-Policy` and `RateLimit` headers; a
//! refusal is a 429 with `Retry-After`. Runs after authentication, so an unsigned request
//! never spends an app's budget.

use std::time::Instant;

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::auth::check::unix_now;
use crate::config::ConfigError;
use crate::limits::spec::LimitSpec;
use crate::limits::worker::RequestFacts;

pub struct Limits {
    /// The route's name, for `app_route` keys.
    route: Box<str>,
    limits: Vec<LimitSpec>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    if b.route.limits.is_empty() {
        return Ok(None);
    }
    Ok(Some(Filter::Limits(Limits {
        route: b.route.name.as_str().into(),
        limits: b.route.limits.clone(),
    })))
}

impl Phases for Limits {
    const EDITS_REQUEST_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let facts = RequestFacts {
            route: &self.route,
            app: ctx.app.as_deref(),
            client_ip: req.client_ip,
            headers: req.headers,
            unix_secs: unix_now(),
        };
        match env
            .limiter
            .check(&self.limits, &facts, Instant::now(), &mut ctx.limit_headers)
        {
            Ok(()) => Flow::Continue,
            Err(refusal) => Flow::Respond(refusal.into_error().into()),
        }
    }

    fn on_response(&self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        ctx.limit_headers.write_to(out);
    }
}
