//! HTTPS through the whole gateway, on both drivers: requests over a TLS listener reach
//! the upstream with `X-Forwarded-Proto: https`, keep-alive holds across requests and
//! across an idle pause long enough to park the connection, the certificate follows SNI,
//! a Host the certificate does not name is 421,
//! a failed handshake (an old client, plain HTTP) is closed without disturbing the
//! worker, and plain listeners serve beside TLS ones.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use support::*;
use tls_support::{client, connect, get, make_cert};

struct Https {
    gw: Gateway,
    up: Upstream,
    api: CertificateDer<'static>,
    tenants: CertificateDer<'static>,
}

fn start(driver: Driver, tls_extra: &str) -> Https {
    let dir = temp_dir("https");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    let tenants = make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let gw = Gateway::start(driver, 1, "", &body(&dir, up.addr, tls_extra, "api.key"));
    Https {
        gw,
        up,
        api,
        tenants,
    }
}

/// Routes to `upstream` and a `[tls]` section with the `api` and `tenants` certificates
/// in `dir` (the api certificate's key file named `api_key`).
fn body(dir: &std::path::Path, upstream: SocketAddr, tls_extra: &str, api_key: &str) -> String {
    let d = dir.display();
    format!(
        "{}[tls]\nlisten = [\"127.0.0.1:0\"]\n{tls_extra}\n\
         [[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/{api_key}\"\n\
         [[tls.certs]]\ncert = \"{d}/tenants.pem\"\nkey = \"{d}/tenants.key\"\n",
        simple_routes(upstream, "", "")
    )
}

fn requests_over_tls_reach_the_upstream_as_https(driver: Driver) {
    let h = start(driver, "");
    let config = client(&[&h.api, &h.tenants], false, &["http/1.1"]);
    let mut s = connect(h.gw.tls_addr(), config, "api.example.com");
    assert_eq!(
        get(&mut s, "api.example.com", "/one"),
        (200, "GET /one 0".into())
    );
    assert_eq!(s.conn.peer_certificates().unwrap()[0], h.api);
    // Keep-alive, then an idle pause past the 250 ms grace (the connection parks).
    assert_eq!(
        get(&mut s, "api.example.com", "/two"),
        (200, "GET /two 0".into())
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        get(&mut s, "api.example.com", "/three"),
        (200, "GET /three 0".into())
    );
    let seen = h.up.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(r.header("x-forwarded-proto"), Some("https"), "{r:?}");
    }
    // The plain listener still serves plain HTTP beside it.
    assert_eq!(h.gw.connect().get("/plain").status, 200);
}

fn the_certificate_follows_sni(driver: Driver) {
    let h = start(driver, "");
    let config = client(&[&h.api, &h.tenants], false, &[]);
    let mut s = connect(h.gw.tls_addr(), config, "acme.tenant.example.com");
    assert_eq!(
        get(&mut s, "acme.tenant.example.com", "/t"),
        (200, "GET /t 0".into())
    );
    assert_eq!(s.conn.peer_certificates().unwrap()[0], h.tenants);
}

