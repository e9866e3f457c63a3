//! The client side of the signature scheme, for `ringgate sign` and for tests: sign a
//! request given as a URL, exactly as the gateway will check it.

use super::sign::{sign_request, SignedRequest};
use crate::http::normalize::normalize_path;

/// A signed request and the form of it the gateway sees.
pub struct SignedUrl {
    pub signed: SignedRequest,
    /// The path as the gateway normalizes it (what was signed).
    pub normalized_path: String,
}

/// Signs `method url` (`http://host[:port]/path[?query]`, or just `/path[?query]`) with
/// the body, at `timestamp`, with `nonce`.
pub fn sign_url(
    key: &str,
    secret: &[u8],
    method: &str,
    url: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> Result<SignedUrl, String> {
    let after_scheme = match url.find("://") {
        Some(i) => &url[i + 3..],
        None if url.starts_with('/') => url,
        None => {
            return Err(format!(
                "{url:?} is not a URL: expected http://host/path or /path"
            ))
        }
    };
    let target = match after_scheme.find('/') {
        Some(i) if !url.starts_with('/') => &after_scheme[i..],
        _ if url.starts_with('/') => after_scheme,
        _ => "/",
    };
    let target = target.split('#').next().unwrap_or(target);
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut normalized_path = String::new();
    normalize_path(raw_path.as_bytes(), &mut normalized_path).map_err(|e| format!("path: {e}"))?;
    let signed = sign_request(
        key,
        secret,
        method,
        &normalized_path,
        query,
        body,
        timestamp,
        nonce,
    )
    .map_err(|e| e.to_string())?;
    Ok(SignedUrl {
        signed,
        normalized_path,
    })
}

/// A fresh nonce: 32 hex digits from the process's randomly keyed hasher, the clock and a
/// counter. Unique is what matters (the gateway rejects repeats), not secrecy.
pub fn fresh_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(32);
    for round in 0..2u64 {
        let mut h = state.build_hasher();
        h.write_u64(round);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_normalized_path_and_raw_query() {
        let a = sign_url(
            "k",
            b"secret-0123456789",
            "GET",
            "http://h:8080/a/./b//c?x=1&y=2",
            b"",
            1_700_000_000,
            "nonce-0123456789abcdef",
        )
        .unwrap();
        assert_eq!(a.normalized_path, "/a/b/c");
        let b = sign_url(
            "k",
            b"secret-0123456789",
            "GET",
            "/a/b/c?y=2&x=1",
            b"",
            1_700_000_000,
            "nonce-0123456789abcdef",
        )
        .unwrap();
        assert_eq!(
            a.signed.signature, b.signed.signature,
            "same canonical request"
        );
        assert!(sign_url("k", b"s", "GET", "ftp:/x", b"", 1, "n").is_err());
    }

    #[test]
    fn nonces_are_valid_and_fresh() {
        let (a, b) = (fresh_nonce(), fresh_nonce());
        assert_ne!(a, b);
        assert!(crate::auth::sign::valid_nonce(a.as_bytes()));
    }
}
