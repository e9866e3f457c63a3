//! Client certificates (`[tls] client_ca`, `client_auth`, routes with `auth = "mtls"`),
//! on both drivers: a verified certificate registered to an app (by fingerprint or by
//! subject) calls as that app (permission groups and per-app limits apply, the upstream
//! learns the app); an unregistered certificate or none gets 401 with the JSON body on an
//! optional listener; an expired certificate, one from another CA, or none on a
//! required listener fails the handshake; the access log carries the identity. The same
//! with the Redis-backed registry (index keys, a stale index entry mapping nothing).

#[path = "support/redis.rs"]
mod redis_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use support::*;
use tls_support::{client, client_with_cert, connect, get, make_cert, Ca, TlsStream};

struct Mtls {
    gw: Gateway,
    up: Upstream,
    dir: std::path::PathBuf,
    server: CertificateDer<'static>,
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A gateway whose `[tls]` listener asks for client certificates from the `clients` CA
/// (`client_auth` as given), with routes `/trade/*` (mtls, group `trade`, 3 per minute
/// per app), `/any/*` (mtls, no group) and `/open/*` (no auth). Apps: `partner`
/// registered by the fingerprint of `partner.pem`, `acme` by the subject of its
/// certificates, `nogroup` by fingerprint without the `trade` group, and `off`
/// (disabled).
fn start(driver: Driver, client_auth: &str) -> Mtls {
    start_with(driver, client_auth, None)
}

/// `start`, with the apps in the Redis registry `redis` when given (written there).
fn start_with(
    driver: Driver,
    client_auth: &str,
    redis: Option<&redis_support::RedisServer>,
) -> Mtls {
    let dir = temp_dir("mtls");
    let server = make_cert(&dir, "api", &["api.example.com"], 2100);
    let clients = Ca::new(&dir, "clients");
    let partner = clients.issue(&dir, "partner", &["partner.example"], "partner-gw", 2100);
    issue_with_org(&clients, &dir, "acme", "acme-gw", "Acme Corp");
    let nogroup = clients.issue(&dir, "nogroup", &["nogroup.example"], "nogroup", 2100);
    let off = clients.issue(&dir, "off", &["off.example"], "off", 2100);
    clients.issue(&dir, "stranger", &["stranger.example"], "stranger", 2100);
    clients.issue(&dir, "expired", &["expired.example"], "expired", 2021);
    Ca::new(&dir, "rogue").issue(&dir, "rogue", &["rogue.example"], "partner-gw", 2100);
    let fp = |der: &CertificateDer<'_>| hex(&Sha256::digest(der));
    let apps = match redis {
        None => format!(
            "file = \"{}\"",
            write_apps_file(
                &dir,
                &format!(
                    "[[apps]]\nkey = \"partner\"\ncert_sha256 = [\"{}\"]\ngroups = [\"trade\"]\n\
                     [[apps]]\nkey = \"acme\"\nsecrets = [\"acme-secret-0123456789\"]\n\
                     cert_subjects = [\"O=Acme Corp, CN=acme-gw\"]\ngroups = [\"trade\"]\n\
                     [[apps]]\nkey = \"nogroup\"\ncert_sha256 = [\"{}\"]\n\
                     [[apps]]\nkey = \"off\"\ncert_sha256 = [\"{}\"]\nenabled = false\n",
                    fp(&partner),
                    fp(&nogroup).to_lowercase().replace(':', ""),
                    fp(&off),
                ),
            )
        ),
        Some(r) => {
            let plain = |der: &CertificateDer<'_>| fp(der).to_lowercase().replace(':', "");
            r.hset(
                "rg:app:partner",
                &[("cert_sha256", &fp(&partner)), ("groups", "trade")],
            );
            r.cmd(&[
                "SET",
                &format!("rg:cert:sha256:{}", plain(&partner)),
                "partner",
            ]);
            r.hset(
                "rg:app:acme",
                &[
                    ("secret", "acme-secret-0123456789"),
                    ("cert_subjects", "O=Acme Corp, CN=acme-gw"),
                    ("groups", "trade"),
                ],
            );
            r.cmd(&["SET", "rg:cert:subject:CN=acme-gw,O=Acme Corp", "acme"]);
            r.hset("rg:app:nogroup", &[("cert_sha256", &plain(&nogroup))]);
            r.cmd(&[
                "SET",
                &format!("rg:cert:sha256:{}", plain(&nogroup)),
                "nogroup",
            ]);
            r.hset(
                "rg:app:off",
                &[("cert_sha256", &plain(&off)), ("enabled", "0")],
            );
            r.cmd(&["SET", &format!("rg:cert:sha256:{}", plain(&off)), "off"]);
            // A stale index entry: partner's record does not list the stranger.
            let stranger = std::fs::read(dir.join("stranger.pem")).unwrap();
            let stranger = rustls::pki_types::pem::PemObject::from_pem_slice(&stranger).unwrap();
            r.cmd(&[
                "SET",
                &format!("rg:cert:sha256:{}", plain(&stranger)),
                "partner",
            ]);
            format!("redis = \"{}\"\ncache_ttl = \"300ms\"", r.url())
        }
    };
    let up = Upstream::echo();
    let d = dir.display();
    let body = format!(
        "[apps]\n{apps}\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"trade\"\npath = \"/trade/*\"\nupstream = \"up\"\nauth = \"mtls\"\n\
         group = \"trade\"\nlimits = [ {{ key = \"app\", rate = \"3/min\" }} ]\n\
         [[routes]]\nname = \"any\"\npath = \"/any/*\"\nupstream = \"up\"\nauth = \"mtls\"\n\
         [[routes]]\nname = \"open\"\npath = \"/open/*\"\nupstream = \"up\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca = \"{d}/clients.pem\"\n{client_auth}\n\
         [[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n",
        up.addr
    );
    let gw = Gateway::start(driver, 1, "", &body);
    Mtls {
        gw,
        up,
        dir,
        server,
    }
}

fn issue_with_org(ca: &Ca, dir: &Path, tag: &str, cn: &str, org: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{tag}.example")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{tag}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{tag}.key")), key.serialize_pem()).unwrap();
}

