//! ringgate: a thread-per-core HTTP/1.1 API gateway on io_uring.
//!
//! The crate is split into rooms with one job each (see `DESIGN.md` in the shared folder):
//! `config` turns a TOML file into an immutable [`config::Snapshot`], `runtime` owns the
//! pinned worker threads, `http` is the strict HTTP/1.1 codec, `proxy` drives connections,
//! routes and upstream pools, `control` is the admin side.

// No unwrap/expect outside tests: a panic on a worker aborts the process (panic = abort).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod auth;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod filters;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mix;
pub mod proxy;
pub mod redis_link;
pub mod resilience;
pub mod runtime;
pub(crate) mod sys;
pub mod trace;
