//! The authentication step of the request path, for routes with `auth = "hmac"`.
//!
//! `begin` checks what the head alone decides: credentials present and well formed, app
//! known and enabled, timestamp in the window. The signature covers the body's hash, so
//! for a request with a body `Pending::verify` runs once the body has been read; without
//! one it runs at once. Authorization (permission groups, the app's IP allow list) comes
//! after, in its own filters: only a caller who proved who it is learns what it may not
//! do. The nonce is recorded last (`NonceClaim::record`, the replay filter), so nobody can
//! burn a legitimate client's nonces with forged requests, and a refused call spends none.

use std::sync::Arc;

use httparse::Header;

use super::fleet_nonces::{Claimed, FleetNonces};
use super::nonce::{NonceCache, Seen};
use super::sign::{self, canonical_query, string_to_sign, verify};
use crate::config::apps::App;
use crate::error::{ErrorKind, ProxyError};

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> ProxyError {
    ProxyError::client(ErrorKind::Unauthorized, message)
}

/// The request as the signature sees it.
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// The normalized path (before any prefix rewrite).
    pub path: &'a str,
    /// The raw query, without '?'.
    pub query: &'a str,
    pub headers: &'a [Header<'a>],
}

/// An authentication that still needs the body's hash.
#[derive(Debug)]
pub struct Pending {
    pub app: Arc<App>,
    /// The string to sign up to and including the nonce line and its newline.
    prefix: String,
    /// The canonical query: what was signed, and so what the upstream receives.
    query: String,
    signature: [u8; 64],
    nonce: String,
    expires_at: u64,
}

fn header<'h>(headers: &'h [Header<'h>], name: &str) -> Result<&'h [u8], ProxyError> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (Some(h), None) => Ok(h.value),
        (None, _) => Err(unauthorized(format!(
            "missing {name} header (RG-HMAC-SHA256 signature required)"
        ))),
        (Some(_), Some(_)) => Err(unauthorized(format!("repeated {name} header"))),
    }
}

