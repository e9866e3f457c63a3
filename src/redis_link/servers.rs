//! How the control side reaches the Redis a `RedisTarget` names: one server by its URL,
//! or the master that Sentinel names, asked again on every (re)connect so that the link
//! follows a failover; or a Redis Cluster (routed by `cluster`). TLS
//! (`rediss://`) with a private CA and a client certificate comes from the crate's rustls
//! support.
//!
//! Sentinel is asked here with the crate's connections and commands rather than through
//! `redis::sentinel::Sentinel`, whose connections have no timeouts: one stopped sentinel
//! (a frozen VM accepts TCP and never answers) would hang every later master lookup, so a
//! failover would never be followed. Here every sentinel gets `CONNECT_TIMEOUT` and
//! `IO_TIMEOUT`, one that fails is asked last next time, and the master it names must
//! say `ROLE` master before it is used (a sentinel that has not yet seen the failover
//! names the old master, which may be back as a replica).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{
    Client, Connection, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    RedisResult, TlsCertificates,
};

use super::cluster::ClusterNodes;
use super::connect::{open, Server};
use super::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::config::redis_target::{RedisServers, RedisTarget};

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
    /// A Redis Cluster, found from these nodes (routed by `cluster`).
    Cluster(Arc<Vec<Client>>),
}

/// A new connection, and the one server it goes to (none for a cluster).
pub(super) type Connected = (Conn, Option<Server>);

/// A connection: to one server, or to a Redis Cluster (one connection per node).
pub(super) enum Conn {
    One(Connection),
    Cluster(Box<ClusterNodes>),
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
            RedisServers::Cluster { nodes, .. } => Ok(Servers::Cluster(Arc::new(
                nodes
                    .iter()
                    .map(|url| client(url.as_str(), &certs))
                    .collect::<Result<_, _>>()?,
            ))),
        }
    }

    /// With a cluster, no one server is named.
    pub(super) fn connect(&self) -> RedisResult<Connected> {
        let one = |(conn, server)| (Conn::One(conn), Some(server));
        match self {
            Servers::One(client) => open(client, CONNECT_TIMEOUT, IO_TIMEOUT).map(one),
            Servers::Sentinel(s) => s.master(CONNECT_TIMEOUT, IO_TIMEOUT).map(one),
            Servers::Cluster(seeds) => {
                let nodes = ClusterNodes::connect(seeds, CONNECT_TIMEOUT, IO_TIMEOUT)?;
                Ok((Conn::Cluster(Box::new(nodes)), None))
            }
        }
    }
}

impl Sentinels {
    /// Asks the sentinels in turn for the master's address and connects to it if it is
    /// the master indeed; a sentinel whose answer does not lead to the master (it has not
    /// seen the failover, or is cut off from the others) is passed over for the next.
    fn master(
        &self,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> RedisResult<(Connection, Server)> {
        let n = self.sentinels.len();
        let first = self.first.load(Ordering::Relaxed) % n;
        let mut last_error = None;
        for i in (0..n).map(|k| (first + k) % n) {
            match self.master_named_by(i, connect_timeout, io_timeout) {
                Ok(found) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(found);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| RedisError::from((ErrorKind::EmptySentinelList, "no sentinels"))))
    }

    /// The master as sentinel `i` names it, connected, once it says it is the master.
    fn master_named_by(
        &self,
        i: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> RedisResult<(Connection, Server)> {
        let (mut conn, _) = open(&self.sentinels[i], connect_timeout, io_timeout)?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query(&mut conn)?;
        let Some((host, port)) = named else {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "no master of that name",
                self.master_name.clone(),
            )));
        };
        let master = client(self.master_info(host, port), &self.certs)
            .map_err(|e| RedisError::from((ErrorKind::InvalidClientConfig, "master address", e)))?;
        let (mut conn, server) = open(&master, connect_timeout, io_timeout)?;
        if role(&mut conn)?.is_some_and(|r| r != "master") {
            return Err(RedisError::from((
                ErrorKind::MasterDown,
                "the server Sentinel names is not a master (yet)",
                server.addr.to_string(),
            )));
        }
        Ok((conn, server))
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

/// The server's role (`master`, `replica`) from `HELLO 2`, which any user may run
/// (`ROLE` needs `@admin`, which a least-privilege user lacks); `None` from a server too
/// old for `HELLO` (before 6.0) or that refuses it: then a demoted master shows itself
/// by refusing writes (`READONLY`), which drops the connection.
fn role(conn: &mut Connection) -> RedisResult<Option<String>> {
    let hello: Vec<redis::Value> = match redis::cmd("HELLO").arg(2).query(conn) {
        Ok(hello) => hello,
        Err(e) if e.kind() == ErrorKind::ResponseError || e.code().is_some() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(hello
        .chunks(2)
        .find(|pair| matches!(&pair[0], redis::Value::BulkString(k) if k == b"role"))
        .and_then(|pair| redis::from_redis_value::<String>(pair.get(1)?).ok()))
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
