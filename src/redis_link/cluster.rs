//! A Redis Cluster, routed here over the crate's connections: the slot map from
//! `CLUSTER SLOTS`, one connection per master made with the same bounded `open()` as a
//! single server, and a pipeline split into one sub-pipeline per node, each read with the
//! fail-fast rule. The slot hash is the crate's (`get_slot`).
//!
//! Why not the crate's own `ClusterConnection`: in 0.27 it connects to nodes (and
//! reconnects inside commands) with the login read without a timeout, so one frozen node
//! can hold the lease thread for as long as it stays frozen; its pipelines wait one read
//! timeout per command sent to a stalled node; and a `MOVED` inside a pipeline fails it
//! without the slot map ever being read again, so after a resharding every batch fails.
//! Here every step is bounded, a `MOVED` or `ASK` reply makes the next call read the map
//! again, and an error reply is that command's answer, as on one server.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use redis::cluster_routing::get_slot;
use redis::{Client, Connection, ConnectionAddr, ConnectionLike, RedisError, RedisResult, Value};

use super::connect::open;
use super::FailFast;

/// A node: host and port, as `CLUSTER SLOTS` names it.
pub type Node = (String, u16);

/// A cluster's slots and the master that holds them.
pub type SlotRange = (RangeInclusive<u16>, Node);

