//! A Redis Cluster (`redis = { nodes = [...] }`): three masters made by
//! `redis-cli --cluster create`. The app registry finds records on every node (its key
//! filter scans every master); cluster limits spread their quota keys over hash-tag
//! groups on the nodes and hold a shared rate and a daily quota exactly; a node that
//! comes back empty is seen by its groups' epochs, and every gateway charges its use
//! again, so the quota stays exact.

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use gateway_process::*;
use redis_support::RedisCluster;
use support::eventually;

const APPS: usize = 24;

fn target(cluster: &RedisCluster) -> String {
    format!("{{ nodes = {} }}", cluster.nodes_toml())
}

/// `[cluster] redis` as a user allowed only `rg:*` and no `@dangerous` commands, made on
/// every node: the gateway sends its login itself.
fn as_least_privileged_user(cluster: &RedisCluster) -> String {
    let (user, password) = ("gw", "cluster-acl-password");
    let pass = format!(">{password}");
    cluster.add_user(user, &["on", &pass, "~rg:*", "+@all", "-@dangerous"]);
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"redis://{user}:{password}@127.0.0.1:{}\"", n.port))
        .collect();
    format!("{{ nodes = [{}] }}", urls.join(", "))
}

/// What Redis records as used, over every node's quota keys.
fn quota_used(cluster: &RedisCluster) -> i64 {
    cluster
        .keys("rg:q:*")
        .iter()
        .map(
            |(i, key)| match cluster.nodes[*i].cmd(&["HGET", key, "used"]) {
                redis::Value::BulkString(v) => {
                    std::str::from_utf8(&v).unwrap().parse::<i64>().unwrap()
                }
                redis::Value::Nil => 0,
                other => panic!("{other:?}"),
            },
        )
        .sum()
}

/// `total` admitted is the quota (but for one unit per worker from a grant being taken
/// back: documented), and Redis records exactly that.
fn assert_exact(cluster: &RedisCluster, total: usize, quota: usize) {
    let slack = 2 * 2;
    assert!(
        (quota - slack..=quota + slack).contains(&total),
        "admitted {total} of {quota}"
    );
    assert!(
        eventually(Duration::from_secs(3), || quota_used(cluster)
            == total as i64),
        "Redis records {} for {total} admitted",
        quota_used(cluster)
    );
}

#[test]
fn the_registry_finds_apps_on_every_node() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    for i in 0..APPS {
        let key = format!("rg:app:app-{i}");
        cluster.node_of(&key).hset(
            &key,
            &[
                ("secret", &format!("cluster-secret-{i:06}")),
                ("groups", "trade"),
            ],
        );
    }
    let holders: std::collections::BTreeSet<usize> = cluster
        .keys("rg:app:*")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(holders.len(), 3, "the apps are on every node");
    let up = support::Upstream::echo();
    let gw = support::Gateway::start(
        support::Driver::IoUring,
        1,
        "",
        &format!(
            "[apps]\nredis = {}\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
             [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\n",
            target(&cluster),
            up.addr
        ),
    );
    // The key filter holds every app, from every node.
    assert!(
        eventually(Duration::from_secs(10), || {
            support::stats(gw.admin.unwrap())["apps"]["store"]["keys_in_filter"] == APPS
        }),
        "{}",
        support::stats(gw.admin.unwrap())
    );
    for i in 0..APPS {
        let r = support::signed_get(
            gw.addr,
            &format!("app-{i}"),
            &format!("cluster-secret-{i:06}"),
            "/v1/orders/1",
            &format!("cluster-nonce-{i:08}-{}", std::process::id()),
        );
        assert_eq!(r.status, 200, "app-{i}: {}", r.body_str());
    }
    let r = support::signed_get(
        gw.addr,
        "app-none",
        "whatever-secret-0000",
        "/v1/orders/1",
        "unknown-app-nonce-00001",
    );
    assert_eq!(r.status, 401, "{}", r.body_str());
    let s = support::stats(gw.admin.unwrap());
    assert_eq!(s["apps"]["store"]["up"], true, "{s}");
}

