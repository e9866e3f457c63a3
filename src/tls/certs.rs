//! One certificate chain and its private key from PEM files, checked before it may serve:
//! the files parse, the key is one rustls can sign with (RSA, ECDSA or Ed25519; PKCS#8,
//! SEC1 or PKCS#1), it belongs to the leaf certificate, and the leaf has not expired.
//! Every error names the file at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

/// A certificate ready to serve, with what config, SNI and metrics need to know of it.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The names it serves, lowercase: the configured `names`, else the leaf's DNS
    /// subject alternative names (`*.example.com` wildcards included).
    pub names: Vec<String>,
    /// When the leaf expires, in seconds since the Unix epoch.
    pub not_after: i64,
    pub cert_path: PathBuf,
}

/// The crypto provider every TLS config of the gateway uses: aws-lc-rs, rustls's
/// default (post-quantum hybrid key exchange first, fast AES-GCM and P-256).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads and checks `cert_path` (the full chain, leaf first) and `key_path`. `names`
/// overrides the names taken from the certificate; `now` (Unix seconds) is when expiry
/// is judged.
pub fn load(
    cert_path: &Path,
    key_path: &Path,
    names: Option<&[String]>,
    now: i64,
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let shown = cert_path.display();
    let chain = read_chain(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "{}: no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}",
            key_path.display()
        )
    })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| format!("{shown}: the first certificate does not parse: {e}"))?;
    let not_after = leaf.validity().not_after.timestamp();
    if not_after < now {
        return Err(format!("{shown}: expired on {}", leaf.validity().not_after));
    }
    let names = match names {
        Some(names) => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        None => dns_names(&leaf),
    };
    if names.is_empty() {
        return Err(format!(
            "{shown}: the certificate names no DNS host (no subject alternative name); \
             list the names it serves in `names`"
        ));
    }
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "{}: the key does not fit the certificate {shown}: {e}",
            key_path.display()
        )
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
        cert_path: cert_path.to_path_buf(),
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: unreadable: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{shown}: no certificate in the file"));
    }
    Ok(chain)
}

/// The leaf's DNS subject alternative names, lowercase.
fn dns_names(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
