//! What filters share about one request (`RequestCtx`) and what they may use of the
//! worker they run on (`Env`). Facts go into the context once, typed, where later filters
//! and the access log read them; nothing is passed through the connection.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::cache::WorkerApps;
use crate::auth::check::{NonceClaim, Pending};
use crate::auth::fleet_nonces::FleetNonces;
use crate::auth::nonce::NonceCache;
use crate::auth::registry::App;
use crate::limits::headers::HeaderWriter;
use crate::limits::worker::WorkerLimiter;
use crate::mix::WorkerRng;
use crate::resilience::bulkhead::{Permit, Waiting};
use crate::resilience::guard::{Outcome, Ticket};
use crate::router::RouteId;
use crate::tls::conn::TlsFacts;
use crate::trace::{RequestId, RequestIdGen, TraceContext};

/// The worker-owned state filters use, borrowed for one request. Built by the
/// connection driver from its worker; filters never see the driver itself.
#[derive(Clone, Copy)]
pub struct Env<'g> {
    pub ids: &'g RequestIdGen,
    /// Replay protection, shared by every worker.
    pub nonces: &'g NonceCache,
    /// With `[cluster]`: claims nonces for every gateway sharing the Redis.
    pub fleet_nonces: Option<&'g FleetNonces>,
    /// The worker's cache of the Redis-backed app registry (`None` with an apps file).
    pub apps: Option<&'g WorkerApps>,
    /// The worker's rate-limit buckets and quota grants.
    pub limiter: &'g WorkerLimiter,
    pub rng: &'g WorkerRng,
}

/// One request's facts, from its route onwards. `'g`: the config generation it is
/// served by (a bulkhead permit borrows that generation's group).
pub struct RequestCtx<'g> {
    pub route: RouteId,
    /// The client's address, as the connection driver determined it.
    pub client_ip: IpAddr,
    pub request_id: RequestId,
    /// The W3C trace this request belongs to (continued or started by the gateway).
    pub trace: Option<TraceContext>,
    /// The app that signed the request (app signature filter).
    pub app: Option<Arc<App>>,
    /// The query the upstream gets instead of the raw one: exactly what was signed.
    pub forward_query: Option<String>,
    /// The request's `Origin`, when the route's CORS policy allows it.
    pub cors_origin: Option<Box<str>>,
    /// The route's RateLimit headers for the response (empty without limits).
    pub limit_headers: HeaderWriter,
    /// How the upstream exchange ended (`Neutral` until one did).
    pub outcome: Outcome,
    /// What the connection's TLS handshake settled (`None`: plain HTTP).
    pub tls: Option<Rc<TlsFacts>>,
    /// Filter-private state carried between phases.
    pub(super) held: Held<'g>,
}

/// State a filter keeps from one phase to a later one of the same request.
#[derive(Default)]
pub(super) struct Held<'g> {
    /// A signature waiting for the body's hash.
    pub signature: Option<Box<Pending>>,
    /// A verified request's nonce, recorded by the replay filter after authorization.
    pub nonce: Option<NonceClaim>,
    /// Until when a request may wait for its app record (one deadline across waits).
    pub app_deadline: Option<Instant>,
    /// The route breaker's admission, handed back with the outcome in `on_done`.
    pub ticket: Option<Ticket>,
    /// A place in the isolation group, held until the request is over.
    pub permit: Option<Permit<'g>>,
    /// A place in the isolation group's queue, while waiting for a permit.
    pub queued: Option<Waiting<'g>>,
}

impl<'g> RequestCtx<'g> {
    pub fn new(route: RouteId, request_id: RequestId, client_ip: IpAddr) -> Self {
        RequestCtx {
            route,
            client_ip,
            request_id,
            trace: None,
            app: None,
            forward_query: None,
            cors_origin: None,
            limit_headers: HeaderWriter::default(),
            outcome: Outcome::Neutral,
            tls: None,
            held: Held::default(),
        }
    }

    /// The authenticated app's key, if any.
    pub fn app_key(&self) -> Option<&str> {
        self.app.as_deref().map(|a| a.key.as_str())
    }
}
