//! `GET /openapi.json`: an OpenAPI 3.1 document of the configured routes, for the
//! developers calling them. Each route's path (`{name}` segments become path parameters;
//! a prefix route `/x/*` is listed as written, with `x-ringgate-match: prefix`), its
//! methods (all common ones when it names none), `auth = "hmac"` as a security
//! requirement, and its rate limits and quotas as the `x-ringgate-limits` extension.

use serde_json::{json, Map, Value};

use crate::config::model_limits::{Amount, LimitSpec};
use crate::config::{AuthMode, RouteConfig};
use crate::snapshot::Snapshot;

/// Methods a route without `methods` is listed under.
const ALL_METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

pub fn document(snap: &Snapshot) -> Value {
    let mut paths = Map::new();
    for route in &snap.config.routes {
        let item = paths
            .entry(route.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(item) = item else {
            continue;
        };
        let methods: Vec<&str> = if route.methods.is_empty() {
            ALL_METHODS.to_vec()
        } else {
            route.methods.iter().map(String::as_str).collect()
        };
        for method in methods {
            let key = method.to_ascii_lowercase();
            // Two routes on one path and method differ by host: the first is listed.
            if !ALL_METHODS.contains(&method) || item.contains_key(&key) {
                continue;
            }
            item.insert(key, operation(route, method));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ringgate routes",
            "version": format!("generation {}", snap.generation),
            "description": "The routes this gateway serves, generated from its configuration.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "rgHmac": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Rg-Signature",
                    "description": "RG-HMAC-SHA256: the app key in X-Rg-Key, X-Rg-Timestamp, X-Rg-Nonce, and an HMAC-SHA256 signature of the canonical request in X-Rg-Signature (see `ringgate sign`).",
                },
                "rgMtls": {
                    "type": "mutualTLS",
                    "description": "A client certificate issued by the gateway's client CA and registered to an app (by SHA-256 fingerprint or subject).",
                }
            }
        }
    })
}

fn operation(route: &RouteConfig, method: &str) -> Value {
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        json!(format!("{}.{}", route.name, method.to_ascii_lowercase())),
    );
    op.insert("summary".into(), json!(route.name));
    let params: Vec<Value> = path_params(&route.path)
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    op.insert(
        "responses".into(),
        json!({ "default": { "description": "The upstream's response, or a gateway error as {\"error\":{\"code\",\"message\",\"request_id\"}}." } }),
    );
    match route.auth {
        AuthMode::Hmac => {
            op.insert("security".into(), json!([{ "rgHmac": [] }]));
        }
        AuthMode::Mtls => {
            op.insert("security".into(), json!([{ "rgMtls": [] }]));
        }
        AuthMode::None => {}
    }
    if route.path.ends_with("/*") {
        op.insert("x-ringgate-match".into(), json!("prefix"));
    }
    if !route.limits.is_empty() {
        op.insert(
            "x-ringgate-limits".into(),
            Value::Array(route.limits.iter().map(limit).collect()),
        );
    }
    Value::Object(op)
}

/// The `{name}` segments of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn limit(l: &LimitSpec) -> Value {
    let key = l.key.to_string();
    match &l.amount {
        Amount::Rate(r) => json!({
            "name": l.name,
            "key": key,
            "rate": format!("{}/{}", r.count, if r.window_secs == 60 { "min" } else { "s" }),
            "burst": r.burst,
        }),
        Amount::Quota { per_day, .. } => json!({
            "name": l.name,
            "key": key,
            "quota": format!("{per_day}/day"),
        }),
    }
}
