//! The `RG-HMAC-SHA256` request signature: canonical query, body hash, string to sign,
//! HMAC and its constant-time check. Pure functions, no I/O, so the gateway, the
//! `ringgate sign` tool and the tests all share one definition (`docs/signing.md`).
//!
//! Hand-written only where it is the product's point (the canonical query, which must match
//! the spec byte for byte); the cryptography is `hmac` + `sha2`.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// App key header (lowercase, as header names are compared).
pub const HEADER_KEY: &str = "x-rg-key";
/// Unix seconds, decimal, signed exactly as sent.
pub const HEADER_TIMESTAMP: &str = "x-rg-timestamp";
/// 16-64 chars of `[A-Za-z0-9_-]`, unique per app within the timestamp window.
pub const HEADER_NONCE: &str = "x-rg-nonce";
/// 64 lowercase hex chars of HMAC-SHA256(secret, string to sign).
pub const HEADER_SIGNATURE: &str = "x-rg-signature";
/// Scheme name for `WWW-Authenticate` on 401 responses.
pub const SCHEME: &str = "RG-HMAC-SHA256";

/// Nonce length bounds, inclusive.
pub const NONCE_MIN_LEN: usize = 16;
pub const NONCE_MAX_LEN: usize = 64;

/// Why a request could not be canonicalized or signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// A '%' in the query not followed by two hex digits.
    BadQueryEscape,
    /// The nonce is not 16-64 chars of `[A-Za-z0-9_-]`.
    BadNonce,
    /// The method is empty or not an RFC 9110 token (it would corrupt the line structure).
    BadMethod,
    /// The path is not absolute or holds a control byte (it would corrupt the line structure).
    BadPath,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignError::BadQueryEscape => {
                "malformed percent-escape in query: '%' must be followed by two hex digits"
            }
            SignError::BadNonce => "nonce must be 16-64 characters of [A-Za-z0-9_-]",
            SignError::BadMethod => "method must be a non-empty HTTP token",
            SignError::BadPath => "path must start with '/' and contain no control characters",
        })
    }
}

impl std::error::Error for SignError {}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 `unreserved`: the only bytes written unescaped in the canonical query.
static UNRESERVED: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 128u8 {
        t[c as usize] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        c += 1;
    }
    t
};

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `raw` and re-encodes it canonically into `out`, byte by byte, so no
/// decoded (possibly non-UTF-8) intermediate is ever materialized.
fn recode(raw: &[u8], out: &mut String) -> Result<(), SignError> {
    let mut i = 0;
    while i < raw.len() {
        let mut b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_val);
            let lo = raw.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => b = (hi << 4) | lo,
                _ => return Err(SignError::BadQueryEscape),
            }
            i += 3;
        } else {
            i += 1;
        }
        if UNRESERVED[b as usize] {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[(b >> 4) as usize] as char);
            out.push(HEX_UPPER[(b & 0xf) as usize] as char);
        }
    }
    Ok(())
}

/// Writes the canonical form of `raw` (the query without '?') into `out`, cleared first.
///
/// Pieces between '&' (empty ones skipped) split at the first '=' into name and value (no
/// '=': empty value); both are percent-decoded ('+' stays '+', it is not a space) and
/// re-encoded with only RFC 3986 unreserved bytes left bare and `%XX` upper-case for the
/// rest; pairs are sorted by (name, value) bytewise and joined as `name=value` with '&'.
///
/// # Errors
/// [`SignError::BadQueryEscape`] on a '%' not followed by two hex digits; `out` is then
/// empty.
pub fn canonical_query(raw: &str, out: &mut String) -> Result<(), SignError> {
    out.clear();
    if raw.is_empty() {
        return Ok(());
    }
    // Encode every pair once into `enc`, remember where its name and value lie, sort
    // those ranges, then copy. Sorting (name, value) as a pair, not "name=value" as one
    // string, matters: "a" < "a-" as names, but "a-=" < "a=" as strings.
    let mut enc = String::with_capacity(raw.len() + raw.len() / 2);
    let mut pairs: Vec<(usize, usize, usize)> = Vec::new(); // (start, name_end, end) in enc
    for piece in raw.as_bytes().split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &[][..]),
        };
        let start = enc.len();
        let done = recode(name, &mut enc).and_then(|()| {
            let name_end = enc.len();
            recode(value, &mut enc).map(|()| name_end)
        });
        match done {
            Ok(name_end) => pairs.push((start, name_end, enc.len())),
            Err(e) => return Err(e),
        }
    }
    let e = enc.as_str();
    pairs.sort_unstable_by(|a, b| (&e[a.0..a.1], &e[a.1..a.2]).cmp(&(&e[b.0..b.1], &e[b.1..b.2])));
    out.reserve(enc.len() + 2 * pairs.len());
    for (n, &(start, name_end, end)) in pairs.iter().enumerate() {
        if n > 0 {
            out.push('&');
        }
        out.push_str(&e[start..name_end]);
        out.push('=');
        out.push_str(&e[name_end..end]);
    }
    Ok(())
}

/// Lowercase hex of a 32-byte digest.
fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, &b) in bytes.iter().enumerate() {
        out[2 * i] = HEX_LOWER[(b >> 4) as usize];
        out[2 * i + 1] = HEX_LOWER[(b & 0xf) as usize];
    }
    out
}

