//! TLS helpers for tests: self-signed certificates written to a directory (rcgen) and
//! rustls client configs that trust exactly the given certificates.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A self-signed ECDSA P-256 certificate for `names`, valid from 2020 to `until_year`,
/// written as `<tag>.pem` and `<tag>.key` in `dir`; returns its DER.
pub fn make_cert(
    dir: &Path,
    tag: &str,
    names: &[&str],
    until_year: i32,
) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{tag}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{tag}.key")), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// A client trusting `trusted`, offering TLS 1.2 only or 1.3 and 1.2, and `alpn`.
pub fn client(
    trusted: &[&CertificateDer<'static>],
    tls12_only: bool,
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}
