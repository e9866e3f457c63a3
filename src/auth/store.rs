//! The Redis-backed app store for cluster mode (`[apps] redis = "redis://..."`): one hash
//! per app at `rg:app:<key>`, shared by every gateway of the cluster.
//!
//! Blocking on purpose: it is used only by the control thread, never by a worker. Every
//! call is bounded in time (connect, handshake, read and write: see
//! [`crate::redis_link`]) so a dead or stalled Redis costs the control thread at most a
//! couple of seconds per call and never hangs it; the workers keep serving the records
//! they already hold.
//!
//! Fields of an app hash: `secret` (required unless the app has client certificates),
//! `previous_secret` (during a rotation), `name`, `groups` and `allow_ips`
//! (comma-separated), `enabled` (`1`/`0`/`true`/`false`, default true), `cert_sha256`
//! (comma-separated) and `cert_subjects` (`;`-separated). Records are validated by the
//! same rules as the apps file.
//!
//! Client certificates are found through index keys, `rg:cert:sha256:<hex>` and
//! `rg:cert:subject:<normalized subject>`, each holding an app key; the app's record must
//! list the certificate too, so a stale index entry maps nothing.

use std::collections::HashMap;
use std::fmt;

use redis::RedisError;

use crate::config::apps::{App, AppLimits};
use crate::redis_link::RedisLink;
use crate::tls::identity::{normalize_subject, parse_sha256, ClientIdentity};

/// Prefix of every app hash; the rest of the Redis key is the app key.
pub const KEY_PREFIX: &str = "rg:app:";

/// Prefix of the client-certificate index keys (`rg:cert:sha256:<hex>`,
/// `rg:cert:subject:<subject>`). In the cache and the key filter they go by
/// `#sha256:<hex>` and `#subject:<subject>` (`#` is never in an app key).
pub const CERT_PREFIX: &str = "rg:cert:";

/// The cache keys a client certificate is looked up by: fingerprint, then subject (when
/// it has one it can be known by).
pub fn cert_lookup_keys(id: &ClientIdentity) -> Vec<String> {
    let mut keys = vec![format!("#sha256:{}", id.sha256_hex)];
    if !id.subject.is_empty() {
        keys.push(format!("#subject:{}", id.subject));
    }
    keys
}

/// How many keys one SCAN step asks for: big steps keep the round trips few.
const SCAN_COUNT: usize = 1000;

/// Fields an app hash may hold. Anything else is rejected, as the apps file does with
/// `deny_unknown_fields`: a typo such as `allow_ip` must not silently open an app to
/// every address.
const FIELDS: [&str; 11] = [
    "secret",
    "previous_secret",
    "name",
    "groups",
    "allow_ips",
    "enabled",
    "rate",
    "quota",
    "traffic_group",
    "cert_sha256",
    "cert_subjects",
];

