//! No secret is ever written: a real `ringgate run` process at debug log level serves
//! signed calls (good, forged, replayed, with an unknown key), admin calls with the right
//! and a wrong token, `GET /config`, and a reload refused because the apps file broke on
//! the line holding a secret; then everything it wrote (stdout, stderr, the access log)
//! and every response body is searched for the app secret, the admin token and the
//! signatures sent. None may appear.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ringgate::auth::sign::sign_request;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");
const SECRET: &str = "s3cr3t-app-secret-0x51e7";
const TOKEN: &str = "admin-t0ken-never-written-77";

fn signed(key: &str, secret: &str, nonce: &str) -> (String, String) {
    let now = ringgate::auth::check::unix_now();
    let s = sign_request(key, secret.as_bytes(), "GET", "/api/x", "", b"", now, nonce).unwrap();
    let raw = format!(
        "GET /api/x HTTP/1.1\r\nHost: a\r\nX-Rg-Key: {key}\r\nX-Rg-Timestamp: {}\r\n\
         X-Rg-Nonce: {nonce}\r\nX-Rg-Signature: {}\r\n\r\n",
        s.timestamp, s.signature
    );
    (raw, s.signature)
}

#[test]
fn secrets_never_reach_logs_or_error_bodies() {
    let up = Upstream::echo();
    let dir = temp_dir("no-secrets");
    let apps = dir.join("apps.toml");
    let good_apps = format!("[[apps]]\nkey = \"shop\"\nsecrets = [\"{SECRET}\"]\n");
    std::fs::write(&apps, &good_apps).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.join("ringgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\
             [apps]\nfile = \"apps.toml\"\n[access_log]\npath = \"access.log\"\n\
             {}",
            simple_routes(up.addr, "", "auth = \"hmac\"")
        ),
    )
    .unwrap();
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let (addr, admin): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    }));
    let mut bodies = Vec::new();
    let mut signatures = Vec::new();
    let mut send = |to: SocketAddr, raw: &str, want: u16| {
        let r = exchange(to, raw.as_bytes());
        assert_eq!(r.status, want, "{raw}\n{}", r.body_str());
        bodies.push(r.body_str());
    };
    let (good, sig) = signed("shop", SECRET, "nonce-no-secrets-0001");
    signatures.push(sig);
    send(addr, &good, 200);
    // Replayed, forged with another secret, and from an unknown app.
    send(addr, &good, 401);
    let (forged, sig) = signed("shop", "a-different-secret-123", "nonce-no-secrets-0002");
    signatures.push(sig);
    send(addr, &forged, 401);
    let (unknown, sig) = signed("nobody", SECRET, "nonce-no-secrets-0003");
    signatures.push(sig);
    send(addr, &unknown, 401);
    // The admin API, with a wrong token and the right one.
    let admin_get = |token: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    send(admin, &admin_get("not-the-token-0000000", "/config"), 401);
    send(admin, &admin_get(TOKEN, "/config"), 200);
    send(admin, &admin_get(TOKEN, "/stats"), 200);
    // A broken apps file, the error on the secret's line: refused, secret not quoted.
    std::fs::write(
        &apps,
        format!("[[apps]]\nkey = \"shop\"\nsecrets = [\"{SECRET}\n"),
    )
    .unwrap();
    let reload = format!(
        "POST /reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    let r = exchange(admin, reload.as_bytes());
    assert_ne!(r.status, 200, "the broken apps file was refused");
    bodies.push(r.body_str());
    std::fs::write(&apps, &good_apps).unwrap();
    // Stop, so every buffered line is written.
    terminate(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut written = String::new();
    for f in [&out_path, &err_path, &dir.join("access.log")] {
        let mut text = String::new();
        std::fs::File::open(f)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        written.push_str(&text);
    }
    assert!(
        written.contains("nonce-no-secrets-0001") || written.contains("/api/x"),
        "the logs were written:\n{written}"
    );
    let mut needles = vec![SECRET.to_string(), TOKEN.to_string()];
    needles.extend(signatures);
    for needle in &needles {
        assert!(
            !written.contains(needle),
            "{needle:?} was written:\n{written}"
        );
        for b in &bodies {
            assert!(!b.contains(needle), "{needle:?} in a response body: {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM, through the `kill` command (no unsafe code in tests).
fn terminate(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}
