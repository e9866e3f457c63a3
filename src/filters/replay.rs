//! Replay protection for signed routes: a verified request's nonce is recorded in the
//! cache every worker shares, and a nonce seen before (within its timestamp window) is
//! refused as a replay. With `[cluster]` it is then claimed in Redis for every gateway
//! sharing it (the request waits for that round trip; see `auth::fleet_nonces`). It runs
//! after authorization, so a call refused for its group or address neither spends its
//! nonce nor fills the cache (`[apps] replay_capacity`).

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::auth::check::unix_now;
use crate::config::{AuthMode, ConfigError};

pub struct Replay;

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok((b.route.auth == AuthMode::Hmac).then_some(Filter::Replay(Replay)))
}

impl Phases for Replay {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let (Some(claim), Some(app)) = (ctx.held.nonce.take(), ctx.app.as_deref()) else {
            return Flow::Continue;
        };
        if let Err(e) = claim.record(&app.key, env.nonces, unix_now()) {
            return Flow::Respond(e.into());
        }
        if env.fleet_nonces.is_none() {
            return Flow::Continue;
        }
        // New to this gateway; the fleet's word comes in `wait`.
        ctx.held.nonce = Some(claim);
        Flow::Wait
    }

    async fn wait<'g>(
        &'g self,
        _req: &RequestView<'_>,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let (Some(claim), Some(app), Some(fleet)) =
            (ctx.held.nonce.take(), ctx.app.as_deref(), env.fleet_nonces)
        else {
            return Flow::Continue;
        };
        match claim.claim_fleet_wide(&app.key, fleet, unix_now()).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Respond(e.into()),
        }
    }
}
