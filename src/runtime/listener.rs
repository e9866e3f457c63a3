//! SO_REUSEPORT listeners: one socket per worker per address, so the kernel spreads new
//! connections across workers and no accept lock is shared between cores. At an upgrade
//! the new process is handed the old one's sockets (`Inherited`) and accepts on them:
//! the same kernel sockets, so nothing queued on them is lost and no client is refused.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::worker::WorkerListener;
use crate::config::ListenConfig;

/// What a predecessor handed over: its listening sockets, by the name of the configured
/// listener they served (`data_key`, `admin_key`), the seeds of its limit key hash
/// (quota use it saved or goes on saving is filed under keys hashed with them), and its
/// replay cache's fingerprint keys.
#[derive(Default)]
pub struct Inherited {
    sockets: HashMap<String, Vec<TcpListener>>,
    key_seeds: Option<[u64; 4]>,
    nonce_keys: Option<[u64; 8]>,
    nonce_entries: Vec<crate::auth::nonce::Entry>,
}

impl Inherited {
    pub fn set_key_seeds(&mut self, seeds: [u64; 4]) {
        self.key_seeds = Some(seeds);
    }

    pub fn key_seeds(&self) -> Option<[u64; 4]> {
        self.key_seeds
    }

    /// The replay cache's fingerprint keys (its entries follow once it stops accepting).
    pub fn set_nonce_keys(&mut self, keys: [u64; 8]) {
        self.nonce_keys = Some(keys);
    }

    pub fn nonce_keys(&self) -> Option<[u64; 8]> {
        self.nonce_keys
    }

    /// What the predecessor's replay cache held when it handed the sockets over.
    pub fn add_nonce_entries(&mut self, entries: Vec<crate::auth::nonce::Entry>) {
        self.nonce_entries.extend(entries);
    }

    pub fn take_nonce_entries(&mut self) -> Vec<crate::auth::nonce::Entry> {
        std::mem::take(&mut self.nonce_entries)
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

/// Every listener of a gateway, bound or taken over.
pub struct Bound {
    /// Per worker: its sockets, with what their connections start with.
    pub per_worker: Vec<Vec<WorkerListener>>,
    /// The data-plane addresses as bound (real ports for `:0`), plain and TLS.
    pub listen: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub admin: Option<TcpListener>,
    /// A copy of every socket, named (`data_key`, `admin_key`), for a successor.
    pub handover: Vec<(String, OwnedFd)>,
}

/// Binds every configured listener, `workers` sockets each (the inherited ones first),
/// and the admin listener.
pub fn bind_all(
    configured: &[ListenConfig],
    admin: Option<SocketAddr>,
    workers: usize,
    backlog: i32,
    inherited: &mut Inherited,
) -> Result<Bound, String> {
    let mut bound = Bound {
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
        listen: Vec::new(),
        tls: Vec::new(),
        admin: None,
        handover: Vec::new(),
    };
    for (i, &config) in configured.iter().enumerate() {
        let ordinal = configured[..i]
            .iter()
            .filter(|c| c.addr == config.addr)
            .count();
        let taken = inherited.take(&data_key(config.addr, ordinal));
        let group = bind_group(config.addr, workers, backlog, taken).map_err(|e| e.to_string())?;
        let addr = group[0].local_addr().map_err(|e| e.to_string())?;
        if config.tls {
            bound.tls.push(addr);
        } else {
            bound.listen.push(addr);
        }
        for (k, socket) in group.into_iter().enumerate() {
            let copy = socket.try_clone().map_err(|e| e.to_string())?;
            bound
                .handover
                .push((data_key(config.addr, ordinal), copy.into()));
            let config = ListenConfig { addr, ..config };
            bound.per_worker[k % workers].push(WorkerListener { socket, config });
        }
    }
    if let Some(addr) = admin {
        let socket = match inherited.take(&admin_key(addr)).pop() {
            Some(socket) => socket,
            None => TcpListener::bind(addr).map_err(|e| format!("admin.listen {addr}: {e}"))?,
        };
        let copy = socket.try_clone().map_err(|e| e.to_string())?;
        bound.handover.push((admin_key(addr), copy.into()));
        bound.admin = Some(socket);
    }
    Ok(bound)
}

/// `count` listeners on `addr`, the `inherited` ones first (all of them, even more than
/// `count`: closing one would drop the connections queued on it), then new ones joining
/// their group. With port 0 the first socket picks the port and the rest join it, so
/// tests can bind `127.0.0.1:0` with several workers. Non-blocking always: epoll needs
/// it, io_uring does not care, a worker's last sweep of its listeners at a handover must
/// not block (`worker::sweep`), and the flag belongs to the socket, shared with a
/// successor that may run the other driver.
fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
    inherited: Vec<TcpListener>,
) -> io::Result<Vec<TcpListener>> {
    let mut addr = addr;
    let mut out = Vec::with_capacity(count.max(inherited.len()));
    for listener in inherited {
        let socket = SockRef::from(&listener);
        socket.set_nonblocking(true)?;
        // Listening already; this applies the new config's backlog.
        socket.listen(backlog)?;
        addr = listener.local_addr()?;
        out.push(listener);
    }
    while out.len() < count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        socket.listen(backlog)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Says which handed-over listeners the config no longer has (they close).
pub fn drop_leftover(inherited: Inherited) {
    for key in inherited.leftover() {
        log::warn!("upgrade: {key} is no longer configured; its handed-over socket closes");
    }
}
