//! TLS to upstreams, on both drivers: a private CA and a name (`sni`), an IP address
//! checked against the certificate's IP names when no `sni` is set, pooled TLS
//! connections reused, bodies both ways, a wrong name or an untrusted certificate
//! refused (502, nothing sent), a client certificate shown to an upstream that requires
//! one, health checks over TLS, and config errors that name the setting.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::*;
use tls_support::{server, Ca, TlsUpstream};

/// A gateway with one route `/*` to `up` over TLS, the upstream's extra lines `tls`.
fn gateway(driver: Driver, up: &TlsUpstream, tls: &str) -> Gateway {
    let upstream_extra = format!("tls = true\n{tls}");
    Gateway::start(driver, 1, "", &simple_routes(up.addr, &upstream_extra, ""))
}

struct Setup {
    dir: std::path::PathBuf,
    ca: Ca,
}

/// A private CA (`ca.pem`) and an upstream certificate (`up.pem`) it signed for
/// `billing.internal` and 127.0.0.1.
fn setup(tag: &str) -> Setup {
    let dir = temp_dir(tag);
    let ca = Ca::new(&dir, "ca");
    ca.issue(
        &dir,
        "up",
        &["billing.internal", "127.0.0.1"],
        "billing",
        2100,
    );
    Setup { dir, ca }
}

fn ca_line(dir: &Path, file: &str) -> String {
    format!("ca = \"{}/{file}\"\n", dir.display())
}

fn requests_reach_a_tls_upstream_over_pooled_connections(driver: Driver) {
    let s = setup("up-tls-pool");
    let up = TlsUpstream::start(server(&s.dir, "up", None));
    let sni = format!("sni = \"billing.internal\"\n{}", ca_line(&s.dir, "ca.pem"));
    let gw = gateway(driver, &up, &sni);
    let mut c = gw.connect();
    let first = c.get("/a");
    assert_eq!(first.status, 200, "{}", first.body_str());
    assert_eq!(first.body_str(), "0 GET /a 0 sni=billing.internal client=-");
    // The same TLS connection serves the next requests (one handshake in all).
    for path in ["/b", "/c"] {
        let r = c.get(path);
        assert_eq!(
            r.body_str(),
            format!("0 GET {path} 0 sni=billing.internal client=-")
        );
    }
    // A body up, and a large body down.
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    c.send(&[b'u'; 5000]);
    assert_eq!(
        c.read_response().body_str(),
        "0 POST /up 5000 sni=billing.internal client=-"
    );
    let big = c.get("/big/300000");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 300_000);
    assert!(big.body.iter().all(|&b| b == b'x'));
    assert_eq!(
        c.get("/d").body_str(),
        "0 GET /d 0 sni=billing.internal client=-"
    );
    // A reload with the same TLS settings keeps the pooled connection.
    let body = simple_routes(up.addr, &format!("tls = true\n{sni}"), "");
    gw.reload(driver, 1, "", &body);
    assert_eq!(
        c.get("/e").body_str(),
        "0 GET /e 0 sni=billing.internal client=-"
    );
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 1);
    // The same paths with other contents (the CA file now holds another CA): not the
    // same settings, so the pooled connection is not kept, and the new one is refused.
    let renewed_ca = Ca::new(&s.dir, "ca");
    drop(renewed_ca);
    gw.reload(driver, 1, "", &body);
    assert!(eventually(Duration::from_secs(5), || gw
        .connect()
        .get("/g")
        .status
        == 502));
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 1);
    // Other settings: a new connection, made with them (once the workers switched).
    let other = format!(
        "tls = true\nsni = \"ledger.internal\"\n{}",
        ca_line(&s.dir, "ca.pem")
    );
    gw.reload(driver, 1, "", &simple_routes(up.addr, &other, ""));
    assert!(eventually(Duration::from_secs(5), || gw
        .connect()
        .get("/f")
        .status
        == 502));
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 1);
}

fn without_sni_the_target_ip_is_verified(driver: Driver) {
    let s = setup("up-tls-ip");
    let up = TlsUpstream::start(server(&s.dir, "up", None));
    let gw = gateway(driver, &up, &ca_line(&s.dir, "ca.pem"));
    let r = gw.connect().get("/ip");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "0 GET /ip 0 sni=- client=-");
    // A certificate with no IP address in it is refused when no name is configured.
    s.ca.issue(&s.dir, "dns-only", &["billing.internal"], "billing", 2100);
    let up2 = TlsUpstream::start(server(&s.dir, "dns-only", None));
    let gw2 = gateway(driver, &up2, &ca_line(&s.dir, "ca.pem"));
    let refused = gw2.connect().get("/ip");
    assert_eq!(refused.status, 502);
    assert_eq!(refused.error_code(), "upstream_unavailable");
}

fn a_wrong_name_or_an_untrusted_certificate_is_refused(driver: Driver) {
    let s = setup("up-tls-wrong");
    let up = TlsUpstream::start(server(&s.dir, "up", None));
    // The certificate is not valid for this name.
    let wrong = format!("sni = \"ledger.internal\"\n{}", ca_line(&s.dir, "ca.pem"));
    let gw = gateway(driver, &up, &wrong);
    let r = gw.connect().get("/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_unavailable");
    // The body says nothing of the upstream or why.
    assert!(!r.body_str().contains("ledger"), "{}", r.body_str());
    drop(gw);
    // Signed by a CA the gateway does not trust.
    let other = Ca::new(&s.dir, "other-ca");
    drop(other);
    let untrusted = format!(
        "sni = \"billing.internal\"\n{}",
        ca_line(&s.dir, "other-ca.pem")
    );
    let gw = gateway(driver, &up, &untrusted);
    assert_eq!(gw.connect().get("/x").status, 502);
    // The system roots do not know a private CA either.
    let gw = gateway(driver, &up, "sni = \"billing.internal\"\n");
    assert_eq!(gw.connect().get("/x").status, 502);
    // No request ever reached the upstream: every handshake failed.
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 0);
    assert!(eventually(Duration::from_secs(5), || up
        .failed
        .load(Ordering::SeqCst)
        >= 3));
}

