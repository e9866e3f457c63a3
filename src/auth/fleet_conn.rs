//! How a worker's fleet nonce connection reaches Redis: the server (one fixed server, or
//! the master the control side found through Sentinel, followed after a failover), TLS
//! with the target's CA and client certificate, `AUTH` and `SELECT`, and one exchange of
//! commands and replies on the worker's event loop.

use std::io;
#[cfg(test)]
use std::net::SocketAddr;
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::fleet_resp::{encode, parse_reply, Reply};
use crate::config::redis_target::{RedisServers, RedisTarget};
use crate::redis_link::{CurrentServer, Server, WORKER_TAG};
use crate::tls::conn::TlsConn;

/// Where the fleet's nonces live: the `[cluster] redis` target.
#[derive(Clone)]
pub struct FleetTarget {
    server: FleetServer,
    /// For `rediss://`: the rustls config (roots and client certificate).
    tls: Option<Arc<ClientConfig>>,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    /// For messages: hosts only.
    described: String,
    /// What claim keys start with: `rg:nonce:`, on a Redis Cluster with the workers' hash
    /// tag (`rg:nonce:{rg-w}:`) so that they all live in one slot.
    key_prefix: String,
}

#[derive(Clone)]
enum FleetServer {
    /// One server, resolved at start.
    Fixed(Server),
    /// The master the lease thread last connected to (Sentinel), or the node holding the
    /// nonces' slot (Redis Cluster).
    Followed(Arc<CurrentServer>),
}

impl std::fmt::Debug for FleetTarget {
    /// The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetTarget({}, db {})", self.described, self.db)
    }
}

impl FleetTarget {
    /// The target's server (a URL's host resolved now) or, with Sentinel, the master
    /// that `followed` names whenever a connection is made.
    pub fn new(target: &RedisTarget, followed: &Arc<CurrentServer>) -> Result<FleetTarget, String> {
        let tls = if target.tls() {
            let identity = target
                .identity
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            let mut config = crate::tls::client::client_config(
                target.ca.as_deref(),
                identity,
                crate::clock::unix_now() as i64,
            )?;
            // Redis speaks no ALPN protocol.
            config.alpn_protocols.clear();
            Some(Arc::new(config))
        } else {
            None
        };
        let described = target.describe();
        match &target.servers {
            RedisServers::One(url) => {
                use redis::IntoConnectionInfo;
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| format!("invalid Redis URL: {e}"))?;
                let (host, port) = match &info.addr {
                    redis::ConnectionAddr::Tcp(host, port)
                    | redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
                    other => {
                        return Err(format!("fleet-wide nonces need a TCP Redis, not {other}"))
                    }
                };
                let server = Server::resolve(host.clone(), port)
                    .ok_or_else(|| format!("cannot resolve {host}:{port}"))?;
                Ok(FleetTarget {
                    server: FleetServer::Fixed(server),
                    tls,
                    db: info.redis.db,
                    username: info.redis.username,
                    password: info.redis.password,
                    described,
                    key_prefix: "rg:nonce:".to_string(),
                })
            }
            // The node holding the nonces' slot, as the lease thread found it; the login
            // is the nodes' (all the same).
            RedisServers::Cluster { nodes, .. } => {
                use redis::IntoConnectionInfo;
                let info = nodes[0]
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| format!("invalid Redis URL: {e}"))?;
                Ok(FleetTarget {
                    server: FleetServer::Followed(followed.clone()),
                    tls,
                    db: 0,
                    username: info.redis.username,
                    password: info.redis.password,
                    described,
                    key_prefix: format!("rg:nonce:{WORKER_TAG}:"),
                })
            }
            RedisServers::Sentinel {
                username,
                password,
                db,
                ..
            } => Ok(FleetTarget {
                server: FleetServer::Followed(followed.clone()),
                tls,
                db: *db,
                username: username.clone(),
                password: password.clone(),
                described,
                key_prefix: "rg:nonce:".to_string(),
            }),
        }
    }

    /// What claim keys start with (the app key and nonce follow).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Where the claims go, for messages.
    pub fn described(&self) -> &str {
        &self.described
    }

    /// The server to connect to now.
    fn server(&self) -> io::Result<Server> {
        match &self.server {
            FleetServer::Fixed(server) => Ok(server.clone()),
            FleetServer::Followed(current) => current
                .get()
                .ok_or_else(|| io::Error::other("the master is not known yet")),
        }
    }

    /// `AUTH` and `SELECT` as needed, with how many replies they bring.
    fn handshake(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut replies = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => encode(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut out, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if self.db != 0 {
            encode(&mut out, &[b"SELECT", self.db.to_string().as_bytes()]);
            replies += 1;
        }
        (out, replies)
    }

    /// Connects (TLS when the target is `rediss://`) and logs in; the caller bounds it
    /// in time. `rbuf` is left empty.
    pub(super) async fn connect(&self, rbuf: &mut Vec<u8>) -> io::Result<RedisStream> {
        let server = self.server()?;
        let tcp = TcpStream::connect(server.addr).await?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => RedisStream::Plain(tcp),
            Some(config) => {
                // What the certificate must name: the host as the URL or Sentinel gave it.
                let name = ServerName::try_from(server.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                RedisStream::Tls(Box::new(TlsConn::connect(tcp, config.clone(), name).await?))
            }
        };
        rbuf.clear();
        let (mut hello, replies) = self.handshake();
        if replies > 0 {
            let mut refused = false;
            stream
                .exchange(&mut hello, rbuf, replies, |_, r| {
                    refused |= r != Reply::Ok;
                })
                .await?;
            if refused {
                return Err(io::Error::other("AUTH or SELECT refused"));
            }
        }
        Ok(stream)
    }

    /// The address a connection made now goes to.
    #[cfg(test)]
    fn addr(&self) -> Option<SocketAddr> {
        self.server().ok().map(|s| s.addr)
    }
}

