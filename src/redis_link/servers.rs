//! How the control side reaches the Redis a `RedisTarget` names: one server by its URL,
//! or the master that Sentinel names, asked again on every (re)connect so that the link
//! follows a failover. TLS (`rediss://`) with a private CA and a client certificate comes
//! from the crate's rustls support.
//!
//! Sentinel is asked here with the crate's connections and commands rather than through
//! `redis::sentinel::Sentinel`, whose connections have no timeouts: one stopped sentinel
//! (a frozen VM accepts TCP and never answers) would hang every later master lookup, so a
//! failover would never be followed. Here every sentinel gets `CONNECT_TIMEOUT` and
//! `IO_TIMEOUT`, one that fails is asked last next time, and the master it names must
//! say `ROLE` master before it is used (a sentinel that has not yet seen the failover
//! names the old master, which may be back as a replica).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{
    Client, Connection, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    RedisResult, TlsCertificates,
};

use crate::config::redis_target::{RedisServers, RedisTarget};

/// The server a link is connected to: its name as Sentinel or the URL gave it (what TLS
/// verifies) and the address it resolved to. Published for the workers' own connections
/// (fleet nonces), so that they follow a failover without asking Sentinel themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub addr: SocketAddr,
}

/// The last server a link connected to; `None` until it first has.
#[derive(Debug, Default)]
pub struct CurrentServer(Mutex<Option<Server>>);

impl CurrentServer {
    pub fn get(&self) -> Option<Server> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, server: Server) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    }
}

/// What a link connects to; cheap to clone into its connect thread.
#[derive(Clone)]
pub(super) enum Servers {
    One(Client),
    Sentinel(Arc<Sentinels>),
}

pub(super) struct Sentinels {
    sentinels: Vec<Client>,
    /// The sentinel to ask first: the last one that answered.
    first: AtomicUsize,
    master_name: String,
    /// How the master is logged into (db, user, password) and whether over TLS.
    master: redis::RedisConnectionInfo,
    tls: bool,
    certs: Option<TlsCertificates>,
}

impl Servers {
    pub(super) fn new(target: &RedisTarget) -> Result<Servers, String> {
        let certs = certificates(target)?;
        match &target.servers {
            RedisServers::One(url) => Ok(Servers::One(client(url.as_str(), &certs)?)),
            RedisServers::Sentinel {
                sentinels,
                master_name,
                username,
                password,
                db,
                tls,
            } => Ok(Servers::Sentinel(Arc::new(Sentinels {
                sentinels: sentinels
                    .iter()
                    .map(|url| client(url.as_str(), &certs))
                    .collect::<Result<_, _>>()?,
                first: AtomicUsize::new(0),
                master_name: master_name.clone(),
                master: redis::RedisConnectionInfo {
                    db: *db,
                    username: username.clone(),
                    password: password.clone(),
                    ..Default::default()
                },
                tls: *tls,
                certs,
            }))),
        }
    }

    /// Connects (blocking; `RedisLink` runs it on a thread of its own and bounds the
    /// wait), every read and write of the connection bounded by `io_timeout`.
    pub(super) fn connect(
        &self,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> RedisResult<(Connection, Server)> {
        match self {
            Servers::One(client) => open(client, connect_timeout, io_timeout),
            Servers::Sentinel(s) => s.master(connect_timeout, io_timeout),
        }
    }
}

impl Sentinels {
    /// Asks the sentinels in turn for the master's address and connects to it if it is
    /// the master indeed.
    fn master(
        &self,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> RedisResult<(Connection, Server)> {
        let n = self.sentinels.len();
        let first = self.first.load(Ordering::Relaxed) % n;
        let mut last_error = None;
        for i in (0..n).map(|k| (first + k) % n) {
            let named =
                open(&self.sentinels[i], connect_timeout, io_timeout).and_then(|(mut conn, _)| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&self.master_name)
                        .query::<Option<(String, u16)>>(&mut conn)
                });
            let (host, port) = match named {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    last_error = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "no master of that name",
                        self.master_name.clone(),
                    )));
                    continue;
                }
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            self.first.store(i, Ordering::Relaxed);
            let master = client(self.master_info(host, port), &self.certs).map_err(|e| {
                RedisError::from((ErrorKind::InvalidClientConfig, "master address", e))
            })?;
            let (mut conn, server) = open(&master, connect_timeout, io_timeout)?;
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
            return match role.first().map(redis::from_redis_value::<String>) {
                Some(Ok(r)) if r == "master" => Ok((conn, server)),
                _ => Err(RedisError::from((
                    ErrorKind::MasterDown,
                    "the server Sentinel names is not a master (yet)",
                    server.addr.to_string(),
                ))),
            };
        }
        Err(last_error
            .unwrap_or_else(|| RedisError::from((ErrorKind::EmptySentinelList, "no sentinels"))))
    }

    fn master_info(&self, host: String, port: u16) -> ConnectionInfo {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        ConnectionInfo {
            addr,
            redis: self.master.clone(),
        }
    }
}

/// Connects with the given bounds and says to whom.
fn open(
    client: &Client,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> RedisResult<(Connection, Server)> {
    let conn = client.get_connection_with_timeout(connect_timeout)?;
    conn.set_read_timeout(Some(io_timeout))?;
    conn.set_write_timeout(Some(io_timeout))?;
    let (host, port) = match &client.get_connection_info().addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port)
        }
        ConnectionAddr::Unix(path) => (path.display().to_string(), 0),
    };
    // The crate resolved the same name a moment ago: this is its cached answer.
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok((conn, Server { host, addr }))
}

/// A client for `info`, with the target's CA and client certificate when it is TLS.
fn client(
    info: impl IntoConnectionInfo,
    certs: &Option<TlsCertificates>,
) -> Result<Client, String> {
    let info = info
        .into_connection_info()
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
    let tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
    match certs {
        Some(certs) if tls => Client::build_with_tls(info, certs.clone()),
        _ => Client::open(info),
    }
    .map_err(|e| format!("invalid Redis URL: {e}"))
}

/// The PEM contents of the target's CA and client certificate files, if it names any.
fn certificates(target: &RedisTarget) -> Result<Option<TlsCertificates>, String> {
    if target.ca.is_none() && target.identity.is_none() {
        return Ok(None);
    }
    let read = |path: &std::path::Path| crate::files::read_bounded(path, 4 << 20);
    Ok(Some(TlsCertificates {
        root_cert: target.ca.as_deref().map(read).transpose()?,
        client_tls: match &target.identity {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            None => None,
        },
    }))
}
