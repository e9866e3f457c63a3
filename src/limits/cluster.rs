//! The Redis side of cluster-wide limits: token buckets and daily quotas shared by every
//! gateway of a cluster, and the heartbeat that tells a gateway how many peers share them.
//!
//! Used by the control thread only (blocking, every call bounded in time: see
//! [`crate::redis_link`]). Each call takes a whole round of leases and sends them as one
//! pipeline, one Lua script call per lease, so the cost is one round trip per round
//! whatever the number of keys. The scripts read the clock with `TIME`, so the gateways'
//! own clocks never matter (Redis 5 or later: scripts replicate their effects).
//!
//! Keys: `rg:rl:<key>` (hash: `tokens`, `ts` in µs of Redis time, and per gateway
//! `d:<id>` its demand and `e:<id>` when that demand expires) for token buckets,
//! `rg:q:<key>` (hash: `used`, and per holder `h:<holder>` the units charged to it) for
//! quotas, `rg:gateways` (sorted set of gateway ids scored by expiry time in ms) for the
//! heartbeat, and `rg:epoch` naming Redis's current life: when Redis comes back empty
//! (restarted without persistence, flushed) the heartbeat or a quota call writes a new
//! one, every gateway that knew the old one
//! charges its use of every quota key again (`take_reset`), and no quota is reserved for
//! a grace of three heartbeats meanwhile.
//!
//! On a Redis Cluster the quota keys are spread over `CLUSTER_GROUPS` hash tags,
//! `rg:q:{rg<g>}:<key>`, each group with its own epoch `rg:epoch:{rg<g>}` in the same
//! slot (a script's keys must share one), so that a node that comes back empty is seen by
//! the groups it held; the heartbeat (`rg:gateways:{rg0}`, with group 0's epoch) looks at
//! every group's epoch once a second, so an idle key's group is watched too. Token buckets
//! have one key each and need no tag.
//!
//! A call that fails answers nothing, but leases of the batch other than the failing one
//! (e.g. a key of the wrong type) may have been applied. Tokens are then spent without
//! being granted, which errs on the side of admitting less. Quota charges are idempotent:
//! a holder states its own total use, and Redis charges only what it has not charged it
//! yet, so a call repeated after a lost reply never charges the same units twice (its
//! reservation is reported back by the next call, and so is not lost either).

use redis::Value;

use super::cluster_keys::KeyLayout;
pub use super::cluster_keys::CLUSTER_GROUPS;
pub use super::cluster_replies::QuotaGrant;
use super::cluster_replies::{granted_tokens, parse_used, quota_grant};
use super::cluster_scripts::{
    eval_batch, server_error, unavailable, Call, Script, EPOCH_SCRIPT, HEARTBEAT_SCRIPT,
    QUOTA_SCRIPT, TOKEN_SCRIPT,
};
use crate::redis_link::RedisLink;

/// Prefix of token-bucket keys.
pub const TOKEN_PREFIX: &str = "rg:rl:";
/// How long after Redis came back empty no quota is reserved, so that every gateway has
/// charged its use again first: three heartbeats (each gateway beats once a second,
/// learns of the new epoch from it and sends its recharge at once, connected or not).
pub const DEFAULT_EPOCH_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Largest count sent to the scripts: Lua numbers are doubles, exact up to 2^53.
const MAX_COUNT: u64 = 1 << 53;

/// One token-bucket lease: take up to `want` tokens from the cluster bucket `key`, no
/// more than this gateway's fair part of the rate for `interval_secs`.
///
/// The fair part follows the demand every gateway reported with its last lease (a report
/// stays fresh for three of its intervals): below the rate each gateway gets its demand
/// plus an equal part of what is left; above it, a part proportional to its demand. So
/// the gateways' parts add up to the rate whichever leases first, and a busy gateway is
/// not starved by one that happens to lease just before it.
#[derive(Debug, Clone, Copy)]
pub struct TokenLease<'a> {
    pub key: &'a str,
    pub rate_per_sec: f64,
    /// The cluster bucket's size (at least the tokens of one interval, or leases could
    /// never deliver the rate).
    pub burst: f64,
    pub want: f64,
    /// This gateway's id and its demand for the key, in requests per second.
    pub gateway: &'a str,
    pub demand: f64,
    /// How long the tokens are meant to last: the gateway's lease interval.
    pub interval_secs: f64,
}