/// The app key a request claims to be from (the `X-Rg-Key` header), to look the app up.
pub fn app_key<'h>(headers: &'h [Header<'h>]) -> Result<&'h str, ProxyError> {
    std::str::from_utf8(header(headers, sign::HEADER_KEY)?)
        .map_err(|_| unauthorized("malformed X-Rg-Key"))
}

/// Checks everything but the signature. `app`: the record for the claimed key, looked
/// up by the caller (`None`: no such app). `now` is unix seconds.
pub fn begin(
    req: &SignedParts,
    app: Option<Arc<App>>,
    window_secs: u64,
    now: u64,
) -> Result<Pending, ProxyError> {
    let h = req.headers;
    let timestamp = header(h, sign::HEADER_TIMESTAMP)?;
    let nonce = header(h, sign::HEADER_NONCE)?;
    let signature = header(h, sign::HEADER_SIGNATURE)?;
    let ts = sign::parse_timestamp(timestamp)
        .ok_or_else(|| unauthorized("malformed X-Rg-Timestamp: unix seconds expected"))?;
    if !sign::valid_nonce(nonce) {
        return Err(unauthorized(
            "malformed X-Rg-Nonce: 16-64 characters of [A-Za-z0-9_-] expected",
        ));
    }
    let signature: [u8; 64] = signature
        .try_into()
        .ok()
        .filter(|s: &[u8; 64]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| {
            unauthorized("malformed X-Rg-Signature: 64 lowercase hex digits expected")
        })?;
    let app = app.ok_or_else(|| unauthorized("unknown app key"))?;
    if !app.enabled {
        return Err(unauthorized("app is disabled"));
    }
    if !sign::timestamp_in_window(ts, now, window_secs) {
        return Err(unauthorized(format!(
            "timestamp {ts} is outside the allowed window of {} s around the gateway's clock ({now})",
            window_secs
        )));
    }
    let mut query = String::new();
    canonical_query(req.query, &mut query)
        .map_err(|e| ProxyError::client(ErrorKind::BadRequest, format!("query: {e}")))?;
    // Both are validated ASCII at this point.
    let timestamp = std::str::from_utf8(timestamp).unwrap_or_default();
    let nonce = std::str::from_utf8(nonce).unwrap_or_default();
    let mut prefix = String::with_capacity(96 + req.path.len() + query.len());
    // The body-hash line is filled in by `verify`; a placeholder keeps one builder.
    string_to_sign(
        req.method,
        req.path,
        &query,
        timestamp,
        nonce,
        &[b'0'; 64],
        &mut prefix,
    );
    prefix.truncate(prefix.len() - 64);
    Ok(Pending {
        app,
        prefix,
        query,
        signature,
        nonce: nonce.to_string(),
        expires_at: ts.saturating_add(window_secs),
    })
}

impl Pending {
    /// The query as signed (canonical form, without '?'): forwarded instead of the raw
    /// one, so the upstream can only ever read what the signature covers.
    pub fn canonical_query(&self) -> &str {
        &self.query
    }

    /// Verifies the signature over the body's hash. The nonce is not recorded yet: the
    /// caller records it (`NonceClaim::record`) once the app is also authorized, so a
    /// refused call neither spends its nonce nor fills the replay cache.
    pub fn verify(
        mut self,
        body_sha256_hex: &[u8; 64],
        now: u64,
    ) -> Result<(Arc<App>, NonceClaim), ProxyError> {
        // Checked again here, not only when the head arrived: a body trickled in past the
        // end of the window would otherwise reach the nonce cache after its entry expired
        // and be accepted as fresh (a replay).
        if now > self.expires_at {
            return Err(unauthorized(
                "the timestamp window closed before the request body arrived",
            ));
        }
        self.prefix
            .push_str(std::str::from_utf8(body_sha256_hex).unwrap_or_default());
        if !verify(&self.app.secrets(), &self.prefix, &self.signature) {
            return Err(unauthorized("signature does not match the request"));
        }
        let claim = NonceClaim {
            nonce: self.nonce,
            expires_at: self.expires_at,
        };
        Ok((self.app, claim))
    }
}

/// A verified request's nonce, to be recorded before it is forwarded.
#[derive(Debug)]
pub struct NonceClaim {
    nonce: String,
    expires_at: u64,
}

impl NonceClaim {
    /// Records the nonce for `app_key`; refuses a replay.
    pub fn record(&self, app_key: &str, nonces: &NonceCache, now: u64) -> Result<(), ProxyError> {
        match nonces.check_and_insert(app_key, &self.nonce, self.expires_at, now) {
            Seen::Fresh => Ok(()),
            Seen::Replay => Err(replayed()),
            // Refusing is the only safe answer: forgetting old nonces would accept
            // replays. `[apps] replay_capacity` is sized for the traffic (README).
            Seen::Full => Err(ProxyError::new(
                ErrorKind::Overloaded,
                crate::error::Side::Internal,
                "replay protection is full (apps.replay_capacity); try again shortly",
            )),
        }
    }
}

impl NonceClaim {
    /// Claims the nonce for every gateway sharing the cluster's Redis (after `record`
    /// took it on this one); refuses a nonce another gateway accepted. Redis being away
    /// leaves `record`'s word.
    pub async fn claim_fleet_wide(
        &self,
        app_key: &str,
        fleet: &FleetNonces,
        now: u64,
    ) -> Result<(), ProxyError> {
        match fleet
            .claim(app_key, &self.nonce, self.expires_at, now)
            .await
        {
            Claimed::Fresh | Claimed::Unavailable => Ok(()),
            Claimed::Replay => Err(replayed()),
        }
    }
}

fn replayed() -> ProxyError {
    unauthorized("nonce already used: replayed request")
}

/// The clock signatures are checked against; it lives in `crate::clock` (limits read it
/// too) and stays reachable here, where signing code and tests look for it.
pub use crate::clock::unix_now;
