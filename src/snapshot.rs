//! One compiled, immutable config generation: the validated `Config` with what is built
//! from it (the router, and the shared resilience state: breakers, retry budgets, target
//! health, bulkheads). Workers hold an `Arc<Snapshot>` per request. Above `config`,
//! `router` and `resilience`, so the config itself stays plain data.
//!
//! Protection state belongs to what it protects, not to a generation: a reload keeps the
//! state of every route, upstream and isolation group (matched by name) whose relevant
//! config is unchanged, and starts afresh only what changed.

use std::sync::Arc;

use crate::config::{build_router, Config, ConfigError, RouteConfig, UpstreamConfig, UpstreamId};
use crate::filters::RouteChain;
use crate::resilience::budget::RetryBudget;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::guard::RouteGuard;
use crate::resilience::health::UpstreamHealth;
use crate::router::{RouteId, Router};

/// Retries a quiet route may make per window whatever its budget's ratio, and the window.
const RETRY_BUDGET_MIN: u32 = 3;
const RETRY_BUDGET_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// One immutable, compiled config generation. Workers hold an `Arc<Snapshot>` per
/// request, so a reload never changes anything under a request in flight.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub router: Router,
    /// Per route: its breaker, shared by every worker and its route's breaker filter.
    pub guards: Vec<Option<Arc<RouteGuard>>>,
    /// Per route with `retries`: its retry budget, shared by every worker.
    pub budgets: Vec<Option<Arc<RetryBudget>>>,
    /// Per upstream: which targets may get traffic (active checks, passive ejection).
    pub health: Vec<Arc<UpstreamHealth>>,
    /// The isolation groups, shared by every worker and the isolation filters of their
    /// routes.
    pub bulkheads: Vec<Arc<Bulkhead>>,
    /// Per route: its filter chain, compiled once per generation.
    pub chains: Vec<RouteChain>,
}

impl Snapshot {
    /// A first generation: every piece of protection state starts afresh.
    pub fn build(config: Config, generation: u64) -> Result<Arc<Snapshot>, Vec<ConfigError>> {
        Snapshot::build_after(config, generation, None)
    }

    /// The generation after `previous`: protection state whose config did not change
    /// carries over (see `Protection::build`), so a reload never closes an open breaker,
    /// brings back an ejected target or lets a full isolation group admit twice its limit.
    pub fn build_after(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Arc<Snapshot>, Vec<ConfigError>> {
        let router = build_router(&config.routes)?;
        let Protection {
            guards,
            budgets,
            health,
            bulkheads,
        } = Protection::build(&config, previous);
        let chains = RouteChain::build_all(&config, &guards, &bulkheads)?;
        Ok(Arc::new(Snapshot {
            chains,
            generation,
            config,
            router,
            guards,
            budgets,
            health,
            bulkheads,
        }))
    }

    pub fn route(&self, id: RouteId) -> &RouteConfig {
        &self.config.routes[id.0 as usize]
    }

    pub fn chain(&self, id: RouteId) -> &RouteChain {
        &self.chains[id.0 as usize]
    }

    pub fn health(&self, id: UpstreamId) -> &UpstreamHealth {
        &self.health[id.0 as usize]
    }

    pub fn retry_budget(&self, id: RouteId) -> Option<&RetryBudget> {
        self.budgets[id.0 as usize].as_deref()
    }

    pub fn upstream(&self, id: UpstreamId) -> &UpstreamConfig {
        &self.config.upstreams[id.0 as usize]
    }
}

/// The shared protection state of a generation.
struct Protection {
    guards: Vec<Option<Arc<RouteGuard>>>,
    budgets: Vec<Option<Arc<RetryBudget>>>,
    health: Vec<Arc<UpstreamHealth>>,
    bulkheads: Vec<Arc<Bulkhead>>,
}

impl Protection {
    /// What `previous` had for a route, upstream or group of the same name and the same
    /// relevant config is taken over; the rest is new:
    /// - a route's breaker: same `breaker` section;
    /// - a route's retry budget: same `retries` section;
    /// - an upstream's target health (per-target breakers, ejections, active checks):
    ///   same targets in the same order, and same `health`, `outlier` and `breaker`;
    /// - an isolation group's occupancy: same group definition.
    fn build(config: &Config, previous: Option<&Snapshot>) -> Protection {
        let epoch = std::time::Instant::now();
        let prev_route = |name: &str| {
            previous.and_then(|p| {
                let i = p.config.routes.iter().position(|r| r.name == name)?;
                Some((p, i))
            })
        };
        let guards = config
            .routes
            .iter()
            .map(|r| {
                let b = r.breaker.as_ref()?;
                let kept = prev_route(&r.name).and_then(|(p, i)| {
                    (p.config.routes[i].breaker.as_ref() == Some(b))
                        .then(|| p.guards[i].clone())
                        .flatten()
                });
                Some(kept.unwrap_or_else(|| Arc::new(RouteGuard::new(b, epoch))))
            })
            .collect();
        let budgets = config
            .routes
            .iter()
            .map(|r| {
                let t = r.retries.as_ref()?;
                let kept = prev_route(&r.name).and_then(|(p, i)| {
                    (p.config.routes[i].retries.as_ref() == Some(t))
                        .then(|| p.budgets[i].clone())
                        .flatten()
                });
                Some(kept.unwrap_or_else(|| {
                    Arc::new(RetryBudget::new(
                        t.budget,
                        RETRY_BUDGET_MIN,
                        RETRY_BUDGET_WINDOW,
                        epoch,
                    ))
                }))
            })
            .collect();
        let same_upstream = |a: &UpstreamConfig, b: &UpstreamConfig| {
            a.targets == b.targets
                && a.health == b.health
                && a.outlier == b.outlier
                && a.breaker == b.breaker
        };
        let health = config
            .upstreams
            .iter()
            .map(|u| {
                previous
                    .and_then(|p| {
                        let i = p.config.upstreams.iter().position(|o| o.name == u.name)?;
                        same_upstream(&p.config.upstreams[i], u).then(|| p.health[i].clone())
                    })
                    .unwrap_or_else(|| {
                        Arc::new(UpstreamHealth::new(
                            u.targets.len(),
                            u.outlier.clone(),
                            u.breaker.as_ref(),
                            epoch,
                        ))
                    })
            })
            .collect();
        let bulkheads = config
            .isolation
            .iter()
            .map(|g| {
                previous
                    .and_then(|p| p.bulkheads.iter().find(|b| b.config == *g).cloned())
                    .unwrap_or_else(|| Arc::new(Bulkhead::new(g.clone())))
            })
            .collect();
        Protection {
            guards,
            budgets,
            health,
            bulkheads,
        }
    }
}
