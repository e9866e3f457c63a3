//! The client connection driver (HTTP/1.1 framing loop): read a head within the
//! slowloris and keep-alive timeouts, hand it to the pipeline with the config generation
//! current when it arrived, forward the request or send the answer, record it, and
//! repeat while keep-alive allows. Pipelined requests wait in the read buffer and are
//! answered strictly in order.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::TcpStream;

use super::access::{write_line, Finished};
use super::client::{After, ClientConn};
use super::exchange::Failed;
use super::forward::forward;
use super::pipeline::{begin, resume, Begin, Refused, Resumed};
use super::preface::{read_proxy_header, NoPreface};
use super::request::Request;
use super::respond::{respond, Answer};
use super::wire::Stream;
use super::worker::{ConnectionGuard, WorkerCtx, WorkerGen};
use crate::config::ListenConfig;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::filters::Reply;
use crate::http::request::worth_parsing;
use crate::http::Framing;
use crate::trace::{RequestId, TraceContext};

/// Serves one accepted connection. Not an `async fn` on purpose: the connection is
/// counted when this is called, before the accept loop spawns the future and checks
/// `max_connections_per_worker` again. Counting inside the task let the loop start one
/// more accept before the new task first ran, so the cap admitted one connection too many.
///
/// A connection is served by two kinds of task in turn. While it waits for bytes (a new
/// connection, or one idle past `IDLE_GRACE` between requests) it is *parked*: a small
/// task holding only its socket and bookkeeping waits for it to become readable. Then a
/// *serving* task (whose future, with every read, exchange and answer inlined, is several
/// KiB) reads and serves requests until the connection closes or idles again, when it
/// parks it and ends, freeing that future. So thousands of idle keep-alive connections
/// cost little more than their sockets, and a busy connection, which never idles that
/// long, never pays for parking.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: ListenConfig,
    worker: Rc<WorkerCtx>,
) -> impl std::future::Future<Output = ()> {
    let guard = worker.connection_guard();
    let _ = stream.set_nodelay(true);
    let first_bytes_within = worker.generation().snapshot.config.server.head_timeout;
    let conn = Box::new(Conn {
        c: ClientConn::new(Stream::Plain(stream), peer),
        listener,
        worker,
        _guard: guard,
    });
    park(conn, first_bytes_within)
}

/// A connection and what serving it needs, handed from task to task. Boxed: its few
/// hundred bytes then move between tasks as a pointer, and `park`'s state would
/// otherwise hold it twice, as argument and as local (measured when boxed: 1,144 bytes
/// a parked connection before, 688 after).
pub(super) struct Conn {
    pub(super) c: ClientConn,
    pub(super) listener: ListenConfig,
    pub(super) worker: Rc<WorkerCtx>,
    /// Counts the connection as open for as long as it is, parked or served.
    pub(super) _guard: ConnectionGuard,
}

/// Waits up to `within` for the connection to become readable (or for idle connections
/// to be closed: a stop),
/// then hands it to a serving task; otherwise closes it. Kept small on purpose: this is
/// all an idle connection holds (no timer of its own, see `ParkedDeadlines`).
async fn park(mut conn: Box<Conn>, within: Duration) {
    let deadline = conn.worker.parked.add(Instant::now() + within);
    // Decrypted bytes above the socket (TLS) are a request on its way already.
    let buffered = conn.c.stream.has_buffered();
    let woke = buffered || {
        let mut readable = std::pin::pin!(conn.c.stream.tcp().readable(false));
        let mut drained = std::pin::pin!(conn.worker.close_idle.wait());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(r.is_ok());
            }
            if drained.as_mut().poll(cx).is_ready() || deadline.passed(cx) {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    };
    drop(deadline);
    if woke {
        monoio::spawn(serve_until_idle(conn));
    }
}

/// Serves the connection's requests; parks it again if it idles.
pub(super) async fn serve_until_idle(mut conn: Box<Conn>) {
    if let Some(within) = serve_requests(&mut conn).await {
        monoio::spawn(park(conn, within));
    }
}

/// How far the current head has arrived.
#[derive(Default)]
struct HeadProgress {
    /// Bytes already looked at for a line end.
    scanned: usize,
    /// When the head started to arrive; read from the clock only once a head turns out
    /// to be incomplete (a complete head in one read, the usual case, never needs it).
    started: Option<Instant>,
}

/// Why no head is ready.
enum NoHead {
    /// Closed, idle timeout or drain: close without a response.
    Gone,
    /// The head broke a limit while arriving (timeout, size).
    Refused(ProxyError),
    /// Idle past the grace: park the connection for at most this much longer.
    Park(Duration),
}

