//! One attempt of a request on one upstream target: get a pooled or new connection, send
//! the head and stream the body, read and check the response head, stream the response
//! back, and return the connection to the pool when it is clean. Which target, and
//! whether to try again, is `forward`'s.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use super::body_pace::BodyPace;
use super::client::{After, ClientConn};
use super::io::{is_timeout, write_all, SpareBuffers};
use super::relay::{Relay, RelayError};
use super::request::Request;
use super::response_head::read_response_head;
use super::upstream::{connect, UpstreamConn, WorkerUpstreams};
use super::worker::WorkerCtx;
use crate::config::UpstreamConfig;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::chunked::{write_chunk_header, LAST_CHUNK};
use crate::http::Framing;
use crate::resilience::guard::Outcome;
use crate::snapshot::Snapshot;

/// One try of a request on one target.
pub(super) struct Attempt<'a> {
    pub(super) target: usize,
    /// The request body when it was read whole (signed requests); else it streams.
    pub(super) body: Option<&'a [u8]>,
    /// Statuses that, answered by the upstream, make this attempt give way to a retry
    /// (if `may_retry` grants one).
    pub(super) retry_on: &'a [u16],
    /// Whether the request may go to another target after failing on this one (one is
    /// available, and the retry budget grants it: a grant is spent).
    pub(super) may_retry: &'a dyn Fn(usize) -> bool,
    /// Set when the response starts on its way to the client.
    pub(super) touched: &'a Cell<bool>,
}

/// Why an exchange failed, and whether the client can still get an error response.
pub struct Failed {
    pub error: ProxyError,
    /// Part of the response (or a 100 Continue followed by a body) already went out, or
    /// the client is gone: the only thing left to do is close.
    pub respond: bool,
    /// No connection to the upstream could be made.
    pub(super) connect: bool,
    /// The connection failed (closed, reset) before any byte of the response came back,
    /// and the request may be sent again as it was.
    pub(super) unanswered: bool,
    /// The upstream answered this status, one to retry on, and a retry was granted.
    pub(super) retried_status: Option<u16>,
    /// Says nothing about the upstream (the route's total timeout, which a slow client
    /// can run out too): not counted by the breaker.
    pub(super) neutral: bool,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Self {
        Failed {
            error,
            respond: true,
            connect: false,
            unanswered: false,
            retried_status: None,
            neutral: false,
        }
    }
}

impl Failed {
    /// What the route's breaker makes of it.
    pub(super) fn outcome(&self) -> Outcome {
        if self.neutral {
            return Outcome::Neutral;
        }
        match (self.error.side, self.error.kind) {
            (Side::Upstream, ErrorKind::UpstreamTimeout) => Outcome::TimedOut,
            (Side::Upstream, _) if self.connect => Outcome::ConnectFailed,
            (Side::Upstream, _) => Outcome::Broken,
            _ => Outcome::Neutral,
        }
    }
}

/// Bumps this worker's counters for the request's upstream.
pub(super) fn count_upstream(
    worker: &WorkerCtx,
    snap: &Snapshot,
    req: &Request<'_>,
    bump: impl FnOnce(&mut crate::metrics::UpstreamCounts),
) {
    if let Some(counts) = worker
        .metrics
        .borrow_mut()
        .upstream(snap.generation, req.upstream.0 as usize)
    {
        bump(counts);
    }
}

