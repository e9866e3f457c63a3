//! ringgate: a thread-per-core HTTP/1.1 API gateway on io_uring.
//!
//! The crate is split into rooms with one job each (see `DESIGN.md` in the shared folder),
//! in layers where a lower one never imports a higher one:
//!
//! 1. leaves: `error` (the error type), `signal`, `clock`, `mix`, `sys`, `redis_link`,
//!    `proxy_protocol` (the balancers' connection header),
//!    `trace` (request ids and trace contexts);
//! 2. `http` (the strict HTTP/1.1 codec and path normalization) and `router`;
//! 3. `config`: a TOML file -> validated, plain data (the capabilities' config types too);
//! 4. capabilities built from it: `auth`, `limits`, `resilience`, `access_log`, `metrics`;
//! 5. `filters`: the request pipeline's filters, one per capability, in one order table;
//! 6. `snapshot`: one compiled, immutable config generation ([`snapshot::Snapshot`]) with
//!    every route's filter chain;
//! 7. `proxy` drives connections, runs the chains and the upstream exchange; `runtime`
//!    owns the pinned workers;
//! 8. `control` (admin API, health checks, config watcher) plugs into the runtime, and
//!    `gateway` starts the two together;
//! 9. `upgrade`: a running gateway handing its sockets to its successor (zero-downtime
//!    upgrade), over the runtime's handle.

// No unwrap/expect outside tests: a panic on a worker aborts the process (panic = abort).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod auth;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod files;
pub mod filters;
pub mod gateway;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mix;
pub mod proxy;
pub mod proxy_protocol;
pub mod redis_link;
pub mod resilience;
pub mod router;
pub mod runtime;
pub mod signal;
pub mod snapshot;
pub(crate) mod sys;
pub mod tls;
pub mod trace;
pub mod tune;
pub mod upgrade;
