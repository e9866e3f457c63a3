//! `Config`: the validated, typed configuration. Every value here has passed `validate`,
//! so the rest of the gateway never re-checks it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The codec's limits are the codec's type; `[server]` sets them, so they show here too.
pub use crate::http::HttpLimits;

use super::apps::AppRegistry;
use super::cidr::Cidr;
use super::model_limits::LimitSpec;
use super::model_resilience::{BreakerConfig, BulkheadConfig, HealthCheckConfig, OutlierConfig};
use super::redis_target::RedisTarget;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub apps: AppsConfig,
    pub traffic: TrafficConfig,
    /// `[access_log]` (`None`: no access log). Fixed at start.
    pub access_log: Option<AccessLogConfig>,
    /// `[[isolation]]` groups; routes name them by index.
    pub isolation: Vec<BulkheadConfig>,
    /// `[tls]` (`None`: no HTTPS listener).
    pub tls: Option<TlsConfig>,
    /// The files the config read besides itself (certificates, keys, CA files, the apps
    /// file, fallback bodies): the config watcher reloads when one changes.
    pub files: Vec<std::path::PathBuf>,
}

/// `[tls]`, validated: its certificates loaded and checked, and the rustls server
/// config every worker's TLS listeners share (one ticket key rotation for all of them,
/// so a session resumes on whichever worker the client reaches next).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<ListenConfig>,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
    pub certs: Arc<Vec<crate::tls::certs::LoadedCert>>,
    pub resolver: Arc<crate::tls::sni::CertResolver>,
    pub server: Arc<rustls::ServerConfig>,
    /// Whether clients are asked for a certificate (`client_ca`, `client_auth`).
    pub client_auth: ClientAuthMode,
}

/// `tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// No `client_ca`: no certificate is asked for.
    Off,
    /// Verified when presented; a client without one is let in (routes with
    /// `auth = "mtls"` answer it 401).
    Optional,
    /// A client without a verified certificate fails the handshake.
    Required,
}

/// The oldest TLS version offered; nothing older than 1.2 ever is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[access_log]`, validated (the writer that uses it is `crate::access_log`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// `None`: standard output.
    pub path: Option<std::path::PathBuf>,
    /// The share of requests logged (1: all).
    pub sample: f64,
    /// Bytes of lines one worker holds between two hand-overs.
    pub buffer_bytes: usize,
}

/// `[traffic]` and `[cluster]`: how limits are held.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficConfig {
    /// Where daily quotas survive a restart (local mode); `None`: they do not.
    pub state_file: Option<std::path::PathBuf>,
    /// How often the reconciler moves shares and grants between workers (default 10 ms).
    pub reconcile_interval: Duration,
    /// Limit keys (apps, addresses, ...) one worker tracks at most (default 100 000).
    pub max_keys_per_worker: usize,
    pub cluster: Option<ClusterConfig>,
}

/// Limits held across every gateway sharing one Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub redis: RedisTarget,
    /// Gateways in the cluster, for the local fallback; `None`: learned from Redis.
    pub gateways: Option<usize>,
    /// How often token batches and quota units are leased (default 100 ms).
    pub lease_interval: Duration,
    /// This gateway's name in Redis (default: hostname and pid).
    pub gateway_id: String,
}

/// The app registry of this generation and how signatures are checked.
#[derive(Debug, Clone)]
pub struct AppsConfig {
    pub registry: std::sync::Arc<AppRegistry>,
    /// How far a request's timestamp may be from the gateway's clock (default 300 s).
    pub timestamp_window: Duration,
    /// Nonces the replay cache holds (fixed at start; sized as signed requests per
    /// second times the window).
    pub replay_capacity: usize,
    /// Per worker: request bodies held in memory while their signature is pending.
    pub max_buffered_bytes: u64,
    /// Where app records come from.
    pub source: AppsSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppsSource {
    /// `registry` holds every app, loaded from `[apps] file` (or no apps at all).
    File,
    /// Records live in Redis; workers cache them.
    Redis {
        target: Box<RedisTarget>,
        /// How long a cached record is served before a background refresh.
        cache_ttl: Duration,
        /// Records cached per worker.
        cache_size: usize,
    },
}

/// How a route authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication.
    None,
    /// `RG-HMAC-SHA256` signatures by registered apps.
    Hmac,
    /// A verified client certificate registered to an app (`[tls] client_ca`).
    Mtls,
}

