//! Test support: start the gateway in-process on 127.0.0.1:0 with a chosen driver,
//! scripted upstreams on real sockets (that can misbehave on purpose), and a raw-socket
//! HTTP/1.1 client that reads exactly one response at a time.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringgate::runtime::{self, GatewayHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Generates `mod io_uring` and `mod epoll`, each with one `#[test]` per listed function
/// (each function takes a `Driver`).
#[macro_export]
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name($crate::support::Driver::IoUring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name($crate::support::Driver::Epoll) } )*
        }
    };
}

pub struct Gateway {
    handle: Option<GatewayHandle>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Gateway {
    /// Starts a gateway. `body` is TOML appended after a `[server]` table that listens on
    /// 127.0.0.1:0 with `workers` workers on `driver`; `server_extra` adds lines to it.
    pub fn start(driver: Driver, workers: usize, server_extra: &str, body: &str) -> Gateway {
        Gateway::start_text(driver, &config_text(driver, workers, server_extra, body))
    }

    /// Starts a gateway from a whole config text whose workers run on `driver`.
    pub fn start_text(driver: Driver, text: &str) -> Gateway {
        let config = ringgate::config::parse(text)
            .unwrap_or_else(|e| panic!("test config invalid: {e:?}\n{text}"));
        let handle = ringgate::gateway::start(config).expect("gateway starts");
        assert!(handle.wait_ready(Duration::from_secs(10)), "workers ready");
        let drivers = handle.drivers();
        let want = match driver {
            Driver::IoUring => runtime::DriverKind::IoUring,
            Driver::Epoll => runtime::DriverKind::Epoll,
        };
        assert!(
            drivers.iter().all(|d| *d == Some(want)),
            "drivers {drivers:?}"
        );
        Gateway {
            addr: handle.listen_addrs()[0],
            admin: handle.admin_addr(),
            handle: Some(handle),
        }
    }

    /// The first `[tls]` listener's bound address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.handle.as_ref().expect("running").tls_addrs()[0]
    }

