//! One certificate chain and its private key from PEM files, checked before it may serve:
//! the files parse, the key is one rustls can sign with (RSA, ECDSA or Ed25519; PKCS#8,
//! SEC1 or PKCS#1), it belongs to the leaf certificate, and the leaf has not expired.
//! Every error names the file at fault.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::files::read_bounded;

/// The largest certificate, key or CA file read (a CA bundle of every public root is
/// about 200 KiB).
const MAX_PEM_FILE: u64 = 4 << 20;

/// A certificate ready to serve, with what config, SNI and metrics need to know of it.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The names it serves, lowercase: the configured `names`, else the leaf's DNS
    /// subject alternative names (`*.example.com` wildcards included).
    pub names: Vec<String>,
    /// The addresses it serves: the configured `names` that are IP addresses, else the
    /// leaf's IP address subject alternative names. A client that reaches the gateway by
    /// address (no SNI, `Host: 203.0.113.5`) is served by it.
    pub ips: Vec<IpAddr>,
    /// When the leaf expires, in seconds since the Unix epoch.
    pub not_after: i64,
    pub cert_path: PathBuf,
}

/// The crypto provider every TLS config of the gateway uses: aws-lc-rs, rustls's
/// default (post-quantum hybrid key exchange first, fast AES-GCM and P-256).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes [`provider`] the process's default, for libraries that build their rustls
/// configs with the default (the redis crate's TLS); with two providers compiled in,
/// rustls has no default of its own. Idempotent.
pub fn install_default_provider() {
    // An error: a default is installed already (by an earlier call).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
    let pair = load_pair(cert_path, key_path, now, provider)?;
    // Configured `names` replace the certificate's, addresses included.
    let (names, ips) = match names {
        Some(names) => names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .partition::<Vec<_>, _>(|n| n.parse::<IpAddr>().is_err()),
        None => {
            let (dns, ips) = san_names(&pair.chain[0]);
            (dns, ips.iter().map(IpAddr::to_string).collect())
        }
    };
    let ips: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    if names.is_empty() && ips.is_empty() {
        return Err(format!(
            "{}: the certificate names no host (no subject alternative name); \
             list the names it serves in `names`",
            cert_path.display()
        ));
    }
    Ok(LoadedCert {
        key: pair.certified,
        names,
        ips,
        not_after: pair.not_after,
        cert_path: cert_path.to_path_buf(),
    })
}

/// A chain and its key, checked: what `load` serves, and what the gateway shows an
/// upstream that asks for a client certificate.
pub struct KeyPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub certified: Arc<CertifiedKey>,
    /// When the leaf expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Loads `cert_path` (the chain, leaf first) and `key_path`, and checks that the key fits
/// the leaf and that the leaf has not expired at `now`.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    now: i64,
    provider: &CryptoProvider,
) -> Result<KeyPair, String> {
    let shown = cert_path.display();
    let chain = read_certs(cert_path)?;
    let key_pem = read_bounded(key_path, MAX_PEM_FILE)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}",
            key_path.display()
        )
    })?;
    let not_after = not_after(&chain[0])
        .map_err(|e| format!("{shown}: the first certificate does not parse: {e}"))?;
    if not_after < now {
        let date = x509_parser::time::ASN1Time::from_timestamp(not_after)
            .map_or_else(|_| not_after.to_string(), |t| t.to_string());
        return Err(format!("{shown}: expired on {date}"));
    }
    let certified =
        CertifiedKey::from_der(chain.clone(), key.clone_key(), provider).map_err(|e| {
            format!(
                "{}: the key does not fit the certificate {shown}: {e}",
                key_path.display()
            )
        })?;
    Ok(KeyPair {
        chain,
        key,
        certified: Arc::new(certified),
        not_after,
    })
}

/// When `cert` expires, in seconds since the Unix epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    Ok(parsed.validity().not_after.timestamp())
}

/// Every certificate in a PEM file (at least one): a chain, or a set of CA roots.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = read_bounded(path, MAX_PEM_FILE)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{shown}: no certificate in the file"));
    }
    Ok(chain)
}

/// The leaf's subject alternative names: DNS names (lowercase) and IP addresses.
fn san_names(leaf: &CertificateDer<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
        return (dns, ips);
    };
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return (dns, ips);
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(name) => dns.push(name.to_ascii_lowercase()),
            GeneralName::IPAddress(&[a, b, c, d]) => ips.push(IpAddr::from([a, b, c, d])),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    ips.push(IpAddr::from(v6));
                }
            }
            _ => {}
        }
    }
    (dns, ips)
}

impl LoadedCert {
    /// How metrics name it: its first name, else its first address.
    pub fn label(&self) -> String {
        match (self.names.first(), self.ips.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}
