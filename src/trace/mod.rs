//! Request identity: the gateway's request ids and W3C trace contexts. Low in the
//! layering (filters, the connection driver and the access log all name a request by
//! them), so it imports only leaves.

pub mod context;
pub mod request_id;

pub use context::TraceContext;
pub use request_id::{RequestId, RequestIdGen};
