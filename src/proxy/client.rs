//! One client connection's socket, buffers and per-request bookkeeping, shared by the
//! connection driver, the pipeline and the upstream exchange (none of which owns the
//! others).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::io::Canceller;

use super::io::{ReadBuf, SpareBuffers};
use super::wire::Stream;

/// Initial size of a client connection's read buffer.
pub const CLIENT_BUF: usize = 8 * 1024;

/// Scratch buffers larger than this are given back between requests.
const KEEP_SCRATCH: usize = 16 * 1024;

/// Initial sizes of the upstream head, response scratch and path buffers.
const SCRATCH: usize = 1024;
const PATH: usize = 128;

/// One client connection's buffers. `up_head` carries the upstream request head;
/// `scratch` the client-bound response head and re-encoded body.
pub struct ClientConn {
    pub stream: Stream,
    /// Where the connection comes from: its TCP peer, or the client a PROXY protocol
    /// header named.
    pub peer: SocketAddr,
    pub rbuf: ReadBuf,
    pub up_head: Vec<u8>,
    pub scratch: Vec<u8>,
    /// The current request's normalized path.
    pub path: String,
    /// The peer's address as text, formatted once per connection for X-Forwarded-For.
    pub peer_ip: String,
    /// The current request's client as text when it is not the peer (a trusted proxy
    /// forwarded for it); empty when it is the peer.
    pub client_ip: String,
    /// `http`, or `https` on a TLS listener or when a PROXY protocol header said the
    /// client used TLS.
    pub scheme: &'static str,
    /// What the TLS handshake settled, on a `[tls]` listener.
    pub tls: Option<std::rc::Rc<crate::tls::conn::TlsFacts>>,
    /// Interrupts the wait for the next request when the worker drains.
    pub idle_cancel: Canceller,
    /// The status of the response to the current request (0 until one is on its way).
    pub status: u16,
    /// What the access log says about the current request beyond its head.
    pub log: LogFields,
    /// The buffers were given back while idle (`release_buffers`), or never taken.
    released: bool,
    /// Requests served so far (the first waits `head_timeout` for its first byte, later
    /// ones `keepalive_timeout`).
    pub requests: u64,
    /// The PROXY protocol header was read (on listeners that expect one).
    pub preface_read: bool,
}

/// The current request's upstream exchange and answer, for the access log.
#[derive(Debug, Default, Clone)]
pub struct LogFields {
    pub upstream: Option<SocketAddr>,
    /// From sending to the upstream to its response head.
    pub upstream_time: Option<Duration>,
    /// Response bytes written to the client, head included.
    pub bytes: u64,
    /// The error code answered (or stood in for by a fallback).
    pub error: Option<&'static str>,
    /// What went wrong, in the operator's words (upstream names, addresses, OS errors):
    /// never sent to the client, whose error body says it in safe words.
    pub detail: Option<Cow<'static, str>>,
    /// When a gateway-made response was written (before lingering on a closing
    /// connection, which is not the request's time).
    pub answered_at: Option<Instant>,
}

impl ClientConn {
    pub fn new(stream: Stream, peer: SocketAddr) -> Self {
        ClientConn {
            stream,
            peer,
            // No buffers until the client sends something (`restore_buffers`).
            rbuf: ReadBuf::default(),
            up_head: Vec::new(),
            scratch: Vec::new(),
            path: String::new(),
            peer_ip: peer.ip().to_string(),
            client_ip: String::new(),
            scheme: "http",
            tls: None,
            idle_cancel: Canceller::new(),
            status: 0,
            log: LogFields::default(),
            released: true,
            requests: 0,
            preface_read: false,
        }
    }

    /// Takes the client a PROXY protocol header named as the connection's peer.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
        self.peer_ip = peer.ip().to_string();
    }

    /// The current request's client address as text.
    pub fn client_text(&self) -> &str {
        if self.client_ip.is_empty() {
            &self.peer_ip
        } else {
            &self.client_ip
        }
    }

    /// Between requests, buffers that grew for a large body or head go back to their
    /// initial sizes: thousands of idle keep-alive connections must stay cheap.
    pub fn shrink_idle_buffers(&mut self) {
        self.rbuf.shrink_if_empty(CLIENT_BUF);
        for v in [&mut self.up_head, &mut self.scratch] {
            if v.capacity() > KEEP_SCRATCH {
                *v = Vec::with_capacity(SCRATCH);
            }
        }
    }

    /// A connection that has been idle a while gives its buffers back (the read buffer to
    /// the worker's spare list): thousands of idle keep-alive connections then cost
    /// little more than their sockets. Only while nothing is buffered.
    pub fn release_buffers(&mut self, spare: &SpareBuffers) {
        if !self.rbuf.is_empty() {
            return;
        }
        spare.put(std::mem::take(&mut self.rbuf));
        self.stream.release_buffers();
        self.up_head = Vec::new();
        self.scratch = Vec::new();
        self.path = String::new();
        self.released = true;
    }

    /// Takes buffers again once the client sends something.
    pub fn restore_buffers(&mut self, spare: &SpareBuffers) {
        if !self.released {
            return;
        }
        self.rbuf = spare.take();
        self.up_head = Vec::with_capacity(SCRATCH);
        self.scratch = Vec::with_capacity(SCRATCH);
        self.path = String::with_capacity(PATH);
        self.released = false;
    }
}

/// Spare client read buffers a worker keeps (2 MiB).
pub const SPARE_CLIENT_BUFFERS: usize = 256;

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepAlive,
    /// Close, saying the response ended (TLS `close_notify`, then the FIN at once).
    Close,
    /// Close as it is: the response was cut short (a TLS client must see a truncation,
    /// not an end), the client is gone, or the goodbye was already said.
    Drop,
}
