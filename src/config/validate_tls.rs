//! `[tls]`: HTTPS listeners, the oldest version offered, ALPN, and the certificates,
//! each loaded and checked here so that `ringgate check` and a reload name a broken file
//! (unreadable, not PEM, a key that does not fit, an expired certificate) with its path.
//! Also an upstream's TLS settings (`tls`, `sni`, `ca`, `cert`, `key`), whose files are
//! checked the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::file::{FileConfig, ListenFile, UpstreamFile};
use super::model::{ClientAuthMode, ListenConfig, TlsConfig, TlsVersion, UpstreamTls};
use super::problems::{identity_files, resolve, Problems};
use crate::tls::certs::{load, provider};
use crate::tls::client::{client_config, roots_from_file};
use crate::tls::server::ClientAuth;
use crate::tls::server::{server_config, Offer};
use crate::tls::sni::CertResolver;

/// Protocols a TLS listener may announce with ALPN today (`h2` joins with HTTP/2).
const SERVED_ALPN: &[&str] = &["http/1.1"];

pub(super) fn validate_tls(
    p: &mut Problems,
    file: &FileConfig,
    base_dir: Option<&Path>,
    plain: &[ListenConfig],
) -> Option<TlsConfig> {
    let t = file.tls.as_ref()?;
    let errors_before = p.0.len();
    if t.listen.is_empty() {
        p.add("tls.listen", "at least one address is required");
    }
    let mut listen: Vec<ListenConfig> = Vec::new();
    for (i, entry) in t.listen.iter().enumerate() {
        let (addr, proxy_protocol) = match entry {
            ListenFile::Addr(a) => (a, false),
            ListenFile::Table(t) => (&t.addr, t.proxy_protocol.unwrap_or(false)),
        };
        let path = format!("tls.listen[{i}]");
        let Some(addr) = p.socket_addr(&path, addr) else {
            continue;
        };
        let taken = addr.port() != 0
            && (plain.iter().any(|l| l.addr == addr) || listen.iter().any(|l| l.addr == addr));
        if taken {
            p.add(path, format!("{addr} is already a listener"));
            continue;
        }
        listen.push(ListenConfig {
            addr,
            proxy_protocol,
            tls: true,
        });
    }
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            p.add(
                "tls.min_version",
                format!("{other:?}: must be \"1.2\" or \"1.3\" (nothing older is offered)"),
            );
            TlsVersion::Tls12
        }
    };
    let alpn = t
        .alpn
        .clone()
        .unwrap_or_else(|| vec!["http/1.1".to_string()]);
    for (i, proto) in alpn.iter().enumerate() {
        if !SERVED_ALPN.contains(&proto.as_str()) {
            p.add(
                format!("tls.alpn[{i}]"),
                format!("{proto:?} is not served (served: \"http/1.1\")"),
            );
        }
    }
    if t.certs.is_empty() {
        p.add("tls.certs", "at least one [[tls.certs]] entry is required");
    }
    let now = unix_now();
    let provider = provider();
    let mut certs = Vec::new();
    for (i, c) in t.certs.iter().enumerate() {
        if let Some(names) = &c.names {
            if names.is_empty() || names.iter().any(|n| !valid_name(n)) {
                p.add(
                    format!("tls.certs[{i}].names"),
                    "host names such as \"api.example.com\" or \"*.example.com\", at least one",
                );
                continue;
            }
        }
        match load(
            &resolve(base_dir, &c.cert),
            &resolve(base_dir, &c.key),
            c.names.as_deref(),
            now,
            &provider,
        ) {
            Ok(loaded) => certs.push(loaded),
            Err(e) => p.add(format!("tls.certs[{i}]"), e),
        }
    }
    let (client_auth_mode, client_auth) = validate_client_auth(p, t, base_dir);
    if p.0.len() > errors_before {
        return None;
    }
    let resolver = Arc::new(CertResolver::new(&certs));
    let tls13_only = min_version == TlsVersion::Tls13;
    let offer = Offer {
        tls13_only,
        alpn: &alpn,
        client_auth,
        resumption: t.session_resumption.unwrap_or(true),
    };
    match server_config(resolver.clone(), offer) {
        Ok(server) => Some(TlsConfig {
            client_auth: client_auth_mode,
            listen,
            min_version,
            alpn,
            certs: Arc::new(certs),
            resolver,
            server: Arc::new(server),
        }),
        Err(e) => {
            p.add("tls", e);
            None
        }
    }
}