#[derive(Debug)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time; worth retrying later.
    Unavailable(String),
    /// The record exists but is not a valid app; retrying does not help until it is fixed.
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "app store unavailable: {m}"),
            StoreError::Invalid(m) => write!(f, "invalid app record: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A blocking client of the app store, reconnecting lazily after failures.
pub struct RedisStore {
    link: RedisLink,
}

impl RedisStore {
    /// Over `link`, which connects at the first call, because the gateway must start
    /// even if Redis is down.
    pub fn new(link: RedisLink) -> RedisStore {
        RedisStore { link }
    }

    /// One server by its URL (`redis://host:port/db`).
    pub fn from_url(url: &str) -> Result<RedisStore, String> {
        Ok(RedisStore::new(RedisLink::from_url(url)?))
    }

    /// HGETALL of one app; `Ok(None)` when the hash does not exist.
    pub fn fetch(&mut self, key: &str) -> Result<Option<App>, StoreError> {
        let redis_key = format!("{KEY_PREFIX}{key}");
        let raw: HashMap<Vec<u8>, Vec<u8>> = self
            .link
            .query(redis::cmd("HGETALL").arg(&redis_key))
            .map_err(|e| match e.code() {
                // Someone stored another type under an app key: a broken record, not an outage.
                Some("WRONGTYPE") => invalid(&redis_key, "not a hash"),
                _ => self.unavailable(&e),
            })?;
        // Redis removes a hash with its last field, so empty means missing.
        if raw.is_empty() {
            return Ok(None);
        }
        let mut fields = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            let name = String::from_utf8(name).map_err(|e| {
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                invalid(&redis_key, &format!("field {lossy:?} is not UTF-8"))
            })?;
            // The value is not quoted: it may be a secret.
            let value = String::from_utf8(value)
                .map_err(|_| invalid(&redis_key, &format!("{name}: value is not UTF-8")))?;
            fields.insert(name, value);
        }
        app_from_fields(key, &fields).map(Some)
    }

    /// The app a client certificate's index key names (`lookup`: `sha256:<hex>` or
    /// `subject:<subject>`), if its record lists that certificate.
    pub fn fetch_by_cert(&mut self, lookup: &str) -> Result<Option<App>, StoreError> {
        let index = format!("{CERT_PREFIX}{lookup}");
        let key: Option<String> = self
            .link
            .query(redis::cmd("GET").arg(&index))
            .map_err(|e| match e.code() {
                Some("WRONGTYPE") => invalid(&index, "not a string"),
                _ => self.unavailable(&e),
            })?;
        let Some(key) = key else { return Ok(None) };
        let Some(app) = self.fetch(key.trim())? else {
            return Ok(None);
        };
        let listed = match lookup.split_once(':') {
            Some(("sha256", hex)) => parse_sha256(hex).is_ok_and(|f| app.cert_sha256.contains(&f)),
            Some(("subject", subject)) => app.cert_subjects.iter().any(|s| s == subject),
            _ => false,
        };
        Ok(listed.then_some(app))
    }

    /// Every app key in the store (SCAN of `rg:app:*`, prefix stripped) and every
    /// certificate index key (as `#sha256:...`, `#subject:...`), sorted.
    pub fn all_keys(&mut self) -> Result<Vec<String>, StoreError> {
        let mut keys = self.scan(KEY_PREFIX, "")?;
        keys.extend(self.scan(CERT_PREFIX, "#")?);
        // SCAN may return a key more than once (e.g. while the table is rehashed).
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// The keys under `prefix`, with `prefix` replaced by `tag` (on a Redis Cluster,
    /// from every master: each holds its own slots).
    fn scan(&mut self, prefix: &str, tag: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{prefix}*");
        let mut keys = Vec::new();
        let masters = self.link.masters().map_err(|e| self.unavailable(&e))?;
        for node in &masters {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) = self
                    .link
                    .query_node(
                        node,
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(SCAN_COUNT),
                    )
                    .map_err(|e| self.unavailable(&e))?;
                // A key that is not UTF-8 cannot be a valid app key; skipping it keeps
                // one bad key from hiding all the others.
                keys.extend(batch.into_iter().filter_map(|k| {
                    let k = String::from_utf8(k).ok()?;
                    k.strip_prefix(prefix).map(|rest| format!("{tag}{rest}"))
                }));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    fn unavailable(&self, e: &RedisError) -> StoreError {
        StoreError::Unavailable(format!("redis at {}: {e}", self.link.addr()))
    }
}

fn invalid(redis_key: &str, problem: &str) -> StoreError {
    StoreError::Invalid(format!("{redis_key}: {problem}"))
}

/// Builds an app from the fields of its hash. Messages name the Redis key and the field
/// but never quote a secret.
fn app_from_fields(key: &str, fields: &HashMap<String, String>) -> Result<App, StoreError> {
    let redis_key = format!("{KEY_PREFIX}{key}");
    let mut unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|f| !FIELDS.contains(f))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let unknown: Vec<String> = unknown.iter().map(|f| format!("{f:?}")).collect();
        let problem = format!(
            "unknown field(s) {}; expected {}",
            unknown.join(", "),
            FIELDS.join(", ")
        );
        return Err(invalid(&redis_key, &problem));
    }
    let mut cert_sha256 = Vec::new();
    for f in split_list(fields.get("cert_sha256")) {
        cert_sha256
            .push(parse_sha256(&f).map_err(|e| invalid(&redis_key, &format!("cert_sha256: {e}")))?);
    }
    let mut cert_subjects = Vec::new();
    for subject in fields
        .get("cert_subjects")
        .map_or("", String::as_str)
        .split(';')
    {
        if !subject.trim().is_empty() {
            let normalized = normalize_subject(subject)
                .map_err(|e| invalid(&redis_key, &format!("cert_subjects: {e}")))?;
            cert_subjects.push(normalized);
        }
    }
    let has_certs = !cert_sha256.is_empty() || !cert_subjects.is_empty();
    let mut secrets = Vec::new();
    match fields.get("secret") {
        Some(secret) => secrets.push(secret.clone()),
        None if has_certs => {}
        None => return Err(invalid(&redis_key, "missing field \"secret\"")),
    }
    // An empty `previous_secret` is how a tool may end a rotation without HDEL.
    if let Some(previous) = fields.get("previous_secret").filter(|s| !s.is_empty()) {
        secrets.push(previous.clone());
    }
    let name = fields.get("name").filter(|s| !s.is_empty()).cloned();
    let groups = split_list(fields.get("groups"));
    let allow_ips = split_list(fields.get("allow_ips"));
    let enabled = match fields.get("enabled") {
        None => true,
        Some(v) => parse_enabled(v).ok_or_else(|| {
            invalid(
                &redis_key,
                &format!("enabled: {v:?} is not one of 1, 0, true, false"),
            )
        })?,
    };
    let nonempty = |f: &str| fields.get(f).map(String::as_str).filter(|s| !s.is_empty());
    let limits = AppLimits::parse(
        nonempty("rate"),
        nonempty("quota"),
        nonempty("traffic_group"),
    )
    .map_err(|e| invalid(&redis_key, &e))?;
    App::from_parts(key.to_owned(), secrets, name, groups, &allow_ips, enabled)
        .map(|app| {
            app.with_limits(limits)
                .with_certs(cert_sha256, cert_subjects)
        })
        .map_err(|e| invalid(&redis_key, &e))
}