pub(super) async fn exchange(
    c: &mut ClientConn,
    req: &Request<'_>,
    snap: &Snapshot,
    worker: &WorkerCtx,
    ups: &RefCell<WorkerUpstreams>,
    attempt: Attempt<'_>,
) -> Result<(After, u16), Failed> {
    let Attempt {
        target,
        body,
        retry_on,
        may_retry,
        touched,
    } = attempt;
    let ucfg = snap.upstream(req.upstream);
    let route = snap.route(req.route);
    let connect_timeout = route.connect_timeout.unwrap_or(ucfg.connect_timeout);
    let response_timeout = route.response_timeout.unwrap_or(ucfg.response_timeout);
    let mut retried = false;
    c.log.upstream = Some(snap.upstream(req.upstream).targets[target].addr);
    loop {
        // Timed only for the access log.
        let sent_at = worker.log.is_some().then(Instant::now);
        let connected = upstream_conn(ups, req, ucfg, target, connect_timeout).await;
        count_upstream(worker, snap, req, |n| match &connected {
            Ok(up) if up.reused => n.reused += 1,
            Ok(_) => n.fresh += 1,
            Err(f) if f.error.kind == ErrorKind::UpstreamTimeout => {
                n.connect_errors += 1;
                n.timeouts += 1;
            }
            Err(_) => n.connect_errors += 1,
        });
        let mut up = connected?;
        // A request that may be sent again, on a connection that failed before any byte
        // of the response: a pooled one (the peer closed it while idle) gets one more
        // try on a fresh connection to the same target; otherwise the caller may send
        // it to another target.
        let stale = up.reused && !retried;
        match send_request(c, req, snap, ucfg, &mut up, body, &worker.gather_buffers).await {
            Ok(()) => {}
            Err(e) if e.error.retryable && stale => {
                retried = true;
                continue;
            }
            Err(e) => {
                return Err(Failed {
                    unanswered: e.error.retryable,
                    ..e
                })
            }
        }
        let meta = match read_response_head(c, req, ucfg, response_timeout, &mut up, worker).await {
            Ok(m) => m,
            Err(e) if e.retryable && stale => {
                retried = true;
                continue;
            }
            Err(e) => {
                if e.kind == ErrorKind::UpstreamTimeout {
                    count_upstream(worker, snap, req, |n| n.timeouts += 1);
                }
                return Err(Failed {
                    unanswered: e.retryable,
                    ..e.into()
                });
            }
        };
        if retry_on.contains(&meta.status) && may_retry(target) {
            // Its response is dropped with the connection, unread; the head went nowhere.
            c.scratch.clear();
            return Err(Failed {
                retried_status: Some(meta.status),
                ..ProxyError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    format!(
                        "upstream {:?} answered {}; retrying",
                        ucfg.name, meta.status
                    ),
                )
                .into()
            });
        }
        touched.set(true);
        c.status = meta.status;
        c.log.upstream_time = sent_at.map(|t| t.elapsed());
        let head_bytes = c.scratch.len() as u64;
        let mut client_touched = false;
        let relayed = Relay {
            src: &mut up.stream,
            src_buf: &mut up.rbuf,
            dst: &mut c.stream,
            pending: &mut c.scratch,
            from: meta.framing,
            to_chunked: meta.client_chunked,
            limit: u64::MAX,
            read_timeout: ucfg.body_timeout,
            pace: None,
            write_timeout: snap.config.server.body_timeout,
            dst_touched: &mut client_touched,
            gather: &worker.gather_buffers,
        }
        .run()
        .await;
        c.scratch.clear();
        c.log.bytes = head_bytes + relayed.as_ref().map_or(0, |n| *n);
        if let Err(e) = relayed {
            let error = match e {
                RelayError::DestIo(_) | RelayError::DestTimeout => ProxyError::client(
                    ErrorKind::BadRequest,
                    "client went away during the response",
                ),
                RelayError::SourceTimeout => ProxyError::upstream(
                    ErrorKind::UpstreamTimeout,
                    "upstream stalled during the response body",
                ),
                other => ProxyError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    format!("upstream {:?} response body: {other}", ucfg.name),
                ),
            };
            // A body that fails before any byte went to the client (the head is still
            // buffered with the first chunk, e.g. bad chunked framing in the same packet)
            // can still get a proper 502/504; once bytes went out, only a close is left.
            return Err(Failed {
                respond: !client_touched,
                ..error.into()
            });
        }
        if meta.upstream_keep_alive && up.rbuf.is_empty() {
            ups.borrow_mut()
                .get(req.upstream)
                .checkin(up, Instant::now());
        }
        let after = if meta.client_keep_alive {
            After::KeepAlive
        } else {
            After::Close
        };
        return Ok((after, meta.status));
    }
}

