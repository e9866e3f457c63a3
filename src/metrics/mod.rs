//! Request metrics, per worker. The request path only bumps the worker's own counters and
//! histograms (plain integers in a `RefCell`: no atomics, no locks, no shared cache
//! lines). A scrape asks every worker for a copy through its command channel; workers
//! answer on their next tick (10 ms), and the control side merges the copies
//! (`control::metrics_export`).
//!
//! Routes are counted by name, so a reload that keeps a route keeps its counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::resilience::load_shed::LoadShed;

/// The method label: the common methods by name, anything else as `OTHER`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

pub fn method_index(method: &str) -> u8 {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7) as u8
}

/// Route name used for requests that matched no route (404, 405, bad requests).
pub const UNMATCHED: &str = "";

/// Latency is recorded in microseconds, from 1 µs to 10 minutes, at 2 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

/// One route's counts on one worker.
#[derive(Clone)]
pub struct RouteCounts {
    pub name: Arc<str>,
    /// Requests per method and status class (1xx to 5xx).
    pub requests: [[u64; 5]; 8],
    pub latency_us: Histogram<u64>,
}

impl RouteCounts {
    fn new(name: Arc<str>) -> RouteCounts {
        RouteCounts {
            name,
            requests: [[0; 5]; 8],
            // Fails only for invalid bounds, and these are constants.
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
                .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}")),
        }
    }
}

/// One worker's metrics, as the scrape sees them.
#[derive(Clone)]
pub struct WorkerReport {
    pub worker: usize,
    pub open_connections: usize,
    /// Accepts that failed (out of file descriptors, mostly).
    pub accept_errors: u64,
    /// Connections turned away at `max_connections_per_worker`.
    pub refused_connections: u64,
    /// Requests shed because the worker was behind (`max_loop_delay`).
    pub shed_requests: u64,
    /// New connections turned away because the worker was shedding load.
    pub shed_connections: u64,
    /// The worst delay of the worker's event loop in the last one to two seconds.
    pub loop_delay: Duration,
    /// The share of new requests the worker sheds now, in [0, 1].
    pub shed_share: f64,
    /// The worst wait of a new connection (accept queue or loop) in the last one to two
    /// seconds.
    pub accept_delay: Duration,
    /// The share of new connections the worker turns away now, in [0, 1].
    pub shed_connection_share: f64,
    pub routes: Vec<RouteCounts>,
    /// Per upstream name: connect errors, timeouts, requests on a reused connection,
    /// requests on a new one.
    pub upstreams: Vec<(Arc<str>, UpstreamCounts)>,
    pub tls: TlsCounts,
}

/// Why a TLS handshake on a `[tls]` listener failed (the `reason` label).
pub const TLS_FAILURE_REASONS: [&str; 8] = [
    "timeout",
    "proxy_protocol",
    "closed",
    "malformed",
    "protocol_version",
    "incompatible",
    "client_certificate",
    "other",
];

/// Handshakes on this worker's `[tls]` listeners.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsCounts {
    pub full: u64,
    pub resumed: u64,
    /// Failures, by index in `TLS_FAILURE_REASONS`.
    pub failed: [u64; TLS_FAILURE_REASONS.len()],
}

impl TlsCounts {
    pub fn failure(&mut self, reason: &str) {
        let i = TLS_FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(TLS_FAILURE_REASONS.len() - 1);
        self.failed[i] += 1;
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamCounts {
    pub connect_errors: u64,
    pub timeouts: u64,
    pub reused: u64,
    pub fresh: u64,
}

/// The worker's own metrics.
pub struct WorkerMetrics {
    slots: Vec<RouteCounts>,
    by_name: HashMap<Arc<str>, usize>,
    /// The generation `route_slot` and `upstream_slot` map (requests of an older one still
    /// in flight are looked up by name).
    generation: u64,
    /// Slot per route id of that generation, and the unmatched slot.
    route_slot: Vec<usize>,
    unmatched: usize,
    upstreams: Vec<(Arc<str>, UpstreamCounts)>,
    upstream_by_name: HashMap<Arc<str>, usize>,
    upstream_slot: Vec<usize>,
    pub tls: TlsCounts,
    /// Accepts that failed on this worker's listeners.
    pub accept_errors: u64,
    /// Connections turned away at `max_connections_per_worker`.
    pub refused_connections: u64,
    /// Requests shed because the worker was behind.
    pub shed_requests: u64,
    /// New connections turned away because the worker was shedding load.
    pub shed_connections: u64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut m = WorkerMetrics {
            slots: Vec::new(),
            by_name: HashMap::new(),
            generation: 0,
            route_slot: Vec::new(),
            unmatched: 0,
            upstreams: Vec::new(),
            upstream_by_name: HashMap::new(),
            upstream_slot: Vec::new(),
            tls: TlsCounts::default(),
            accept_errors: 0,
            refused_connections: 0,
            shed_requests: 0,
            shed_connections: 0,
        };
        m.unmatched = m.slot_for(UNMATCHED);
        m
    }
}

impl WorkerMetrics {
    /// Maps a new generation's route and upstream ids to their slots (by name).
    pub fn install(&mut self, generation: u64, routes: &[&str], upstreams: &[&str]) {
        self.generation = generation;
        self.route_slot = routes.iter().map(|r| self.slot_for(r)).collect();
        self.upstream_slot = upstreams
            .iter()
            .map(|u| match self.upstream_by_name.get(*u) {
                Some(&i) => i,
                None => {
                    let name: Arc<str> = (*u).into();
                    self.upstreams
                        .push((name.clone(), UpstreamCounts::default()));
                    self.upstream_by_name.insert(name, self.upstreams.len() - 1);
                    self.upstreams.len() - 1
                }
            })
            .collect();
    }

