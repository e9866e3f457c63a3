//! Cluster-wide token buckets, quotas and the gateway heartbeat against a real
//! redis-server (started from PATH on a free port; each test is skipped, saying so, when
//! redis-server is missing).

#[path = "support/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use redis_support::RedisServer;
use ringgate::limits::cluster::{ClusterStore, QuotaGrant, QuotaLease, TokenLease};

/// Generous for a loaded CI machine, far below anything that would look like a hang.
const QUICK: Duration = Duration::from_millis(1500);
/// So slow that nothing refills while a test runs.
const SLOW: f64 = 0.001;
const DAY: u64 = 90_000;

fn store(server: &RedisServer) -> ClusterStore {
    ClusterStore::from_url(&server.url()).expect("valid url")
}

/// A lease by a gateway alone on its keys, for an interval so long that its fair part
/// (the whole rate) never limits it: only the bucket does.
fn lease(key: &str, rate_per_sec: f64, burst: f64, want: u64) -> TokenLease<'_> {
    TokenLease {
        key,
        rate_per_sec,
        burst,
        want: want as f64,
        gateway: "g",
        demand: 0.0,
        interval_secs: LONG,
    }
}

/// Grants to a thousandth of a token: `SLOW` buckets refill by a sliver between calls.
fn rounded(grants: Vec<f64>) -> Vec<f64> {
    grants.iter().map(|g| (g * 1e3).floor() / 1e3).collect()
}

/// A lease interval long enough that the bucket, not the fair part, limits a grant.
const LONG: f64 = 20_000.0;

/// A reservation by holder `h1`, which has used `used` units in all.
fn quota(key: &str, limit: u64, want: u64, used: u64) -> QuotaLease<'_> {
    QuotaLease {
        key,
        holder: "h1",
        limit,
        want,
        used,
        ttl_secs: DAY,
    }
}

fn grant(granted: u64, used: u64, held: u64) -> QuotaGrant {
    QuotaGrant {
        granted,
        used,
        held,
    }
}

fn int(server: &RedisServer, args: &[&str]) -> i64 {
    match server.cmd(args) {
        redis::Value::Int(n) => n,
        other => panic!("{args:?}: expected an integer, got {other:?}"),
    }
}

#[test]
fn fresh_bucket_grants_its_burst_then_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    let round = [lease("a", SLOW, 10.0, 10), lease("b", SLOW, 3.0, 5)];
    // `b` wants more than it holds and gets what is there.
    assert_eq!(rounded(store.take_tokens(&round).unwrap()), [10.0, 3.0]);
    assert_eq!(rounded(store.take_tokens(&round).unwrap()), [0.0, 0.0]);
    // Kept until it would be full again (10 tokens at 0.001/s: 10 000 s) and the
    // gateway's demand has expired (three intervals: 60 000 s), plus a second.
    let pttl = int(&server, &["PTTL", "rg:rl:a"]);
    assert!((59_990_000..=60_001_000).contains(&pttl), "{pttl}");
    // A partly spent bucket: one key twice in a round is taken in order.
    let c = [lease("c", SLOW, 10.0, 4), lease("c", SLOW, 10.0, 4)];
    assert_eq!(rounded(store.take_tokens(&c).unwrap()), [4.0, 4.0]);
    assert_eq!(
        rounded(store.take_tokens(&[lease("c", SLOW, 10.0, 100)]).unwrap()),
        [2.0]
    );
    // Wanting nothing takes nothing.
    assert_eq!(
        rounded(store.take_tokens(&[lease("d", SLOW, 10.0, 0)]).unwrap()),
        [0.0]
    );
    assert_eq!(
        rounded(store.take_tokens(&[lease("d", SLOW, 10.0, 10)]).unwrap()),
        [10.0]
    );
}

