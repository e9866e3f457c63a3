//! The handover channel: text messages on a `SOCK_SEQPACKET` unix socket, a socket
//! descriptor attached to some. Every wait on it is bounded.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// The longest message: a listener's name is an address and a number.
const MAX_MESSAGE: usize = 512;
/// How long a send may wait for room: the other process reads everything as it comes,
/// so a full channel for this long means it is stuck.
const SEND_WITHIN: Duration = Duration::from_secs(5);

/// One end of the channel.
pub struct Channel {
    socket: OwnedFd,
}

/// What arrived: a message and its descriptor, or the other end closed.
pub enum Received {
    Message(String, Option<OwnedFd>),
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
        let deadline = Instant::now() + SEND_WITHIN;
        loop {
            let sent = crate::sys::send_with_fd(
                self.socket.as_fd(),
                message.as_bytes(),
                fd.map(AsFd::as_fd),
            );
            match sent {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// The next message, waiting at most `timeout` (then a `WouldBlock`/`TimedOut`
    /// error). A signal arriving meanwhile (a receive timeout makes the kernel return
    /// `EINTR` instead of restarting the call) does not end the wait.
    pub fn receive(&self, timeout: Duration) -> io::Result<Received> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; MAX_MESSAGE];
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
