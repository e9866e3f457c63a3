//! TLS: certificates and keys loaded from PEM files and checked (`certs`), the choice of
//! a certificate by SNI together with the names each one may serve (`sni`), the rustls
//! configs for termination (`server`) and for connections to upstreams (`client`), and
//! a TLS connection over a monoio socket, either side (`conn`), and what a client
//! certificate says of its holder (`identity`). Config validation loads
//! the files, so `ringgate check` and a reload report a broken one with its path while
//! the running certificates stay in service. A leaf: it knows nothing of config,
//! requests or the proxy.

pub mod certs;
pub mod client;
pub mod conn;
pub mod identity;
pub mod server;
pub mod sni;
