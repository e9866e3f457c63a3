//! The start of a connection on a `[tls]` listener: the TLS handshake, then the same
//! driver as plain connections (`conn`) with the scheme `https`.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::client::ClientConn;
use super::conn::{serve_until_idle, Conn};
use super::preface::read_before_tls;
use super::wire::Stream;
use super::worker::WorkerCtx;
use crate::config::ListenConfig;
use crate::tls::conn::{failure_reason, TlsConn};

/// Serves one accepted connection of a `[tls]` listener: the PROXY protocol header (on a
/// listener with `proxy_protocol`) and the handshake first, together within
/// `head_timeout` (a client that stalls them holds nothing but its socket and this
/// task), then as `conn::serve` does, with the scheme `https`. A failed handshake is
/// closed (rustls has sent its alert); so is a missing or malformed PROXY header (no
/// HTTP can be spoken before the handshake).
pub fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    listener: ListenConfig,
    worker: Rc<WorkerCtx>,
) -> impl std::future::Future<Output = ()> {
    let guard = worker.connection_guard();
    async move {
        let _ = stream.set_nodelay(true);
        let gen = worker.generation();
        let (Some(tls), server) = (
            gen.snapshot.config.tls.as_ref(),
            &gen.snapshot.config.server,
        ) else {
            return;
        };
        let (config, within, max_head) = (
            tls.server.clone(),
            server.head_timeout,
            server.limits.max_header_bytes,
        );
        drop(gen);
        let mut peer = peer;
        // The PROXY header and the handshake share `head_timeout`.
        let accept = async {
            let mut stream = stream;
            let mut already = Vec::new();
            if listener.proxy_protocol {
                let (preface, rest) = read_before_tls(&mut stream, max_head)
                    .await
                    .map_err(|why| (why, "proxy_protocol"))?;
                peer = preface.source.unwrap_or(peer);
                already = rest;
            }
            TlsConn::accept_after(stream, config, &already)
                .await
                .map_err(|e| (e.to_string(), failure_reason(&e)))
        };
        let tls = match monoio::time::timeout(within, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err((why, reason))) => {
                log::debug!("TLS handshake with {peer} failed: {why}");
                worker.metrics.borrow_mut().tls.failure(reason);
                return;
            }
            Err(_) => {
                log::debug!("TLS handshake with {peer} timed out");
                worker.metrics.borrow_mut().tls.failure("timeout");
                return;
            }
        };
        let facts = Rc::new(tls.facts());
        {
            let counts = &mut worker.metrics.borrow_mut().tls;
            if facts.resumed {
                counts.resumed += 1;
            } else {
                counts.full += 1;
            }
        }
        let mut c = ClientConn::new(Stream::Tls(Box::new(tls)), peer);
        c.scheme = "https";
        c.tls = Some(facts);
        // (Read before the handshake, on a listener with `proxy_protocol`.)
        c.preface_read = true;
        let conn = Box::new(Conn {
            c,
            listener,
            worker,
            _guard: guard,
        });
        // The request usually follows the handshake at once: serve, do not park.
        monoio::spawn(serve_until_idle(conn));
    }
}
