//! What the control side adds to a running gateway, as hooks the runtime calls at fixed
//! points. The runtime never names `crate::control`: control sits above it (it reads
//! `GatewayState` and reloads through it), and `crate::gateway::start` plugs it in.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use super::GatewayState;
use crate::snapshot::Snapshot;

/// The control side's part in starting and reloading a gateway.
pub trait ControlSide: Send + Sync {
    /// A generation starts serving: at start (before the workers) and after each
    /// committed reload. Starts the generation's active health checks.
    fn serving(&self, snapshot: &Arc<Snapshot>);

    /// Starts the admin listener on `socket`, bound by the runtime (or handed over at an
    /// upgrade), at start, before the workers.
    fn start_admin(
        &self,
        socket: TcpListener,
        state: Arc<GatewayState>,
    ) -> io::Result<Box<dyn AdminListener>>;

    /// `[admin] watch = true` with a config file: reload whenever `path` changes.
    fn watch(&self, state: Arc<GatewayState>, path: PathBuf);
}

/// A running admin listener, as the runtime holds it until shutdown.
pub trait AdminListener: Send {
    /// The address as bound (the real port for `:0`).
    fn addr(&self) -> SocketAddr;

    /// Stops accepting and waits for the listener thread (at shutdown, after the workers).
    fn stop(self: Box<Self>);
}
