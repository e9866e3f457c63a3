//! A real `redis-server` for one test: started from PATH on a free 127.0.0.1 port, with
//! no persistence and its own temporary directory, killed on drop. Self-contained (std and
//! the `redis` crate) so any test file can include it:
//! `#[path = "support/redis.rs"] mod redis_support;`
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a fresh server gets to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    /// With `start_tls`: the TLS port (the plain one stays open for the test's own use).
    pub tls_port: Option<u16>,
    child: Child,
    dir: PathBuf,
    /// Arguments after the port and the defaults, kept for `restart`.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` from PATH on a free port and waits until it answers PING.
    /// Returns `None`, with a `SKIPPED` line on stderr, when the binary is missing, except
    /// under CI (the `CI` environment variable, which `.ci/run` sets): `.ci/run` installs
    /// redis-server, so a missing one there is a failure, and a green CI means every
    /// Redis test ran.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(|_| Vec::new())
    }

    /// A replica of `master` (`--replicaof`), answering once it listens (not necessarily
    /// synchronized yet).
    pub fn replica_of(master: &RedisServer) -> Option<RedisServer> {
        let port = master.port.to_string();
        Self::start_with(|_| {
            ["--replicaof", "127.0.0.1", &port]
                .map(String::from)
                .to_vec()
        })
    }

    /// With a TLS port too, serving `<tag>.pem`/`<tag>.key` from `certs` and asking
    /// clients for a certificate that `ca.pem` there signed (`tls-auth-clients`: `yes`
    /// or `optional`).
    pub fn start_tls(certs: &Path, tag: &str, auth_clients: &str) -> Option<RedisServer> {
        let file = |name: String| certs.join(name).display().to_string();
        let mut server = Self::start_with(|_| {
            vec![
                "--tls-port".into(),
                free_port().to_string(),
                "--tls-cert-file".into(),
                file(format!("{tag}.pem")),
                "--tls-key-file".into(),
                file(format!("{tag}.key")),
                "--tls-ca-cert-file".into(),
                file("ca.pem".into()),
                "--tls-auth-clients".into(),
                auth_clients.into(),
            ]
        })?;
        server.tls_port = server.extra[1].parse().ok();
        Some(server)
    }

    /// Starts `redis-server` with `extra(dir)` after the usual arguments.
    pub fn start_with(extra: impl Fn(&Path) -> Vec<String>) -> Option<RedisServer> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if !on_path("redis-server") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs redis-server: the Redis tests must not be skipped"
            );
            eprintln!("SKIPPED: redis-server not found on PATH");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "rg-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // The port is free when probed but another process may take it before
        // redis-server binds it: try a few.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = free_port();
            let extra = extra(&dir);
            let mut child = spawn(port, &dir, &extra);
            match wait_ready(&mut child, port, &dir) {
                Ok(()) => {
                    return Some(RedisServer {
                        port,
                        tls_port: None,
                        child,
                        dir,
                        extra,
                    })
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_failure = why;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start: {last_failure}");
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command on a fresh connection; panics on any error.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let Some((name, rest)) = args.split_first() else {
            panic!("cmd needs at least the command name");
        };
        let mut conn = self.connect();
        let mut cmd = redis::cmd(name);
        for a in rest {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `HSET key field value ...`
    pub fn hset(&self, key: &str, fields: &[(&str, &str)]) {
        let mut args = vec!["HSET", key];
        for (f, v) in fields {
            args.extend([*f, *v]);
        }
        self.cmd(&args);
    }

    pub fn del(&self, key: &str) {
        self.cmd(&["DEL", key]);
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, e.g. to test Redis coming back. The data
    /// is gone: there is no persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, &self.dir, &self.extra);
        if let Err(why) = wait_ready(&mut self.child, self.port, &self.dir) {
            panic!("redis-server did not restart on port {}: {why}", self.port);
        }
    }

    /// Freezes the process (SIGSTOP): connections are still accepted by the kernel but
    /// never answered, which is how a wedged Redis looks to a client.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes `pause` (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {sig}: {e}"));
        assert!(status.success(), "kill {sig} failed: {status}");
    }

    fn connect(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap_or_else(|e| panic!("{e}"));
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to redis on port {}: {e}", self.port));
        // A test must fail, not hang, if the server is paused.
        let timeout = Some(Duration::from_secs(5));
        conn.set_read_timeout(timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        conn.set_write_timeout(timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        conn
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a paused (SIGSTOPped) server.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // No persistence: nothing is written, nothing survives a restart.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"))
}

/// Polls PING until the deadline; on failure says why, with the end of the server's log.
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let log_tail = || {
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}; log:\n{}", log_tail()));
        }
        let pong = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if pong.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no PONG within {START_DEADLINE:?}; log:\n{}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `redis-sentinel` processes on free ports watching one master, quick to act: a master
/// silent for a second is down, and two sentinels agree on it. Killed on drop.
pub struct Sentinels {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Sentinels {
    /// `count` sentinels watching `master` as `name`, ready once they know each other,
    /// the replicas and that a failover could be authorized (`SENTINEL CKQUORUM`).
    pub fn start(name: &str, master: &RedisServer, count: usize) -> Option<Sentinels> {
        if !on_path("redis-sentinel") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs redis-sentinel: the Sentinel tests must not be skipped"
            );
            eprintln!("SKIPPED: redis-sentinel not found on PATH");
            return None;
        }
        // Sentinel fsyncs its config file at every change of state, failovers included:
        // on a disk busy with other tests' writes one fsync can take tens of seconds,
        // which would stall the failover. On tmpfs it costs nothing.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            master.dir.clone()
        };
        let dir = base.join(format!(
            "rg-sentinels-{name}-{}-{}",
            std::process::id(),
            master.port
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sentinels = Sentinels {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for i in 0..count {
            let port = free_port();
            let conf = sentinels.dir.join(format!("sentinel-{i}.conf"));
            // Sentinel rewrites its config file as it learns: it must be its own.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                     sentinel monitor {name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 2000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = sentinels.dir.display(),
                    master = master.port,
                ),
            )
            .unwrap();
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run redis-sentinel: {e}"));
            sentinels.ports.push(port);
            sentinels.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let quorum = sentinels.ask(0, &["SENTINEL", "CKQUORUM", name]);
            let replicas = sentinels.ask(0, &["SENTINEL", "REPLICAS", name]);
            let ready = matches!(&quorum, Ok(redis::Value::SimpleString(s)) if s.starts_with("OK"))
                && matches!(&replicas, Ok(redis::Value::Array(r)) if !r.is_empty());
            if ready {
                return Some(sentinels);
            }
            assert!(
                Instant::now() < deadline,
                "sentinels not ready: quorum {quorum:?}, replicas {replicas:?}; log:\n{}",
                std::fs::read_to_string(sentinels.dir.join("sentinel-0.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:<port>` of each sentinel.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The master's port as sentinel `i` names it now.
    pub fn master_port(&self, i: usize, name: &str) -> Option<u16> {
        match self.ask(i, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]) {
            Ok(redis::Value::Array(addr)) if addr.len() == 2 => {
                redis::from_redis_value::<String>(&addr[1])
                    .ok()?
                    .parse()
                    .ok()
            }
            _ => None,
        }
    }

    /// Runs one command on sentinel `i`.
    pub fn ask(&self, i: usize, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.ports[i]))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// The end of sentinel `i`'s log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("sentinel-{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` redis-server processes (no replicas) on tmpfs, its slots
/// assigned by `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..masters {
            // The cluster bus listens on the port + 10000: both must be free.
            let node = RedisServer::start_with(|dir| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").display().to_string(),
                    "--cluster-node-timeout".into(),
                    "1000".into(),
                ]
            })?;
            nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        Some(cluster)
    }

    /// Waits until every node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let info = match node.cmd(&["CLUSTER", "INFO"]) {
                    redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
                    redis::Value::VerbatimString { text, .. } => text,
                    other => panic!("{other:?}"),
                };
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `[...]` of the nodes' URLs, as TOML.
    pub fn nodes_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The node that holds `key`.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let slot = match self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]) {
            redis::Value::Int(n) => n,
            other => panic!("{other:?}"),
        };
        let redis::Value::Array(ranges) = self.nodes[0].cmd(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS")
        };
        for range in ranges {
            let redis::Value::Array(range) = range else {
                continue;
            };
            let (redis::Value::Int(from), redis::Value::Int(to), redis::Value::Array(master)) =
                (&range[0], &range[1], &range[2])
            else {
                continue;
            };
            if (*from..=*to).contains(&slot) {
                let port: i64 = redis::from_redis_value(&master[1]).unwrap();
                return self
                    .nodes
                    .iter()
                    .find(|n| i64::from(n.port) == port)
                    .unwrap();
            }
        }
        panic!("no node holds slot {slot}")
    }

    /// `KEYS pattern` on every node, with the node's index.
    pub fn keys(&self, pattern: &str) -> Vec<(usize, String)> {
        let mut all = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let redis::Value::Array(keys) = node.cmd(&["KEYS", pattern]) {
                for k in keys {
                    all.push((i, redis::from_redis_value::<String>(&k).unwrap()));
                }
            }
        }
        all
    }
}