#[test]
fn bucket_refills_at_its_rate_up_to_its_burst() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    const RATE: f64 = 100.0;
    let before_drain = Instant::now();
    assert_eq!(
        rounded(store.take_tokens(&[lease("r", RATE, 100.0, 100)]).unwrap()),
        [100.0]
    );
    let after_drain = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let before_take = Instant::now();
    let got = store.take_tokens(&[lease("r", RATE, 100.0, 1000)]).unwrap()[0];
    let after_take = Instant::now();
    // Redis read its clock somewhere inside each call; grants are rounded down to a
    // thousandth of a token.
    let least = RATE * (before_take - after_drain).as_secs_f64() - 0.001;
    let most = RATE * (after_take - before_drain).as_secs_f64();
    assert!(
        (least..=most).contains(&got),
        "{got} not in {least}..={most}"
    );

    // Refill stops at the burst: 20 ms at 1000/s would be 20 tokens.
    assert_eq!(
        rounded(store.take_tokens(&[lease("cap", 1000.0, 5.0, 5)]).unwrap()),
        [5.0]
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        rounded(
            store
                .take_tokens(&[lease("cap", 1000.0, 5.0, 100)])
                .unwrap()
        ),
        [5.0]
    );
}

#[test]
fn gateways_share_one_bucket() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&server), store(&server));
    assert_eq!(
        rounded(a.take_tokens(&[lease("s", SLOW, 10.0, 4)]).unwrap()),
        [4.0]
    );
    assert_eq!(
        rounded(b.take_tokens(&[lease("s", SLOW, 10.0, 10)]).unwrap()),
        [6.0]
    );
    assert_eq!(
        rounded(a.take_tokens(&[lease("s", SLOW, 10.0, 1)]).unwrap()),
        [0.0]
    );
}

/// Two gateways leasing every 100 ms from a 1000/s bucket (so full that only the fair
/// part limits them): one lease's grant for `gateway` with `demand` requests a second.
fn fair_lease<'a>(key: &'a str, gateway: &'a str, demand: f64) -> TokenLease<'a> {
    TokenLease {
        key,
        rate_per_sec: 1000.0,
        burst: 1_000_000.0,
        want: 1_000.0,
        gateway,
        demand,
        interval_secs: 0.1,
    }
}

/// One lease's grant, which must be `expected` (to rounding).
fn assert_granted(store: &mut ClusterStore, lease: TokenLease, expected: f64) {
    let got = store.take_tokens(&[lease]).unwrap()[0];
    assert!(
        (got - expected).abs() < 1e-9,
        "{} for {}: {got}, expected {expected}",
        lease.key,
        lease.gateway
    );
}

#[test]
fn the_rate_is_split_by_demand_whoever_leases_first() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    // Alone, a gateway may take the whole rate for its interval: 100 tokens.
    assert_granted(&mut store, fair_lease("f", "a", 10.0), 100.0);
    // Below the rate: each gets its demand plus an equal part of what is left.
    // a: 10 + (1000 - 310) / 2 = 355/s; b: 300 + 345 = 645/s.
    assert_granted(&mut store, fair_lease("f", "b", 300.0), 64.5);
    assert_granted(&mut store, fair_lease("f", "a", 10.0), 35.5);
    // Above it: parts proportional to demand, adding up to the rate whatever the order.
    assert_granted(
        &mut store,
        fair_lease("f", "a", 3000.0),
        100.0 * 3000.0 / 3300.0,
    );
    assert_granted(
        &mut store,
        fair_lease("f", "b", 300.0),
        100.0 * 300.0 / 3300.0,
    );
    // A gateway that stops leasing drops out after three of its intervals.
    std::thread::sleep(Duration::from_millis(350));
    assert_granted(&mut store, fair_lease("f", "b", 300.0), 100.0);
    assert_eq!(int(&server, &["HEXISTS", "rg:rl:f", "d:a"]), 0);
}

#[test]
fn a_slow_rate_is_granted_in_fractions_of_a_token() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    // 1/min shared by two gateways leasing every 100 ms: 1/1200 of a token each.
    let slow = |gateway| TokenLease {
        rate_per_sec: 1.0 / 60.0,
        burst: 1.0,
        want: 0.1 / 60.0,
        ..fair_lease("slow", gateway, 0.0)
    };
    assert_granted(&mut store, slow("a"), 0.1 / 60.0);
    assert_granted(&mut store, slow("b"), 0.1 / 120.0);
    assert_granted(&mut store, slow("a"), 0.1 / 120.0);
}

