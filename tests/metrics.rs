//! `GET /metrics` over real sockets, two workers, both drivers: parsed by a Prometheus
//! text-format parser (the `prometheus-parse` crate), with counts matching exactly the
//! requests sent: by route, method and status class, latency histograms, upstream
//! connection reuse and connect errors, per-worker series, the config generation.

mod support;

use std::collections::HashMap;

use prometheus_parse::{Sample, Scrape, Value};
use support::*;

fn scrape(gw: &Gateway) -> Vec<Sample> {
    let r = Client::connect(gw.admin.expect("admin listener")).get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.body_str();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not the Prometheus text format: {e}\n{text}"))
        .samples
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

fn metrics_count_every_request(driver: Driver) {
    let up = Upstream::echo();
    let dead = dead_addr();
    let body = format!(
        "[[upstreams]]\nname = \"live\"\ntargets = [\"{}\"]\n\
         [[upstreams]]\nname = \"dead\"\ntargets = [\"{dead}\"]\n\
         [[routes]]\nname = \"orders.get\"\npath = \"/orders/*\"\nupstream = \"live\"\n\
         [[routes]]\nname = \"gone\"\npath = \"/gone/*\"\nupstream = \"dead\"\nmax_body_bytes = 10\n",
        up.addr
    );
    let gw = Gateway::start(driver, 2, "", &body);
    // 7 GETs and 3 POSTs to a live route on one keep-alive connection (so 1 new upstream
    // connection and 9 reused ones on that worker), 2 requests to a dead upstream, 4 that
    // match no route, on other connections.
    let mut c = Client::connect(gw.addr);
    for _ in 0..7 {
        assert_eq!(c.get("/orders/1").status, 200);
    }
    for _ in 0..3 {
        c.send(b"POST /orders/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(c.read_response().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(Client::connect(gw.addr).get("/gone/x").status, 502);
    }
    // Refused by the gateway on a route it matched: counted on that route.
    let mut big = Client::connect(gw.addr);
    big.send(b"POST /gone/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    assert_eq!(big.read_response().status, 413);
    // The gateway lingers on a connection it closes with a body unread: leave, so the
    // request is over (and counted) before the scrape.
    drop(big);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut other = Client::connect(gw.addr);
    for _ in 0..4 {
        assert_eq!(other.get("/nowhere").status, 404);
    }

    let s = scrape(&gw);
    let requests = |route: &str, method: &str, class: &str| {
        value(
            &s,
            "ringgate_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("orders.get", "GET", "2xx"), Some(7.0));
    assert_eq!(requests("orders.get", "POST", "2xx"), Some(3.0));
    assert_eq!(requests("gone", "GET", "5xx"), Some(2.0));
    assert_eq!(requests("", "GET", "4xx"), Some(4.0), "unmatched");
    assert_eq!(
        requests("gone", "POST", "4xx"),
        Some(1.0),
        "refused on its route"
    );
    assert_eq!(
        requests("orders.get", "GET", "5xx"),
        None,
        "no empty series"
    );

    // One histogram per route, its count the route's requests, its buckets cumulative.
    let h = s
        .iter()
        .find(|x| {
            x.metric == "ringgate_request_duration_seconds"
                && x.labels.get("route") == Some("orders.get")
        })
        .expect("a latency histogram for orders.get");
    let Value::Histogram(buckets) = &h.value else {
        panic!("{:?}", h.value)
    };
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(buckets.last().unwrap().count, 10.0);
    assert_eq!(
        value(
            &s,
            "ringgate_request_duration_seconds_count",
            &[("route", "orders.get")]
        ),
        Some(10.0)
    );

    let up_req = |name: &str, conn: &str| {
        value(
            &s,
            "ringgate_upstream_requests_total",
            &[("upstream", name), ("connection", conn)],
        )
    };
    assert_eq!(up_req("live", "new"), Some(1.0));
    assert_eq!(up_req("live", "reused"), Some(9.0));
    assert_eq!(
        value(
            &s,
            "ringgate_upstream_connect_errors_total",
            &[("upstream", "dead")]
        ),
        Some(2.0)
    );
    // Per worker: the requests add up, and every worker names its driver.
    let per_worker: Vec<&Sample> = s
        .iter()
        .filter(|x| x.metric == "ringgate_worker_requests_total")
        .collect();
    assert_eq!(per_worker.len(), 2);
    let total: f64 = per_worker
        .iter()
        .map(|x| match x.value {
            Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 17.0);
    assert!(per_worker
        .iter()
        .all(|x| x.labels.get("driver") == Some(driver.name())));
    assert_eq!(value(&s, "ringgate_config_generation", &[]), Some(1.0));
    assert_eq!(
        value(&s, "ringgate_config_reload_failures_total", &[]),
        Some(0.0)
    );
    let open: HashMap<String, f64> = s
        .iter()
        .filter(|x| x.metric == "ringgate_open_connections")
        .map(|x| {
            (
                x.labels.get("worker").unwrap_or("").to_owned(),
                value(std::slice::from_ref(x), &x.metric, &[]).unwrap(),
            )
        })
        .collect();
    assert_eq!(open.len(), 2);
}

on_both_drivers!(metrics_count_every_request);
