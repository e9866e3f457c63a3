//! The handover channel: text messages on a `SOCK_SEQPACKET` unix socket, a socket
//! descriptor attached to some. Every wait on it is bounded.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::auth::nonce::Entry;

/// The longest message: text ones are short (a listener's name, numbers); replay cache
/// entries go in chunks that fit.
const MAX_MESSAGE: usize = 64 * 1024;
/// What starts a message of replay cache entries.
const ENTRIES_TAG: &[u8] = b"nonces\n";
/// Bytes of one entry: a 128-bit fingerprint and a 64-bit expiry, little-endian.
const ENTRY_BYTES: usize = 24;
/// Entries in one message: 16 KiB of them, well inside any socket buffer.
const ENTRIES_PER_MESSAGE: usize = (16 * 1024 - ENTRIES_TAG.len()) / ENTRY_BYTES;
/// How long a send may wait for room: the other process reads everything as it comes,
/// so a full channel for this long means it is stuck.
const SEND_WITHIN: Duration = Duration::from_secs(5);

/// One end of the channel.
pub struct Channel {
    socket: OwnedFd,
}

/// What arrived: a message and its descriptor, replay cache entries, or the other end
/// closed.
pub enum Received {
    Message(String, Option<OwnedFd>),
    Entries(Vec<Entry>),
    Closed,
}

impl Channel {
    pub fn new(socket: OwnedFd) -> Channel {
        if let Err(e) = SockRef::from(&socket).set_write_timeout(Some(SEND_WITHIN)) {
            log::warn!("upgrade: cannot bound the channel's sends: {e}");
        }
        Channel { socket }
    }

    /// Sends one message, waiting at most `SEND_WITHIN` for room.
    pub fn send(&self, message: &str, fd: Option<&OwnedFd>) -> io::Result<()> {
        self.send_with(message.as_bytes(), fd)
    }

    fn send_bytes(&self, message: &[u8]) -> io::Result<()> {
        self.send_with(message, None)
    }

    fn send_with(&self, message: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
        let deadline = Instant::now() + SEND_WITHIN;
        loop {
            let sent = crate::sys::send_with_fd(self.socket.as_fd(), message, fd.map(AsFd::as_fd));
            match sent {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// Sends replay cache entries, in as many messages as they take.
    pub fn send_entries(&self, entries: &[Entry]) -> io::Result<()> {
        for chunk in entries.chunks(ENTRIES_PER_MESSAGE) {
            let mut message = Vec::with_capacity(ENTRIES_TAG.len() + chunk.len() * ENTRY_BYTES);
            message.extend_from_slice(ENTRIES_TAG);
            for (fingerprint, expires_at) in chunk {
                message.extend_from_slice(&fingerprint.to_le_bytes());
                message.extend_from_slice(&expires_at.to_le_bytes());
            }
            self.send_bytes(&message)?;
        }
        Ok(())
    }

    /// The next message, waiting at most `timeout` (then a `WouldBlock`/`TimedOut`
    /// error). A signal arriving meanwhile (a receive timeout makes the kernel return
    /// `EINTR` instead of restarting the call) does not end the wait.
    pub fn receive(&self, timeout: Duration) -> io::Result<Received> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (len, fd) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            SockRef::from(&self.socket)
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match crate::sys::recv_with_fd(self.socket.as_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !left.is_zero() => continue,
                other => break other?,
            }
        };
        if len == 0 && fd.is_none() {
            return Ok(Received::Closed);
        }
        if let Some(entries) = buf[..len].strip_prefix(ENTRIES_TAG) {
            let entries = entries
                .chunks_exact(ENTRY_BYTES)
                .map(|e| {
                    let mut fingerprint = [0u8; 16];
                    let mut expires_at = [0u8; 8];
                    fingerprint.copy_from_slice(&e[..16]);
                    expires_at.copy_from_slice(&e[16..]);
                    (
                        u128::from_le_bytes(fingerprint),
                        u64::from_le_bytes(expires_at),
                    )
                })
                .collect();
            return Ok(Received::Entries(entries));
        }
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a message not in UTF-8"))?;
        Ok(Received::Message(text.to_string(), fd))
    }
}

/// The error a `receive` that waited its whole time returns.
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