/// Redis that lost its data is known by its epoch: a store that knew the old one sees
/// the reset, and for the grace no quota is reserved (use is still charged), so that
/// every gateway charges its use again before any reserves; a first start sets no grace.
#[test]
fn redis_coming_back_empty_is_seen_and_reservations_wait_out_the_grace() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let grace = Duration::from_millis(400);
    let mut store = store(&server).with_epoch_grace(grace);
    // A first start: no grace.
    assert_eq!(
        store.reserve_quota(&[quota("q", 10, 4, 0)]).unwrap()[0],
        grant(4, 4, 4)
    );
    assert!(!store.take_reset());
    let mut other = ClusterStore::from_url(&server.url())
        .unwrap()
        .with_epoch_grace(grace);
    other.heartbeat("g2", Duration::from_secs(3)).unwrap();
    assert!(
        !other.take_reset(),
        "a store meeting an epoch for the first time"
    );

    server.cmd(&["FLUSHALL"]);
    // The holder charges its 4 units again; nothing is granted during the grace.
    assert_eq!(
        store.reserve_quota(&[quota("q", 10, 4, 4)]).unwrap()[0],
        grant(0, 4, 4)
    );
    assert!(
        store.take_reset(),
        "the new epoch is a reset to the store that knew the old"
    );
    assert!(!store.take_reset(), "said once");
    // The other store learns it from its heartbeat.
    other.heartbeat("g2", Duration::from_secs(3)).unwrap();
    assert!(other.take_reset());
    std::thread::sleep(grace);
    assert_eq!(
        store.reserve_quota(&[quota("q", 10, 4, 4)]).unwrap()[0],
        grant(4, 8, 8)
    );

    // Flushed again, and a gateway that knew no epoch (it started while Redis was out)
    // writes the new one, without a grace: the first store that knew the old one starts
    // the grace when it comes by.
    server.cmd(&["FLUSHALL"]);
    let mut fresh = ClusterStore::from_url(&server.url())
        .unwrap()
        .with_epoch_grace(grace);
    fresh.heartbeat("g3", Duration::from_secs(3)).unwrap();
    assert!(!fresh.take_reset());
    assert_eq!(
        store.reserve_quota(&[quota("q", 10, 4, 8)]).unwrap()[0],
        grant(0, 8, 8)
    );
    assert!(store.take_reset());
    std::thread::sleep(grace);
    assert_eq!(
        store.reserve_quota(&[quota("q", 10, 4, 8)]).unwrap()[0],
        grant(2, 10, 10)
    );
}

#[test]
fn quota_grants_up_to_its_limit_exactly() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    let mut reserve = |want| store.reserve_quota(&[quota("q", 10, want, 0)]).unwrap()[0];
    assert_eq!(reserve(4), grant(4, 4, 4));
    assert_eq!(reserve(4), grant(4, 8, 8));
    assert_eq!(reserve(4), grant(2, 10, 10));
    assert_eq!(reserve(1), grant(0, 10, 10));
    let ttl = int(&server, &["TTL", "rg:q:q"]);
    assert!((DAY as i64 - 5..=DAY as i64).contains(&ttl), "{ttl}");

    // One round with a key twice and two limits.
    let round = [
        quota("x", 5, 3, 0),
        quota("x", 5, 3, 0),
        quota("y", 100, 7, 0),
    ];
    assert_eq!(
        store.reserve_quota(&round).unwrap(),
        [grant(3, 3, 3), grant(2, 5, 5), grant(7, 7, 7)]
    );
    assert_eq!(
        store.quota_used(&["q", "x", "y", "absent"]).unwrap(),
        [10, 5, 7, 0]
    );
    // Reading creates nothing.
    assert_eq!(int(&server, &["EXISTS", "rg:q:absent"]), 0);
}

#[test]
fn a_holders_own_use_is_charged_once_even_beyond_the_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    let mut reserve = |holder, want, used| {
        let lease = QuotaLease {
            holder,
            ..quota("f", 10, want, used)
        };
        store.reserve_quota(&[lease]).unwrap()[0]
    };
    // Units used without a reservation (default grants, Redis out of reach) are charged.
    assert_eq!(reserve("h1", 0, 3), grant(0, 3, 3));
    // Charged first, then reserved from what is left.
    assert_eq!(reserve("h1", 5, 5), grant(5, 10, 10));
    assert_eq!(reserve("h1", 5, 14), grant(0, 14, 14));
    // The same call again (its reply was lost) charges nothing twice.
    assert_eq!(reserve("h1", 5, 14), grant(0, 14, 14));
    // Another holder's use is its own.
    assert_eq!(reserve("h2", 1, 2), grant(0, 16, 2));
    assert_eq!(store.quota_used(&["f"]).unwrap(), [16]);
}

