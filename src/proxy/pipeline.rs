//! The pipeline runner: from a complete request head to a decision. Normalize the path,
//! route, refuse what the route does not take, run the route's chain, and write the head
//! the upstream will receive. The common case is synchronous, so the parsed head (which
//! borrows the read buffer) never lives across an `.await`; a chain that must wait for a
//! fact or read the body first continues in `resume` on an owned copy of the head.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::rc::Rc;

use super::buffered::{read_body, BodyError, BudgetShare};
use super::client::ClientConn;
use super::request::Request;
use super::upstream_head::{request_hash_key, write_upstream_head};
use super::worker::{WorkerCtx, WorkerGen};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::filters::{Env, Flow, OwnedRequest, Reply, RequestCtx, RequestView, Step};
use crate::http::forwarded_for::client_behind;
use crate::http::normalize::normalize_path;
use crate::http::{parse_request, Framing, RequestHead, MAX_HEADERS_LIMIT};
use crate::metrics::method_index;
use crate::router::{Match, RouteId};
use crate::snapshot::Snapshot;
use crate::tls::conn::TlsFacts;
use crate::trace::RequestId;

/// A request refused before its route's chain ran.
pub struct Refused {
    pub error: ProxyError,
    pub request_id: RequestId,
    /// The connection can carry on after the error response.
    pub keep_alive: bool,
    /// The request was HEAD: the error response gets no body.
    pub is_head: bool,
    /// The route it matched, if it got that far (for metrics and logs).
    pub route: Option<RouteId>,
    pub method: u8,
    /// Shed because the worker is behind: counted as such, and not warned about one by
    /// one (thousands a second would take the worker's once-a-second warning from the
    /// failures an operator needs to see).
    pub shed: bool,
}

impl Refused {
    /// Refused with nothing known of the request (an unreadable head, a timeout).
    pub fn unparsed(error: ProxyError, request_id: RequestId) -> Refused {
        Refused {
            error,
            request_id,
            keep_alive: false,
            is_head: false,
            route: None,
            method: method_index(""),
            shed: false,
        }
    }
}

