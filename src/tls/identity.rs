//! Who a verified client certificate says the caller is, in the two forms an app record
//! can register: the certificate's SHA-256 fingerprint (exact: this one certificate) and
//! its subject (any certificate the trusted CA issues to that subject, so a renewal
//! needs no registry change). Subjects compare as sets of `TYPE=value` attributes:
//! attribute types case-insensitive, values exact, order and spacing ignored.

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// A client certificate's identity, computed once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// The same, as 64 lowercase hex digits (written once per connection, read by the
    /// access log, header variables and registry lookups of every request).
    pub sha256_hex: String,
    /// The subject, normalized (`normalize_subject`).
    pub subject: String,
}

impl ClientIdentity {
    /// The identity of `cert` (the leaf the client presented).
    pub fn of(cert: &CertificateDer<'_>) -> ClientIdentity {
        let sha256: [u8; 32] = Sha256::digest(cert.as_ref()).into();
        let subject = subject_of(cert).unwrap_or_default();
        ClientIdentity {
            sha256,
            sha256_hex: hex(&sha256),
            subject,
        }
    }
}

/// A certificate's subject in the canonical form of `normalize_subject`, read attribute
/// by attribute from the DER (never from a printed form, where a value holding `, O=`
/// would pass for another attribute). `None`, so the certificate can be found by its
/// fingerprint only, when a value is not a plain string (any of `,` `+` `=` `\`, a
/// control character, spaces around it) or an attribute type has no short name.
fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let mut parts = Vec::new();
    for rdn in parsed.subject().iter() {
        for attr in rdn.iter() {
            let ty = oid2abbrev(attr.attr_type(), oid_registry()).ok()?;
            let value = attr.as_str().ok()?;
            if !plain_value(value) || !ty.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            parts.push(format!("{}={value}", ty.to_ascii_uppercase()));
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.sort();
    Some(parts.join(","))
}

/// A value both forms can hold unambiguously.
fn plain_value(value: &str) -> bool {
    !value.is_empty()
        && value.trim() == value
        && !value
            .chars()
            .any(|c| matches!(c, ',' | '+' | '=' | '\\') || c.is_control())
}

/// A subject written as `CN=partner-gw, O=Acme` (RFC 4514 style, as `openssl x509
/// -subject` prints it), in one canonical form: attributes sorted, types uppercase,
/// joined by `,`. Values holding `,` `+` `=` or `\` are not supported (register the
/// certificate by fingerprint instead).
pub fn normalize_subject(subject: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for attr in subject.split([',', '+']) {
        let attr = attr.trim();
        let Some((ty, value)) = attr.split_once('=') else {
            return Err(format!("{attr:?} is not TYPE=value"));
        };
        let (ty, value) = (ty.trim(), value.trim());
        if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric()) || !plain_value(value) {
            return Err(format!(
                "{attr:?} is not TYPE=value with a plain value (no , + = \\; use cert_sha256 for such subjects)"
            ));
        }
        parts.push(format!("{}={value}", ty.to_ascii_uppercase()));
    }
    parts.sort();
    Ok(parts.join(","))
}

/// A fingerprint written as 64 hex digits, with or without `:` between bytes (as
/// `openssl x509 -fingerprint -sha256` prints it), any case.
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    let bad = || format!("{text:?} is not a SHA-256 fingerprint (64 hex digits)");
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_compare_as_sets() {
        assert_eq!(
            normalize_subject("CN=partner-gw, O=Acme Corp").unwrap(),
            normalize_subject("o=Acme Corp,cn=partner-gw").unwrap()
        );
        assert_ne!(
            normalize_subject("CN=partner-gw").unwrap(),
            normalize_subject("CN=Partner-gw").unwrap()
        );
        assert!(normalize_subject("CN=a, junk").is_err());
        assert!(normalize_subject("CN=").is_err());
        assert!(normalize_subject("CN=a=b").is_err());
    }

    /// A value that prints like two attributes gives no subject identity at all: it
    /// must never pass for `CN=partner-gw, O=Acme Corp`.
    #[test]
    fn values_that_print_like_attributes_give_no_subject() {
        let cert = |cn: &str, org: Option<&str>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(rcgen::DnType::OrganizationName, org);
            }
            params.self_signed(&key).unwrap().der().clone()
        };
        let honest = ClientIdentity::of(&cert("partner-gw", Some("Acme Corp")));
        assert_eq!(honest.subject, "CN=partner-gw,O=Acme Corp");
        assert_eq!(
            honest.subject,
            normalize_subject("O=Acme Corp, CN=partner-gw").unwrap()
        );
        let forged = ClientIdentity::of(&cert("partner-gw, O=Acme Corp", None));
        assert_eq!(forged.subject, "");
        assert_eq!(ClientIdentity::of(&cert(" padded", None)).subject, "");
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "a1".repeat(32);
        let colons = vec!["A1"; 32].join(":");
        assert_eq!(parse_sha256(&plain).unwrap(), [0xa1; 32]);
        assert_eq!(parse_sha256(&colons).unwrap(), [0xa1; 32]);
        assert!(parse_sha256("a1a1").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
        assert_eq!(hex(&[0xa1; 32]), plain);
    }
}
