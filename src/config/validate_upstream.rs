//! Validation of one `[[upstreams]]` entry: name, targets, balancing, timeouts, pooling,
//! health checks, outlier ejection and TLS to the targets.

use std::path::Path;
use std::time::Duration;

use super::file::{TargetFile, UpstreamFile};
use super::model::*;
use super::problems::Problems;
use super::validate_resilience::{validate_health, validate_target_breaker};
use super::validate_tls::validate_upstream_tls;

pub(super) fn validate_upstream(
    p: &mut Problems,
    i: usize,
    u: &UpstreamFile,
    base_dir: Option<&Path>,
) -> UpstreamConfig {
    let at = |field: &str| format!("upstreams[{i}].{field}");
    // The name doubles as the Host sent for requests that had none, so it must be one.
    let valid_name = !u.name.is_empty()
        && u.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid_name {
        p.add(
            at("name"),
            format!(
                "invalid name {:?}: use letters, digits, '.', '-' and '_'",
                u.name
            ),
        );
    }
    if u.targets.is_empty() {
        p.add(at("targets"), "at least one target is required");
    }
    let mut targets = Vec::with_capacity(u.targets.len());
    for (j, t) in u.targets.iter().enumerate() {
        let (addr, weight) = match t {
            TargetFile::Addr(a) => (a.as_str(), None),
            TargetFile::Weighted(w) => (w.addr.as_str(), w.weight),
        };
        let weight = p.int(&at(&format!("targets[{j}].weight")), weight, 1, 1, 10_000) as u32;
        if let Some(addr) = p.socket_addr(&at(&format!("targets[{j}]")), addr) {
            targets.push(Target { addr, weight });
        }
    }
    let hash_on = match u.hash_on.as_deref() {
        None | Some("client_ip") => HashOn::ClientIp,
        Some(h) => match h.strip_prefix("header:") {
            Some(name) if !name.is_empty() && name.bytes().all(crate::http::is_token_byte) => {
                HashOn::Header(name.to_ascii_lowercase())
            }
            _ => {
                p.add(
                    at("hash_on"),
                    format!("invalid value {h:?}: expected \"client_ip\" or \"header:<Name>\""),
                );
                HashOn::ClientIp
            }
        },
    };
    if u.hash_on.is_some() && u.balance.as_deref() != Some("hash") {
        p.add(at("hash_on"), "only applies with balance = \"hash\"");
    }
    let balance = match u.balance.as_deref().unwrap_or("round_robin") {
        "round_robin" => Balance::RoundRobin,
        "random" => Balance::Random,
        "least_outstanding" => Balance::LeastOutstanding,
        "hash" => Balance::Hash(hash_on),
        other => {
            p.add(at("balance"), format!("unknown balance {other:?}: expected round_robin, random, least_outstanding or hash"));
            Balance::RoundRobin
        }
    };
    let (health, outlier) = validate_health(p, i, u);
    UpstreamConfig {
        tls: validate_upstream_tls(p, i, u, base_dir),
        health,
        outlier,
        breaker: validate_target_breaker(p, i, u),
        name: u.name.clone(),
        targets,
        balance,
        connect_timeout: p.duration(
            &at("connect_timeout"),
            &u.connect_timeout,
            Duration::from_secs(2),
        ),
        response_timeout: p.duration(
            &at("response_timeout"),
            &u.response_timeout,
            Duration::from_secs(30),
        ),
        body_timeout: p.duration(
            &at("body_timeout"),
            &u.body_timeout,
            Duration::from_secs(30),
        ),
        max_idle_per_target: u
            .max_idle_per_target
            .map(|n| p.int(&at("max_idle_per_target"), Some(n), 0, 0, 1 << 20) as usize),
        max_connections_per_target: u
            .max_connections_per_target
            .map(|n| p.int(&at("max_connections_per_target"), Some(n), 1, 1, 1 << 20) as usize),
        idle_timeout: p.duration(
            &at("idle_timeout"),
            &u.idle_timeout,
            Duration::from_secs(60),
        ),
    }
}