#[test]
fn a_repeated_reservation_is_reported_not_lost() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert_eq!(
        store.reserve_quota(&[quota("r", 10, 3, 0)]).unwrap(),
        [grant(3, 3, 3)]
    );
    // The holder never saw that reply and asks again: it holds both reservations, and
    // its next lease says so.
    assert_eq!(
        store.reserve_quota(&[quota("r", 10, 3, 0)]).unwrap(),
        [grant(3, 6, 6)]
    );
    assert_eq!(
        store.reserve_quota(&[quota("r", 10, 0, 6)]).unwrap(),
        [grant(0, 6, 6)]
    );
}

#[test]
fn keys_of_another_type_are_reported_as_such() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    server.cmd(&["SET", "rg:rl:str", "x"]);
    server.cmd(&["SET", "rg:q:str", "1"]);
    server.hset("rg:q:word", &[("used", "many")]);

    let e = store.take_tokens(&[lease("str", 1.0, 1.0, 1)]).unwrap_err();
    let at = format!("redis at 127.0.0.1:{}: ", server.port);
    assert_eq!(
        e,
        format!("{at}WRONGTYPE rg:rl:str holds a string, not a hash")
    );
    let e = store.reserve_quota(&[quota("str", 1, 1, 0)]).unwrap_err();
    assert_eq!(
        e,
        format!("{at}WRONGTYPE rg:q:str holds a string, not a hash")
    );
    let e = store.quota_used(&["ok", "str"]).unwrap_err();
    assert!(
        e.starts_with(&format!("{at}WRONGTYPE")) && e.contains("rg:q:str"),
        "{e}"
    );
    let e = store.reserve_quota(&[quota("word", 1, 1, 0)]).unwrap_err();
    assert!(e.contains("rg:q:word does not hold counts"), "{e}");
    let e = store.quota_used(&["word"]).unwrap_err();
    assert!(e.contains("rg:q:word does not hold a count"), "{e}");
    server.cmd(&["SET", "rg:gateways", "x"]);
    let e = store.heartbeat("g", Duration::from_secs(1)).unwrap_err();
    assert!(e.contains("WRONGTYPE rg:gateways"), "{e}");

    // Nothing was changed, and the connection still works.
    assert_eq!(int(&server, &["HLEN", "rg:q:word"]), 1);
    assert_eq!(
        rounded(store.take_tokens(&[lease("ok", SLOW, 2.0, 5)]).unwrap()),
        [2.0]
    );
}

#[test]
fn flushed_scripts_are_loaded_again_without_applying_a_lease_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert_eq!(
        rounded(store.take_tokens(&[lease("n", SLOW, 10.0, 3)]).unwrap()),
        [3.0]
    );
    assert_eq!(
        rounded(store.take_tokens(&[lease("n", SLOW, 10.0, 3)]).unwrap()),
        [3.0]
    );
    server.cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(
        rounded(store.take_tokens(&[lease("n", SLOW, 10.0, 3)]).unwrap()),
        [3.0]
    );
    assert_eq!(
        rounded(store.take_tokens(&[lease("n", SLOW, 10.0, 10)]).unwrap()),
        [1.0]
    );
    server.cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(
        store.reserve_quota(&[quota("n", 10, 4, 0)]).unwrap(),
        [grant(4, 4, 4)]
    );
    assert_eq!(store.quota_used(&["n"]).unwrap(), [4]);
}

