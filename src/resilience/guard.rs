//! A route's guard: its breaker (or adaptive throttle) and what counts as a failure,
//! shared by every worker through the config snapshot.

use std::fmt;
use std::time::{Duration, Instant};

use super::breaker::{Admission, Breaker, State};
use super::throttle::Throttle;
use crate::config::{BreakerMode, FailureOn, RouteBreaker};

/// How an upstream exchange ended, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status.
    Status(u16),
    ConnectFailed,
    TimedOut,
    /// The upstream broke the exchange (reset, garbage): the client gets a 502.
    Broken,
    /// The client went away or sent something wrong: says nothing about the upstream.
    Neutral,
}

/// A request the guard let through; hand it back with the outcome. It remembers the
/// breaker's round, so an outcome that arrives after the breaker opened (or opened and
/// closed) again does not count in a round it was not admitted in.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Admission, u64);

enum Kind {
    Breaker(Breaker),
    Throttle(Throttle),
}

pub struct RouteGuard {
    failure_on: FailureOn,
    kind: Kind,
}

impl fmt::Debug for RouteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Breaker(b) => write!(f, "RouteGuard(breaker {:?})", b.state()),
            Kind::Throttle(_) => write!(f, "RouteGuard(adaptive)"),
        }
    }
}

impl RouteGuard {
    pub fn new(config: &RouteBreaker, epoch: Instant) -> RouteGuard {
        let kind = match &config.mode {
            BreakerMode::Breaker(c) => Kind::Breaker(Breaker::new(c.clone(), epoch)),
            BreakerMode::Adaptive { k, window } => {
                Kind::Throttle(Throttle::new(*k, *window, epoch))
            }
        };
        RouteGuard {
            failure_on: config.failure_on,
            kind,
        }
    }

    /// Lets the request through, or says how long until it is worth trying again.
    /// `random` is uniform in [0, 1) (the adaptive throttle draws with it).
    pub fn admit(&self, now: Instant, random: f64) -> Result<Ticket, Duration> {
        match &self.kind {
            Kind::Breaker(b) => {
                let round = b.round();
                match b.admit(now) {
                    Admission::Refused => Err(b.retry_after(now).max(Duration::from_secs(1))),
                    a => Ok(Ticket(a, round)),
                }
            }
            Kind::Throttle(t) => {
                if t.admit(now, random) {
                    Ok(Ticket(Admission::Allowed, 0))
                } else {
                    Err(Duration::from_secs(1))
                }
            }
        }
    }

    pub fn finish(&self, ticket: Ticket, outcome: Outcome, now: Instant) {
        if let Kind::Breaker(b) = &self.kind {
            if b.round() != ticket.1 {
                return;
            }
        }
        let failed = match outcome {
            Outcome::Status(s) => self.failure_on.status_5xx && s >= 500,
            Outcome::ConnectFailed => self.failure_on.connect,
            Outcome::TimedOut => self.failure_on.timeout,
            Outcome::Broken => self.failure_on.status_5xx,
            Outcome::Neutral => {
                if let Kind::Breaker(b) = &self.kind {
                    b.release(ticket.0);
                }
                return;
            }
        };
        match &self.kind {
            Kind::Breaker(b) => b.record(ticket.0, !failed, now),
            Kind::Throttle(t) => t.record(!failed, now),
        }
    }

    /// The breaker's state (`None` for the adaptive throttle) and how often it tripped.
    pub fn breaker_state(&self) -> Option<(State, u64)> {
        match &self.kind {
            Kind::Breaker(b) => Some((b.state(), b.trips())),
            Kind::Throttle(_) => None,
        }
    }
}
