//! Which I/O driver a worker runs on: io_uring when asked for (or, with `auto`, when the
//! kernel allows it), epoll otherwise. The reason is kept so the start-up log says why.

use std::future::Future;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};

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
        DriverChoice::IoUring | DriverChoice::Auto => match build_uring(server) {
            Ok((mut rt, mode)) => {
                let why = if server.driver == DriverChoice::Auto {
                    "auto: kernel supports it"
                } else {
                    "configured"
                };
                rt.block_on(make(DriverKind::IoUring, format!("{why}; {mode}")));
                return Ok(());
            }
            Err(e) if server.driver == DriverChoice::IoUring => {
                return Err(format!(
                    "io_uring was requested (server.driver) but cannot start: {e}"
                ))
            }
            Err(e) => format!("auto: io_uring unavailable ({e})"),
        },
    };
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("cannot start the epoll driver: {e}"))?;
    rt.block_on(make(DriverKind::Epoll, uring_error));
    Ok(())
}

/// How completions are delivered, best first. By default the kernel interrupts the
/// worker (an IPI and a signal-style task-work run) for every completion; with
/// DEFER_TASKRUN (Linux 6.1+, one thread per ring, which is exactly our model) it runs
/// that work only when the worker asks for events, batched. On the load bench this was
/// worth about 50% more requests per second. COOP_TASKRUN (5.19+) is the fallback;
/// SQPOLL cannot be combined with DEFER_TASKRUN.
#[derive(Debug, Clone, Copy)]
enum TaskRun {
    Defer,
    Coop,
    Default,
}

fn build_uring(
    server: &ServerConfig,
) -> std::io::Result<(Runtime<TimeDriver<IoUringDriver>>, &'static str)> {
    let ladder: &[TaskRun] = if server.sqpoll_idle.is_some() {
        &[TaskRun::Coop, TaskRun::Default]
    } else {
        &[TaskRun::Defer, TaskRun::Coop, TaskRun::Default]
    };
    let mut last_err = None;
    for &mode in ladder {
        let mut urb = io_uring::IoUring::builder();
        if let Some(idle) = server.sqpoll_idle {
            urb.setup_sqpoll(idle.as_millis().min(u32::MAX as u128) as u32);
        }
        let name = match mode {
            TaskRun::Defer => {
                urb.setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
                "defer_taskrun"
            }
            TaskRun::Coop => {
                urb.setup_coop_taskrun();
                "coop_taskrun"
            }
            TaskRun::Default => "default taskrun",
        };
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(server.uring_entries)
            .uring_builder(urb)
            .enable_timer()
            .build();
        match built {
            Ok(rt) => return Ok((rt, name)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no io_uring setup left to try")))
}
