//! Starts a whole gateway: the runtime's pinned workers with the control side (admin API,
//! active health checks, config watcher) plugged in. The one place that names both, so
//! the runtime never imports control (which sits above it).

use std::sync::Arc;

use crate::config::Config;
use crate::control::Control;
use crate::runtime::{self, GatewayHandle, Inherited};

/// Starts workers and the admin listener (see `runtime::start`). Returns once every
/// listener is bound; workers finish starting in the background (see `wait_ready`).
pub fn start(config: Config) -> Result<GatewayHandle, String> {
    runtime::start(config, Arc::new(Control), Inherited::default(), false)
}

/// As `start`, taking over from a running gateway at an upgrade: on the listening
/// sockets it handed over (and new ones for listeners it did not have).
pub fn take_over(config: Config, inherited: Inherited) -> Result<GatewayHandle, String> {
    runtime::start(config, Arc::new(Control), inherited, true)
}
