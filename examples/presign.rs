//! Writes pre-signed requests for the load bench's "hmac" scenario: one line per request,
//! `<nonce> <signature>`, all for `GET <path>` at one timestamp, each with its own nonce
//! (the gateway rejects a repeated nonce as a replay).
//!
//! Usage: cargo run --release --example presign -- COUNT KEY SECRET PATH TIMESTAMP > FILE

use std::io::{BufWriter, Write};

use ringgate::auth::sign::sign_request;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [count, key, secret, path, timestamp] = args.as_slice() else {
        eprintln!("usage: presign COUNT KEY SECRET PATH TIMESTAMP");
        std::process::exit(2);
    };
    let (Ok(count), Ok(timestamp)) = (count.parse::<u64>(), timestamp.parse::<u64>()) else {
        eprintln!("COUNT and TIMESTAMP must be numbers");
        std::process::exit(2);
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..count {
        let nonce = format!("bench-{i:016x}");
        match sign_request(
            key,
            secret.as_bytes(),
            "GET",
            path,
            "",
            b"",
            timestamp,
            &nonce,
        ) {
            Ok(s) => writeln!(out, "{} {}", s.nonce, s.signature)?,
            Err(e) => {
                eprintln!("cannot sign: {e}");
                std::process::exit(1);
            }
        }
    }
    out.flush()
}
