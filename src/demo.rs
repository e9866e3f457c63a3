//! `ringgate demo`: a built-in demo backend and an embedded config, so a fresh checkout
//! can see the gateway work with one command.
//!
//! The backend is a tiny thread-per-connection HTTP/1.1 server (it is a demo peer, not a
//! hot path): every request gets a JSON echo of what the backend received, which shows
//! what the gateway changed (normalized path, X-Forwarded-*, X-Request-Id).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// The embedded demo config; `{backend}` is replaced by the backend's address.
pub const DEMO_CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
workers = 2
driver = "auto"

[admin]
listen = "127.0.0.1:9901"

[apps]
file = "{apps}"

[[upstreams]]
name = "demo"
targets = ["{backend}"]

[[routes]]
name = "demo.api"
path = "/api/*"
upstream = "demo"
strip_prefix = "/api"
add_prefix = "/backend"

[[routes]]
name = "demo.trade"
path = "/v1/trade/*"
upstream = "demo"
group = "trade"
auth = "hmac"
limits = [
  { key = "app", rate = "20/s" },
  { key = "app", quota = "10000/day" },
]

[[routes]]
name = "demo.orders.get"
path = "/v1/orders/{id}"
methods = ["GET"]
upstream = "demo"
limits = [{ key = "ip", rate = "5/s" }]
"#;

/// The demo app: its key and secret are printed by `ringgate demo` (a demo, not a secret).
pub const DEMO_APP_KEY: &str = "demo-app";
pub const DEMO_APP_SECRET: &str = "demo-secret-not-for-production";

/// Writes the demo's apps file to a temporary directory; returns its path.
pub fn write_demo_apps() -> io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ringgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("apps.toml");
    std::fs::write(
        &path,
        format!(
            "[[apps]]\nkey = \"{DEMO_APP_KEY}\"\nsecrets = [\"{DEMO_APP_SECRET}\"]\nname = \"Demo app\"\ngroups = [\"trade\"]\n"
        ),
    )?;
    Ok(path)
}

/// Starts the demo backend on `127.0.0.1:0`; returns its address.
pub fn start_backend() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-backend".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("demo-conn".into())
                    .spawn(move || serve(stream));
            }
        })?;
    Ok(addr)
}

fn serve(stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                if k == "transfer-encoding" {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
                headers.push((k, v));
            }
        }
        let body_len = if chunked {
            read_chunked(&mut reader)?
        } else {
            io::copy(&mut (&mut reader).take(length as u64), &mut io::sink())? as usize
        };
        let mut body = format!("{{\"service\":\"ringgate-demo-backend\",\"method\":{},\"path\":{},\"body_bytes\":{body_len},\"headers\":{{", json(&method), json(&target));
        for (i, (k, v)) in headers.iter().enumerate() {
            body.push_str(&format!(
                "{}{}:{}",
                if i > 0 { "," } else { "" },
                json(k),
                json(v)
            ));
        }
        body.push_str("}}\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if n == 0 {
            let mut trailer = String::new();
            while reader.read_line(&mut trailer)? > 2 {
                trailer.clear();
            }
            return Ok(total);
        }
        io::copy(&mut reader.take(n as u64 + 2), &mut io::sink())?;
        total += n;
    }
}

fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The ready-to-paste commands printed by `ringgate demo`.
pub fn example_commands(gateway: SocketAddr, admin: Option<SocketAddr>) -> String {
    let mut s = format!(
        "ringgate demo is running. Try:\n\
         \n  curl -i http://{gateway}/api/hello                 # routed, prefix rewritten to /backend/hello\
         \n  curl -i http://{gateway}/v1/orders/42              # {{id}} route, GET only, 5/s per IP (RateLimit headers)\
         \n  for i in $(seq 8); do curl -s -o /dev/null -w '%{{http_code}} ' http://{gateway}/v1/orders/42; done  # 429 after 5\
         \n  curl -i -X POST http://{gateway}/v1/orders/42      # 405 method_not_allowed\
         \n  curl -i http://{gateway}/nowhere                   # 404 route_not_found\
         \n  curl -i --path-as-is http://{gateway}/api/../../etc/passwd     # 400: .. escapes the root\
         \n  curl -i -d 'hello' http://{gateway}/api/echo       # request body streamed upstream\n"
    );
    if let Some(a) = admin {
        s.push_str(&format!(
            "  curl -i http://{a}/healthz                       # admin health\n"
        ));
    }
    s.push_str(&signed_example(gateway));
    s.push_str("\nCtrl-C drains and stops.\n");
    s
}

/// The protected route's commands: one unsigned (401) and one signed now, so it works
/// once within the timestamp window.
fn signed_example(gateway: SocketAddr) -> String {
    let url = format!("http://{gateway}/v1/trade/quote?symbol=RING&qty=3");
    let mut s = format!(
        "\nProtected route /v1/trade/* (auth = \"hmac\", group \"trade\"), demo app key {DEMO_APP_KEY}:\
         \n  curl -i http://{gateway}/v1/trade/quote             # 401 unauthorized: no signature\n"
    );
    let nonce = crate::auth::client::fresh_nonce();
    let now = crate::auth::check::unix_now();
    let secret = DEMO_APP_SECRET.as_bytes();
    if let Ok(signed) =
        crate::auth::client::sign_url(DEMO_APP_KEY, secret, "GET", &url, b"", now, &nonce)
    {
        let r = &signed.signed;
        s.push_str(&format!(
            "  # signed just now; valid once within 5 minutes (sending it again is a replay: 401)\
             \n  curl -i -H 'X-Rg-Key: {}' -H 'X-Rg-Timestamp: {}' -H 'X-Rg-Nonce: {}' -H 'X-Rg-Signature: {}' '{url}'\
             \n  # sign your own:\
             \n  ringgate sign --key {DEMO_APP_KEY} --secret {DEMO_APP_SECRET} --url '{url}'\n",
            r.key, r.timestamp, r.nonce, r.signature
        ));
    }
    s
}