/// `client_ca` and `client_auth`: whether clients are asked for a certificate, and the
/// roots it must chain to.
fn validate_client_auth(
    p: &mut Problems,
    t: &super::file::TlsFile,
    base_dir: Option<&Path>,
) -> (ClientAuthMode, Option<ClientAuth>) {
    let required = match t.client_auth.as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            p.add(
                "tls.client_auth",
                format!("{other:?}: must be \"optional\" or \"required\""),
            );
            false
        }
    };
    let Some(ca) = &t.client_ca else {
        if t.client_auth.is_some() {
            p.add(
                "tls.client_auth",
                "needs `client_ca`, the CA that issues client certificates",
            );
        }
        return (ClientAuthMode::Off, None);
    };
    match roots_from_file(&resolve(base_dir, ca)) {
        Ok(roots) => {
            let mode = if required {
                ClientAuthMode::Required
            } else {
                ClientAuthMode::Optional
            };
            (mode, Some(ClientAuth { roots, required }))
        }
        Err(e) => {
            p.add("tls.client_ca", e);
            (ClientAuthMode::Off, None)
        }
    }
}

/// A DNS name, or a `*.` wildcard over one: letters, digits, `-` and `.`.
fn valid_name(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && bare.len() <= 253
        && bare
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// An upstream's TLS: `tls = true` with an optional `sni` (a DNS name), `ca` (a PEM file
/// of roots; default: the system's) and client `cert` + `key`.
pub(super) fn validate_upstream_tls(
    p: &mut Problems,
    i: usize,
    u: &UpstreamFile,
    base_dir: Option<&Path>,
) -> Option<UpstreamTls> {
    let at = |field: &str| format!("upstreams[{i}].{field}");
    if u.tls != Some(true) {
        for (field, set) in [
            ("sni", u.sni.is_some()),
            ("ca", u.ca.is_some()),
            ("cert", u.cert.is_some()),
            ("key", u.key.is_some()),
        ] {
            if set {
                p.add(at(field), "only applies with tls = true");
            }
        }
        return None;
    }
    let errors_before = p.0.len();
    let sni = match u.sni.as_deref() {
        None => None,
        Some(name) if valid_name(name) && !name.starts_with("*.") => {
            match rustls::pki_types::ServerName::try_from(name.to_ascii_lowercase()) {
                Ok(n) => Some(n),
                Err(e) => {
                    p.add(at("sni"), format!("{name:?}: {e}"));
                    None
                }
            }
        }
        Some(name) => {
            p.add(
                at("sni"),
                format!("{name:?}: a host name such as \"billing.internal\" is expected"),
            );
            None
        }
    };
    let identity = identity_files(p, &at, &u.cert, &u.key, base_dir);
    if p.0.len() > errors_before {
        return None;
    }
    let ca = u.ca.as_deref().map(|f| resolve(base_dir, f));
    let identity_paths = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    match client_config(ca.as_deref(), identity_paths, unix_now()) {
        Ok(client) => Some(UpstreamTls {
            sni,
            client: Arc::new(client),
            settings: settings_digest(u.sni.as_deref(), ca.as_deref(), identity_paths),
        }),
        Err(e) => {
            p.add(at("tls"), e);
            None
        }
    }
}

/// What an upstream's TLS connections were made with: the name, and the contents (not
/// only the paths) of the CA, certificate and key files. A reload keeps pooled
/// connections only while it is the same: a CA removed from its file at the same path
/// must not leave connections it verified in service.
fn settings_digest(
    sni: Option<&str>,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sni.unwrap_or("").as_bytes());
    let (cert, key) = identity.unzip();
    for file in [ca, cert, key] {
        // Each part framed by its length, so no two different settings hash alike.
        // (Read and checked already by `client_config`; a failure here is a change since.)
        let bytes = file
            .and_then(|f| crate::files::read_bounded(f, 4 << 20).ok())
            .unwrap_or_default();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
