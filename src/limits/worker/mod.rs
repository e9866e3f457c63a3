//! `WorkerLimiter`: one worker's buckets and quota grants, checked on the request path.
//!
//! Everything here is the worker's own (`!Send`, no atomics, no locks): a request touches
//! only this core's memory. What the worker knows about the rest of the gateway arrives
//! as `Update`s from the reconciler once per worker tick, and what it saw leaves as one
//! `Report` per tick.

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

use super::bucket::{Bucket, BucketParams, Taken};
use super::headers::{HeaderWriter, Refusal};
use super::quota::initial_grant;
use super::spec::{KeyBy, LimitSpec};
use super::{KeyId, Params};

pub use crate::config::model_limits::MAX_LIMITS_PER_ROUTE;

pub use super::facts::RequestFacts;
use super::facts::{effective_params, group_of, key_value};

mod round;

enum KeyState {
    Rate {
        bucket: Bucket,
        rate_share: f64,
        burst_share: f64,
    },
    Quota {
        used: u64,
        granted: u64,
        /// The key's use everywhere at the last grant, and this worker's use then.
        used_everywhere: u64,
        used_at_grant: u64,
    },
    /// A rate key the reconciler told this worker about before its first request: the
    /// share, and the part of the burst its untouched bucket holds (it starts full at
    /// the default share, gives up what a smaller share cuts, and a larger share brings
    /// no tokens: it refills only once the bucket exists).
    Told {
        rate_share: f64,
        burst_share: f64,
        held: f64,
    },
}

struct Entry {
    text: Arc<str>,
    params: Params,
    state: KeyState,
    attempts: u32,
    /// Tokens given up since the last report.
    surrendered: f64,
}

/// How to undo what an admitted limit took when a later limit refuses the request.
#[derive(Clone, Copy)]
enum Undo {
    Token(KeyId, Taken),
    Unit(KeyId),
}

pub struct WorkerLimiter {
    worker: usize,
    /// Keyed hash shared by every worker (seeded once per process).
    ids: ahash::RandomState,
    entries: RefCell<LruCache<KeyId, Entry, ahash::RandomState>>,
    /// Keys asked for this round, to report.
    touched: RefCell<Vec<KeyId>>,
    /// Burst shares given up this round for keys not met yet (see `Report::released`).
    released: RefCell<Vec<(KeyId, f64)>>,
    /// The share of a rate key it has not been told about: 1/(workers x gateways).
    default_share: Cell<f64>,
    workers: usize,
    /// Cluster mode: the gateways sharing the limits (see `quota::initial_grant`).
    cluster_gateways: Cell<Option<usize>>,
    epoch: Instant,
    /// When the last round ended (whether or not it had anything to report).
    last_round: Cell<Instant>,
}

impl WorkerLimiter {
    pub fn new(worker: usize, workers: usize, ids: ahash::RandomState, max_keys: usize) -> Self {
        let cap = NonZeroUsize::new(max_keys.max(1)).unwrap_or(NonZeroUsize::MIN);
        WorkerLimiter {
            worker,
            ids,
            entries: RefCell::new(LruCache::with_hasher(cap, ahash::RandomState::new())),
            touched: RefCell::new(Vec::new()),
            released: RefCell::new(Vec::new()),
            default_share: Cell::new(1.0 / workers.max(1) as f64),
            workers: workers.max(1),
            cluster_gateways: Cell::new(None),
            epoch: Instant::now(),
            last_round: Cell::new(Instant::now()),
        }
    }

    /// Checks every limit of a route, in order; all must admit. A refusal gives back
    /// what earlier limits took, so a refused request costs no limit anything. On
    /// admission the RateLimit headers for the response are written into `headers`.
    pub fn check(
        &self,
        limits: &[LimitSpec],
        facts: &RequestFacts,
        now: Instant,
        headers: &mut HeaderWriter,
    ) -> Result<(), Refusal> {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut undo: [Option<Undo>; MAX_LIMITS_PER_ROUTE] = [None; MAX_LIMITS_PER_ROUTE];
        let mut entries = self.entries.borrow_mut();
        let mut touched = self.touched.borrow_mut();
        for (i, limit) in limits.iter().take(MAX_LIMITS_PER_ROUTE).enumerate() {
            let params = effective_params(limit, facts);
            let value = key_value(&limit.key, facts);
            let value = value.as_bytes();
            let id = self.key_id(limit, value, facts.route_if(&limit.key), &params);
            let group = group_of(limit, facts);
            // A key met for the first time, or known so far only from the reconciler's
            // word (a placeholder holding its share or grant).
            if entries.peek(&id).is_none_or(|e| e.text.is_empty()) {
                let told = entries.pop(&id).map(|e| e.state);
                let entry = self.new_entry(limit, value, facts, params, now_ns, told);
                entries.push(id, entry);
            }
            let Some(entry) = entries.get_mut(&id) else {
                continue;
            };
            entry.params = params;
            if entry.attempts == 0 {
                touched.push(id);
            }
            entry.attempts = entry.attempts.saturating_add(1);
            let ratios = limit.groups.as_ref().map_or(&[][..], |g| &g.ratios[..]);
            let outcome = match (&mut entry.state, params) {
                (
                    KeyState::Rate {
                        bucket,
                        rate_share,
                        burst_share,
                    },
                    Params::Rate { per_sec, burst },
                ) => {
                    let p = bucket_params(per_sec, burst, *rate_share, *burst_share, ratios);
                    match bucket.try_take(group, &p, now_ns) {
                        Some(taken) => {
                            undo[i] = Some(Undo::Token(id, taken));
                            let remaining =
                                share_estimate(bucket.available(group), *burst_share).min(burst);
                            headers.rate(&limit.name, per_sec, burst, remaining);
                            Ok(())
                        }
                        None => {
                            // Retry-After at the limit's own pace: shares follow demand,
                            // so a client waiting that long finds a token somewhere.
                            let full = bucket_params(per_sec, burst, 1.0, 1.0, ratios);
                            let wait = bucket.wait_secs(group, &full);
                            Err(Refusal::rate(&limit.name, per_sec, burst, wait))
                        }
                    }
                }
                (
                    KeyState::Quota {
                        used,
                        granted,
                        used_everywhere,
                        used_at_grant,
                    },
                    Params::Quota {
                        per_day, secs_left, ..
                    },
                ) => {
                    let everywhere = *used_everywhere + (*used - *used_at_grant);
                    if *used < *granted && everywhere < per_day {
                        *used += 1;
                        undo[i] = Some(Undo::Unit(id));
                        headers.quota(&limit.name, per_day, per_day - everywhere - 1, secs_left);
                        Ok(())
                    } else if everywhere >= per_day {
                        Err(Refusal::quota(&limit.name, per_day, secs_left))
                    } else {
                        // Units are left, held by other cores or on their way here: not a
                        // reason to send the client away until tomorrow.
                        Err(Refusal::quota_pending(&limit.name, per_day))
                    }
                }
                // The limit changed kind under a reload: start the key afresh next time.
                _ => {
                    entries.pop(&id);
                    continue;
                }
            };
            if let Err(refusal) = outcome {
                for u in undo.iter().take(i).flatten() {
                    match *u {
                        Undo::Token(id, taken) => {
                            if let Some(Entry {
                                state: KeyState::Rate { bucket, .. },
                                ..
                            }) = entries.get_mut(&id)
                            {
                                bucket.refund(taken);
                            }
                        }
                        Undo::Unit(id) => {
                            if let Some(Entry {
                                state: KeyState::Quota { used, .. },
                                ..
                            }) = entries.get_mut(&id)
                            {
                                *used -= 1;
                            }
                        }
                    }
                }
                headers.clear();
                return Err(refusal);
            }
        }
        Ok(())
    }

