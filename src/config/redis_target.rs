//! Where a Redis deployment is (`[cluster] redis`, `[apps] redis`): one server named by a
//! URL, or a table for what a URL cannot say: the CA and client certificate of a
//! `rediss://` server, or Sentinel (`sentinels`, `master_name`) and the master's login.
//!
//! ```toml
//! redis = "redis://user:password@10.0.0.5:6379/0"
//! redis = { url = "rediss://redis.internal:6380/0", ca = "redis-ca.pem" }
//! redis = { sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
//!           master_name = "ringgate", username = "gw", password = "...", db = 0 }
//! ```
//!
//! Passwords never leave this module in messages: `RedisTarget`'s `Debug` and
//! [`RedisTarget::describe`] name hosts only, and no URL is quoted back in an error.

use std::path::{Path, PathBuf};

use super::file_redis::{host_port, RedisFile, RedisTableFile};
use super::problems::{identity_files, resolve, Problems};

/// A validated Redis deployment.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub servers: RedisServers,
    /// For `rediss://` connections: the roots to trust (`None`: the system's) and the
    /// client certificate and key, when the servers ask for one.
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The contents of those files when the config loaded: a reload that finds them
    /// changed (a renewed certificate) differs from the running target, and is refused
    /// (Redis settings are fixed at start) rather than seeming to apply.
    pub files_digest: [u8; 32],
}

#[derive(Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// One server: its URL (which may carry a user and password).
    One(String),
    /// The master that Sentinel names, found again after every failover. The sentinels'
    /// URLs carry their own logins; `tls` (the sentinels are `rediss://`) applies to the
    /// master and replicas too.
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        username: Option<String>,
        password: Option<String>,
        db: i64,
        tls: bool,
    },
    /// A Redis Cluster, found from any of these nodes (their URLs carry the login; all
    /// the same). `tls`: they are `rediss://`.
    Cluster { nodes: Vec<String>, tls: bool },
}

impl RedisTarget {
    /// One plain server, as `redis = "<url>"` gives it.
    pub fn url(url: &str) -> RedisTarget {
        RedisTarget {
            servers: RedisServers::One(url.to_string()),
            ca: None,
            identity: None,
            files_digest: [0; 32],
        }
    }

    /// Hosts only, fit for logs: `10.0.0.5:6379`, or `master "rg" of sentinels a:26379, ...`.
    pub fn describe(&self) -> String {
        match &self.servers {
            RedisServers::One(url) => host_port(url),
            RedisServers::Sentinel {
                sentinels,
                master_name,
                ..
            } => {
                format!("master {master_name:?} of sentinels {}", hosts(sentinels))
            }
            RedisServers::Cluster { nodes, .. } => {
                format!("cluster of {}", hosts(nodes))
            }
        }
    }

