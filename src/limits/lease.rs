//! The lease thread: the reconciler's Redis I/O in cluster mode.
//!
//! The reconciler runs every 10 ms and must never wait on the network, so it hands each
//! round of leases to this thread as one `LeaseBatch` and picks the `LeaseReply` up in a
//! later round. Every call is bounded in time (see [`crate::redis_link`]), so a dead or
//! wedged Redis answers a failed reply within about a second, and the reconciler falls
//! back to local limits. The thread also beats the gateway's heartbeat once a second,
//! which tells the reconciler how many gateways share the limits.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::cluster::{ClusterStore, QuotaGrant, QuotaLease, TokenLease};
use super::KeyId;
use crate::redis_link::CurrentServer;

/// How often the heartbeat is beaten; a gateway that misses three is counted out.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// What the operator sees of cluster mode (`/stats`): shared with the admin side.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Leases are being granted (false: limits are held locally, at 1/gateways each).
    pub connected: AtomicBool,
    /// Gateways the limits are divided between (configured, or learned from Redis).
    pub gateways: AtomicUsize,
    /// Lease rounds answered, and failed.
    pub leases: AtomicU64,
    pub lease_errors: AtomicU64,
    /// Times the gateway fell back to local limits.
    pub fallbacks: AtomicU64,
    /// The Redis server the lease thread last connected to (with Sentinel, the master it
    /// found), which the workers' fleet nonce connections follow.
    pub redis_server: Arc<CurrentServer>,
}

impl ClusterStatus {
    pub fn json(&self) -> String {
        format!(
            "{{\"mode\":\"{}\",\"redis\":{},\"gateways\":{},\"leases\":{},\"lease_errors\":{},\"fallbacks\":{}}}",
            if self.connected.load(Ordering::Relaxed) {
                "cluster"
            } else {
                "local_fallback"
            },
            self.redis_server
                .get()
                .map_or_else(|| "null".to_string(), |s| format!("\"{}\"", s.addr)),
            self.gateways.load(Ordering::Relaxed),
            self.leases.load(Ordering::Relaxed),
            self.lease_errors.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }
}

/// One rate key's lease: see [`TokenLease`].
#[derive(Debug, Clone)]
pub struct RateAsk {
    pub id: KeyId,
    pub key: String,
    pub rate_per_sec: f64,
    pub burst: f64,
    pub want: f64,
    pub demand: f64,
}

/// One quota key's reservation: see [`QuotaLease`] (`used`: this process's own use).
#[derive(Debug, Clone)]
pub struct QuotaAsk {
    pub id: KeyId,
    pub key: String,
    pub limit: u64,
    pub want: u64,
    pub used: u64,
    pub ttl_secs: u64,
}

#[derive(Debug, Default)]
pub struct LeaseBatch {
    pub rates: Vec<RateAsk>,
    pub quotas: Vec<QuotaAsk>,
}

/// The answer to one batch; each part fails as a whole (one round trip each).
#[derive(Debug)]
pub struct LeaseReply {
    /// Per rate ask: its key and the tokens granted.
    pub rates: Result<Vec<(KeyId, f64)>, String>,
    /// Per quota ask: its key and Redis's answer.
    pub quotas: Result<Vec<(KeyId, QuotaGrant)>, String>,
}

/// Messages from the lease thread.
#[derive(Debug)]
pub enum LeaseEvent {
    Reply(LeaseReply),
    /// Live gateways, this one included, or why the heartbeat failed.
    Heartbeat(Result<usize, String>),
    /// Redis came back empty (a new epoch): every quota key's use is to be charged again.
    RedisReset,
}

/// The reconciler's end of the lease thread. Dropping it stops the thread (after the
/// call in progress, if any).
pub struct LeaseLink {
    pub batches: Sender<LeaseBatch>,
    pub events: Receiver<LeaseEvent>,
}

/// Starts the thread. The first heartbeat is beaten before this returns, so the gateway
/// knows how many peers it has before its workers serve (bounded: about a second when
/// Redis is down).
pub fn start(
    mut store: ClusterStore,
    gateway_id: String,
    interval: Duration,
) -> std::io::Result<(LeaseLink, Result<usize, String>)> {
    let first = store.heartbeat(&gateway_id, HEARTBEAT_TTL);
    // Quota units are charged per process: a restarted gateway must not inherit what its
    // previous life held (it would think it may hand those units out again).
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let holder = format!("{gateway_id}@{started:x}");
    // One batch at a time: the reconciler does not send another until it has the reply.
    let (batches, batch_rx) = crossbeam_channel::bounded::<LeaseBatch>(1);
    let (event_tx, events) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("ringgate-lease".into())
        .spawn(move || run(store, &gateway_id, &holder, interval, &batch_rx, &event_tx))?;
    Ok((LeaseLink { batches, events }, first))
}

fn run(
    mut store: ClusterStore,
    gateway_id: &str,
    holder: &str,
    interval: Duration,
    batches: &Receiver<LeaseBatch>,
    events: &Sender<LeaseEvent>,
) {
    let mut next_beat = Instant::now() + HEARTBEAT_EVERY;
    loop {
        let wait = next_beat.saturating_duration_since(Instant::now());
        match batches.recv_timeout(wait) {
            Ok(batch) => {
                let reply = lease(&mut store, gateway_id, holder, interval, &batch);
                // Said before the reply, so the reconciler resets its view of what Redis
                // holds before it applies the reply's (new) figures.
                if store.take_reset() && events.send(LeaseEvent::RedisReset).is_err() {
                    return;
                }
                if events.send(LeaseEvent::Reply(reply)).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + HEARTBEAT_EVERY;
            let beat = store.heartbeat(gateway_id, HEARTBEAT_TTL);
            if store.take_reset() && events.send(LeaseEvent::RedisReset).is_err() {
                return;
            }
            if events.send(LeaseEvent::Heartbeat(beat)).is_err() {
                return;
            }
        }
    }
}

fn lease(
    store: &mut ClusterStore,
    gateway_id: &str,
    holder: &str,
    interval: Duration,
    batch: &LeaseBatch,
) -> LeaseReply {
    let tokens: Vec<TokenLease> = batch
        .rates
        .iter()
        .map(|a| TokenLease {
            key: &a.key,
            rate_per_sec: a.rate_per_sec,
            burst: a.burst,
            want: a.want,
            gateway: gateway_id,
            demand: a.demand,
            interval_secs: interval.as_secs_f64(),
        })
        .collect();
    let rates = store.take_tokens(&tokens).map(|granted| {
        batch
            .rates
            .iter()
            .zip(granted)
            .map(|(a, g)| (a.id, g))
            .collect()
    });
    let reservations: Vec<QuotaLease> = batch
        .quotas
        .iter()
        .map(|a| QuotaLease {
            key: &a.key,
            holder,
            limit: a.limit,
            want: a.want,
            used: a.used,
            ttl_secs: a.ttl_secs,
        })
        .collect();
    let quotas = store.reserve_quota(&reservations).map(|grants| {
        batch
            .quotas
            .iter()
            .zip(grants)
            .map(|(a, g)| (a.id, g))
            .collect()
    });
    LeaseReply { rates, quotas }
}
