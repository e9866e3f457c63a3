//! The client connection driver: read a head (with the slowloris and keep-alive
//! timeouts), prepare it, forward it, repeat while keep-alive allows. Pipelined requests
//! wait in the read buffer and are answered strictly in order.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::TcpStream;

use super::access::{write_line, Finished};
use super::forward::{forward, After};
use super::io::{write_all, ReadBuf};
use super::prepare::{prepare, PrepareCtx, Prepared, Rejected, Stop};
use super::request_id::RequestId;
use super::trace::TraceContext;
use super::worker::WorkerCtx;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::error_response::write_error_response;
use crate::http::request::worth_parsing;
use crate::snapshot::Snapshot;

/// Initial size of a client connection's read buffer.
const CLIENT_BUF: usize = 8 * 1024;

/// One client connection's buffers. `out` carries the upstream request head; `scratch`
/// the client-bound response head and re-encoded body.
pub struct ClientConn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub rbuf: ReadBuf,
    pub up_head: Vec<u8>,
    pub scratch: Vec<u8>,
    path: String,
    /// The client address as text, formatted once per connection for X-Forwarded-For.
    peer_ip: String,
    /// Interrupts the wait for the next request when the worker drains.
    idle_cancel: Canceller,
    /// The status of the response to the current request (0 until one is on its way).
    pub status: u16,
    /// What the access log says about the current request beyond its head.
    pub log: LogFields,
}

/// The current request's upstream exchange and answer, for the access log.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFields {
    pub upstream: Option<SocketAddr>,
    /// From sending to the upstream to its response head.
    pub upstream_time: Option<Duration>,
    /// Response bytes written to the client, head included.
    pub bytes: u64,
    /// The error code answered (or stood in for by a fallback).
    pub error: Option<&'static str>,
    /// When a gateway-made response was written (before lingering on a closing
    /// connection, which is not the request's time).
    pub answered_at: Option<Instant>,
}

impl ClientConn {
    /// Between requests, buffers that grew for a large body or head go back to their
    /// initial sizes: thousands of idle keep-alive connections must stay cheap.
    fn shrink_idle_buffers(&mut self) {
        self.rbuf.shrink_if_empty(CLIENT_BUF);
        for v in [&mut self.up_head, &mut self.scratch] {
            if v.capacity() > KEEP_SCRATCH {
                *v = Vec::with_capacity(1024);
            }
        }
    }
}

/// How long a request waits for an app record the control side is fetching.
const APP_FETCH_WAIT: Duration = Duration::from_secs(2);

/// Scratch buffers larger than this are given back between requests.
const KEEP_SCRATCH: usize = 16 * 1024;

enum Head {
    Ready(Prepared),
    Rejected(Rejected),
    /// Closed, idle timeout or drain: close without a response.
    Gone,
}

/// Serves one accepted connection. Not an `async fn` on purpose: the connection is
/// counted when this is called, before the accept loop spawns the future and checks
/// `max_connections_per_worker` again. Counting inside the task let the loop start one
/// more accept before the new task first ran, so the cap admitted one connection too many.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    worker: Rc<WorkerCtx>,
) -> impl std::future::Future<Output = ()> {
    let guard = worker.connection_guard();
    async move {
        let _guard = guard;
        serve_counted(stream, peer, worker).await;
    }
}

