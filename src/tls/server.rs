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

/// What a set of TLS listeners offers.
pub struct Offer<'a> {
    /// TLS 1.3 alone (else 1.3 and 1.2).
    pub tls13_only: bool,
    pub alpn: &'a [String],
    pub client_auth: Option<ClientAuth>,
    /// Session resumption (tickets, and TLS 1.2 session ids); off: every connection is a
    /// full handshake.
    pub resumption: bool,
}

/// Builds the shared server config.
pub fn server_config(
    resolver: Arc<CertResolver>,
    offer: Offer<'_>,
) -> Result<ServerConfig, String> {
    let Offer {
        tls13_only,
        alpn,
        client_auth,
        resumption,
    } = offer;
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
    if !resumption {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        return Ok(config);
    }
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    // One TLS 1.3 ticket per handshake (rustls's default is 2, on resumptions too): each
    // resumed connection brings a fresh one, and API clients seldom open two connections
    // at once from one session. Every ticket costs the client a session object: wrk with
    // resumed handshakes spent ~10% more CPU per connection on two (benches/load/RESULTS.md).
    config.send_tls13_tickets = 1;
    Ok(config)
}
