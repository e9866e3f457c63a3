//! The process around the data plane: the CLI (`version`, `check`, `run`), the admin
//! health endpoint, graceful shutdown on SIGTERM, and bounded memory for a 1 GiB
//! streamed upload, all against the real `ringgate` binary or an in-process gateway.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringgate-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `ringgate check` on a config with this text: (exit code, stdout, stderr).
fn run_check(name: &str, text: &str) -> (Option<i32>, String, String) {
    let path = write_config(name, text);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn healthz(admin: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ringgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let (code, stdout, err) = run_check(
        "valid",
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[upstreams]]\nname = \"orders\"\ntargets = [\"127.0.0.1:9001\", { addr = \"127.0.0.1:9002\", weight = 3 }]\nbalance = \"round_robin\"\n[[routes]]\nname = \"orders.get\"\nhost = \"api.example.com\"\npath = \"/v1/orders/{id}\"\nmethods = [\"GET\"]\nupstream = \"orders\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("OK"));
}

#[test]
fn check_reports_every_problem_with_its_path() {
    let (code, _, err) = run_check(
        "invalid",
        "[server]\nlisten = [\"nowhere\"]\nworkers = 0\ndriver = \"kqueue\"\nhead_timeout = \"10 parsecs\"\n[[upstreams]]\nname = \"orders\"\ntargets = []\nbalance = \"fastest\"\n[[routes]]\nname = \"a\"\npath = \"/a/{\"\nupstream = \"orders\"\n[[routes]]\nname = \"b\"\npath = \"/b\"\nupstream = \"billing\"\n",
    );
    assert_eq!(code, Some(1));
    for expected in [
        "server.listen[0]: invalid address \"nowhere\"",
        "server.workers: invalid value",
        "server.driver: unknown driver \"kqueue\"",
        "server.head_timeout: invalid duration",
        "upstreams[0].targets: at least one target is required",
        "upstreams[0].balance: unknown balance \"fastest\"",
        "routes[0].path:",
        "routes[1].upstream: unknown upstream \"billing\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// Config errors show values as written in TOML, never Rust's Debug form (`Num(0)`,
/// `Str("x")`) nor serde's internal type names (`untagged enum NumOrString`).
#[test]
fn config_errors_show_values_not_rust_debug() {
    let messages = |text: &str| -> Vec<String> {
        ringgate::config::parse(text)
            .expect_err("invalid")
            .iter()
            .map(|e| e.to_string())
            .collect()
    };
    let server = |line: &str| format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n{line}\n");
    let target = |t: &str| {
        format!(
            "{}[[upstreams]]\nname = \"u\"\ntargets = [{t}]\n",
            server("")
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            server("workers = 0"),
            "server.workers: invalid value 0: expected \"auto\" or a number from 1 to 1024",
        ),
        (
            server("workers = 2000"),
            "server.workers: invalid value 2000: expected \"auto\" or a number from 1 to 1024",
        ),
        (
            server("workers = \"many\""),
            "server.workers: invalid value \"many\": expected \"auto\" or a number from 1 to 1024",
        ),
        (
            server("workers = true"),
            "invalid type: boolean `true`, expected a whole number or a string",
        ),
        (
            target("{ addr = \"127.0.0.1:1\", wieght = 3 }"),
            "unknown field `wieght`, expected `addr` or `weight`",
        ),
        (
            target("7"),
            "invalid type: integer `7`, expected an address \"host:port\" or a table { addr = \"host:port\", weight = N }",
        ),
    ];
    for (text, expected) in cases {
        let got = messages(&text);
        assert!(
            got.iter().any(|m| m.contains(expected)),
            "missing {expected:?} in {got:#?}\n{text}"
        );
        for m in &got {
            for debug in ["Num(", "Str(", "untagged", "NumOrString", "TargetFile"] {
                assert!(!m.contains(debug), "{debug:?} in {m:?}");
            }
        }
    }
    // The same words from `ringgate check`.
    let (code, _, err) = run_check("workers0", &server("workers = 0"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "  server.workers: invalid value 0: expected \"auto\" or a number from 1 to 1024\n"
        ),
        "{err}"
    );
}

#[test]
fn check_rejects_unknown_fields_and_missing_files() {
    let (code, _, err) = run_check("typo", "[server]\nlisten = [\"127.0.0.1:1\"]\nwokers = 2\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown field `wokers`"), "{err}");
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/ringgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/ringgate.toml"));
}

#[test]
fn check_warns_when_secrets_are_readable_by_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ringgate-perms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let apps = dir.join("apps.toml");
    std::fs::write(
        &apps,
        "[[apps]]\nkey = \"a\"\nsecrets = [\"a-secret-of-16-bytes\"]\n",
    )
    .unwrap();
    let config = dir.join("ringgate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[apps]\nfile = \"apps.toml\"\n\
         [admin]\ntoken = \"admin-token-0123456789\"\n",
    )
    .unwrap();
    let check = || {
        let out = Command::new(BIN)
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&apps, 0o644);
    mode(&config, 0o640);
    let (code, err) = check();
    // A warning, not an error: the config is valid.
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: {}: holds app secrets and is readable by other users (mode 0644)",
            apps.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("holds the admin token and is readable by other users (mode 0640)"),
        "{err}"
    );
    // Neither secret is quoted.
    assert!(!err.contains("a-secret-of-16-bytes") && !err.contains("admin-token-0123456789"));
    mode(&apps, 0o600);
    mode(&config, 0o600);
    let (code, err) = check();
    assert_eq!((code, err.as_str()), (Some(0), ""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU ticks (user + system) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Out of file descriptors, the accept loop backs off instead of spinning (a few CPU
/// ticks a second, a warning at most once a second), and serves again once some close.
#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let up = Upstream::echo();
    let (port, admin_port) = (free_port(), free_port());
    let path = write_config(
        "emfile",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}",
            simple_routes(up.addr, "", "")
        ),
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {BIN} run --config {}",
            path.display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || healthz(admin) == Some(200)));
    // More idle connections than the process has descriptors: the rest wait in the
    // backlog while accept fails with EMFILE.
    let held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 30,
        "{spent} ticks in a second out of descriptors: spinning"
    );
    drop(held);
    // Recovered: served again, and the failures were counted.
    assert!(eventually(Duration::from_secs(10), || {
        exchange(addr, b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n").status == 200
    }));
    let errors = metric(admin, "ringgate_accept_errors_total{").unwrap_or(0);
    assert!(errors > 0, "{errors} accept errors counted");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // At most one a second from the worker and one from the admin listener.
    let warnings = stderr.matches("accept failed").count();
    assert!(
        (1..=8).contains(&warnings),
        "{warnings} warnings:\n{stderr}"
    );
}