    fn key_id(&self, limit: &LimitSpec, value: &[u8], route: &str, params: &Params) -> KeyId {
        let mut h = self.ids.build_hasher();
        h.write_u64(limit.id);
        h.write(value);
        h.write_u8(0xff);
        h.write(route.as_bytes());
        if let Params::Quota { day, .. } = params {
            h.write_u32(*day);
        }
        h.finish()
    }

    fn new_entry(
        &self,
        limit: &LimitSpec,
        value: &[u8],
        facts: &RequestFacts,
        params: Params,
        now_ns: u64,
        told: Option<KeyState>,
    ) -> Entry {
        let route = facts.route_if(&limit.key);
        let value = match limit.key {
            KeyBy::Ip => facts.client_ip.to_string(),
            _ => String::from_utf8_lossy(value).into_owned(),
        };
        let text: Arc<str> = if route.is_empty() {
            format!("{}/{}:{value}", limit.scope, limit.name).into()
        } else {
            format!("{}/{}:{value}@{route}", limit.scope, limit.name).into()
        };
        let state = match (params, told) {
            (Params::Rate { per_sec, burst }, told) => {
                let default = self.default_share.get();
                let (rate_share, burst_share, held) = match told {
                    Some(KeyState::Told {
                        rate_share,
                        burst_share,
                        held,
                    }) => (rate_share, burst_share, Some(held)),
                    _ => (default, default, None),
                };
                let ratios = limit.groups.as_ref().map_or(&[][..], |g| &g.ratios[..]);
                let p = bucket_params(per_sec, burst, rate_share, burst_share, ratios);
                let mut bucket = Bucket::new(&p, now_ns);
                if let Some(held) = held {
                    // What the untouched bucket still holds; the rest went to other cores.
                    bucket.surrender_above(burst * held);
                }
                KeyState::Rate {
                    bucket,
                    rate_share,
                    burst_share,
                }
            }
            (
                Params::Quota { .. },
                Some(KeyState::Quota {
                    granted,
                    used_everywhere,
                    ..
                }),
            ) => KeyState::Quota {
                used: 0,
                granted,
                used_everywhere,
                used_at_grant: 0,
            },
            (Params::Quota { per_day, .. }, _) => KeyState::Quota {
                used: 0,
                granted: initial_grant(per_day, self.workers, self.cluster_gateways.get()),
                used_everywhere: 0,
                used_at_grant: 0,
            },
        };
        Entry {
            text,
            params,
            state,
            attempts: 0,
            surrendered: 0.0,
        }
    }

    /// Keys this worker currently holds.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A worker's bucket size for its share (at least one token while it has any share).
fn cap(burst: f64, rate_share: f64, burst_share: f64) -> f64 {
    (burst * burst_share).max(if rate_share > 0.0 { 1.0 } else { 0.0 })
}

fn bucket_params(
    per_sec: f64,
    burst: f64,
    rate_share: f64,
    burst_share: f64,
    ratios: &[f64],
) -> BucketParams<'_> {
    BucketParams {
        rate_per_sec: per_sec * rate_share,
        // At least one token, or a worker with a small share of a small limit could never
        // admit anything: the refill rate still holds the long-run total.
        burst: cap(burst, rate_share, burst_share),
        ratios,
    }
}

/// This worker's tokens as the limit's remaining requests, estimated from its share.
fn share_estimate(tokens: f64, burst_share: f64) -> f64 {
    if burst_share > 0.0 {
        (tokens / burst_share).floor()
    } else {
        0.0
    }
}
