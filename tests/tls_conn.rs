//! A server-side TLS connection over monoio (`ringgate::tls::conn`), on both drivers,
//! against rustls clients over real sockets: the handshake and what it tells (version,
//! cipher, SNI, ALPN), 1 MiB echoed both ways through the caller's buffers, a clean
//! close, a client refused for its version (and told so with an alert), and a session
//! resumed on another worker thread that shares the server config.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ringgate::tls::conn::{TlsConn, TlsFacts};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConfig, StreamOwned};
use support::{temp_dir, Driver};
use tls_support::{client, make_cert};

type Report = Result<TlsFacts, String>;

/// A worker thread of its own on `driver`: accepts `conns` connections one after the
/// other, reports each handshake, and echoes what the client sends until it closes.
fn echo_worker(
    driver: Driver,
    config: Arc<ServerConfig>,
    conns: usize,
) -> (SocketAddr, mpsc::Receiver<Report>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (report_tx, report_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let serve = async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            for _ in 0..conns {
                let (tcp, _) = listener.accept().await.unwrap();
                let accepted = monoio::time::timeout(
                    Duration::from_secs(5),
                    TlsConn::accept(tcp, config.clone()),
                )
                .await;
                let mut conn = match accepted {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        report_tx.send(Err(e.to_string())).unwrap();
                        continue;
                    }
                    Err(_) => {
                        report_tx.send(Err("handshake timed out".into())).unwrap();
                        continue;
                    }
                };
                report_tx.send(Ok(conn.facts())).unwrap();
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match conn.read_into(&mut buf, 64 * 1024).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if conn.write_all(&buf).await.is_err() {
                        break;
                    }
                }
                let _ = conn.close().await;
            }
        };
        match driver {
            Driver::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
                .unwrap()
                .block_on(serve),
            Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap()
                .block_on(serve),
        }
    });
    (addr_rx.recv().unwrap(), report_rx)
}

struct Certs {
    server: Arc<ServerConfig>,
    api: rustls::pki_types::CertificateDer<'static>,
    tenants: rustls::pki_types::CertificateDer<'static>,
}

fn certs(min_version: &str) -> Certs {
    let dir = temp_dir("tls-conn");
    let api = make_cert(&dir, "api", &["api.example.com"], 2100);
    let tenants = make_cert(&dir, "tenants", &["*.tenant.example.com"], 2100);
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"all\"\npath = \"/*\"\nupstream = \"up\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nmin_version = \"{min_version}\"\n\
         [[tls.certs]]\ncert = \"api.pem\"\nkey = \"api.key\"\n\
         [[tls.certs]]\ncert = \"tenants.pem\"\nkey = \"tenants.key\"\n"
    );
    let config = ringgate::config::parse_in(&text, Some(&dir)).unwrap();
    Certs {
        server: config.tls.unwrap().server,
        api,
        tenants,
    }
}

fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> StreamOwned<ClientConnection, std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
}

/// Sends `data` and reads the same number of bytes back.
fn echo(stream: &mut StreamOwned<ClientConnection, std::net::TcpStream>, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    stream.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

fn handshake_facts_echo_and_clean_close(driver: Driver) {
    let c = certs("1.2");
    let (addr, reports) = echo_worker(driver, c.server.clone(), 1);
    let mut stream = connect(
        addr,
        client(&[&c.api, &c.tenants], false, &["http/1.1"]),
        "acme.tenant.example.com",
    );
    assert_eq!(echo(&mut stream, b"hello"), b"hello");
    let facts = reports
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(facts.version, "TLSv1_3");
    assert!(facts.cipher.starts_with("TLS13_"), "{}", facts.cipher);
    assert_eq!(facts.sni.as_deref(), Some("acme.tenant.example.com"));
    assert_eq!(facts.alpn.as_deref(), Some("http/1.1"));
    assert!(!facts.resumed);
    assert_eq!(
        stream.conn.peer_certificates().unwrap()[0],
        c.tenants,
        "the wildcard certificate for its SNI"
    );
    // 1 MiB through the caller's buffers, in pieces of four TLS records (each piece
    // read back before the next is sent, so neither side's socket buffer can fill).
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let back: Vec<u8> = big
        .chunks(64 * 1024)
        .flat_map(|piece| echo(&mut stream, piece))
        .collect();
    assert!(back == big, "1 MiB echoed intact");
    // A clean close both ways.
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

fn an_old_client_is_refused_with_an_alert(driver: Driver) {
    let c = certs("1.3");
    let (addr, reports) = echo_worker(driver, c.server.clone(), 1);
    let mut stream = connect(addr, client(&[&c.api], true, &[]), "api.example.com");
    let err = stream.write_all(b"hi").and_then(|()| stream.flush());
    let err = match err {
        Err(e) => e.to_string(),
        Ok(()) => {
            let mut b = [0u8; 1];
            stream.read(&mut b).unwrap_err().to_string()
        }
    };
    assert!(
        err.contains("ProtocolVersion") || err.contains("alert"),
        "{err}"
    );
    let report = reports.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(report.is_err(), "{report:?}");
}

fn sessions_resume_on_another_worker(driver: Driver) {
    let c = certs("1.2");
    // Two worker threads sharing one server config, as the gateway's workers do.
    let (first, first_reports) = echo_worker(driver, c.server.clone(), 1);
    let (second, second_reports) = echo_worker(driver, c.server.clone(), 1);
    let config = client(&[&c.api], false, &[]);
    let mut a = connect(first, config.clone(), "api.example.com");
    // Reading the echo also reads the session tickets sent after the handshake.
    assert_eq!(echo(&mut a, b"one"), b"one");
    drop(a);
    let mut b = connect(second, config, "api.example.com");
    assert_eq!(echo(&mut b, b"two"), b"two");
    let full = first_reports
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let resumed = second_reports
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert!(!full.resumed);
    assert!(
        resumed.resumed,
        "the second worker resumed the session: {resumed:?}"
    );
}

on_both_drivers!(
    handshake_facts_echo_and_clean_close,
    an_old_client_is_refused_with_an_alert,
    sessions_resume_on_another_worker,
);