/// A running `ringgate run` process, killed if the test fails midway.
struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_gateway(name: &str, driver: &str, upstream: SocketAddr, extra_server: &str) -> Proc {
    let (port, admin_port) = (free_port(), free_port());
    let path = write_config(
        name,
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 2\ndriver = \"{driver}\"\n{extra_server}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}",
            simple_routes(upstream, "", "max_body_bytes = \"2GiB\"")
        ),
    );
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
    };
    assert!(
        eventually(Duration::from_secs(10), || healthz(p.admin) == Some(200)),
        "gateway became healthy"
    );
    p
}

fn sigterm(child: &Child) {
    signal(child, libc::SIGTERM);
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and still own; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

/// SIGHUP reloads the config file: new requests see the new routes; a bad file is
/// reported and the running config keeps serving.
#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_on_errors() {
    let (a, b) = (
        Upstream::echo(),
        Upstream::start(|mut c, _| {
            while c.read_request().is_some() {
                if !c.respond(b"from b") {
                    return;
                }
            }
        }),
    );
    let p = spawn_gateway("sighup", "io_uring", a.addr, "");
    let config_path = std::env::temp_dir()
        .join(format!("ringgate-test-{}-sighup", std::process::id()))
        .join("ringgate.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    assert_eq!(
        exchange(p.addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").body_str(),
        "GET /x 0"
    );
    std::fs::write(
        &config_path,
        original.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    signal(&p.child, libc::SIGHUP);
    let body = || exchange(p.addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").body_str();
    assert!(
        eventually(Duration::from_secs(3), || body() == "from b"),
        "the reloaded route is live"
    );
    std::fs::write(&config_path, "[server]\nworkers = \"lots\"\n").unwrap();
    signal(&p.child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        body(),
        "from b",
        "a bad config leaves the running one in place"
    );
    assert_eq!(healthz(p.admin), Some(200));
}

fn sigterm_drains_in_flight_requests_and_exits_zero(driver: Driver) {
    // The upstream holds each request for 600 ms before answering.
    let up = Upstream::start(|mut c, _| {
        while let Some(_req) = c.read_request() {
            std::thread::sleep(Duration::from_millis(600));
            if !c.respond(b"slow but complete") {
                return;
            }
        }
    });
    let mut p = spawn_gateway(
        &format!("drain-{}", driver.name()),
        driver.name(),
        up.addr,
        "drain_timeout = \"5s\"",
    );
    let mut idle = Client::connect(p.addr);
    assert_eq!(idle.get("/warm").status, 200);
    let mut busy = Client::connect(p.addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    sigterm(&p.child);
    // Draining: health turns 503, the idle keep-alive connection is closed, and the
    // request in flight still completes.
    assert!(
        eventually(Duration::from_secs(2), || healthz(p.admin) == Some(503)),
        "healthz 503 while draining"
    );
    assert!(
        idle.is_closed(Duration::from_secs(2)),
        "idle keep-alive connection closed"
    );
    // Checked while the process still runs (once it has exited, another test may bind
    // the same port), within a few worker ticks: each worker stops listening when it
    // takes the drain command, and a loaded machine may run one late.
    assert!(
        eventually(Duration::from_millis(400), || !accepts(p.addr)),
        "no longer accepting while draining"
    );
    let r = busy.read_response();
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "slow but complete")
    );
    assert_eq!(r.header("connection"), Some("close"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway exits after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains(&format!("driver {}", driver.name())),
        "log names the driver:\n{log}"
    );
}

/// Whether something accepts connections at `addr`. A loopback connect to a free port in
/// the ephemeral range can, rarely, connect a socket to itself: that is not accepting.
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

fn healthz_reports_ready_and_draining(driver: Driver) {
    let up = Upstream::echo();
    let gw = Gateway::simple(driver, up.addr);
    let admin = gw.admin.expect("admin listener");
    assert_eq!(healthz(admin), Some(200));
    let mut s = TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 404") && out.contains("\"route_not_found\""),
        "{out}"
    );
    gw.handle().state().draining.store(true, Ordering::SeqCst);
    assert_eq!(healthz(admin), Some(503));
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A 1 GiB upload streams through with the gateway's peak memory growing by a few MiB.
fn one_gib_upload_has_bounded_memory(driver: Driver) {
    const SIZE: u64 = 1 << 30;
    let received = Arc::new(AtomicU64::new(0));
    let rx = received.clone();
    let up = Upstream::start(move |mut c, _| {
        // Read the head, then count body bytes without keeping them.
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let body_start = loop {
            let n = c.stream.read(&mut buf).unwrap();
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = find(&head, b"\r\n\r\n") {
                break head.len() - (i + 4);
            }
        };
        let mut total = body_start as u64;
        while total < SIZE {
            let n = c.stream.read(&mut buf).unwrap();
            assert!(n > 0, "upstream saw the whole body");
            total += n as u64;
        }
        rx.store(total, Ordering::SeqCst);
        c.respond(total.to_string().as_bytes());
    });
    let p = spawn_gateway(
        &format!("upload-{}", driver.name()),
        driver.name(),
        up.addr,
        "",
    );
    let mut c = Client::connect(p.addr);
    let before = vm_hwm_kib(p.child.id());
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    );
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        c.stream.write_all(&chunk).unwrap();
    }
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, SIZE.to_string()));
    assert_eq!(received.load(Ordering::SeqCst), SIZE);
    let grown_kib = vm_hwm_kib(p.child.id()).saturating_sub(before);
    assert!(
        grown_kib < 8 * 1024,
        "peak memory grew by {grown_kib} KiB for a 1 GiB upload"
    );
}