#[test]
fn two_gateways_hold_a_quota_exactly_through_a_node_coming_back_empty() {
    let Some(mut cluster) = RedisCluster::start(3) else {
        return;
    };
    // One route's quota: one key, in one group, on one node.
    const QUOTA: usize = 600;
    let limit = format!("{{ key = \"route\", quota = \"{QUOTA}/day\" }}");
    let a = Gateway::start(
        "rc-a",
        "io_uring",
        &target(&cluster),
        "gateways = 2",
        &limit,
    );
    let b = Gateway::start("rc-b", "epoll", &target(&cluster), "gateways = 2", &limit);
    let pace = Duration::from_millis(20);
    let (la, lb) = (Load::paced(a.addr, 3, pace), Load::paced(b.addr, 3, pace));
    assert!(
        eventually(Duration::from_secs(10), || quota_used(&cluster) >= 150),
        "{:?}",
        a.stats()
    );
    let keys = cluster.keys("rg:q:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (holder, key) = keys[0].clone();
    assert!(key.starts_with("rg:q:{rg"), "hash-tagged: {key}");
    // The epochs of the 16 groups, on the nodes that hold their slots.
    assert_eq!(cluster.keys("rg:epoch:*").len(), 16);
    // The node holding the quota comes back empty (no persistence).
    let restarted = Instant::now();
    cluster.nodes[holder].restart();
    cluster.wait_ok();
    eprintln!("node back after {:?}", restarted.elapsed());
    assert!(
        eventually(Duration::from_secs(20), || quota_used(&cluster)
            >= QUOTA as i64),
        "the quota was used up after the node came back: {}",
        quota_used(&cluster)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (oa, ob) = (la.finish(), lb.finish());
    assert!(oa.unexpected.is_empty(), "{:?}", oa.unexpected);
    assert!(ob.unexpected.is_empty(), "{:?}", ob.unexpected);
    let admitted = |o: &Outcome| o.answers.iter().filter(|(_, ok)| *ok).count();
    let total = admitted(&oa) + admitted(&ob);
    eprintln!("admitted {total} of {QUOTA} through a node restart");
    assert_exact(&cluster, total, QUOTA);
    wait_for_mode(&[&a, &b], "cluster", Duration::from_secs(3));
    // Seen as a reset (the group's epoch was gone with the node's data), not by luck.
    for g in [&a, &b] {
        assert!(g.log_text().contains("lost its data"), "{}", g.log_text());
    }
}

#[test]
fn two_gateways_hold_one_rate_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    const RATE: f64 = 200.0;
    let limit = format!("{{ key = \"route\", rate = \"{RATE}/s\", burst = 20 }}");
    let a = Gateway::start("rcr-a", "io_uring", &target(&cluster), "", &limit);
    let b = Gateway::start("rcr-b", "epoll", &target(&cluster), "", &limit);
    assert!(eventually(Duration::from_secs(5), || a
        .stats()
        .unwrap()
        .contains("\"gateways\":2")));
    let (la, lb) = (Load::start(a.addr, 2), Load::start(b.addr, 2));
    std::thread::sleep(Duration::from_millis(500));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let to = Instant::now();
    let (oa, ob) = (la.finish(), lb.finish());
    assert!(oa.unexpected.is_empty() && ob.unexpected.is_empty());
    let admitted = oa.admitted_between(from, to) + ob.admitted_between(from, to);
    let expected = RATE * (to - from).as_secs_f64();
    eprintln!("admitted {admitted}, expected {expected:.0}");
    assert!(
        (admitted as f64 - expected).abs() <= expected * 0.1,
        "admitted {admitted}, expected {expected:.0}"
    );
    assert_eq!(a.mode(), "cluster");
    assert_eq!(cluster.keys("rg:rl:*").len(), 1);
}

/// Fleet-wide nonces on a cluster: every claim lands in the slot of the `{rg-w}` tag, on
/// the node that holds it, whichever worker and gateway makes it; a nonce used on one
/// gateway is refused on the other.
#[test]
fn fleet_nonces_live_on_the_node_of_their_slot() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    const SECRET: &str = "cluster-fleet-secret-01";
    let app = "rg:app:app-f";
    cluster
        .node_of(app)
        .hset(app, &[("secret", SECRET), ("groups", "trade")]);
    let up = support::Upstream::echo();
    // One worker each: every worker's connection is warmed below (a worker whose
    // connection is not up yet settles a claim locally, and the cross check would see
    // a 200).
    let gateway = |driver| {
        support::Gateway::start(
            driver,
            1,
            "",
            &format!(
                "[cluster]\nredis = {t}\ngateways = 2\n[apps]\nredis = {t}\n\
                 [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
                 [[routes]]\nname = \"orders\"\npath = \"/v1/orders/*\"\nupstream = \"up\"\ngroup = \"trade\"\nauth = \"hmac\"\n",
                up.addr,
                t = target(&cluster)
            ),
        )
    };
    let (a, b) = (
        gateway(support::Driver::IoUring),
        gateway(support::Driver::Epoll),
    );
    let call = |gw: &support::Gateway, nonce: &str| {
        support::signed_get(gw.addr, "app-f", SECRET, "/v1/orders/1", nonce)
    };
    let holder = cluster.node_of("rg:nonce:{rg-w}:x");
    let claims = || match holder.cmd(&["KEYS", "rg:nonce:*"]) {
        redis::Value::Array(k) => k.len(),
        other => panic!("{other:?}"),
    };
    let mut n = 0;
    // Once the lease threads have published the node, each gateway's claims reach it.
    for gw in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), || {
            n += 1;
            let before = claims();
            call(gw, &format!("fleet-cluster-nonce-{n:06}")).status == 200 && claims() > before
        }));
    }
    for i in 0..20 {
        let nonce = format!("fleet-cluster-cross-{i:06}-{}", std::process::id());
        let (first, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(call(first, &nonce).status, 200);
        let r = call(other, &nonce);
        assert_eq!(
            r.status,
            401,
            "a nonce used on one gateway: {}",
            r.body_str()
        );
    }
    let placed = cluster.keys("rg:nonce:*");
    assert!(placed.len() >= 20, "{placed:?}");
    let holder_index = cluster
        .nodes
        .iter()
        .position(|n| n.port == holder.port)
        .unwrap();
    assert!(placed.iter().all(|(i, _)| *i == holder_index), "{placed:?}");
}

