//! The handover channel: text messages on a `SOCK_SEQPACKET` unix socket, a socket
//! descriptor attached to some.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use socket2::SockRef;

/// The longest message: a listener's name is an address and a number.
const MAX_MESSAGE: usize = 512;

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
        Channel { socket }
    }

    pub fn send(&self, message: &str, fd: Option<&OwnedFd>) -> io::Result<()> {
        crate::sys::send_with_fd(self.socket.as_fd(), message.as_bytes(), fd.map(AsFd::as_fd))
    }

    /// The next message, waiting at most `timeout` (a `TimedOut`/`WouldBlock` error).
    pub fn receive(&self, timeout: Duration) -> io::Result<Received> {
        SockRef::from(&self.socket)
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; MAX_MESSAGE];
        let (len, fd) = crate::sys::recv_with_fd(self.socket.as_fd(), &mut buf)?;
        if len == 0 && fd.is_none() {
            return Ok(Received::Closed);
        }
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a message not in UTF-8"))?;
        Ok(Received::Message(text.to_string(), fd))
    }
}
