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
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
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

/// `recv(MSG_DONTWAIT)` appending to `vec`, at most `most` bytes and never past its
/// capacity: the bytes already received, without waiting for more. `Ok(0)`: the peer
/// closed (or there was no room); an error of kind `WouldBlock`: nothing is there yet.
pub fn recv_ready(fd: RawFd, vec: &mut Vec<u8>, most: usize) -> std::io::Result<usize> {
    let spare = vec.spare_capacity_mut();
    let room = spare.len().min(most);
    if room == 0 {
        return Ok(0);
    }
    // SAFETY: the spare capacity is valid for writes of `room` bytes for the duration
    // of the call (recv(2) never reads from it); MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: recv wrote `n` (<= room) initialized bytes at the start of the spare capacity.
    unsafe { vec.set_len(vec.len() + n as usize) };
    Ok(n as usize)
}

/// `shutdown(SHUT_RDWR)` of a listening socket: the kernel stops completing handshakes
/// for it (new connections to it are refused once no other socket listens on the port)
/// and a pending accept returns an error. Closing the fd is not enough while an accept
/// operation still holds it (io_uring, or an epoll wait that is never woken).
pub fn stop_listening(fd: RawFd) {
    // SAFETY: shutdown(2) takes no pointers; on a bad or closed fd it only returns an error.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// How long ago a TCP connection last received a segment (`TCP_INFO`'s
/// `tcpi_last_ack_recv`: milliseconds, counted in kernel ticks of 1-10 ms). Asked right
/// after `accept`, it is how long the connection waited in the accept queue: its client
/// connected, and sent its request or ClientHello, that long ago. `None` if the fd is
/// not a TCP socket.
pub fn since_last_segment(fd: RawFd) -> Option<std::time::Duration> {
    // SAFETY: tcp_info is a C struct of integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a valid, writable tcp_info of the size passed in `len`;
    // getsockopt(2) writes at most `len` bytes and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| std::time::Duration::from_millis(info.tcpi_last_ack_recv.into()))
}

/// Sends SIGTERM to this process: the admin API's drain goes the way a `systemctl stop`
/// does.
pub fn terminate_self() {
    // SAFETY: kill(2) on our own pid with a valid signal number; no memory is involved.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// Gives the pages of freed heap memory back to the kernel: after thousands of
/// connections went idle and freed their buffers, resident memory follows. The binary's
/// allocator is jemalloc (`main.rs`), which keeps freed pages for ten seconds before
/// returning them by itself; a purge of every arena returns them now. glibc's heap (what
/// C code and test binaries allocate) is trimmed too. It walks the heaps, so it is
/// called only after many connections parked.
pub fn return_free_memory() {
    // SAFETY: a NUL-terminated mallctl name; "arena.<MALLCTL_ARENAS_ALL>.purge" reads and
    // writes no value (all pointers null, length 0) and is thread-safe.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it touches no memory
    // the program owns and is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `CLOCK_MONOTONIC` in microseconds: what systemd compares `RELOADING=1`'s
/// `MONOTONIC_USEC` with (std's `Instant` has no defined epoch to offer it).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}
