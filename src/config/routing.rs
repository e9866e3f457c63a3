//! The router compiled from the routes' patterns. Validation builds it to report every
//! pattern the router refuses; the snapshot builds it to serve.

use super::model::RouteConfig;
use super::problems::ConfigError;
use crate::router::{RouteId, RouteSpec, Router};

/// The router for `routes`, or every refusal with its path (`routes[3].path`).
pub fn build_router(routes: &[RouteConfig]) -> Result<Router, Vec<ConfigError>> {
    let methods: Vec<Vec<&str>> = routes
        .iter()
        .map(|r| r.methods.iter().map(String::as_str).collect())
        .collect();
    let specs: Vec<RouteSpec> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| RouteSpec {
            id: RouteId(i as u32),
            host: r.host.as_deref(),
            path: &r.path,
            methods: &methods[i],
        })
        .collect();
    Router::build(&specs).map_err(|errs| {
        errs.into_iter()
            .map(|(i, message)| ConfigError {
                path: format!("routes[{i}].path"),
                message,
            })
            .collect()
    })
}
