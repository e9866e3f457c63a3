//! One TLS connection over a monoio `TcpStream`: the server side of a client's
//! connection (`accept`) or the client side of one to an upstream (`connect`). rustls
//! holds the protocol state; this moves ciphertext between it and the socket with owned
//! buffers (monoio's ownership-passing I/O) and hands plaintext out by appending to the
//! caller's buffer (`read_into`) and in by `write_all`, so the connection driver, the
//! relay and the upstream exchange keep their own buffers and limits for TLS exactly as
//! for plain TCP.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::identity::ClientIdentity;

/// Ciphertext read from the socket at once: one TLS record and its overhead.
const CIPHER_READ: usize = 16 * 1024 + 512;

/// What a filter, the access log or metrics may know of a connection's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: &'static str,
    pub cipher: &'static str,
    /// The name the client asked for (SNI), lowercase (`None` on the client side).
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// The session was resumed (no full handshake).
    pub resumed: bool,
    /// The verified client certificate's identity, when the client presented one (on a
    /// listener with `client_ca`).
    pub client: Option<ClientIdentity>,
}

pub struct TlsConn {
    tcp: TcpStream,
    session: Connection,
    /// Ciphertext on its way in or out; emptied (not kept) by `release_buffers`.
    cipher: Vec<u8>,
    /// The peer sent `close_notify`.
    peer_closed: bool,
}

