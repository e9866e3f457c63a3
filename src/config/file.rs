//! `FileConfig`: the TOML file exactly as written, before any validation.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored knob.
//! Values that need interpretation (durations, sizes, addresses) stay strings here and are
//! checked in `validate`, where each problem can be reported with its path.

use super::file_redis::RedisFile;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    pub apps: Option<AppsSectionFile>,
    pub traffic: Option<TrafficFile>,
    pub cluster: Option<ClusterFile>,
    pub access_log: Option<AccessLogFile>,
    #[serde(default)]
    pub isolation: Vec<IsolationFile>,
    pub tls: Option<TlsFile>,
}

/// `[tls]`: HTTPS listeners and the certificates they serve.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    #[serde(default)]
    pub listen: Vec<ListenFile>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
    #[serde(default)]
    pub certs: Vec<TlsCertFile>,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: Option<String>,
    /// `"optional"` (the default with `client_ca`) or `"required"`.
    pub client_auth: Option<String>,
    /// Session resumption (default true).
    pub session_resumption: Option<bool>,
}

/// One `[[tls.certs]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertFile {
    pub cert: String,
    pub key: String,
    pub names: Option<Vec<String>>,
}

/// `[access_log]`: one JSON line per request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    pub path: String,
    pub sample: Option<f64>,
    pub buffer: Option<NumOrString>,
}

/// One `[[isolation]]` group (bulkhead).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationFile {
    pub name: String,
    pub max_in_flight: i64,
    pub queue: Option<i64>,
    pub queue_timeout: Option<String>,
}

/// `[traffic]`: how limits are held on this gateway.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficFile {
    pub state_file: Option<String>,
    pub utc_offset: Option<String>,
    pub reconcile_interval: Option<String>,
    pub max_keys_per_worker: Option<i64>,
}

/// `[cluster]`: limits shared by every gateway using this Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub redis: Option<RedisFile>,
    pub gateways: Option<i64>,
    pub lease_interval: Option<String>,
    pub gateway_id: Option<String>,
}

/// One entry of a route's `limits`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFile {
    pub key: String,
    pub rate: Option<String>,
    pub quota: Option<String>,
    pub burst: Option<i64>,
    pub name: Option<String>,
    pub shared: Option<String>,
    pub utc_offset: Option<String>,
    pub groups: Option<std::collections::BTreeMap<String, f64>>,
    pub group_by: Option<String>,
    pub default_group: Option<String>,
}

/// `[apps]`: where the app registry lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppsSectionFile {
    pub file: Option<String>,
    pub redis: Option<RedisFile>,
    pub timestamp_window: Option<String>,
    pub replay_capacity: Option<i64>,
    pub max_buffered_bytes: Option<NumOrString>,
    pub cache_ttl: Option<String>,
    pub cache_size: Option<i64>,
}

