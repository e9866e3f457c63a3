//! Fault drills on a real `ringgate run` process: a full disk under the access log and
//! under the quota state file (a clear log line, service goes on, the state file never
//! corrupted), and `kill -9` while the state is being saved (the next start reads the
//! last complete state).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr: PathBuf,
}

/// Starts the binary on `config` (a `[server]`-less body: listeners are added here).
fn spawn(dir: &Path, body: &str) -> Proc {
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.join("ringgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 2\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{body}"
        ),
    )
    .unwrap();
    let stderr = dir.join(format!("stderr-{port}"));
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        stderr,
    };
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(p.admin).is_ok()
    }));
    p
}

impl Proc {
    fn get(&self, path: &str) -> u16 {
        exchange(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        )
        .status
    }

    fn metric(&self, line_start: &str) -> u64 {
        metric(self.admin, line_start).unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and the log it wrote.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.log()
    }

    fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quota_routes(up: SocketAddr) -> String {
    simple_routes(
        up,
        "",
        "limits = [ { key = \"route\", quota = \"100000/day\" } ]",
    )
}

#[test]
fn a_full_disk_under_the_access_log_drops_lines_not_requests() {
    let up = Upstream::echo();
    let dir = temp_dir("drill-log");
    // /dev/full: every write fails with "No space left on device".
    let p = spawn(
        &dir,
        &format!(
            "[access_log]\npath = \"/dev/full\"\n{}",
            simple_routes(up.addr, "", "")
        ),
    );
    for _ in 0..300 {
        assert_eq!(p.get("/logged"), 200);
    }
    assert!(eventually(Duration::from_secs(5), || {
        p.metric("ringgate_access_log_lines_total{outcome=\"dropped\"}") > 0
    }));
    let log = p.stop();
    let said = log
        .matches("access_log: cannot write: No space left on device")
        .count();
    assert!((1..=2).contains(&said), "{said} times:\n{log}");
}

/// A 64 KiB tmpfs for the state file; `None` (the test says SKIPPED) where mounting is
/// not allowed.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Option<SmallDisk> {
        let at = dir.join("small");
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(at))
    }

    /// Fills it up (no space is left for even a small file).
    fn fill(&self) {
        let _ = std::fs::write(self.0.join("filler"), vec![0u8; 128 * 1024]);
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The `used` count saved for the only quota in the state file at `path`.
fn saved_use(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the state file is corrupt ({e}): {text:?}"));
    v["quotas"][0]["used"].as_u64().unwrap_or(0)
}

#[test]
fn a_full_disk_under_the_state_file_keeps_the_last_state_and_serves_on() {
    let dir = temp_dir("drill-state");
    let Some(disk) = SmallDisk::mount(&dir) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and a kernel that allows it)");
        return;
    };
    let up = Upstream::echo();
    let state = disk.0.join("quotas.json");
    let p = spawn(
        &dir,
        &format!(
            "[traffic]\nstate_file = \"{}\"\n{}",
            state.display(),
            quota_routes(up.addr)
        ),
    );
    for _ in 0..5 {
        assert_eq!(p.get("/q"), 200);
    }
    assert!(eventually(Duration::from_secs(5), || state.exists()
        && saved_use(&state) == 5));
    // The disk fills up: saves fail, requests do not, the last state stays whole.
    disk.fill();
    for _ in 0..5 {
        assert_eq!(p.get("/q"), 200);
    }
    assert!(eventually(Duration::from_secs(5), || p
        .log()
        .contains("traffic.state_file: cannot write")));
    assert_eq!(saved_use(&state), 5);
    assert!(
        !disk.0.join("quotas.json.tmp").exists(),
        "no partial file left"
    );
    // Space again: the next save carries everything.
    disk.empty();
    assert!(eventually(Duration::from_secs(5), || saved_use(&state) == 10));
    let log = p.stop();
    assert!(log.contains("traffic.state_file: saved again"), "{log}");
    assert_eq!(
        log.matches("traffic.state_file: cannot write").count(),
        1,
        "{log}"
    );
}

#[test]
fn kill_9_while_saving_leaves_the_last_complete_state() {
    let up = Upstream::echo();
    let dir = temp_dir("drill-kill");
    let state = dir.join("quotas.json");
    let body = format!(
        "[traffic]\nstate_file = \"{}\"\nreconcile_interval = \"5ms\"\n{}",
        state.display(),
        quota_routes(up.addr)
    );
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for round in 0..8u64 {
        let p = spawn(&dir, &body);
        // Requests keep coming (so the state keeps changing and being saved) while the
        // process is killed at a moment that differs each round.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (stop, served, addr) = (stop.clone(), served.clone(), p.addr);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let ok = std::net::TcpStream::connect(addr).is_ok_and(|mut s| {
                        use std::io::{Read, Write};
                        let _ =
                            s.write_all(b"GET /k HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
                        let mut out = Vec::new();
                        let _ = s.read_to_end(&mut out);
                        out.starts_with(b"HTTP/1.1 200")
                    });
                    if ok {
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        };
        assert!(eventually(Duration::from_secs(5), || state.exists()));
        std::thread::sleep(Duration::from_millis(20 + 9 * round));
        p.kill_9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        load.join().unwrap();
        // Whatever the moment of the kill, the file is a complete state: never more
        // than was served, never corrupt.
        let served = served.load(std::sync::atomic::Ordering::SeqCst);
        assert!(saved_use(&state) <= served, "round {round}");
    }
    assert!(
        state.exists() && saved_use(&state) > 0,
        "the state was saved at all"
    );
    // The next start reads it without setting it aside.
    let p = spawn(&dir, &body);
    assert_eq!(p.get("/k"), 200);
    let log = p.stop();
    assert!(!log.contains("starting with empty quotas"), "{log}");
    assert!(!dir.join("quotas.json.bad").exists());
}
