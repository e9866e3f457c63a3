//! `[tls]`: certificates loaded and checked at validation (each broken file named with
//! its path), the choice of certificate by SNI (exact, wildcard, default) and the names
//! a connection's certificate serves (for 421), and the shared rustls server config
//! driven through real handshakes in memory: versions offered, ALPN, the certificate
//! each SNI gets.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConnection};
use support::temp_dir;
use tls_support::{client, make_cert};

fn config_with(tls: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n{tls}"
    )
}

fn errors(dir: &Path, tls: &str) -> Vec<String> {
    match ringgate::config::parse_in(&config_with(tls), Some(dir)) {
        Ok(_) => panic!("accepted: {tls}"),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

const TWO_CERTS: &str = "[tls]\nlisten = [\"127.0.0.1:0\"]\n\
    [[tls.certs]]\ncert = \"api.pem\"\nkey = \"api.key\"\n\
    [[tls.certs]]\ncert = \"tenants.pem\"\nkey = \"tenants.key\"\n";

struct Setup {
    dir: PathBuf,
    api: CertificateDer<'static>,
    tenants: CertificateDer<'static>,
}

fn two_certs() -> Setup {
    let dir = temp_dir("tls");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    let tenants = make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    Setup { dir, api, tenants }
}

#[test]
fn certificates_are_chosen_by_exact_name_then_wildcard_then_the_first() {
    let s = two_certs();
    let config = ringgate::config::parse_in(&config_with(TWO_CERTS), Some(&s.dir)).unwrap();
    let tls = config.tls.expect("tls section");
    assert_eq!(tls.certs[0].names, ["api.example.com"]);
    assert_eq!(tls.certs[1].names, ["*.tenant.example.com"]);
    let r = &tls.resolver;
    assert_eq!(r.pick(Some("api.example.com")), 0);
    assert_eq!(r.pick(Some("API.Example.COM.")), 0);
    assert_eq!(r.pick(Some("acme.tenant.example.com")), 1);
    assert_eq!(r.pick(Some("a.b.tenant.example.com")), 0, "one label only");
    assert_eq!(r.pick(Some("other.org")), 0);
    assert_eq!(r.pick(None), 0);
    // The names a connection's certificate serves decide 421.
    assert!(r.serves(0, "api.example.com:8443"));
    assert!(!r.serves(0, "acme.tenant.example.com"));
    assert!(r.serves(1, "acme.tenant.example.com"));
    assert!(!r.serves(1, "tenant.example.com"));
}

#[test]
fn configured_names_replace_the_certificates_own() {
    let s = two_certs();
    let tls = "[tls]\nlisten = [\"127.0.0.1:0\"]\n\
        [[tls.certs]]\ncert = \"api.pem\"\nkey = \"api.key\"\nnames = [\"API.example.net\"]\n";
    let config = ringgate::config::parse_in(&config_with(tls), Some(&s.dir)).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.certs[0].names, ["api.example.net"]);
    assert!(tls.resolver.serves(0, "api.example.net"));
    assert!(!tls.resolver.serves(0, "api.example.com"));
}

#[test]
fn broken_files_are_named_with_their_path() {
    let s = two_certs();
    let dir = &s.dir;
    // A key that belongs to another certificate.
    let errs = errors(
        dir,
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certs]]\ncert = \"api.pem\"\nkey = \"tenants.key\"\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("tls.certs[0]: ")
            && errs[0].contains("tenants.key: the key does not fit the certificate")
            && errs[0].contains("api.pem"),
        "{errs:?}"
    );
    // An expired certificate.
    make_cert(dir, "old", &["old.example.com"], 2021);
    let errs = errors(
        dir,
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certs]]\ncert = \"old.pem\"\nkey = \"old.key\"\n",
    );
    assert!(
        errs.len() == 1 && errs[0].contains("old.pem: expired on "),
        "{errs:?}"
    );
    // Missing, not PEM, no key.
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let errs = errors(
        dir,
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n\
         [[tls.certs]]\ncert = \"missing.pem\"\nkey = \"api.key\"\n\
         [[tls.certs]]\ncert = \"junk.pem\"\nkey = \"api.key\"\n\
         [[tls.certs]]\ncert = \"api.pem\"\nkey = \"junk.pem\"\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with("tls.certs[0]: ") && errs[0].contains("missing.pem: unreadable"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("tls.certs[1]: ") && errs[1].contains("junk.pem: no certificate"),
        "{errs:?}"
    );
    assert!(
        errs[2].starts_with("tls.certs[2]: ")
            && errs[2].contains("junk.pem: no usable private key"),
        "{errs:?}"
    );
    // A device or a directory is refused at once (reading /dev/zero would never end).
    let errs = errors(
        dir,
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n\
         [[tls.certs]]\ncert = \"/dev/zero\"\nkey = \"api.key\"\n\
         [[tls.certs]]\ncert = \"api.pem\"\nkey = \"/\"\n",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("/dev/zero: not a regular file"),
        "{errs:?}"
    );
    assert!(errs[1].contains("/: not a regular file"), "{errs:?}");
}

