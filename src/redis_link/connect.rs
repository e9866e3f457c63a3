//! One connection to one Redis server with every step bounded in time, and whom it went
//! to. Shared by the single-server and Sentinel paths (`servers`) and the cluster's
//! per-node connections (`cluster`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, RedisResult};

/// The server a link is connected to: its name as Sentinel or the URL gave it (what TLS
/// verifies) and the address it resolved to. Published for the workers' own connections
/// (fleet nonces), so that they follow a failover without asking Sentinel themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub addr: SocketAddr,
}

impl Server {
    /// `host` (a name or an address) resolved, its first address; `None` if it does
    /// not resolve. (A blocking lookup: control side only.)
    pub fn resolve(host: String, port: u16) -> Option<Server> {
        let addr = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
        Some(Server { host, addr })
    }
}

/// Connects with every step bounded and says to whom. The crate's handshake (the TLS
/// handshake, `AUTH`, `SELECT`) reads without a timeout, so it is done here instead,
/// after the timeouts are set: the crate is handed the address alone (and, with the
/// `disable-client-setinfo` feature, sends nothing on connecting), and rustls shakes
/// hands on the first write. So a stopped server (it accepts TCP, never answers) costs
/// one bound, not a thread stuck for as long as it stays stopped.
pub(super) fn open(
    client: &Client,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> RedisResult<(Connection, Server)> {
    let info = client.get_connection_info();
    let mut bare = info.clone();
    // RESP 2 (the default): `HELLO 3` would be a read before the timeouts are set.
    bare.redis = redis::RedisConnectionInfo::default();
    let bare = Client::open(bare)?;
    let mut conn = bare.get_connection_with_timeout(connect_timeout)?;
    conn.set_read_timeout(Some(io_timeout))?;
    conn.set_write_timeout(Some(io_timeout))?;
    let login = &info.redis;
    if let Some(password) = &login.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &login.username {
            auth.arg(user);
        }
        auth.arg(password).query::<()>(&mut conn)?;
    }
    if login.db != 0 {
        redis::cmd("SELECT").arg(login.db).query::<()>(&mut conn)?;
    }
    let (host, port) = match &info.addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port)
        }
        ConnectionAddr::Unix(path) => (path.display().to_string(), 0),
    };
    // The crate resolved the same name a moment ago: this is its cached answer. (An IP
    // address, as Sentinel gives, resolves to itself.)
    let server = Server::resolve(host.clone(), port).unwrap_or(Server {
        host,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    });
    Ok((conn, server))
}
