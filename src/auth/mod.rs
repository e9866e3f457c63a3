//! App authentication: the `RG-HMAC-SHA256` signature scheme, replay protection shared
//! by all workers, and the checks of a request against the app registry and its IP allow
//! lists (whose records are config data: `config::apps`, `config::cidr`).

pub mod bloom;
pub mod cache;
pub mod check;
pub mod client;
pub mod directory;
mod fleet_conn;
pub mod fleet_nonces;
mod fleet_resp;
pub mod nonce;
pub mod sign;
pub mod store;

/// The app registry (records, secrets, allow lists) is plain config data, loaded and
/// validated with the config generation; these keep its old paths.
pub use crate::config::apps as registry;
pub use crate::config::cidr;
