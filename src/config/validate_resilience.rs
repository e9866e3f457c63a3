//! Validation of a route's `timeouts`, `breaker` and `fallback`.

use std::path::Path;
use std::time::Duration;

use super::file::{BreakerFile, FallbackFile, FileConfig, RouteFile, UpstreamFile};
use super::model::{BreakerMode, FailureOn, Fallback, Retries, RouteBreaker};
use super::model_resilience::{BreakerConfig, BulkheadConfig, HealthCheckConfig, OutlierConfig};
use super::problems::Problems;

const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
const DEFAULT_CONSECUTIVE: u32 = 5;
const DEFAULT_MIN_REQUESTS: i64 = 20;
const DEFAULT_PROBES: i64 = 3;
const DEFAULT_K: f64 = 2.0;
/// A fallback body is held in memory by every worker.
const MAX_FALLBACK_BODY: u64 = 1 << 20;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_millis(100);

/// An upstream's per-target `breaker`: the route breaker's knobs, with failures fixed to
/// connect, timeout and 5xx.
pub(super) fn validate_target_breaker(
    p: &mut Problems,
    i: usize,
    u: &UpstreamFile,
) -> Option<BreakerConfig> {
    let b = u.breaker.as_ref()?;
    let at = |field: &str| format!("upstreams[{i}].breaker.{field}");
    for (field, set) in [
        ("mode", b.mode.is_some()),
        ("k", b.k.is_some()),
        ("failure_on", b.failure_on.is_some()),
    ] {
        if set {
            p.add(
                at(field),
                "not for a target breaker (it counts connect failures, timeouts and 5xx)",
            );
        }
    }
    let window = p.duration(&at("window"), &b.window, DEFAULT_WINDOW);
    Some(breaker_config(p, &at, b, window))
}

/// An upstream's active `health` checks and passive `outlier` ejection.
pub(super) fn validate_health(
    p: &mut Problems,
    i: usize,
    u: &UpstreamFile,
) -> (Option<HealthCheckConfig>, Option<OutlierConfig>) {
    let at = |field: &str| format!("upstreams[{i}].{field}");
    let health = u.health.as_ref().map(|h| {
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                at("health.path"),
                "must start with '/' and hold no spaces or control bytes",
            );
        }
        let interval = p.duration(&at("health.interval"), &h.interval, Duration::from_secs(5));
        let timeout = p.duration(&at("health.timeout"), &h.timeout, Duration::from_secs(1));
        if timeout > interval {
            p.add(at("health.timeout"), "must not exceed health.interval");
        }
        HealthCheckConfig {
            path,
            interval,
            timeout,
            healthy: p.int(&at("health.healthy"), h.healthy, 2, 1, 1000) as u32,
            unhealthy: p.int(&at("health.unhealthy"), h.unhealthy, 3, 1, 1000) as u32,
        }
    });
    let outlier = u.outlier.as_ref().map(|o| {
        let base = p.duration(
            &at("outlier.base_ejection"),
            &o.base_ejection,
            Duration::from_secs(10),
        );
        let max = p.duration(
            &at("outlier.max_ejection"),
            &o.max_ejection,
            Duration::from_secs(300),
        );
        if max < base {
            p.add(
                at("outlier.max_ejection"),
                "must be at least outlier.base_ejection",
            );
        }
        OutlierConfig {
            consecutive_failures: p.int(
                &at("outlier.consecutive_failures"),
                o.consecutive_failures,
                5,
                1,
                1_000_000,
            ) as u32,
            base_ejection: base,
            max_ejection: max,
        }
    });
    (health, outlier)
}

/// The route's `retries`.
pub(super) fn validate_retries(p: &mut Problems, i: usize, r: &RouteFile) -> Option<Retries> {
    let t = r.retries.as_ref()?;
    let at = |field: &str| format!("routes[{i}].retries.{field}");
    let attempts = p.int(&at("attempts"), t.attempts, 1, 0, 10) as u32;
    let mut on_status = Vec::new();
    for (j, &s) in t.on_status.iter().flatten().enumerate() {
        on_status.push(p.int(&format!("{}[{j}]", at("on_status")), Some(s), 503, 400, 599) as u16);
    }
    let budget = t.budget.unwrap_or(0.2);
    if !(budget > 0.0 && budget <= 1.0) {
        p.add(
            at("budget"),
            "must be above 0 and at most 1 (retries per request)",
        );
    }
    Some(Retries {
        attempts,
        on_status,
        budget,
    })
}

