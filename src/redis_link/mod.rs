//! One blocking Redis connection for the control side (app store, cluster limits), every
//! call bounded in time so that a dead or stalled Redis costs the control thread at most
//! about a second per call and never hangs it.
//!
//! Lazy: nothing connects until the first call, because the gateway must start even if
//! Redis is down. Never used by a worker.
//!
//! With Sentinel every (re)connect asks for the master again (`servers`), and a write
//! refused as `READONLY` (the master was demoted under us) drops the connection, so the
//! link follows a failover.

mod cluster;
mod connect;
mod servers;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use redis::{Connection, ConnectionLike, FromRedisValue, RedisError, RedisResult, Value};

use crate::config::redis_target::RedisTarget;
pub use connect::Server;
pub use servers::CurrentServer;
use servers::{Conn, Connected, Servers};

/// The hash tag of the keys the workers write on connections of their own (fleet nonces:
/// `rg:nonce:{rg-w}:...`). On a Redis Cluster they all live in its slot, and the link
/// publishes the node that holds it as its current server (see `refresh_published`).
pub const WORKER_TAG: &str = "{rg-w}";

/// Bound on the TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on every read and write of a command (and of the connection handshake).
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// A lazily connected Redis connection that replaces itself after failures.
pub struct RedisLink {
    servers: Servers,
    /// The deployment, for error messages (the URL itself may carry a password).
    addr: String,
    /// The server of the last connection, published for others who follow it.
    current: Arc<CurrentServer>,
    conn: Option<Conn>,
    /// A connection attempt that outlived its deadline: the server accepted the TCP
    /// connection but did not answer the handshake (e.g. a stopped process). The crate
    /// runs the handshake without a read timeout, so it runs on its own thread; it is
    /// kept here and waited on again next time, so there is at most one such thread.
    pending: Option<Receiver<RedisResult<Connected>>>,
}

impl RedisLink {
    /// Reads the target's certificate files; does not connect yet.
    pub fn new(target: &RedisTarget) -> Result<RedisLink, String> {
        // The crate's TLS builds its rustls config with the process's default crypto
        // provider, which must be chosen when two are compiled in (ours and the crate's).
        crate::tls::certs::install_default_provider();
        Ok(RedisLink {
            servers: Servers::new(target)?,
            addr: target.describe(),
            current: Arc::new(CurrentServer::default()),
            conn: None,
            pending: None,
        })
    }

    /// One plain server by its URL (`redis://host:port/db`).
    pub fn from_url(url: &str) -> Result<RedisLink, String> {
        RedisLink::new(&RedisTarget::url(url))
    }

    /// Publishes the server of every new connection to `current` from now on.
    pub fn publishing_to(mut self, current: Arc<CurrentServer>) -> RedisLink {
        self.current = current;
        self
    }

