//! The real client address behind balancers: `X-Forwarded-For` believed only from
//! `server.trusted_proxies` (the right-most untrusted address is the client), and the
//! PROXY protocol (v1 and v2) on listeners with `proxy_protocol = true`. Per-IP limits,
//! app IP allow lists, header variables, the upstream's `X-Forwarded-*` and the access
//! log all see the result. The trusted peer is 127.0.0.2 (tests connect from it), so a
//! plain connection from 127.0.0.1 is an untrusted one.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringgate::auth::sign::sign_request;
use support::*;

const KEY: &str = "app-lan";
const SECRET: &str = "lan-secret-0000001";
const BALANCER: &str = "127.0.0.2";

fn balancer() -> IpAddr {
    BALANCER.parse().unwrap()
}

/// An app allowed only from 203.0.113.0/24 on `/signed/*`; `/ip/*` limited to one request
/// a minute per client address; `/*` stamps the client it saw on `X-Client`.
fn routes(up: SocketAddr, dir: &std::path::Path) -> String {
    let apps = write_apps_file(
        dir,
        &format!(
            "[[apps]]\nkey = \"{KEY}\"\nsecrets = [\"{SECRET}\"]\nallow_ips = [\"203.0.113.0/24\"]\n"
        ),
    );
    format!(
        "[apps]\nfile = \"{apps}\"\n\
         [access_log]\npath = \"{}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"up\"\nauth = \"hmac\"\n\
         [[routes]]\nname = \"ip\"\npath = \"/ip/*\"\nupstream = \"up\"\n\
         limits = [ {{ key = \"ip\", rate = \"1/min\" }} ]\n\
         [[routes]]\nname = \"any\"\npath = \"/*\"\nupstream = \"up\"\n\
         headers = {{ request = {{ set = {{ \"X-Client\" = \"$client_ip\" }} }} }}\n",
        dir.join("access.log").display()
    )
}

fn trusting(driver: Driver, up: SocketAddr, dir: &std::path::Path) -> Gateway {
    Gateway::start(
        driver,
        1,
        &format!("trusted_proxies = [\"10.0.0.0/8\", \"{BALANCER}\"]"),
        &routes(up, dir),
    )
}

fn via_balancer(gw: &Gateway, raw: &str) -> Response {
    let mut c = Client::connect_from(gw.addr, balancer());
    c.send(raw.as_bytes());
    c.read_response()
}

fn get_for(path: &str, forwarded_for: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n")
}

fn signed_get(path: &str, nonce: &str, extra: &str) -> String {
    let ts = ringgate::auth::check::unix_now();
    let s = sign_request(KEY, SECRET.as_bytes(), "GET", path, "", b"", ts, nonce).unwrap();
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}X-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.key, s.timestamp, s.nonce, s.signature
    )
}

/// The access log's `client` for the request with this id.
fn logged_client(dir: &std::path::Path, request_id: &str) -> String {
    let path = dir.join("access.log");
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        found = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["request_id"] == request_id)
            .map(|l| l["client"].as_str().unwrap().to_string());
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no log line for {request_id}"))
}

