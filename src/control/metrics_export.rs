//! `GET /metrics`: the Prometheus text format (version 0.0.4), built on the control side
//! from a copy of every worker's metrics (merged by route and upstream name) and the
//! shared state. Latency histograms are hdrhistograms merged across workers and exposed
//! as cumulative buckets; `_sum` is their mean times their count, so it carries the
//! histogram's precision (two significant digits).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::{TlsCounts, UpstreamCounts, WorkerReport, METHODS, TLS_FAILURE_REASONS};
use crate::resilience::breaker::State;
use crate::runtime::GatewayState;

/// Bucket bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long a scrape waits for the workers (each answers on its next 10 ms tick).
const SCRAPE_WAIT: Duration = Duration::from_secs(1);

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn render(state: &GatewayState) -> String {
    let reports = state.scrape_metrics(SCRAPE_WAIT);
    let mut out = String::with_capacity(16 * 1024);
    requests(&mut out, &reports);
    workers(&mut out, state, &reports);
    upstreams(&mut out, &reports);
    let serves_tls = state
        .snapshot
        .read()
        .is_ok_and(|snap| snap.config.tls.is_some());
    if serves_tls {
        handshakes(&mut out, &reports);
    }
    generation(&mut out, state);
    out
}

fn requests(out: &mut String, reports: &[WorkerReport]) {
    let mut counts: BTreeMap<&str, [[u64; 5]; 8]> = BTreeMap::new();
    let mut latency: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    for r in reports {
        for route in &r.routes {
            let c = counts.entry(&route.name).or_insert([[0; 5]; 8]);
            for (m, classes) in route.requests.iter().enumerate() {
                for (s, n) in classes.iter().enumerate() {
                    c[m][s] += n;
                }
            }
            match latency.get_mut(&*route.name) {
                Some(h) => {
                    let _ = h.add(&route.latency_us);
                }
                None => {
                    latency.insert(&route.name, route.latency_us.clone());
                }
            }
        }
    }
    header(
        out,
        "ringgate_requests_total",
        "counter",
        "Requests answered, by route (\"\" when none matched), method and status class.",
    );
    for (route, c) in &counts {
        for (m, classes) in c.iter().enumerate() {
            for (s, &n) in classes.iter().enumerate() {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "ringgate_requests_total{{route=\"{}\",method=\"{}\",status_class=\"{}\"}} {n}",
                        escape(route),
                        METHODS[m],
                        STATUS_CLASSES[s]
                    );
                }
            }
        }
    }
    header(
        out,
        "ringgate_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the end of its response, by route.",
    );
    for (route, h) in &latency {
        if h.is_empty() {
            continue;
        }
        let route = escape(route);
        for le in BUCKETS {
            let n = h.count_between(0, (le * 1e6) as u64);
            let _ = writeln!(
                out,
                "ringgate_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}"
            );
        }
        let total = h.len();
        let _ = writeln!(
            out,
            "ringgate_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}\n\
             ringgate_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
             ringgate_request_duration_seconds_count{{route=\"{route}\"}} {total}",
            h.mean() * total as f64 / 1e6
        );
    }
}

fn workers(out: &mut String, state: &GatewayState, reports: &[WorkerReport]) {
    let drivers = state.drivers.lock().map(|d| d.clone()).unwrap_or_default();
    let driver = |w: usize| {
        drivers
            .get(w)
            .copied()
            .flatten()
            .map_or("unknown", |d| d.name())
    };
    /// One series per worker: name, type, help, and the value of a worker's report.
    type PerWorker = (
        &'static str,
        &'static str,
        &'static str,
        fn(&WorkerReport) -> f64,
    );
    let families: [PerWorker; 9] = [
        (
            "ringgate_open_connections",
            "gauge",
            "Client connections open, by worker.",
            |r| r.open_connections as f64,
        ),
        (
            "ringgate_accept_errors_total",
            "counter",
            "Accepts that failed (out of file descriptors, mostly), by worker; each accept loop (up to eight per listener) backs off 10 ms after one.",
            |r| r.accept_errors as f64,
        ),
        (
            "ringgate_connections_refused_total",
            "counter",
            "Connections turned away at max_connections_per_worker (503 overloaded on plain listeners), by worker.",
            |r| r.refused_connections as f64,
        ),
        (
            "ringgate_requests_shed_total",
            "counter",
            "Requests refused at once (503 overloaded) because the worker's event loop ran later than server.max_loop_delay, by worker.",
            |r| r.shed_requests as f64,
        ),
        (
            "ringgate_connections_shed_total",
            "counter",
            "New TLS connections closed before their handshakes because the worker was shedding load, by worker.",
            |r| r.shed_connections as f64,
        ),
        (
            "ringgate_worker_loop_delay_seconds",
            "gauge",
            "The worst delay of the worker's event loop in the last one to two seconds (its 10 ms tick woke this late).",
            |r| r.loop_delay.as_secs_f64(),
        ),
        (
            "ringgate_worker_shed_ratio",
            "gauge",
            "The share of new requests the worker sheds now (0 to 1).",
            |r| r.shed_share,
        ),
        (
            "ringgate_worker_accept_delay_seconds",
            "gauge",
            "The larger of the loop's delay and the longest a new TLS connection waited in the accept queue, in the last one to two seconds (what turns new TLS connections away).",
            |r| r.accept_delay.as_secs_f64(),
        ),
        (
            "ringgate_worker_shed_connections_ratio",
            "gauge",
            "The share of new TLS connections the worker turns away now (0 to 1).",
            |r| r.shed_connection_share,
        ),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for r in reports {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{}\",driver=\"{}\"}} {}",
                r.worker,
                driver(r.worker),
                value(r)
            );
        }
    }
    header(
        out,
        "ringgate_worker_requests_total",
        "counter",
        "Requests answered, by worker.",
    );
    for r in reports {
        let n: u64 = r
            .routes
            .iter()
            .map(|c| c.requests.iter().flatten().sum::<u64>())
            .sum();
        let _ = writeln!(
            out,
            "ringgate_worker_requests_total{{worker=\"{}\",driver=\"{}\"}} {n}",
            r.worker,
            driver(r.worker)
        );
    }
}