fn failed_handshakes_are_closed_and_the_worker_serves_on(driver: Driver) {
    let h = start(driver, "min_version = \"1.3\"");
    // A TLS 1.2-only client: refused with an alert.
    let mut old = connect(
        h.gw.tls_addr(),
        client(&[&h.api], true, &[]),
        "api.example.com",
    );
    let err = write!(old, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .and_then(|()| old.flush())
        .and_then(|()| old.read(&mut [0u8; 1]).map(|_| ()));
    assert!(err.is_err(), "the old client got through");
    // Plain HTTP to the TLS port: not a handshake, closed.
    let mut plain = std::net::TcpStream::connect(h.gw.tls_addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "{rest:?}"
    );
    // A good client is served as before; its second connection resumes the session.
    let good = client(&[&h.api], false, &[]);
    for _ in 0..2 {
        let mut s = connect(h.gw.tls_addr(), good.clone(), "api.example.com");
        assert_eq!(
            get(&mut s, "api.example.com", "/ok"),
            (200, "GET /ok 0".into())
        );
    }
    // Each outcome is counted.
    let admin = h.gw.admin.expect("admin listener");
    let expected = [
        "ringgate_tls_handshakes_total{result=\"full\"} 1",
        "ringgate_tls_handshakes_total{result=\"resumed\"} 1",
        "ringgate_tls_handshake_failures_total{reason=\"protocol_version\"} 1",
        "ringgate_tls_handshake_failures_total{reason=\"malformed\"} 1",
        "ringgate_tls_handshake_failures_total{reason=\"timeout\"} 0",
    ];
    let mut text = String::new();
    let counted = eventually(Duration::from_secs(5), || {
        text = Client::connect(admin).get("/metrics").body_str();
        expected.iter().all(|line| text.lines().any(|l| l == *line))
    });
    assert!(counted, "{expected:?} in:\n{text}");
}

/// A Host that the connection's certificate does not name is 421 with the JSON error
/// body, never forwarded; the connection stays usable for its own hosts.
fn a_host_the_certificate_does_not_name_is_misdirected(driver: Driver) {
    let h = start(driver, "");
    let config = client(&[&h.api, &h.tenants], false, &[]);
    let mut s = connect(h.gw.tls_addr(), config, "api.example.com");
    let (status, body) = get(&mut s, "acme.tenant.example.com", "/fronted");
    assert_eq!(status, 421, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "misdirected_request", "{body}");
    assert_eq!(
        get(&mut s, "API.example.com:443", "/own"),
        (200, "GET /own 0".into())
    );
    let seen: Vec<String> = h.up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, ["/own"]);
}

