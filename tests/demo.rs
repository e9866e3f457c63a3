//! The demo backend behind `ringgate demo`, over real sockets: each response leaves in one
//! write on a TCP_NODELAY socket, obs-text header values are answered normally, and a
//! request it cannot parse gets a 400 rather than a dropped connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The end of the head and the content-length, once the head is complete.
fn framing(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("content-length");
    Some((end, len))
}

/// One `read`: with the response written in one write, the first read returns all of it.
fn read_in_one_read(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).unwrap();
    let got = &buf[..n];
    let (end, len) = framing(got).unwrap_or_else(|| {
        panic!(
            "the first read held part of a head: {:?}",
            String::from_utf8_lossy(got)
        )
    });
    assert_eq!(
        n,
        end + len,
        "the first read did not hold exactly one whole response: {:?}",
        String::from_utf8_lossy(got)
    );
    String::from_utf8(got.to_vec()).unwrap()
}

/// Reads until the peer closes.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The server side of `client`'s connection, found among this process's descriptors
/// (the backend runs in this process): its TCP_NODELAY setting.
fn server_side_nodelay(backend: SocketAddr, client: &TcpStream) -> bool {
    let client_addr = client.local_addr().unwrap();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|l| l.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: dup(2) of a descriptor number; a closed one only returns -1.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            continue;
        }
        // SAFETY: `dup` is a fresh descriptor owned by nothing else; dropping the stream
        // closes only it, never the backend's own descriptor.
        let s = unsafe { TcpStream::from_raw_fd(dup) };
        if s.local_addr().ok() == Some(backend) && s.peer_addr().ok() == Some(client_addr) {
            return s.nodelay().unwrap();
        }
    }
    panic!("no server-side socket for {client_addr} -> {backend}");
}

#[test]
fn responses_leave_in_one_write_on_a_nodelay_socket() {
    let backend = ringgate::demo::start_backend().unwrap();
    let mut s = connect(backend);
    // Several requests on one keep-alive connection: with Nagle on and a response in
    // pieces, the second response onward would wait for a delayed ACK and arrive split.
    for i in 0..5 {
        s.write_all(
            format!("GET /backend/hello/{i} HTTP/1.1\r\nHost: demo\r\nX-Seq: {i}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let r = read_in_one_read(&mut s);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("content-type: application/json\r\n"), "{r}");
        assert!(
            r.contains(&format!("\"path\":\"/backend/hello/{i}\"")),
            "{r}"
        );
        assert!(r.contains(&format!("\"x-seq\":\"{i}\"")), "{r}");
    }
    // A body, with Content-Length and chunked.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: demo\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let r = read_in_one_read(&mut s);
    assert!(r.contains("\"body_bytes\":5"), "{r}");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n")
        .unwrap();
    let r = read_in_one_read(&mut s);
    assert!(r.contains("\"body_bytes\":5"), "{r}");
    assert!(server_side_nodelay(backend, &s), "TCP_NODELAY not set");
}

#[test]
fn obs_text_header_values_are_answered_normally() {
    let backend = ringgate::demo::start_backend().unwrap();
    let mut s = connect(backend);
    let mut req = b"GET /backend/obs HTTP/1.1\r\nHost: demo\r\nX-Name: caf".to_vec();
    req.extend_from_slice(&[0x80, 0xFE, 0xFF]);
    req.extend_from_slice(b" ok\r\n\r\n");
    s.write_all(&req).unwrap();
    let r = read_in_one_read(&mut s);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("\"path\":\"/backend/obs\""), "{r}");
    // The echo is UTF-8 JSON: each obs-text byte shows as U+FFFD.
    assert!(
        r.contains("\"x-name\":\"caf\u{FFFD}\u{FFFD}\u{FFFD} ok\""),
        "{r}"
    );
    // The connection stays usable.
    s.write_all(b"GET /backend/next HTTP/1.1\r\nHost: demo\r\n\r\n")
        .unwrap();
    let r = read_in_one_read(&mut s);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("\"path\":\"/backend/next\""), "{r}");
}

#[test]
fn unparseable_requests_get_a_400_not_a_dropped_connection() {
    let backend = ringgate::demo::start_backend().unwrap();
    for (raw, message) in [
        (
            &b"\x16\x03\x01garbage that is not HTTP\r\n\r\n"[..],
            "malformed request line",
        ),
        (
            &b"GET /a HTTP/1.1 extra\r\n\r\n"[..],
            "malformed request line",
        ),
        (
            &b"GET /a HTTP/1.1\r\nno colon here\r\n\r\n"[..],
            "malformed header line",
        ),
        (
            &b"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n"[..],
            "malformed header name",
        ),
        (
            &b"POST /a HTTP/1.1\r\nContent-Length: many\r\n\r\n"[..],
            "invalid content-length",
        ),
        (
            &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            "invalid chunk size",
        ),
    ] {
        let mut s = connect(backend);
        s.write_all(raw).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let r = read_to_close(&mut s);
        let shown = String::from_utf8_lossy(raw);
        assert!(
            r.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{shown:?}: {r}"
        );
        assert!(r.contains("content-type: application/json\r\n"), "{r}");
        assert!(r.contains("connection: close\r\n"), "{r}");
        let (end, len) = framing(r.as_bytes()).unwrap();
        assert_eq!(r.len(), end + len, "{r}");
        assert_eq!(
            &r[end..],
            format!(
                "{{\"service\":\"ringgate-demo-backend\",\"error\":\"bad_request\",\"message\":\"{message}\"}}\n"
            ),
            "{shown:?}"
        );
    }
    // A head that never ends within 64 KiB.
    let mut s = connect(backend);
    let mut raw = b"GET /a HTTP/1.1\r\nX-Big: ".to_vec();
    raw.resize(70 * 1024, b'a');
    s.write_all(&raw).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_to_close(&mut s);
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    assert!(r.contains("oversized request head"), "{r}");
}