pub(super) struct ClusterNodes {
    /// Clients for the configured nodes (their login and TLS are every node's).
    seeds: Vec<Client>,
    slots: Vec<SlotRange>,
    /// A `MOVED` or `ASK` was seen: the map is read again before the next call.
    stale: bool,
    conns: HashMap<Node, Connection>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl ClusterNodes {
    /// Reads the slot map from the first seed that answers (blocking, each step bounded).
    pub(super) fn connect(
        seeds: &[Client],
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> RedisResult<ClusterNodes> {
        let mut nodes = ClusterNodes {
            seeds: seeds.to_vec(),
            slots: Vec::new(),
            stale: true,
            conns: HashMap::new(),
            connect_timeout,
            io_timeout,
        };
        nodes.refresh()?;
        Ok(nodes)
    }

    /// The masters, each once (the map read again first if a redirect was seen).
    pub(super) fn current_masters(&mut self) -> RedisResult<Vec<Node>> {
        self.fresh()?;
        Ok(self.masters())
    }

    /// The masters, each once.
    fn masters(&self) -> Vec<Node> {
        let mut masters: Vec<Node> = self.slots.iter().map(|(_, n)| n.clone()).collect();
        masters.sort();
        masters.dedup();
        masters
    }

    /// The master that holds `key`'s slot.
    pub(super) fn node_of(&self, key: &[u8]) -> Option<Node> {
        let slot = get_slot(key);
        self.slots
            .iter()
            .find(|(range, _)| range.contains(&slot))
            .map(|(_, node)| node.clone())
    }

    /// Reads the slot map again (from a node already connected, else from the seeds).
    pub(super) fn refresh(&mut self) -> RedisResult<()> {
        let mut last_error = None;
        let known: Vec<Node> = self.conns.keys().cloned().collect();
        for node in known {
            match self.slots_from(Some(&node)) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        for i in 0..self.seeds.len() {
            match open(&self.seeds[i], self.connect_timeout, self.io_timeout) {
                Ok((conn, server)) => {
                    let node = (server.host, server.addr.port());
                    self.conns.insert(node.clone(), conn);
                    match self.slots_from(Some(&node)) {
                        Ok(()) => return Ok(()),
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| RedisError::from((redis::ErrorKind::IoError, "no nodes"))))
    }

    fn slots_from(&mut self, node: Option<&Node>) -> RedisResult<()> {
        let asked = node.cloned();
        let ranges: Vec<Vec<Value>> = self.run_at(asked.clone(), |c| {
            redis::cmd("CLUSTER").arg("SLOTS").query(c)
        })?;
        let slots = parse_slots(&ranges, asked.as_ref().map_or("", |n| n.0.as_str()));
        if slots.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::ClusterDown,
                "the cluster has no slots assigned",
            )));
        }
        self.slots = slots;
        self.stale = false;
        // Connections to nodes that hold no slot now (a demoted master, a seed known by
        // its name rather than its address) are not kept.
        let masters = self.masters();
        self.conns.retain(|node, _| masters.contains(node));
        Ok(())
    }

    /// Runs one command on the node that holds its key (any node for a keyless one).
    pub(super) fn query(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        self.fresh()?;
        let node = key_of(cmd).and_then(|k| self.node_of(k));
        let reply = self.run_at(node, |c| c.req_command(cmd))?;
        let reply = self.follow_redirect(&reply, cmd).unwrap_or(reply);
        match reply {
            Value::ServerError(e) => Err(e.into()),
            reply => Ok(reply),
        }
    }

    /// Runs one command on `node`.
    pub(super) fn query_at(&mut self, node: &Node, cmd: &redis::Cmd) -> RedisResult<Value> {
        let reply = self.run_at(Some(node.clone()), |c| c.req_command(cmd))?;
        match reply {
            Value::ServerError(e) => Err(e.into()),
            reply => Ok(reply),
        }
    }

    /// Every command's reply in order, error replies included: one sub-pipeline per node
    /// (each read fail-fast), so a node that fails costs one bound and fails the call.
    pub(super) fn pipeline(&mut self, pipe: &redis::Pipeline) -> RedisResult<Vec<Value>> {
        if pipe.get_packed_pipeline().starts_with(b"*1\r\n$5\r\nMULTI") {
            return Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "no transaction spans the nodes of a Redis Cluster",
            )));
        }
        self.fresh()?;
        let mut by_node: Vec<(Option<Node>, redis::Pipeline, Vec<usize>)> = Vec::new();
        for (i, cmd) in pipe.cmd_iter().enumerate() {
            let node = key_of(cmd).and_then(|k| self.node_of(k));
            let at = match by_node.iter().position(|(n, _, _)| *n == node) {
                Some(at) => at,
                None => {
                    by_node.push((node, redis::pipe(), Vec::new()));
                    by_node.len() - 1
                }
            };
            by_node[at].1.add_command(cmd.clone());
            by_node[at].2.push(i);
        }
        let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        let mut replies = vec![Value::Nil; cmds.len()];
        let mut failed = None;
        for (node, sub, indexes) in by_node {
            let packed = sub.get_packed_pipeline();
            match self.run_at(node, |c| {
                FailFast(c).req_packed_commands(&packed, 0, indexes.len())
            }) {
                Ok(answers) => {
                    for (i, answer) in indexes.into_iter().zip(answers) {
                        replies[i] = answer;
                    }
                }
                // The other nodes' commands still go (and their answers count): a node
                // that fails answers for its own commands only.
                Err(e) => {
                    for i in indexes {
                        replies[i] = unreachable_reply(&e);
                    }
                    failed = Some(e);
                }
            }
        }
        // A redirected command did not run: sent once more where the reply points.
        for (i, cmd) in cmds.iter().enumerate() {
            if let Some(answer) = self.follow_redirect(&replies[i], cmd) {
                replies[i] = answer;
            }
        }
        match failed {
            Some(e) if replies.iter().all(|r| matches!(r, Value::ServerError(_))) => Err(e),
            _ => Ok(replies),
        }
    }

    /// For a `MOVED` reply: the slot's new master noted, the command sent there; for
    /// `ASK` (a slot being migrated): sent to the importing node after `ASKING`. `None`
    /// for any other reply. A redirect of the redirect is the answer (the map is read
    /// again before the next call).
    fn follow_redirect(&mut self, reply: &Value, cmd: &redis::Cmd) -> Option<Value> {
        let Value::ServerError(e) = reply else {
            return None;
        };
        let code = e.code().to_string();
        if matches!(code.as_str(), "CLUSTERDOWN" | "TRYAGAIN") {
            self.stale = true;
            return None;
        }
        if !matches!(code.as_str(), "MOVED" | "ASK") {
            return None;
        }
        self.stale = true;
        let (slot, to) = parse_redirect(e.details()?)?;
        let packed = if code == "ASK" {
            let mut asking = redis::pipe();
            asking.cmd("ASKING").add_command(cmd.clone());
            asking.get_packed_pipeline()
        } else {
            self.note_owner(slot, &to);
            cmd.get_packed_command()
        };
        let count = if code == "ASK" { 2 } else { 1 };
        let answers = self
            .run_at(Some(to), |c| {
                FailFast(c).req_packed_commands(&packed, 0, count)
            })
            .unwrap_or_else(|e| vec![unreachable_reply(&e)]);
        answers.into_iter().last()
    }

    /// `MOVED`: the slot is the node's now (until the map is read again).
    fn note_owner(&mut self, slot: u16, node: &Node) {
        if let Some(at) = self
            .slots
            .iter()
            .position(|(range, _)| range.contains(&slot))
        {
            let (range, old) = self.slots.remove(at);
            let (from, to) = (*range.start(), *range.end());
            if from < slot {
                self.slots.push((from..=slot - 1, old.clone()));
            }
            if slot < to {
                self.slots.push((slot + 1..=to, old));
            }
        }
        self.slots.push((slot..=slot, node.clone()));
    }

    /// Reads the map again if a redirect was seen.
    fn fresh(&mut self) -> RedisResult<()> {
        if self.stale {
            self.refresh()?;
        }
        Ok(())
    }

    /// Runs `call` on `node`'s connection (any connected node, or the first master, for
    /// `None`), connecting first with the bounded `open()`. A connection that failed is
    /// dropped, and the map is read again next time (the node may have gone).
    fn run_at<T>(
        &mut self,
        node: Option<Node>,
        call: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let node = match node {
            Some(node) => node,
            None => match self
                .conns
                .keys()
                .next()
                .cloned()
                .or_else(|| self.masters().into_iter().next())
            {
                Some(node) => node,
                None => {
                    return Err(RedisError::from((
                        redis::ErrorKind::IoError,
                        "no node known",
                    )))
                }
            },
        };
        let mut conn = match self.conns.remove(&node) {
            Some(conn) => conn,
            None => self.open_node(&node).inspect_err(|_| self.stale = true)?,
        };
        let result = call(&mut conn);
        match &result {
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => self.stale = true,
            _ => {
                self.conns.insert(node, conn);
            }
        }
        result
    }

    /// A connection to `node` with the seeds' login and TLS settings.
    fn open_node(&self, node: &Node) -> RedisResult<Connection> {
        let seed = self.seeds[0].get_connection_info();
        let (host, port) = node.clone();
        let addr = match &seed.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let info = redis::ConnectionInfo {
            addr,
            redis: seed.redis.clone(),
        };
        open(&Client::open(info)?, self.connect_timeout, self.io_timeout).map(|(conn, _)| conn)
    }
}

