//! Connection driver, upstream pools and balancing (route matching is `crate::router`,
//! path normalization `crate::http::normalize`).

mod access;
pub mod balance;
mod buffered;
pub mod conn;
mod fallback;
mod forward;
pub mod io;
mod isolation;
pub mod prepare;
mod relay;
pub mod request_id;
mod response_head;
mod signed_body;
mod targets;
pub mod trace;
pub mod upstream;
pub mod worker;

pub use forward::After;
pub use worker::WorkerCtx;
