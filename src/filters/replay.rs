//! Replay protection for signed routes: a verified request's nonce is recorded in the
//! cache every worker shares, and a nonce seen before (within its timestamp window) is
//! refused as a replay. It runs after authorization, so a call refused for its group or
//! address neither spends its nonce nor fills the cache (`[apps] replay_capacity`).

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
        match claim.record(&app.key, env.nonces, unix_now()) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Respond(e.into()),
        }
    }
}
