//! Zero-downtime upgrade: a running gateway starts its successor (the binary now at the
//! path it was started from, with the same arguments) and hands it its listening sockets
//! over a unix socket pair (`SCM_RIGHTS`). Both accept on the same kernel sockets for a
//! moment, so no connection queued on them is lost and none is refused; once the
//! successor says every worker listens, the predecessor stops accepting, serves what it
//! has (each idle keep-alive connection gets its next request answered with `Connection:
//! close`), and exits. Triggered by `SIGUSR2` (as nginx does).
//!
//! The channel carries one message per `SOCK_SEQPACKET` packet:
//! - predecessor to successor: `listener <name>` with the socket attached, one per
//!   socket, `drain-timeout <ms>`, `nonce-keys ...` (the replay cache's fingerprint
//!   keys and a probe fingerprint: a successor that fingerprints differently takes
//!   neither keys nor entries) and the cache's live entries, `key-seeds a b c d` (the
//!   limit key hash's seeds: the successor files quota use under the same keys), then
//!   `end`; a successor ignores messages it does not know (a rollback to an older
//!   binary);
//! - successor to predecessor: `ready <pid>` once it serves, or `failed <why>`;
//! - predecessor to successor: `released` once it has told its workers to stop
//!   accepting (under systemd, after naming the successor the service's main process),
//!   so the successor may treat the sockets as its own and tell systemd its state; then
//!   the replay cache's live entries (binary: `nonces\n` and 24 bytes an entry, in as
//!   many messages as they take); once it has stopped, the entries again (what it took
//!   while draining) and `finished`, its last quota use saved (the successor adds it to
//!   its own, and saves the state file only from then on).
//!
//! A successor that fails (bad config, a crash, no `ready` within the time allowed) is
//! reaped or killed, and the predecessor serves on as before.

mod channel;
mod hand_off;
mod lifecycle;
mod take_over;

pub use hand_off::{stop_successor, Relaunch, Released, Successor};
pub use lifecycle::{start_successor, take_over, TakenOver};
pub use take_over::Predecessor;

/// The environment variable that tells a successor where its channel is.
pub const CHANNEL_FD_ENV: &str = "RINGGATE_UPGRADE_FD";
