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
    child: Child,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` from PATH on a free port and waits until it answers PING.
    /// Returns `None`, with a `SKIPPED` line on stderr, when the binary is missing, except
    /// under CI (the `CI` environment variable, which `.ci/run` sets): `.ci/run` installs
    /// redis-server, so a missing one there is a failure, and a green CI means every
    /// Redis test ran.
    pub fn start() -> Option<RedisServer> {
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
            let mut child = spawn(port, &dir);
            match wait_ready(&mut child, port, &dir) {
                Ok(()) => return Some(RedisServer { port, child, dir }),
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

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, e.g. to test Redis coming back. The data
    /// is gone: there is no persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, &self.dir);
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

fn spawn(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // No persistence: nothing is written, nothing survives a restart.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
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
