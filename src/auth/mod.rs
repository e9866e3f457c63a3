//! App authentication: the app registry, the `RG-HMAC-SHA256` signature scheme, replay
//! protection shared by all workers, and IP allow lists.

pub mod bloom;
pub mod cache;
pub mod check;
pub mod cidr;
pub mod client;
pub mod directory;
pub mod nonce;
pub mod registry;
pub mod sign;
pub mod store;