impl Mtls {
    /// A connection presenting `<tag>.pem`, or no certificate.
    fn connect(&self, tag: Option<&str>) -> TlsStream {
        let config = match tag {
            Some(tag) => client_with_cert(&[&self.server], &self.dir, tag),
            None => client(&[&self.server], false, &[]),
        };
        connect(self.gw.tls_addr(), config, "api.example.com")
    }

    fn get(&self, tag: Option<&str>, path: &str) -> (u16, String) {
        get(&mut self.connect(tag), "api.example.com", path)
    }
}

/// `partner` found by fingerprint, `acme` by subject (attributes in another order than
/// registered); the upstream learns the app.
fn calls_as_partner_and_acme(m: &Mtls) {
    assert_eq!(
        m.get(Some("partner"), "/trade/a"),
        (200, "GET /trade/a 0".into())
    );
    assert_eq!(m.up.last().header("x-rg-app"), Some("partner"));
    assert_eq!(
        m.get(Some("acme"), "/trade/b"),
        (200, "GET /trade/b 0".into())
    );
    assert_eq!(m.up.last().header("x-rg-app"), Some("acme"));
}

/// No certificate, an unregistered one and a disabled app's: 401 with the JSON body,
/// each saying why.
fn refused_with_401(m: &Mtls) {
    for (tag, needle) in [
        (None, "needs a client certificate"),
        (Some("stranger"), "not registered to any app"),
        (Some("off"), "disabled"),
    ] {
        let (status, body) = m.get(tag, "/any/x");
        assert_eq!(
            (status, code(&body).as_str()),
            (401, "unauthorized"),
            "{tag:?}"
        );
        assert!(body.contains(needle), "{tag:?}: {body}");
    }
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

/// Whether the handshake (driven by the first request) fails.
fn handshake_fails(mut s: TlsStream) -> bool {
    let sent =
        write!(s, "GET /open/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n").and_then(|_| s.flush());
    let mut buf = [0u8; 64];
    sent.is_err() || !matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0)
}

