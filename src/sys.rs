//! The crate's only `unsafe`: thin wrappers over a few libc calls that std and monoio do
//! not expose. Each block says why it is sound.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Sends SIGTERM to `pid` (an upgrade's successor: a child of ours, not yet reaped, so
/// the pid cannot have been reused).
pub fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a valid signal number; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
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

/// A pair of connected `SOCK_SEQPACKET` unix sockets (close-on-exec): each message keeps
/// its boundaries, and a listening socket can go along with one (`send_with_fd`). The
/// upgrade's handover channel.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as socketpair(2) requires.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message on a `SOCK_SEQPACKET` socket, with `fd` passed along (`SCM_RIGHTS`:
/// the receiver gets its own descriptor of the same open socket).
pub fn send_with_fd(
    socket: BorrowedFd,
    message: &[u8],
    fd: Option<BorrowedFd>,
) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: message.as_ptr() as *mut libc::c_void,
        iov_len: message.len(),
    };
    // u64s so the control buffer is aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid (null name, no control yet).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE only computes a size; the buffer (64 bytes) holds one
        // cmsghdr with one int, which CMSG_FIRSTHDR then points at (non-null, since
        // msg_controllen covers it); CMSG_DATA points inside it, where an int fits.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        }
    }
    // SAFETY: `msg` points at `iov` (the message, valid for its length) and at `control`,
    // both alive for the call; sendmsg only reads them.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != message.len() {
        return Err(std::io::Error::other("message cut short"));
    }
    Ok(())
}

/// Receives one message sent by `send_with_fd` into `buf`: its length (0: the other end
/// closed) and the descriptor that came with it (close-on-exec). A message cut short by
/// `buf` is an error; any descriptors beyond the first are closed.
pub fn recv_with_fd(
    socket: BorrowedFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `buf` and `control`, both writable and alive for the call.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: recvmsg filled `control` and set msg_controllen to what it wrote; the CMSG
    // macros walk only within that. Each SCM_RIGHTS int is a descriptor the kernel just
    // installed in this process, owned by nobody else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(std::io::Error::other("handover message cut short"));
    }
    Ok((got as usize, fds.into_iter().next()))
}

/// Makes `cmd`'s process inherit `fd` (which stays close-on-exec here): the successor of
/// an upgrade finds its handover channel there.
pub fn inherit_fd(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl(2) is one, and it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of an inherited descriptor named by number (the upgrade's handover
/// channel, `RINGGATE_UPGRADE_FD`), if it is open and a socket, and makes it
/// close-on-exec again so no child of ours inherits it.
pub fn adopt_inherited_socket(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 3 {
        return Err(std::io::Error::other("not a descriptor of ours"));
    }
    // SAFETY: fcntl(2) and fstat(2) take no pointers but `st`, a valid writable stat;
    // on a closed fd they fail with EBADF, which is checked before the fd is owned.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(std::io::Error::other("not a socket"));
        }
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        // SAFETY: the fd is open (checked above) and was handed to this process for it
        // alone: nothing else here owns it.
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
