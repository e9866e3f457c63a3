//! `FileConfig` -> `Config`. Collects every problem with its path (`routes[3].upstream:
//! unknown upstream "billing"`) instead of stopping at the first, so `ringgate check`
//! can show them all at once. The sections with more rules have their own files
//! (`validate_limits`, `validate_resilience`, `validate_upstream`); they and this file
//! share `problems`, and only this file calls them.

use std::collections::HashMap;
use std::time::Duration;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::apps::AppRegistry;
use super::file::{AppsSectionFile, FileConfig, RouteFile};
use super::model::*;
use super::problems::{ConfigError, Problems};
use super::redis_target::{validate_redis, RedisTarget};
use super::routing::build_router;
use super::validate_limits::{check_shared_limits, validate_route_limits, validate_traffic};
use super::validate_resilience::{
    route_isolation, validate_breaker, validate_fallback, validate_isolation, validate_retries,
    validate_timeouts,
};
use super::validate_server::validate_server;
use super::validate_tls::validate_tls;
use super::validate_upstream::validate_upstream;

/// 16 Mi nonces: 55 000 signed requests per second sustained over the default 300 s
/// window, about 0.5 GiB when full (memory is used as nonces arrive, not up front).
const DEFAULT_REPLAY_CAPACITY: i64 = 16 << 20;
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

pub fn validate(file: &FileConfig, base_dir: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::default();
    let server = validate_server(&mut p, file);
    let admin = validate_admin(&mut p, file);
    let upstreams: Vec<UpstreamConfig> = file
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| validate_upstream(&mut p, i, u, base_dir))
        .collect();
    let mut seen = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        if let Some(first) = seen.insert(u.name.as_str(), i) {
            p.add(
                format!("upstreams[{i}].name"),
                format!(
                    "duplicate upstream name {:?} (also upstreams[{first}])",
                    u.name
                ),
            );
        }
    }
    let (traffic, default_offset) = validate_traffic(&mut p, file, base_dir);
    let isolation = validate_isolation(&mut p, file);
    let access_log = validate_access_log(&mut p, file, base_dir);
    let routes: Vec<RouteConfig> = file
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut route = validate_route(&mut p, i, r, &seen, server.limits.max_body_bytes);
            route.limits = validate_route_limits(&mut p, i, r, route.auth, default_offset);
            (
                route.connect_timeout,
                route.response_timeout,
                route.total_timeout,
            ) = validate_timeouts(&mut p, i, r);
            route.breaker = validate_breaker(&mut p, i, r);
            route.isolation = route_isolation(&mut p, i, r, &isolation);
            route.retries = validate_retries(&mut p, i, r);
            route.fallback = validate_fallback(&mut p, i, r, base_dir);
            route
        })
        .collect();
    check_routes(&mut p, &routes);
    check_shared_limits(&mut p, &routes);
    let apps = validate_apps(&mut p, file, base_dir, &routes);
    let tls = validate_tls(&mut p, file, base_dir, &server.listen);
    check_mtls_routes(&mut p, file, &routes);
    if p.0.is_empty() {
        Ok(Config {
            server,
            admin,
            upstreams,
            routes,
            apps,
            traffic,
            isolation,
            access_log,
            tls,
            files: super::files::read_files(file, base_dir),
        })
    } else {
        Err(p.0)
    }
}

/// Routes with `auth = "mtls"` need client certificates to be asked for.
fn check_mtls_routes(p: &mut Problems, file: &FileConfig, routes: &[RouteConfig]) {
    let Some(i) = routes.iter().position(|r| r.auth == AuthMode::Mtls) else {
        return;
    };
    if file.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
        p.add(
            format!("routes[{i}].auth"),
            "\"mtls\" needs client certificates: set [tls] client_ca",
        );
    }
}

/// The environment variable that may hold the admin token instead of the file.
pub const ADMIN_TOKEN_ENV: &str = "RINGGATE_ADMIN_TOKEN";

fn validate_admin(p: &mut Problems, file: &FileConfig) -> AdminConfig {
    let listen = match file.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN) {
        "" => None,
        s => p.socket_addr("admin.listen", s),
    };
    let from_env = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let token = file.admin.token.clone().or(from_env);
    if let Some(t) = &token {
        if t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()) {
            // Not quoted back: it is a secret.
            p.add(
                "admin.token",
                "must be at least 16 printable characters without spaces",
            );
        }
    }
    if listen.is_some_and(|a| !a.ip().is_loopback()) && token.is_none() {
        p.add(
            "admin.token",
            format!(
                "required when admin.listen is not a loopback address (or set {ADMIN_TOKEN_ENV})"
            ),
        );
    }
    AdminConfig {
        listen,
        token: token.map(AdminToken),
        watch: file.admin.watch.unwrap_or(false),
        metrics: file.admin.metrics.unwrap_or(true),
    }
}

