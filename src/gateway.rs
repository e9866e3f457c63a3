//! Starts a whole gateway: the runtime's pinned workers with the control side (admin API,
//! active health checks, config watcher) plugged in. The one place that names both, so
//! the runtime never imports control (which sits above it).

use std::sync::Arc;

use crate::config::Config;
use crate::control::Control;
use crate::runtime::{self, GatewayHandle};

/// Starts workers and the admin listener (see `runtime::start`). Returns once every
/// listener is bound; workers finish starting in the background (see `wait_ready`).
pub fn start(config: Config) -> Result<GatewayHandle, String> {
    runtime::start(config, Arc::new(Control))
}