    /// Where the link goes, safe to put in messages (unlike the URL): `host:port`, or the
    /// master's name and the sentinels.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Runs one command. A connection that broke since its last use (Redis restarted) is
    /// replaced once at once rather than failing the call; a timeout is not retried, so
    /// a stalled Redis costs one bounded wait.
    pub fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.run(|conn| match conn {
            Conn::One(c) => cmd.query(c),
            Conn::Cluster(c) => c.query(cmd).and_then(T::from_owned_redis_value),
        })
    }

    /// Whether this is a Redis Cluster: scripts are loaded per node there, so callers
    /// send them whole (`EVAL`) rather than by SHA.
    pub fn is_cluster(&self) -> bool {
        matches!(self.servers, Servers::Cluster(_))
    }

    /// The nodes a keyspace-wide command (`SCAN`) must visit: the masters of a cluster
    /// (as `host`, `port`), or just the one server (`None`).
    pub fn masters(&mut self) -> Result<Vec<Option<(String, u16)>>, RedisError> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        self.run(|conn| match conn {
            Conn::Cluster(c) => Ok(c.current_masters()?.into_iter().map(Some).collect()),
            Conn::One(_) => Ok(vec![None]),
        })
    }

    /// On a Redis Cluster, reads the slot map again and publishes the node that holds
    /// `WORKER_TAG`'s slot as the current server, so that the workers' own connections go
    /// there (after a resharding too: the lease thread calls this once a second).
    /// Elsewhere the server is published on every new connection and this does nothing.
    pub fn refresh_published(&mut self) -> Result<(), RedisError> {
        if !self.is_cluster() {
            return Ok(());
        }
        let owner = self.run(|conn| match conn {
            Conn::Cluster(c) => {
                c.refresh()?;
                Ok(c.node_of(WORKER_TAG.as_bytes()))
            }
            Conn::One(_) => Ok(None),
        })?;
        let Some((host, port)) = owner else {
            return Ok(());
        };
        // Resolved only when the owner changed (a name would cost a DNS lookup a second).
        let known = self.current.get();
        if known
            .as_ref()
            .is_some_and(|s| s.host == host && s.addr.port() == port)
        {
            return Ok(());
        }
        if let Some(server) = Server::resolve(host, port) {
            self.current.set(server);
        }
        Ok(())
    }

    /// Runs one command on `node` (from [`RedisLink::masters`]).
    pub fn query_node<T: FromRedisValue>(
        &mut self,
        node: &Option<(String, u16)>,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let Some(node) = node else {
            return self.query(cmd);
        };
        self.run(|conn| match conn {
            Conn::One(c) => cmd.query(c),
            Conn::Cluster(c) => c.query_at(node, cmd).and_then(T::from_owned_redis_value),
        })
    }

    /// Runs a pipeline in one round trip, as `Pipeline::query` does (same reply shapes,
    /// `ignore()` and `atomic()` honoured, the first error reply fails the call), with the
    /// same reconnect rule as [`RedisLink::query`]. Unlike the crate's own loop, it stops
    /// reading at the first I/O error, so a stalled Redis costs one read timeout rather
    /// than one per command.
    pub fn query_pipeline<T: FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.run(|conn| match conn {
            Conn::One(c) => pipe.query(&mut FailFast(c)),
            Conn::Cluster(c) => {
                // As `Pipeline::query`: the first error reply fails the call.
                let replies = c.pipeline(pipe)?;
                if let Some(Value::ServerError(e)) =
                    replies.iter().find(|r| matches!(r, Value::ServerError(_)))
                {
                    return Err(e.clone().into());
                }
                T::from_owned_redis_value(Value::Array(replies))
            }
        })
    }

    /// Runs a non-atomic pipeline in one round trip and returns every reply in order,
    /// error replies included as `Value::ServerError`, so the caller can tell which
    /// command failed. `ignore()` is not honoured here.
    pub fn pipeline_replies(&mut self, pipe: &redis::Pipeline) -> Result<Vec<Value>, RedisError> {
        let packed = pipe.get_packed_pipeline();
        let count = pipe.cmd_iter().count();
        let replies = self.run(|conn| match conn {
            Conn::One(c) => FailFast(c).req_packed_commands(&packed, 0, count),
            Conn::Cluster(c) => c.pipeline(pipe),
        })?;
        if replies.iter().any(is_read_only) {
            // A replica now: the next call finds the master again.
            self.conn = None;
        }
        Ok(replies)
    }

    fn run<T>(&mut self, call: impl Fn(&mut Conn) -> RedisResult<T>) -> Result<T, RedisError> {
        let reused = self.conn.is_some();
        // Not on a cluster: its nodes are reconnected one by one (by `cluster`), and a
        // pipeline sent again whole would run the commands of the nodes that answered
        // twice (a token lease is not idempotent).
        let cluster = matches!(self.conn, Some(Conn::Cluster(_)));
        match self.run_once(&call) {
            Err(e) if reused && !cluster && e.is_io_error() && !e.is_timeout() => {
                self.run_once(&call)
            }
            other => other,
        }
    }

    fn run_once<T>(
        &mut self,
        call: &impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, RedisError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = call(&mut conn);
        // After an I/O error the connection's state is unknown (a late reply to a
        // timed-out command would be read as the answer to the next one): start afresh.
        // A `READONLY` refusal: the server is a replica now (a failover demoted it), so
        // the next call must find the master again.
        // A cluster's nodes are dropped one by one where they fail (`cluster`).
        let broken = !matches!(conn, Conn::Cluster(_))
            && result.as_ref().is_err_and(|e| {
                e.is_io_error()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::ReadOnly
            });
        if !broken {
            self.conn = Some(conn);
        }
        result
    }

    fn connect(&mut self) -> Result<Conn, RedisError> {
        let attempt = match self.pending.take() {
            Some(attempt) => attempt,
            None => {
                let (tx, rx) = mpsc::channel();
                let servers = self.servers.clone();
                std::thread::Builder::new()
                    .name("rg-redis-connect".into())
                    .spawn(move || {
                        let _ = tx.send(servers.connect());
                    })?;
                rx
            }
        };
        // Sentinel: each sentinel asked and the master's handshake may take their own
        // bounds; past this wait the attempt is kept and waited on again next time.
        let (conn, server) = match attempt.recv_timeout(CONNECT_TIMEOUT + IO_TIMEOUT) {
            Ok(result) => result?,
            Err(RecvTimeoutError::Timeout) => {
                self.pending = Some(attempt);
                return Err(timeout_error("no answer to the connection handshake"));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(timeout_error("connection attempt ended without a result"));
            }
        };
        // (Not when the name did not resolve again: workers would connect nowhere.)
        if let Some(server) = server.filter(|s| !s.addr.ip().is_unspecified()) {
            self.current.set(server);
        }
        Ok(conn)
    }
}

