//! Per-route filter chains: every capability that decides about a request (who may call,
//! how often, whether the backend can take it, which headers go where) is one filter in
//! one file here, compiled per route from the config generation.
//!
//! The order is the table below, fixed for every route; a route's chain holds the
//! filters its config asks for, in that order. A request runs `on_request` through the
//! chain; a filter may answer it (`Respond`), make it wait for an asynchronous fact
//! without blocking the worker (`Wait`), or ask for the body first (`ReadBody`). The
//! connection driver, the pipeline runner and the upstream exchange know nothing of any
//! particular filter: a new capability is a new file, a config section and a table row.
//!
//! Built-in filters are dispatched through `enum Filter` (no `Box<dyn>`, no boxed
//! futures on the request path).

mod app_records;
mod app_signature;
mod breaker;
mod client_cert;
mod context;
mod cors;
mod fallback;
mod forwarded;
mod headers;
mod ip_allow;
mod isolation;
mod limits;
mod permissions;
mod replay;
mod reply;
mod view;

pub use context::{Env, RequestCtx};
pub use reply::{MadeResponse, Reply};
pub use view::{OwnedRequest, RequestView};

use std::sync::Arc;

use crate::config::{Config, ConfigError, RouteConfig};
use crate::error::ProxyError;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::guard::RouteGuard;

/// What a phase decided.
pub enum Flow {
    /// On to the next filter.
    Continue,
    /// The gateway answers the request itself; later filters and the upstream are skipped.
    Respond(Reply),
    /// A fact is on its way (an app record from Redis, a place in an isolation group):
    /// the runner awaits the filter's `wait`, which decides once it is there.
    Wait,
    /// The filter needs the body before the chain goes on (a signature over its hash):
    /// the driver reads it, up to the route's limit, and calls `on_body`.
    ReadBody,
}

/// Where a route's compiled filter comes from: its config, and the path its problems are
/// reported under (`routes[3]`).
pub struct BuildCtx<'a> {
    pub config: &'a Config,
    pub route: &'a RouteConfig,
    pub index: usize,
    /// The route's breaker state, shared by every worker (built with the generation).
    pub guard: Option<&'a Arc<RouteGuard>>,
    /// The route's isolation group, shared by every worker and the group's routes.
    pub bulkhead: Option<&'a Arc<Bulkhead>>,
}

impl BuildCtx<'_> {
    /// `routes[3].cors.allow_origins`, for a config problem.
    pub fn path(&self, field: &str) -> String {
        format!("routes[{}].{field}", self.index)
    }

    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path(field),
            message: message.into(),
        }
    }
}

type Build = fn(&BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>>;

/// The order of filters, for every route. CORS first: a browser's preflight is answered
/// before anything asks it for credentials or spends its limits. Authentication before
/// authorization and limits (an unsigned request must not spend an app's budget, and
/// only a caller who proved who it is learns what it may not do). The breaker before the
/// isolation group (an open circuit refuses at once instead of queueing). The nonce is
/// recorded only for an authorized call. Header work last, on what the chain decided.
const ORDER: &[(&str, Build)] = &[
    ("cors", cors::build),
    ("app_signature", app_signature::build),
    ("client_cert", client_cert::build),
    ("permissions", permissions::build),
    ("ip_allow", ip_allow::build),
    ("replay", replay::build),
    ("limits", limits::build),
    ("breaker", breaker::build),
    ("isolation", isolation::build),
    ("fallback", fallback::build),
    ("forwarded", forwarded::build),
    ("headers", headers::build),
];

/// The names of the filters in their fixed order (a test holds the README's table to it).
pub fn order() -> impl Iterator<Item = &'static str> {
    ORDER.iter().map(|(name, _)| *name)
}

/// One built-in filter, compiled for one route.
pub enum Filter {
    Cors(cors::Cors),
    AppSignature(app_signature::AppSignature),
    ClientCert(client_cert::ClientCert),
    Permissions(permissions::Permissions),
    IpAllow(ip_allow::IpAllow),
    Replay(replay::Replay),
    Limits(limits::Limits),
    Breaker(breaker::Breaker),
    Isolation(isolation::Isolation),
    Fallback(fallback::Fallback),
    Forwarded(forwarded::Forwarded),
    Headers(headers::Headers),
}

