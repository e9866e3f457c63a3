//! SO_REUSEPORT listeners: one socket per worker per address, so the kernel spreads new
//! connections across workers and no accept lock is shared between cores. At an upgrade
//! the new process is handed the old one's sockets (`Inherited`) and accepts on them:
//! the same kernel sockets, so nothing queued on them is lost and no client is refused.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// What a predecessor handed over: its listening sockets, by the name of the configured
/// listener they served (`data_key`, `admin_key`), and the seeds of its limit key hash
/// (quota use it saved or goes on saving is filed under keys hashed with them).
#[derive(Default)]
pub struct Inherited {
    sockets: HashMap<String, Vec<TcpListener>>,
    key_seeds: Option<[u64; 4]>,
}

impl Inherited {
    pub fn set_key_seeds(&mut self, seeds: [u64; 4]) {
        self.key_seeds = Some(seeds);
    }

    pub fn key_seeds(&self) -> Option<[u64; 4]> {
        self.key_seeds
    }

    pub fn add(&mut self, key: String, socket: OwnedFd) {
        self.sockets
            .entry(key)
            .or_default()
            .push(TcpListener::from(socket));
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Takes the sockets handed over for `key` (none if there were none).
    fn take(&mut self, key: &str) -> Vec<TcpListener> {
        self.sockets.remove(key).unwrap_or_default()
    }

    /// Keys nobody took: listeners the new config no longer has. Their sockets close
    /// when `self` is dropped.
    fn leftover(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.sockets.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }
}

/// The name of a data-plane listener (plain or TLS) as configured: its address as
/// written (`127.0.0.1:0` stays port 0, so a test gateway's successor finds its
/// sockets) and its place among listeners configured with the same address.
pub fn data_key(configured: SocketAddr, ordinal: usize) -> String {
    format!("listen {configured} #{ordinal}")
}

/// The name of the admin listener as configured.
pub fn admin_key(configured: SocketAddr) -> String {
    format!("admin {configured}")
}

/// How a group of listeners is made.
pub struct GroupSpec {
    pub addr: SocketAddr,
    pub count: usize,
    pub backlog: i32,
    pub nonblocking: bool,
}

/// `spec.count` listeners on `spec.addr`, the `inherited` ones first (all of them, even
/// more than `count`: closing one would drop the connections queued on it), then new
/// ones joining their group. With port 0 the first socket picks the port and the rest
/// join it, so tests can bind `127.0.0.1:0` with several workers.
pub fn bind_group(spec: &GroupSpec, inherited: Vec<TcpListener>) -> io::Result<Vec<TcpListener>> {
    let mut addr = spec.addr;
    let mut out = Vec::with_capacity(spec.count.max(inherited.len()));
    for listener in inherited {
        let socket = SockRef::from(&listener);
        socket.set_nonblocking(spec.nonblocking)?;
        // Listening already; this applies the new config's backlog.
        socket.listen(spec.backlog)?;
        addr = listener.local_addr()?;
        out.push(listener);
    }
    while out.len() < spec.count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(spec.nonblocking)?;
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        socket.listen(spec.backlog)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// The admin listener on `addr`: the inherited socket, else a new one.
pub fn bind_admin(addr: SocketAddr, inherited: &mut Inherited) -> io::Result<TcpListener> {
    match inherited.take(&admin_key(addr)).pop() {
        Some(listener) => Ok(listener),
        None => TcpListener::bind(addr),
    }
}

/// Takes the inherited sockets for the listener configured as `configured`, the
/// `ordinal`-th with that address.
pub fn take_inherited(
    inherited: &mut Inherited,
    configured: SocketAddr,
    ordinal: usize,
) -> Vec<TcpListener> {
    inherited.take(&data_key(configured, ordinal))
}

/// Says which handed-over listeners the config no longer has (they close).
pub fn drop_leftover(inherited: Inherited) {
    for key in inherited.leftover() {
        log::warn!("upgrade: {key} is no longer configured; its handed-over socket closes");
    }
}