/// Serves requests until the connection closes (`None`) or idles between requests
/// (`Some`: park it for at most that long). Takes the connection's buffers back on
/// entry and gives them back when it parks.
async fn serve_requests(conn: &mut Conn) -> Option<Duration> {
    let Conn {
        c,
        listener,
        worker,
        ..
    } = conn;
    c.restore_buffers(&worker.spare_buffers);
    if listener.proxy_protocol && !c.preface_read {
        c.preface_read = true;
        match read_proxy_header(c, worker).await {
            Ok(()) => {}
            Err(NoPreface::Gone) => return None,
            Err(NoPreface::Refused(error)) => {
                let gen = worker.generation();
                let refused = Refused::unparsed(error, worker.ids.next_id());
                Box::pin(serve_refused(c, &gen, worker, &refused, Instant::now())).await;
                return None;
            }
        }
    }
    let (c, worker) = (c, &**worker);
    loop {
        c.path.clear();
        c.client_ip.clear();
        let mut progress = HeadProgress::default();
        let first = c.requests == 0;
        let after = loop {
            match read_more(c, worker, first, &mut progress).await {
                Ok(()) => {}
                Err(NoHead::Gone) => return None,
                Err(NoHead::Park(within)) => {
                    c.release_buffers(&worker.spare_buffers);
                    return Some(within);
                }
                Err(NoHead::Refused(error)) => {
                    c.status = 0;
                    c.log = Default::default();
                    let gen = worker.generation();
                    let refused = Refused::unparsed(error, worker.ids.next_id());
                    break Box::pin(serve_refused(c, &gen, worker, &refused, Instant::now())).await;
                }
            }
            // The generation current now, when the head is here, serves the request.
            let gen = worker.generation();
            let env = worker.env();
            let shed = worker.sheds_next_request();
            let mut begun = begin(c, &gen, &env, shed);
            let started = Instant::now();
            c.status = 0;
            c.log = Default::default();
            // The body, when a filter read it whole, and its share of the worker's buffer
            // budget: held until the exchange is over.
            let mut held = None;
            let resumed_reply;
            // By reference: the request stays where `begin` put it (moving it costs a copy).
            let (req, next) = match &mut begun {
                Begin::Incomplete => {
                    progress.scanned = c.rbuf.len();
                    progress.started.get_or_insert(started);
                    continue;
                }
                Begin::Refused(r) => {
                    if r.shed {
                        worker.metrics.borrow_mut().shed_requests += 1;
                    }
                    break Box::pin(serve_refused(c, &gen, worker, r, started)).await;
                }
                Begin::Forward(req) => (req, Next::Forward),
                Begin::Respond(req, reply) => (req, Next::Answer(&*reply, false)),
                Begin::Suspended(req, suspension) => {
                    match Box::pin(resume(c, req, suspension, &gen, &env, worker)).await {
                        Resumed::Forward(body) => {
                            held = body;
                            (req, Next::Forward)
                        }
                        Resumed::Respond { reply, body_read } => {
                            resumed_reply = reply;
                            (req, Next::Answer(&resumed_reply, body_read))
                        }
                        Resumed::Gone => (req, Next::Gone),
                    }
                }
            };
            let body = held.as_ref().map(|(b, _): &(Vec<u8>, _)| b.as_slice());
            let forwarded = match next {
                Next::Forward => Some(forward(c, req, &gen, worker, body).await),
                Next::Answer(..) | Next::Gone => None,
            };
            // The outcome is known: the chain hears it before any answer is written, so
            // the breaker never waits on a slow client.
            req.chain.on_done(&mut req.ctx, &env);
            let after = match (forwarded, next) {
                (Some(Ok(after)), _) => after,
                (Some(Err(f)), _) => Box::pin(answer_failure(c, &gen, worker, req, f)).await,
                (None, Next::Answer(reply, body_read)) => {
                    Box::pin(answer(c, &gen, worker, req, reply, body_read)).await
                }
                (None, _) => After::Drop,
            };
            let record = Record {
                route: Some(req.route),
                method: req.method,
                request_id: req.ctx.request_id,
                trace: req.ctx.trace,
                app: req.ctx.app_key(),
            };
            record_request(c, &gen, worker, &record, started);
            break after;
        };
        c.requests += 1;
        if after == After::Drop {
            return None;
        }
        // A drain that began after this response's head went out (saying keep-alive)
        // closes the connection only on a stop: at a handover the client may already be
        // sending its next request, which is served (with `Connection: close`).
        if after == After::Close || worker.close_idle.is_fired() {
            end_connection(c).await;
            return None;
        }
        c.shrink_idle_buffers();
    }
}

/// What a routed request needs once its chain is through.
#[derive(Clone, Copy)]
enum Next<'r> {
    /// To the upstream.
    Forward,
    /// The gateway answers; `true`: the whole body was read, so the connection is in step.
    Answer(&'r Reply, bool),
    /// The client went away.
    Gone,
}

