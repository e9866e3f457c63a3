//! The HTTP/1.1 data plane: the connection driver (`conn`), the pipeline runner that
//! routes a head and runs its route's filter chain (`pipeline`), the upstream exchange
//! (`exchange`, with pools, balancing and target health), and the gateway's own
//! responses (`respond`). None of them imports its caller.

mod access;
pub mod balance;
mod buffered;
mod client;
pub mod conn;
mod exchange;
pub mod io;
pub mod normalize;
pub mod pipeline;
mod relay;
mod request;
mod respond;
mod response_head;
pub mod router;
pub mod signal;
mod targets;
pub mod upstream;
mod upstream_head;
pub mod worker;

pub use client::After;
pub use worker::WorkerCtx;