    /// One route `/*` to one upstream at `upstream`, with extra upstream/route lines.
    pub fn simple(driver: Driver, upstream: SocketAddr) -> Gateway {
        Gateway::start(driver, 1, "", &simple_routes(upstream, "", ""))
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Reloads with a config built like `start`'s (same driver, workers, listeners).
    pub fn reload(&self, driver: Driver, workers: usize, server_extra: &str, body: &str) -> u64 {
        let text = config_text(driver, workers, server_extra, body);
        let config = ringgate::config::parse(&text)
            .unwrap_or_else(|e| panic!("reload config invalid: {e:?}"));
        self.handle().reload(config).expect("reload accepted")
    }

    pub fn shutdown(mut self) -> ringgate::runtime::DrainReport {
        self.handle.take().expect("running").shutdown()
    }

    pub fn handle(&self) -> &GatewayHandle {
        self.handle.as_ref().expect("running")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// The config `Gateway::start` uses: listeners on 127.0.0.1:0, admin on 127.0.0.1:0.
/// Load shedding is off unless `server_extra` sets `max_loop_delay`: tests run side by
/// side on two cores (the fuzz smoke among them), and a worker starved of CPU by them is
/// late for reasons that are not its load; shedding then would refuse requests a test
/// expects served. `tests/overload.rs` sets it.
pub fn config_text(driver: Driver, workers: usize, server_extra: &str, body: &str) -> String {
    let shedding = if server_extra.contains("max_loop_delay") {
        ""
    } else {
        "max_loop_delay = \"off\"\n"
    };
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\ndriver = \"{}\"\n{shedding}{server_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n{body}",
        driver.name()
    )
}

pub fn simple_routes(upstream: SocketAddr, upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [\"{upstream}\"]\n{upstream_extra}\n[[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n{route_extra}\n"
    )
}

// ---------------------------------------------------------------- responses and client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `code` of a JSON error body.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.body_str()));
        assert!(
            v["error"]["request_id"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "request_id in {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "message in {v}"
        );
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A raw HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from a chosen local address (any of 127.0.0.0/8 works on loopback).
    pub fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(local, 0).into())
            .expect("bind the local address");
        socket.connect(&addr.into()).expect("connect to gateway");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write to gateway");
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// Reads one response (to a non-HEAD request).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false).expect("a complete response")
    }

    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true).expect("a complete response")
    }

    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let (status, headers, head_len) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            self.fill()?;
        };
        self.buf.drain(..head_len);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body = if head_request || status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()?
        } else if let Some(n) = get("content-length") {
            let n: usize = n
                .parse()
                .map_err(|_| io::Error::other("bad content-length"))?;
            while self.buf.len() < n {
                self.fill()?;
            }
            self.buf.drain(..n).collect()
        } else {
            while self.fill().is_ok() {}
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                while find(&self.buf, b"\r\n").is_none() {
                    self.fill()?;
                }
                let end = find(&self.buf, b"\r\n").unwrap_or(0);
                self.buf.drain(..end + 2);
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// True when the gateway closed the connection (EOF or reset) within `within`, with no
    /// further bytes.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 1];
        let closed = match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        closed
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Head = (u16, Vec<(String, String)>, usize);

fn owned_headers(headers: &[httparse::Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            Ok(Some((res.code.unwrap_or(0), owned_headers(res.headers), n)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::other(format!(
            "bad response head: {e}: {:?}",
            String::from_utf8_lossy(buf)
        ))),
    }
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.read_response()
}

// ---------------------------------------------------------------- scripted upstreams

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub connection: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One upstream-side connection with helpers to read requests strictly.
pub struct UpConn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub id: usize,
}

impl UpConn {
    /// Reads one request (head and body). None on EOF.
    pub fn read_request(&mut self) -> Option<Seen> {
        let (method, target, headers, head_len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers = owned_headers(req.headers);
                    break (req.method?.to_string(), req.path?.to_string(), headers, n);
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill() {
                        return None;
                    }
                }
                Err(e) => panic!(
                    "gateway sent a malformed request: {e}: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        };
        self.buf.drain(..head_len);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body = if get("transfer-encoding").is_some() {
            self.read_chunked_body()?
        } else {
            let n: usize =
                get("content-length").map_or(0, |v| v.parse().expect("numeric content-length"));
            while self.buf.len() < n {
                if !self.fill() {
                    return None;
                }
            }
            self.buf.drain(..n).collect()
        };
        Some(Seen {
            method,
            target,
            headers,
            body,
            connection: self.id,
        })
    }

    fn read_chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill() {
                    return None;
                }
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..end]).ok()?, 16)
                .expect("gateway chunk size is plain hex");
            self.buf.drain(..end + 2);
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(&self.buf[..2], b"\r\n", "gateway chunk ends with CRLF");
            self.buf.drain(..2);
            if size == 0 {
                return Some(body);
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    pub fn write(&mut self, raw: &[u8]) -> bool {
        self.stream.write_all(raw).is_ok()
    }

    /// Responds 200 with `body` and keeps the connection.
    pub fn respond(&mut self, body: &[u8]) -> bool {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.write(head.as_bytes()) && self.write(body)
    }

    /// Closes with a TCP reset (SO_LINGER 0).
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(self.stream);
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A scripted upstream: every accepted connection runs `script` on its own thread; every
/// request it reads through `UpConn::read_request` can be recorded with `record`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start<F>(script: F) -> Upstream
    where
        F: Fn(UpConn, &Arc<Mutex<Vec<Seen>>>) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (seen2, conns2) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let id = conns2.fetch_add(1, Ordering::SeqCst);
                let (script, seen) = (script.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    script(
                        UpConn {
                            stream,
                            buf: Vec::new(),
                            id,
                        },
                        &seen,
                    );
                });
            }
        });
        Upstream {
            addr,
            seen,
            connections,
        }
    }

    /// Answers every request with 200 and a body naming the request, on keep-alive.
    pub fn echo() -> Upstream {
        Upstream::start(|mut c, seen| {
            while let Some(req) = c.read_request() {
                let body = format!("{} {} {}", req.method, req.target, req.body.len());
                seen.lock().unwrap().push(req);
                if !c.respond(body.as_bytes()) {
                    return;
                }
            }
        })
    }

    /// Answers every request with the given raw bytes, then closes.
    pub fn raw_once(raw: &'static [u8]) -> Upstream {
        Upstream::start(move |mut c, seen| {
            if let Some(req) = c.read_request() {
                seen.lock().unwrap().push(req);
                c.write(raw);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    /// Answers every request on a connection with `raw`, a whole response.
    pub fn answering(raw: &'static [u8]) -> Upstream {
        Upstream::start(move |mut c, seen| {
            while let Some(req) = c.read_request() {
                seen.lock().unwrap().push(req);
                if !c.write(raw) {
                    return;
                }
            }
        })
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw a request")
    }
}

/// A port free when asked (another process may take it before the caller binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A fresh temporary folder for one test's files, named after `tag`.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringgate-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `toml` as `apps.toml` in `dir`; returns the path for `[apps] file`.
pub fn write_apps_file(dir: &std::path::Path, toml: &str) -> String {
    let path = dir.join("apps.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

/// The value of the first sample of the admin listener's `/metrics` whose line starts
/// with `line_start` (a metric name and the start of its labels).
pub fn metric(admin: SocketAddr, line_start: &str) -> Option<u64> {
    let text = Client::connect(admin).get("/metrics").body_str();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A gateway whose Redis cannot be used (wrong password, untrusted certificate): `r`,
/// a signed call for an app not cached, is a quick 503 (not a hang, not a 401); the
/// registry is seen down and cluster limits held locally, and nothing was written.
pub fn assert_redis_outage(gw: &Gateway, r: &Response) {
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "overloaded"),
        "{}",
        r.body_str()
    );
    assert!(eventually(std::time::Duration::from_secs(5), || {
        let s = stats(gw.admin.unwrap());
        s["apps"]["store"]["up"] == false && s["limits"]["cluster"]["mode"] == "local_fallback"
    }));
}

/// A child process killed (and reaped) however the test ends, a panic included: a gateway
/// left running would hold its ports for the next run.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `<bin> check --config <config>` accepts the config.
pub fn assert_config_checks(bin: &std::path::Path, config: &std::path::Path) {
    let check = std::process::Command::new(bin)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// `systemd-analyze verify <unit>` finds nothing to say about the unit file at `path`.
pub fn assert_unit_verifies(path: &std::path::Path) {
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A nonce no other call of this test process uses: `<tag>-<n>-<pid>`.
pub fn unique_nonce(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{tag}-{:08}-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        std::process::id()
    )
}

/// A signed `GET path` (RG-HMAC-SHA256 headers for `key` and `secret`, stamped now, with
/// `nonce`) on a new connection to `addr`.
pub fn signed_get(addr: SocketAddr, key: &str, secret: &str, path: &str, nonce: &str) -> Response {
    let now = ringgate::auth::check::unix_now();
    let s = ringgate::auth::sign::sign_request(
        key,
        secret.as_bytes(),
        "GET",
        path,
        "",
        b"",
        now,
        nonce,
    )
    .expect("a signable request");
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nX-Rg-Key: {key}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {nonce}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.timestamp, s.signature
    );
    exchange(addr, raw.as_bytes())
}

/// The admin listener's `GET /stats`, parsed.
pub fn stats(admin: SocketAddr) -> serde_json::Value {
    let body = Client::connect(admin).get("/stats").body_str();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {body}"))
}

/// Sends `sig` (`-TERM`, `-USR2`...) to process `pid` with `kill`, which must succeed.
pub fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// An upstream answering 200 `ok` on keep-alive, left running for the test process's
/// life.
pub fn upstream_ok() -> SocketAddr {
    let up = Upstream::start(|mut c, _| {
        while c.read_request().is_some() {
            if !c.respond(b"ok") {
                return;
            }
        }
    });
    let addr = up.addr;
    std::mem::forget(up);
    addr
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// The problems the snapshot build reports for `body` (whose file-level parse must pass:
/// filters check their own sections when the chains are built).
pub fn snapshot_errors(body: &str) -> Vec<ringgate::config::ConfigError> {
    let text = config_text(Driver::Epoll, 1, "", body);
    let config = ringgate::config::parse(&text)
        .unwrap_or_else(|e| panic!("parse refused it: {e:?}\n{body}"));
    match ringgate::snapshot::Snapshot::build(config, 0) {
        Ok(_) => panic!("snapshot built from:\n{body}"),
        Err(errors) => errors,
    }
}

pub fn assert_snapshot_error(body: &str, path: &str, needle: &str) {
    let errors = snapshot_errors(body);
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "expected `{path}: ...{needle}...`, got {:?}\n{body}",
        errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
    );
}

/// Asserts that the config `body` (after the test `[server]` table) is refused with an
/// error at `path` whose message contains `needle`; returns every error.
pub fn assert_config_error(
    body: &str,
    path: &str,
    needle: &str,
) -> Vec<ringgate::config::ConfigError> {
    assert_config_text_error(&config_text(Driver::Epoll, 1, "", body), path, needle)
}

/// `assert_config_error` for lines in the test `[server]` table.
pub fn assert_server_error(
    server_extra: &str,
    path: &str,
    needle: &str,
) -> Vec<ringgate::config::ConfigError> {
    assert_config_text_error(
        &config_text(Driver::Epoll, 1, server_extra, ""),
        path,
        needle,
    )
}

fn assert_config_text_error(
    text: &str,
    path: &str,
    needle: &str,
) -> Vec<ringgate::config::ConfigError> {
    let errors = match ringgate::config::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "expected `{path}: ...{needle}...`, got {:?}\n{text}",
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
    errors
}
