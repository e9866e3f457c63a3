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
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::headers::push_decimal;
use crate::mix::mix64;

/// How long a request waits for its claim before it is settled locally.
const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// Bound on connecting and on the handshake.
const CONNECT_WAIT: Duration = Duration::from_millis(250);
/// After a failure, claims are settled locally for this long before Redis is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Claims written in one go at most (the rest go in the next round trip).
const MAX_BATCH: usize = 512;

/// Where the fleet's nonces live: the `[cluster] redis` URL, resolved once at start.
#[derive(Clone)]
pub struct FleetTarget {
    addr: SocketAddr,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for FleetTarget {
    /// The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetTarget({}, db {})", self.addr, self.db)
    }
}

impl FleetTarget {
    /// Parses `redis://[user:password@]host:port[/db]` and resolves the host.
    pub fn from_url(url: &str) -> Result<FleetTarget, String> {
        use redis::IntoConnectionInfo;
        let info = url
            .into_connection_info()
            .map_err(|e| format!("invalid Redis URL: {e}"))?;
        let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
            return Err(format!(
                "fleet-wide nonces need a plain TCP Redis, not {}",
                info.addr
            ));
        };
        let addr = (host.as_str(), *port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve {host}:{port}"))?;
        Ok(FleetTarget {
            addr,
            db: info.redis.db,
            username: info.redis.username,
            password: info.redis.password,
        })
    }

