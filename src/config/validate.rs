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
use super::cidr::Cidr;
use super::file::{AppsSectionFile, FileConfig, ListenFile, NumOrString, RouteFile};
use super::model::*;
use super::problems::{ConfigError, Problems};
use super::routing::build_router;
use super::units::{parse_duration, parse_size};
use super::validate_limits::{check_shared_limits, validate_route_limits, validate_traffic};
use super::validate_resilience::{
    route_isolation, validate_breaker, validate_fallback, validate_isolation, validate_retries,
    validate_timeouts,
};
use super::validate_tls::validate_tls;
use super::validate_upstream::validate_upstream;

/// 16 Mi nonces: 55 000 signed requests per second sustained over the default 300 s
/// window, about 0.5 GiB when full (memory is used as nonces arrive, not up front).
const DEFAULT_REPLAY_CAPACITY: i64 = 16 << 20;
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
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

fn validate_server(p: &mut Problems, file: &FileConfig) -> ServerConfig {
    let s = &file.server;
    let listen_entries = s
        .listen
        .clone()
        .unwrap_or_else(|| vec![ListenFile::Addr(DEFAULT_LISTEN.to_string())]);
    if listen_entries.is_empty() {
        p.add("server.listen", "at least one address is required");
    }
    let listen: Vec<ListenConfig> = listen_entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let (addr, proxy_protocol) = match entry {
                ListenFile::Addr(a) => (a, false),
                ListenFile::Table(t) => (&t.addr, t.proxy_protocol.unwrap_or(false)),
            };
            let addr = p.socket_addr(&format!("server.listen[{i}]"), addr)?;
            Some(ListenConfig {
                addr,
                proxy_protocol,
                tls: false,
            })
        })
        .collect();
    for (i, l) in listen.iter().enumerate() {
        if l.addr.port() != 0 && listen[..i].iter().any(|e| e.addr == l.addr) {
            p.add(
                format!("server.listen[{i}]"),
                format!("{} is listed twice", l.addr),
            );
        }
    }
    if s.trust_forwarded.is_some() {
        p.add(
            "server.trust_forwarded",
            "replaced by server.trusted_proxies = [\"10.0.0.0/8\", ...]: the addresses of the balancers whose X-Forwarded-For is believed",
        );
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| match Cidr::parse(c) {
            Ok(c) => Some(c),
            Err(e) => {
                p.add(format!("server.trusted_proxies[{i}]"), e);
                None
            }
        })
        .collect();
    let workers = match &s.workers {
        None => WorkerCount::Auto,
        Some(NumOrString::Str(s)) if s == "auto" => WorkerCount::Auto,
        Some(NumOrString::Num(n)) if (1..=1024).contains(n) => WorkerCount::Fixed(*n as usize),
        Some(other) => {
            p.add(
                "server.workers",
                format!("invalid value {other}: expected \"auto\" or a number from 1 to 1024"),
            );
            WorkerCount::Auto
        }
    };
    let driver = match s.driver.as_deref().unwrap_or("auto") {
        "auto" => DriverChoice::Auto,
        "io_uring" => DriverChoice::IoUring,
        "epoll" => DriverChoice::Epoll,
        other => {
            p.add(
                "server.driver",
                format!("unknown driver {other:?}: expected \"auto\", \"io_uring\" or \"epoll\""),
            );
            DriverChoice::Auto
        }
    };
    let cpus = s.cpus.as_ref().map(|cpus| {
        if cpus.is_empty() {
            p.add("server.cpus", "must list at least one CPU when set");
        }
        cpus.iter()
            .enumerate()
            .filter_map(|(i, &c)| match usize::try_from(c) {
                Ok(c) if c < 4096 => Some(c),
                _ => {
                    p.add(
                        format!("server.cpus[{i}]"),
                        format!("invalid CPU number {c}"),
                    );
                    None
                }
            })
            .collect()
    });
    let sqpoll_idle = s
        .sqpoll_idle
        .as_ref()
        .map(|v| p.duration("server.sqpoll_idle", &Some(v.clone()), Duration::ZERO));
    let max_header_bytes = p.size("server.max_header_bytes", &s.max_header_bytes, 16 * 1024);
    if !(1024..=1 << 20).contains(&max_header_bytes) {
        p.add("server.max_header_bytes", "must be between 1KiB and 1MiB");
    }
    let max_uri_bytes = p.size("server.max_uri_bytes", &s.max_uri_bytes, 8 * 1024);
    if max_uri_bytes == 0 || max_uri_bytes > max_header_bytes {
        p.add(
            "server.max_uri_bytes",
            "must be at least 1 and at most server.max_header_bytes",
        );
    }
    let limits = HttpLimits {
        max_header_bytes: max_header_bytes as usize,
        max_headers: p.int("server.max_headers", s.max_headers, 100, 1, 1024) as usize,
        max_uri_bytes: max_uri_bytes as usize,
        max_body_bytes: p.size("server.max_body_bytes", &s.max_body_bytes, 8 << 20),
    };
    ServerConfig {
        listen,
        workers,
        driver,
        cpus,
        uring_entries: p.int("server.uring_entries", s.uring_entries, 1024, 256, 32768) as u32,
        sqpoll_idle,
        max_connections_per_worker: p.int(
            "server.max_connections_per_worker",
            s.max_connections_per_worker,
            16384,
            1,
            1 << 22,
        ) as usize,
        backlog: p.int("server.backlog", s.backlog, 4096, 1, 1 << 20) as i32,
        drain_timeout: p.duration(
            "server.drain_timeout",
            &s.drain_timeout,
            Duration::from_secs(30),
        ),
        head_timeout: p.duration(
            "server.head_timeout",
            &s.head_timeout,
            Duration::from_secs(10),
        ),
        keepalive_timeout: p.duration(
            "server.keepalive_timeout",
            &s.keepalive_timeout,
            Duration::from_secs(60),
        ),
        body_timeout: p.duration(
            "server.body_timeout",
            &s.body_timeout,
            Duration::from_secs(30),
        ),
        max_loop_delay: max_loop_delay(p, &s.max_loop_delay),
        min_body_rate: min_body_rate(p, &s.min_body_rate),
        limits,
        trusted_proxies,
    }
}

