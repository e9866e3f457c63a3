//! systemd integration: the notify protocol against a fake `NOTIFY_SOCKET` (ready,
//! reloading and ready again, stopping, watchdog pings, no pings while a worker is
//! stuck, the main process handed over at an upgrade), and the shipped unit checked by
//! `systemd-analyze` (verify, and a security exposure score).

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

/// The datagrams received within `within`, until one contains `until`.
fn receive_until(socket: &UnixDatagram, until: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message.contains(until);
                got.push(message);
                if done {
                    return got;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {until:?} within {within:?}; got {got:?}")
}

/// A fake `NOTIFY_SOCKET` in a fresh folder: its path, the bound socket, the path for a
/// config file beside it, and an upstream.
fn notify_fixture(tag: &str) -> (PathBuf, UnixDatagram, PathBuf, Upstream) {
    let dir = temp_dir(tag);
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    (
        socket_path,
        socket,
        dir.join("ringgate.toml"),
        Upstream::echo(),
    )
}

/// Starts `cmd` as systemd would with `Type=notify` and `WatchdogSec` (a ping every
/// 100 ms at most 400 ms apart), its output dropped.
fn start_notifying(mut cmd: Command, socket_path: &std::path::Path) -> KilledOnDrop {
    let child = cmd
        .env("NOTIFY_SOCKET", socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KilledOnDrop(child)
}

/// A gateway with two workers and a route `path` to `up`; `tables` added after
/// `[server]` (which drains for 2 s at most).
fn gateway_config(up: &Upstream, tables: &str, path: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\ndrain_timeout = \"2s\"\n{tables}\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\npath = \"{path}\"\nupstream = \"up\"\n",
        up.addr
    )
}

#[test]
fn ready_reloading_stopping_and_watchdog_pings_reach_systemd() {
    let (socket_path, socket, config, up) = notify_fixture("systemd-notify");
    let text = |body: &str| gateway_config(&up, "[admin]\nlisten = \"127.0.0.1:0\"\n", body);
    std::fs::write(&config, text("/a/*")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&config);
    let mut child = start_notifying(cmd, &socket_path);
    let pid = child.0.id();

    let got = receive_until(&socket, "READY=1", Duration::from_secs(10));
    let ready = got.last().unwrap();
    assert!(ready.contains("STATUS=generation 1"), "{ready}");

    // Pings every quarter interval (100 ms): at least 5 in a second.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let got = receive_until(&socket, "WATCHDOG=1", Duration::from_secs(1));
        pings += got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    }
    assert!(pings >= 5, "{pings} pings in a second");

    // A reload: RELOADING=1 (with the monotonic clock systemd wants), then READY=1 with
    // the new generation.
    std::fs::write(&config, text("/b/*")).unwrap();
    signal(pid, "-HUP");
    let got = receive_until(&socket, "RELOADING=1", Duration::from_secs(5));
    let reloading = got.last().unwrap();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let got = receive_until(&socket, "READY=1", Duration::from_secs(5));
    assert!(
        got.last().unwrap().contains("STATUS=generation 2"),
        "{got:?}"
    );

    // Stopping: STOPPING=1, then a clean exit.
    signal(pid, "-TERM");
    receive_until(&socket, "STOPPING=1", Duration::from_secs(5));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// An upgrade (`SIGUSR2`) under systemd: the old process names its successor the main
/// process (`MAINPID=`), the successor says `READY=1` and pings the watchdog (systemd's
/// `WATCHDOG_PID` names the old process: the successor must not take it as not its own),
/// and once the old process has exited the pings go on.
#[test]
fn an_upgrade_makes_the_successor_the_main_process() {
    let (socket_path, socket, config, up) = notify_fixture("systemd-upgrade");
    std::fs::write(&config, gateway_config(&up, "", "/a/*")).unwrap();
    // As systemd starts it: WATCHDOG_PID is the main process's own pid.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "WATCHDOG_PID=$$ exec {BIN} run --config {}",
        config.display()
    ));
    let mut old = start_notifying(cmd, &socket_path);
    // The successor is not our child: found by its config's path however the test ends.
    let _successors = KillMatching(config.display().to_string());
    receive_until(&socket, "READY=1", Duration::from_secs(10));
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(2));

    signal(old.0.id(), "-USR2");
    let got = receive_until(&socket, "MAINPID=", Duration::from_secs(20));
    let handed = got.last().unwrap();
    let new_pid: u32 = handed
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old.0.id());
    assert!(
        handed.contains(&format!("STATUS=handed over to process {new_pid}")),
        "{handed}"
    );
    let got = receive_until(&socket, "READY=1", Duration::from_secs(5));
    assert!(!got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    // The old process exits; the pings go on (the successor's).
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(1));
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let got = receive_until(&socket, "WATCHDOG=1", Duration::from_secs(1));
        pings += got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    }
    assert!(pings >= 5, "{pings} pings in a second from the successor");
    signal(new_pid, "-TERM");
    receive_until(&socket, "STOPPING=1", Duration::from_secs(5));
}

