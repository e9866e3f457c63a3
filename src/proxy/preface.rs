//! What a connection says before its first request on a listener with
//! `proxy_protocol = true`: the PROXY protocol header naming the client the balancer
//! accepted. Read within the head timeout; what follows it stays in the read buffer for
//! the protocol spoken on the connection (on a TLS listener, the handshake's first
//! bytes, handed to rustls: `read_before_tls`).

use std::time::Instant;

use super::client::ClientConn;
use super::wire::Wire;
use super::worker::WorkerCtx;
use crate::error::{ErrorKind, ProxyError};
use crate::proxy_protocol::{parse, Preface, PrefaceError};

/// Why the connection cannot go on to its first request.
pub enum NoPreface {
    /// Closed or drained before the header was complete.
    Gone,
    /// Missing, malformed or too slow: answered as a bad request, then closed.
    Refused(ProxyError),
}

/// Reads and takes the PROXY protocol header: the connection's peer becomes the client it
/// names (unless it names none, as a balancer's own health check does).
pub async fn read_proxy_header(c: &mut ClientConn, worker: &WorkerCtx) -> Result<(), NoPreface> {
    let started = Instant::now();
    c.restore_buffers(&worker.spare_buffers);
    loop {
        match parse(c.rbuf.data()) {
            Ok(Some(preface)) => {
                if let Some(source) = preface.source {
                    c.set_peer(source);
                }
                if preface.client_tls {
                    c.scheme = "https";
                }
                c.rbuf.consume(preface.len);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(refused(&e)),
        }
        let (timeout, max) = {
            let gen = worker.generation();
            let server = &gen.snapshot.config.server;
            (
                server.head_timeout.saturating_sub(started.elapsed()),
                server.limits.max_header_bytes,
            )
        };
        if worker.close_idle.is_fired() {
            return Err(NoPreface::Gone);
        }
        match c.rbuf.read_from(&mut c.stream, max, timeout).await {
            Ok(0) => return Err(NoPreface::Gone),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(NoPreface::Refused(ProxyError::client(
                    ErrorKind::RequestTimeout,
                    "PROXY protocol header not received in time",
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                return Err(NoPreface::Refused(ProxyError::client(
                    ErrorKind::BadRequest,
                    "PROXY protocol header larger than server.max_header_bytes",
                )))
            }
            Err(_) => return Err(NoPreface::Gone),
        }
    }
}

fn refused(e: &PrefaceError) -> NoPreface {
    NoPreface::Refused(ProxyError::client(ErrorKind::BadRequest, e.to_string()))
}

/// Reads the PROXY protocol header at the start of a TLS listener's connection, before
/// the handshake: the header, and the bytes read after it (the start of the handshake).
/// At most `max` bytes are read; the caller bounds the time.
pub async fn read_before_tls(
    tcp: &mut monoio::net::TcpStream,
    max: usize,
) -> Result<(Preface, Vec<u8>), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    loop {
        match parse(&buf) {
            Ok(Some(preface)) => {
                buf.drain(..preface.len);
                return Ok((preface, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() == buf.capacity() {
            if buf.len() >= max {
                return Err("PROXY protocol header larger than server.max_header_bytes".into());
            }
            buf.reserve(buf.len().min(max - buf.len()));
        }
        let (res, back) = tcp.read_append(buf, None).await;
        buf = back;
        match res {
            Ok(0) => return Err("closed before the PROXY protocol header was complete".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
