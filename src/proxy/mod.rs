//! Connection driver, routing, path normalization, upstream pools and balancing.

mod access;
pub mod balance;
mod buffered;
pub mod conn;
mod fallback;
mod forward;
pub mod io;
mod isolation;
pub mod normalize;
pub mod prepare;
mod relay;
pub mod request_id;
mod response_head;
pub mod router;
pub mod signal;
mod signed_body;
mod targets;
pub mod trace;
pub mod upstream;
pub mod worker;

pub use forward::After;
pub use worker::WorkerCtx;