/// Calls `$call` on whichever filter `$f` is.
macro_rules! dispatch {
    ($f:expr, $inner:ident => $call:expr) => {
        match $f {
            Filter::Cors($inner) => $call,
            Filter::AppSignature($inner) => $call,
            Filter::ClientCert($inner) => $call,
            Filter::Permissions($inner) => $call,
            Filter::IpAllow($inner) => $call,
            Filter::Replay($inner) => $call,
            Filter::Limits($inner) => $call,
            Filter::Breaker($inner) => $call,
            Filter::Isolation($inner) => $call,
            Filter::Fallback($inner) => $call,
            Filter::Forwarded($inner) => $call,
            Filter::Headers($inner) => $call,
        }
    };
}

/// The phases of a filter, each with a no-op default: a filter implements only the
/// ones it needs.
#[allow(async_fn_in_trait)] // dispatched statically through `Filter`; never `Send`
pub trait Phases {
    /// Whether the filter implements `drops_request_header` or `on_upstream_request`: the
    /// chain asks only those that do, once per header of every request. Default `true`,
    /// so a filter that forgets to say is slower, never wrong; those without these
    /// phases say `false`.
    const EDITS_REQUEST_HEADERS: bool = true;
    /// Whether the filter implements `drops_response_header` or `on_response`.
    const EDITS_RESPONSE_HEADERS: bool = true;

    /// The request head is known and routed. Default: `Continue`.
    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        _ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        Flow::Continue
    }

    /// Resumes a filter whose `on_request` returned `Wait`: waits for its fact without
    /// blocking the worker, then decides. Default: `Continue`.
    async fn wait<'g>(
        &'g self,
        _req: &RequestView<'_>,
        _ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        Flow::Continue
    }

    /// The whole body, for a filter whose `on_request` returned `ReadBody`. Default:
    /// `Continue`.
    fn on_body<'g>(&'g self, _body: &[u8], _ctx: &mut RequestCtx<'g>, _env: &Env<'g>) -> Flow {
        Flow::Continue
    }

    /// Whether the client's header `name` stays off the upstream request (the filter
    /// replaces it or owns it). Default: kept.
    fn drops_request_header(&self, _name: &str, _req: &RequestView, _ctx: &RequestCtx) -> bool {
        false
    }

    /// Appends header lines (`name: value\r\n`) to the upstream request. Default: none.
    fn on_upstream_request(&self, _req: &RequestView, _ctx: &RequestCtx, _out: &mut Vec<u8>) {}

    /// Whether the upstream's response header `name` stays off the client's response.
    /// Default: kept.
    fn drops_response_header(&self, _name: &str) -> bool {
        false
    }

    /// Appends header lines to the response the client gets, forwarded or made by the
    /// gateway. Default: none.
    fn on_response(&self, _ctx: &RequestCtx, _out: &mut Vec<u8>) {}

    /// The upstream side failed and the client is about to get `error`: a filter may
    /// answer instead (a fallback). Default: `None`.
    fn on_error(&self, _error: &ProxyError, _ctx: &RequestCtx) -> Option<Reply> {
        None
    }

    /// The outcome is known: the response was relayed, or the gateway is about to answer
    /// or drop the request (always runs once the chain started). Default: nothing.
    fn on_done(&self, _ctx: &mut RequestCtx, _env: &Env) {}
}

/// Where `RouteChain::on_request` stopped.
pub enum Step {
    /// Every filter let the request through.
    Forward,
    Respond(Reply),
    /// Filter `at` waits for a fact: await `wait(at, ..)`, then go on from `at + 1`.
    Wait {
        at: usize,
    },
    /// Filter `at` needs the body: read it, then `on_body(at, ..)` and `on_request`
    /// again from `at + 1`.
    ReadBody {
        at: usize,
    },
}

/// A route's filters in the table's order, built once per config generation.
#[derive(Default)]
pub struct RouteChain {
    filters: Vec<Filter>,
    /// Indices of the filters with request header phases, in order (most have none).
    request_editors: Vec<usize>,
    /// Indices of the filters with response header phases, in order.
    response_editors: Vec<usize>,
}

fn edits_request<T: Phases>(_: &T) -> bool {
    T::EDITS_REQUEST_HEADERS
}

fn edits_response<T: Phases>(_: &T) -> bool {
    T::EDITS_RESPONSE_HEADERS
}