impl RedisCluster {
    /// Adds a user on every node (ACLs are per node), e.g. `["on", ">pw", "~rg:*", "+@all"]`.
    pub fn add_user(&self, name: &str, rules: &[&str]) {
        for node in &self.nodes {
            let mut args = vec!["ACL", "SETUSER", name];
            args.extend(rules);
            node.cmd(&args);
        }
    }

    /// Moves the slot of `key` (with its keys) to node `to`, as a resharding does:
    /// IMPORTING/MIGRATING, MIGRATE of every key, then the new owner told to every node.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.node_of(key);
        let target = &self.nodes[to];
        assert_ne!(from.port, target.port, "{key} is on node {to} already");
        let slot = match self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]) {
            redis::Value::Int(n) => n.to_string(),
            other => panic!("{other:?}"),
        };
        let id = |node: &RedisServer| match node.cmd(&["CLUSTER", "MYID"]) {
            redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        };
        let (from_id, to_id) = (id(from), id(target));
        target.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        from.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = match from.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]) {
                redis::Value::Array(k) => k
                    .iter()
                    .map(|k| redis::from_redis_value(k).unwrap())
                    .collect(),
                other => panic!("{other:?}"),
            };
            if keys.is_empty() {
                break;
            }
            let port = target.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            from.cmd(&args);
        }
        for node in &self.nodes {
            node.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }
}
