//! Validation of `[traffic]`, `[cluster]` and each route's `limits`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use super::file::{FileConfig, LimitFile, RouteFile};
use super::model::{AuthMode, ClusterConfig, RouteConfig, TrafficConfig};
use super::model_limits::{
    parse_quota, parse_utc_offset, Amount, GroupBy, Groups, KeyBy, LimitSpec, Rate,
    MAX_LIMITS_PER_ROUTE,
};
use super::problems::Problems;
use super::redis_target::{validate_redis, RedisTarget};

const DEFAULT_RECONCILE: Duration = Duration::from_millis(10);
const DEFAULT_LEASE: Duration = Duration::from_millis(100);
const DEFAULT_MAX_KEYS: i64 = 100_000;

/// `[traffic]` and `[cluster]`; also returns the default UTC offset of daily quotas.
pub(super) fn validate_traffic(
    p: &mut Problems,
    file: &FileConfig,
    base_dir: Option<&Path>,
) -> (TrafficConfig, i32) {
    let t = file.traffic.as_ref();
    let offset = match t.and_then(|t| t.utc_offset.as_deref()) {
        None => 0,
        Some(s) => parse_utc_offset(s).unwrap_or_else(|e| {
            p.add("traffic.utc_offset", e);
            0
        }),
    };
    let reconcile_interval = p.duration(
        "traffic.reconcile_interval",
        &t.and_then(|t| t.reconcile_interval.clone()),
        DEFAULT_RECONCILE,
    );
    if reconcile_interval > Duration::from_secs(1) {
        p.add(
            "traffic.reconcile_interval",
            "must be at most 1s: shares move between cores once per interval",
        );
    }
    let max_keys = p.int(
        "traffic.max_keys_per_worker",
        t.and_then(|t| t.max_keys_per_worker),
        DEFAULT_MAX_KEYS,
        16,
        100_000_000,
    ) as usize;
    let state_file = t.and_then(|t| t.state_file.as_deref()).map(|f| {
        if f.is_empty() {
            p.add("traffic.state_file", "must not be empty");
        }
        match base_dir {
            Some(dir) if Path::new(f).is_relative() => dir.join(f),
            _ => Path::new(f).to_path_buf(),
        }
    });
    let cluster = file.cluster.as_ref().map(|c| {
        let redis = match &c.redis {
            Some(file) => validate_redis(p, "cluster.redis", file, base_dir),
            None => {
                p.add(
                    "cluster.redis",
                    "required: a Redis URL such as \"redis://10.0.0.5:6379/0\", or a table with `sentinels`",
                );
                None
            }
        };
        let gateways = c
            .gateways
            .map(|n| p.int("cluster.gateways", Some(n), 1, 1, 10_000) as usize);
        let lease_interval = p.duration("cluster.lease_interval", &c.lease_interval, DEFAULT_LEASE);
        if lease_interval > Duration::from_secs(10) {
            p.add("cluster.lease_interval", "must be at most 10s");
        }
        if lease_interval < reconcile_interval {
            p.add(
                "cluster.lease_interval",
                "must be at least traffic.reconcile_interval (leases are sent from its rounds)",
            );
        }
        if state_file.is_some() {
            p.add(
                "traffic.state_file",
                "not used with [cluster]: daily quotas are kept in Redis",
            );
        }
        let gateway_id = match &c.gateway_id {
            Some(id) if id.is_empty() || id.len() > 128 => {
                p.add("cluster.gateway_id", "1 to 128 characters");
                String::new()
            }
            Some(id) => id.clone(),
            None => default_gateway_id(),
        };
        ClusterConfig {
            redis: redis.unwrap_or_else(|| RedisTarget::url("redis://unset")),
            gateways,
            lease_interval,
            gateway_id,
        }
    });
    (
        TrafficConfig {
            state_file,
            reconcile_interval,
            max_keys_per_worker: max_keys,
            cluster,
        },
        offset,
    )
}

fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gateway".into());
    format!("{host}:{}", std::process::id())
}

/// One route's `limits`.
pub(super) fn validate_route_limits(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    auth: AuthMode,
    default_offset: i32,
) -> Vec<LimitSpec> {
    if r.limits.len() > MAX_LIMITS_PER_ROUTE {
        p.add(
            format!("routes[{i}].limits"),
            format!("at most {MAX_LIMITS_PER_ROUTE} limits per route"),
        );
    }
    let mut specs: Vec<LimitSpec> = Vec::new();
    for (j, l) in r.limits.iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].limits[{j}].{field}");
        let Some(spec) = validate_limit(p, &at, l, &r.name, auth, default_offset) else {
            continue;
        };
        if specs.iter().any(|s| s.name == spec.name) {
            p.add(
                at("name"),
                format!(
                    "duplicate limit name {:?} on this route: give each limit a distinct `name`",
                    spec.name
                ),
            );
            continue;
        }
        specs.push(spec);
    }
    specs
}

