//! The rustls server config a set of TLS listeners shares: certificates chosen by SNI,
//! the versions offered (TLS 1.2 and 1.3, or 1.3 only; nothing older exists in rustls),
//! ALPN, and stateless session tickets whose keys rotate (every six hours, the previous
//! key still accepted), so a client resumes its session on any worker. With client
//! certificates, those a given CA issued are verified (optional or required).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::certs::provider;
use super::sni::CertResolver;

/// Whether clients are asked for a certificate, and whom it must chain to.
pub struct ClientAuth {
    pub roots: rustls::RootCertStore,
    /// A client without a certificate fails the handshake (else it is let in, and a
    /// route that needs one answers 401).
    pub required: bool,
}

/// Builds the shared server config. `tls13_only`: offer TLS 1.3 alone.
pub fn server_config(
    resolver: Arc<CertResolver>,
    tls13_only: bool,
    alpn: &[String],
    client_auth: Option<ClientAuth>,
) -> Result<ServerConfig, String> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(auth.roots), provider());
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(config)
}