/// Kills the processes running with this config file (an upgrade's successor, not our
/// child) however the test ends.
struct KillMatching(String);

impl Drop for KillMatching {
    fn drop(&mut self) {
        // The config path as a regular expression matching just it, at the line's end.
        let pattern: String = self
            .0
            .chars()
            .flat_map(|c| {
                let special = ".^$*+?()[]{}|\\".contains(c);
                special.then_some('\\').into_iter().chain([c])
            })
            .collect();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!(" run --config {pattern}$")])
            .status();
    }
}

/// A worker whose event loop is stuck stops the watchdog's pings; they resume once it
/// runs again.
#[test]
fn a_stuck_worker_stops_the_watchdog_pings() {
    let dir = temp_dir("systemd-watchdog");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let up = Upstream::echo();
    let gw = Gateway::start(
        Driver::IoUring,
        2,
        "",
        &format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
             [[routes]]\nname = \"r\"\npath = \"/a/*\"\nupstream = \"up\"\n",
            up.addr
        ),
    );
    let notifier =
        ringgate::control::systemd::Notifier::to(&socket_path.display().to_string()).unwrap();
    let _supervisor = ringgate::control::systemd::Supervisor::start(
        notifier,
        gw.handle().shared_state(),
        Some(Duration::from_millis(400)),
    )
    .unwrap();
    receive_until(&socket, "READY=1", Duration::from_secs(5));
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(2));

    // Hold worker 0's thread: it answers a metrics scrape into a rendezvous channel that
    // nobody reads yet, so it blocks there (no ticks).
    let (report_tx, report_rx) = crossbeam_channel::bounded(0);
    let stalled = gw.handle().state().worker_commands.lock().unwrap()[0].clone();
    stalled
        .send(ringgate::runtime::WorkerCommand::Scrape(report_tx))
        .unwrap();
    // Half the interval (200 ms) to be seen stuck, and a ping already on its way: then
    // silence.
    std::thread::sleep(Duration::from_millis(500));
    while socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .and_then(|_| socket.recv(&mut [0u8; 512]))
        .is_ok()
    {}
    socket
        .set_read_timeout(Some(Duration::from_millis(1200)))
        .unwrap();
    let mut buf = [0u8; 512];
    let silent = match socket.recv(&mut buf) {
        Err(_) => true,
        Ok(n) => !String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"),
    };
    assert!(silent, "a ping while worker 0 was stuck");

    // Free the worker: the pings resume.
    report_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the stalled worker answers once unblocked");
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(2));
}

/// The shipped unit passes `systemd-analyze verify` (its binary paths pointed at this
/// build) and `systemd-analyze security` rates it OK or better.
#[test]
fn the_unit_verifies_and_scores_well() {
    if !Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(std::env::var_os("CI").is_none(), "CI has systemd-analyze");
        eprintln!("SKIPPED: systemd-analyze not found");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ringgate.service"
    ))
    .unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("WatchdogSec="),
        "{unit}"
    );
    let dir = temp_dir("systemd-unit");
    let path = dir.join("ringgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ringgate", BIN)).unwrap();
    assert_unit_verifies(&path);
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for ringgate.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}