on_both_drivers!(
    sigterm_drains_in_flight_requests_and_exits_zero,
    healthz_reports_ready_and_draining,
    one_gib_upload_has_bounded_memory
);

/// The CPUs a thread of this process may run on, from /proc (e.g. "1" or "0-3").
fn thread_cpus(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .unwrap();
            out.push(line.split_whitespace().nth(1).unwrap().to_string());
        }
    }
    out
}

#[test]
fn auto_workers_are_one_per_cpu_each_pinned_and_every_listen_address_serves() {
    let up = Upstream::echo();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nworkers = \"auto\"\n[admin]\nlisten = \"\"\n{}",
        simple_routes(up.addr, "", "")
    );
    let handle = ringgate::gateway::start(ringgate::config::parse(&text).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(handle.state().workers, cpus.len());
    for (i, cpu) in cpus.iter().enumerate() {
        assert_eq!(
            thread_cpus(&format!("ringgate-w{i}")),
            [cpu.to_string()],
            "worker {i} pinned to CPU {cpu}"
        );
    }
    assert_eq!(handle.listen_addrs().len(), 2);
    for &addr in handle.listen_addrs() {
        assert_eq!(
            exchange(addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").status,
            200,
            "{addr}"
        );
    }
    assert_eq!(
        handle.admin_addr(),
        None,
        "admin switched off with listen = \"\""
    );
    handle.shutdown();
}

#[test]
fn ring_size_and_sqpoll_are_configurable() {
    let up = Upstream::echo();
    let gw = Gateway::start(
        Driver::IoUring,
        1,
        "uring_entries = 256\nsqpoll_idle = \"10ms\"",
        &simple_routes(up.addr, "", ""),
    );
    let mut c = gw.connect();
    for _ in 0..3 {
        assert_eq!(c.get("/sq").status, 200);
    }
}

#[test]
fn check_rejects_durations_out_of_range() {
    let (code, _, err) = run_check(
        "durations",
        "[server]\nlisten = [\"127.0.0.1:1\"]\nhead_timeout = \"0s\"\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:2\"]\nresponse_timeout = \"5000000000000000h\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("server.head_timeout: must be between 1ms and 7 days"),
        "{err}"
    );
    assert!(
        err.contains("upstreams[0].response_timeout: must be between 1ms and 7 days"),
        "{err}"
    );
}

/// `ringgate sign` reproduces the worked example of docs/signing.md, whose signature was
/// also computed with python3's hmac and hashlib.
#[test]
fn sign_prints_the_documented_signature() {
    let out = Command::new(BIN)
        .args([
            "sign",
            "--key",
            "app-7f3a",
            "--method",
            "GET",
            "--url",
            "http://api.example.com/v1/orders/42?b=2&a=1&a=0&q=x%20y+z&tilde=%7e&name=caf%C3%A9&flag",
            "--timestamp",
            "1700000000",
            "--nonce",
            "n0nce-0123456789abcdef",
        ])
        .env("RINGGATE_SECRET", "current-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "X-Rg-Signature: 364e980572b9169bd56dbb2882d2add561f66e3efdff1db90dcff7fc200ab13c"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("a=0&a=1&b=2&flag=&name=caf%C3%A9&q=x%20y%2Bz&tilde=~"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("current-secret"),
        "the secret is not echoed"
    );
}
