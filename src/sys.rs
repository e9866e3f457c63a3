//! The crate's only `unsafe`: thin wrappers over a few libc calls that std and monoio do
//! not expose. Each block says why it is sound.

use std::os::fd::RawFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Nothing to read: the connection is idle and open.
    WouldBlock,
    /// The peer closed (or reset) the connection.
    Closed,
    /// Bytes are waiting: unexpected on an idle upstream connection.
    Data,
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte.
pub fn peek_nonblocking(fd: RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: `byte` is a valid, writable one-byte buffer for the duration of the call;
    // MSG_PEEK leaves the socket's data in place and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Peek::WouldBlock,
            _ => Peek::Closed,
        },
    }
}

/// Monotonic microseconds of CPU time used by this process (user + system).
pub fn process_cpu_micros() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; we read it only on success.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return 0;
    }
    // SAFETY: initialized by the successful call above.
    let u = unsafe { usage.assume_init() };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    micros(u.ru_utime) + micros(u.ru_stime)
}