/// A connection to Redis, plain or TLS.
pub(super) enum RedisStream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

impl RedisStream {
    /// Writes `out` and reads `replies` replies, handing each to `each` in order. `out`
    /// is handed back as it was, to be sent again.
    pub(super) async fn exchange(
        &mut self,
        out: &mut Vec<u8>,
        rbuf: &mut Vec<u8>,
        replies: usize,
        mut each: impl FnMut(usize, Reply),
    ) -> io::Result<()> {
        self.send(out).await?;
        let mut done = 0;
        let mut at = 0;
        while done < replies {
            match parse_reply(&rbuf[at..]) {
                Some((reply, used)) => {
                    each(done, reply);
                    done += 1;
                    at += used;
                    continue;
                }
                None => {
                    rbuf.drain(..at);
                    at = 0;
                }
            }
            if self.receive(rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        rbuf.drain(..at);
        Ok(())
    }

    async fn send(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            RedisStream::Plain(tcp) => {
                let (written, buf) = tcp.write_all(std::mem::take(out)).await;
                *out = buf;
                written.map(drop)
            }
            RedisStream::Tls(tls) => tls.write_all(out).await,
        }
    }

    /// Appends what arrives to `rbuf`; 0 at the end of the stream.
    async fn receive(&mut self, rbuf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            RedisStream::Plain(tcp) => {
                if rbuf.capacity() - rbuf.len() < 1024 {
                    rbuf.reserve(4096);
                }
                let (read, buf) = tcp.read(std::mem::take(rbuf)).await;
                *rbuf = buf;
                read
            }
            RedisStream::Tls(tls) => tls.read_into(rbuf, 16 * 1024).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<FleetTarget, String> {
        FleetTarget::new(&RedisTarget::url(url), &Arc::default())
    }

    #[test]
    fn the_url_gives_address_database_and_credentials() {
        let t = target("redis://:s3cret@127.0.0.1:6390/2").unwrap();
        assert_eq!(t.addr(), Some("127.0.0.1:6390".parse().unwrap()));
        let (hello, replies) = t.handshake();
        assert_eq!(replies, 2);
        assert_eq!(
            hello,
            b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        let plain = target("redis://127.0.0.1:6379").unwrap();
        assert_eq!(plain.handshake().1, 0);
        assert!(target("redis+unix:///tmp/r.sock").is_err());
    }

    #[test]
    fn with_sentinel_the_master_is_the_one_last_found() {
        let current = Arc::new(CurrentServer::default());
        let sentinel = RedisTarget {
            servers: RedisServers::Sentinel {
                sentinels: vec!["redis://127.0.0.1:26379".into()],
                master_name: "rg".into(),
                username: Some("gw".into()),
                password: Some("pw".into()),
                db: 0,
                tls: false,
            },
            ca: None,
            identity: None,
            files_digest: [0; 32],
        };
        let t = FleetTarget::new(&sentinel, &current).unwrap();
        assert_eq!(t.addr(), None);
        assert_eq!(t.handshake().1, 1);
        current.set(Server {
            host: "127.0.0.1".into(),
            addr: "127.0.0.1:6400".parse().unwrap(),
        });
        assert_eq!(t.addr(), Some("127.0.0.1:6400".parse().unwrap()));
    }
}