    /// `AUTH` and `SELECT` as needed, with how many replies they bring.
    fn handshake(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut replies = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => encode(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut out, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if self.db != 0 {
            encode(&mut out, &[b"SELECT", self.db.to_string().as_bytes()]);
            replies += 1;
        }
        (out, replies)
    }
}

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
            let key = [b"rg:nonce:", app_key.as_bytes(), b":", nonce.as_bytes()].concat();
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
        let mut conn: Option<TcpStream> = None;
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
                    match monoio::time::timeout(CONNECT_WAIT, self.connect(&mut rbuf)).await {
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
                    exchange(stream, &mut batch, &mut rbuf, slots.len(), |i, reply| {
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
                    // replica, no memory) are settled locally; said as a failure.
                    Ok(Ok(())) if refused > 0 => {
                        break Some(format!(
                            "{refused} claims refused (it must be Redis 7.0 or newer, writable)"
                        ))
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

    async fn connect(&self, rbuf: &mut Vec<u8>) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.target.addr).await?;
        let _ = stream.set_nodelay(true);
        rbuf.clear();
        let (mut hello, replies) = self.target.handshake();
        if replies > 0 {
            let mut refused = false;
            exchange(&mut stream, &mut hello, rbuf, replies, |_, r| {
                refused |= r != Reply::Ok;
            })
            .await?;
            if refused {
                return Err(std::io::Error::other("AUTH or SELECT refused"));
            }
        }
        Ok(stream)
    }

    /// Settles every unanswered claim locally and rests for `RETRY_AFTER`.
    fn failed(&self, slots: &[Rc<Slot>], why: &str) {
        for slot in slots {
            slot.settle(Claimed::Unavailable);
        }
        if self.down_until.get().is_none_or(|t| Instant::now() >= t) {
            log::warn!(
                "fleet nonces: redis at {}: {why}; checking nonces on this gateway only for {RETRY_AFTER:?}",
                self.target.addr
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

/// Writes `out` and reads `replies` replies, handing each to `each` in order. `out` is
/// handed back as it was, to be sent again.
async fn exchange(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    replies: usize,
    mut each: impl FnMut(usize, Reply),
) -> std::io::Result<()> {
    let (written, buf) = stream.write_all(std::mem::take(out)).await;
    *out = buf;
    written?;
    let mut done = 0;
    let mut at = 0;
    while done < replies {
        match parse_reply(&rbuf[at..]) {
            Some((reply, used)) => {
                each(done, reply);
                done += 1;
                at += used;
                continue;
            }
            None => {
                rbuf.drain(..at);
                at = 0;
            }
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(4096);
        }
        let (read, buf) = stream.read(std::mem::take(rbuf)).await;
        *rbuf = buf;
        if read? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    rbuf.drain(..at);
    Ok(())
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

/// A command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, parts.len() as u64);
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        push_decimal(out, p.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of the first command `encode` wrote at the start of `buf`.
fn command_len(buf: &[u8]) -> usize {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(buf.len(), |p| from + p + 2)
    };
    let number = |from: usize, to: usize| {
        std::str::from_utf8(&buf[from + 1..to - 2])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let mut at = line_end(0);
    for _ in 0..number(0, at) {
        let header_end = line_end(at);
        at = header_end + number(at, header_end) + 2;
    }
    at.min(buf.len())
}

/// The replies a claim or a handshake gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// `+OK`: a handshake step done.
    Ok,
    /// A nil: `SET NX GET` found no key and set it.
    Nil,
    /// A bulk string: `SET NX GET` found the key; its token when it is one (16 hex
    /// digits).
    Token(Option<u64>),
    Error,
    /// Anything else: not what these commands answer.
    Other,
}

/// Parses the reply at the start of `buf`: `None` until it is complete.
fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = &buf[..end - 2];
    let reply = match line.first()? {
        b'+' if line == b"+OK" => Reply::Ok,
        b'-' => Reply::Error,
        b'$' if line == b"$-1" => Reply::Nil,
        b'_' => Reply::Nil,
        b'$' => {
            let n: usize = std::str::from_utf8(&line[1..]).ok()?.parse().ok()?;
            let value = buf.get(end..end + n)?;
            if buf.len() < end + n + 2 {
                return None;
            }
            let token = std::str::from_utf8(value)
                .ok()
                .filter(|v| v.len() == 16)
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            return Some((Reply::Token(token), end + n + 2));
        }
        _ => Reply::Other,
    };
    Some((reply, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_resp_arrays() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &[b"SET", b"rg:nonce:a:n1", b"ab", b"NX", b"PX", b"301000"],
        );
        assert_eq!(
            out,
            b"*6\r\n$3\r\nSET\r\n$13\r\nrg:nonce:a:n1\r\n$2\r\nab\r\n$2\r\nNX\r\n$2\r\nPX\r\n$6\r\n301000\r\n"
        );
        let first = out.len();
        encode(&mut out, &[b"SELECT", b"3"]);
        assert_eq!(command_len(&out), first);
        assert_eq!(command_len(&out[first..]), out.len() - first);
    }

    #[test]
    fn replies_are_read_whole_and_in_order() {
        assert_eq!(parse_reply(b"+OK\r\n$-1\r\n"), Some((Reply::Ok, 5)));
        assert_eq!(parse_reply(b"$-1\r\n"), Some((Reply::Nil, 5)));
        assert_eq!(parse_reply(b"_\r\n"), Some((Reply::Nil, 3)));
        assert_eq!(
            parse_reply(b"-NOAUTH Authentication required.\r\n"),
            Some((Reply::Error, 34))
        );
        assert_eq!(
            parse_reply(b"$3\r\nabc\r\n+OK"),
            Some((Reply::Token(None), 9))
        );
        assert_eq!(
            parse_reply(b"$16\r\n00000000000000ff\r\n"),
            Some((Reply::Token(Some(255)), 23))
        );
        assert_eq!(parse_reply(b"$3\r\nab"), None);
        assert_eq!(parse_reply(b"$3\r\nabc\r"), None);
        assert_eq!(parse_reply(b"+OK\r"), None);
        assert_eq!(parse_reply(b""), None);
    }

    #[test]
    fn the_url_gives_address_database_and_credentials() {
        let t = FleetTarget::from_url("redis://:s3cret@127.0.0.1:6390/2").unwrap();
        assert_eq!(t.addr, "127.0.0.1:6390".parse().unwrap());
        let (hello, replies) = t.handshake();
        assert_eq!(replies, 2);
        assert_eq!(
            hello,
            b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        let plain = FleetTarget::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(plain.handshake().1, 0);
        assert!(FleetTarget::from_url("redis+unix:///tmp/r.sock").is_err());
    }
}
