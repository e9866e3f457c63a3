//! The control side as the runtime sees it (`runtime::ControlSide`): the admin listener,
//! each generation's active health checks and the config watcher. The runtime calls these
//! at start, reload and shutdown without importing this module.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use super::admin::AdminServer;
use crate::runtime::{AdminListener, ControlSide, GatewayState};
use crate::snapshot::Snapshot;

/// Plugs the control side into `runtime::start` (see `crate::gateway::start`).
pub struct Control;

impl ControlSide for Control {
    fn serving(&self, snapshot: &Arc<Snapshot>) {
        super::health_check::start(snapshot);
    }

    fn start_admin(
        &self,
        socket: TcpListener,
        state: Arc<GatewayState>,
    ) -> io::Result<Box<dyn AdminListener>> {
        Ok(Box::new(AdminServer::start(socket, state)?))
    }

    fn watch(&self, state: Arc<GatewayState>, path: PathBuf) {
        super::watch::start(state, path);
    }
}

impl AdminListener for AdminServer {
    fn addr(&self) -> SocketAddr {
        AdminServer::addr(self)
    }

    fn stop(self: Box<Self>) {
        AdminServer::stop(*self);
    }
}
