//! Fleet-wide replay protection: with `[cluster]`, a nonce accepted by any gateway sharing
//! the Redis is refused by all the others. Each worker claims the nonces of its verified
//! requests with `SET rg:nonce:<app>:<nonce> <token> NX GET PX <ms left in the window>`
//! (Redis 7.0 or newer) on its own connection, on its own event loop: the claims of
//! concurrent requests go out together, one write and one read per round trip, and a
//! worker never blocks on Redis. The token is the claim's own random value: a claim sent
//! again on a new connection (the old one broke, perhaps after Redis took it) recognizes
//! its own first try instead of calling it a replay.
//!
//! The local cache stays in front (a replay on this gateway is refused without a round
//! trip), and it is the fallback: while Redis cannot be reached or does not answer in
//! time, a claim is settled locally and counted, and the worker does not try Redis again
//! for a second. Requests are never failed because Redis is away.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use super::fleet_conn::FleetTarget;
use super::fleet_conn::RedisStream;
use super::fleet_resp::{command_len, encode, Reply};
use crate::mix::mix64;

/// How long a request waits for its claim before it is settled locally.
const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// Bound on connecting and on the handshake.
const CONNECT_WAIT: Duration = Duration::from_millis(250);
/// After a failure, claims are settled locally for this long before Redis is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Claims written in one go at most (the rest go in the next round trip).
const MAX_BATCH: usize = 512;

/// Shared by every worker, for `/metrics`.
#[derive(Debug, Default)]
pub struct FleetNonceStats {
    /// Claims Redis granted: the nonce was new to the fleet.
    pub fresh: AtomicU64,
    /// Claims Redis refused: another gateway had accepted the nonce.
    pub replays: AtomicU64,
    /// Claims settled locally because Redis could not be asked.
    pub fallbacks: AtomicU64,
}

/// How a claim was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    Fresh,
    Replay,
    /// Redis could not say: the local cache's word stands.
    Unavailable,
}

/// One worker's claims and its Redis connection.
pub struct FleetNonces {
    target: FleetTarget,
    stats: Arc<FleetNonceStats>,
    /// Claims encoded and waiting for the connection task, and their answers' slots.
    queued: RefCell<(Vec<u8>, Vec<Rc<Slot>>)>,
    /// The connection task, when it sleeps for want of claims.
    task: Cell<Option<Waker>>,
    /// Until when claims are settled locally (Redis just failed).
    down_until: Cell<Option<Instant>>,
    /// Claim tokens: `mix64(seed + n)`, distinct for every claim of this worker.
    seed: u64,
    claims: Cell<u64>,
}

impl FleetNonces {
    /// Creates the worker's claimer; `run` must be spawned on the worker for it to work.
    /// `seed`: random per worker, so that tokens differ across workers and gateways.
    pub fn new(target: FleetTarget, stats: Arc<FleetNonceStats>, seed: u64) -> Rc<FleetNonces> {
        Rc::new(FleetNonces {
            target,
            stats,
            queued: RefCell::new((Vec::new(), Vec::new())),
            task: Cell::new(None),
            down_until: Cell::new(None),
            seed,
            claims: Cell::new(0),
        })
    }

    /// Claims `nonce` of `app_key` for the fleet until `expires_at` (unix seconds, the
    /// last second at which it counts); `now` in unix seconds.
    pub async fn claim(&self, app_key: &str, nonce: &str, expires_at: u64, now: u64) -> Claimed {
        if self.down_until.get().is_some_and(|t| Instant::now() < t) {
            return self.fallback();
        }
        let ttl_ms = (expires_at.saturating_sub(now) + 1).saturating_mul(1000);
        self.claims.set(self.claims.get() + 1);
        let slot = Rc::new(Slot {
            token: mix64(self.seed.wrapping_add(self.claims.get())),
            ..Slot::default()
        });
        {
            let mut queued = self.queued.borrow_mut();
            let key = [
                self.target.key_prefix().as_bytes(),
                app_key.as_bytes(),
                b":",
                nonce.as_bytes(),
            ]
            .concat();
            let token = format!("{:016x}", slot.token);
            let ttl = ttl_ms.to_string();
            let set: [&[u8]; 7] = [
                b"SET",
                &key,
                token.as_bytes(),
                b"NX",
                b"GET",
                b"PX",
                ttl.as_bytes(),
            ];
            encode(&mut queued.0, &set);
            queued.1.push(slot.clone());
        }
        if let Some(task) = self.task.take() {
            task.wake();
        }
        match monoio::time::timeout(CLAIM_WAIT, SlotWait(&slot)).await {
            Ok(Claimed::Fresh) => {
                self.stats.fresh.fetch_add(1, Ordering::Relaxed);
                Claimed::Fresh
            }
            Ok(Claimed::Replay) => {
                self.stats.replays.fetch_add(1, Ordering::Relaxed);
                Claimed::Replay
            }
            Ok(Claimed::Unavailable) | Err(_) => self.fallback(),
        }
    }

    fn fallback(&self) -> Claimed {
        self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        Claimed::Unavailable
    }

