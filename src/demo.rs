//! `ringgate demo`: a built-in demo backend and an embedded config, so a fresh checkout
//! can see the gateway work with one command.
//!
//! The backend is a tiny thread-per-connection HTTP/1.1 server (it is a demo peer, not a
//! hot path): every request gets a JSON echo of what the backend received, which shows
//! what the gateway changed (normalized path, X-Forwarded-*, X-Request-Id).
//! Header values may carry obs-text (the gateway forwards it); a request the backend
//! cannot parse gets a `400` with a JSON body, then the connection closes. Each response
//! leaves in one write on a TCP_NODELAY socket, so load tools through the demo measure
//! the gateway, not Nagle and delayed ACKs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// The embedded demo config; `{backend}` is replaced by the backend's address, `{apps}`,
/// `{cert}` and `{key}` by the files written for it.
pub const DEMO_CONFIG: &str = r#"
[tls]
listen = ["127.0.0.1:8443"]
[[tls.certs]]
cert = "{cert}"
key = "{key}"
names = ["localhost", "127.0.0.1"]

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

/// The demo's temporary directory (apps file, certificate).
fn demo_dir() -> io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ringgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (ECDSA P-256,
/// generated at each start) and its key to the demo's directory; returns their paths.
pub fn write_demo_cert() -> io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = demo_dir()?;
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(io::Error::other)?;
    let (cert, key) = (dir.join("demo.pem"), dir.join("demo.key"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.key_pair.serialize_pem())?;
    Ok((cert, key))
}

/// Writes the demo's apps file to a temporary directory; returns its path.
pub fn write_demo_apps() -> io::Result<std::path::PathBuf> {
    let dir = demo_dir()?;
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

/// The most a request head may take (request line and headers).
const MAX_HEAD: usize = 64 * 1024;

/// What the backend received: the echo's fields.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    length: usize,
    chunked: bool,
}

/// Why a request cannot be answered normally: answered with a 400, then the connection
/// closes (the rest of the stream cannot be trusted to be framed).
struct BadRequest(&'static str);

fn serve(stream: TcpStream) -> io::Result<()> {
    // Each response goes out in one write; without TCP_NODELAY, Nagle would still hold
    // back a response sent while the previous one is unacknowledged (delayed ACK: ~40 ms).
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let req = match read_head(&mut reader)? {
            None => return Ok(()),
            Some(Ok(req)) => req,
            Some(Err(BadRequest(why))) => return bad_request(&mut writer, why),
        };
        let body_len = if req.chunked {
            match read_chunked(&mut reader)? {
                Ok(n) => n,
                Err(BadRequest(why)) => return bad_request(&mut writer, why),
            }
        } else {
            io::copy(&mut (&mut reader).take(req.length as u64), &mut io::sink())? as usize
        };
        let mut body = format!(
            "{{\"service\":\"ringgate-demo-backend\",\"method\":{},\"path\":{},\"body_bytes\":{body_len},\"headers\":{{",
            json(&req.method),
            json(&req.target)
        );
        for (i, (k, v)) in req.headers.iter().enumerate() {
            body.push_str(&format!(
                "{}{}:{}",
                if i > 0 { "," } else { "" },
                json(k),
                json(v)
            ));
        }
        body.push_str("}}\n");
        writer.write_all(&response("200 OK", "", &body))?;
    }
}

/// A whole response in one buffer, so it leaves in one write.
fn response(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn bad_request(writer: &mut TcpStream, why: &str) -> io::Result<()> {
    let body = format!(
        "{{\"service\":\"ringgate-demo-backend\",\"error\":\"bad_request\",\"message\":{}}}\n",
        json(why)
    );
    writer.write_all(&response("400 Bad Request", "connection: close\r\n", &body))?;
    writer.shutdown(std::net::Shutdown::Write)?;
    // Lingering close: read what the client still sends (for a moment), so closing with
    // unread bytes does not reset the connection and lose the 400 on the client's side.
    writer.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    let _ = io::copy(&mut (&*writer).take(1 << 20), &mut io::sink());
    Ok(())
}

enum Line {
    /// The line without its CRLF (or bare LF).
    Full(Vec<u8>),
    /// The stream ended before the line began.
    Eof,
    /// The stream ended mid-line, or the line ran past the head's budget.
    Bad,
}

/// Reads one line of the head as bytes: header values may carry obs-text (bytes >= 0x80),
/// which is not UTF-8. `budget` is what the head may still take.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let n = reader.take(*budget as u64).read_until(b'\n', &mut line)?;
    *budget -= n;
    if n == 0 && *budget > 0 {
        return Ok(Line::Eof);
    }
    if line.pop() != Some(b'\n') {
        return Ok(Line::Bad);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Line::Full(line))
}

/// `Ok(None)`: the client closed between requests.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Result<Request, BadRequest>>> {
    let mut budget = MAX_HEAD;
    let line = match read_line(reader, &mut budget)? {
        Line::Eof => return Ok(None),
        Line::Bad => return Ok(Some(Err(BadRequest("malformed request line")))),
        Line::Full(line) => line,
    };
    let Some(mut req) = request_line(&line) else {
        return Ok(Some(Err(BadRequest("malformed request line"))));
    };
    loop {
        let h = match read_line(reader, &mut budget)? {
            Line::Full(h) => h,
            Line::Eof | Line::Bad => {
                return Ok(Some(Err(BadRequest(
                    "incomplete or oversized request head",
                ))))
            }
        };
        if h.is_empty() {
            return Ok(Some(Ok(req)));
        }
        let Some(colon) = h.iter().position(|&b| b == b':') else {
            return Ok(Some(Err(BadRequest("malformed header line"))));
        };
        let name = &h[..colon];
        if name.is_empty() || !name.iter().all(|&b| crate::http::is_token_byte(b)) {
            return Ok(Some(Err(BadRequest("malformed header name"))));
        }
        let k = String::from_utf8_lossy(name).to_ascii_lowercase();
        // obs-text is accepted; the (UTF-8) echo shows such bytes as U+FFFD.
        let v = String::from_utf8_lossy(h[colon + 1..].trim_ascii()).into_owned();
        if k == "content-length" {
            match v.parse() {
                Ok(n) => req.length = n,
                Err(_) => return Ok(Some(Err(BadRequest("invalid content-length")))),
            }
        }
        if k == "transfer-encoding" {
            req.chunked = v.eq_ignore_ascii_case("chunked");
        }
        req.headers.push((k, v));
    }
}

