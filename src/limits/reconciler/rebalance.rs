//! Each round's decisions: rate shares moved towards the cores that use a key (and keys
//! idle for a while forgotten), quota grants topped up and taken back, within what the
//! cluster leased when there is one.

use std::time::{Duration, Instant};

use super::{Core, SILENT_ROUNDS};
use crate::limits::spec::day_of;
use crate::limits::Update;

/// A rate key idle this long is forgotten, at least: by then every worker's bucket for it
/// is full again, so starting afresh admits nothing extra.
const FORGET_RATE_AFTER: Duration = Duration::from_secs(2);

impl Core {
    pub(super) fn rebalance_rates(&mut self, now: Instant) {
        let idle = vec![0u32; self.workers];
        let mut forget = Vec::new();
        let mut demand = vec![None; self.workers];
        for (&id, key) in self.rates.iter_mut() {
            let attempts = self.round.get(&id).unwrap_or(&idle);
            for (w, d) in demand.iter_mut().enumerate() {
                // A worker that reported this round but not this key is idle for it; one
                // that did not report at all is late, until it has been silent too long.
                *d = if self.report_secs[w] > 0.0 {
                    Some(attempts[w] as f64 / self.report_secs[w])
                } else if self.silent_rounds[w] >= SILENT_ROUNDS {
                    Some(0.0)
                } else {
                    None
                };
            }
            key.shares.observe(&demand);
            for (w, share) in key.shares.rebalance(key.per_sec, key.scale) {
                self.outbox[w].push(Update::Share {
                    id,
                    rate_share: share,
                    burst_share: share,
                });
            }
            // Tokens given up by cores whose share shrank go to the cores holding the
            // share now, in proportion: the burst follows the traffic.
            // (In a cluster the shares add up to this gateway's part, not to one.)
            let given = std::mem::take(&mut key.surrendered);
            let total: f64 = key.shares.shares().iter().sum();
            if given > 0.0 && total > 0.0 {
                for (w, &share) in key.shares.shares().iter().enumerate() {
                    if share > 0.0 {
                        self.outbox[w].push(Update::Tokens {
                            id,
                            tokens: given * share / total,
                        });
                    }
                }
            }
            if key.shares.idle() {
                let since = *key.idle_since.get_or_insert(now);
                let refill = Duration::from_secs_f64((key.burst / key.per_sec).min(86_400.0));
                if now.duration_since(since) >= FORGET_RATE_AFTER.max(refill * 2) {
                    forget.push(id);
                }
            } else {
                key.idle_since = None;
            }
        }
        self.round.clear();
        for (secs, silent) in self.report_secs.iter_mut().zip(&mut self.silent_rounds) {
            *silent = if *secs > 0.0 {
                0
            } else {
                silent.saturating_add(1)
            };
            *secs = 0.0;
        }
        for id in forget {
            self.rates.remove(&id);
            for out in &mut self.outbox {
                out.push(Update::Forget { id });
            }
        }
    }

    pub(super) fn rebalance_quotas(&mut self) {
        let today = day_of(crate::clock::unix_now(), 0);
        let cluster = self
            .cluster
            .as_ref()
            .map(|c| (c.connected(), c.gateways() as u64));
        let mut over = Vec::new();
        for (&id, key) in self.quotas.iter_mut() {
            // Days are offset by at most 14 hours: two days on, the key's day is over
            // whatever its offset.
            if key.day + 2 <= today {
                over.push(id);
                continue;
            }
            if let Some((connected, gateways)) = cluster {
                // What this gateway may hand out: what it reserved; while Redis is out
                // of reach, the lesser of two caps that each keep the gateways together
                // within the day's quota: its part of the quota (exact unless a gateway
                // held more than its part: uneven load), and what it held plus its part
                // of what no gateway held at its last lease of the key (exact however
                // uneven, but for what the others reserved since: an idle key's count
                // may be old, and then the first cap does the work). Knowing nothing
                // (Redis out since the start), both are `quota/gateways`.
                let cap = if connected {
                    key.reserved
                } else {
                    let part = key.reserved.max(key.per_day / gateways);
                    let unheld = key.per_day.saturating_sub(key.cluster_used);
                    part.min(key.reserved + unheld / gateways)
                };
                key.ledger.set_cap(cap);
            } else if self.halved {
                // An upgrade split it: see `handover`.
                key.ledger.set_cap(key.halved_cap());
            }
            if key.ledger.idle() {
                continue;
            }
            let used = key.used_everywhere(cluster.is_some());
            let changed = key.ledger.rebalance();
            // A short worker that got nothing more still learns the key's use: whether to
            // refuse until the day ends or only until a grant frees up elsewhere.
            let short = key
                .ledger
                .short()
                .filter(|(w, _)| !changed.iter().any(|(c, _)| c == w));
            for (w, granted_total) in changed.iter().copied().chain(short) {
                self.outbox[w].push(Update::Grant {
                    id,
                    granted_total,
                    used_everywhere: used,
                });
            }
        }
        for id in over {
            self.quotas.remove(&id);
            for out in &mut self.outbox {
                out.push(Update::Forget { id });
            }
        }
    }
}