    /// One finished request of `generation`: its route (id and name; `None`: unmatched),
    /// method, status and time.
    pub fn request(
        &mut self,
        generation: u64,
        route: Option<(usize, &str)>,
        method: u8,
        status: u16,
        took: Duration,
    ) {
        let slot = match route {
            None => self.unmatched,
            Some((id, _)) if generation == self.generation => {
                self.route_slot.get(id).copied().unwrap_or(self.unmatched)
            }
            Some((_, name)) => self.slot_for(name),
        };
        let counts = &mut self.slots[slot];
        let class = (status / 100).clamp(1, 5) as usize - 1;
        counts.requests[(method as usize).min(7)][class] += 1;
        let us = (took.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        let _ = counts.latency_us.record(us);
    }

    /// An upstream's counters, by id in `generation` (none for an older generation's).
    pub fn upstream(&mut self, generation: u64, upstream: usize) -> Option<&mut UpstreamCounts> {
        if generation != self.generation {
            return None;
        }
        let i = *self.upstream_slot.get(upstream)?;
        Some(&mut self.upstreams[i].1)
    }

    /// This worker's counters, with its open connections and its load shedding
    /// (requests, new connections) as they stand now.
    pub fn report(
        &self,
        worker: usize,
        open: usize,
        requests: &LoadShed,
        connections: &LoadShed,
    ) -> WorkerReport {
        WorkerReport {
            worker,
            open_connections: open,
            accept_errors: self.accept_errors,
            refused_connections: self.refused_connections,
            shed_requests: self.shed_requests,
            shed_connections: self.shed_connections,
            loop_delay: requests.worst_delay(),
            shed_share: requests.share(),
            accept_delay: connections.worst_delay(),
            shed_connection_share: connections.share(),
            routes: self.slots.clone(),
            upstreams: self.upstreams.clone(),
            tls: self.tls,
        }
    }

    fn slot_for(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let name: Arc<str> = name.into();
        self.slots.push(RouteCounts::new(name.clone()));
        self.by_name.insert(name, self.slots.len() - 1);
        self.slots.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_route_names_across_generations() {
        let mut m = WorkerMetrics::default();
        m.install(1, &["a", "b"], &["up"]);
        m.request(
            1,
            Some((0, "a")),
            method_index("GET"),
            200,
            Duration::from_millis(3),
        );
        m.request(
            1,
            Some((1, "b")),
            method_index("BREW"),
            503,
            Duration::from_micros(10),
        );
        m.request(1, None, method_index("POST"), 404, Duration::from_micros(5));
        // A reload drops "b" and puts "a" second.
        m.install(2, &["c", "a"], &["up"]);
        m.request(
            2,
            Some((1, "a")),
            method_index("GET"),
            204,
            Duration::from_millis(1),
        );
        // A request of the old generation, still in flight, is counted by name.
        m.request(
            1,
            Some((1, "b")),
            method_index("GET"),
            200,
            Duration::from_millis(1),
        );
        m.upstream(2, 0).unwrap().reused += 1;
        assert!(m.upstream(1, 0).is_none());
        let off = LoadShed::new(None);
        let r = m.report(0, 3, &off, &off);
        let get = |name: &str| r.routes.iter().find(|c| &*c.name == name).unwrap().clone();
        assert_eq!(get("a").requests[0][1], 2, "GET 2xx on a, before and after");
        assert_eq!(get("a").latency_us.len(), 2);
        assert_eq!(get("b").requests[7][4], 1, "BREW is OTHER, 5xx");
        assert_eq!(get("b").requests[0][1], 1);
        assert_eq!(get(UNMATCHED).requests[2][3], 1);
        assert_eq!(get("c").latency_us.len(), 0);
        assert_eq!(r.upstreams[0].1.reused, 1);
    }
}
