//! What the driver and the upstream exchange know about a request once its route's chain
//! has let it through: its framing (HTTP/1.1 facts), its route and upstream, and the
//! chain with the context its filters filled in.

use crate::config::UpstreamId;
use crate::filters::{RequestCtx, RouteChain};
use crate::http::headers::ConnectionOptions;
use crate::http::Framing;
use crate::router::RouteId;

pub struct Request<'g> {
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub is_head: bool,
    /// Safe to send twice (RFC 9110 9.2.2) when it carries no body.
    pub retry_safe: bool,
    pub http10: bool,
    /// What the client's `Connection` header said (which headers are hop-by-hop).
    pub connection: ConnectionOptions,
    /// The method as a metrics label index (`metrics::METHODS`).
    pub method: u8,
    pub route: RouteId,
    pub upstream: UpstreamId,
    /// For `hash` balancing (0 otherwise).
    pub hash_key: u64,
    pub max_body: u64,
    pub chain: &'g RouteChain,
    pub ctx: RequestCtx<'g>,
}
