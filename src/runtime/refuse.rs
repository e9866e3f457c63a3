//! Connections beyond `max_connections_per_worker`: accepted and turned away at once,
//! cheaply and countably, instead of left waiting in the kernel's backlog (where a client
//! sees nothing until its connect times out, and SYNs are dropped once the backlog is
//! full). A plain listener's client gets `503 overloaded` with the JSON error body and
//! `retry-after: 1`; a TLS listener's is closed (no HTTP before a handshake, and a
//! handshake is the expensive part being refused). Refusals in flight are bounded: past
//! `MAX_REFUSING` the connection is closed at once.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::error::ErrorKind;
use crate::http::date::write_date_header;
use crate::http::error_response::write_error_response;

/// Refusals one worker writes at once; beyond this the connection is just closed.
const MAX_REFUSING: usize = 512;

/// How long a refused client may take to send its request, read before closing so the
/// close does not reset the connection under the response.
const DRAIN: Duration = Duration::from_millis(100);

/// A worker's refusals in flight.
#[derive(Default)]
pub struct Refusals {
    in_flight: Cell<usize>,
}

/// Turns `stream` away: the 503 on a plain listener (`speak_http`), then closes.
pub async fn refuse(
    stream: TcpStream,
    speak_http: bool,
    request_id: String,
    refusals: Rc<Refusals>,
) {
    if !speak_http || refusals.in_flight.get() >= MAX_REFUSING {
        return;
    }
    refusals.in_flight.set(refusals.in_flight.get() + 1);
    let mut stream = stream;
    let mut extra = b"retry-after: 1\r\n".to_vec();
    write_date_header(&mut extra);
    let mut out = Vec::with_capacity(320);
    write_error_response(
        &mut out,
        ErrorKind::Overloaded,
        "the gateway is at its connection limit; retry shortly",
        &request_id,
        true,
        false,
        &extra,
    );
    let _ = stream.set_nodelay(true);
    let (written, _) = stream.write_all(out).await;
    if written.is_ok() {
        // Our side done; take what the client sends meanwhile, briefly, so closing
        // with its request unread does not reset the connection under the response.
        let _ = monoio::io::AsyncWriteRent::shutdown(&mut stream).await;
        let drain = async {
            let mut buf = Vec::with_capacity(4096);
            loop {
                buf.clear();
                let (res, back) = monoio::io::AsyncReadRent::read(&mut stream, buf).await;
                buf = back;
                if !matches!(res, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        let _ = monoio::time::timeout(DRAIN, drain).await;
    }
    refusals.in_flight.set(refusals.in_flight.get() - 1);
}