/// The connection can carry on after a gateway answer only if no request body is left
/// unread.
fn answer_keep_alive(req: &Request, body_read: bool, worker: &WorkerCtx) -> bool {
    req.keep_alive && (req.framing == Framing::None || body_read) && !worker.draining()
}

/// Sends the answer a filter (or the pipeline) decided on.
async fn answer(
    c: &mut ClientConn,
    gen: &WorkerGen,
    worker: &WorkerCtx,
    req: &Request<'_>,
    reply: &Reply,
    body_read: bool,
) -> After {
    // A refusal on the upstream's behalf (an open circuit, a full isolation group) may
    // have a fallback.
    let fallback = match reply {
        Reply::Error(e) => {
            if e.side == Side::Internal {
                worker.warn_limited(|| format!("request {:?}: {e}", req.ctx.request_id));
            }
            let fallback = req.chain.on_error(e, &req.ctx);
            if fallback.is_some() {
                // The fallback's answer says nothing of the refusal; the log keeps it.
                c.log.detail = Some(e.message.clone());
            }
            fallback
        }
        Reply::Made(_) => None,
    };
    let keep_alive = answer_keep_alive(req, body_read, worker);
    let server = &gen.snapshot.config.server;
    respond(
        c,
        server,
        fallback.as_ref().unwrap_or(reply),
        answer_to(req, keep_alive),
    )
    .await
}

/// Answers a request whose upstream exchange failed: the route's fallback or the error,
/// unless part of the response already went out (then only a close is left).
async fn answer_failure(
    c: &mut ClientConn,
    gen: &WorkerGen,
    worker: &WorkerCtx,
    req: &Request<'_>,
    f: Failed,
) -> After {
    let route = &gen.snapshot.route(req.route).name;
    if f.error.side == Side::Upstream {
        worker.warn_limited(|| {
            format!(
                "route {route}: request {:?}: {}",
                req.ctx.request_id, f.error
            )
        });
    } else {
        log::debug!(
            "route {route}: request {:?}: {}",
            req.ctx.request_id,
            f.error
        );
    }
    if !f.respond {
        c.log.error = Some(f.error.kind.code());
        c.log.detail = Some(f.error.message);
        return After::Drop;
    }
    answer(c, gen, worker, req, &Reply::Error(f.error), false).await
}

fn answer_to<'a, 'g>(req: &'a Request<'g>, keep_alive: bool) -> Answer<'a, 'g> {
    Answer {
        request_id: req.ctx.request_id.as_str(),
        keep_alive,
        is_head: req.is_head,
        chain: Some((req.chain, &req.ctx)),
    }
}

/// Answers a request refused before its chain ran, and records it.
async fn serve_refused(
    c: &mut ClientConn,
    gen: &WorkerGen,
    worker: &WorkerCtx,
    r: &Refused,
    started: Instant,
) -> After {
    if r.error.side == Side::Internal && !r.shed {
        worker.warn_limited(|| format!("request {:?}: {}", r.request_id, r.error));
    }
    let a = Answer {
        request_id: r.request_id.as_str(),
        keep_alive: r.keep_alive && !worker.draining(),
        is_head: r.is_head,
        chain: None,
    };
    let after = super::respond::respond_error(c, &gen.snapshot.config.server, &r.error, a).await;
    let record = Record {
        route: r.route,
        method: r.method,
        request_id: r.request_id,
        trace: None,
        app: None,
    };
    record_request(c, gen, worker, &record, started);
    after
}

/// What the metrics and the access log say about a request beyond the connection's
/// bookkeeping.
struct Record<'a> {
    route: Option<crate::router::RouteId>,
    method: u8,
    request_id: RequestId,
    trace: Option<TraceContext>,
    app: Option<&'a str>,
}

/// Counts the request and writes its access-log line. A request the client left before
/// any response began is not counted.
fn record_request(
    c: &ClientConn,
    gen: &WorkerGen,
    worker: &WorkerCtx,
    r: &Record,
    started: Instant,
) {
    if c.status == 0 {
        return;
    }
    let snap = &gen.snapshot;
    let took = c
        .log
        .answered_at
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(started);
    let route = r
        .route
        .map(|id| (id.0 as usize, snap.route(id).name.as_str()));
    if snap.config.admin.metrics {
        worker
            .metrics
            .borrow_mut()
            .request(snap.generation, route, r.method, c.status, took);
    }
    if let Some(log) = &worker.log {
        if log.sample() {
            let finished = Finished {
                request_id: r.request_id,
                trace: r.trace,
                client: c.client_text(),
                app: r.app,
                route: route.map_or("", |(_, name)| name),
                method: crate::metrics::METHODS[r.method as usize],
                path: &c.path,
                status: c.status,
                total: took,
                log: &c.log,
                tls: c.tls.as_deref(),
            };
            log.line(|out| write_line(out, &finished));
        }
    }
}