impl TlsConn {
    /// Runs the server side of a handshake on `tcp`. A client that fails it gets rustls's
    /// alert before the error is returned. The caller bounds it with a timeout.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsConn> {
        Self::accept_after(tcp, config, &[]).await
    }

    /// `accept` for a connection whose first bytes were already read from the socket
    /// (those after a PROXY protocol header): rustls gets them before anything else.
    pub async fn accept_after(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        already: &[u8],
    ) -> io::Result<TlsConn> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut conn = TlsConn {
            tcp,
            session: session.into(),
            cipher: Vec::new(),
            peer_closed: false,
        };
        conn.take_in(already).await?;
        conn.handshake().await?;
        Ok(conn)
    }

    /// Runs the client side of a handshake with `name` (sent as SNI when it is a DNS
    /// name, and what the server's certificate must be valid for). A certificate that
    /// does not verify fails it with an `InvalidData` error naming the reason. The
    /// caller bounds it with a timeout.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsConn> {
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut conn = TlsConn {
            tcp,
            session: session.into(),
            cipher: Vec::new(),
            peer_closed: false,
        };
        conn.handshake().await?;
        Ok(conn)
    }

    /// Drives the handshake to its end. What rustls queues once it is complete is sent
    /// on the client side (its Finished), but held on the server side: the session
    /// ticket then leaves with the first response, in one segment with it, instead of
    /// one segment of its own (fewer segments for the client to acknowledge).
    async fn handshake(&mut self) -> io::Result<()> {
        while self.session.is_handshaking() {
            self.flush().await?;
            if self.session.wants_read() && self.receive(None).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        match self.session {
            Connection::Client(_) => self.flush().await,
            Connection::Server(_) => Ok(()),
        }
    }

    /// The socket underneath (to wait for readability while parked).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn facts(&self) -> TlsFacts {
        let s = &self.session;
        TlsFacts {
            version: match s.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1_3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1_2",
                _ => "unknown",
            },
            cipher: s
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("unknown"),
            sni: match s {
                Connection::Server(s) => s.server_name().map(str::to_ascii_lowercase),
                Connection::Client(_) => None,
            },
            alpn: s
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            resumed: matches!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            // (On the client side the peer is an upstream, not a client.)
            client: match s {
                Connection::Server(s) => s
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(ClientIdentity::of),
                Connection::Client(_) => None,
            },
        }
    }

    /// Whether decrypted bytes are waiting: the connection is not idle even if its
    /// socket has nothing to read.
    pub fn has_plaintext(&mut self) -> bool {
        matches!(self.session.reader().fill_buf(), Ok(b) if !b.is_empty())
    }

    /// Whether the peer said it is done (`close_notify`).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Appends at most `max` bytes of plaintext to `out`, waiting for the socket if none
    /// is decrypted yet. `Ok(0)`: the peer closed: with `close_notify`, or, for a client
    /// of ours, without it too. An upstream's stream that ends without `close_notify`
    /// is an `UnexpectedEof` error: a response delimited by the close must not be
    /// taken whole when someone on the path cut the TCP connection.
    pub async fn read_into(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.read_into_cancelable(out, max, None).await
    }

    /// `read_into` whose socket read `cancel` can interrupt: ciphertext that arrived is
    /// still given to rustls (nothing is lost); with no plaintext, the cancellation is
    /// returned as an error.
    pub async fn read_into_cancelable(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        cancel: Option<CancelHandle>,
    ) -> io::Result<usize> {
        loop {
            match self.session.reader().fill_buf() {
                Ok(chunk) if !chunk.is_empty() => {
                    let n = chunk.len().min(max);
                    out.extend_from_slice(&chunk[..n]);
                    self.session.reader().consume(n);
                    return Ok(n);
                }
                // A clean close (close_notify).
                Ok(_) => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Anything rustls must say first (a key update, an alert) goes out.
            self.flush().await?;
            if self.receive(cancel.clone()).await? == 0 {
                // (A `close_notify` would have ended the loop above.)
                return match self.session {
                    Connection::Client(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Connection::Server(_) => Ok(0),
                };
            }
        }
    }

    /// Appends plaintext that is already decrypted, without waiting: `WouldBlock` when
    /// there is none.
    pub fn read_ready(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let chunk = self.session.reader().into_first_chunk()?;
        let n = chunk.len().min(max);
        out.extend_from_slice(&chunk[..n]);
        self.session.reader().consume(n);
        Ok(n)
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.session.writer().write(data)?;
            data = &data[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends `close_notify` (then the caller closes the socket).
    pub async fn close(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.flush().await
    }

    /// Frees the ciphertext buffer (a parked connection holds none).
    pub fn release_buffers(&mut self) {
        self.cipher = Vec::new();
    }

    /// Sends whatever rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            let mut buf = std::mem::take(&mut self.cipher);
            buf.clear();
            self.session.write_tls(&mut buf)?;
            let (res, buf) = self.tcp.write_all(buf).await;
            self.cipher = buf;
            res?;
        }
        Ok(())
    }

    /// Reads ciphertext once and gives it to rustls. Returns the bytes read (0: the
    /// socket closed). A protocol error sends rustls's alert, then fails.
    async fn receive(&mut self, cancel: Option<CancelHandle>) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.cipher);
        buf.clear();
        buf.reserve(CIPHER_READ);
        let (res, buf) = match cancel {
            Some(c) => self.tcp.cancelable_read(buf, c).await,
            None => self.tcp.read(buf).await,
        };
        let n = res?;
        let result = self.take_in(&buf[..n]).await;
        self.cipher = buf;
        result.map(|()| n)
    }

    /// Gives ciphertext to rustls. A protocol error sends rustls's alert, then fails.
    async fn take_in(&mut self, mut rest: &[u8]) -> io::Result<()> {
        while !rest.is_empty() {
            if self.session.read_tls(&mut rest)? == 0 {
                // rustls holds as much undelivered plaintext as it will take.
                return Err(io::Error::other("TLS input refused: plaintext buffer full"));
            }
            match self.session.process_new_packets() {
                Ok(state) => self.peer_closed |= state.peer_has_closed(),
                Err(e) => {
                    // The alert describing the error is queued; the peer should see it.
                    let _ = self.flush().await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
        Ok(())
    }
}

/// Why a handshake failed, as a metric label (one of `metrics::TLS_FAILURE_REASONS`
/// but `timeout`, which the caller sees for itself).
pub fn failure_reason(e: &io::Error) -> &'static str {
    use rustls::{Error, PeerIncompatible};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => "closed",
            _ => "other",
        };
    };
    match tls {
        // Not TLS at all (plain HTTP on a TLS port) or garbled records.
        Error::InvalidMessage(_) => "malformed",
        Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        Error::InvalidCertificate(_) | Error::NoCertificatesPresented => "client_certificate",
        _ => "other",
    }
}