fn upstreams(out: &mut String, reports: &[WorkerReport]) {
    let mut merged: BTreeMap<&str, UpstreamCounts> = BTreeMap::new();
    for r in reports {
        for (name, c) in &r.upstreams {
            let m = merged.entry(name).or_default();
            m.connect_errors += c.connect_errors;
            m.timeouts += c.timeouts;
            m.reused += c.reused;
            m.fresh += c.fresh;
        }
    }
    /// Extra labels of one series, and its value.
    type Series = (&'static str, fn(&UpstreamCounts) -> u64);
    let families: [(&str, &str, &[Series]); 3] = [
        (
            "ringgate_upstream_connect_errors_total",
            "Connections to an upstream that could not be made.",
            &[("", |c| c.connect_errors)],
        ),
        (
            "ringgate_upstream_timeouts_total",
            "Connect and response-head timeouts, by upstream.",
            &[("", |c| c.timeouts)],
        ),
        (
            "ringgate_upstream_requests_total",
            "Requests sent upstream, on a pooled (reused) or new connection.",
            &[
                (",connection=\"reused\"", |c| c.reused),
                (",connection=\"new\"", |c| c.fresh),
            ],
        ),
    ];
    for (family, help, series) in families {
        header(out, family, "counter", help);
        for (name, c) in &merged {
            let name = escape(name);
            for (labels, value) in series {
                let _ = writeln!(out, "{family}{{upstream=\"{name}\"{labels}}} {}", value(c));
            }
        }
    }
}

fn handshakes(out: &mut String, reports: &[WorkerReport]) {
    let mut sum = TlsCounts::default();
    for r in reports {
        sum.full += r.tls.full;
        sum.resumed += r.tls.resumed;
        for (total, n) in sum.failed.iter_mut().zip(r.tls.failed) {
            *total += n;
        }
    }
    header(
        out,
        "ringgate_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on [tls] listeners: full, or a resumed session.",
    );
    let _ = writeln!(
        out,
        "ringgate_tls_handshakes_total{{result=\"full\"}} {}",
        sum.full
    );
    let _ = writeln!(
        out,
        "ringgate_tls_handshakes_total{{result=\"resumed\"}} {}",
        sum.resumed
    );
    header(
        out,
        "ringgate_tls_handshake_failures_total",
        "counter",
        "TLS handshakes on [tls] listeners that failed, by reason.",
    );
    for (reason, n) in TLS_FAILURE_REASONS.iter().zip(sum.failed) {
        let _ = writeln!(
            out,
            "ringgate_tls_handshake_failures_total{{reason=\"{reason}\"}} {n}"
        );
    }
}

fn generation(out: &mut String, state: &GatewayState) {
    header(
        out,
        "ringgate_config_generation",
        "gauge",
        "The config generation being served.",
    );
    let _ = writeln!(
        out,
        "ringgate_config_generation {}",
        state.generation.load(Ordering::SeqCst)
    );
    header(
        out,
        "ringgate_config_reload_failures_total",
        "counter",
        "Reloads refused (the running config kept serving).",
    );
    let _ = writeln!(
        out,
        "ringgate_config_reload_failures_total {}",
        state.reload_failures.load(Ordering::Relaxed)
    );
    if let Ok(snap) = state.snapshot.read() {
        header(
            out,
            "ringgate_breaker_open",
            "gauge",
            "1 while a route's circuit breaker is open or half-open.",
        );
        for (route, guard) in snap.config.routes.iter().zip(&snap.guards) {
            if let Some((s, _)) = guard.as_ref().and_then(|g| g.breaker_state()) {
                let _ = writeln!(
                    out,
                    "ringgate_breaker_open{{route=\"{}\"}} {}",
                    escape(&route.name),
                    u8::from(s != State::Closed)
                );
            }
        }
        if let Some(tls) = &snap.config.tls {
            header(
                out,
                "ringgate_tls_cert_not_after_seconds",
                "gauge",
                "When each [tls] certificate in service expires (Unix seconds), by its first name.",
            );
            for cert in tls.certs.iter() {
                let _ = writeln!(
                    out,
                    "ringgate_tls_cert_not_after_seconds{{name=\"{}\",file=\"{}\"}} {}",
                    escape(&cert.label()),
                    escape(&cert.cert_path.display().to_string()),
                    cert.not_after
                );
            }
        }
    }
    if let Some(log) = &state.access_log {
        header(
            out,
            "ringgate_access_log_lines_total",
            "counter",
            "Access-log lines written, and dropped (a full buffer or a writer falling behind).",
        );
        let c = &log.counters;
        let _ = writeln!(
            out,
            "ringgate_access_log_lines_total{{outcome=\"written\"}} {}",
            c.written_lines.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "ringgate_access_log_lines_total{{outcome=\"dropped\"}} {}",
            c.dropped_lines.load(Ordering::Relaxed)
        );
    }
    if let Some(c) = &state.cluster {
        header(
            out,
            "ringgate_limits_cluster_fallback",
            "gauge",
            "1 while cluster limits are held locally (Redis out of reach).",
        );
        let _ = writeln!(
            out,
            "ringgate_limits_cluster_fallback {}",
            u8::from(!c.connected.load(Ordering::Relaxed))
        );
    }
    if let Some((_, stats)) = &state.fleet_nonces {
        header(
            out,
            "ringgate_nonce_fleet_claims_total",
            "counter",
            "Nonces claimed in the cluster's Redis: new to the fleet, replays another gateway had accepted, and claims settled on this gateway alone (Redis out of reach).",
        );
        for (result, n) in [
            ("fresh", &stats.fresh),
            ("replay", &stats.replays),
            ("fallback", &stats.fallbacks),
        ] {
            let _ = writeln!(
                out,
                "ringgate_nonce_fleet_claims_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
