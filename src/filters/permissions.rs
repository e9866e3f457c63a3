//! Permission groups (`group = "trade"` on a route): only apps granted the route's API
//! group may call it. Runs after the app signature, so only a caller who proved who it
//! is learns what it may not do.

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::error::{ErrorKind, ProxyError};

pub struct Permissions {
    group: Box<str>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    // A group means something only for a route whose callers are known apps.
    match &b.route.group {
        Some(group) if b.route.auth.identifies_app() => {
            Ok(Some(Filter::Permissions(Permissions {
                group: group.as_str().into(),
            })))
        }
        _ => Ok(None),
    }
}

impl Phases for Permissions {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        match ctx.app.as_deref() {
            Some(app) if app.may_call(Some(&self.group)) => Flow::Continue,
            Some(app) => Flow::Respond(
                ProxyError::client(
                    ErrorKind::Forbidden,
                    format!("app {:?} may not call API group {:?}", app.key, self.group),
                )
                .into(),
            ),
            // Only a chain without authentication gets here, and `build` makes none.
            None => Flow::Continue,
        }
    }
}