impl AuthMode {
    /// Whether the route's callers are registered apps (permission groups, IP allow
    /// lists and per-app limits then apply).
    pub fn identifies_app(self) -> bool {
        matches!(self, AuthMode::Hmac | AuthMode::Mtls)
    }

    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Hmac => "hmac",
            AuthMode::Mtls => "mtls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// One worker per CPU in the process's affinity mask.
    Auto,
    Fixed(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<ListenConfig>,
    pub workers: WorkerCount,
    pub driver: DriverChoice,
    /// CPUs to pin workers to, in order; default: the process's affinity mask.
    pub cpus: Option<Vec<usize>>,
    /// io_uring submission queue entries (default 1024, at least 256).
    pub uring_entries: u32,
    /// SQPOLL kernel thread idle time; `None` (default) = no SQPOLL.
    pub sqpoll_idle: Option<Duration>,
    pub max_connections_per_worker: usize,
    pub backlog: i32,
    pub drain_timeout: Duration,
    pub head_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    /// A worker whose event loop stays later than this sheds a share of new requests
    /// (503 `overloaded`); `None` (`"off"`) never sheds.
    pub max_loop_delay: Option<Duration>,
    /// The least bytes a second a request body must average, past a grace of
    /// `body_timeout` (`None`: `"off"`, only each silence is bounded).
    pub min_body_rate: Option<u64>,
    pub limits: HttpLimits,
    /// Peers whose `X-Forwarded-For` (and `-Proto`, `Forwarded`, `X-Real-IP`) are
    /// believed: the client is the right-most forwarded address not in this set.
    pub trusted_proxies: Vec<Cidr>,
}

impl ServerConfig {
    /// A peer (the TCP peer, or the source a PROXY protocol header named) whose
    /// forwarding headers are believed.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

/// One data-plane listener (fixed at start: changing one needs a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
    /// A `[tls]` listener: every connection starts with a TLS handshake.
    pub tls: bool,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` when the admin listener is switched off (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// The bearer token every admin request but `/healthz` must carry (`admin.token`, or
    /// the `RINGGATE_ADMIN_TOKEN` environment variable); required beyond loopback.
    pub token: Option<AdminToken>,
    /// Reload when the config file changes (checked twice a second).
    pub watch: bool,
    /// Count requests for `/metrics` (default true; off only to measure what it costs).
    pub metrics: bool,
}

/// A secret that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// Lower-cased header name.
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastOutstanding,
    Hash(HashOn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_timeout: Duration,
    /// Idle keep-alive connections kept per target per worker; `None` (the default): as
    /// many as were recently in use at once (`idle_timeout` trims the rest).
    pub max_idle_per_target: Option<usize>,
    /// Connections (busy and idle) per target per worker; `None`: unbounded. At the cap a
    /// request waits up to its connect timeout for one to come free.
    pub max_connections_per_target: Option<usize>,
    pub idle_timeout: Duration,
    pub health: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
    /// A breaker per target (failures: connect, timeout, 5xx).
    pub breaker: Option<BreakerConfig>,
    /// TLS to the targets (`None`: plain TCP).
    pub tls: Option<UpstreamTls>,
}

/// TLS to an upstream's targets, validated: the rustls client config (roots, client
/// certificate) every worker shares, and the name certificates must be valid for.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Sent as SNI and checked against the target's certificate; `None`: the target's
    /// IP address is checked against the certificate's IP addresses (no SNI is sent).
    pub sni: Option<rustls::pki_types::ServerName<'static>>,
    pub client: Arc<rustls::ClientConfig>,
    /// A digest of `sni` and the contents of the `ca`, `cert` and `key` files: a reload
    /// keeps pooled connections only while it is unchanged.
    pub settings: [u8; 32],
}

impl UpstreamTls {
    /// The name a connection to `addr` verifies.
    pub fn server_name(&self, addr: SocketAddr) -> rustls::pki_types::ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()))
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<String>,
    pub path: String,
    pub methods: Vec<String>,
    pub upstream: UpstreamId,
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    pub max_body_bytes: u64,
    pub auth: AuthMode,
    /// The API group (permission package) an app needs to call this route.
    pub group: Option<String>,
    /// Rate limits and quotas, checked in order; all must admit.
    pub limits: Vec<LimitSpec>,
    /// Connect and response-head timeouts overriding the upstream's.
    pub connect_timeout: Option<Duration>,
    pub response_timeout: Option<Duration>,
    /// The whole exchange, retries and response body included (`None`: no such limit).
    pub total_timeout: Option<Duration>,
    /// Index of the route's isolation group in `Config::isolation`.
    pub isolation: Option<usize>,
    pub retries: Option<Retries>,
    pub breaker: Option<RouteBreaker>,
    pub fallback: Option<Fallback>,
    /// Checked and compiled by the `headers` filter.
    pub headers: Option<super::HeadersFile>,
    /// Checked and compiled by the `cors` filter.
    pub cors: Option<super::CorsFile>,
}

/// Retries on another target: after a connect failure (any method: nothing was sent), or
/// on one of `on_status` for idempotent requests without a body; at most `attempts` per
/// request and `budget` of the route's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    pub attempts: u32,
    pub on_status: Vec<u16>,
    pub budget: f64,
}

/// A route's breaker: how it decides, and what counts as a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteBreaker {
    pub mode: BreakerMode,
    pub failure_on: FailureOn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BreakerMode {
    Breaker(BreakerConfig),
    /// The SRE adaptive throttle.
    Adaptive {
        k: f64,
        window: Duration,
    },
}

/// Which outcomes of an upstream exchange count as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOn {
    pub connect: bool,
    pub timeout: bool,
    pub status_5xx: bool,
}

/// A static response given instead of an error when the breaker is open or the upstream
/// fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: std::sync::Arc<[u8]>,
}