/// The `[[isolation]]` groups.
pub(super) fn validate_isolation(p: &mut Problems, file: &FileConfig) -> Vec<BulkheadConfig> {
    let mut groups: Vec<BulkheadConfig> = Vec::new();
    for (i, g) in file.isolation.iter().enumerate() {
        let at = |field: &str| format!("isolation[{i}].{field}");
        if g.name.is_empty() {
            p.add(at("name"), "must not be empty");
        } else if let Some(j) = groups.iter().position(|o| o.name == g.name) {
            p.add(
                at("name"),
                format!(
                    "duplicate isolation group {:?} (also isolation[{j}])",
                    g.name
                ),
            );
        }
        groups.push(BulkheadConfig {
            name: g.name.clone(),
            max_in_flight: p.int(
                &at("max_in_flight"),
                Some(g.max_in_flight),
                1,
                1,
                10_000_000,
            ) as usize,
            queue: p.int(&at("queue"), g.queue, 0, 0, 10_000_000) as usize,
            queue_timeout: p.duration(
                &at("queue_timeout"),
                &g.queue_timeout,
                DEFAULT_QUEUE_TIMEOUT,
            ),
        });
    }
    groups
}

/// The index of the route's isolation group.
pub(super) fn route_isolation(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    groups: &[BulkheadConfig],
) -> Option<usize> {
    let name = r.isolation.as_ref()?;
    let found = groups.iter().position(|g| &g.name == name);
    if found.is_none() {
        p.add(
            format!("routes[{i}].isolation"),
            format!("unknown isolation group {name:?} (define it in [[isolation]])"),
        );
    }
    found
}

/// The route's connect, response and total timeouts (`None`: the upstream's, and no
/// total).
pub(super) fn validate_timeouts(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let Some(t) = &r.timeouts else {
        return (None, None, None);
    };
    let mut one = |field: &str, v: &Option<String>| {
        v.as_ref().map(|_| {
            p.duration(
                &format!("routes[{i}].timeouts.{field}"),
                v,
                Duration::from_secs(1),
            )
        })
    };
    (
        one("connect", &t.connect),
        one("response", &t.response),
        one("total", &t.total),
    )
}

pub(super) fn validate_breaker(p: &mut Problems, i: usize, r: &RouteFile) -> Option<RouteBreaker> {
    let b = r.breaker.as_ref()?;
    let at = |field: &str| format!("routes[{i}].breaker.{field}");
    let window = p.duration(&at("window"), &b.window, DEFAULT_WINDOW);
    let failure_on = failure_on(p, &at("failure_on"), b);
    let mode = match b.mode.as_deref() {
        None | Some("breaker") => {
            if b.k.is_some() {
                p.add(at("k"), "only `mode = \"adaptive\"` has a k");
            }
            BreakerMode::Breaker(breaker_config(p, &at, b, window))
        }
        Some("adaptive") => {
            for (field, set) in [
                ("consecutive_failures", b.consecutive_failures.is_some()),
                ("error_rate", b.error_rate.is_some()),
                ("min_requests", b.min_requests.is_some()),
                ("open_for", b.open_for.is_some()),
                ("probes", b.probes.is_some()),
            ] {
                if set {
                    p.add(
                        at(field),
                        "not used with `mode = \"adaptive\"` (it has k and window)",
                    );
                }
            }
            let k = b.k.unwrap_or(DEFAULT_K);
            if !(k.is_finite() && (1.0..=100.0).contains(&k)) {
                p.add(
                    at("k"),
                    "must be between 1 and 100 (2 sends twice what is accepted)",
                );
            }
            BreakerMode::Adaptive { k, window }
        }
        Some(other) => {
            p.add(
                at("mode"),
                format!("unknown mode {other:?}: expected \"breaker\" or \"adaptive\""),
            );
            BreakerMode::Adaptive {
                k: DEFAULT_K,
                window,
            }
        }
    };
    Some(RouteBreaker { mode, failure_on })
}

