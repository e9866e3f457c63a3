//! Configuration as a generation: `FileConfig` (serde, exactly the TOML) -> validated
//! `Config` (every problem reported with its path) -> compiled, immutable `Snapshot`
//! shared by every worker through an `Arc`.

mod file;
mod file_filters;
mod model;
mod units;
mod validate;
mod validate_limits;
mod validate_resilience;
mod validate_upstream;

use std::path::Path;
use std::sync::Arc;

pub use file::FileConfig;
pub use file_filters::{CorsFile, HeaderEditsFile, HeadersFile};
pub use model::*;
pub use units::{parse_duration, parse_size};
pub use validate::ConfigError;

use crate::proxy::router::{RouteId, RouteSpec, Router};

/// Parses and validates TOML text. Every problem is returned, each with its path.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_in(text, None)
}

/// Like `parse`, with relative file names (the apps file) resolved against `base_dir`.
pub fn parse_in(text: &str, base_dir: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_string(),
        }]
    })?;
    validate::validate(&file, base_dir)
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    parse_in(&text, path.parent())
}

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
    /// Per route: its breaker, shared by every worker (state starts afresh on reload).
    pub guards: Vec<Option<crate::resilience::guard::RouteGuard>>,
    /// Per route with `retries`: its retry budget, shared by every worker.
    pub budgets: Vec<Option<crate::resilience::budget::RetryBudget>>,
    /// Per upstream: which targets may get traffic (active checks, passive ejection).
    pub health: Vec<crate::resilience::health::UpstreamHealth>,
    /// The isolation groups, shared by every worker (counts start afresh on reload).
    pub bulkheads: Vec<crate::resilience::bulkhead::Bulkhead>,
    /// Per route: its filter chain, compiled once per generation.
    pub chains: Vec<crate::filters::RouteChain>,
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
        let guards = config
            .routes
            .iter()
            .map(|r| {
                r.breaker
                    .as_ref()
                    .map(|b| crate::resilience::guard::RouteGuard::new(b, epoch))
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
            .map(|g| crate::resilience::bulkhead::Bulkhead::new(g.clone()))
            .collect();
        let chains = crate::filters::RouteChain::build_all(&config)?;
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

    pub fn chain(&self, id: RouteId) -> &crate::filters::RouteChain {
        &self.chains[id.0 as usize]
    }

    pub fn bulkhead(&self, id: RouteId) -> Option<&crate::resilience::bulkhead::Bulkhead> {
        self.route(id).isolation.map(|g| &self.bulkheads[g])
    }

    pub fn health(&self, id: UpstreamId) -> &crate::resilience::health::UpstreamHealth {
        &self.health[id.0 as usize]
    }

    pub fn retry_budget(&self, id: RouteId) -> Option<&crate::resilience::budget::RetryBudget> {
        self.budgets[id.0 as usize].as_ref()
    }

    pub fn guard(&self, id: RouteId) -> Option<&crate::resilience::guard::RouteGuard> {
        self.guards[id.0 as usize].as_ref()
    }

    pub fn upstream(&self, id: UpstreamId) -> &UpstreamConfig {
        &self.config.upstreams[id.0 as usize]
    }
}
