//! The new process's side of an upgrade: receive the listening sockets, say when it
//! serves, learn when the predecessor has let go.

use std::io;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::auth::nonce::NonceCache;

use super::channel::{timed_out, Channel, Received};
use super::CHANNEL_FD_ENV;
use crate::runtime::Inherited;

/// How long the sockets may take to arrive: they are sent right after the start.
const SOCKETS_WITHIN: Duration = Duration::from_secs(10);

/// The gateway this process takes over from.
pub struct Predecessor {
    channel: Channel,
    /// Its `server.drain_timeout`: how long it may take to stop.
    drain_timeout: std::cell::Cell<Option<Duration>>,
    /// Its replay cache fingerprints as this binary does: its entries are taken.
    nonces_compatible: std::cell::Cell<bool>,
}

impl Predecessor {
    /// The predecessor's channel, when this process was started by an upgrade
    /// (`RINGGATE_UPGRADE_FD`); an error when the variable names no usable socket. Call
    /// it first thing in `main`, before any thread or descriptor of this process exists
    /// (so the number cannot name one of ours); the variable is removed, so no child of
    /// ours sees it.
    pub fn from_env() -> Option<Result<Predecessor, String>> {
        let value = std::env::var(CHANNEL_FD_ENV).ok()?;
        std::env::remove_var(CHANNEL_FD_ENV);
        let adopted = value
            .parse()
            .map_err(|_| io::Error::other("not a descriptor number"))
            .and_then(crate::sys::adopt_inherited_socket)
            .and_then(|socket| match SockRef::from(&socket).r#type() {
                Ok(t) if t == socket2::Type::SEQPACKET => Ok(socket),
                _ => {
                    // Not the channel: not ours to close either.
                    let _ = socket.into_raw_fd();
                    Err(io::Error::other("not the upgrade's channel"))
                }
            })
            .map(|socket| Predecessor {
                channel: Channel::new(socket),
                drain_timeout: std::cell::Cell::new(None),
                nonces_compatible: std::cell::Cell::new(false),
            })
            .map_err(|e| format!("{CHANNEL_FD_ENV}={value}: {e}"));
        Some(adopted)
    }

    /// The sockets the predecessor hands over, by listener name.
    pub fn receive_sockets(&self) -> Result<Inherited, String> {
        let deadline = Instant::now() + SOCKETS_WITHIN;
        let mut inherited = Inherited::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self
                .channel
                .receive(left)
                .map_err(|e| format!("receiving the listening sockets: {e}"))?;
            match received {
                Received::Message(m, Some(socket)) if m.starts_with("listener ") => {
                    inherited.add(m["listener ".len()..].to_string(), socket);
                }
                Received::Message(m, None) if m.starts_with("nonce-keys ") => {
                    let n = numbers(&m["nonce-keys ".len()..]);
                    let (keys, probe): ([u64; 8], [u64; 2]) = match n.split_at_checked(8) {
                        Some((k, p)) => (
                            k.try_into()
                                .map_err(|_| format!("bad replay cache keys {m:?}"))?,
                            p.try_into()
                                .map_err(|_| format!("bad replay cache keys {m:?}"))?,
                        ),
                        None => return Err(format!("bad replay cache keys {m:?}")),
                    };
                    let theirs = (u128::from(probe[0]) << 64) | u128::from(probe[1]);
                    if NonceCache::with_keys(1, 1, keys).probe() == theirs {
                        inherited.set_nonce_keys(keys);
                        self.nonces_compatible.set(true);
                    } else {
                        log::warn!("upgrade: this binary fingerprints nonces unlike the old one; the replay cache starts empty");
                    }
                }
                Received::Entries(entries) => {
                    if self.nonces_compatible.get() {
                        inherited.add_nonce_entries(entries);
                    }
                }
                Received::Message(m, None) if m.starts_with("key-seeds ") => {
                    let seeds: [u64; 4] = numbers(&m["key-seeds ".len()..])
                        .try_into()
                        .map_err(|_| format!("bad key seeds {m:?}"))?;
                    inherited.set_key_seeds(seeds);
                }
                Received::Message(m, None) if m.starts_with("drain-timeout ") => {
                    let ms = m["drain-timeout ".len()..]
                        .parse()
                        .map_err(|_| format!("bad drain timeout {m:?}"))?;
                    self.drain_timeout.set(Some(Duration::from_millis(ms)));
                }
                Received::Message(m, None) if m == "end" => return Ok(inherited),
                // From a newer predecessor (a rollback): what this binary does not know of
                // is left, not fatal.
                Received::Message(m, _) => log::warn!("upgrade: ignoring the message {m:?}"),
                Received::Closed => {
                    return Err("the running gateway closed the channel".to_string())
                }
            }
        }
    }

    /// How long the predecessor may take to drain, as it said.
    pub fn drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout.get()
    }

    /// Every worker listens: the predecessor may stop accepting.
    pub fn ready(&self) -> io::Result<()> {
        self.channel
            .send(&format!("ready {}", std::process::id()), None)
    }

    /// Starting failed; the process exits next. What the predecessor sent and was not
    /// read yet is read first: closing a unix socket with unread messages resets the
    /// connection, and the predecessor might lose this message in the reset.
    pub fn failed(&self, why: &str) {
        loop {
            match self.channel.receive(Duration::from_millis(200)) {
                Ok(Received::Message(m, _)) if m == "end" => break,
                Ok(Received::Message(..) | Received::Entries(_)) => {}
                Ok(Received::Closed) | Err(_) => break,
            }
        }
        // Cut to what a message holds; the whole story is in the log.
        let why: String = why.lines().next().unwrap_or("").chars().take(300).collect();
        let _ = self.channel.send(&format!("failed {why}"), None);
    }

    /// Waits (on a thread of its own) until the predecessor has stopped, or is gone, or
    /// `within` has passed (it drains for its drain timeout at most), then runs `then`.
    /// The replay cache entries it hands over meanwhile go to `nonces`.
    pub fn when_finished(
        self,
        within: Duration,
        nonces: std::sync::Arc<NonceCache>,
        then: impl FnOnce() + Send + 'static,
    ) {
        let nonces = self.nonces_compatible.get().then_some(nonces);
        // Shared with the thread, so a thread that cannot start still runs `then` here.
        let then = std::sync::Arc::new(std::sync::Mutex::new(Some(then)));
        let theirs = then.clone();
        let spawned = std::thread::Builder::new()
            .name("ringgate-upgrade".into())
            .spawn(move || {
                let deadline = Instant::now() + within;
                let mut left_out = 0;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        log::warn!("upgrade: the old process has not stopped within {within:?}; going on without it");
                        break;
                    }
                    match self.channel.receive(left) {
                        Ok(Received::Message(m, _)) if m == "finished" => break,
                        Ok(Received::Entries(entries)) => {
                            if let Some(nonces) = &nonces {
                                left_out += nonces.insert_entries(&entries);
                            }
                        }
                        Ok(Received::Message(_, _)) => {}
                        Err(e) if timed_out(&e) => {}
                        Ok(Received::Closed) | Err(_) => break,
                    }
                }
                if left_out > 0 {
                    log::warn!("upgrade: {left_out} of the old process's nonces did not fit in the replay cache (apps.replay_capacity)");
                }
                run_once(&theirs);
            });
        if let Err(e) = spawned {
            log::error!(
                "upgrade: cannot wait for the old process to finish ({e}); going on without it"
            );
            run_once(&then);
        }
    }

    /// Waits until the predecessor no longer accepts (or is gone), at most `timeout`.
    /// False if it did not say so in time.
    pub fn wait_released(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.channel.receive(left) {
                Ok(Received::Message(m, _)) if m == "released" => return true,
                Ok(Received::Closed) => return true,
                Ok(Received::Message(m, _)) => log::warn!("upgrade: unexpected message {m:?}"),
                Ok(Received::Entries(_)) => log::warn!("upgrade: replay cache entries too early"),
                Err(e) if timed_out(&e) => {}
                Err(e) => {
                    log::warn!("upgrade: the channel to the old process failed: {e}");
                    return true;
                }
            }
        }
    }
}

/// Runs what `slot` holds, once.
fn run_once<F: FnOnce()>(slot: &std::sync::Mutex<Option<F>>) {
    let taken = slot.lock().ok().and_then(|mut f| f.take());
    if let Some(f) = taken {
        f();
    }
}

/// The numbers in a space-separated list (what does not parse is left out).
fn numbers(list: &str) -> Vec<u64> {
    list.split(' ').filter_map(|n| n.parse().ok()).collect()
}