/// `server.min_body_rate`: bytes a second as a size with `/s` (`"1KiB/s"`, `"500B/s"`),
/// at least 1 byte a second, or `"off"`.
fn min_body_rate(p: &mut Problems, v: &Option<NumOrString>) -> Option<u64> {
    const DEFAULT: u64 = 1024;
    const PATH: &str = "server.min_body_rate";
    let text = match v {
        None => return Some(DEFAULT),
        Some(NumOrString::Str(s)) if s.trim() == "off" => return None,
        Some(NumOrString::Str(s)) => s.trim(),
        Some(NumOrString::Num(_)) => {
            p.add(PATH, "must be a rate such as \"1KiB/s\", or \"off\"");
            return Some(DEFAULT);
        }
    };
    let Some(size) = text.strip_suffix("/s") else {
        p.add(
            PATH,
            format!(
                "invalid rate {text:?}: expected a size a second, such as \"1KiB/s\", or \"off\""
            ),
        );
        return Some(DEFAULT);
    };
    match parse_size(&NumOrString::Str(size.to_string())) {
        Ok(0) => {
            p.add(PATH, "must be at least 1B/s, or \"off\"");
            Some(DEFAULT)
        }
        Ok(n) => Some(n),
        Err(e) => {
            p.add(
                PATH,
                format!("{e}; a rate is a size a second, such as \"1KiB/s\""),
            );
            Some(DEFAULT)
        }
    }
}

/// `server.max_loop_delay`: a duration from 5ms to 10s, or `"off"`. Under 5 ms the
/// worker's tick (10 ms, with a timer of 1 ms grain) would read its own jitter as load.
fn max_loop_delay(p: &mut Problems, v: &Option<String>) -> Option<Duration> {
    const DEFAULT: Duration = Duration::from_millis(50);
    const PATH: &str = "server.max_loop_delay";
    let range = Duration::from_millis(5)..=Duration::from_secs(10);
    match v.as_deref().map(|v| (v, parse_duration(v))) {
        None => Some(DEFAULT),
        Some(("off", _)) => None,
        Some((_, Ok(d))) if range.contains(&d) => Some(d),
        Some((_, Ok(_))) => {
            p.add(PATH, "must be between 5ms and 10s, or \"off\"");
            Some(DEFAULT)
        }
        Some((_, Err(e))) => {
            p.add(PATH, format!("{e}; or \"off\""));
            Some(DEFAULT)
        }
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
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                p.add(
                    "apps.redis",
                    format!("invalid URL {url:?}: expected redis://host:port/db"),
                );
            }
            source = AppsSource::Redis {
                url: url.clone(),
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
