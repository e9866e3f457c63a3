//! A worker's side of the reconciler's rounds: the report of what it saw since the last
//! round (`end_round`), and the shares and grants the reconciler decided (`apply`), kept
//! for keys the worker has not met yet until their first request builds them.

use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

use super::{cap, Entry, KeyState, WorkerLimiter};
use crate::limits::{KeyId, Params, Report, ReportEntry, Update};

impl WorkerLimiter {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::KeyId;

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