    /// Whether its connections use TLS.
    pub fn tls(&self) -> bool {
        match &self.servers {
            RedisServers::One(url) => url.starts_with("rediss://"),
            RedisServers::Sentinel { tls, .. } | RedisServers::Cluster { tls, .. } => *tls,
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTarget({})", self.describe())
    }
}

/// Checks `redis` at `path` (`cluster.redis`, `apps.redis`); `None` after a problem.
pub(super) fn validate_redis(
    p: &mut Problems,
    path: &str,
    file: &RedisFile,
    base_dir: Option<&Path>,
) -> Option<RedisTarget> {
    let table = match file {
        RedisFile::Url(url) => RedisTableFile {
            url: Some(url.clone()),
            ..RedisTableFile::default()
        },
        RedisFile::Table(t) => (**t).clone(),
    };
    let errors_before = p.0.len();
    let at = |field: &str| match file {
        RedisFile::Url(_) => path.to_string(),
        RedisFile::Table(_) => format!("{path}.{field}"),
    };
    let chosen = [
        table.url.is_some(),
        table.sentinels.is_some(),
        table.nodes.is_some(),
    ];
    if chosen.iter().filter(|&&c| c).count() > 1 {
        p.add(path, "set one of `url`, `sentinels` and `nodes`");
        return None;
    }
    let servers = match (&table.url, &table.sentinels, &table.nodes) {
        (None, None, None) => {
            p.add(
                path,
                "needs a URL (\"redis://10.0.0.5:6379/0\"), `sentinels` and `master_name`, or `nodes`",
            );
            return None;
        }
        (Some(url), _, _) => {
            check_url(p, &at("url"), url);
            only_with_sentinels(p, &table, &at, "a URL carries its own login and db");
            RedisServers::One(url.clone())
        }
        (_, _, Some(nodes)) => {
            let tls = check_urls(p, &at("nodes"), nodes, "node");
            only_with_sentinels(
                p,
                &table,
                &at,
                "the nodes' URLs carry the login; a cluster has db 0 only",
            );
            refuse_databases(
                p,
                &at("nodes"),
                nodes,
                "a Redis Cluster has database 0 only",
            );
            RedisServers::Cluster {
                nodes: nodes.clone(),
                tls,
            }
        }
        (_, Some(sentinels), _) => {
            let tls = check_urls(p, &at("sentinels"), sentinels, "sentinel");
            // Sentinel has no databases (`SELECT` is an unknown command there).
            refuse_databases(
                p,
                &at("sentinels"),
                sentinels,
                "a sentinel has no database: the master's goes in `db`",
            );
            let master_name = match table.master_name.as_deref() {
                Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    name.to_string()
                }
                Some(_) => {
                    p.add(
                        at("master_name"),
                        "a name without spaces, as in sentinel.conf",
                    );
                    String::new()
                }
                None => {
                    p.add(at("master_name"), "required with `sentinels`");
                    String::new()
                }
            };
            let db = match table.db {
                Some(db) if !(0..=1_000_000).contains(&db) => {
                    p.add(at("db"), "must be a database number, 0 or more");
                    0
                }
                db => db.unwrap_or(0),
            };
            if table.username.is_some() && table.password.is_none() {
                p.add(at("password"), "required with `username`");
            }
            RedisServers::Sentinel {
                sentinels: sentinels.clone(),
                master_name,
                username: table.username.clone(),
                password: table.password.clone(),
                db,
                tls,
            }
        }
    };
    let mut target = RedisTarget {
        servers,
        ca: None,
        identity: None,
        files_digest: [0; 32],
    };
    let tls_fields = [
        ("ca", &table.ca),
        ("cert", &table.cert),
        ("key", &table.key),
    ];
    if !target.tls() {
        for (field, set) in tls_fields {
            if set.is_some() {
                p.add(at(field), "only applies to rediss:// (TLS) servers");
            }
        }
    }
    target.ca = table.ca.as_deref().map(|f| resolve(base_dir, f));
    target.identity = identity_files(p, &at, &table.cert, &table.key, base_dir);
    if p.0.len() > errors_before {
        return None;
    }
    if target.tls() {
        // Read and checked now, so that a wrong file fails the start or the reload, not
        // the first connection.
        let identity = target
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        if let Err(e) = crate::tls::client::client_config(
            target.ca.as_deref(),
            identity,
            crate::clock::unix_now() as i64,
        ) {
            p.add(path, e);
            return None;
        }
        target.files_digest = digest(&target);
    }
    Some(target)
}