/// One daily-quota reservation by `holder` (one gateway process): first, what it used
/// beyond what is charged to it already (`used`: its own total, admitted while Redis was
/// unreachable or from default grants) is charged, even beyond the limit; then up to
/// `want` more units are reserved for it from what is left of `limit`. The key expires
/// `ttl_secs` after this call (the caller computes it so that it outlives the quota's
/// day).
#[derive(Debug, Clone, Copy)]
pub struct QuotaLease<'a> {
    pub key: &'a str,
    pub holder: &'a str,
    pub limit: u64,
    pub want: u64,
    pub used: u64,
    pub ttl_secs: u64,
}

/// A blocking client of the cluster's limit state, reconnecting lazily after failures.
pub struct ClusterStore {
    link: RedisLink,
    tokens: Script,
    quota: Script,
    heartbeat: Script,
    epoch_script: Script,
    /// Where each piece of state lives (tagged groups on a Redis Cluster).
    keys: KeyLayout,
    /// The epoch last seen, per group of quota keys (one group but on a Redis Cluster;
    /// `None` before the first answer).
    epochs: Vec<Option<String>>,
    /// The epoch changed since `take_reset` was last asked: Redis lost its data.
    reset: bool,
    grace_ms: u64,
}

impl ClusterStore {
    /// One server by its URL (`redis://host:port/db`).
    pub fn from_url(url: &str) -> Result<ClusterStore, String> {
        Ok(ClusterStore::new(RedisLink::from_url(url)?))
    }

    /// Over `link`, which connects at the first call, because the gateway must start
    /// even if Redis is down.
    pub fn new(link: RedisLink) -> ClusterStore {
        let keys = KeyLayout::new(link.is_cluster());
        ClusterStore {
            epochs: vec![None; keys.groups()],
            keys,
            link,
            tokens: Script::new(TOKEN_SCRIPT),
            quota: Script::new(QUOTA_SCRIPT),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
            epoch_script: Script::new(EPOCH_SCRIPT),
            reset: false,
            grace_ms: DEFAULT_EPOCH_GRACE.as_millis() as u64,
        }
    }

    /// How long no quota is reserved after Redis came back empty (default
    /// `DEFAULT_EPOCH_GRACE`; tests shorten it).
    pub fn with_epoch_grace(mut self, grace: std::time::Duration) -> Self {
        self.grace_ms = grace
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
            .min(MAX_COUNT);
        self
    }

