//! Where cluster limits keep their state in Redis: token buckets `rg:rl:<key>`, quotas
//! `rg:q:<key>`, the gateways' heartbeat `rg:gateways` and Redis's epoch `rg:epoch`. On a
//! Redis Cluster a script's keys must share a slot, so quota keys are spread over
//! `CLUSTER_GROUPS` hash tags, `rg:q:{rg<n>}:<key>`, each group with its epoch
//! `rg:epoch:{rg<n>}`, and the heartbeat is `rg:gateways:{rg0}` beside group 0's epoch.

/// Prefix of quota keys.
pub const QUOTA_PREFIX: &str = "rg:q:";
/// The sorted set of live gateways.
pub const GATEWAYS_KEY: &str = "rg:gateways";
/// Redis's current life (see the epoch in `cluster_scripts`).
pub const EPOCH_KEY: &str = "rg:epoch";
/// Groups of quota keys on a Redis Cluster: enough to spread them over the nodes, few
/// enough that the heartbeat reads every group's epoch once a second.
pub const CLUSTER_GROUPS: usize = 16;

/// The key names for one Redis deployment.
pub(super) struct KeyLayout {
    groups: usize,
}

impl KeyLayout {
    /// One group on a single server (or Sentinel's master), `CLUSTER_GROUPS` on a cluster.
    pub(super) fn new(cluster: bool) -> KeyLayout {
        KeyLayout {
            groups: if cluster { CLUSTER_GROUPS } else { 1 },
        }
    }

    pub(super) fn groups(&self) -> usize {
        self.groups
    }

    /// The Redis key of quota `key` and its group.
    pub(super) fn quota(&self, key: &str) -> (String, usize) {
        if self.groups == 1 {
            return (format!("{QUOTA_PREFIX}{key}"), 0);
        }
        let group = group_of(key, self.groups);
        (format!("{QUOTA_PREFIX}{{rg{group}}}:{key}"), group)
    }

    /// The epoch key of `group`.
    pub(super) fn epoch(&self, group: usize) -> String {
        if self.groups == 1 {
            EPOCH_KEY.to_owned()
        } else {
            format!("{EPOCH_KEY}:{{rg{group}}}")
        }
    }

    /// The heartbeat's sorted set (in group 0's slot).
    pub(super) fn gateways(&self) -> String {
        if self.groups == 1 {
            GATEWAYS_KEY.to_owned()
        } else {
            format!("{GATEWAYS_KEY}:{{rg0}}")
        }
    }
}

/// The group of quota `key` (FNV-1a: the same on every gateway and every build).
fn group_of(key: &str, groups: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % groups as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_keys_spread_over_stable_groups() {
        // The same on every gateway and build: a fixed hash, not the process's hasher.
        assert_eq!(
            group_of("", CLUSTER_GROUPS),
            (0xcbf2_9ce4_8422_2325_u64 % 16) as usize
        );
        let mut seen = [0; CLUSTER_GROUPS];
        for i in 0..1600 {
            seen[group_of(&format!("app:app-{i}:20261205"), CLUSTER_GROUPS)] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
    }

    #[test]
    fn one_server_keeps_the_plain_names() {
        let one = KeyLayout::new(false);
        assert_eq!(one.quota("route:r:1"), ("rg:q:route:r:1".to_string(), 0));
        assert_eq!(
            (one.epoch(0), one.gateways()),
            ("rg:epoch".into(), "rg:gateways".into())
        );
        let cluster = KeyLayout::new(true);
        let (key, group) = cluster.quota("route:r:1");
        assert_eq!(key, format!("rg:q:{{rg{group}}}:route:r:1"));
        assert_eq!(cluster.epoch(group), format!("rg:epoch:{{rg{group}}}"));
        assert_eq!(cluster.gateways(), "rg:gateways:{rg0}");
    }
}