/// The contents of the target's CA, certificate and key files, each framed by its length.
fn digest(target: &RedisTarget) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let (cert, key) = target.identity.clone().unzip();
    for file in [target.ca.clone(), cert, key] {
        let bytes = file
            .and_then(|f| crate::files::read_bounded(&f, 4 << 20).ok())
            .unwrap_or_default();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

/// A list of URLs: at least one, each valid, all `redis://` or all `rediss://` (which
/// is returned: whether they are TLS).
fn check_urls(p: &mut Problems, path: &str, urls: &[String], what: &str) -> bool {
    if urls.is_empty() {
        p.add(path, format!("name at least one {what}"));
    }
    for (i, url) in urls.iter().enumerate() {
        check_url(p, &format!("{path}[{i}]"), url);
    }
    let tls: Vec<bool> = urls.iter().map(|u| u.starts_with("rediss://")).collect();
    if tls.windows(2).any(|w| w[0] != w[1]) {
        p.add(path, "all redis:// or all rediss://, not a mix");
    }
    tls.first().copied().unwrap_or(false)
}

/// `host:port` of each URL, comma-separated.
fn hosts(urls: &[String]) -> String {
    urls.iter()
        .map(|u| host_port(u))
        .collect::<Vec<_>>()
        .join(", ")
}

/// URLs that must name no database (a cluster's nodes, sentinels): `why` for each that
/// does.
fn refuse_databases(p: &mut Problems, path: &str, urls: &[String], why: &str) {
    for (i, url) in urls.iter().enumerate() {
        let db = redis::Client::open(url.as_str()).map_or(0, |c| c.get_connection_info().redis.db);
        if db != 0 {
            p.add(format!("{path}[{i}]"), why);
        }
    }
}

/// `master_name`, `username`, `password` and `db` are Sentinel's: elsewhere, `why`.
fn only_with_sentinels(
    p: &mut Problems,
    table: &RedisTableFile,
    at: &dyn Fn(&str) -> String,
    why: &str,
) {
    for (field, set) in [
        ("master_name", table.master_name.is_some()),
        ("username", table.username.is_some()),
        ("password", table.password.is_some()),
        ("db", table.db.is_some()),
    ] {
        if set {
            p.add(at(field), format!("only applies with `sentinels` ({why})"));
        }
    }
}

/// A Redis URL the crate accepts; never quoted back (it may hold a password).
fn check_url(p: &mut Problems, path: &str, url: &str) {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        p.add(
            path,
            "expected a redis:// or rediss:// URL, e.g. \"redis://10.0.0.5:6379/0\"",
        );
    } else if url.contains(['?', '#']) {
        // `#insecure` (no verification) and `?protocol=` would change how the control
        // side connects but not the workers: TLS is always verified, RESP 2 is spoken.
        p.add(
            path,
            "no query or fragment (`?...`, `#...`): TLS settings go in `ca`, `cert` and `key`",
        );
    } else if redis::Client::open(url).is_err() {
        p.add(path, "invalid Redis URL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_value: &str) -> Result<RedisTarget, Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Doc {
            redis: RedisFile,
        }
        let doc: Doc =
            toml::from_str(&format!("redis = {toml_value}")).map_err(|e| vec![e.to_string()])?;
        let mut p = Problems::default();
        let target = validate_redis(&mut p, "cluster.redis", &doc.redis, None);
        if p.0.is_empty() {
            Ok(target.unwrap())
        } else {
            Err(p.0.iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn a_url_or_a_sentinel_table() {
        let one = check("\"redis://:hunter2@10.0.0.5:6379/2\"").unwrap();
        assert!(one.servers == RedisServers::One("redis://:hunter2@10.0.0.5:6379/2".into()));
        assert_eq!(format!("{one:?}"), "RedisTarget(10.0.0.5:6379)");
        let s = check(
            r#"{ sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], master_name = "rg", username = "gw", password = "hunter2", db = 3 }"#,
        )
        .unwrap();
        let RedisServers::Sentinel {
            master_name,
            db,
            tls,
            ..
        } = &s.servers
        else {
            panic!("{s:?}")
        };
        assert_eq!((master_name.as_str(), *db, *tls), ("rg", 3, false));
        assert_eq!(
            s.describe(),
            "master \"rg\" of sentinels 10.0.0.1:26379, 10.0.0.2:26379"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn mistakes_are_named_and_urls_not_quoted() {
        let e = check("\"http://:hunter2@x/\"").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("cluster.redis: expected a redis://"),
            "{e:?}"
        );
        assert!(!e[0].contains("hunter2"));
        let e = check(r#"{ sentinels = ["redis://a:26379"] }"#).unwrap_err();
        assert_eq!(e, ["cluster.redis.master_name: required with `sentinels`"]);
        let e =
            check(r#"{ url = "redis://a:6379", sentinels = ["redis://b:26379"] }"#).unwrap_err();
        assert_eq!(
            e,
            ["cluster.redis: set one of `url`, `sentinels` and `nodes`"]
        );
        let e = check(r#"{ sentinels = ["redis://a:26379/2"], master_name = "m" }"#).unwrap_err();
        assert_eq!(
            e,
            ["cluster.redis.sentinels[0]: a sentinel has no database: the master's goes in `db`"]
        );
        let e = check(r#""rediss://a:6380/0#insecure""#).unwrap_err();
        assert!(
            e[0].starts_with("cluster.redis: no query or fragment"),
            "{e:?}"
        );
        let e = check(r#"{ nodes = ["redis://a:7000/1", "redis://b:7000"] }"#).unwrap_err();
        assert_eq!(
            e,
            ["cluster.redis.nodes[0]: a Redis Cluster has database 0 only"]
        );
        let nodes =
            check(r#"{ nodes = ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"] }"#)
                .unwrap();
        assert_eq!(nodes.describe(), "cluster of 10.0.0.1:7000, 10.0.0.2:7000");
        let file = RedisFile::Url("redis://:hunter2@10.0.0.5:6379".into());
        assert!(!format!("{file:?}").contains("hunter2"));
        let e = check(r#"{ url = "redis://a:6379", ca = "ca.pem", db = 2 }"#).unwrap_err();
        assert_eq!(
            e,
            [
                "cluster.redis.db: only applies with `sentinels` (a URL carries its own login and db)",
                "cluster.redis.ca: only applies to rediss:// (TLS) servers",
            ]
        );
        let e =
            check(r#"{ sentinels = ["redis://a:26379", "rediss://b:26379"], master_name = "m" }"#)
                .unwrap_err();
        assert_eq!(
            e,
            ["cluster.redis.sentinels: all redis:// or all rediss://, not a mix"]
        );
        let e = check(r#"{ url = "rediss://a:6380", ca = "/nonexistent/ca.pem" }"#).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("cluster.redis: ") && e[0].contains("/nonexistent/ca.pem"),
            "{e:?}"
        );
        let e = check(r#"{ url = "redis://a:6379", sentinel = [] }"#).unwrap_err();
        assert!(e[0].contains("unknown field `sentinel`"), "{e:?}");
    }
}
