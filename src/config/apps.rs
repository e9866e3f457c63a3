//! The app registry: who may call, with which secrets or client certificates, from where,
//! and which API groups.
//! Loaded from the apps file named by `[apps] file` as part of a config generation, so it
//! is validated with the config and reloaded with it. Plain data (records and lookups),
//! so it lives with the config; `auth` checks requests against it and re-exports it as
//! `auth::registry`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::cidr::Cidr;
use super::model_limits::{parse_quota, Rate};
use super::problems::ConfigError;
use crate::tls::identity::{normalize_subject, parse_sha256, ClientIdentity};

/// One registered app. Secrets never appear in `Debug` output.
pub struct App {
    pub key: String,
    secrets: Vec<Box<[u8]>>,
    pub name: String,
    pub groups: Vec<String>,
    /// Empty: any address.
    pub allow_ips: Vec<Cidr>,
    pub enabled: bool,
    /// The app's contract: overrides of per-app limits and its priority group.
    pub limits: AppLimits,
    /// Client certificates that authenticate as this app (`auth = "mtls"`): exact
    /// certificates by SHA-256 fingerprint, and subjects (normalized).
    pub cert_sha256: Vec<[u8; 32]>,
    pub cert_subjects: Vec<String>,
}

/// What an app record says about traffic control (fields `rate`, `quota`,
/// `traffic_group`): `rate` replaces the rate of every limit keyed by `app` or
/// `app_route`, `quota` their daily quota.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppLimits {
    pub rate: Option<Rate>,
    pub quota: Option<u64>,
    pub traffic_group: Option<String>,
}

impl AppLimits {
    /// Parses the record's optional fields; problems name the field.
    pub fn parse(
        rate: Option<&str>,
        quota: Option<&str>,
        traffic_group: Option<&str>,
    ) -> Result<AppLimits, String> {
        let mut problems = Vec::new();
        let rate = rate.and_then(|r| {
            Rate::parse(r)
                .map_err(|e| problems.push(format!("rate: {e}")))
                .ok()
        });
        let quota = quota.and_then(|q| {
            parse_quota(q)
                .map_err(|e| problems.push(format!("quota: {e}")))
                .ok()
        });
        if problems.is_empty() {
            Ok(AppLimits {
                rate,
                quota,
                traffic_group: traffic_group.map(str::to_owned),
            })
        } else {
            Err(problems.join("; "))
        }
    }
}

impl App {
    /// The current secret and, during a rotation, the previous one. Borrowed into a
    /// fixed array: checked on every signed request, so no allocation.
    pub fn secrets(&self) -> Secrets<'_> {
        let mut refs: [&[u8]; 2] = [&[], &[]];
        for (slot, s) in refs.iter_mut().zip(&self.secrets) {
            *slot = s;
        }
        Secrets {
            refs,
            len: self.secrets.len().min(2),
        }
    }

    /// Whether the app holds the permission package for a route's group (routes without
    /// a group are open to every authenticated app).
    pub fn may_call(&self, group: Option<&str>) -> bool {
        group.is_none_or(|g| self.groups.iter().any(|have| have == g))
    }

    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|c| c.contains(ip))
    }
}

impl App {
    /// The record with its traffic-control fields.
    pub fn with_limits(mut self, limits: AppLimits) -> App {
        self.limits = limits;
        self
    }

    /// The record with its client certificates (fingerprints, normalized subjects).
    pub fn with_certs(mut self, sha256: Vec<[u8; 32]>, subjects: Vec<String>) -> App {
        self.cert_sha256 = sha256;
        self.cert_subjects = subjects;
        self
    }

    /// Builds and validates an app record (same rules as the apps file; no secret only
    /// for an app that will get certificates, `with_certs`).
    pub fn from_parts(
        key: String,
        secrets: Vec<String>,
        name: Option<String>,
        groups: Vec<String>,
        allow_ips: &[String],
        enabled: bool,
    ) -> Result<App, String> {
        let mut problems = Vec::new();
        if let Err(e) = check_key(&key) {
            problems.push(format!("key: {e}"));
        }
        if let Err(e) = check_secrets(&secrets, secrets.is_empty()) {
            problems.push(format!("secrets: {e}"));
        }
        let mut cidrs = Vec::new();
        for (j, c) in allow_ips.iter().enumerate() {
            match Cidr::parse(c) {
                Ok(c) => cidrs.push(c),
                Err(e) => problems.push(format!("allow_ips[{j}]: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(App {
            secrets: secrets.iter().map(|s| s.as_bytes().into()).collect(),
            name: name.unwrap_or_else(|| key.clone()),
            groups,
            allow_ips: cidrs,
            enabled,
            key,
            limits: AppLimits::default(),
            cert_sha256: Vec::new(),
            cert_subjects: Vec::new(),
        })
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}: 1-128 of letters, digits, '-', '_', '.'"
        ))
    }
}