/// What `begin` decided. Every outcome but `Incomplete` has consumed the head's bytes.
pub enum Begin<'g> {
    /// The head is not complete yet: read more.
    Incomplete,
    Refused(Refused),
    /// The chain let it through; the upstream head is in `c.up_head`.
    Forward(Request<'g>),
    /// A filter answered.
    Respond(Request<'g>, Reply),
    /// A filter waits for a fact or needs the body: go on with `resume`. (Boxed: the
    /// rare case should not make every `Begin` larger to move.)
    Suspended(Request<'g>, Box<Suspension>),
}

/// Where a chain stopped to wait, with a copy of the head that outlives the read buffer.
pub struct Suspension {
    head: OwnedRequest,
    /// The filter that stopped the chain.
    at: usize,
    /// It needs the body (else it waits for a fact).
    body: bool,
}

impl Suspension {
    fn at(view: &RequestView, at: usize, body: bool) -> Box<Suspension> {
        Box::new(Suspension {
            head: OwnedRequest::copy(view),
            at,
            body,
        })
    }
}

/// Parses the head at the start of `c.rbuf` and runs the route's chain as far as it goes
/// without waiting.
/// `shed`: the worker is behind and refuses this request once its head is parsed.
pub fn begin<'g>(c: &mut ClientConn, gen: &'g WorkerGen, env: &Env<'g>, shed: bool) -> Begin<'g> {
    let scratch = Scratch {
        shed,
        path: &mut c.path,
        up_head: &mut c.up_head,
        peer: c.peer.ip(),
        peer_text: &c.peer_ip,
        scheme: c.scheme,
        tls: c.tls.as_ref(),
        client_text: &mut c.client_ip,
    };
    let mut head_len = 0;
    let begun = begin_head(c.rbuf.data(), scratch, &gen.snapshot, env, &mut head_len);
    c.rbuf.consume(head_len);
    begun
}

/// Where `begin_head` writes, and where the request comes from.
pub struct Scratch<'c> {
    /// The worker is shedding load and refuses this request (503 `overloaded`) as soon
    /// as its head is parsed, before the route's chain runs: the cheapest answer that
    /// keeps the connection in step.
    pub shed: bool,
    /// The normalized path.
    pub path: &'c mut String,
    /// The upstream request head.
    pub up_head: &'c mut Vec<u8>,
    /// The connection's peer (see `RequestView::peer_text`).
    pub peer: IpAddr,
    pub peer_text: &'c str,
    pub scheme: &'static str,
    /// What the connection's TLS handshake settled (`None`: plain HTTP).
    pub tls: Option<&'c Rc<TlsFacts>>,
    /// Set to the client's address when a trusted proxy forwarded for someone else;
    /// left empty when the client is the peer.
    pub client_text: &'c mut String,
}

/// `begin` on bytes rather than a connection (benches drive it). `consumed` is set to
/// the length of the head (left at 0 when incomplete or unparsable). An out-parameter,
/// not a tuple: the decision is large, and returned in place it is not copied.
pub fn begin_head<'g>(
    data: &[u8],
    c: Scratch<'_>,
    snap: &'g Snapshot,
    env: &Env<'g>,
    consumed: &mut usize,
) -> Begin<'g> {
    let mut storage = [const { MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
    let head = match parse_request(data, &mut storage, &snap.config.server.limits) {
        Ok(Some(h)) => h,
        Ok(None) => return Begin::Incomplete,
        Err(error) => return Begin::Refused(Refused::unparsed(error, env.ids.next_id())),
    };
    *consumed = head.head_len;
    route_and_run(&head, c, snap, env)
}

fn route_and_run<'g>(
    head: &RequestHead,
    c: Scratch,
    snap: &'g Snapshot,
    env: &Env<'g>,
) -> Begin<'g> {
    let server = &snap.config.server;
    // Only a trusted proxy's X-Forwarded-For names the client (no list: no walk).
    let peer_trusted = !server.trusted_proxies.is_empty() && server.trusts(c.peer);
    let client_ip = if peer_trusted {
        client_behind(c.peer, head.headers, |ip| server.trusts(ip))
    } else {
        c.peer
    };
    c.client_text.clear();
    if client_ip != c.peer {
        let _ = write!(c.client_text, "{client_ip}");
    }
    let request_id = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| RequestId::from_header(h.value))
        .unwrap_or_else(|| env.ids.next_id());
    let method = method_index(head.method);
    let refused = |error: ProxyError, route: Option<RouteId>| Refused {
        keep_alive: head.keep_alive
            && !error.kind.closes_connection()
            && head.framing == Framing::None,
        is_head: head.method == "HEAD",
        error,
        request_id,
        route,
        method,
        shed: false,
    };
    let refuse = |error, route| Begin::Refused(refused(error, route));
    if c.shed {
        let error = ProxyError::new(
            ErrorKind::Overloaded,
            Side::Internal,
            "the worker is behind (its event loop runs later than server.max_loop_delay)",
        )
        .with_headers(b"retry-after: 1\r\n".to_vec());
        return Begin::Refused(Refused {
            shed: true,
            ..refused(error, None)
        });
    }
    let (raw_path, query) = match head.target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (head.target, None),
    };
    let sni = c.tls.map(|t| t.sni.as_deref().unwrap_or(""));
    if let Some(error) = misdirected(snap, sni, head.host) {
        return refuse(error, None);
    }
    if let Err(e) = normalize_path(raw_path.as_bytes(), c.path) {
        let message = format!("invalid request path: {e}");
        return refuse(ProxyError::client(ErrorKind::BadRequest, message), None);
    }
    let view = RequestView {
        method: head.method,
        authority: head.host,
        path: c.path,
        query,
        headers: head.headers,
        client_ip,
        client_ip_text: if c.client_text.is_empty() {
            c.peer_text
        } else {
            c.client_text
        },
        peer_text: c.peer_text,
        peer_trusted,
        scheme: c.scheme,
        has_body: head.framing != Framing::None,
    };
    let route = match route(snap, &view) {
        Ok(id) => id,
        Err(error) => return refuse(error, None),
    };
    // From here on a refusal is counted on the route it matched.
    let rc = snap.route(route);
    if let Framing::Length(n) = head.framing {
        if n > rc.max_body_bytes {
            let message = format!(
                "request body of {n} bytes exceeds the limit of {} bytes",
                rc.max_body_bytes
            );
            return refuse(
                ProxyError::client(ErrorKind::PayloadTooLarge, message),
                Some(route),
            );
        }
    }
    let upstream = snap.upstream(rc.upstream);
    let mut req = Request {
        framing: head.framing,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        is_head: head.method == "HEAD",
        retry_safe: head.framing == Framing::None
            && matches!(
                head.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
        http10: head.http10,
        connection: head.connection,
        method,
        route,
        upstream: rc.upstream,
        hash_key: match &upstream.balance {
            crate::config::Balance::Hash(on) => request_hash_key(&view, on, view.client_ip),
            _ => 0,
        },
        max_body: rc.max_body_bytes,
        chain: snap.chain(route),
        ctx: RequestCtx::new(route, request_id, view.client_ip),
    };
    req.ctx.tls = c.tls.cloned();
    match req.chain.on_request(0, &view, &mut req.ctx, env) {
        Step::Forward => {
            write_upstream_head(c.up_head, &view, &req, rc, &upstream.name);
            Begin::Forward(req)
        }
        Step::Respond(reply) => Begin::Respond(req, reply),
        Step::Wait { at } => Begin::Suspended(req, Suspension::at(&view, at, false)),
        Step::ReadBody { at } => Begin::Suspended(req, Suspension::at(&view, at, true)),
    }
}

/// On a TLS connection, a request for a host that the certificate chosen by the
/// handshake's SNI does not name is refused (421): one tenant's certificate never fronts
/// another tenant's host. Judged against the current generation's certificates.
fn misdirected(snap: &Snapshot, sni: Option<&str>, host: &[u8]) -> Option<ProxyError> {
    let (sni, tls) = (sni?, snap.config.tls.as_ref()?);
    let cert = tls.resolver.pick((!sni.is_empty()).then_some(sni));
    let served = std::str::from_utf8(host).is_ok_and(|h| tls.resolver.serves(cert, h));
    if host.is_empty() || served {
        return None;
    }
    Some(ProxyError::client(
        ErrorKind::Misdirected,
        format!(
            "host {:?} is not served by the certificate of this TLS connection",
            String::from_utf8_lossy(host)
        ),
    ))
}

