//! Buffers and timed I/O over monoio's ownership-passing API: a read buffer that keeps
//! unconsumed bytes (pipelined requests, body bytes that arrived with a head) and
//! helpers that bound every read and write with a timeout.

use std::io;
use std::time::Duration;

use monoio::io::CancelHandle;
use monoio::net::TcpStream;

use super::wire::Wire;

/// Read buffers of one size kept for reuse: a connection that goes idle puts its buffer
/// here and one that wakes (or opens) takes one, a pop rather than an allocation.
/// Bounded: beyond `most`, and for buffers that grew past `size`, they are freed.
pub struct SpareBuffers {
    size: usize,
    most: usize,
    list: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl SpareBuffers {
    pub fn new(size: usize, most: usize) -> Self {
        SpareBuffers {
            size,
            most,
            list: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// An empty buffer of `size` capacity.
    pub fn take(&self) -> ReadBuf {
        ReadBuf::from_vec(self.take_vec())
    }

    pub fn put(&self, buf: ReadBuf) {
        self.put_vec(buf.vec);
    }

    /// An empty `Vec` of `size` capacity.
    pub fn take_vec(&self) -> Vec<u8> {
        let vec = self.list.borrow_mut().pop();
        vec.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Keeps `vec` (emptied) for the next `take`, unless enough are kept or it grew.
    pub fn put_vec(&self, mut vec: Vec<u8>) {
        let mut list = self.list.borrow_mut();
        if list.len() < self.most && vec.capacity() == self.size {
            vec.clear();
            list.push(vec);
        }
    }
}

/// Bytes read from a socket and not yet consumed: `vec[pos..]`.
#[derive(Debug, Default)]
pub struct ReadBuf {
    vec: Vec<u8>,
    pos: usize,
}

impl ReadBuf {
    pub fn with_capacity(cap: usize) -> Self {
        ReadBuf {
            vec: Vec::with_capacity(cap),
            pos: 0,
        }
    }

    /// A buffer of `vec`'s capacity (its contents are dropped).
    fn from_vec(mut vec: Vec<u8>) -> Self {
        vec.clear();
        ReadBuf { vec, pos: 0 }
    }

    pub fn data(&self) -> &[u8] {
        &self.vec[self.pos..]
    }

    pub fn len(&self) -> usize {
        self.vec.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.vec.len()
    }

    /// Gives back a buffer that grew past `cap` (a large body went through) once it is
    /// empty, so an idle keep-alive connection holds only its initial size.
    pub fn shrink_if_empty(&mut self, cap: usize) {
        if self.is_empty() && self.vec.capacity() > cap {
            self.vec = Vec::with_capacity(cap);
            self.pos = 0;
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.vec.len());
        if self.pos == self.vec.len() {
            self.vec.clear();
            self.pos = 0;
        }
    }

    /// Makes room for at least `min_free` more bytes without growing past `max_cap`
    /// (compacting first). Returns false when the buffer is full at `max_cap`.
    fn reserve(&mut self, min_free: usize, max_cap: usize) -> bool {
        if self.pos > 0 && self.vec.capacity() - self.vec.len() < min_free {
            self.vec.drain(..self.pos);
            self.pos = 0;
        }
        let free = self.vec.capacity() - self.vec.len();
        if free < min_free && self.vec.capacity() < max_cap {
            let want = (self.vec.len() + min_free).min(max_cap);
            self.vec.reserve_exact(want - self.vec.len());
        }
        self.vec.capacity() > self.vec.len()
    }

    /// Reads once, appending to the buffer. The buffer grows toward `max_cap` so that at
    /// least half of it is free for the read: a 64 KiB body relay reads up to 32-64 KiB at
    /// a time instead of staying at the size a request head needed (with io_uring every
    /// read is a trip through the ring, so small reads cost 2-3x the throughput).
    /// `Ok(0)`: end of stream. An error of kind `TimedOut` when nothing arrived within
    /// `timeout`; `OutOfMemory` when the buffer is full at `max_cap` (the caller's limit).
    pub async fn read_from(
        &mut self,
        stream: &mut impl Wire,
        max_cap: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        self.read_inner(stream, max_cap, usize::MAX, timeout, None)
            .await
    }

    /// `read_from` when the caller knows that at most `want` more bytes are coming (the
    /// rest of a Content-Length body): the buffer grows only as far as they need, so
    /// the last few hundred bytes of a 16 KiB response do not cost a 32 KiB allocation.
    pub async fn read_up_to(
        &mut self,
        stream: &mut impl Wire,
        max_cap: usize,
        want: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        self.read_inner(stream, max_cap, want, timeout, None).await
    }

    /// `read_from` that `cancel` can interrupt. Unlike dropping a read, cancelling one
    /// that already completed still delivers its bytes, so nothing is lost.
    pub async fn read_from_cancelable(
        &mut self,
        stream: &mut impl Wire,
        max_cap: usize,
        timeout: Duration,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        self.read_inner(stream, max_cap, usize::MAX, timeout, Some(cancel))
            .await
    }

    async fn read_inner(
        &mut self,
        stream: &mut impl Wire,
        max_cap: usize,
        want: usize,
        timeout: Duration,
        cancel: Option<CancelHandle>,
    ) -> io::Result<usize> {
        if !self.reserve((max_cap / 2).max(4096).min(want.max(1)), max_cap) {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let vec = std::mem::take(&mut self.vec);
        match monoio::time::timeout(timeout, stream.read_append(vec, cancel)).await {
            Ok((res, vec)) => {
                self.vec = vec;
                res
            }
            // The buffer went down with the cancelled read: start empty (the caller
            // closes the socket anyway) so `pos` never points past the data.
            Err(_) => {
                self.pos = 0;
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// Appends what `stream` already received, up to `want` bytes, without waiting (see
    /// `Wire::read_ready`): `Ok(0)` is end of stream, `WouldBlock` means nothing is there
    /// yet. The buffer does not grow, so it needs free room (`want > 0`).
    pub fn read_ready(&mut self, stream: &mut impl Wire, want: usize) -> io::Result<usize> {
        if self.is_empty() {
            self.vec.clear();
            self.pos = 0;
        }
        if self.vec.len() == self.vec.capacity() || want == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        stream.read_ready(&mut self.vec, want)
    }

    /// Writes `vec[pos..pos+n]` (the first `n` unconsumed bytes) to `stream` and consumes them.
    pub async fn write_to(
        &mut self,
        stream: &mut impl Wire,
        n: usize,
        timeout: Duration,
    ) -> io::Result<()> {
        let start = self.pos;
        let vec = std::mem::take(&mut self.vec);
        let write = stream.write_range(vec, start..start + n);
        match monoio::time::timeout(timeout, write).await {
            Ok((res, vec)) => {
                self.vec = vec;
                res?;
                self.consume(n);
                Ok(())
            }
            Err(_) => {
                self.pos = 0;
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }
}

/// Writes all of `buf` within `timeout`; `buf` keeps its contents (callers clear it).
pub async fn write_all(
    stream: &mut impl Wire,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let vec = std::mem::take(buf);
    let len = vec.len();
    match monoio::time::timeout(timeout, stream.write_range(vec, 0..len)).await {
        Ok((res, vec)) => {
            *buf = vec;
            res
        }
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Whether an idle keep-alive connection was closed by its peer (or sent unsolicited
/// bytes): a non-blocking peek, so the pool never hands out a dead connection it could
/// have known about.
pub fn peer_closed_or_dirty(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    crate::sys::peek_nonblocking(stream.as_raw_fd()) != crate::sys::Peek::WouldBlock
}

pub fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}