fn a_registered_certificate_calls_as_its_app(driver: Driver) {
    let m = start(driver, "");
    calls_as_partner_and_acme(&m);
    // Keep-alive: later requests on the connection are the same app.
    let mut s = m.connect(Some("partner"));
    assert_eq!(get(&mut s, "api.example.com", "/any/1").0, 200);
    assert_eq!(get(&mut s, "api.example.com", "/any/2").0, 200);
    assert_eq!(m.up.last().header("x-rg-app"), Some("partner"));
    // Routes without auth serve anyone, certificate or not.
    assert_eq!(m.get(None, "/open/x").0, 200);
}

fn groups_and_per_app_limits_apply(driver: Driver) {
    let m = start(driver, "");
    let (status, body) = m.get(Some("nogroup"), "/trade/x");
    assert_eq!((status, code(&body).as_str()), (403, "forbidden"));
    // The group-less app may call the route without a group.
    assert_eq!(m.get(Some("nogroup"), "/any/x").0, 200);
    // 3 per minute per app: partner's fourth is refused; acme has its own budget.
    for _ in 0..3 {
        assert_eq!(m.get(Some("partner"), "/trade/l").0, 200);
    }
    let (status, body) = m.get(Some("partner"), "/trade/l");
    assert_eq!((status, code(&body).as_str()), (429, "rate_limited"));
    assert_eq!(m.get(Some("acme"), "/trade/l").0, 200);
}

fn without_a_registered_certificate_the_answer_is_401(driver: Driver) {
    let m = start(driver, "");
    refused_with_401(&m);
    // Expired, or issued by another CA (with a registered subject): the handshake fails.
    assert!(handshake_fails(m.connect(Some("expired"))));
    assert!(handshake_fails(m.connect(Some("rogue"))));
    // None of them reached the upstream; the two refused certificates are counted.
    assert!(m.up.requests().is_empty());
    let admin = m.gw.admin.expect("admin listener");
    let line = "ringgate_tls_handshake_failures_total{reason=\"client_certificate\"}";
    assert!(eventually(std::time::Duration::from_secs(5), || {
        metric(admin, line) == Some(2)
    }));
}

fn a_required_listener_refuses_clients_without_a_certificate(driver: Driver) {
    let m = start(driver, "client_auth = \"required\"");
    assert!(handshake_fails(m.connect(None)));
    assert_eq!(m.get(Some("partner"), "/open/x").0, 200);
    assert_eq!(m.get(Some("partner"), "/any/x").0, 200);
}

fn the_identity_is_logged_and_can_be_forwarded(driver: Driver) {
    let dir = temp_dir("mtls-log");
    let log = dir.join("access.log");
    let m = start(driver, "");
    let partner_fp = {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_file(m.dir.join("partner.pem")).unwrap();
        Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let d = m.dir.display();
    let body = format!(
        "[apps]\nfile = \"{d}/apps.toml\"\n[access_log]\npath = \"{}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"any\"\npath = \"/any/*\"\nupstream = \"up\"\nauth = \"mtls\"\n\
         [routes.headers.request]\nset = {{ \"X-Client-Cert\" = \"$tls_client_sha256\" }}\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca = \"{d}/clients.pem\"\n\
         [[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n",
        log.display(),
        m.up.addr
    );
    let gw = Gateway::start(driver, 1, "", &body);
    let config = client_with_cert(&[&m.server], &m.dir, "partner");
    let mut s = connect(gw.tls_addr(), config, "api.example.com");
    assert_eq!(get(&mut s, "api.example.com", "/any/logged").0, 200);
    assert_eq!(
        m.up.last().header("x-client-cert"),
        Some(partner_fp.as_str())
    );
    drop(gw);
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["app"], "partner");
    assert_eq!(line["tls"]["client"]["sha256"], partner_fp);
    assert_eq!(line["tls"]["client"]["subject"], "CN=partner-gw");
}

