//! Which I/O driver a worker runs on: io_uring when asked for (or, with `auto`, when the
//! kernel allows it), epoll otherwise. The reason is kept so the start-up log says why.

use std::future::Future;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::{DriverChoice, ServerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Epoll,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Builds the runtime for `server.driver` on the current thread and runs the future made
/// by `make` on it. `make` learns which driver it got and why. Returns an error only when
/// the requested driver cannot start (with `auto`, io_uring failing falls back to epoll).
pub fn run_on_driver<F, Fut>(server: &ServerConfig, make: F) -> Result<(), String>
where
    F: FnOnce(DriverKind, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let uring_error = match server.driver {
        DriverChoice::Epoll => "configured".to_string(),
        DriverChoice::IoUring | DriverChoice::Auto => {
            let mut urb = io_uring::IoUring::builder();
            if let Some(idle) = server.sqpoll_idle {
                urb.setup_sqpoll(idle.as_millis().min(u32::MAX as u128) as u32);
            }
            let built = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(server.uring_entries)
                .uring_builder(urb)
                .enable_timer()
                .build();
            match built {
                Ok(mut rt) => {
                    let why = if server.driver == DriverChoice::Auto { "auto: kernel supports it" } else { "configured" };
                    rt.block_on(make(DriverKind::IoUring, why.to_string()));
                    return Ok(());
                }
                Err(e) if server.driver == DriverChoice::IoUring => {
                    return Err(format!("io_uring was requested (server.driver) but cannot start: {e}"))
                }
                Err(e) => format!("auto: io_uring unavailable ({e})"),
            }
        }
    };
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("cannot start the epoll driver: {e}"))?;
    rt.block_on(make(DriverKind::Epoll, uring_error));
    Ok(())
}
