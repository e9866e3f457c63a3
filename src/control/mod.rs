//! The control side: admin listener (health now; the admin API, reload and metrics grow
//! here), running on plain threads away from the workers.

pub mod admin;
mod config_edit;
pub mod health_check;
mod metrics_export;
mod openapi;
mod protection_stats;
mod side;
pub mod systemd;
pub mod watch;

pub use side::Control;