#[test]
fn heartbeat_counts_live_gateways() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&server), store(&server));
    const SHORT: Duration = Duration::from_millis(300);
    assert_eq!(a.heartbeat("gw-a", SHORT).unwrap(), 1);
    assert_eq!(b.heartbeat("gw-b", Duration::from_secs(30)).unwrap(), 2);
    // A beat renews, it does not add.
    assert_eq!(a.heartbeat("gw-a", SHORT).unwrap(), 2);
    let last_beat = Instant::now();
    let deadline = last_beat + Duration::from_secs(5);
    loop {
        let alive = b.heartbeat("gw-b", Duration::from_secs(30)).unwrap();
        if alive == 1 {
            break;
        }
        assert_eq!(alive, 2);
        assert!(Instant::now() < deadline, "gw-a never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Gone no earlier than its ttl (Redis's and our clocks may differ by a tick).
    let gone_after = last_beat.elapsed();
    assert!(
        gone_after >= SHORT - Duration::from_millis(20),
        "{gone_after:?}"
    );
    assert_eq!(int(&server, &["ZCARD", "rg:gateways"]), 1);
    let pttl = int(&server, &["PTTL", "rg:gateways"]);
    assert!((20_000..=30_000).contains(&pttl), "{pttl}");
}

#[test]
fn stopped_redis_fails_quickly_then_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    assert_eq!(
        rounded(store.take_tokens(&[lease("k", SLOW, 5.0, 5)]).unwrap()),
        [5.0]
    );

    server.stop();
    let addr = format!("redis at 127.0.0.1:{}: ", server.port);
    for _ in 0..3 {
        let started = Instant::now();
        let errors = [
            store.take_tokens(&[lease("k", SLOW, 5.0, 5)]).unwrap_err(),
            store.reserve_quota(&[quota("k", 5, 5, 0)]).unwrap_err(),
            store.quota_used(&["k"]).unwrap_err(),
            store.heartbeat("g", Duration::from_secs(1)).unwrap_err(),
        ];
        assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
        for e in errors {
            assert!(e.starts_with(&addr) && e.contains("failed"), "{e}");
        }
    }

    // The same store reconnects on its own and loads its scripts again; the restarted
    // server has lost its data, so the bucket is full again.
    server.restart();
    assert_eq!(
        rounded(store.take_tokens(&[lease("k", SLOW, 5.0, 5)]).unwrap()),
        [5.0]
    );
    assert_eq!(
        store.reserve_quota(&[quota("k", 5, 2, 0)]).unwrap(),
        [grant(2, 2, 2)]
    );
    assert_eq!(store.heartbeat("g", Duration::from_secs(1)).unwrap(), 1);
}

#[test]
fn wedged_redis_costs_one_timeout_per_round_not_one_per_lease() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut store = store(&server);
    let keys: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let round: Vec<TokenLease> = keys.iter().map(|k| lease(k, SLOW, 1.0, 0)).collect();
    assert_eq!(rounded(store.take_tokens(&round).unwrap()), vec![0.0; 200]);

    server.pause();
    let started = Instant::now();
    let e = store.take_tokens(&round).unwrap_err();
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
    assert!(e.contains("failed"), "{e}");
    server.resume();
    assert_eq!(rounded(store.take_tokens(&round).unwrap()), vec![0.0; 200]);
}

#[test]
fn link_pipelines_keep_the_crates_reply_shapes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut link = ringgate::redis_link::RedisLink::from_url(&server.url()).unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg("p")
        .arg(1)
        .ignore()
        .cmd("INCR")
        .arg("p")
        .cmd("GET")
        .arg("p");
    assert_eq!(
        link.query_pipeline::<(i64, String)>(&pipe).unwrap(),
        (2, "2".into())
    );
    pipe.atomic();
    assert_eq!(
        link.query_pipeline::<(i64, String)>(&pipe).unwrap(),
        (2, "2".into())
    );
    // An error reply fails the call but leaves the connection in step.
    let mut bad = redis::pipe();
    bad.cmd("INCR")
        .arg("p")
        .cmd("HGET")
        .arg("p")
        .arg("f")
        .cmd("INCR")
        .arg("p");
    let e = link.query_pipeline::<(i64, i64, i64)>(&bad).unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
    let replies = link.pipeline_replies(&bad).unwrap();
    assert!(
        matches!(
            replies[..],
            [
                redis::Value::Int(5),
                redis::Value::ServerError(_),
                redis::Value::Int(6)
            ]
        ),
        "{replies:?}"
    );
    assert_eq!(link.query::<i64>(redis::cmd("GET").arg("p")).unwrap(), 6);
}