/// A reload brings new certificates to new connections while open ones keep their
/// session; a reload with a broken key file is refused, naming the file, and the
/// certificates in service stay.
fn certificates_reload_without_dropping_connections(driver: Driver) {
    let h = start(driver, "");
    let trusting = |certs: &[&CertificateDer<'static>]| client(certs, false, &[]);
    let mut open = connect(h.gw.tls_addr(), trusting(&[&h.api]), "api.example.com");
    assert_eq!(
        get(&mut open, "api.example.com", "/before"),
        (200, "GET /before 0".into())
    );
    // New certificate files for the same names, in a directory of their own.
    let dir = temp_dir("https-renewed");
    let renewed = make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    h.gw.reload(driver, 1, "", &body(&dir, h.up.addr, "", "api.key"));
    // The open connection goes on; a new one gets the renewed certificate.
    assert_eq!(
        get(&mut open, "api.example.com", "/during"),
        (200, "GET /during 0".into())
    );
    let mut fresh = connect(h.gw.tls_addr(), trusting(&[&renewed]), "api.example.com");
    assert_eq!(
        get(&mut fresh, "api.example.com", "/after"),
        (200, "GET /after 0".into())
    );
    assert_eq!(fresh.conn.peer_certificates().unwrap()[0], renewed);
    // A key that does not fit: the reload is refused and names the file.
    let file = dir.join("ringgate.toml");
    std::fs::write(
        &file,
        config_text(driver, 1, "", &body(&dir, h.up.addr, "", "tenants.key")),
    )
    .unwrap();
    let err = h.gw.handle().reload_file(&file).unwrap_err();
    assert!(
        err.contains("tenants.key: the key does not fit the certificate"),
        "{err}"
    );
    let mut still = connect(h.gw.tls_addr(), trusting(&[&renewed]), "api.example.com");
    assert_eq!(
        get(&mut still, "api.example.com", "/kept"),
        (200, "GET /kept 0".into())
    );
}

/// With `watch = true`, renewed certificate files are picked up without touching the
/// config file: a broken renewal is refused (the certificate in service stays), a good
/// one is served to new connections.
fn watched_certificate_files_reload_when_renewed(driver: Driver) {
    let dir = temp_dir("https-watch");
    let first = make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let file = dir.join("ringgate.toml");
    let text = config_text(driver, 1, "", &body(&dir, up.addr, "", "api.key"))
        .replace("[admin]\n", "[admin]\nwatch = true\n");
    std::fs::write(&file, text).unwrap();
    let handle = ringgate::gateway::start(ringgate::config::load(&file).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    handle.set_config_path(Some(file.clone()));
    let addr = handle.tls_addrs()[0];
    // The certificate a new connection gets (trusting `trusted`).
    let served = |trusted: &[&CertificateDer<'static>]| {
        let mut s = connect(addr, client(trusted, false, &[]), "api.example.com");
        assert_eq!(get(&mut s, "api.example.com", "/w").0, 200);
        s.conn.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served(&[&first]), first);
    // A broken renewal: refused, the first certificate stays in service.
    std::fs::write(dir.join("api.pem"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(served(&[&first]), first);
    // A good one, written the way renewal tools do (certificate, then key).
    let renewed = make_cert(&dir, "api", &["api.example.com"], 2100);
    assert!(eventually(Duration::from_secs(5), || served(&[
        &first, &renewed
    ]) == renewed));
    // The config now names a certificate that is not there yet: refused, and its files
    // are watched, so the reload happens once they appear.
    let later = std::fs::read_to_string(&file)
        .unwrap()
        .replace("api.pem", "later.pem")
        .replace("api.key", "later.key");
    std::fs::write(&file, later).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(served(&[&first, &renewed]), renewed);
    let third = make_cert(&dir, "later", &["api.example.com"], 2100);
    assert!(eventually(Duration::from_secs(5), || served(&[
        &first, &renewed, &third
    ]) == third));
    handle.shutdown();
}

/// A TLS listener with `proxy_protocol = true` reads the balancer's PROXY header before
/// the handshake: the upstream hears the client it names; a connection without one is
/// closed (and counted) before any handshake.
fn a_proxy_protocol_header_may_precede_the_handshake(driver: Driver) {
    let dir = temp_dir("https-proxy");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let text = body(&dir, up.addr, "", "api.key").replace(
        "[tls]\nlisten = [\"127.0.0.1:0\"]",
        "[tls]\nlisten = [{ addr = \"127.0.0.1:0\", proxy_protocol = true }]",
    );
    let gw = Gateway::start(driver, 1, "", &text);
    let tcp = std::net::TcpStream::connect(gw.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Header and ClientHello in one write: the hello's bytes read with the header go to
    // the handshake.
    let mut tcp = tcp;
    let mut conn = rustls::ClientConnection::new(
        client(&[&api], false, &[]),
        rustls::pki_types::ServerName::try_from("api.example.com").unwrap(),
    )
    .unwrap();
    let mut first = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n".to_vec();
    conn.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    for path in ["/one", "/two"] {
        assert_eq!(get(&mut s, "api.example.com", path).0, 200);
        let seen = up.last();
        assert_eq!(seen.headers_named("x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
    // Straight TLS, no header: closed before a handshake.
    let mut direct = connect(
        gw.tls_addr(),
        client(&[&api], false, &[]),
        "api.example.com",
    );
    let failed = write!(direct, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        .and_then(|()| direct.flush())
        .and_then(|()| direct.read(&mut [0u8; 1]).map(|_| ()));
    assert!(failed.is_err(), "served without a PROXY header");
    let admin = gw.admin.expect("admin listener");
    let line = "ringgate_tls_handshake_failures_total{reason=\"proxy_protocol\"}";
    assert!(eventually(Duration::from_secs(5), || metric(admin, line) == Some(1)));
}

/// A client that reaches the gateway by address (no SNI, `Host: 127.0.0.1:port`) is
/// served when the certificate names that address (an IP subject alternative name), and
/// misdirected when it names another.
fn clients_by_address_are_served_by_a_certificate_naming_it(driver: Driver) {
    let dir = temp_dir("https-ip");
    let cert = make_cert(&dir, "api", &["api.example.com", "127.0.0.1"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let gw = Gateway::start(driver, 1, "", &body(&dir, up.addr, "", "api.key"));
    let addr = gw.tls_addr();
    let mut s = connect(addr, client(&[&cert], false, &[]), "127.0.0.1");
    assert_eq!(
        get(&mut s, &addr.to_string(), "/ip"),
        (200, "GET /ip 0".into())
    );
    let (status, body) = get(&mut s, "127.0.0.2", "/other");
    assert_eq!(status, 421, "{body}");
    // An address listed in `names` counts too (the certificate need not carry it).
    let plain = make_cert(&dir, "dns-only", &["api.example.com"], 2100);
    let d = dir.display();
    let listed = format!(
        "{}[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certs]]\ncert = \"{d}/dns-only.pem\"\n\
         key = \"{d}/dns-only.key\"\nnames = [\"api.example.com\", \"127.0.0.1\"]\n",
        simple_routes(up.addr, "", "")
    );
    let gw2 = Gateway::start(driver, 1, "", &listed);
    let addr2 = gw2.tls_addr();
    let mut s = connect(addr2, client(&[&plain], false, &[]), "api.example.com");
    assert_eq!(get(&mut s, &addr2.to_string(), "/listed").0, 200);
    assert_eq!(get(&mut s, "127.0.0.2", "/other").0, 421);
}

/// A connection the gateway closes after a response ends with `close_notify`: the client
/// reads a clean end of stream, not a truncation.
fn a_closed_connection_ends_with_close_notify(driver: Driver) {
    let h = start(driver, "");
    let mut s = connect(
        h.gw.tls_addr(),
        client(&[&h.api], false, &[]),
        "api.example.com",
    );
    write!(
        s,
        "GET /bye HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.flush().unwrap();
    let mut all = Vec::new();
    // rustls reports a close without close_notify as an UnexpectedEof error.
    s.read_to_end(&mut all).expect("a clean TLS close");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("GET /bye 0"), "{text}");
}

/// Sessions resume by default; `session_resumption = false` makes every connection a
/// full handshake.
fn session_resumption_can_be_turned_off(driver: Driver) {
    for (extra, second) in [
        ("", rustls::HandshakeKind::Resumed),
        ("session_resumption = false", rustls::HandshakeKind::Full),
    ] {
        let h = start(driver, extra);
        let config = client(&[&h.api], false, &[]);
        for expected in [rustls::HandshakeKind::Full, second] {
            let mut s = connect(h.gw.tls_addr(), config.clone(), "api.example.com");
            assert_eq!(get(&mut s, "api.example.com", "/r").0, 200);
            assert_eq!(s.conn.handshake_kind(), Some(expected), "{extra:?}");
        }
    }
}

/// A TLS 1.0 or 1.1 ClientHello (no `supported_versions`, legacy version 3.1 or 3.2) is
/// refused with a fatal alert and nothing else (no ServerHello, no certificate).
fn tls_1_0_and_1_1_are_refused(driver: Driver) {
    let h = start(driver, "");
    for minor in [1u8, 2] {
        // cipher suites: TLS_RSA_WITH_AES_128_CBC_SHA, ECDHE-RSA-AES128-SHA; no extensions.
        let mut body = vec![3, minor];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0xc0, 0x13]);
        body.extend_from_slice(&[1, 0]); // compression: null
        let mut hello = vec![1, 0, 0, body.len() as u8];
        hello.extend_from_slice(&body);
        let mut record = vec![22, 3, minor, 0, hello.len() as u8];
        record.extend_from_slice(&hello);
        let mut tcp = std::net::TcpStream::connect(h.gw.tls_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&record).unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        // One alert record: fatal (2), handshake_failure (40) or protocol_version (70).
        assert_eq!(answer.len(), 7, "TLS 1.{}: {answer:?}", minor - 1);
        assert_eq!(answer[0], 21, "TLS 1.{}: {answer:?}", minor - 1);
        assert!(
            answer[5..] == [2, 40] || answer[5..] == [2, 70],
            "TLS 1.{}: {answer:?}",
            minor - 1
        );
    }
}

/// Certificates reloaded ten times under continuous HTTPS load (new connections and
/// keep-alive ones): not one request or handshake fails.
fn certificates_reload_under_load_without_failures(driver: Driver) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dirs = [temp_dir("https-load-a"), temp_dir("https-load-b")];
    let mut trusted = Vec::new();
    for d in &dirs {
        trusted.push(make_cert(d, "api", &["api.example.com"], 2100));
        make_cert(d, "tenants", &["*.tenant.example.com"], 2100);
    }
    let up = Upstream::echo();
    let gw = Gateway::start(driver, 2, "", &body(&dirs[0], up.addr, "", "api.key"));
    let addr = gw.tls_addr();
    let config = client(&trusted.iter().collect::<Vec<_>>(), false, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for keep_alive in [false, true, false, true] {
        let (stop, served, config) = (stop.clone(), served.clone(), config.clone());
        load.push(std::thread::spawn(move || {
            let mut s = connect(addr, config.clone(), "api.example.com");
            while !stop.load(Ordering::SeqCst) {
                if !keep_alive {
                    s = connect(addr, config.clone(), "api.example.com");
                }
                assert_eq!(
                    get(&mut s, "api.example.com", "/load"),
                    (200, "GET /load 0".into())
                );
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        gw.reload(
            driver,
            2,
            "",
            &body(&dirs[(i + 1) % 2], up.addr, "", "api.key"),
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().expect("no request failed");
    }
    assert!(served.load(Ordering::SeqCst) > 100, "the load ran");
}

/// At `max_connections_per_worker` a TLS listener closes a new connection before any
/// handshake (no CPU spent on it), and counts it; the admitted one keeps working.
fn a_tls_listener_at_the_connection_cap_closes_new_connections(driver: Driver) {
    let dir = temp_dir("https-cap");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let gw = Gateway::start(
        driver,
        1,
        "max_connections_per_worker = 1",
        &body(&dir, up.addr, "", "api.key"),
    );
    let mut first = connect(
        gw.tls_addr(),
        client(&[&api], false, &[]),
        "api.example.com",
    );
    assert_eq!(get(&mut first, "api.example.com", "/1").0, 200);
    let mut second = connect(
        gw.tls_addr(),
        client(&[&api], false, &[]),
        "api.example.com",
    );
    let refused = write!(second, "GET /2 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        .and_then(|()| second.flush())
        .and_then(|()| second.read(&mut [0u8; 1]).map(|_| ()));
    assert!(refused.is_err(), "a second TLS connection was served");
    assert_eq!(get(&mut first, "api.example.com", "/1b").0, 200);
    let admin = gw.admin.expect("admin listener");
    let refused = metric(admin, "ringgate_connections_refused_total{worker=\"0\"");
    assert_eq!(refused, Some(1));
}

/// The access log line of a request over TLS carries what the handshake settled.
fn access_log_lines_carry_the_tls_facts(driver: Driver) {
    let dir = temp_dir("https-log");
    let log = dir.join("access.log");
    make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let text = format!(
        "[access_log]\npath = \"{}\"\n{}",
        log.display(),
        body(&dir, up.addr, "", "api.key")
    );
    let gw = Gateway::start(driver, 1, "", &text);
    let api = rustls::pki_types::pem::PemObject::from_pem_file(dir.join("api.pem")).unwrap();
    let mut s = connect(
        gw.tls_addr(),
        client(&[&api], false, &["http/1.1"]),
        "api.example.com",
    );
    assert_eq!(get(&mut s, "api.example.com", "/logged").0, 200);
    assert_eq!(gw.connect().get("/plain").status, 200);
    let mut lines = Vec::new();
    assert!(eventually(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        lines.len() >= 2
    }));
    let tls_line = lines.iter().find(|l| l["path"] == "/logged").unwrap();
    let tls = &tls_line["tls"];
    assert_eq!(tls["version"], "TLSv1_3", "{tls_line}");
    assert_eq!(tls["sni"], "api.example.com");
    assert_eq!(tls["alpn"], "http/1.1");
    assert_eq!(tls["resumed"], false);
    assert!(
        tls["cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{tls_line}"
    );
    let plain_line = lines.iter().find(|l| l["path"] == "/plain").unwrap();
    assert!(plain_line.get("tls").is_none(), "{plain_line}");
}

/// The handshake's facts are in the request context: header edits name them, both
/// ways; on plain HTTP they are empty and the header is not sent.
fn header_edits_name_the_tls_facts(driver: Driver) {
    let dir = temp_dir("https-vars");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let up = Upstream::echo();
    let edits = "[routes.headers.request]\nset = { \"x-tls\" = \"$tls_version\", \"x-tls-sni\" = \"$tls_sni\" }\n\
                 [routes.headers.response]\nset = { \"x-tls-cipher\" = \"$tls_cipher\" }\n";
    let text = body(&dir, up.addr, "", "api.key").replace(
        "upstream = \"up\"\n",
        &format!("upstream = \"up\"\n{edits}"),
    );
    let gw = Gateway::start(driver, 1, "", &text);
    let mut s = connect(
        gw.tls_addr(),
        client(&[&api], false, &[]),
        "api.example.com",
    );
    write!(s, "GET /vars HTTP/1.1\r\nHost: api.example.com\r\n\r\n").unwrap();
    s.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\nx-tls-cipher: tls13_"), "{head}");
    assert_eq!(up.requests()[0].header("x-tls"), Some("TLSv1_3"));
    assert_eq!(
        up.requests()[0].header("x-tls-sni"),
        Some("api.example.com")
    );
    let plain = gw.connect().get("/plain");
    assert_eq!(plain.header("x-tls-cipher"), None);
    assert_eq!(up.requests()[1].header("x-tls"), None);
    assert_eq!(up.requests()[1].header("x-tls-sni"), None);
}

on_both_drivers!(
    header_edits_name_the_tls_facts,
    access_log_lines_carry_the_tls_facts,
    certificates_reload_without_dropping_connections,
    watched_certificate_files_reload_when_renewed,
    a_tls_listener_at_the_connection_cap_closes_new_connections,
    tls_1_0_and_1_1_are_refused,
    certificates_reload_under_load_without_failures,
    session_resumption_can_be_turned_off,
    a_closed_connection_ends_with_close_notify,
    clients_by_address_are_served_by_a_certificate_naming_it,
    a_proxy_protocol_header_may_precede_the_handshake,
    a_host_the_certificate_does_not_name_is_misdirected,
    requests_over_tls_reach_the_upstream_as_https,
    the_certificate_follows_sni,
    failed_handshakes_are_closed_and_the_worker_serves_on,
);

/// `ringgate demo` serves HTTPS with the certificate it generated, and prints the
/// `curl -k` line for it.
#[test]
fn the_demo_serves_https_and_prints_its_curl_line() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("curl -k -i https://"))
        .expect("the demo prints an https curl line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap();
    let addr: SocketAddr = url["https://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pem = std::env::temp_dir()
        .join(format!("ringgate-demo-{}", child.id()))
        .join("demo.pem");
    let cert = rustls::pki_types::pem::PemObject::from_pem_file(&pem).unwrap();
    let mut s = connect(addr, client(&[&cert], false, &[]), "localhost");
    let (status, body) = get(&mut s, &format!("127.0.0.1:{}", addr.port()), "/api/hello");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"x-forwarded-proto\":\"https\""), "{body}");
}
