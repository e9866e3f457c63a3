//! The rustls client config for TLS to one upstream: whom to trust (a private CA file, or
//! the host's system roots), the certificate the gateway shows when the upstream asks for
//! one, TLS 1.2 and 1.3, ALPN `http/1.1`. Verification of the upstream's certificate is
//! always on: there is no switch to turn it off. Built once per config generation and
//! shared by every worker (rustls keeps its session cache inside, so reconnects resume).

use std::path::Path;

use rustls::{ClientConfig, RootCertStore};

use super::certs::{load_pair, provider, read_certs};

/// Builds the config. `ca`: a PEM file of the roots to trust (`None`: the system's);
/// `identity`: the client certificate chain and key files, if the upstream wants one;
/// `now` (Unix seconds) judges the client certificate's expiry.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    now: i64,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let roots = match ca {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let pair = load_pair(cert, key, now, &provider)?;
            builder
                .with_client_auth_cert(pair.chain, pair.key)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CA certificates in a PEM file, as roots to verify peers against.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The host's trusted roots (on Debian, `/etc/ssl/certs` from `ca-certificates`).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none installed".to_string(), |e| e.to_string());
        return Err(format!(
            "no system CA roots could be loaded ({why}); install ca-certificates or set `ca`"
        ));
    }
    Ok(roots)
}