/// A resharding under load: the slots of the quota's group and of the heartbeat move to
/// other nodes (keys and all). The gateways, logged in as an ACL user, read the slot map
/// again after the redirects and go on in cluster mode; the quota stays exact.
#[test]
fn a_resharding_under_load_is_followed_and_the_quota_stays_exact() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let t = as_least_privileged_user(&cluster);
    const QUOTA: usize = 600;
    let limit = format!("{{ key = \"route\", quota = \"{QUOTA}/day\" }}");
    let a = Gateway::start("rs-a", "io_uring", &t, "gateways = 2", &limit);
    let b = Gateway::start("rs-b", "epoll", &t, "gateways = 2", &limit);
    let pace = Duration::from_millis(20);
    let (la, lb) = (Load::paced(a.addr, 3, pace), Load::paced(b.addr, 3, pace));
    assert!(eventually(Duration::from_secs(10), || quota_used(&cluster) >= 150));
    let (_, key) = cluster.keys("rg:q:*")[0].clone();
    for moved in [key.as_str(), "rg:gateways:{rg0}"] {
        let from = cluster
            .nodes
            .iter()
            .position(|n| n.port == cluster.node_of(moved).port);
        let to = (from.unwrap() + 1) % cluster.nodes.len();
        cluster.move_slot_of(moved, to);
    }
    let moved_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || quota_used(&cluster)
            >= QUOTA as i64),
        "the quota was used up after the resharding: {} ({:?})",
        quota_used(&cluster),
        a.stats()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (oa, ob) = (la.finish(), lb.finish());
    assert!(oa.unexpected.is_empty() && ob.unexpected.is_empty());
    let admitted = |o: &Outcome| o.answers.iter().filter(|(_, ok)| *ok).count();
    let total = admitted(&oa) + admitted(&ob);
    eprintln!(
        "admitted {total} of {QUOTA} through a resharding ({:?} after it)",
        moved_at.elapsed()
    );
    assert_exact(&cluster, total, QUOTA);
    wait_for_mode(&[&a, &b], "cluster", Duration::from_secs(3));
}

