//! Client certificates (`auth = "mtls"`): the caller proved who it is in the TLS
//! handshake with a certificate the `[tls] client_ca` issued; the app whose record
//! registers that certificate (by SHA-256 fingerprint, else by subject) is the caller.
//! Permission groups, IP allow lists and per-app limits then apply as for a signed call.
//! The certificate was verified once per connection; per request this is a hash lookup
//! or two (in the apps file's registry, or the worker's cache of the Redis registry,
//! where a certificate not cached yet makes the request `Wait` for the control side).

use std::sync::Arc;
use std::time::Instant;

use super::app_records::{registry_unavailable, wait_and_retry};
use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::auth::cache::Lookup;
use crate::auth::registry::{App, AppRegistry};
use crate::auth::store::cert_lookup_keys;
use crate::config::{AppsSource, AuthMode, ConfigError};
use crate::error::{ErrorKind, ProxyError};
use crate::tls::identity::ClientIdentity;

pub struct ClientCert {
    /// The apps file's registry; `None`: records come from the worker's Redis cache.
    registry: Option<Arc<AppRegistry>>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    let apps = &b.config.apps;
    Ok((b.route.auth == AuthMode::Mtls).then(|| {
        Filter::ClientCert(ClientCert {
            registry: match apps.source {
                AppsSource::File => Some(apps.registry.clone()),
                AppsSource::Redis { .. } => None,
            },
        })
    }))
}

fn unauthorized(message: &'static str) -> Flow {
    Flow::Respond(ProxyError::client(ErrorKind::Unauthorized, message).into())
}

impl ClientCert {
    /// The app registered to `id`, or what stands in its way.
    fn app(
        &self,
        id: &ClientIdentity,
        ctx: &RequestCtx,
        env: &Env,
    ) -> Result<Option<Arc<App>>, Flow> {
        if let Some(registry) = &self.registry {
            return Ok(registry.by_certificate(id).cloned());
        }
        let Some(apps) = env.apps else {
            return Ok(None);
        };
        let first_try = ctx.held.app_deadline.is_none();
        for key in cert_lookup_keys(id) {
            match apps.lookup(&key, Instant::now(), first_try) {
                Lookup::Found(app) => return Ok(Some(app)),
                Lookup::Unknown => continue,
                Lookup::Fetching => return Err(Flow::Wait),
                Lookup::Unavailable => {
                    return Err(registry_unavailable(
                        "the app registry is unavailable; try again shortly",
                    ))
                }
            }
        }
        Ok(None)
    }
}

impl Phases for ClientCert {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let Some(identity) = ctx.tls.as_ref().and_then(|t| t.client.clone()) else {
            return unauthorized("this API needs a client certificate (HTTPS with a certificate the gateway's client CA issued)");
        };
        let app = match self.app(&identity, ctx, env) {
            Ok(Some(app)) => app,
            Ok(None) => return unauthorized("the client certificate is not registered to any app"),
            Err(flow) => return flow,
        };
        if !app.enabled {
            return unauthorized("app is disabled");
        }
        ctx.app = Some(app);
        Flow::Continue
    }

    async fn wait<'g>(
        &'g self,
        req: &RequestView<'_>,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        wait_and_retry(self, req, ctx, env).await
    }
}