impl RouteChain {
    /// Compiles the route's filters; every problem is reported with its path.
    pub fn build(ctx: &BuildCtx) -> Result<RouteChain, Vec<ConfigError>> {
        let mut filters = Vec::new();
        let mut errors = Vec::new();
        for (_, build) in ORDER {
            match build(ctx) {
                Ok(Some(f)) => filters.push(f),
                Ok(None) => {}
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            let editors = |edits: fn(&Filter) -> bool| {
                (0..filters.len()).filter(|&i| edits(&filters[i])).collect()
            };
            Ok(RouteChain {
                request_editors: editors(|f| dispatch!(f, x => edits_request(x))),
                response_editors: editors(|f| dispatch!(f, x => edits_response(x))),
                filters,
            })
        } else {
            Err(errors)
        }
    }

    /// Every route's chain, with the generation's shared protection state (`guards` per
    /// route, `bulkheads` per isolation group); all routes' problems together.
    pub fn build_all(
        config: &Config,
        guards: &[Option<Arc<RouteGuard>>],
        bulkheads: &[Arc<Bulkhead>],
    ) -> Result<Vec<RouteChain>, Vec<ConfigError>> {
        let mut chains = Vec::with_capacity(config.routes.len());
        let mut errors = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            let ctx = BuildCtx {
                config,
                route,
                index,
                guard: guards.get(index).and_then(Option::as_ref),
                bulkhead: route.isolation.and_then(|g| bulkheads.get(g)),
            };
            match RouteChain::build(&ctx) {
                Ok(chain) => chains.push(chain),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(chains)
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs `on_request` from filter `from` on, until a filter answers, waits or needs
    /// the body. Synchronous: the common case never suspends the request.
    pub fn on_request<'g>(
        &'g self,
        from: usize,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Step {
        for (at, f) in self.filters.iter().enumerate().skip(from) {
            match dispatch!(f, x => x.on_request(req, ctx, env)) {
                Flow::Continue => {}
                Flow::Respond(reply) => return Step::Respond(reply),
                Flow::Wait => return Step::Wait { at },
                Flow::ReadBody => return Step::ReadBody { at },
            }
        }
        Step::Forward
    }

    /// Resumes filter `at` after it returned `Wait`. It may wait again (a record that
    /// arrived for another app), answer, or ask for the body.
    pub async fn wait<'g>(
        &'g self,
        at: usize,
        req: &RequestView<'_>,
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Flow {
        match self.filters.get(at) {
            Some(f) => dispatch!(f, x => x.wait(req, ctx, env).await),
            None => Flow::Continue,
        }
    }

    /// Hands the body to the filter that asked for it.
    pub fn on_body<'g>(
        &'g self,
        at: usize,
        body: &[u8],
        ctx: &mut RequestCtx<'g>,
        env: &Env<'g>,
    ) -> Option<Reply> {
        let f = self.filters.get(at)?;
        match dispatch!(f, x => x.on_body(body, ctx, env)) {
            Flow::Respond(reply) => Some(reply),
            Flow::Continue | Flow::Wait | Flow::ReadBody => None,
        }
    }

    fn each<'a>(&'a self, indices: &'a [usize]) -> impl Iterator<Item = &'a Filter> {
        indices.iter().filter_map(|&i| self.filters.get(i))
    }

    pub fn drops_request_header(&self, name: &str, req: &RequestView, ctx: &RequestCtx) -> bool {
        self.each(&self.request_editors)
            .any(|f| dispatch!(f, x => x.drops_request_header(name, req, ctx)))
    }

    pub fn on_upstream_request(&self, req: &RequestView, ctx: &RequestCtx, out: &mut Vec<u8>) {
        for f in self.each(&self.request_editors) {
            dispatch!(f, x => x.on_upstream_request(req, ctx, out));
        }
    }

    pub fn drops_response_header(&self, name: &str) -> bool {
        self.each(&self.response_editors)
            .any(|f| dispatch!(f, x => x.drops_response_header(name)))
    }

    pub fn on_response(&self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        for f in self.each(&self.response_editors) {
            dispatch!(f, x => x.on_response(ctx, out));
        }
    }

    /// The first filter's answer instead of an upstream failure, if any.
    pub fn on_error(&self, error: &ProxyError, ctx: &RequestCtx) -> Option<Reply> {
        self.filters
            .iter()
            .find_map(|f| dispatch!(f, x => x.on_error(error, ctx)))
    }

    pub fn on_done(&self, ctx: &mut RequestCtx, env: &Env) {
        for f in &self.filters {
            dispatch!(f, x => x.on_done(ctx, env));
        }
    }
}

impl std::fmt::Debug for RouteChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteChain({} filters)", self.filters.len())
    }
}

#[cfg(test)]
mod tests {
    /// The README's order table lists the filters as `ORDER` does, in the same order.
    #[test]
    fn the_readme_shows_the_order_table() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let listed: Vec<&str> = readme
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("| ")?;
                let (n, rest) = rest.split_once(" | `")?;
                n.parse::<usize>().ok()?;
                rest.split_once('`').map(|(name, _)| name)
            })
            .collect();
        assert_eq!(listed, super::order().collect::<Vec<_>>());
    }
}
