//! Client certificates (`auth = "mtls"`): the caller proved who it is in the TLS
//! handshake with a certificate the `[tls] client_ca` issued; the app whose record
//! registers that certificate (by SHA-256 fingerprint, else by subject) is the caller.
//! Permission groups, IP allow lists and per-app limits then apply as for a signed call.
//! The certificate was verified once per connection; per request this is two hash
//! lookups.

use std::sync::Arc;

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::auth::registry::AppRegistry;
use crate::config::{AuthMode, ConfigError};
use crate::error::{ErrorKind, ProxyError};

pub struct ClientCert {
    registry: Arc<AppRegistry>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok((b.route.auth == AuthMode::Mtls).then(|| {
        Filter::ClientCert(ClientCert {
            registry: b.config.apps.registry.clone(),
        })
    }))
}

fn unauthorized(message: &'static str) -> Flow {
    Flow::Respond(ProxyError::client(ErrorKind::Unauthorized, message).into())
}

impl Phases for ClientCert {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        let Some(identity) = ctx.tls.as_ref().and_then(|t| t.client.as_ref()) else {
            return unauthorized("this API needs a client certificate (HTTPS with a certificate the gateway's client CA issued)");
        };
        let Some(app) = self.registry.by_certificate(identity) else {
            return unauthorized("the client certificate is not registered to any app");
        };
        if !app.enabled {
            return unauthorized("app is disabled");
        }
        ctx.app = Some(app.clone());
        Flow::Continue
    }
}