    /// Whether Redis came back empty (its epoch changed) since this was last asked: the
    /// caller then charges its whole use of every quota key again.
    pub fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }

    fn saw_epoch(&mut self, group: usize, epoch: String) {
        let known = &mut self.epochs[group];
        if known.as_ref().is_some_and(|known| *known != epoch) {
            log::warn!(
                "cluster: redis at {} lost its data (a new epoch); charging quota use again",
                self.link.addr()
            );
            self.reset = true;
        }
        *known = Some(epoch);
    }

    /// The arguments every epoch-aware call ends with: the creator id a new epoch would
    /// name, the last-seen epoch of `group`, the grace.
    fn epoch_args(&self, group: usize, creator: &str) -> [String; 3] {
        [
            creator.to_owned(),
            self.epochs[group].clone().unwrap_or_default(),
            self.grace_ms.to_string(),
        ]
    }

    /// All leases in one pipelined round trip; result i answers lease i: the tokens
    /// granted (a fraction of a token for a slow rate).
    pub fn take_tokens(&mut self, leases: &[TokenLease]) -> Result<Vec<f64>, String> {
        let calls = leases
            .iter()
            .map(token_call)
            .collect::<Result<Vec<_>, _>>()?;
        let replies = eval_batch(&mut self.link, &mut self.tokens, &calls)?;
        leases
            .iter()
            .zip(replies)
            .zip(&calls)
            .map(|((lease, reply), call)| {
                granted_tokens(reply, lease.want).ok_or_else(|| self.odd_reply(&call.key))
            })
            .collect()
    }

    /// All reservations in one pipelined round trip; result i answers lease i.
    pub fn reserve_quota(&mut self, leases: &[QuotaLease]) -> Result<Vec<QuotaGrant>, String> {
        let mut groups = Vec::with_capacity(leases.len());
        let calls = leases
            .iter()
            .map(|lease| {
                let (key, group) = self.keys.quota(lease.key);
                groups.push(group);
                quota_call(lease, key).map(|mut call| {
                    call.also = Some(self.keys.epoch(group));
                    call.args
                        .extend(self.epoch_args(group, lease.holder).into_iter().skip(1));
                    call
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replies = eval_batch(&mut self.link, &mut self.quota, &calls)?;
        let mut grants = Vec::with_capacity(leases.len());
        for (((lease, reply), call), group) in leases.iter().zip(replies).zip(&calls).zip(groups) {
            let (grant, epoch) =
                quota_grant(reply, lease.want.min(MAX_COUNT), lease.used.min(MAX_COUNT))
                    .ok_or_else(|| self.odd_reply(&call.key))?;
            self.saw_epoch(group, epoch);
            grants.push(grant);
        }
        Ok(grants)
    }

    /// Read-only: units used of each quota key (0 when absent), one round trip.
    pub fn quota_used(&mut self, keys: &[&str]) -> Result<Vec<u64>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let redis_keys: Vec<String> = keys.iter().map(|k| self.keys.quota(k).0).collect();
        let mut pipe = redis::pipe();
        for key in &redis_keys {
            pipe.cmd("HGET").arg(key).arg("used");
        }
        let replies = self
            .link
            .pipeline_replies(&pipe)
            .map_err(|e| unavailable(&self.link, "quota read", &e))?;
        if replies.len() != keys.len() {
            return Err(self.odd_reply("the quota read"));
        }
        redis_keys
            .iter()
            .zip(replies)
            .map(|(redis_key, reply)| match reply {
                Value::ServerError(e) => Err(server_error(&self.link, redis_key, e.into())),
                reply => parse_used(reply).ok_or_else(|| {
                    format!(
                        "redis at {}: {redis_key} does not hold a count of units",
                        self.link.addr()
                    )
                }),
            })
            .collect()
    }

    /// Records this gateway as alive for `ttl` and returns how many gateways are alive,
    /// this one included. Members whose time is up are removed on the way.
    pub fn heartbeat(
        &mut self,
        gateway_id: &str,
        ttl: std::time::Duration,
    ) -> Result<usize, String> {
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_COUNT);
        let mut args = vec![gateway_id.to_owned(), ttl_ms.to_string()];
        args.extend(self.epoch_args(0, gateway_id));
        let gateways_key = self.keys.gateways();
        let call = Call {
            key: gateways_key.clone(),
            also: Some(self.keys.epoch(0)),
            args,
        };
        let replies = eval_batch(
            &mut self.link,
            &mut self.heartbeat,
            std::slice::from_ref(&call),
        )?;
        let (live, epoch) = match replies.as_slice() {
            [Value::Array(items)] => match items.as_slice() {
                [Value::Int(n), Value::BulkString(epoch)] if *n >= 1 => (
                    usize::try_from(*n).ok(),
                    String::from_utf8(epoch.clone()).ok(),
                ),
                _ => (None, None),
            },
            _ => (None, None),
        };
        let (Some(live), Some(epoch)) = (live, epoch) else {
            return Err(self.odd_reply(&gateways_key));
        };
        self.saw_epoch(0, epoch);
        // Neither fails the heartbeat: one group's node in trouble (a slot migrating, a
        // node down with partial coverage allowed) must not take every key into the
        // local fallback. A missed look is made at the next beat.
        if let Err(e) = self.watch_other_epochs(gateway_id) {
            log::debug!("cluster: epochs not read this beat: {e}");
        }
        if let Err(e) = self.link.refresh_published() {
            log::debug!("cluster: slot map not read this beat: {e}");
        }
        Ok(live)
    }

    /// On a Redis Cluster, every group's epoch but group 0's (the heartbeat's): a node
    /// that came back empty is seen even by groups whose keys are all idle.
    fn watch_other_epochs(&mut self, gateway_id: &str) -> Result<(), String> {
        let calls: Vec<Call> = (1..self.epochs.len())
            .map(|group| Call {
                key: self.keys.epoch(group),
                also: None,
                args: self.epoch_args(group, gateway_id).to_vec(),
            })
            .collect();
        if calls.is_empty() {
            return Ok(());
        }
        let replies = eval_batch(&mut self.link, &mut self.epoch_script, &calls)?;
        for (group, reply) in replies.into_iter().enumerate() {
            match reply {
                Value::BulkString(epoch) => match String::from_utf8(epoch) {
                    Ok(epoch) => self.saw_epoch(group + 1, epoch),
                    Err(_) => return Err(self.odd_reply(&calls[group].key)),
                },
                _ => return Err(self.odd_reply(&calls[group].key)),
            }
        }
        Ok(())
    }

    fn odd_reply(&self, what: &str) -> String {
        format!("redis at {}: unexpected reply for {what}", self.link.addr())
    }
}

fn token_call(lease: &TokenLease) -> Result<Call, String> {
    let key = format!("{TOKEN_PREFIX}{}", lease.key);
    if !(lease.rate_per_sec.is_finite() && lease.rate_per_sec > 0.0) {
        return Err(format!(
            "{key}: rate_per_sec must be a positive number, not {}",
            lease.rate_per_sec
        ));
    }
    if !(lease.burst.is_finite() && lease.burst >= 0.0 && lease.burst <= MAX_COUNT as f64) {
        return Err(format!(
            "{key}: burst must be a number from 0 to 2^53, not {}",
            lease.burst
        ));
    }
    if !(lease.want.is_finite() && lease.want >= 0.0) {
        return Err(format!(
            "{key}: want must be a number of tokens, not {}",
            lease.want
        ));
    }
    if !(lease.demand.is_finite() && lease.demand >= 0.0) {
        return Err(format!(
            "{key}: demand must be a number of requests per second, not {}",
            lease.demand
        ));
    }
    if !(lease.interval_secs.is_finite() && lease.interval_secs > 0.0) {
        return Err(format!(
            "{key}: interval_secs must be a positive number, not {}",
            lease.interval_secs
        ));
    }
    if lease.gateway.is_empty() {
        return Err(format!("{key}: the gateway id is empty"));
    }
    let args = vec![
        lease.rate_per_sec.to_string(),
        lease.burst.to_string(),
        lease.want.min(MAX_COUNT as f64).to_string(),
        lease.gateway.to_owned(),
        lease.demand.to_string(),
        lease.interval_secs.to_string(),
    ];
    Ok(Call {
        key,
        also: None,
        args,
    })
}

/// The quota script's call for `lease` on `key` (the epoch key and args come after).
fn quota_call(lease: &QuotaLease, key: String) -> Result<Call, String> {
    if lease.ttl_secs == 0 {
        return Err(format!("{key}: ttl_secs must be at least 1"));
    }
    if lease.holder.is_empty() {
        return Err(format!("{key}: the holder is empty"));
    }
    let mut args: Vec<String> = [lease.limit, lease.want, lease.used, lease.ttl_secs]
        .iter()
        .map(|n| n.min(&MAX_COUNT).to_string())
        .collect();
    args.push(lease.holder.to_owned());
    Ok(Call {
        key,
        also: None,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(rate: f64, burst: f64) -> TokenLease<'static> {
        TokenLease {
            key: "k",
            rate_per_sec: rate,
            burst,
            want: 1.0,
            gateway: "gw",
            demand: 0.5,
            interval_secs: 0.1,
        }
    }

    #[test]
    fn token_leases_are_checked_before_sending() {
        let call = token_call(&lease(2.5, 10.0)).unwrap();
        assert_eq!(call.key, "rg:rl:k");
        assert_eq!(call.args, ["2.5", "10", "1", "gw", "0.5", "0.1"]);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = token_call(&lease(bad, 10.0)).err().unwrap();
            assert!(e.starts_with("rg:rl:k: rate_per_sec must be"), "{e}");
        }
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            let e = token_call(&lease(1.0, bad)).err().unwrap();
            assert!(e.starts_with("rg:rl:k: burst must be"), "{e}");
        }
        let huge = TokenLease {
            want: 1e300,
            ..lease(1e-9, 0.0)
        };
        assert_eq!(
            token_call(&huge).unwrap().args[..3],
            ["0.000000001", "0", "9007199254740992"]
        );
        let bad = [
            TokenLease {
                want: -1.0,
                ..lease(1.0, 1.0)
            },
            TokenLease {
                demand: f64::NAN,
                ..lease(1.0, 1.0)
            },
            TokenLease {
                interval_secs: 0.0,
                ..lease(1.0, 1.0)
            },
            TokenLease {
                gateway: "",
                ..lease(1.0, 1.0)
            },
        ];
        for (b, what) in bad
            .iter()
            .zip(["want", "demand", "interval_secs", "the gateway"])
        {
            let e = token_call(b).err().unwrap();
            assert!(e.starts_with(&format!("rg:rl:k: {what}")), "{e}");
        }
    }

    #[test]
    fn quota_leases_are_checked_before_sending() {
        let mut lease = QuotaLease {
            key: "day",
            holder: "gw:1",
            limit: u64::MAX,
            want: 5,
            used: 2,
            ttl_secs: 90_000,
        };
        let key = || "rg:q:day".to_string();
        let call = quota_call(&lease, key()).unwrap();
        assert_eq!(call.key, "rg:q:day");
        assert_eq!(call.args, ["9007199254740992", "5", "2", "90000", "gw:1"]);
        lease.ttl_secs = 0;
        assert_eq!(
            quota_call(&lease, key()).err().unwrap(),
            "rg:q:day: ttl_secs must be at least 1"
        );
        lease.ttl_secs = 1;
        lease.holder = "";
        assert_eq!(
            quota_call(&lease, key()).err().unwrap(),
            "rg:q:day: the holder is empty"
        );
    }

    #[test]
    fn empty_batches_need_no_server() {
        let mut store = ClusterStore::from_url("redis://127.0.0.1:1/0").unwrap();
        assert!(store.take_tokens(&[]).unwrap().is_empty());
        assert!(store.reserve_quota(&[]).unwrap().is_empty());
        assert!(store.quota_used(&[]).unwrap().is_empty());
    }

    #[test]
    fn unreachable_server_names_the_address_not_the_url() {
        let mut store = ClusterStore::from_url("redis://:hunter2@127.0.0.1:1/0").unwrap();
        let e = store.take_tokens(&[lease(1.0, 1.0)]).unwrap_err();
        assert!(
            e.starts_with("redis at 127.0.0.1:1: script call failed"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = store.quota_used(&["a"]).unwrap_err();
        assert!(
            e.starts_with("redis at 127.0.0.1:1: quota read failed"),
            "{e}"
        );
    }
}
