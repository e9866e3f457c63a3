//! App signatures (`auth = "hmac"`): the caller names its app (`X-Rg-Key`) and signs the
//! request with one of the app's secrets (`RG-HMAC-SHA256` over method, normalized path,
//! canonical query, timestamp, nonce and the body's SHA-256).
//!
//! `on_request` checks what the head decides (credentials well formed, app known and
//! enabled, timestamp in the window). Without a body the signature is verified at once;
//! with one the filter asks for the body (`ReadBody`) and verifies in `on_body`, so
//! nothing reaches the upstream, and no later filter spends anything, before the
//! signature checks out. An app record still on its way from Redis makes the request
//! `Wait` without blocking the worker. On success the app goes into the context, the
//! upstream gets the query exactly as signed, and the nonce waits for the replay filter.

use std::sync::Arc;
use std::time::Instant;

use super::app_records::{registry_unavailable, wait_and_retry};
use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::auth::cache::Lookup;
use crate::auth::check::{self, unix_now, Pending, SignedParts};
use crate::auth::registry::{App, AppRegistry};
use crate::auth::sign::body_sha256_hex;
use crate::config::{AppsSource, AuthMode, ConfigError};

/// SHA-256 of the empty body, lowercase hex.
pub const EMPTY_BODY_SHA256: [u8; 64] =
    *b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct AppSignature {
    window_secs: u64,
    /// The apps file's registry; `None`: records come from the worker's Redis cache.
    registry: Option<Arc<AppRegistry>>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    if b.route.auth != AuthMode::Hmac {
        return Ok(None);
    }
    let apps = &b.config.apps;
    Ok(Some(Filter::AppSignature(AppSignature {
        window_secs: apps.timestamp_window.as_secs(),
        registry: match apps.source {
            AppsSource::File => Some(apps.registry.clone()),
            AppsSource::Redis { .. } => None,
        },
    })))
}

impl AppSignature {
    /// The record for the claimed key, or what stands in its way.
    fn app(&self, key: &str, ctx: &RequestCtx, env: &Env) -> Result<Option<Arc<App>>, Flow> {
        if let Some(registry) = &self.registry {
            return Ok(registry.get(key).cloned());
        }
        let first_try = ctx.held.app_deadline.is_none();
        match env.apps.map(|a| a.lookup(key, Instant::now(), first_try)) {
            Some(Lookup::Found(app)) => Ok(Some(app)),
            Some(Lookup::Unknown) | None => Ok(None),
            Some(Lookup::Fetching) => Err(Flow::Wait),
            Some(Lookup::Unavailable) => Err(registry_unavailable(
                "the app registry is unavailable; try again shortly",
            )),
        }
    }

    /// Verifies the signature over the body's hash; the nonce is left for the replay
    /// filter, after authorization.
    fn finish(&self, pending: Pending, body_sha256: &[u8; 64], ctx: &mut RequestCtx) -> Flow {
        match pending.verify(body_sha256, unix_now()) {
            Ok((app, claim)) => {
                ctx.app = Some(app);
                ctx.held.nonce = Some(claim);
                Flow::Continue
            }
            Err(e) => Flow::Respond(e.into()),
        }
    }
}

impl Phases for AppSignature {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        let key = match check::app_key(req.headers) {
            Ok(key) => key,
            Err(e) => return Flow::Respond(e.into()),
        };
        let app = match self.app(key, ctx, env) {
            Ok(app) => app,
            Err(flow) => return flow,
        };
        let parts = SignedParts {
            method: req.method,
            path: req.path,
            query: req.query.unwrap_or(""),
            headers: req.headers,
        };
        let now = unix_now();
        let pending = match check::begin(&parts, app, self.window_secs, now) {
            Ok(p) => p,
            Err(e) => return Flow::Respond(e.into()),
        };
        // Always set on a signed route, empty when nothing was signed: the upstream never
        // sees a raw query the signature did not cover.
        let query = pending.canonical_query();
        ctx.forward_query = Some(if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        });
        if req.has_body {
            ctx.held.signature = Some(Box::new(pending));
            return Flow::ReadBody;
        }
        self.finish(pending, &EMPTY_BODY_SHA256, ctx)
    }

    async fn wait<'g>(
        &'g self,
        req: &RequestView<'_>,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        wait_and_retry(self, req, ctx, env).await
    }

    fn on_body<'g>(&'g self, body: &[u8], ctx: &mut RequestCtx<'g>, _env: &Env<'g>) -> Flow {
        match ctx.held.signature.take() {
            Some(pending) => self.finish(*pending, &body_sha256_hex(body), ctx),
            None => Flow::Continue,
        }
    }
}