fn a_client_certificate_is_shown_when_configured(driver: Driver) {
    let s = setup("up-tls-mtls");
    let clients = Ca::new(&s.dir, "clients");
    clients.issue(&s.dir, "gw", &["gateway.internal"], "ringgate-edge", 2100);
    let up = TlsUpstream::start(server(&s.dir, "up", Some(&clients)));
    let base = format!("sni = \"billing.internal\"\n{}", ca_line(&s.dir, "ca.pem"));
    // Without one, the upstream refuses the handshake.
    let gw = gateway(driver, &up, &base);
    assert_eq!(gw.connect().get("/m").status, 502);
    drop(gw);
    let d = s.dir.display();
    let with_cert = format!("{base}cert = \"{d}/gw.pem\"\nkey = \"{d}/gw.key\"\n");
    let gw = gateway(driver, &up, &with_cert);
    let r = gw.connect().get("/m");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(
        r.body_str().ends_with("client=ringgate-edge"),
        "{}",
        r.body_str()
    );
}

fn health_checks_speak_tls(driver: Driver) {
    let s = setup("up-tls-health");
    let up = TlsUpstream::start(server(&s.dir, "up", None));
    let extra = format!(
        "sni = \"billing.internal\"\n{}health = {{ path = \"/health\", interval = \"50ms\", \
         timeout = \"50ms\", unhealthy = 1, healthy = 1 }}\n",
        ca_line(&s.dir, "ca.pem")
    );
    let gw = gateway(driver, &up, &extra);
    // Probes arrive over TLS (each a handshake of its own) and pass: the target stays in
    // service. A plain-text probe would fail and take it out (503).
    assert!(eventually(Duration::from_secs(5), || up
        .handshakes
        .load(Ordering::SeqCst)
        >= 4));
    assert_eq!(up.failed.load(Ordering::SeqCst), 0);
    let r = gw.connect().get("/after-checks");
    assert_eq!(r.status, 200, "{}", r.body_str());
}

/// A response delimited by the close is whole only if the upstream said `close_notify`;
/// cut without it (as someone on the path could), the client sees a truncation too: no
/// last chunk, no `close_notify`.
fn a_close_delimited_response_needs_close_notify(driver: Driver) {
    let s = setup("up-tls-cut");
    let up = TlsUpstream::start(server(&s.dir, "up", None));
    let gw = gateway(
        driver,
        &up,
        &format!("sni = \"billing.internal\"\n{}", ca_line(&s.dir, "ca.pem")),
    );
    let mut whole = gw.connect();
    let r = whole.get("/close-delimited");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "the whole body");
    let mut cut = gw.connect();
    cut.send(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n");
    let outcome = cut.try_read_response(false);
    assert!(
        outcome.is_err(),
        "a cut response must not read as complete: {outcome:?}"
    );
}

on_both_drivers!(
    a_close_delimited_response_needs_close_notify,
    requests_reach_a_tls_upstream_over_pooled_connections,
    without_sni_the_target_ip_is_verified,
    a_wrong_name_or_an_untrusted_certificate_is_refused,
    a_client_certificate_is_shown_when_configured,
    health_checks_speak_tls,
);

fn upstream_with(extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"b\"\ntargets = [\"127.0.0.1:1\"]\n{extra}\n\
         [[routes]]\nname = \"r\"\npath = \"/*\"\nupstream = \"b\"\n"
    )
}

#[test]
fn tls_settings_need_tls_on() {
    assert_config_error(
        &upstream_with("sni = \"b.internal\""),
        "upstreams[0].sni",
        "only applies with tls = true",
    );
    assert_config_error(
        &upstream_with("tls = false\nca = \"ca.pem\""),
        "upstreams[0].ca",
        "only applies with tls = true",
    );
}

#[test]
fn broken_upstream_tls_files_are_named() {
    let s = setup("up-tls-config");
    let d = s.dir.display();
    assert_config_error(
        &upstream_with(&format!("tls = true\nca = \"{d}/missing.pem\"")),
        "upstreams[0].tls",
        "missing.pem: unreadable",
    );
    assert_config_error(
        &upstream_with(&format!("tls = true\nca = \"{d}/up.key\"")),
        "upstreams[0].tls",
        "up.key: no certificate in the file",
    );
    assert_config_error(
        &upstream_with(&format!("tls = true\ncert = \"{d}/up.pem\"")),
        "upstreams[0].key",
        "required with `cert`",
    );
    s.ca.issue(&s.dir, "old", &["gateway.internal"], "old", 2021);
    assert_config_error(
        &upstream_with(&format!(
            "tls = true\ncert = \"{d}/old.pem\"\nkey = \"{d}/old.key\""
        )),
        "upstreams[0].tls",
        "old.pem: expired on",
    );
    assert_config_error(
        &upstream_with(&format!(
            "tls = true\ncert = \"{d}/up.pem\"\nkey = \"{d}/old.key\""
        )),
        "upstreams[0].tls",
        "old.key: the key does not fit",
    );
    assert_config_error(
        &upstream_with("tls = true\nsni = \"*.internal\""),
        "upstreams[0].sni",
        "a host name",
    );
}
