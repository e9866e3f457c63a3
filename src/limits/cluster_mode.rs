//! The reconciler's view of cluster mode: whether leases are being granted or limits are
//! held locally, how many gateways share them, and the lease batch in flight.
//!
//! Connected, each gateway uses what Redis grants it: for a rate key, the tokens of one
//! lease interval, turned into the part of the rate (`scale`) its workers split; for a
//! quota key, the units it reserved. When Redis cannot be reached (a lease or heartbeat
//! fails, or a lease goes unanswered for too long) every key falls back to the limit
//! divided by the number of gateways (configured, or learned from the heartbeat), and
//! requests go on being served; the first lease granted again returns to cluster mode.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use super::lease::{ClusterStatus, LeaseBatch, LeaseEvent, LeaseLink};

/// A lease unanswered this long counts as failed (calls are bounded well below it).
const LEASE_DEADLINE: Duration = Duration::from_secs(3);

pub struct ClusterMode {
    link: LeaseLink,
    pub interval: Duration,
    configured_gateways: Option<usize>,
    gateways: usize,
    connected: bool,
    in_flight: Option<Instant>,
    last_sent: Option<Instant>,
    /// The last batch had nothing to lease: the heartbeat decides the mode meanwhile.
    nothing_leased: bool,
    /// Redis came back empty and the reconciler has not been told yet.
    reset: bool,
    status: Arc<ClusterStatus>,
}

impl ClusterMode {
    /// `first_beat`: the heartbeat beaten at start (live gateways, or why it failed).
    pub fn new(
        link: LeaseLink,
        interval: Duration,
        configured_gateways: Option<usize>,
        first_beat: Result<usize, String>,
        status: Arc<ClusterStatus>,
    ) -> ClusterMode {
        let mut mode = ClusterMode {
            link,
            interval,
            configured_gateways,
            gateways: configured_gateways.unwrap_or(1),
            connected: true,
            in_flight: None,
            last_sent: None,
            nothing_leased: true,
            reset: false,
            status,
        };
        match first_beat {
            Ok(n) => mode.learn_gateways(n),
            Err(e) => {
                if configured_gateways.is_none() {
                    log::warn!(
                        "cluster: Redis is unreachable at start and cluster.gateways is not \
                         set: until Redis answers, this gateway holds every limit in full; \
                         set cluster.gateways to divide them"
                    );
                }
                mode.fall_back(&e)
            }
        }
        mode.publish();
        mode
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Gateways the limits are divided between.
    pub fn gateways(&self) -> usize {
        self.gateways
    }

    /// The part of a limit this gateway holds while not connected, and for a key it has
    /// not leased yet.
    pub fn local_part(&self) -> f64 {
        1.0 / self.gateways as f64
    }

    /// What the lease thread said since the last round. A learned gateway count is
    /// applied here (the caller compares `gateways()` before and after); lease replies
    /// are returned for the caller to apply to its keys.
    pub fn poll(&mut self, now: Instant) -> Vec<super::lease::LeaseReply> {
        let mut replies = Vec::new();
        for event in self.link.events.try_iter().collect::<Vec<_>>() {
            match event {
                LeaseEvent::Heartbeat(beat) => {
                    if let Ok(n) = beat {
                        self.learn_gateways(n);
                    }
                    // While leases go out, they decide the mode; otherwise the heartbeat.
                    let idle = self.nothing_leased && self.in_flight.is_none();
                    match beat {
                        Ok(_) if idle => self.reconnected(),
                        Err(e) if idle => self.fall_back(&e),
                        _ => {}
                    }
                }
                LeaseEvent::RedisReset => self.reset = true,
                LeaseEvent::Reply(reply) => {
                    self.in_flight = None;
                    self.status.leases.fetch_add(1, Ordering::Relaxed);
                    let failure = reply.rates.as_ref().err().or(reply.quotas.as_ref().err());
                    match failure {
                        Some(e) => {
                            self.status.lease_errors.fetch_add(1, Ordering::Relaxed);
                            let e = e.clone();
                            self.fall_back(&e);
                        }
                        None => self.reconnected(),
                    }
                    replies.push(reply);
                }
            }
        }
        if self
            .in_flight
            .is_some_and(|sent| now.duration_since(sent) >= LEASE_DEADLINE)
        {
            self.fall_back("a lease went unanswered for 3 s");
        }
        self.publish();
        replies
    }

    /// Whether Redis came back empty since this was last asked (see `LeaseEvent`).
    pub fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }

    /// Sends a batch when a lease interval has passed (or, while connected, at once when
    /// `urgent`: a key is served from default grants) and the last one was answered.
    /// `make` builds it (only then: building costs an allocation per key).
    /// `now_anyway`: at once whether connected or not (a recharge after Redis came back
    /// empty). Returns whether a batch was built (and sent, unless it was empty).
    pub fn maybe_send(
        &mut self,
        now: Instant,
        urgent: bool,
        now_anyway: bool,
        make: impl FnOnce() -> LeaseBatch,
    ) -> bool {
        let due = self
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if self.in_flight.is_some() || !(due || urgent && self.connected || now_anyway) {
            return false;
        }
        let batch = make();
        self.last_sent = Some(now);
        self.nothing_leased = batch.rates.is_empty() && batch.quotas.is_empty();
        if self.nothing_leased {
            return true;
        }
        match self.link.batches.try_send(batch) {
            Ok(()) => {
                self.in_flight = Some(now);
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.fall_back("the lease thread stopped");
                false
            }
        }
    }

    /// At shutdown: lets the lease in flight finish, then sends `batch` (charges only)
    /// and waits for its answer, so that use not charged yet (default grants, use while
    /// Redis was out of reach) is charged before the process exits. Bounded by `within`.
    pub fn charge_before_exit(&mut self, batch: LeaseBatch, within: Duration) {
        let deadline = Instant::now() + within;
        let mut batch = Some(batch);
        loop {
            if self.in_flight.is_none() {
                let Some(b) = batch.take() else {
                    return;
                };
                if b.quotas.is_empty() || self.link.batches.try_send(b).is_err() {
                    return;
                }
                self.in_flight = Some(Instant::now());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.link.events.recv_timeout(left) {
                Ok(LeaseEvent::Reply(_)) => self.in_flight = None,
                Ok(LeaseEvent::Heartbeat(_) | LeaseEvent::RedisReset) => {}
                Err(_) => {
                    log::warn!("cluster: quota use not charged to Redis at exit (no answer)");
                    return;
                }
            }
        }
    }

    fn learn_gateways(&mut self, live: usize) {
        let n = self.configured_gateways.unwrap_or(live).max(1);
        if n != self.gateways {
            log::info!("cluster: limits are divided between {n} gateways");
        }
        self.gateways = n;
    }

    fn fall_back(&mut self, why: &str) {
        if self.connected {
            self.connected = false;
            self.status.fallbacks.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "cluster: {why}; holding limits locally at 1/{} of each until Redis answers",
                self.gateways
            );
        }
    }

    fn reconnected(&mut self) {
        if !self.connected {
            self.connected = true;
            log::info!("cluster: Redis answers again; limits are held cluster-wide");
        }
    }

    fn publish(&self) {
        self.status
            .connected
            .store(self.connected, Ordering::Relaxed);
        self.status.gateways.store(self.gateways, Ordering::Relaxed);
    }
}