/// Reads until the buffer holds bytes worth parsing as a head, within the head and
/// keep-alive timeouts.
async fn read_more(
    c: &mut ClientConn,
    worker: &WorkerCtx,
    first: bool,
    progress: &mut HeadProgress,
) -> Result<(), NoHead> {
    loop {
        let gen = worker.generation();
        let server = &gen.snapshot.config.server;
        if !c.rbuf.is_empty() {
            if worth_parsing(c.rbuf.data(), progress.scanned, &server.limits) {
                return Ok(());
            }
            progress.scanned = c.rbuf.len();
            progress.started.get_or_insert_with(Instant::now);
        }
        let timeout = match progress.started {
            Some(t) => server.head_timeout.saturating_sub(t.elapsed()),
            None if first => server.head_timeout,
            None => server.keepalive_timeout,
        };
        let idle = c.rbuf.is_empty();
        let timeout = timeout.max(Duration::from_millis(1));
        let max = server.limits.max_header_bytes;
        // Not held across the read: a reload during a long idle wait must not keep the
        // old generation alive, and the head is served by the one current when it lands.
        drop(gen);
        let result = if idle {
            match wait_idle(c, worker, timeout, max).await {
                Idle::Read(result) => result,
                Idle::Park(within) => return Err(NoHead::Park(within)),
                Idle::Gone => return Err(NoHead::Gone),
            }
        } else {
            c.rbuf.read_from(&mut c.stream, max, timeout).await
        };
        match result {
            Ok(0) => return Err(NoHead::Gone),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !idle => {
                return Err(NoHead::Refused(ProxyError::client(
                    ErrorKind::RequestTimeout,
                    "request head not received in time",
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                return Err(NoHead::Refused(ProxyError::client(
                    ErrorKind::HeadersTooLarge,
                    "request head is larger than the limit",
                )))
            }
            Err(_) => return Err(NoHead::Gone),
        }
    }
}

/// How long a connection waiting for its next request stays with its serving task (and
/// its buffers); after that it is parked (see `serve`). A client sending its next
/// request sooner, the common case under load, never notices.
const IDLE_GRACE: Duration = Duration::from_millis(250);

/// How a wait between requests ended.
enum Idle {
    /// A read finished (bytes, end of stream or an error).
    Read(std::io::Result<usize>),
    /// Idle past the grace: park, for at most this much longer.
    Park(Duration),
    /// Drained while nothing was on its way: close.
    Gone,
}

/// Waits up to `timeout` for the next request's first bytes, or `IDLE_GRACE` if that is
/// shorter (then the connection is to be parked). Between requests a stop closes the
/// connection (a handover's drain does not: see `WorkerCtx::close_idle`), unless a
/// request is already on its way: the read is cancelled, not
/// dropped, so bytes that arrived are still served (with `Connection: close`).
async fn wait_idle(c: &mut ClientConn, worker: &WorkerCtx, timeout: Duration, max: usize) -> Idle {
    let parking = timeout > IDLE_GRACE;
    let first_wait = if parking { IDLE_GRACE } else { timeout };
    let read = c
        .rbuf
        .read_from_cancelable(&mut c.stream, max, timeout, c.idle_cancel.handle());
    let mut read = std::pin::pin!(read);
    let graced = monoio::select! {
        r = &mut read => return Idle::Read(r),
        _ = worker.close_idle.wait() => false,
        _ = monoio::time::sleep(first_wait) => parking,
    };
    let _cancelled = std::mem::replace(&mut c.idle_cancel, Canceller::new()).cancel();
    match read.await {
        Ok(n) if n > 0 => Idle::Read(Ok(n)),
        // Cancelled with nothing read: idle for the grace period, or drained.
        _ if graced => Idle::Park(timeout.saturating_sub(IDLE_GRACE)),
        _ => Idle::Gone,
    }
}

/// Ends a connection the gateway closes after a response: a TLS one says so first
/// (`close_notify`, as RFC 8446 asks: without it a client cannot tell the end from a
/// truncation), then the FIN goes out at once (`shutdown`). Dropping the socket alone
/// closes it only at the driver's next submission (io_uring): under load the client
/// then often closes first and its side holds a TIME_WAIT, which made wrk's connects
/// cost ~50 µs more kernel time each (benches/load/RESULTS.md).
async fn end_connection(c: &mut ClientConn) {
    use super::wire::Wire;
    let _ = c.stream.shutdown().await;
}