/// One or two secrets; none for an app that authenticates only by client certificate
/// (`has_certs`), which then cannot sign.
fn check_secrets(secrets: &[String], has_certs: bool) -> Result<(), String> {
    if secrets.is_empty() && has_certs {
        return Ok(());
    }
    if secrets.is_empty() || secrets.len() > 2 {
        return Err("one or two secrets (current, and previous during a rotation; none only for an app with cert_sha256 or cert_subjects)".into());
    }
    if secrets.iter().any(|s| s.len() < 16) {
        return Err("every secret must be at least 16 bytes".into());
    }
    Ok(())
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("key", &self.key)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("allow_ips", &self.allow_ips)
            .field("enabled", &self.enabled)
            .field("limits", &self.limits)
            .field("cert_sha256", &self.cert_sha256.len())
            .field("cert_subjects", &self.cert_subjects)
            .finish()
    }
}

/// An app's one or two secrets, as a slice of byte strings.
#[derive(Debug, Clone, Copy)]
pub struct Secrets<'a> {
    refs: [&'a [u8]; 2],
    len: usize,
}

impl<'a> std::ops::Deref for Secrets<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &[&'a [u8]] {
        &self.refs[..self.len]
    }
}

impl PartialEq<Vec<&[u8]>> for Secrets<'_> {
    fn eq(&self, other: &Vec<&[u8]>) -> bool {
        **self == other[..]
    }
}

/// Apps by key, and by the client certificates registered to them.
#[derive(Debug, Default)]
pub struct AppRegistry {
    apps: HashMap<String, Arc<App>>,
    by_sha256: HashMap<[u8; 32], Arc<App>>,
    by_subject: HashMap<String, Arc<App>>,
}

impl AppRegistry {
    pub fn get(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.get(key)
    }

