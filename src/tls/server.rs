//! The rustls server config a set of TLS listeners shares: certificates chosen by SNI,
//! the versions offered (TLS 1.2 and 1.3, or 1.3 only; nothing older exists in rustls),
//! ALPN, and stateless session tickets whose keys rotate (every six hours, the previous
//! key still accepted), so a client resumes its session on any worker.

use std::sync::Arc;

use rustls::ServerConfig;

use super::certs::provider;
use super::sni::CertResolver;

/// Builds the shared server config. `tls13_only`: offer TLS 1.3 alone.
pub fn server_config(
    resolver: Arc<CertResolver>,
    tls13_only: bool,
    alpn: &[String],
) -> Result<ServerConfig, String> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(config)
}