/// A comma-separated list; blanks around items and empty items are ignored.
fn split_list(value: Option<&String>) -> Vec<String> {
    value.map_or_else(Vec::new, |v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn parse_enabled(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "current-secret-0001";
    const PREVIOUS: &str = "previous-secret-001";

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn invalid_message(result: Result<App, StoreError>) -> String {
        match result {
            Err(StoreError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_field() {
        let app = app_from_fields(
            "app-7f3a",
            &fields(&[
                ("secret", SECRET),
                ("previous_secret", PREVIOUS),
                ("name", "Example shop"),
                ("groups", "trade, logistics,,"),
                ("allow_ips", "203.0.113.0/24,2001:db8::/32"),
                ("enabled", "0"),
                ("rate", "20/s"),
                ("quota", "5000/day"),
                ("traffic_group", "critical"),
            ]),
        )
        .unwrap();
        assert_eq!(app.limits.rate.map(|r| r.per_sec), Some(20.0));
        assert_eq!(app.limits.quota, Some(5000));
        assert_eq!(app.limits.traffic_group.as_deref(), Some("critical"));
        assert_eq!(app.key, "app-7f3a");
        assert_eq!(app.secrets(), vec![SECRET.as_bytes(), PREVIOUS.as_bytes()]);
        assert_eq!(app.name, "Example shop");
        assert_eq!(app.groups, ["trade", "logistics"]);
        assert_eq!(app.allow_ips.len(), 2);
        assert!(app.ip_allowed("2001:db8::1".parse().unwrap()));
        assert!(!app.ip_allowed("198.51.100.1".parse().unwrap()));
        assert!(!app.enabled);
    }

    #[test]
    fn bad_limit_fields_name_the_field() {
        let r = app_from_fields("a", &fields(&[("secret", SECRET), ("rate", "fast")]));
        assert!(
            matches!(&r, Err(StoreError::Invalid(m)) if m.contains("rate:") && m.contains("rg:app:a")),
            "{r:?}"
        );
    }

    #[test]
    fn optional_fields_have_defaults() {
        let app =
            app_from_fields("a", &fields(&[("secret", SECRET), ("previous_secret", "")])).unwrap();
        assert_eq!(app.secrets(), vec![SECRET.as_bytes()]);
        assert_eq!(app.name, "a");
        assert!(app.groups.is_empty() && app.allow_ips.is_empty());
        assert!(app.enabled);
    }

    #[test]
    fn enabled_values() {
        for (v, want) in [
            ("1", true),
            ("true", true),
            ("TRUE", true),
            ("0", false),
            ("false", false),
        ] {
            let app = app_from_fields("a", &fields(&[("secret", SECRET), ("enabled", v)])).unwrap();
            assert_eq!(app.enabled, want, "{v}");
        }
        let m = invalid_message(app_from_fields(
            "a",
            &fields(&[("secret", SECRET), ("enabled", "yes")]),
        ));
        assert!(m.contains("rg:app:a: enabled: \"yes\""), "{m}");
    }

    #[test]
    fn invalid_records_say_why_without_quoting_secrets() {
        let m = invalid_message(app_from_fields("a", &fields(&[("name", "x")])));
        assert_eq!(m, "rg:app:a: missing field \"secret\"");

        let m = invalid_message(app_from_fields(
            "a",
            &fields(&[("secret", "short-secret"), ("allow_ips", "10.0.0.1/40")]),
        ));
        assert!(
            m.contains("secrets: every secret must be at least 16 bytes"),
            "{m}"
        );
        assert!(m.contains("allow_ips[0]"), "{m}");
        assert!(!m.contains("short-secret"), "{m}");

        let m = invalid_message(app_from_fields(
            "a",
            &fields(&[("secret", SECRET), ("allow_ip", "10.0.0.0/8")]),
        ));
        assert!(m.contains("unknown field(s) \"allow_ip\"; expected"), "{m}");
        assert!(!m.contains('['), "no Debug list: {m}");

        let m = invalid_message(app_from_fields("bad key", &fields(&[("secret", SECRET)])));
        assert!(m.contains("key: invalid key"), "{m}");
    }

    #[test]
    fn url_is_checked_as_the_link_checks_it() {
        // Nothing listens on port 1: `new` must still succeed.
        assert!(RedisStore::from_url("redis://127.0.0.1:1/0").is_ok());
        // The link's check (`redis_link` tests: no password in the message) is the one.
        let bad = "http://user:hunter2@example.com/";
        assert_eq!(
            RedisStore::from_url(bad).err(),
            RedisLink::from_url(bad).err()
        );
    }

    #[test]
    fn unreachable_store_is_unavailable() {
        let mut store = RedisStore::from_url("redis://127.0.0.1:1/0").unwrap();
        match store.fetch("a") {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