/// The route for a request, or why there is none. `TRACE` echoes the request
/// (credentials included) back to the caller, so it is refused unless a route lists it.
/// A CORS preflight is routed by the method it asks about: `OPTIONS` itself is rarely
/// listed, and the route's CORS filter answers it.
fn route(snap: &Snapshot, view: &RequestView) -> Result<RouteId, ProxyError> {
    let found = match snap
        .router
        .lookup(view.authority, view.method.as_bytes(), view.path)
    {
        // Only a real preflight (with `Origin`): anything else keeps the route's methods.
        Match::MethodNotAllowed if view.method == "OPTIONS" && view.header("origin").is_some() => {
            match view.header("access-control-request-method") {
                Some(asked) => match snap.router.lookup(view.authority, asked, view.path) {
                    Match::Found(id) if snap.route(id).cors.is_some() => Match::Found(id),
                    _ => Match::MethodNotAllowed,
                },
                None => Match::MethodNotAllowed,
            }
        }
        other => other,
    };
    let not_allowed = || {
        ProxyError::client(
            ErrorKind::MethodNotAllowed,
            format!("method {} is not allowed on {}", view.method, view.path),
        )
    };
    match found {
        Match::Found(id) => {
            let listed = || snap.route(id).methods.iter().any(|m| m == view.method);
            if view.method == "TRACE" && !listed() {
                return Err(not_allowed());
            }
            Ok(id)
        }
        Match::MethodNotAllowed => Err(not_allowed()),
        Match::NotFound => Err(ProxyError::client(
            ErrorKind::RouteNotFound,
            format!("no route for {}", view.path),
        )),
    }
}

/// How a suspended chain ended.
pub enum Resumed<'w> {
    /// Let through; the upstream head is in `c.up_head`, and the body, when a filter
    /// read it, with its share of the worker's buffer budget.
    Forward(Option<(Vec<u8>, BudgetShare<'w>)>),
    /// Answered by a filter or refused; `body_read`: the whole body was consumed, so the
    /// connection is still in step.
    Respond { reply: Reply, body_read: bool },
    /// The client went away while the body was read.
    Gone,
}

/// Runs a suspended chain to its end: awaits the facts filters wait for, reads the body
/// when one asks for it, and writes the upstream head from the owned copy.
pub async fn resume<'g, 'w>(
    c: &mut ClientConn,
    req: &mut Request<'g>,
    suspension: &Suspension,
    gen: &'g WorkerGen,
    env: &Env<'g>,
    worker: &'w WorkerCtx,
) -> Resumed<'w> {
    let head = &suspension.head;
    let mut at = suspension.at;
    let mut wants_body = suspension.body;
    let headers = head.header_list();
    let view = head.view(&headers);
    let mut body = None;
    loop {
        if wants_body {
            if body.is_none() {
                let server = &gen.snapshot.config.server;
                let read = read_body(
                    c,
                    req.framing,
                    req.expect_continue,
                    req.max_body,
                    server,
                    &worker.buffered,
                    gen.snapshot.config.apps.max_buffered_bytes,
                )
                .await;
                match read {
                    Ok(held) => body = Some(held),
                    Err(BodyError {
                        client_gone: true, ..
                    }) => return Resumed::Gone,
                    Err(BodyError { error, .. }) => {
                        return Resumed::Respond {
                            reply: error.into(),
                            body_read: false,
                        }
                    }
                }
            }
            let bytes = body.as_ref().map_or(&[][..], |(b, _)| b.as_slice());
            if let Some(reply) = req.chain.on_body(at, bytes, &mut req.ctx, env) {
                return Resumed::Respond {
                    reply,
                    body_read: true,
                };
            }
        } else {
            match req.chain.wait(at, &view, &mut req.ctx, env).await {
                Flow::Continue => {}
                Flow::Respond(reply) => {
                    return Resumed::Respond {
                        reply,
                        body_read: body.is_some(),
                    }
                }
                Flow::Wait => continue,
                Flow::ReadBody => {
                    wants_body = true;
                    continue;
                }
            }
        }
        match req.chain.on_request(at + 1, &view, &mut req.ctx, env) {
            Step::Forward => {
                let snap = &gen.snapshot;
                let rc = snap.route(req.route);
                let upstream = snap.upstream(req.upstream);
                write_upstream_head(&mut c.up_head, &view, req, rc, &upstream.name);
                return Resumed::Forward(body);
            }
            Step::Respond(reply) => {
                return Resumed::Respond {
                    reply,
                    body_read: body.is_some(),
                }
            }
            Step::Wait { at: next } => {
                at = next;
                wants_body = false;
            }
            Step::ReadBody { at: next } => {
                at = next;
                wants_body = true;
            }
        }
    }
}
