//! One compiled, immutable config generation: the validated `Config` with what is built
//! from it (the router, and the shared resilience state: breakers, retry budgets, target
//! health, bulkheads). Workers hold an `Arc<Snapshot>` per request. Above `config`,
//! `router` and `resilience`, so the config itself stays plain data.

use std::sync::Arc;

use crate::config::{Config, ConfigError, RouteConfig, UpstreamConfig, UpstreamId};
use crate::filters::RouteChain;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::guard::RouteGuard;
use crate::router::{RouteId, RouteSpec, Router};

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
    /// Per route: its breaker, shared by every worker and its route's breaker filter
    /// (state starts afresh on reload).
    pub guards: Vec<Option<Arc<RouteGuard>>>,
    /// Per route with `retries`: its retry budget, shared by every worker.
    pub budgets: Vec<Option<crate::resilience::budget::RetryBudget>>,
    /// Per upstream: which targets may get traffic (active checks, passive ejection).
    pub health: Vec<crate::resilience::health::UpstreamHealth>,
    /// The isolation groups, shared by every worker and the isolation filters of their
    /// routes (counts start afresh on reload).
    pub bulkheads: Vec<Arc<Bulkhead>>,
    /// Per route: its filter chain, compiled once per generation.
    pub chains: Vec<RouteChain>,
}

impl Snapshot {
    pub fn build(config: Config, generation: u64) -> Result<Arc<Snapshot>, Vec<ConfigError>> {
        let methods: Vec<Vec<&str>> = config
            .routes
            .iter()
            .map(|r| r.methods.iter().map(String::as_str).collect())
            .collect();
        let specs: Vec<RouteSpec> = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteSpec {
                id: RouteId(i as u32),
                host: r.host.as_deref(),
                path: &r.path,
                methods: &methods[i],
            })
            .collect();
        let router = Router::build(&specs).map_err(|errs| {
            errs.into_iter()
                .map(|(i, message)| ConfigError {
                    path: format!("routes[{i}].path"),
                    message,
                })
                .collect::<Vec<_>>()
        })?;
        drop(specs);
        let epoch = std::time::Instant::now();
        let guards: Vec<_> = config
            .routes
            .iter()
            .map(|r| {
                r.breaker
                    .as_ref()
                    .map(|b| Arc::new(RouteGuard::new(b, epoch)))
            })
            .collect();
        let budgets = config
            .routes
            .iter()
            .map(|r| {
                r.retries.as_ref().map(|t| {
                    crate::resilience::budget::RetryBudget::new(
                        t.budget,
                        RETRY_BUDGET_MIN,
                        RETRY_BUDGET_WINDOW,
                        epoch,
                    )
                })
            })
            .collect();
        let health = config
            .upstreams
            .iter()
            .map(|u| {
                crate::resilience::health::UpstreamHealth::new(
                    u.targets.len(),
                    u.outlier.clone(),
                    u.breaker.as_ref(),
                    epoch,
                )
            })
            .collect();
        let bulkheads = config
            .isolation
            .iter()
            .map(|g| Arc::new(Bulkhead::new(g.clone())))
            .collect::<Vec<_>>();
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

    pub fn health(&self, id: UpstreamId) -> &crate::resilience::health::UpstreamHealth {
        &self.health[id.0 as usize]
    }

    pub fn retry_budget(&self, id: RouteId) -> Option<&crate::resilience::budget::RetryBudget> {
        self.budgets[id.0 as usize].as_ref()
    }

    pub fn upstream(&self, id: UpstreamId) -> &UpstreamConfig {
        &self.config.upstreams[id.0 as usize]
    }
}
