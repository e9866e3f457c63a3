//! What the proxy reads and writes: a byte stream driven with owned buffers, either a
//! plain socket or a TLS connection over one (`Stream`), toward a client or an upstream.
//! The buffers, the relay, the connection driver and the upstream exchange take any
//! `Wire`, so TLS on either side changes none of them.

use std::future::Future;
use std::io;
use std::ops::Range;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use monoio::net::TcpStream;

use crate::tls::conn::TlsConn;

pub trait Wire {
    /// Reads once, appending to `vec` (up to its capacity, which the caller reserved).
    /// `cancel` interrupts the wait without losing bytes that arrived.
    fn read_append(
        &mut self,
        vec: Vec<u8>,
        cancel: Option<CancelHandle>,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Writes all of `vec[range]`.
    fn write_range(
        &mut self,
        vec: Vec<u8>,
        range: Range<usize>,
    ) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;

    /// Appends what has already arrived, at most `want` bytes, without waiting (a plain
    /// socket: one `recv(MSG_DONTWAIT)` outside the driver; TLS: decrypted bytes only):
    /// `Ok(0)` is the end of the stream, `WouldBlock` means nothing is there yet.
    fn read_ready(&mut self, vec: &mut Vec<u8>, want: usize) -> io::Result<usize>;

    /// Ends the sending side (TLS: `close_notify` first).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
}

impl Wire for TcpStream {
    async fn read_append(
        &mut self,
        vec: Vec<u8>,
        cancel: Option<CancelHandle>,
    ) -> (io::Result<usize>, Vec<u8>) {
        let (len, cap) = (vec.len(), vec.capacity());
        let buf = vec.slice_mut(len..cap);
        let (res, slice) = match cancel {
            Some(handle) => self.cancelable_read(buf, handle).await,
            None => self.read(buf).await,
        };
        (res, slice.into_inner())
    }

    async fn write_range(
        &mut self,
        vec: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        let (res, slice) = self.write_all(vec.slice(range)).await;
        (res.map(|_| ()), slice.into_inner())
    }

    fn read_ready(&mut self, vec: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        crate::sys::recv_ready(self.as_raw_fd(), vec, want)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteRent::shutdown(self).await
    }
}

/// A connection's stream, to a client or an upstream: plain, or after a TLS handshake.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

impl Stream {
    /// The socket underneath (to wait for readability while parked).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.tcp(),
        }
    }

    /// Whether something already arrived above the socket (decrypted TLS records, or a
    /// `close_notify`): the connection is not idle (nor clean, for a pooled upstream
    /// one) even if its socket is.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.has_plaintext() || t.peer_closed(),
        }
    }

    /// Gives back buffers an idle connection need not hold.
    pub fn release_buffers(&mut self) {
        if let Stream::Tls(t) = self {
            t.release_buffers();
        }
    }
}

impl Wire for Stream {
    async fn read_append(
        &mut self,
        mut vec: Vec<u8>,
        cancel: Option<CancelHandle>,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(s) => s.read_append(vec, cancel).await,
            Stream::Tls(t) => {
                let room = vec.capacity() - vec.len();
                let res = t.read_into_cancelable(&mut vec, room, cancel).await;
                (res, vec)
            }
        }
    }

    async fn write_range(
        &mut self,
        vec: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Stream::Plain(s) => s.write_range(vec, range).await,
            Stream::Tls(t) => {
                let res = t.write_all(&vec[range]).await;
                (res, vec)
            }
        }
    }

    fn read_ready(&mut self, vec: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_ready(vec, want),
            Stream::Tls(t) => {
                let room = (vec.capacity() - vec.len()).min(want);
                t.read_ready(vec, room)
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => Wire::shutdown(s).await,
            Stream::Tls(t) => {
                close_notify(t).await?;
                AsyncWriteRent::shutdown(t.tcp_mut()).await
            }
        }
    }
}

/// How long sending `close_notify` may wait for room in the socket: a client that stopped
/// reading must not hold the connection open.
const CLOSE_NOTIFY_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends `close_notify`, within `CLOSE_NOTIFY_WITHIN`.
pub async fn close_notify(tls: &mut TlsConn) -> io::Result<()> {
    match monoio::time::timeout(CLOSE_NOTIFY_WITHIN, tls.close()).await {
        Ok(res) => res,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}
