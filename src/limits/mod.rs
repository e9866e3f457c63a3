//! Traffic control: rate limits and daily quotas, held per core without locks and
//! reconciled in the background.
//!
//! - `spec`: what a limit is (key, amount, priority groups), as validated from config (it
//!   lives in `config::model_limits`; re-exported here).
//! - `bucket`: a worker's token bucket for one key (pure).
//! - `worker`: `WorkerLimiter`, the per-core map of buckets and quota grants checked on
//!   the request path; it never locks and never waits.
//! - `shares`, `quota`: how the reconciler splits a rate and hands out a quota (pure).
//! - `reconciler`: the control-side thread that reads workers' reports every round (10 ms)
//!   and sends back shares and grants.
//! - With `[cluster]`: `cluster` (the Redis calls; their Lua in `cluster_scripts`),
//!   `lease` (the thread that makes them), `cluster_mode` (connected or falling back to local limits).
//! - `state`: the local quota state file.
//! - `headers`: the 429 and the RateLimit-Policy / RateLimit headers.

pub mod bucket;
pub mod cluster;
pub mod cluster_keys;
mod cluster_mode;
mod cluster_replies;
mod cluster_scripts;
pub mod facts;
pub mod headers;
pub mod lease;
pub mod quota;
pub mod reconciler;
pub mod shares;
pub mod state;
pub mod worker;

/// What a limit is: plain config data, kept with the config (`config::model_limits`) and
/// reachable here under its old path.
pub use crate::config::model_limits as spec;

use std::sync::Arc;

/// A key's identity, the same on every worker and in the reconciler: a keyed hash of the
/// limit, the key's value and (quotas) the day.
pub type KeyId = u64;

/// What a worker tells the reconciler about one key after a round.
#[derive(Debug, Clone)]
pub struct ReportEntry {
    pub id: KeyId,
    /// `<scope>/<limit>:<value>`: names the key in Redis and in the state file.
    pub text: Arc<str>,
    pub params: Params,
    /// Requests that asked for this key this round, admitted or not.
    pub attempts: u32,
    /// Quotas: units this worker admitted for the key since it started counting it.
    pub used_total: u64,
    /// Rates: tokens this worker gave up when its share shrank, to go to other cores.
    pub surrendered: f64,
}

/// The amount in force for a key (the app record may override the configured one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Params {
    Rate {
        per_sec: f64,
        burst: f64,
    },
    Quota {
        per_day: u64,
        day: u32,
        secs_left: u64,
    },
}

/// One worker's round.
#[derive(Debug)]
pub struct Report {
    pub worker: usize,
    /// Seconds since the worker's previous round: the time the attempts were counted
    /// over. Workers' rounds and the reconciler's drift apart, so a reconciler round may
    /// hold no report from a worker, or two.
    pub secs: f64,
    pub entries: Vec<ReportEntry>,
    /// Rate keys this worker had not met when its share shrank, with the fraction of the
    /// burst it gave up: the untouched bucket it was assumed to hold, for the reconciler to
    /// hand to the cores that gained the share.
    pub released: Vec<(KeyId, f64)>,
}

/// What the reconciler tells a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// The worker's part of a rate limit: its refill rate and its bucket size, as
    /// fractions of the limit's.
    Share {
        id: KeyId,
        rate_share: f64,
        burst_share: f64,
    },
    /// The worker may admit up to `granted_total` units of a quota key in all;
    /// `used_everywhere` is the key's total use as the reconciler knows it (for headers).
    Grant {
        id: KeyId,
        granted_total: u64,
        used_everywhere: u64,
    },
    /// Tokens other cores gave up (their share shrank), for this core's bucket.
    Tokens { id: KeyId, tokens: f64 },
    /// The key is idle everywhere: drop it (it starts afresh at the default share).
    Forget { id: KeyId },
    /// Cluster mode, with this many gateways sharing the limits: a key a worker has not
    /// been told about starts at 1/(workers x gateways) of its rate and with the cluster
    /// default quota grant for that many holders, so that fresh keys on every gateway
    /// together start within the limit.
    Cluster { gateways: usize },
}