/// A node frozen (SIGSTOP: it accepts connections and never answers) under a gateway
/// logged in as an ACL user: every call to it is bounded, the gateway holds its limits
/// locally meanwhile, and it is back in cluster mode soon after the node thaws.
#[test]
fn a_frozen_node_costs_bounded_waits_and_cluster_mode_returns() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let t = as_least_privileged_user(&cluster);
    let limit = "{ key = \"route\", rate = \"200/s\", burst = 20 }";
    let a = Gateway::start("fz-a", "epoll", &t, "gateways = 1", limit);
    wait_for_mode(&[&a], "cluster", Duration::from_secs(5));
    let load = Load::start(a.addr, 2);
    let frozen = cluster.node_of("rg:gateways:{rg0}");
    frozen.pause();
    let froze = Instant::now();
    wait_for_mode(&[&a], "local_fallback", Duration::from_secs(5));
    let fell_back = froze.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    frozen.resume();
    let thawed = Instant::now();
    wait_for_mode(&[&a], "cluster", Duration::from_secs(10));
    let back = thawed.elapsed();
    let outcome = load.finish();
    assert!(outcome.unexpected.is_empty(), "{:?}", outcome.unexpected);
    eprintln!(
        "frozen node: local fallback after {fell_back:?}, cluster mode {back:?} after the thaw"
    );
}

/// A pipeline over three nodes, one of them killed: the others' commands run exactly
/// once (nothing is sent again whole), the dead node's answer is an error reply for its
/// own commands, and the next call goes on without it.
#[test]
fn a_dead_node_fails_only_its_own_commands_and_nothing_runs_twice() {
    use ringgate::config::redis_target::{RedisServers, RedisTarget};
    let Some(mut cluster) = RedisCluster::start(3) else {
        return;
    };
    // One key on each node.
    let mut keys: Vec<String> = Vec::new();
    for i in 0.. {
        let key = format!("rg:t:{i}");
        let port = cluster.node_of(&key).port;
        if !keys.iter().any(|k| cluster.node_of(k).port == port) {
            keys.push(key);
        }
        if keys.len() == 3 {
            break;
        }
    }
    let target = RedisTarget {
        servers: RedisServers::Cluster {
            nodes: cluster.nodes.iter().map(|n| n.url()).collect(),
            tls: false,
        },
        ca: None,
        identity: None,
        files_digest: [0; 32],
    };
    let mut link = ringgate::redis_link::RedisLink::new(&target).unwrap();
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("INCR").arg(key);
    }
    let replies = link.pipeline_replies(&pipe).unwrap();
    assert_eq!(replies, vec![redis::Value::Int(1); 3]);
    // Where each key lives, asked before a node dies (any node may be the one asked).
    let holders: Vec<usize> = keys
        .iter()
        .map(|k| {
            let port = cluster.node_of(k).port;
            cluster.nodes.iter().position(|n| n.port == port).unwrap()
        })
        .collect();
    cluster.nodes[holders[2]].stop();
    let replies = link.pipeline_replies(&pipe).unwrap();
    assert_eq!(&replies[..2], &[redis::Value::Int(2), redis::Value::Int(2)]);
    assert!(
        matches!(&replies[2], redis::Value::ServerError(e) if e.code() == "IOERR"),
        "{:?}",
        replies[2]
    );
    for (key, &holder) in keys[..2].iter().zip(&holders) {
        let count = match cluster.nodes[holder].cmd(&["GET", key]) {
            redis::Value::BulkString(v) => String::from_utf8(v).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(count, "2", "{key} incremented once per call");
    }
}
