//! IP allow lists: an app whose record names addresses (`allow_ips`, CIDR blocks) may
//! call only from them. Runs after the app signature, on the client address the
//! connection driver determined.

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::error::{ErrorKind, ProxyError};

pub struct IpAllow;

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(b.route
        .auth
        .identifies_app()
        .then_some(Filter::IpAllow(IpAllow)))
}

impl Phases for IpAllow {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        match ctx.app.as_deref() {
            Some(app) if !app.ip_allowed(req.client_ip) => Flow::Respond(
                ProxyError::client(
                    ErrorKind::Forbidden,
                    format!(
                        "address {} is not in the allow list of app {:?}",
                        req.client_ip, app.key
                    ),
                )
                .into(),
            ),
            _ => Flow::Continue,
        }
    }
}