#[test]
fn section_rules_are_checked() {
    let s = two_certs();
    let errs = errors(
        &s.dir,
        "[tls]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8443\", \"127.0.0.1:8443\"]\n\
         min_version = \"1.1\"\nalpn = [\"h2\"]\n",
    );
    let errs = errs.join("\n");
    for want in [
        "tls.listen[2]: 127.0.0.1:8443 is already a listener",
        "tls.min_version: \"1.1\": must be \"1.2\" or \"1.3\"",
        "tls.alpn[0]: \"h2\" is not served",
        "tls.certs: at least one [[tls.certs]] entry is required",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    // A TLS listener may not take a plain listener's address.
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
        [[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
        [[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n\
        [tls]\nlisten = [\"127.0.0.1:8080\"]\n\
        [[tls.certs]]\ncert = \"api.pem\"\nkey = \"api.key\"\n";
    let errs = ringgate::config::parse_in(text, Some(&s.dir)).unwrap_err();
    let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errs,
        ["tls.listen[0]: 127.0.0.1:8080 is already a listener"],
        "{errs:?}"
    );
}

// ---------------------------------------------------------------- handshakes in memory

/// Runs a handshake between `client` (asking for `sni`) and `server` over memory.
fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
        }
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
        }
    }
    panic!("handshake did not finish");
}

fn connect(
    server_config: &Arc<rustls::ServerConfig>,
    client_config: Arc<ClientConfig>,
    sni: &str,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut c = ClientConnection::new(client_config, name).unwrap();
    let mut s = ServerConnection::new(server_config.clone()).unwrap();
    handshake(&mut c, &mut s)?;
    Ok((c, s))
}

#[test]
fn handshakes_get_the_certificate_their_sni_names_with_tls13_and_alpn() {
    let s = two_certs();
    let config = ringgate::config::parse_in(&config_with(TWO_CERTS), Some(&s.dir)).unwrap();
    let server = config.tls.unwrap().server;
    let trusted = client(&[&s.api, &s.tenants], false, &["http/1.1"]);
    let (c, srv) = connect(&server, trusted.clone(), "acme.tenant.example.com").unwrap();
    assert_eq!(c.peer_certificates().unwrap()[0], s.tenants);
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(srv.server_name(), Some("acme.tenant.example.com"));
    let (c, _) = connect(&server, trusted, "api.example.com").unwrap();
    assert_eq!(c.peer_certificates().unwrap()[0], s.api);
}

#[test]
fn tls12_is_offered_unless_the_minimum_is_13() {
    let s = two_certs();
    let config = ringgate::config::parse_in(&config_with(TWO_CERTS), Some(&s.dir)).unwrap();
    let (c, _) = connect(
        &config.tls.unwrap().server,
        client(&[&s.api], true, &[]),
        "api.example.com",
    )
    .unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let strict = TWO_CERTS.replace("[tls]\n", "[tls]\nmin_version = \"1.3\"\n");
    let config = ringgate::config::parse_in(&config_with(&strict), Some(&s.dir)).unwrap();
    let refused = connect(
        &config.tls.unwrap().server,
        client(&[&s.api], true, &[]),
        "api.example.com",
    );
    assert!(refused.is_err(), "a TLS 1.2-only client must be refused");
}
