//! The start of a connection on a `[tls]` listener: the TLS handshake, then the same
//! driver as plain connections (`conn`) with the scheme `https`.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::client::ClientConn;
use super::conn::{serve_until_idle, Conn};
use super::wire::Stream;
use super::worker::WorkerCtx;
use crate::config::ListenConfig;
use crate::tls::conn::{failure_reason, TlsConn};

/// Serves one accepted connection of a `[tls]` listener: the handshake first, within
/// `head_timeout` (a client that stalls it holds nothing but its socket and this
/// task), then as `conn::serve` does, with the scheme `https`. A failed handshake is closed
/// (rustls has sent its alert).
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
        let (Some(tls), within) = (
            gen.snapshot.config.tls.as_ref(),
            gen.snapshot.config.server.head_timeout,
        ) else {
            return;
        };
        let server = tls.server.clone();
        drop(gen);
        let accepted = monoio::time::timeout(within, TlsConn::accept(stream, server)).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                log::debug!("TLS handshake with {peer} failed: {e}");
                worker.metrics.borrow_mut().tls.failure(failure_reason(&e));
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