/// Lowercase hex SHA-256 of a whole body (`e3b0c442...` for an empty one).
pub fn body_sha256_hex(body: &[u8]) -> [u8; 64] {
    hex32(&Sha256::digest(body).into())
}

/// Incremental body hash, fed chunk by chunk while the body streams through.
#[derive(Clone, Default)]
pub struct BodyHasher(Sha256);

impl BodyHasher {
    pub fn new() -> Self {
        BodyHasher(Sha256::new())
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// Lowercase hex digest, same as [`body_sha256_hex`] over the concatenated chunks.
    pub fn finish(self) -> [u8; 64] {
        hex32(&self.0.finalize().into())
    }
}

/// Writes the string to sign into `out` (cleared first): method, path, canonical query,
/// timestamp, nonce and body hash, joined by '\n', no trailing newline.
pub fn string_to_sign(
    method: &str,
    path: &str,
    canonical_query: &str,
    timestamp: &str,
    nonce: &str,
    body_hash_hex: &[u8; 64],
    out: &mut String,
) {
    out.clear();
    out.reserve(method.len() + path.len() + canonical_query.len() + timestamp.len() + 70 + 5);
    for (i, part) in [method, path, canonical_query, timestamp, nonce]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(part);
    }
    out.push('\n');
    // Always ASCII hex when produced by this module; anything else is pushed lossily and
    // simply cannot match a real signature.
    out.push_str(&String::from_utf8_lossy(body_hash_hex));
}

/// HMAC keyed with `secret`. Pads or pre-hashes the key to the SHA-256 block exactly as
/// RFC 2104 does, which lets us use the infallible `KeyInit::new` rather than an `expect`
/// on `new_from_slice` (which cannot fail for HMAC, but the type does not say so).
fn keyed_mac(secret: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    if secret.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

/// Lowercase hex HMAC-SHA256(secret, string_to_sign).
pub fn sign(secret: &[u8], string_to_sign: &str) -> [u8; 64] {
    let mut mac = keyed_mac(secret);
    mac.update(string_to_sign.as_bytes());
    hex32(&mac.finalize().into_bytes().into())
}

/// Decodes exactly 64 lowercase hex chars; the presented value is the client's own, so
/// branching on it leaks nothing secret.
fn decode_sig(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *o = (nib(pair[0])? << 4) | nib(pair[1])?;
    }
    Some(out)
}

/// Constant-time check of a presented lowercase-hex signature against any of the secrets (1 or 2).
///
/// Each comparison is `Mac::verify_slice` (constant time in the MAC bytes). It stops at the
/// first secret that matches: which of the app's secrets the client used is no secret to
/// the client, and it saves an HMAC during rotation. Wrong length or any char outside
/// `[0-9a-f]` is simply `false`.
pub fn verify(secrets: &[&[u8]], string_to_sign: &str, presented_hex: &[u8]) -> bool {
    let Some(presented) = decode_sig(presented_hex) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut mac = keyed_mac(secret);
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(&presented).is_ok()
    })
}

/// 16-64 chars of `[A-Za-z0-9_-]`.
pub fn valid_nonce(n: &[u8]) -> bool {
    (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&n.len())
        && n.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Unix seconds: 1-20 ASCII digits (leading zeros allowed), no sign, no spaces; `None`
/// also when it overflows `u64`.
pub fn parse_timestamp(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// `|now - ts| <= window_secs`: the window is symmetric so modest client clock skew either
/// way is tolerated.
pub fn timestamp_in_window(ts: u64, now: u64, window_secs: u64) -> bool {
    ts.abs_diff(now) <= window_secs
}

/// RFC 9110 `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// For `ringgate sign` and tests: everything a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub key: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub string_to_sign: String,
}

/// Signs a request the way a client must: `normalized_path` as the gateway normalizes it,
/// `raw_query` without '?', `timestamp` in unix seconds.
///
/// # Errors
/// A malformed query escape, an invalid nonce, a method that is not a token, or a path that
/// is not absolute or holds control bytes (each of which the gateway would refuse).
#[allow(clippy::too_many_arguments)] // mirrors the string to sign, one argument per line
pub fn sign_request(
    key: &str,
    secret: &[u8],
    method: &str,
    normalized_path: &str,
    raw_query: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> Result<SignedRequest, SignError> {
    if !is_token(method) {
        return Err(SignError::BadMethod);
    }
    if !normalized_path.starts_with('/') || normalized_path.bytes().any(|c| c.is_ascii_control()) {
        return Err(SignError::BadPath);
    }
    if !valid_nonce(nonce.as_bytes()) {
        return Err(SignError::BadNonce);
    }
    let mut query = String::new();
    canonical_query(raw_query, &mut query)?;
    let timestamp = timestamp.to_string();
    let mut sts = String::new();
    string_to_sign(
        method,
        normalized_path,
        &query,
        &timestamp,
        nonce,
        &body_sha256_hex(body),
        &mut sts,
    );
    let signature = String::from_utf8_lossy(&sign(secret, &sts)).into_owned();
    Ok(SignedRequest {
        key: key.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature,
        string_to_sign: sts,
    })
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
