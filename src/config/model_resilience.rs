//! What the resilience knobs are, once validated: plain data of the config (it imports
//! nothing of the crate), so `config` validates them without depending on `resilience`,
//! whose breakers, bulkheads and health state are built from these (and re-export them).

use std::time::Duration;

/// A breaker's thresholds (a route's `breaker`, or an upstream's per-target one); the
/// states and transitions they drive are documented in `resilience::breaker`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (`None`: not by count).
    pub consecutive_failures: Option<u32>,
    /// Trip when the window's error rate reaches this (`None`: not by rate).
    pub error_rate: Option<f64>,
    pub window: Duration,
    /// Requests the window must hold before its error rate counts.
    pub min_requests: u32,
    pub open_for: Duration,
    /// Probe requests let through while half-open.
    pub probes: u32,
}

/// `[[isolation]]`: one group's cap on requests in flight and its short queue (see
/// `resilience::bulkhead`).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadConfig {
    pub name: String,
    pub max_in_flight: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
}

/// `[[upstreams]] health`: active checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passed checks in a row that make an unhealthy target healthy.
    pub healthy: u32,
    /// Failed checks in a row that make a healthy target unhealthy.
    pub unhealthy: u32,
}

/// `[[upstreams]] outlier`: passive ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}
