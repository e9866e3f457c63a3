//! Zero-downtime upgrade (`SIGUSR2`): a `ringgate run` process starts the binary now at
//! its path as its successor and hands it its listening sockets; under keep-alive and
//! new-connection load, twice in a row, not one request fails and not one connection is
//! refused. A keep-alive connection idle at the handover is served its next request by
//! the old process (with `Connection: close`); a successor that cannot start leaves the
//! old process serving.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

/// A gateway process started from a copy of the binary in its own folder (so the test
/// can replace it as a package upgrade would), logging to a file. Its successors are not
/// children of the test: they are found by pid in the log, and killed on drop.
struct Upgradable {
    dir: PathBuf,
    first: KilledOnDrop,
    log: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Upgradable {
    fn start(tag: &str, driver: Driver) -> Upgradable {
        Upgradable::start_with(tag, driver, "", "")
    }

    /// With `tables` (whole TOML tables) added to the config and `route` (lines) to
    /// its one route.
    fn start_with(tag: &str, driver: Driver, tables: &str, route: &str) -> Upgradable {
        let dir = temp_dir(tag);
        let bin = dir.join("ringgate");
        std::fs::copy(BIN, &bin).unwrap();
        let up = upstream_ok();
        // Port 0: the successor keeps the port it is handed, as written in the config.
        std::fs::write(
            dir.join("ringgate.toml"),
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\ndriver = \"{}\"\n\
                 drain_timeout = \"5s\"\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n\
                 [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
                 {tables}\n\
                 [[routes]]\nname = \"r\"\npath = \"/r/*\"\nupstream = \"up\"\n{route}\n",
                driver.name()
            ),
        )
        .unwrap();
        let log = dir.join("stderr.log");
        let child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(dir.join("ringgate.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let first = KilledOnDrop(child);
        let serving = format!("ringgate {} listening on ", env!("CARGO_PKG_VERSION"));
        let text = wait_for_log(&log, &serving, 1);
        let port_after = |marker: &str| -> SocketAddr {
            let at = text.find(marker).unwrap() + marker.len();
            let addr: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            addr.parse().unwrap()
        };
        let addr = port_after(&serving);
        let admin = port_after("admin listening on ");
        Upgradable {
            dir,
            first,
            log,
            addr,
            admin,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Puts a new binary at the path the gateway runs from, as a package upgrade does
    /// (a new file renamed over the old one: the running process keeps the old one).
    fn replace_binary(&self) {
        let new = self.dir.join("ringgate.new");
        std::fs::copy(BIN, &new).unwrap();
        std::fs::rename(&new, self.dir.join("ringgate")).unwrap();
    }

    /// Sends SIGUSR2 to `pid` and waits for the `nth` handover in the log; returns the
    /// successor's pid.
    fn upgrade(&self, pid: u32, nth: usize) -> u32 {
        signal(pid, "-USR2");
        self.upgrade_pid(nth)
    }

    /// The pid of the `nth` successor, once the log names it.
    fn upgrade_pid(&self, nth: usize) -> u32 {
        let text = wait_for_log(&self.log, "upgrade: process ", nth);
        let at = text
            .match_indices("upgrade: process ")
            .nth(nth - 1)
            .unwrap()
            .0;
        text[at + "upgrade: process ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        // Successors are not our children: every process run with this folder's config.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(format!(
                " run --config {}$",
                regex_quoted(&self.dir.join("ringgate.toml"))
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a regular expression matching just it.
fn regex_quoted(path: &Path) -> String {
    path.display()
        .to_string()
        .chars()
        .flat_map(|c| {
            let special = ".^$*+?()[]{}|\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) has no fds left: count it gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// The log once `marker` appears in it `times` times (within 20 s).
fn wait_for_log(log: &Path, marker: &str, times: usize) -> String {
    let mut text = String::new();
    let found = eventually(Duration::from_secs(20), || {
        text = std::fs::read_to_string(log).unwrap_or_default();
        text.matches(marker).count() >= times
    });
    assert!(found, "no {marker:?} (x{times}) in the log:\n{text}");
    text
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    served: AtomicU64,
    /// 429s: a quota used up.
    limited: AtomicU64,
    /// Requests that got no 200: an error, a cut connection, another status.
    failed: Mutex<Vec<String>>,
    /// Connections refused (or reset before a request could be sent).
    refused: AtomicU64,
}

impl Tally {
    /// Counts one answer (`what` names the client in a failure); true when the
    /// connection is to be closed.
    fn count(&self, answer: std::io::Result<(u16, bool, Vec<u8>)>, what: &str) -> bool {
        match answer {
            Ok((200, close, body)) if body == b"ok" => {
                self.served.fetch_add(1, Ordering::SeqCst);
                close
            }
            Ok((429, close, _)) => {
                self.limited.fetch_add(1, Ordering::SeqCst);
                close
            }
            Ok((status, _, body)) => {
                let body = String::from_utf8_lossy(&body).into_owned();
                self.failed
                    .lock()
                    .unwrap()
                    .push(format!("{what}: {status} {body}"));
                true
            }
            Err(e) => {
                self.failed.lock().unwrap().push(format!("{what}: {e}"));
                true
            }
        }
    }
}

/// One response's status, whether it closes the connection, and its body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("closed before a response"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if header == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, close, body))
}

fn connect(addr: SocketAddr, tally: &Tally) -> Option<BufReader<TcpStream>> {
    match TcpStream::connect(addr) {
        Ok(s) => {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_nodelay(true).unwrap();
            Some(BufReader::new(s))
        }
        Err(_) => {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            None
        }
    }
}

/// Requests one after another on a keep-alive connection, a new one when the gateway
/// closes it (after a `Connection: close` response). No retries: a request that fails
/// is counted as failed.
fn keep_alive_client(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut conn) = connect(addr, tally) else {
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let sent = conn
                .get_mut()
                .write_all(b"GET /r/ka HTTP/1.1\r\nHost: t\r\n\r\n");
            if tally.count(sent.and_then(|()| read_response(&mut conn)), "keep-alive") {
                break;
            }
        }
    }
}

/// A new connection for every request.
fn new_connection_client(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut conn) = connect(addr, tally) else {
            continue;
        };
        let sent = conn
            .get_mut()
            .write_all(b"GET /r/new HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        tally.count(
            sent.and_then(|()| read_response(&mut conn)),
            "new connection",
        );
    }
}

/// Load from `keep_alive` + `fresh` client threads until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, keep_alive: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..keep_alive + fresh)
            .map(|i| {
                let (stop, tally) = (stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    if i < keep_alive {
                        keep_alive_client(addr, &stop, &tally);
                    } else {
                        new_connection_client(addr, &stop, &tally);
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    fn served(&self) -> u64 {
        self.tally.served.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests were served beyond what had been.
    fn serves_more(&self, more: u64) {
        let from = self.served();
        assert!(
            eventually(Duration::from_secs(10), || self.served() >= from + more),
            "load stalled at {} served; failed: {:?}",
            self.served(),
            self.tally.failed.lock().unwrap()
        );
    }

    fn finish(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.tally
    }
}

fn upgrade_under_load_fails_nothing(driver: Driver) {
    let mut gw = Upgradable::start("upgrade-load", driver);
    let first_pid = gw.first.0.id();
    let load = Load::start(gw.addr, 6, 2);
    load.serves_more(300);

    // First upgrade: the binary replaced, then SIGUSR2. The old process exits by itself.
    gw.replace_binary();
    let second_pid = gw.upgrade(first_pid, 1);
    assert_ne!(second_pid, first_pid);
    let status = wait_exit(&mut gw.first, Duration::from_secs(15));
    assert!(status.success(), "the old process exited with {status}");
    load.serves_more(300);
    assert!(alive(second_pid));

    // The successor upgrades in turn.
    gw.replace_binary();
    let third_pid = gw.upgrade(second_pid, 2);
    assert!(
        eventually(Duration::from_secs(15), || !alive(second_pid)),
        "the second process did not exit:\n{}",
        gw.log_text()
    );
    load.serves_more(300);

    let tally = load.finish();
    let failed = tally.failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert_eq!(
        tally.refused.load(Ordering::SeqCst),
        0,
        "connections refused"
    );
    // The admin listener went along: the third process answers on the same port.
    assert_eq!(Client::connect(gw.admin).get("/healthz").status, 200);
    let log = gw.log_text();
    assert_eq!(
        log.matches("upgrade: took over from the old process")
            .count(),
        2,
        "{log}"
    );
    signal(third_pid, "-TERM");
    assert!(eventually(Duration::from_secs(10), || !alive(third_pid)));
}

fn wait_exit(child: &mut KilledOnDrop, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A keep-alive connection that has been served one request, now idle.
fn idle_keep_alive(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut conn = connect(addr, &Tally::default()).unwrap();
    conn.get_mut()
        .write_all(b"GET /r/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (status, close, _) = read_response(&mut conn).unwrap();
    assert_eq!((status, close), (200, false));
    conn
}

/// A keep-alive connection idle when the handover comes is not closed under its client:
/// its next request is served by the old process, with `Connection: close`, and only
/// then does the old process exit.
fn an_idle_connection_is_served_its_next_request(driver: Driver) {
    let mut gw = Upgradable::start("upgrade-idle", driver);
    let pid = gw.first.0.id();
    let mut idle = idle_keep_alive(gw.addr);

    let successor = gw.upgrade(pid, 1);
    wait_for_log(&gw.log, "serves; draining", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        gw.first.0.try_wait().unwrap().is_none(),
        "the old process left its idle connection"
    );
    idle.get_mut()
        .write_all(b"GET /r/2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (status, close, body) = read_response(&mut idle).unwrap();
    assert_eq!((status, close, body.as_slice()), (200, true, &b"ok"[..]));
    let status = wait_exit(&mut gw.first, Duration::from_secs(5));
    assert!(status.success());
    assert!(alive(successor));
}

/// A successor that cannot start (the config now broken) changes nothing: the old
/// process says why and serves on; once the config is fixed, the upgrade goes through.
fn a_failed_upgrade_leaves_the_old_process_serving(driver: Driver) {
    let mut gw = Upgradable::start("upgrade-fail", driver);
    let pid = gw.first.0.id();
    let config = gw.dir.join("ringgate.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let load = Load::start(gw.addr, 2, 1);
    load.serves_more(100);
    std::fs::write(
        &config,
        good.replace("upstream = \"up\"\n", "upstream = \"gone\"\n"),
    )
    .unwrap();
    signal(pid, "-USR2");
    let log = wait_for_log(
        &gw.log,
        "upgrade failed, still serving: the new process failed: ",
        1,
    );
    assert!(
        log.contains("1 config problem(s), the first: routes[0].upstream"),
        "{log}"
    );
    load.serves_more(100);
    assert!(gw.first.0.try_wait().unwrap().is_none());
    // The failed successor was reaped (no zombie child left).
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert_eq!(children.trim(), "", "children left: {children}");

    std::fs::write(&config, good).unwrap();
    let successor = gw.upgrade(pid, 1);
    let status = wait_exit(&mut gw.first, Duration::from_secs(15));
    assert!(status.success());
    load.serves_more(100);
    let tally = load.finish();
    assert!(
        tally.failed.lock().unwrap().is_empty(),
        "{:?}",
        tally.failed.lock().unwrap()
    );
    assert_eq!(tally.refused.load(Ordering::SeqCst), 0);
    signal(successor, "-TERM");
    assert!(eventually(Duration::from_secs(10), || !alive(successor)));
}

/// Signals that arrive while the successor starts (the old process's main thread waits
/// for it then) neither fail the upgrade nor get lost: a reload or a log reopening is
/// moot (the successor reads both afresh), a stop is passed on to the successor.
fn signals_during_an_upgrade(driver: Driver) {
    let mut gw = Upgradable::start("upgrade-signals", driver);
    let pid = gw.first.0.id();
    signal(pid, "-USR2");
    for _ in 0..5 {
        signal(pid, "-HUP");
        signal(pid, "-USR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = wait_for_log(&gw.log, "upgrade: process ", 1);
    assert!(!text.contains("upgrade failed"), "{text}");
    let status = wait_exit(&mut gw.first, Duration::from_secs(15));
    assert!(status.success());
    assert_eq!(Client::connect(gw.addr).get("/r/x").status, 200);

    // A stop during an upgrade stops the service: both processes end.
    let successor = gw.upgrade_pid(1);
    wait_for_log(&gw.log, "upgrade: the old process has stopped", 1);
    signal(successor, "-USR2");
    signal(successor, "-TERM");
    let third = gw.upgrade_pid(2);
    wait_for_log(&gw.log, "a stop came during the upgrade", 1);
    assert!(
        eventually(Duration::from_secs(15), || !alive(successor)
            && !alive(third)),
        "still running:\n{}",
        gw.log_text()
    );
}

/// While the process it took over from still drains, a successor refuses to upgrade
/// again (it is yet to count that process's last quota use); once it has stopped, the
/// next upgrade goes through.
fn one_upgrade_at_a_time(driver: Driver) {
    let gw = Upgradable::start("upgrade-one", driver);
    let pid = gw.first.0.id();
    // An idle keep-alive connection keeps the old process draining (up to 5 s).
    let idle = idle_keep_alive(gw.addr);
    let successor = gw.upgrade(pid, 1);
    signal(successor, "-USR2");
    wait_for_log(
        &gw.log,
        "still draining; upgrade again once it has stopped",
        1,
    );
    drop(idle);
    wait_for_log(&gw.log, "upgrade: the old process has stopped", 1);
    let third = gw.upgrade(successor, 2);
    assert!(eventually(Duration::from_secs(15), || !alive(successor)));
    assert!(alive(third));
    assert_eq!(Client::connect(gw.addr).get("/r/x").status, 200);
}

const APP_SECRET: &str = "upgrade-secret-0001";

/// A signed `GET path` for app `app-up` with `nonce`, on keep-alive.
fn signed_request(path: &str, nonce: &str) -> String {
    let s = ringgate::auth::sign::sign_request(
        "app-up",
        APP_SECRET.as_bytes(),
        "GET",
        path,
        "",
        b"",
        ringgate::auth::check::unix_now(),
        nonce,
    )
    .unwrap();
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nX-Rg-Key: app-up\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {nonce}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.timestamp, s.signature
    )
}

/// The replay cache goes along: a signed request the old process accepted, before the
/// upgrade or while it drained, is a replay to the new one.
fn a_request_the_old_process_accepted_is_a_replay_to_the_new_one(driver: Driver) {
    let apps_dir = temp_dir("upgrade-replay-apps");
    let apps = write_apps_file(
        &apps_dir,
        &format!("[[apps]]\nkey = \"app-up\"\nsecrets = [\"{APP_SECRET}\"]\n"),
    );
    let gw = Upgradable::start_with(
        "upgrade-replay",
        driver,
        &format!(
            "[apps]\nfile = \"{apps}\"\n\
             [[routes]]\nname = \"signed\"\npath = \"/s/*\"\nupstream = \"up\"\nauth = \"hmac\"\n"
        ),
        "",
    );
    let pid = gw.first.0.id();
    let before = unique_nonce("before");
    assert_eq!(
        signed_get(gw.addr, "app-up", APP_SECRET, "/s/a", &before).status,
        200
    );
    let mut idle = idle_keep_alive(gw.addr);

    gw.upgrade(pid, 1);
    wait_for_log(&gw.log, "serves; draining", 1);
    // A replay is refused at once, whichever process takes it: the new one had the old
    // one's entries before it served.
    let r = signed_get(gw.addr, "app-up", APP_SECRET, "/s/a", &before);
    assert_eq!(r.status, 401, "{}", r.body_str());
    // Its workers drain from their next tick (10 ms).
    std::thread::sleep(Duration::from_millis(300));
    // The old process serves this connection's next request (a fresh signed one).
    let during = unique_nonce("during");
    idle.get_mut()
        .write_all(signed_request("/s/b", &during).as_bytes())
        .unwrap();
    let (status, close, _) = read_response(&mut idle).unwrap();
    assert_eq!((status, close), (200, true));
    wait_for_log(&gw.log, "upgrade: the old process has stopped", 1);

    for nonce in [&before, &during] {
        let r = signed_get(gw.addr, "app-up", APP_SECRET, "/s/a", nonce);
        assert_eq!(r.status, 401, "{nonce}: {}", r.body_str());
        assert!(r.body_str().contains("replay"), "{}", r.body_str());
    }
    let fresh = unique_nonce("after");
    assert_eq!(
        signed_get(gw.addr, "app-up", APP_SECRET, "/s/a", &fresh).status,
        200
    );
    let _ = std::fs::remove_dir_all(&apps_dir);
}

on_both_drivers!(
    upgrade_under_load_fails_nothing,
    an_idle_connection_is_served_its_next_request,
    a_failed_upgrade_leaves_the_old_process_serving,
    a_daily_quota_stays_exact_across_an_upgrade,
    signals_during_an_upgrade,
    one_upgrade_at_a_time,
    a_request_the_old_process_accepted_is_a_replay_to_the_new_one,
);

/// The sum of `used` over a quota state file's keys.
fn saved_use(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split("\"used\":")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// A daily quota with a local state file stays exact across an upgrade: what the old
/// process admitted while the new one already served is counted by the new one once the
/// old one has stopped (until then the new one holds to half of what was left, and does
/// not write the state file).
fn a_daily_quota_stays_exact_across_an_upgrade(driver: Driver) {
    const QUOTA: u64 = 3000;
    let state_dir = temp_dir("upgrade-quota-state");
    let state = state_dir.join("quotas.json");
    let mut gw = Upgradable::start_with(
        "upgrade-quota",
        driver,
        &format!("[traffic]\nstate_file = \"{}\"\n", state.display()),
        &format!("limits = [ {{ key = \"route\", quota = \"{QUOTA}/day\" }} ]"),
    );
    let pid = gw.first.0.id();
    let load = Load::start(gw.addr, 4, 2);
    load.serves_more(QUOTA / 3);
    let successor = gw.upgrade(pid, 1);
    wait_exit(&mut gw.first, Duration::from_secs(15));
    wait_for_log(&gw.log, "upgrade: the old process has stopped", 1);
    // Until the quota is used up (short of it within 30 s: some of it was lost), and a
    // second more (any over it shows).
    assert!(
        eventually(Duration::from_secs(30), || load.served() >= QUOTA),
        "only {} admitted",
        load.served()
    );
    std::thread::sleep(Duration::from_secs(1));
    let tally = load.finish();
    assert!(
        tally.failed.lock().unwrap().is_empty(),
        "{:?}",
        tally.failed.lock().unwrap()
    );
    assert_eq!(
        tally.served.load(Ordering::SeqCst),
        QUOTA,
        "admitted across the upgrade; log:\n{}",
        gw.log_text()
    );
    signal(successor, "-TERM");
    assert!(eventually(Duration::from_secs(10), || !alive(successor)));
    assert_eq!(
        saved_use(&state),
        QUOTA,
        "{}",
        std::fs::read_to_string(&state).unwrap()
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}
