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
use super::{KeyId, Params, Report, ReportEntry, Update};

pub use crate::config::model_limits::MAX_LIMITS_PER_ROUTE;

pub use super::facts::RequestFacts;
use super::facts::{effective_params, group_of, key_value};

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

    /// The round's report: keys asked for since the last one. Always `Some`, empty when
    /// idle: so the reconciler can tell an idle worker from one whose report is late.
    pub fn end_round(&self) -> Option<Report> {
        let now = Instant::now();
        let secs = now
            .saturating_duration_since(self.last_round.replace(now))
            .as_secs_f64();
        let mut touched = self.touched.borrow_mut();
        let mut released = self.released.borrow_mut();
        let mut entries = self.entries.borrow_mut();
        let mut report = Vec::with_capacity(touched.len());
        for id in touched.drain(..) {
            // `peek`: reporting is not a use; it must not keep a key from being evicted.
            if let Some(e) = entries.peek_mut(&id) {
                let used_total = match e.state {
                    KeyState::Quota { used, .. } => used,
                    KeyState::Rate { .. } | KeyState::Told { .. } => 0,
                };
                report.push(ReportEntry {
                    id,
                    text: e.text.clone(),
                    params: e.params,
                    attempts: std::mem::take(&mut e.attempts),
                    used_total,
                    surrendered: std::mem::take(&mut e.surrendered),
                });
            }
        }
        Some(Report {
            worker: self.worker,
            secs,
            entries: report,
            released: std::mem::take(&mut *released),
        })
    }

    /// Applies what the reconciler decided.
    pub fn apply(&self, update: Update) {
        let mut entries = self.entries.borrow_mut();
        match update {
            Update::Share {
                id,
                rate_share: r,
                burst_share: b,
            } => match entries.peek_mut(&id) {
                Some(Entry {
                    state:
                        KeyState::Rate {
                            bucket,
                            rate_share,
                            burst_share,
                        },
                    params: Params::Rate { burst, .. },
                    surrendered,
                    attempts,
                    ..
                }) => {
                    *rate_share = r;
                    *burst_share = b;
                    // Tokens above the smaller bucket go back to the reconciler, which
                    // hands them to the cores that gained the share: a burst's tokens
                    // follow the traffic instead of vanishing.
                    let given = bucket.surrender_above(cap(*burst, r, b));
                    if given > 0.0 {
                        if *attempts == 0 && *surrendered == 0.0 {
                            self.touched.borrow_mut().push(id);
                        }
                        *surrendered += given;
                    }
                }
                // A key this worker has not met yet: remember the share, or its first
                // request would assume the default one and the shares would not add up.
                Some(Entry {
                    state:
                        KeyState::Told {
                            rate_share,
                            burst_share,
                            held,
                        },
                    ..
                }) => {
                    *held = self.release(id, *held, b);
                    *rate_share = r;
                    *burst_share = b;
                }
                Some(_) => {}
                None => {
                    let held = self.release(id, self.default_share.get(), b);
                    self.remember_share(&mut entries, id, r, b, held);
                }
            },
            Update::Grant {
                id,
                granted_total,
                used_everywhere: everywhere,
            } => {
                if let Some(Entry {
                    state:
                        KeyState::Quota {
                            used,
                            granted,
                            used_everywhere,
                            used_at_grant,
                        },
                    ..
                }) = entries.peek_mut(&id)
                {
                    // Never below what was already used: the next report tells the
                    // reconciler the truth.
                    *granted = granted_total.max(*used);
                    *used_everywhere = everywhere;
                    *used_at_grant = *used;
                } else {
                    self.remember_grant(&mut entries, id, granted_total, everywhere);
                }
            }
            Update::Tokens { id, tokens } => {
                if let Some(Entry {
                    state:
                        KeyState::Rate {
                            bucket,
                            rate_share,
                            burst_share,
                        },
                    params: Params::Rate { burst, .. },
                    ..
                }) = entries.peek_mut(&id)
                {
                    bucket.receive(tokens, cap(*burst, *rate_share, *burst_share));
                }
            }
            Update::Forget { id } => {
                entries.pop(&id);
            }
            Update::Cluster { gateways } => {
                let g = gateways.max(1);
                self.cluster_gateways.set(Some(g));
                self.default_share.set(1.0 / (self.workers * g) as f64);
            }
        }
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

    /// A key this worker has not met holds `held` of the burst, untouched: a share cut
    /// below that gives the difference to the cores that gained it (through the
    /// reconciler, which knows the burst). Only the worker can tell whether it had met
    /// the key when the new share arrived; had it, it gives up real tokens instead.
    /// Returns what it holds now.
    fn release(&self, id: KeyId, held: f64, to_share: f64) -> f64 {
        if to_share < held {
            self.released.borrow_mut().push((id, held - to_share));
            to_share
        } else {
            held
        }
    }

    fn remember_share(
        &self,
        entries: &mut LruCache<KeyId, Entry, ahash::RandomState>,
        id: KeyId,
        rate_share: f64,
        burst_share: f64,
        held: f64,
    ) {
        // The bucket is built on first use, when the limit's amount is known; until then
        // a placeholder holds the share.
        entries.push(
            id,
            Entry {
                text: Arc::from(""),
                params: Params::Rate {
                    per_sec: 0.0,
                    burst: 0.0,
                },
                state: KeyState::Told {
                    rate_share,
                    burst_share,
                    held,
                },
                attempts: 0,
                surrendered: 0.0,
            },
        );
    }

    fn remember_grant(
        &self,
        entries: &mut LruCache<KeyId, Entry, ahash::RandomState>,
        id: KeyId,
        granted: u64,
        used_everywhere: u64,
    ) {
        entries.push(
            id,
            Entry {
                text: Arc::from(""),
                params: Params::Quota {
                    per_day: 0,
                    day: 0,
                    secs_left: 0,
                },
                state: KeyState::Quota {
                    used: 0,
                    granted,
                    used_everywhere,
                    used_at_grant: 0,
                },
                attempts: 0,
                surrendered: 0.0,
            },
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn share(id: KeyId, s: f64) -> Update {
        Update::Share {
            id,
            rate_share: s,
            burst_share: s,
        }
    }

    /// A key this worker never met is a full bucket at the default share; when a share
    /// cuts into it the worker says what it gave up, and only the worker can (it alone
    /// knows whether it had met the key, and so spent from a real bucket, by then).
    #[test]
    fn a_shrinking_share_of_a_key_not_met_is_released() {
        let w = WorkerLimiter::new(1, 2, ahash::RandomState::with_seeds(1, 2, 3, 4), 64);
        let idle = w.end_round().expect("a report, even when idle");
        assert!(idle.entries.is_empty() && idle.released.is_empty());
        w.apply(share(7, 0.0));
        let r = w.end_round().expect("a report");
        assert_eq!(r.released, [(7, 0.5)], "the default share, all of it");
        assert!(r.entries.is_empty());
        // A share that grows brings no tokens: nothing more to release.
        w.apply(share(7, 0.25));
        w.apply(share(7, 0.125));
        assert!(w.end_round().unwrap().released.is_empty());
        // Cut after cut, each gives what it takes from what is held.
        w.apply(share(8, 0.375));
        w.apply(share(8, 0.5));
        w.apply(share(8, 0.25));
        assert_eq!(w.end_round().unwrap().released, [(8, 0.125), (8, 0.125)]);
    }
}