/// A number or a string; used for knobs like `workers = "auto" | 4` and sizes `"8MiB" | 8388608`.
///
/// Deserialized by hand rather than `#[serde(untagged)]`, whose error ("data did not match
/// any variant of untagged enum NumOrString") names a Rust type instead of the value.
#[derive(Debug, Clone)]
pub enum NumOrString {
    Num(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for NumOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumOrString, E> {
                Ok(NumOrString::Num(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumOrString, E> {
                i64::try_from(v)
                    .map(NumOrString::Num)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NumOrString, E> {
                Ok(NumOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for NumOrString {
    /// As written in TOML: `4` or `"auto"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumOrString::Num(n) => write!(f, "{n}"),
            NumOrString::Str(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<Vec<ListenFile>>,
    pub workers: Option<NumOrString>,
    pub driver: Option<String>,
    pub cpus: Option<Vec<i64>>,
    pub uring_entries: Option<i64>,
    pub sqpoll_idle: Option<String>,
    pub max_connections_per_worker: Option<i64>,
    pub backlog: Option<i64>,
    pub drain_timeout: Option<String>,
    pub head_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_loop_delay: Option<String>,
    pub min_body_rate: Option<NumOrString>,
    pub max_header_bytes: Option<NumOrString>,
    pub max_headers: Option<i64>,
    pub max_uri_bytes: Option<NumOrString>,
    pub max_body_bytes: Option<NumOrString>,
    pub trusted_proxies: Option<Vec<String>>,
    /// Replaced by `trusted_proxies`; read only to say so.
    pub trust_forwarded: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub watch: Option<bool>,
    pub metrics: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: String,
    pub targets: Vec<TargetFile>,
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_idle_per_target: Option<i64>,
    pub max_connections_per_target: Option<i64>,
    pub idle_timeout: Option<String>,
    pub health: Option<HealthFile>,
    pub outlier: Option<OutlierFile>,
    pub breaker: Option<BreakerFile>,
    /// TLS to the targets: `tls = true`, then optionally `sni`, `ca` and a client
    /// `cert`/`key`.
    pub tls: Option<bool>,
    pub sni: Option<String>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// An upstream's active `health` checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy: Option<i64>,
    pub unhealthy: Option<i64>,
}

/// An upstream's passive `outlier` ejection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    pub consecutive_failures: Option<i64>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
}

/// A data-plane listener: `"host:port"` or `{ addr = "host:port", proxy_protocol = true }`
/// (deserialized by hand for the same reason as `TargetFile`).
#[derive(Debug, Clone)]
pub enum ListenFile {
    Addr(String),
    Table(ListenTableFile),
}

impl<'de> Deserialize<'de> for ListenFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListenFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an address \"host:port\" or a table { addr = \"host:port\", proxy_protocol = true }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenFile, E> {
                Ok(ListenFile::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ListenFile, A::Error> {
                ListenTableFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ListenFile::Table)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTableFile {
    pub addr: String,
    pub proxy_protocol: Option<bool>,
}

/// `"host:port"` or `{ addr = "host:port", weight = 3 }`. Deserialized by hand rather than
/// `#[serde(untagged)]`, so a bad table reports its own problem (an unknown field, a wrong
/// type) instead of "data did not match any variant of untagged enum TargetFile".
#[derive(Debug, Clone)]
pub enum TargetFile {
    Addr(String),
    Weighted(WeightedTargetFile),
}

impl<'de> Deserialize<'de> for TargetFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TargetFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an address \"host:port\" or a table { addr = \"host:port\", weight = N }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetFile, E> {
                Ok(TargetFile::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TargetFile, A::Error> {
                WeightedTargetFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TargetFile::Weighted)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTargetFile {
    pub addr: String,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub host: Option<String>,
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub upstream: String,
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    pub max_body_bytes: Option<NumOrString>,
    pub group: Option<String>,
    pub auth: Option<String>,
    #[serde(default)]
    pub limits: Vec<LimitFile>,
    pub timeouts: Option<TimeoutsFile>,
    pub isolation: Option<String>,
    pub retries: Option<RetriesFile>,
    pub breaker: Option<BreakerFile>,
    pub fallback: Option<FallbackFile>,
    pub headers: Option<super::file_filters::HeadersFile>,
    pub cors: Option<super::file_filters::CorsFile>,
}

/// A route's `timeouts`: override its upstream's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub total: Option<String>,
}

/// A route's `retries`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    pub attempts: Option<i64>,
    pub on_status: Option<Vec<i64>>,
    pub budget: Option<f64>,
}

/// A route's `breaker`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    pub mode: Option<String>,
    pub consecutive_failures: Option<i64>,
    pub error_rate: Option<f64>,
    pub window: Option<String>,
    pub min_requests: Option<i64>,
    pub open_for: Option<String>,
    pub probes: Option<i64>,
    pub k: Option<f64>,
    pub failure_on: Option<Vec<String>>,
}

/// A route's `fallback`: the response given instead of an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackFile {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub file: Option<String>,
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}
