//! TLS material for termination: certificates and keys loaded from PEM files and checked
//! (`certs`), and the choice of a certificate by SNI together with the names each one
//! may serve (`sni`). Config validation loads them, so `ringgate check` and a reload
//! report a broken file with its path while the running certificates stay in service.
//! A leaf: it knows nothing of config, connections or requests.

pub mod certs;
pub mod conn;
pub mod server;
pub mod sni;