fn breaker_config(
    p: &mut Problems,
    at: &dyn Fn(&str) -> String,
    b: &BreakerFile,
    window: Duration,
) -> BreakerConfig {
    let consecutive_failures = b
        .consecutive_failures
        .map(|n| p.int(&at("consecutive_failures"), Some(n), 5, 1, 1_000_000) as u32);
    if let Some(rate) = b.error_rate {
        if !(rate > 0.0 && rate <= 1.0) {
            p.add(at("error_rate"), "must be above 0 and at most 1");
        }
    }
    BreakerConfig {
        // Neither given: trip on failures in a row.
        consecutive_failures: consecutive_failures
            .or(b.error_rate.is_none().then_some(DEFAULT_CONSECUTIVE)),
        error_rate: b.error_rate,
        window,
        min_requests: p.int(
            &at("min_requests"),
            b.min_requests,
            DEFAULT_MIN_REQUESTS,
            1,
            1_000_000_000,
        ) as u32,
        open_for: p.duration(&at("open_for"), &b.open_for, DEFAULT_OPEN_FOR),
        probes: p.int(&at("probes"), b.probes, DEFAULT_PROBES, 1, 10_000) as u32,
    }
}

fn failure_on(p: &mut Problems, path: &str, b: &BreakerFile) -> FailureOn {
    let Some(list) = &b.failure_on else {
        return FailureOn {
            connect: true,
            timeout: true,
            status_5xx: true,
        };
    };
    let mut on = FailureOn {
        connect: false,
        timeout: false,
        status_5xx: false,
    };
    for (j, what) in list.iter().enumerate() {
        match what.as_str() {
            "connect" => on.connect = true,
            "timeout" => on.timeout = true,
            "5xx" => on.status_5xx = true,
            other => p.add(
                format!("{path}[{j}]"),
                format!("unknown failure {other:?}: expected \"connect\", \"timeout\" or \"5xx\""),
            ),
        }
    }
    if list.is_empty() {
        p.add(
            path,
            "must name at least one of \"connect\", \"timeout\", \"5xx\"",
        );
    }
    on
}

pub(super) fn validate_fallback(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    base_dir: Option<&Path>,
) -> Option<Fallback> {
    let f: &FallbackFile = r.fallback.as_ref()?;
    let at = |field: &str| format!("routes[{i}].fallback.{field}");
    let status = p.int(&at("status"), f.status, 200, 200, 599) as u16;
    let body: Vec<u8> = match (&f.body, &f.file) {
        (Some(_), Some(_)) => {
            p.add(at("file"), "give `body` or `file`, not both");
            Vec::new()
        }
        (Some(body), None) => body.clone().into_bytes(),
        (None, Some(file)) => {
            let path = match base_dir {
                Some(dir) if Path::new(file).is_relative() => dir.join(file),
                _ => Path::new(file).to_path_buf(),
            };
            match crate::files::read_bounded(&path, MAX_FALLBACK_BODY) {
                Ok(bytes) => bytes,
                Err(e) => {
                    p.add(at("file"), format!("cannot read {e}"));
                    Vec::new()
                }
            }
        }
        (None, None) => Vec::new(),
    };
    if body.len() as u64 > MAX_FALLBACK_BODY {
        p.add(at("body"), "larger than 1 MiB");
    }
    let content_type = f
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    let mut headers = Vec::new();
    for (name, value) in &f.headers {
        let name_ok = !name.is_empty() && name.bytes().all(crate::http::is_token_byte);
        let lower = name.to_ascii_lowercase();
        let reserved = matches!(
            lower.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "content-type"
                | "date"
                | "x-request-id"
        );
        if !name_ok || reserved {
            p.add(
                at(&format!("headers.{name}")),
                "must be a header name other than content-length, transfer-encoding, connection, content-type, date and x-request-id (the gateway writes those)",
            );
        } else if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            p.add(
                at(&format!("headers.{name}")),
                "value must not contain CR, LF or NUL",
            );
        } else {
            headers.push((lower, value.clone()));
        }
    }
    if content_type
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        p.add(at("content_type"), "must not contain CR, LF or NUL");
    }
    Some(Fallback {
        status,
        content_type,
        headers,
        body: body.into(),
    })
}
