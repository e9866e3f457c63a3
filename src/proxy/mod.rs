//! The HTTP/1.1 data plane: the connection driver (`conn`), the pipeline runner that
//! routes a head and runs its route's filter chain (`pipeline`), forwarding with target
//! choice and retries (`forward`), one upstream attempt (`exchange`, with the pools in
//! `upstream` and target health in `targets`), and the gateway's own responses
//! (`respond`). None of them imports its caller. Route matching is
//! `crate::router`, path normalization `crate::http::normalize`.

mod access;
pub mod balance;
mod body_pace;
mod buffered;
mod client;
pub mod conn;
mod exchange;
mod forward;
pub mod io;
mod parked;
pub mod pipeline;
mod preface;
mod relay;
mod request;
mod respond;
mod response_head;
mod targets;
pub mod tls_accept;
pub mod upstream;
mod upstream_head;
pub mod wire;
pub mod worker;

pub use client::After;
pub use worker::WorkerCtx;