fn validate_limit(
    p: &mut Problems,
    at: &dyn Fn(&str) -> String,
    l: &LimitFile,
    route: &str,
    auth: AuthMode,
    default_offset: i32,
) -> Option<LimitSpec> {
    let key = KeyBy::parse(&l.key).map_err(|e| p.add(at("key"), e)).ok();
    let needs_app =
        key.as_ref().is_some_and(KeyBy::is_per_app) || l.group_by.as_deref() == Some("app");
    if needs_app && auth == AuthMode::None {
        p.add(
            at("key"),
            "per-app limits need a route whose callers are apps (auth = \"hmac\" or \"mtls\")",
        );
    }
    let amount = match (&l.rate, &l.quota) {
        (Some(rate), None) => {
            if l.utc_offset.is_some() {
                p.add(at("utc_offset"), "only daily quotas have a day to offset");
            }
            Rate::parse(rate)
                .map_err(|e| p.add(at("rate"), e))
                .ok()
                .map(|mut r| {
                    if let Some(b) = l.burst {
                        if !(1..=1 << 40).contains(&b) {
                            p.add(at("burst"), "must be between 1 and 2^40");
                        } else {
                            r.burst = b as f64;
                        }
                    }
                    Amount::Rate(r)
                })
        }
        (None, Some(quota)) => {
            if l.burst.is_some() {
                p.add(at("burst"), "only rates have a burst");
            }
            let offset = match l.utc_offset.as_deref() {
                None => default_offset,
                Some(s) => parse_utc_offset(s).unwrap_or_else(|e| {
                    p.add(at("utc_offset"), e);
                    0
                }),
            };
            parse_quota(quota)
                .map_err(|e| p.add(at("quota"), e))
                .ok()
                .map(|per_day| Amount::Quota {
                    per_day,
                    utc_offset_secs: offset,
                })
        }
        _ => {
            p.add(
                at("rate"),
                "each limit has exactly one of `rate` (\"100/s\", \"600/min\") or `quota` (\"10000/day\")",
            );
            None
        }
    };
    let groups = validate_groups(p, at, l, matches!(amount, Some(Amount::Rate(_))));
    let (key, amount) = (key?, amount?);
    let name = l.name.clone().unwrap_or_else(|| match &amount {
        Amount::Rate(_) => key.to_string(),
        Amount::Quota { .. } => format!("{key}-day"),
    });
    if name.is_empty()
        || name.len() > 64
        || name
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        p.add(
            at("name"),
            "1 to 64 printable ASCII characters, no quotes or backslashes",
        );
    }
    let scope = match &l.shared {
        Some(s) if s.is_empty() => {
            p.add(at("shared"), "must not be empty");
            route.to_owned()
        }
        Some(s) => s.clone(),
        None => route.to_owned(),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&scope, &name).hash(&mut h);
    Some(LimitSpec {
        name,
        scope,
        key,
        amount,
        groups,
        id: h.finish(),
    })
}

fn validate_groups(
    p: &mut Problems,
    at: &dyn Fn(&str) -> String,
    l: &LimitFile,
    is_rate: bool,
) -> Option<Groups> {
    let Some(map) = &l.groups else {
        if l.group_by.is_some() || l.default_group.is_some() {
            p.add(
                at("group_by"),
                "`group_by` and `default_group` need `groups`",
            );
        }
        return None;
    };
    if !is_rate {
        p.add(
            at("groups"),
            "priority groups split a rate; quotas have none",
        );
        return None;
    }
    if map.is_empty() || map.len() > 16 {
        p.add(at("groups"), "1 to 16 groups");
        return None;
    }
    let names: Vec<String> = map.keys().cloned().collect();
    let ratios: Vec<f64> = map.values().copied().collect();
    if ratios
        .iter()
        .any(|r| !(r.is_finite() && *r > 0.0 && *r <= 1.0))
    {
        p.add(at("groups"), "every ratio must be above 0 and at most 1");
        return None;
    }
    let sum: f64 = ratios.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        p.add(
            at("groups"),
            format!("ratios must add up to 1 (they add up to {sum})"),
        );
        return None;
    }
    let by = match l.group_by.as_deref() {
        Some("app") => GroupBy::App,
        Some(s) => match s.strip_prefix("header:") {
            Some(h) if !h.is_empty() && h.bytes().all(crate::http::is_token_byte) => {
                GroupBy::Header(h.to_ascii_lowercase())
            }
            _ => {
                p.add(
                    at("group_by"),
                    format!("{s:?}: expected \"app\" or \"header:<name>\""),
                );
                return None;
            }
        },
        None => {
            p.add(
                at("group_by"),
                "groups need `group_by` (\"app\" or \"header:<name>\")",
            );
            return None;
        }
    };
    // Default: the group with the smallest ratio, the least important one.
    let default = match &l.default_group {
        Some(d) => match names.iter().position(|n| n == d) {
            Some(i) => i,
            None => {
                p.add(
                    at("default_group"),
                    format!("{d:?} is not one of the groups"),
                );
                return None;
            }
        },
        None => (0..ratios.len())
            .min_by(|&a, &b| ratios[a].total_cmp(&ratios[b]))
            .unwrap_or(0),
    };
    Some(Groups {
        names,
        ratios,
        by,
        default,
    })
}

/// Routes sharing a limit (`shared`) must agree on what it is.
pub(super) fn check_shared_limits(p: &mut Problems, routes: &[RouteConfig]) {
    let mut seen: HashMap<u64, (usize, usize)> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        for (j, l) in r.limits.iter().enumerate() {
            if let Some(&(fi, fj)) = seen.get(&l.id) {
                let first = &routes[fi].limits[fj];
                if first.key != l.key || first.amount != l.amount || first.groups != l.groups {
                    p.add(
                        format!("routes[{i}].limits[{j}]"),
                        format!(
                            "shared limit {:?}/{:?} is defined differently on routes[{fi}]",
                            l.scope, l.name
                        ),
                    );
                }
            } else {
                seen.insert(l.id, (i, j));
            }
        }
    }
}