    /// The app a verified client certificate belongs to: its exact fingerprint first,
    /// then its subject.
    pub fn by_certificate(&self, id: &ClientIdentity) -> Option<&Arc<App>> {
        self.by_sha256.get(&id.sha256).or_else(|| {
            // (No subject: one that could not be read unambiguously.)
            (!id.subject.is_empty())
                .then(|| self.by_subject.get(&id.subject))
                .flatten()
        })
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    #[serde(default)]
    apps: Vec<AppFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    key: String,
    #[serde(default)]
    secrets: Vec<String>,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    enabled: Option<bool>,
    rate: Option<String>,
    quota: Option<String>,
    traffic_group: Option<String>,
    #[serde(default)]
    cert_sha256: Vec<String>,
    #[serde(default)]
    cert_subjects: Vec<String>,
}

/// The largest apps file read (a million apps of ~200 bytes; beyond that, the Redis
/// registry).
const MAX_APPS_FILE: u64 = 256 << 20;

/// Reads and validates an apps file. Problems are reported with the file and the path
/// inside it (`apps.file "apps.toml": apps[2].allow_ips[0]: ...`).
pub fn load_file(path: &Path) -> Result<AppRegistry, Vec<ConfigError>> {
    let origin = format!("apps.file {:?}", path.display().to_string());
    let err = |path: String, message: String| ConfigError { path, message };
    let bytes = crate::files::read_bounded(path, MAX_APPS_FILE)
        .map_err(|e| vec![err(origin.clone(), format!("cannot read: {e}"))])?;
    let text = String::from_utf8(bytes)
        .map_err(|_| vec![err(origin.clone(), "not UTF-8 text".to_string())])?;
    // Only the message and position: toml's full error quotes the source line, and in
    // this file that line may hold a secret.
    let file: AppsFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |r| {
            text[..r.start.min(text.len())].matches('\n').count() + 1
        });
        vec![err(origin.clone(), format!("line {line}: {}", e.message()))]
    })?;
    let mut problems = Vec::new();
    let mut apps = HashMap::new();
    let (mut by_sha256, mut by_subject) = (HashMap::new(), HashMap::new());
    for (i, a) in file.apps.into_iter().enumerate() {
        let at = |field: &str| format!("{origin}: apps[{i}].{field}");
        if let Err(e) = check_key(&a.key) {
            problems.push(err(at("key"), e));
        }
        let has_certs = !a.cert_sha256.is_empty() || !a.cert_subjects.is_empty();
        if let Err(e) = check_secrets(&a.secrets, has_certs) {
            problems.push(err(at("secrets"), e));
        }
        let mut cert_sha256 = Vec::new();
        for (j, f) in a.cert_sha256.iter().enumerate() {
            match parse_sha256(f) {
                Ok(f) => cert_sha256.push(f),
                Err(e) => problems.push(err(at(&format!("cert_sha256[{j}]")), e)),
            }
        }
        let mut cert_subjects = Vec::new();
        for (j, subject) in a.cert_subjects.iter().enumerate() {
            match normalize_subject(subject) {
                Ok(s) => cert_subjects.push(s),
                Err(e) => problems.push(err(at(&format!("cert_subjects[{j}]")), e)),
            }
        }
        let mut allow_ips = Vec::new();
        for (j, c) in a.allow_ips.iter().enumerate() {
            match Cidr::parse(c) {
                Ok(c) => allow_ips.push(c),
                Err(e) => problems.push(err(at(&format!("allow_ips[{j}]")), e)),
            }
        }
        let limits = AppLimits::parse(
            a.rate.as_deref(),
            a.quota.as_deref(),
            a.traffic_group.as_deref(),
        )
        .unwrap_or_else(|e| {
            problems.push(err(format!("{origin}: apps[{i}]"), e));
            AppLimits::default()
        });
        let app = App {
            limits,
            secrets: a.secrets.iter().map(|s| s.as_bytes().into()).collect(),
            name: a.name.unwrap_or_else(|| a.key.clone()),
            groups: a.groups,
            allow_ips,
            enabled: a.enabled.unwrap_or(true),
            key: a.key,
            cert_sha256,
            cert_subjects,
        };
        if apps.contains_key(&app.key) {
            problems.push(err(at("key"), format!("duplicate key {:?}", app.key)));
        }
        let app = Arc::new(app);
        // A certificate identifies one app only.
        for f in &app.cert_sha256 {
            if let Some(other) = by_sha256.insert(*f, app.clone()) {
                let message = format!("also registered to app {:?}", other.key);
                problems.push(err(at("cert_sha256"), message));
            }
        }
        for subject in &app.cert_subjects {
            if let Some(other) = by_subject.insert(subject.clone(), app.clone()) {
                let message = format!("{subject:?} is also registered to app {:?}", other.key);
                problems.push(err(at("cert_subjects"), message));
            }
        }
        apps.insert(app.key.clone(), app);
    }
    if problems.is_empty() {
        Ok(AppRegistry {
            apps,
            by_sha256,
            by_subject,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AppRegistry, Vec<ConfigError>> {
        let dir =
            std::env::temp_dir().join(format!("rg-apps-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("apps.toml");
        std::fs::write(&p, text).unwrap();
        load_file(&p)
    }

    #[test]
    fn loads_apps_and_hides_secrets() {
        let r = load("[[apps]]\nkey = \"app-7f3a\"\nsecrets = [\"current-secret-0001\", \"previous-secret-001\"]\nname = \"Shop\"\ngroups = [\"trade\"]\nallow_ips = [\"203.0.113.0/24\"]\n").unwrap();
        let app = r.get("app-7f3a").unwrap();
        assert_eq!(app.secrets().len(), 2);
        assert!(app.may_call(Some("trade")) && !app.may_call(Some("admin")) && app.may_call(None));
        assert!(app.ip_allowed("203.0.113.5".parse().unwrap()));
        assert!(!app.ip_allowed("198.51.100.5".parse().unwrap()));
        let debug = format!("{app:?}");
        assert!(
            !debug.contains("current-secret") && debug.contains("redacted"),
            "{debug}"
        );
    }

    #[test]
    fn syntax_errors_do_not_quote_secrets() {
        let errs =
            load("[[apps]]\nkey = \"a\"\nsecret = [\"super-secret-value-123456\"]\n").unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.contains("line 3") && !text.contains("super-secret"),
            "{text}"
        );
        let errs =
            load("[[apps]]\nkey = \"a\"\nsecrets = [\"super-secret-value-123456]\n").unwrap_err();
        assert!(!errs[0].to_string().contains("super-secret"), "{}", errs[0]);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let errs = load("[[apps]]\nkey = \"bad key\"\nsecrets = [\"short\"]\nallow_ips = [\"10.0.0.1/40\"]\n[[apps]]\nkey = \"a\"\nsecrets = []\n").unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        for want in [
            "apps[0].key: invalid key",
            "apps[0].secrets: every secret",
            "apps[0].allow_ips[0]: invalid prefix",
            "apps[1].secrets: one or two",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
    }
}