async fn serve_counted(stream: TcpStream, peer: SocketAddr, worker: Rc<WorkerCtx>) {
    let _ = stream.set_nodelay(true);
    let mut c = ClientConn {
        stream,
        peer,
        rbuf: ReadBuf::with_capacity(CLIENT_BUF),
        up_head: Vec::with_capacity(1024),
        scratch: Vec::with_capacity(1024),
        path: String::with_capacity(128),
        peer_ip: peer.ip().to_string(),
        idle_cancel: Canceller::new(),
        status: 0,
        log: LogFields::default(),
    };
    let mut first = true;
    loop {
        let snap = worker.generation();
        c.path.clear();
        let head = read_head(&mut c, &snap, &worker, first).await;
        let started = Instant::now();
        c.status = 0;
        c.log = LogFields::default();
        // Route id and name, and method, for the metrics; request id, trace and app for
        // the access log.
        let counted: (Option<(usize, &str)>, u8);
        let mut logged: (Option<RequestId>, Option<TraceContext>, Option<String>) =
            (None, None, None);
        let after = match head {
            Head::Gone => return,
            Head::Rejected(r) => {
                // Consume the refused head, or a kept-alive connection (404, 405) would
                // parse and refuse the same head again, forever.
                c.rbuf.consume(r.head_len);
                logged.0 = Some(r.request_id);
                counted = (
                    r.route
                        .map(|id| (id.0 as usize, snap.route(id).name.as_str())),
                    r.method,
                );
                if r.error.side == Side::Internal {
                    worker.warn_limited(|| format!("request {:?}: {}", r.request_id, r.error));
                }
                respond_error(
                    &mut c,
                    &snap,
                    &r.error,
                    r.request_id.as_str(),
                    r.keep_alive && !worker.draining(),
                    r.is_head,
                )
                .await
            }
            Head::Ready(mut p) => {
                c.rbuf.consume(p.head_len);
                counted = (
                    Some((p.route.0 as usize, snap.route(p.route).name.as_str())),
                    p.method,
                );
                let after = forward(&mut c, &mut p, &snap, &worker).await;
                logged = (Some(p.request_id), Some(p.trace), p.app.take());
                after
            }
        };
        // A request the client left before any response began is not counted.
        if c.status != 0 {
            let took = c
                .log
                .answered_at
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(started);
            if snap.config.admin.metrics {
                worker.metrics.borrow_mut().request(
                    snap.generation,
                    counted.0,
                    counted.1,
                    c.status,
                    took,
                );
            }
            if let (Some(log), Some(request_id)) = (&worker.log, logged.0) {
                if log.sample() {
                    let finished = Finished {
                        request_id,
                        trace: logged.1,
                        client: &c.peer_ip,
                        app: logged.2.as_deref(),
                        route: counted.0.map_or("", |(_, name)| name),
                        method: crate::metrics::METHODS[counted.1 as usize],
                        path: &c.path,
                        status: c.status,
                        total: took,
                        log: c.log,
                    };
                    log.line(|out| write_line(out, &finished));
                }
            }
        }
        first = false;
        if after == After::Close || worker.draining() {
            return;
        }
        c.shrink_idle_buffers();
    }
}