/// The Redis-backed registry maps certificates through its index keys, with the same
/// outcomes as the apps file (and a stale index entry maps nothing).
fn the_redis_registry_maps_certificates_too(driver: Driver) {
    let Some(redis) = redis_support::RedisServer::start() else {
        return;
    };
    let m = start_with(driver, "", Some(&redis));
    calls_as_partner_and_acme(&m);
    let (status, body) = m.get(Some("nogroup"), "/trade/x");
    assert_eq!((status, code(&body).as_str()), (403, "forbidden"));
    refused_with_401(&m);
    // Revoked in Redis: refused once the cached record is refreshed.
    redis.hset("rg:app:partner", &[("enabled", "0")]);
    assert!(eventually(Duration::from_secs(3), || m
        .get(Some("partner"), "/any/y")
        .0
        == 401));
}

on_both_drivers!(
    the_redis_registry_maps_certificates_too,
    a_registered_certificate_calls_as_its_app,
    groups_and_per_app_limits_apply,
    without_a_registered_certificate_the_answer_is_401,
    a_required_listener_refuses_clients_without_a_certificate,
    the_identity_is_logged_and_can_be_forwarded,
);

fn tls_section(extra: &str) -> String {
    let dir = temp_dir("mtls-config");
    make_cert(&dir, "api", &["api.example.com"], 2100);
    let d = dir.display();
    format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n\
         [[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n"
    )
}

#[test]
fn client_auth_settings_are_checked() {
    assert_config_error(
        &tls_section("client_auth = \"required\""),
        "tls.client_auth",
        "needs `client_ca`",
    );
    assert_config_error(
        &tls_section("client_ca = \"/nonexistent/ca.pem\"\nclient_auth = \"sometimes\""),
        "tls.client_auth",
        "\"optional\" or \"required\"",
    );
    assert_config_error(
        &tls_section("client_ca = \"/nonexistent/ca.pem\""),
        "tls.client_ca",
        "/nonexistent/ca.pem: unreadable",
    );
}

#[test]
fn mtls_routes_need_client_certificates_and_registered_apps() {
    let dir = temp_dir("mtls-routes");
    let apps = write_apps_file(&dir, "[[apps]]\nkey = \"a\"\ncert_sha256 = [\"zz\"]\n");
    let errors = assert_config_error(
        &format!(
            "[apps]\nfile = \"{apps}\"\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n\
             [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"u\"\nauth = \"mtls\"\n"
        ),
        "routes[0].auth",
        "set [tls] client_ca",
    );
    assert!(
        errors
            .iter()
            .any(|e| e.path.ends_with("apps[0].cert_sha256[0]")
                && e.message.contains("not a SHA-256 fingerprint")),
        "{errors:?}"
    );
    let twice = write_apps_file(
        &dir,
        "[[apps]]\nkey = \"a\"\ncert_subjects = [\"CN=x\"]\n\
         [[apps]]\nkey = \"b\"\ncert_subjects = [\"cn=x\"]\n\
         [[apps]]\nkey = \"c\"\n",
    );
    let errors = assert_config_error(
        &format!("[apps]\nfile = \"{twice}\"\n"),
        &format!("apps.file {twice:?}: apps[1].cert_subjects"),
        "also registered to app \"a\"",
    );
    assert!(
        errors
            .iter()
            .any(|e| e.path.ends_with("apps[2].secrets") && e.message.contains("none only")),
        "{errors:?}"
    );
}