fn is_read_only(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "READONLY")
}

fn timeout_error(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned()).into()
}

/// A connection whose pipelines give up at the first failed read. The crate's own loop
/// reads on after a timeout, waiting out one more read timeout per remaining reply. A
/// failed read is an I/O or a parse error, both of which make `run_once` drop the (now
/// out of step) connection.
struct FailFast<'a>(&'a mut Connection);

impl ConnectionLike for FailFast<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.0.req_packed_command(cmd)
    }

    /// Sends the commands and reads `offset + count` replies, returning the last
    /// `count`; an error reply among the first `offset` (a transaction's `QUEUED`s) fails
    /// the call once everything is read, as in the crate.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.0.send_packed_command(cmd)?;
        let mut replies = Vec::with_capacity(count);
        let mut first_err = None;
        let mut idx = 0;
        while idx < offset + count {
            match self.0.recv_response()? {
                // RESP3 push data is not a reply to any command.
                Value::Push { .. } => continue,
                Value::ServerError(e) if idx < offset => {
                    first_err.get_or_insert(RedisError::from(e));
                }
                _ if idx < offset => {}
                reply => replies.push(reply),
            }
            idx += 1;
        }
        first_err.map_or(Ok(replies), Err)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_checked_without_connecting_or_quoting_it() {
        // Nothing listens on port 1: `new` must still succeed.
        let link = RedisLink::from_url("redis://:hunter2@127.0.0.1:1/0").unwrap();
        assert_eq!(link.addr(), "127.0.0.1:1");
        let e = RedisLink::from_url("http://user:hunter2@example.com/")
            .err()
            .unwrap();
        assert!(
            e.starts_with("invalid Redis URL") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn unreachable_server_fails_every_call() {
        let mut link = RedisLink::from_url("redis://127.0.0.1:1/0").unwrap();
        let e = link.query::<String>(&redis::cmd("PING")).unwrap_err();
        assert!(e.is_io_error(), "{e}");
        let e = link
            .query_pipeline::<(String, String)>(redis::pipe().cmd("PING").cmd("PING"))
            .unwrap_err();
        assert!(e.is_io_error(), "{e}");
        assert!(link.pipeline_replies(redis::pipe().cmd("PING")).is_err());
    }
}