fn validate_route(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    upstreams: &HashMap<&str, usize>,
    default_body: u64,
) -> RouteConfig {
    let at = |field: &str| format!("routes[{i}].{field}");
    if r.name.is_empty() {
        p.add(at("name"), "must not be empty");
    }
    let upstream = match upstreams.get(r.upstream.as_str()) {
        Some(&u) => UpstreamId(u as u32),
        None => {
            p.add(at("upstream"), format!("unknown upstream {:?}", r.upstream));
            UpstreamId(0)
        }
    };
    let methods = r.methods.clone().unwrap_or_default();
    for (j, m) in methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(crate::http::is_token_byte) {
            p.add(
                at(&format!("methods[{j}]")),
                format!("invalid method {m:?}"),
            );
        }
    }
    for (field, v) in [
        ("strip_prefix", &r.strip_prefix),
        ("add_prefix", &r.add_prefix),
    ] {
        if let Some(v) = v {
            let mut normalized = String::new();
            let ok = crate::http::normalize::normalize_path(v.as_bytes(), &mut normalized).is_ok();
            if !ok || normalized != *v || v.ends_with('/') {
                p.add(
                    at(field),
                    format!(
                        "{v:?} must be a normalized path starting with '/' and not ending with '/'"
                    ),
                );
            }
        }
    }
    if let Some(h) = &r.host {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            p.add(at("host"), format!("invalid host {h:?}: expected a name like \"api.example.com\" or \"*.example.com\""));
        }
    }
    RouteConfig {
        name: r.name.clone(),
        host: r.host.clone(),
        path: r.path.clone(),
        methods,
        upstream,
        strip_prefix: r.strip_prefix.clone(),
        add_prefix: r.add_prefix.clone(),
        max_body_bytes: p.size(&at("max_body_bytes"), &r.max_body_bytes, default_body),
        auth: match r.auth.as_deref() {
            None | Some("none") => AuthMode::None,
            Some("hmac") => AuthMode::Hmac,
            Some("mtls") => AuthMode::Mtls,
            Some(other) => {
                p.add(
                    at("auth"),
                    format!("unknown auth {other:?}: expected \"hmac\", \"mtls\" or \"none\""),
                );
                AuthMode::None
            }
        },
        group: r.group.clone(),
        limits: Vec::new(),
        connect_timeout: None,
        response_timeout: None,
        total_timeout: None,
        isolation: None,
        retries: None,
        breaker: None,
        fallback: None,
        headers: r.headers.clone(),
        cors: r.cors.clone(),
    }
}

/// `[apps]`: the registry is loaded here, so `check` validates the apps file too.
/// `[access_log]`: `path` is a file (relative to the config's folder) or `"-"` for
/// standard output.
fn validate_access_log(
    p: &mut Problems,
    file: &FileConfig,
    base_dir: Option<&Path>,
) -> Option<AccessLogConfig> {
    let a = file.access_log.as_ref()?;
    let path = match a.path.as_str() {
        "" => {
            p.add(
                "access_log.path",
                "must be a file path or \"-\" (standard output)",
            );
            None
        }
        "-" => None,
        f => Some(match base_dir {
            Some(dir) if Path::new(f).is_relative() => dir.join(f),
            _ => PathBuf::from(f),
        }),
    };
    let sample = a.sample.unwrap_or(1.0);
    if !(sample > 0.0 && sample <= 1.0) {
        p.add(
            "access_log.sample",
            "must be above 0 and at most 1 (the share of requests logged)",
        );
    }
    let buffer_bytes = p.size("access_log.buffer", &a.buffer, 1 << 20);
    if !(4096..=64 << 20).contains(&buffer_bytes) {
        p.add("access_log.buffer", "must be between 4KiB and 64MiB");
    }
    Some(AccessLogConfig {
        path,
        sample,
        buffer_bytes: buffer_bytes as usize,
    })
}

fn validate_apps(
    p: &mut Problems,
    file: &FileConfig,
    base_dir: Option<&Path>,
    routes: &[RouteConfig],
) -> AppsConfig {
    let section = file.apps.as_ref();
    let timestamp_window = p.duration(
        "apps.timestamp_window",
        &section.and_then(|a| a.timestamp_window.clone()),
        Duration::from_secs(300),
    );
    let mut registry = AppRegistry::default();
    let mut source = AppsSource::File;
    match section {
        Some(AppsSectionFile {
            redis: Some(url),
            file,
            ..
        }) => {
            if file.is_some() {
                p.add("apps.redis", "set either apps.file or apps.redis, not both");
            }
            let target = validate_redis(p, "apps.redis", url, base_dir);
            source = AppsSource::Redis {
                target: Box::new(target.unwrap_or_else(|| RedisTarget::url("redis://unset"))),
                cache_ttl: p.duration(
                    "apps.cache_ttl",
                    &section.and_then(|a| a.cache_ttl.clone()),
                    Duration::from_secs(30),
                ),
                cache_size: p.int(
                    "apps.cache_size",
                    section.and_then(|a| a.cache_size),
                    100_000,
                    16,
                    1 << 26,
                ) as usize,
            };
        }
        Some(AppsSectionFile {
            file: Some(name), ..
        }) => {
            let path = base_dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
            match super::apps::load_file(&path) {
                Ok(r) => registry = r,
                Err(errors) => p.0.extend(errors),
            }
        }
        _ => {
            if let Some(i) = routes.iter().position(|r| r.auth != AuthMode::None) {
                p.add(
                    format!("routes[{i}].auth"),
                    "needs an app registry: set [apps] file",
                );
            }
        }
    }
    let replay_capacity = p.int(
        "apps.replay_capacity",
        section.and_then(|a| a.replay_capacity),
        DEFAULT_REPLAY_CAPACITY,
        1024,
        1 << 34,
    ) as usize;
    let max_buffered_bytes = p.size(
        "apps.max_buffered_bytes",
        &section.and_then(|a| a.max_buffered_bytes.clone()),
        64 << 20,
    );
    AppsConfig {
        registry: Arc::new(registry),
        timestamp_window,
        replay_capacity,
        max_buffered_bytes,
        source,
    }
}

/// Names must be unique, and the router must accept every pattern.
fn check_routes(p: &mut Problems, routes: &[RouteConfig]) {
    let mut names = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(first) = names.insert(r.name.as_str(), i) {
            p.add(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?} (also routes[{first}])", r.name),
            );
        }
    }
    if let Err(errors) = build_router(routes) {
        for e in errors {
            p.add(e.path, e.message);
        }
    }
}
