//! Which certificate a TLS connection gets, by the name the client asked for (SNI): an
//! exact name first, then a `*.` wildcard covering exactly one more label, then the first
//! certificate as the default. The same names decide whether a request's `Host` belongs
//! to the connection's certificate: one that does not is answered 421, so one tenant's
//! certificate never fronts another tenant's host.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

#[derive(Debug)]
pub struct CertResolver {
    keys: Vec<Arc<CertifiedKey>>,
    names: Vec<Vec<String>>,
    ips: Vec<Vec<IpAddr>>,
    /// Exact name -> certificate; the first certificate naming it wins.
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com` -> certificate.
    wildcard: HashMap<String, usize>,
}

impl CertResolver {
    /// Over `certs` in config order; `certs` must not be empty.
    pub fn new(certs: &[LoadedCert]) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        CertResolver {
            keys: certs.iter().map(|c| c.key.clone()).collect(),
            names: certs.iter().map(|c| c.names.clone()).collect(),
            ips: certs.iter().map(|c| c.ips.clone()).collect(),
            exact,
            wildcard,
        }
    }

    /// The certificate for a client that asked for `sni` (or for nothing).
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let sni = sni.trim_end_matches('.');
        // Names are kept lowercase; SNI usually is too (no allocation then).
        let sni: Cow<str> = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(sni.to_ascii_lowercase())
        } else {
            Cow::Borrowed(sni)
        };
        if let Some(&i) = self.exact.get(&*sni) {
            return i;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .unwrap_or(0)
    }

    /// Whether `host` (a `Host` header value, port allowed) is one of the names of
    /// certificate `cert`, or one of its IP addresses.
    pub fn serves(&self, cert: usize, host: &str) -> bool {
        let host = strip_port(host).trim_end_matches('.');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.get(cert).is_some_and(|ips| ips.contains(&ip));
        }
        self.names
            .get(cert)
            .is_some_and(|names| names.iter().any(|n| name_matches(n, host)))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
/// Case-insensitive (`name` is lowercase; `host` as the client wrote it).
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => name.eq_ignore_ascii_case(host),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches("*.example.com", "api.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("api.example.com", "api.example.com"));
        assert!(!name_matches("api.example.com", "www.example.com"));
        assert!(name_matches("api.example.com", "API.Example.com"));
        assert!(name_matches("*.example.com", "A.EXAMPLE.COM"));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:8443"), "::1");
    }
}