fn a_trusted_proxy_names_the_client(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("client-trusted");
    let gw = trusting(driver, up.addr, &dir);

    // The client made up 6.6.6.6; our balancers (10.0.0.2, then 127.0.0.2) saw
    // 203.0.113.7.
    let r = via_balancer(
        &gw,
        "GET /x HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: via-lb\r\n\
         X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-For: 10.0.0.2\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Real-IP: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-client"), Some("203.0.113.7"));
    assert_eq!(
        seen.headers_named("x-forwarded-for"),
        ["6.6.6.6, 203.0.113.7, 10.0.0.2, 127.0.0.2"]
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));
    assert_eq!(logged_client(&dir, "via-lb"), "203.0.113.7");

    // Per-IP limits count the client, not the balancer: two clients pass, a second
    // request of the first is refused.
    assert_eq!(
        via_balancer(&gw, &get_for("/ip/a", "203.0.113.7")).status,
        200
    );
    assert_eq!(
        via_balancer(&gw, &get_for("/ip/a", "203.0.113.8")).status,
        200
    );
    let r = via_balancer(&gw, &get_for("/ip/a", "203.0.113.7"));
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));

    // The app's allow list sees the client.
    let r = via_balancer(
        &gw,
        &signed_get(
            "/signed/a",
            "nonce-client-0000001",
            "X-Forwarded-For: 203.0.113.7\r\n",
        ),
    );
    assert_eq!(r.status, 200);
    let r = via_balancer(
        &gw,
        &signed_get(
            "/signed/a",
            "nonce-client-0000002",
            "X-Forwarded-For: 198.51.100.1\r\n",
        ),
    );
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn an_untrusted_peer_cannot_name_a_client(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("client-untrusted");
    let gw = trusting(driver, up.addr, &dir);
    // 127.0.0.1 is not in trusted_proxies: everything it says about hops is dropped.
    let mut c = gw.connect();
    c.send(
        b"GET /x HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: direct\r\nX-Forwarded-For: 203.0.113.7\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nForwarded: for=203.0.113.7\r\n\r\n",
    );
    assert_eq!(c.read_response().status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-client"), Some("127.0.0.1"));
    assert_eq!(seen.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.test"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(logged_client(&dir, "direct"), "127.0.0.1");

    // Made-up addresses do not escape the per-IP limit.
    assert_eq!(
        send(&gw, get_for("/ip/a", "1.1.1.1").as_bytes()).status,
        200
    );
    assert_eq!(
        send(&gw, get_for("/ip/a", "2.2.2.2").as_bytes()).status,
        429
    );
    // Nor the allow list.
    let mut c = gw.connect();
    c.send(
        signed_get(
            "/signed/a",
            "nonce-client-0000003",
            "X-Forwarded-For: 203.0.113.7\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 403);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway whose one listener expects the PROXY protocol.
fn proxied(driver: Driver, up: SocketAddr, dir: &std::path::Path, server_extra: &str) -> Gateway {
    let text = format!(
        "[server]\nlisten = [{{ addr = \"127.0.0.1:0\", proxy_protocol = true }}]\nworkers = 1\n\
         driver = \"{}\"\nhead_timeout = \"1s\"\n{server_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        driver.name(),
        routes(up, dir)
    );
    Gateway::start_text(driver, &text)
}

fn send(gw: &Gateway, raw: &[u8]) -> Response {
    let mut c = gw.connect();
    c.send(raw);
    c.read_response()
}

fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
    out.extend_from_slice(addresses);
    out.extend_from_slice(tlvs);
    out
}

fn the_proxy_protocol_names_the_client(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("client-proxy");
    let gw = proxied(driver, up.addr, &dir, "");

    // v1, then two requests on the same connection: both from the named client.
    let mut c = gw.connect();
    c.send(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET /x HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: pp-v1\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    c.send(b"GET /x HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-client"), Some("203.0.113.7"));
    assert_eq!(seen.headers_named("x-forwarded-for"), ["203.0.113.7"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(logged_client(&dir, "pp-v1"), "203.0.113.7");

    // The per-IP limit counts it.
    let pp = |client: &str, path: &str| {
        format!("PROXY TCP4 {client} 10.0.0.1 51000 443\r\nGET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n")
    };
    assert_eq!(send(&gw, pp("203.0.113.7", "/ip/a").as_bytes()).status, 200);
    assert_eq!(send(&gw, pp("203.0.113.8", "/ip/a").as_bytes()).status, 200);
    assert_eq!(send(&gw, pp("203.0.113.7", "/ip/a").as_bytes()).status, 429);

    // v2 with TLS at the balancer: the upstream hears https.
    let inet = [203, 0, 113, 9, 10, 0, 0, 1, 0xc8, 0x00, 1, 187];
    let ssl = [0x20, 0, 5, 0x01, 0, 0, 0, 0];
    let mut raw = v2(1, 0x11, &inet, &ssl);
    raw.extend_from_slice(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(send(&gw, &raw).status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-client"), Some("203.0.113.9"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // v2 LOCAL (the balancer's own health check): the peer is the client.
    let mut raw = v2(0, 0x00, &[], &[]);
    raw.extend_from_slice(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(send(&gw, &raw).status, 200);
    assert_eq!(up.last().header("x-client"), Some("127.0.0.1"));

    // The app's allow list sees the named client.
    let mut raw = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n".to_vec();
    raw.extend_from_slice(signed_get("/signed/a", "nonce-client-0000004", "").as_bytes());
    assert_eq!(send(&gw, &raw).status, 200);
    let mut raw = b"PROXY TCP4 198.51.100.1 10.0.0.1 51000 443\r\n".to_vec();
    raw.extend_from_slice(signed_get("/signed/a", "nonce-client-0000005", "").as_bytes());
    assert_eq!(send(&gw, &raw).status, 403);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PROXY header naming a trusted proxy hands the walk on to X-Forwarded-For.
fn the_proxy_protocol_and_trusted_proxies_compose(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("client-compose");
    let gw = proxied(driver, up.addr, &dir, "trusted_proxies = [\"10.0.0.0/8\"]");
    let r = send(
        &gw,
        b"PROXY TCP4 10.1.1.1 10.0.0.1 51000 443\r\nGET /x HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-client"), Some("203.0.113.5"));
    assert_eq!(
        seen.headers_named("x-forwarded-for"),
        ["203.0.113.5, 10.1.1.1"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn a_missing_or_malformed_proxy_header_is_refused(driver: Driver) {
    let up = Upstream::echo();
    let dir = temp_dir("client-refused");
    let gw = proxied(driver, up.addr, &dir, "");
    let refused = |raw: &[u8], needle: &str| {
        let mut c = gw.connect();
        c.send(raw);
        let r = c.read_response();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_request"),
            "{raw:?}"
        );
        assert!(r.body_str().contains(needle), "{}", r.body_str());
        assert!(c.is_closed(Duration::from_secs(2)), "closed after {raw:?}");
    };
    refused(
        b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n",
        "did not start with a PROXY protocol header",
    );
    refused(
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\nGET /x HTTP/1.1\r\n\r\n",
        "malformed PROXY protocol header",
    );
    refused(
        b"PROXY TCP4 ::1 10.0.0.1 51000 80\r\n",
        "malformed PROXY protocol header",
    );
    let mut bad_version = v2(1, 0x11, &[0; 12], &[]);
    bad_version[12] = 0x11;
    refused(&bad_version, "malformed PROXY protocol header");
    // A header that never completes is refused at the head timeout (1 s here).
    let mut c = gw.connect();
    c.send(b"PROXY TCP4 203.0.113.7");
    let r = c.read_response();
    assert_eq!(r.status, 408);
    assert_eq!(up.requests().len(), 0, "nothing reached the upstream");
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_drivers!(
    a_trusted_proxy_names_the_client,
    an_untrusted_peer_cannot_name_a_client,
    the_proxy_protocol_names_the_client,
    the_proxy_protocol_and_trusted_proxies_compose,
    a_missing_or_malformed_proxy_header_is_refused,
);

fn config_errors(server: &str) -> Vec<String> {
    let text = format!("[server]\n{server}\n");
    match ringgate::config::parse(&text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn client_address_config_is_checked() {
    let errors = config_errors("trusted_proxies = [\"10.0.0.0/33\", \"lb.example\"]");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.trusted_proxies[0]:"))
            && errors
                .iter()
                .any(|e| e.starts_with("server.trusted_proxies[1]:")),
        "{errors:?}"
    );
    let errors = config_errors("trust_forwarded = true");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.trust_forwarded:") && e.contains("trusted_proxies")),
        "{errors:?}"
    );
    let errors = config_errors("listen = [{ addr = \"127.0.0.1:0\", proxy = true }]");
    assert!(
        errors.iter().any(|e| e.contains("unknown field `proxy`")),
        "{errors:?}"
    );
    let errors = config_errors("listen = [\"127.0.0.1:9\", { addr = \"127.0.0.1:9\" }]");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.listen[1]:") && e.contains("listed twice")),
        "{errors:?}"
    );
}