async fn read_head(c: &mut ClientConn, snap: &Snapshot, worker: &WorkerCtx, first: bool) -> Head {
    let server = &snap.config.server;
    // When the head started to arrive; read from the clock only once a head turns out
    // to be incomplete (a complete head in one read, the usual case, never needs it).
    let mut started: Option<Instant> = None;
    let mut scanned = 0;
    let mut app_deadline: Option<Instant> = None;
    loop {
        if !c.rbuf.is_empty() {
            if worth_parsing(c.rbuf.data(), scanned, &server.limits) {
                let mut ctx = PrepareCtx {
                    client_ip: c.peer.ip(),
                    client_ip_text: &c.peer_ip,
                    ids: &worker.ids,
                    path: &mut c.path,
                    nonces: &worker.nonces,
                    apps: worker.apps.as_ref(),
                    app_retry: app_deadline.is_some(),
                    limiter: &worker.limiter,
                };
                match prepare(c.rbuf.data(), snap, &mut ctx, &mut c.up_head) {
                    Ok(Some(p)) => return Head::Ready(p),
                    Ok(None) => {}
                    Err(Stop::Rejected(r)) => return Head::Rejected(r),
                    Err(Stop::AwaitApp) => {
                        // The record is on its way from the control side; the head stays
                        // in the buffer and is prepared again once it arrives.
                        // Any batch of updates wakes every waiter; one deadline across
                        // the waits keeps a request from waiting forever while other
                        // apps' records keep arriving.
                        let deadline =
                            *app_deadline.get_or_insert_with(|| Instant::now() + APP_FETCH_WAIT);
                        let left = deadline.saturating_duration_since(Instant::now());
                        let changed = worker.apps.as_ref().map(|a| a.changed());
                        let arrived = match changed {
                            Some(signal) if !left.is_zero() => {
                                monoio::time::timeout(left, signal.wait()).await.is_ok()
                            }
                            _ => false,
                        };
                        if !arrived {
                            return reject(
                                worker,
                                ProxyError::new(
                                    ErrorKind::Overloaded,
                                    crate::error::Side::Internal,
                                    "the app registry did not answer in time",
                                ),
                            );
                        }
                        continue;
                    }
                }
            }
            scanned = c.rbuf.len();
            started.get_or_insert_with(Instant::now);
        }
        let timeout = match started {
            Some(t) => server.head_timeout.saturating_sub(t.elapsed()),
            None if first => server.head_timeout,
            None => server.keepalive_timeout,
        };
        let idle = c.rbuf.is_empty();
        let timeout = timeout.max(Duration::from_millis(1));
        let max = server.limits.max_header_bytes;
        let result = if idle {
            // Between requests a drain closes the connection, unless a request is
            // already on its way: the read is cancelled, not dropped, so bytes that
            // arrived are still served (with `Connection: close`).
            let read =
                c.rbuf
                    .read_from_cancelable(&mut c.stream, max, timeout, c.idle_cancel.handle());
            let mut read = std::pin::pin!(read);
            monoio::select! {
                r = &mut read => r,
                _ = worker.drain.wait() => {
                    let _cancelled = std::mem::replace(&mut c.idle_cancel, Canceller::new()).cancel();
                    match read.await {
                        Ok(n) if n > 0 => Ok(n),
                        _ => return Head::Gone,
                    }
                }
            }
        } else {
            c.rbuf.read_from(&mut c.stream, max, timeout).await
        };
        match result {
            Ok(0) => return Head::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !idle => {
                return reject(
                    worker,
                    ProxyError::client(
                        ErrorKind::RequestTimeout,
                        "request head not received in time",
                    ),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                return reject(
                    worker,
                    ProxyError::client(
                        ErrorKind::HeadersTooLarge,
                        "request head is larger than the limit",
                    ),
                )
            }
            Err(_) => return Head::Gone,
        }
    }
}

fn reject(worker: &WorkerCtx, error: ProxyError) -> Head {
    Head::Rejected(Rejected {
        error,
        request_id: worker.ids.next_id(),
        keep_alive: false,
        head_len: 0,
        is_head: false,
        route: None,
        method: crate::metrics::method_index(""),
    })
}

/// Sends the JSON error response; the connection stays open only when the error leaves
/// the byte stream in a known state.
pub async fn respond_error(
    c: &mut ClientConn,
    snap: &Snapshot,
    error: &ProxyError,
    request_id: &str,
    keep_alive: bool,
    head_request: bool,
) -> After {
    let keep_alive = keep_alive && !error.kind.closes_connection();
    c.status = error.kind.status();
    c.scratch.clear();
    write_error_response(
        &mut c.scratch,
        error.kind,
        &error.message,
        request_id,
        !keep_alive,
        head_request,
        error.headers.as_deref().unwrap_or_default(),
    );
    c.log.error = Some(error.kind.code());
    c.log.bytes = c.scratch.len() as u64;
    send_scratch(c, snap, keep_alive).await
}

/// Sends the complete response in `c.scratch`; then keeps the connection or closes it
/// (lingering, so the response is not lost to a reset).
pub async fn send_scratch(c: &mut ClientConn, snap: &Snapshot, keep_alive: bool) -> After {
    let sent = write_all(
        &mut c.stream,
        &mut c.scratch,
        snap.config.server.body_timeout,
    )
    .await;
    c.log.answered_at = Some(Instant::now());
    c.scratch.clear();
    if keep_alive && sent.is_ok() {
        return After::KeepAlive;
    }
    if sent.is_ok() {
        linger_close(c).await;
    }
    After::Close
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy
/// the error response before the client reads it (a client still uploading a body it was
/// refused, say). So: shut down our side, then read and discard for a bounded time.
async fn linger_close(c: &mut ClientConn) {
    use monoio::io::AsyncWriteRent;
    if c.stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut discarded = 0usize;
    while discarded < 1 << 20 {
        c.rbuf.consume(c.rbuf.len());
        let left = deadline.saturating_duration_since(Instant::now());
        match c
            .rbuf
            .read_from(
                &mut c.stream,
                CLIENT_BUF,
                left.max(Duration::from_millis(1)),
            )
            .await
        {
            Ok(n) if n > 0 && !left.is_zero() => discarded += n,
            _ => return,
        }
    }
}