/// `METHOD SP request-target SP HTTP/1.x`.
fn request_line(line: &[u8]) -> Option<Request> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(crate::http::is_token_byte)
        && !target.is_empty()
        && target.bytes().all(|b| b.is_ascii_graphic())
        && (version == "HTTP/1.1" || version == "HTTP/1.0");
    valid.then(|| Request {
        method: method.to_string(),
        target: target.to_string(),
        headers: Vec::new(),
        length: 0,
        chunked: false,
    })
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Result<usize, BadRequest>> {
    let mut total = 0;
    loop {
        let mut budget = MAX_HEAD;
        let Line::Full(size) = read_line(reader, &mut budget)? else {
            return Ok(Err(BadRequest("incomplete chunked body")));
        };
        let size = String::from_utf8_lossy(&size);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            return Ok(Err(BadRequest("invalid chunk size")));
        };
        if n == 0 {
            // Trailer fields, up to the empty line.
            loop {
                match read_line(reader, &mut budget)? {
                    Line::Full(t) if t.is_empty() => return Ok(Ok(total)),
                    Line::Full(_) => {}
                    Line::Eof | Line::Bad => return Ok(Err(BadRequest("incomplete chunked body"))),
                }
            }
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
pub fn example_commands(
    gateway: SocketAddr,
    https: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> String {
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
    if let Some(h) = https {
        s.push_str(&format!(
            "  curl -k -i https://{h}/api/hello                # HTTPS (self-signed certificate: -k)\n"
        ));
    }
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
