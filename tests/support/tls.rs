//! TLS helpers for tests: self-signed certificates written to a directory (rcgen) and
//! rustls client configs that trust exactly the given certificates.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A self-signed ECDSA P-256 certificate for `names`, valid from 2020 to `until_year`,
/// written as `<tag>.pem` and `<tag>.key` in `dir`; returns its DER.
pub fn make_cert(
    dir: &Path,
    tag: &str,
    names: &[&str],
    until_year: i32,
) -> CertificateDer<'static> {
    make_cert_with_key(
        dir,
        tag,
        names,
        until_year,
        rcgen::KeyPair::generate().unwrap(),
    )
}

/// `make_cert` with an RSA 3072 key: each handshake then costs the server a few
/// milliseconds of signing, for tests that need handshakes to be dear.
pub fn make_rsa_cert(dir: &Path, tag: &str, names: &[&str]) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        .unwrap();
    make_cert_with_key(dir, tag, names, 2100, key)
}

fn make_cert_with_key(
    dir: &Path,
    tag: &str,
    names: &[&str],
    until_year: i32,
    key: rcgen::KeyPair,
) -> CertificateDer<'static> {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{tag}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{tag}.key")), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// A client trusting `trusted`, offering TLS 1.2 only or 1.3 and 1.2, and `alpn`.
pub fn client(
    trusted: &[&CertificateDer<'static>],
    tls12_only: bool,
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A private certificate authority for tests.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl Ca {
    /// A new CA, its certificate written as `<tag>.pem` in `dir`.
    pub fn new(dir: &Path, tag: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{tag} test CA"));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{tag}.pem")), cert.pem()).unwrap();
        Ca { cert, key }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate this CA signs, for `names` (DNS names or IP addresses) with the
    /// common name `cn`, valid until `until_year`; written as `<tag>.pem` and `<tag>.key`.
    pub fn issue(
        &self,
        dir: &Path,
        tag: &str,
        names: &[&str],
        cn: &str,
        until_year: i32,
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{tag}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{tag}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }
}

/// A server config for `<tag>.pem`/`<tag>.key` in `dir`; with `client_ca`, clients
/// must present a certificate that CA signed.
pub fn server(dir: &Path, tag: &str, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{tag}.pem"))).unwrap()];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{tag}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// An HTTPS upstream: every connection is a TLS handshake, then keep-alive requests
/// (Content-Length bodies), each answered 200 with the body
/// `"<connection> <method> <target> <body length> sni=<name> client=<common name>"`
/// (`-` where there is none). Failed handshakes are counted.
pub struct TlsUpstream {
    pub addr: std::net::SocketAddr,
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    pub failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsUpstream {
    pub fn start(config: Arc<rustls::ServerConfig>) -> TlsUpstream {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (ok, bad) = (handshakes.clone(), failed.clone());
        std::thread::spawn(move || {
            for (id, tcp) in listener.incoming().flatten().enumerate() {
                let (config, ok, bad) = (config.clone(), ok.clone(), bad.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    while s.conn.is_handshaking() {
                        if s.conn.complete_io(&mut s.sock).is_err() {
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                    let sni = s.conn.server_name().unwrap_or("-").to_string();
                    let client = s
                        .conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| common_name(c))
                        .unwrap_or_else(|| "-".into());
                    let last = serve_requests(&mut s, |method, target, body| {
                        format!(
                            "{id} {method} {target} {} sni={sni} client={client}",
                            body.len()
                        )
                    });
                    if last == End::CloseNotify {
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                });
            }
        });
        TlsUpstream {
            addr,
            handshakes,
            failed,
        }
    }
}

/// How a connection of `serve_requests` ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed, or failed.
    Peer,
    /// A response delimited by the close went out: say so with `close_notify`.
    CloseNotify,
    /// The same, cut without `close_notify` (as a man in the middle would).
    Cut,
}

/// Reads requests (head, then a Content-Length body) and answers each 200 with what
/// `answer` makes of it (a target `/big/<n>` gets `n` bytes of `x` instead), until the
/// peer closes. `/close-delimited` and `/cut` get a body without a length, ended by
/// closing the connection (with and without `close_notify`).
fn serve_requests<S: std::io::Read + std::io::Write>(
    s: &mut S,
    answer: impl Fn(&str, &str, &[u8]) -> String,
) -> End {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return End::Peer,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..head_end]).is_err() {
            return End::Peer;
        }
        let method = req.method.unwrap_or("").to_string();
        let target = req.path.unwrap_or("").to_string();
        let len: usize = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return End::Peer,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        for (path, end) in [("/close-delimited", End::CloseNotify), ("/cut", End::Cut)] {
            if target == path {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body");
                let _ = s.flush();
                return end;
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let out = match target.strip_prefix("/big/").and_then(|n| n.parse().ok()) {
            Some(n) => "x".repeat(n),
            None => answer(&method, &target, &body),
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{out}",
            out.len()
        );
        if s.write_all(response.as_bytes())
            .and_then(|_| s.flush())
            .is_err()
        {
            return End::Peer;
        }
    }
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = cert.subject().iter_common_name().next();
    cn.and_then(|c| c.as_str().ok()).unwrap_or("-").to_string()
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A TLS client connection to `addr` asking for `sni` (the handshake runs with the
/// first write).
pub fn connect(addr: std::net::SocketAddr, config: Arc<ClientConfig>, sni: &str) -> TlsStream {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp)
}

/// Sends a GET and reads its response (Content-Length framed): status and body.
pub fn get(s: &mut TlsStream, host: &str, path: &str) -> (u16, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "closed in the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&buf).unwrap();
    let status = resp.code.unwrap();
    let len: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// `client` that also presents the certificate `<tag>.pem`/`<tag>.key` in `dir`.
pub fn client_with_cert(
    trusted: &[&CertificateDer<'static>],
    dir: &Path,
    tag: &str,
) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{tag}.pem"))).unwrap()];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{tag}.key"))).unwrap();
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}