/// The answer put in the place of the commands of a node that could not be reached.
fn unreachable_reply(e: &RedisError) -> Value {
    // (The crate does not export its error type: made the way a reply is read.)
    let line = format!("-IOERR node unreachable: {e}\r\n").replace(['\r', '\n'], " ");
    redis::parse_redis_value(format!("{}\r\n", line.trim_end()).as_bytes()).unwrap_or(Value::Nil)
}

/// `MOVED`/`ASK` details: `<slot> <host>:<port>`.
fn parse_redirect(details: &str) -> Option<(u16, Node)> {
    let (slot, addr) = details.split_once(' ')?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((slot.parse().ok()?, (host.to_string(), port.parse().ok()?)))
}

/// The key a command is routed by: the first key of `EVAL`/`EVALSHA` (after the script
/// and the key count), else the first argument of a keyed command; `None` for the
/// keyless ones this gateway sends (`CLUSTER`, `PING`, `SCAN`, `SCRIPT`, `INFO`).
fn key_of(cmd: &redis::Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(a) => Some(a),
            redis::Arg::Cursor => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (keys > 0).then(|| args.get(3).copied()).flatten()
        }
        b"CLUSTER" | b"PING" | b"SCAN" | b"SCRIPT" | b"INFO" | b"HELLO" | b"AUTH" | b"SELECT" => {
            None
        }
        _ => args.get(1).copied(),
    }
}

/// `CLUSTER SLOTS`: each range is [start, end, [master host, port, id], replicas...]. A
/// master named with an empty host (or `?`) is on the host that was asked.
fn parse_slots(ranges: &[Vec<Value>], asked_host: &str) -> Vec<SlotRange> {
    ranges
        .iter()
        .filter_map(|range| {
            let from: u16 = redis::from_redis_value(range.first()?).ok()?;
            let to: u16 = redis::from_redis_value(range.get(1)?).ok()?;
            let Value::Array(node) = range.get(2)? else {
                return None;
            };
            let mut host: String = redis::from_redis_value(node.first()?).ok()?;
            let port: u16 = redis::from_redis_value(node.get(1)?).ok()?;
            if host.is_empty() || host == "?" {
                host = asked_host.to_string();
            }
            Some((from..=to, (host, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_routed_by_their_first_key() {
        let eval = redis::cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg("rg:q:{rg3}:k")
            .arg("rg:epoch:{rg3}")
            .clone();
        assert_eq!(key_of(&eval), Some(&b"rg:q:{rg3}:k"[..]));
        let keyless = redis::cmd("EVAL").arg("return 1").arg(0).clone();
        assert_eq!(key_of(&keyless), None);
        assert_eq!(
            key_of(redis::cmd("HGETALL").arg("rg:app:a")),
            Some(&b"rg:app:a"[..])
        );
        assert_eq!(key_of(redis::cmd("SCAN").arg(0)), None);
        assert_eq!(key_of(redis::cmd("CLUSTER").arg("SLOTS")), None);
    }

    #[test]
    fn redirects_name_slot_and_node() {
        assert_eq!(
            parse_redirect("3300 127.0.0.1:7002"),
            Some((3300, ("127.0.0.1".into(), 7002)))
        );
        assert_eq!(
            parse_redirect("3300 [::1]:7002").map(|r| r.1 .1),
            Some(7002)
        );
        assert_eq!(parse_redirect("nonsense"), None);
    }

    #[test]
    fn an_unreachable_node_answers_with_an_error_reply() {
        let e = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read\r\ntimed out",
        ));
        match unreachable_reply(&e) {
            Value::ServerError(e) => {
                assert_eq!(e.code(), "IOERR");
                assert!(e.details().unwrap().contains("timed out"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn slot_ranges_name_their_masters() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
            ])
        };
        let ranges = vec![
            vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7000),
            ],
            vec![Value::Int(5461), Value::Int(16383), node("", 7001)],
        ];
        let slots = parse_slots(&ranges, "10.0.0.9");
        assert_eq!(
            slots,
            [
                (0..=5460, ("10.0.0.1".to_string(), 7000)),
                (5461..=16383, ("10.0.0.9".to_string(), 7001)),
            ]
        );
    }
}