async fn upstream_conn(
    ups: &RefCell<WorkerUpstreams>,
    req: &Request<'_>,
    ucfg: &UpstreamConfig,
    target: usize,
    connect_timeout: std::time::Duration,
) -> Result<UpstreamConn, Failed> {
    let deadline = Instant::now() + connect_timeout;
    let (opening, addr) = loop {
        {
            let mut ups = ups.borrow_mut();
            let u = ups.get(req.upstream);
            if let Some(conn) = u.checkout(target, Instant::now()) {
                return Ok(conn);
            }
            if u.may_open(target) {
                break (u.opening(target), u.addr(target));
            }
        }
        // At `max_connections_per_target`: wait for one to come back to the pool or
        // close, within the connect timeout.
        if Instant::now() >= deadline {
            return Err(Failed {
                connect: true,
                ..Failed::from(ProxyError::upstream(
                    ErrorKind::UpstreamUnavailable,
                    format!(
                        "upstream {:?}: target {} is at max_connections_per_target",
                        ucfg.name,
                        ups.borrow_mut().get(req.upstream).addr(target)
                    ),
                ))
            });
        }
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    connect(addr, ucfg.tls.as_ref(), opening, left)
        .await
        .map_err(|e| {
            let kind = if is_timeout(&e) {
                ErrorKind::UpstreamTimeout
            } else {
                ErrorKind::UpstreamUnavailable
            };
            Failed {
                connect: true,
                ..Failed::from(ProxyError::upstream(
                    kind,
                    format!("upstream {:?}: connect to {addr} failed: {e}", ucfg.name),
                ))
            }
        })
}

/// Sends the head and streams the request body.
async fn send_request(
    c: &mut ClientConn,
    req: &Request<'_>,
    snap: &Snapshot,
    ucfg: &UpstreamConfig,
    up: &mut UpstreamConn,
    buffered_body: Option<&[u8]>,
    gather: &SpareBuffers,
) -> Result<(), Failed> {
    let write_timeout = ucfg.body_timeout;
    // A body already read and checked (a signed request) goes with the head, framed the
    // way the head announced it.
    if let Some(body) = buffered_body {
        if req.framing == Framing::Chunked {
            if !body.is_empty() {
                write_chunk_header(&mut c.up_head, body.len());
                c.up_head.extend_from_slice(body);
                c.up_head.extend_from_slice(b"\r\n");
            }
            c.up_head.extend_from_slice(LAST_CHUNK);
        } else {
            c.up_head.extend_from_slice(body);
        }
        return write_head(up, &mut c.up_head, req, ucfg, write_timeout).await;
    }
    // A small body that is already here travels with the head in one write.
    if let Framing::Length(n) = req.framing {
        if n <= 16 * 1024 && c.rbuf.len() as u64 >= n {
            c.up_head.extend_from_slice(&c.rbuf.data()[..n as usize]);
            c.rbuf.consume(n as usize);
            return write_head(up, &mut c.up_head, req, ucfg, write_timeout).await;
        }
    }
    write_head(up, &mut c.up_head, req, ucfg, write_timeout).await?;
    if req.framing == Framing::None {
        return Ok(());
    }
    if req.expect_continue && c.rbuf.is_empty() {
        let mut cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        write_all(&mut c.stream, &mut cont, snap.config.server.body_timeout)
            .await
            .map_err(|_| Failed {
                respond: false,
                ..ProxyError::client(ErrorKind::BadRequest, "client went away").into()
            })?;
    }
    c.scratch.clear();
    let relayed = Relay {
        src: &mut c.stream,
        src_buf: &mut c.rbuf,
        dst: &mut up.stream,
        pending: &mut c.scratch,
        from: req.framing,
        to_chunked: req.framing == Framing::Chunked,
        limit: req.max_body,
        read_timeout: snap.config.server.body_timeout,
        pace: Some(BodyPace::new(
            Instant::now(),
            snap.config.server.body_timeout,
            snap.config.server.min_body_rate,
        )),
        write_timeout,
        dst_touched: &mut false,
        gather,
    }
    .run()
    .await;
    c.scratch.clear();
    relayed.map(|_| ()).map_err(|e| match e {
        RelayError::SourceClosed | RelayError::SourceIo(_) => Failed {
            respond: false,
            ..ProxyError::client(
                ErrorKind::BadRequest,
                "client closed during the request body",
            )
            .into()
        },
        RelayError::SourceTimeout => ProxyError::client(
            ErrorKind::RequestTimeout,
            "request body not received in time",
        )
        .into(),
        RelayError::SourceTooSlow => ProxyError::client(
            ErrorKind::RequestTimeout,
            "request body arrived slower than the gateway's minimum rate",
        )
        .into(),
        RelayError::BadFraming(why) => ProxyError::client(
            ErrorKind::BadRequest,
            format!("invalid chunked request body: {why}"),
        )
        .into(),
        RelayError::TooLarge => ProxyError::client(
            ErrorKind::PayloadTooLarge,
            format!("request body exceeds the limit of {} bytes", req.max_body),
        )
        .into(),
        RelayError::DestTimeout => ProxyError::upstream(
            ErrorKind::UpstreamTimeout,
            format!("upstream {:?} stopped reading the request body", ucfg.name),
        )
        .into(),
        RelayError::DestIo(e) => ProxyError::upstream(
            ErrorKind::UpstreamUnavailable,
            format!(
                "upstream {:?}: sending the request body failed: {e}",
                ucfg.name
            ),
        )
        .into(),
    })
}

async fn write_head(
    up: &mut UpstreamConn,
    head: &mut Vec<u8>,
    req: &Request<'_>,
    ucfg: &UpstreamConfig,
    timeout: std::time::Duration,
) -> Result<(), Failed> {
    write_all(&mut up.stream, head, timeout).await.map_err(|e| {
        let kind = if is_timeout(&e) {
            ErrorKind::UpstreamTimeout
        } else {
            ErrorKind::UpstreamUnavailable
        };
        let err = ProxyError::upstream(
            kind,
            format!("upstream {:?}: sending the request failed: {e}", ucfg.name),
        );
        // The upstream closed or reset the connection before answering: a request that
        // may be sent again can be (see `exchange`). Not after a timeout: the head went
        // down with the cancelled write, and a stuck upstream deserves its 504 rather
        // than a second wait.
        Failed::from(if req.retry_safe && kind != ErrorKind::UpstreamTimeout {
            err.retryable()
        } else {
            err
        })
    })
}
