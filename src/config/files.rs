//! The files a config reads besides itself: certificates, keys and CA files (`[tls]`,
//! upstream TLS), the apps file, fallback bodies. Their contents become part of the
//! config generation when it loads, so the config watcher watches them too: a renewed
//! certificate reloads exactly as an edited config file does.

use std::path::{Path, PathBuf};

use super::file::{AppsSectionFile, FileConfig};
use super::file_redis::RedisFile;

/// The files of a config that hold secrets, and what each holds: the apps file (app
/// secrets), private keys (`[tls]` and upstream client keys), and the config file itself
/// when it holds `admin.token`.
pub fn secret_files(
    file: &FileConfig,
    config: &Path,
    base_dir: Option<&Path>,
) -> Vec<(PathBuf, &'static str)> {
    let resolve = |name: &str| base_dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
    let mut out = Vec::new();
    if file.admin.token.is_some() {
        out.push((config.to_path_buf(), "the admin token"));
    } else if redis_files(file).any(|r| r.has_password()) {
        out.push((config.to_path_buf(), "a Redis password"));
    }
    for redis in redis_files(file) {
        if let [_, _, Some(key)] = redis.files() {
            out.push((resolve(key), "a private key"));
        }
    }
    if let Some(AppsSectionFile {
        file: Some(apps), ..
    }) = &file.apps
    {
        out.push((resolve(apps), "app secrets"));
    }
    if let Some(tls) = &file.tls {
        for c in &tls.certs {
            out.push((resolve(&c.key), "a private key"));
        }
    }
    for u in &file.upstreams {
        if let Some(key) = &u.key {
            out.push((resolve(key), "a private key"));
        }
    }
    out
}

/// Every file `file` names that is read when it loads, resolved against `base_dir` (in
/// the config's order, without repeats).
pub fn read_files(file: &FileConfig, base_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(tls) = &file.tls {
        for c in &tls.certs {
            names.extend([c.cert.as_str(), c.key.as_str()]);
        }
        names.extend(tls.client_ca.as_deref());
    }
    for u in &file.upstreams {
        names.extend(
            [&u.ca, &u.cert, &u.key]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
    }
    if let Some(AppsSectionFile {
        file: Some(apps), ..
    }) = &file.apps
    {
        names.push(apps);
    }
    for redis in redis_files(file) {
        names.extend(redis.files().into_iter().flatten());
    }
    for r in &file.routes {
        names.extend(r.fallback.as_ref().and_then(|f| f.file.as_deref()));
    }
    let mut paths: Vec<PathBuf> = Vec::with_capacity(names.len());
    for name in names {
        let path = match base_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

/// The `redis` settings of `[cluster]` and `[apps]`.
fn redis_files(file: &FileConfig) -> impl Iterator<Item = &RedisFile> {
    let cluster = file.cluster.as_ref().and_then(|c| c.redis.as_ref());
    let apps = file.apps.as_ref().and_then(|a| a.redis.as_ref());
    cluster.into_iter().chain(apps)
}