    /// The connection task: sends what is queued, reads the answers, reconnects after a
    /// failure once `RETRY_AFTER` has passed. Runs as long as the worker.
    pub async fn run(self: Rc<Self>) {
        let mut conn: Option<RedisStream> = None;
        let mut rbuf = Vec::with_capacity(4096);
        loop {
            WorkQueued(&self).await;
            let (mut batch, slots) = self.take_batch();
            // A connection kept from earlier may have died meanwhile (Redis restarted):
            // if it fails before any answer, the batch goes again on a new one (the
            // tokens make that safe).
            let mut retried = false;
            let why = loop {
                let reused = conn.is_some();
                if conn.is_none() {
                    match monoio::time::timeout(CONNECT_WAIT, self.target.connect(&mut rbuf)).await
                    {
                        Ok(Ok(c)) => conn = Some(c),
                        Ok(Err(e)) => break Some(format!("cannot connect: {e}")),
                        Err(_) => break Some("connect timed out".to_string()),
                    }
                }
                let Some(stream) = conn.as_mut() else {
                    break None;
                };
                let (mut answered, mut refused) = (0, 0);
                let result = monoio::time::timeout(
                    CLAIM_WAIT,
                    stream.exchange(&mut batch, &mut rbuf, slots.len(), |i, reply| {
                        answered += 1;
                        let slot = &slots[i];
                        slot.settle(match reply {
                            // Nothing was there: the nonce is ours now.
                            Reply::Nil => Claimed::Fresh,
                            // Our own earlier try, which Redis took before the
                            // connection broke.
                            Reply::Token(t) if t == Some(slot.token) => Claimed::Fresh,
                            Reply::Token(_) => Claimed::Replay,
                            Reply::Ok | Reply::Error | Reply::Other => {
                                refused += 1;
                                Claimed::Unavailable
                            }
                        });
                    }),
                )
                .await;
                // Only a broken connection is worth a second try: a Redis that does not
                // answer in time would not answer it either.
                let why = match result {
                    // Refused claims (an error reply: a Redis older than 7.0, a read-only
                    // replica, no memory) are settled locally; said as a failure. The
                    // connection goes too: a replica now may have been the master before
                    // a failover, and the next one is made to the master found since.
                    Ok(Ok(())) if refused > 0 => {
                        conn = None;
                        break Some(format!(
                            "{refused} claims refused (it must be Redis 7.0 or newer, writable)"
                        ));
                    }
                    Ok(Ok(())) => break None,
                    Ok(Err(_)) if reused && answered == 0 && !retried => None,
                    Ok(Err(e)) => Some(format!("claim failed: {e}")),
                    Err(_) => Some("claim timed out".to_string()),
                };
                conn = None;
                if why.is_some() {
                    break why;
                }
                retried = true;
            };
            if let Some(why) = why {
                self.failed(&slots, &why);
            }
        }
    }

    /// Takes what is queued, at most `MAX_BATCH` claims; the rest stays for the next trip.
    fn take_batch(&self) -> (Vec<u8>, Vec<Rc<Slot>>) {
        let mut queued = self.queued.borrow_mut();
        if queued.1.len() <= MAX_BATCH {
            return std::mem::take(&mut *queued);
        }
        // Split the encoded bytes after the MAX_BATCH-th command.
        let mut at = 0;
        for _ in 0..MAX_BATCH {
            at += command_len(&queued.0[at..]);
        }
        let rest = queued.0.split_off(at);
        let later = queued.1.split_off(MAX_BATCH);
        let batch = std::mem::replace(&mut queued.0, rest);
        let slots = std::mem::replace(&mut queued.1, later);
        (batch, slots)
    }

    /// Settles every unanswered claim locally and rests for `RETRY_AFTER`.
    fn failed(&self, slots: &[Rc<Slot>], why: &str) {
        for slot in slots {
            slot.settle(Claimed::Unavailable);
        }
        if self.down_until.get().is_none_or(|t| Instant::now() >= t) {
            log::warn!(
                "fleet nonces: redis {}: {why}; checking nonces on this gateway only for {RETRY_AFTER:?}",
                self.target.described()
            );
        }
        self.down_until.set(Some(Instant::now() + RETRY_AFTER));
        // Claims queued meanwhile are settled locally too: their requests are waiting.
        let (_, waiting) = std::mem::take(&mut *self.queued.borrow_mut());
        for slot in waiting {
            slot.settle(Claimed::Unavailable);
        }
    }
}

/// One claim's answer, handed from the connection task to the request.
#[derive(Default)]
struct Slot {
    /// The value the claim sets.
    token: u64,
    answer: Cell<Option<Claimed>>,
    waiter: Cell<Option<Waker>>,
}

impl Slot {
    fn settle(&self, answer: Claimed) {
        if self.answer.get().is_none() {
            self.answer.set(Some(answer));
            if let Some(w) = self.waiter.take() {
                w.wake();
            }
        }
    }
}

struct SlotWait<'a>(&'a Slot);

impl Future for SlotWait<'_> {
    type Output = Claimed;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Claimed> {
        match self.0.answer.get() {
            Some(a) => Poll::Ready(a),
            None => {
                self.0.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// Ready when claims are queued.
struct WorkQueued<'a>(&'a FleetNonces);

impl Future for WorkQueued<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.queued.borrow().1.is_empty() {
            self.0.task.set(Some(cx.waker().clone()));
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
