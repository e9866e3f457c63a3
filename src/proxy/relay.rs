//! Streams one message body from a source socket to a destination socket with bounded
//! memory, re-framing it on the way: Content-Length stays Content-Length (forwarded
//! without copying), chunked is decoded strictly and re-encoded, close-delimited bodies
//! become chunked for HTTP/1.1 peers.

use std::io;
use std::time::{Duration, Instant};

use super::body_pace::BodyPace;
use super::io::{write_all, ReadBuf, SpareBuffers};
use super::wire::Wire;
use crate::http::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use crate::http::Framing;

/// The most bytes read from the source per step; also bounds the re-encode buffer.
pub const BODY_BUF_MAX: usize = 64 * 1024;

/// A Content-Length body whose rest fits in this many bytes with what is pending (the
/// head) is gathered: the pieces that have already arrived go out with the head in one
/// write (a piece still on its way is not waited for). Per write, a ring trip and a
/// pass through the TCP stack cost more than copying 16 KiB: a 16 KiB response went
/// out in three writes (head, first piece, last piece) before. The gathering buffer
/// comes from the worker's `gather` list and goes back after the write, so memory
/// follows the bodies in flight, not the connections, and a busy worker does not
/// allocate (and fault in) a fresh one per response.
pub const GATHER_MAX: usize = 64 * 1024;

/// Gathering buffers a worker keeps for reuse (4 MiB).
pub const SPARE_GATHER_BUFFERS: usize = 64;

/// Why a body could not be relayed. The caller knows which peer is which side.
#[derive(Debug)]
pub enum RelayError {
    /// The source closed before the body was complete.
    SourceClosed,
    SourceTimeout,
    /// The source sent the body slower than its pace allows (`server.min_body_rate`).
    SourceTooSlow,
    SourceIo(io::Error),
    /// The source's chunked framing is invalid.
    BadFraming(&'static str),
    /// The body is larger than the limit.
    TooLarge,
    DestTimeout,
    DestIo(io::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::SourceClosed => f.write_str("closed before the end of the body"),
            RelayError::SourceTimeout => f.write_str("timed out while sending the body"),
            RelayError::SourceTooSlow => f.write_str("sent the body too slowly"),
            RelayError::SourceIo(e) => write!(f, "read failed: {e}"),
            RelayError::BadFraming(why) => write!(f, "invalid chunked framing: {why}"),
            RelayError::TooLarge => f.write_str("body larger than the limit"),
            RelayError::DestTimeout => f.write_str("the receiver stopped reading"),
            RelayError::DestIo(e) => write!(f, "write failed: {e}"),
        }
    }
}

pub struct Relay<'a, S: Wire, D: Wire> {
    pub src: &'a mut S,
    pub src_buf: &'a mut ReadBuf,
    pub dst: &'a mut D,
    /// Bytes to send before the body (a head), then the re-encoding scratch buffer.
    pub pending: &'a mut Vec<u8>,
    pub from: Framing,
    /// Encode the output as chunked (otherwise it is sent as it comes).
    pub to_chunked: bool,
    pub limit: u64,
    pub read_timeout: Duration,
    /// The pace the source must keep (a client's request body); `None`: only each wait
    /// is bounded, by `read_timeout` (a response body may be a slow stream).
    pub pace: Option<BodyPace>,
    pub write_timeout: Duration,
    /// Set once any byte has been handed to `dst`. Until then a failure can still be
    /// answered with an error response of its own (a 502 instead of a bare close).
    pub dst_touched: &'a mut bool,
    /// Where gathering buffers come from (`GATHER_MAX`).
    pub gather: &'a SpareBuffers,
}

impl<S: Wire, D: Wire> Relay<'_, S, D> {
    /// Relays the whole body; `pending` is flushed first. Returns body bytes relayed.
    pub async fn run(mut self) -> Result<u64, RelayError> {
        let mut set_aside = None;
        let result = self.relay(&mut set_aside).await;
        // A gathering buffer borrowed for this body goes back to the worker.
        if let Some(own) = set_aside {
            let gathered = std::mem::replace(self.pending, own);
            self.gather.put_vec(gathered);
        }
        result
    }

    async fn relay(&mut self, set_aside: &mut Option<Vec<u8>>) -> Result<u64, RelayError> {
        let Relay {
            src,
            src_buf,
            dst,
            pending,
            from,
            to_chunked,
            limit,
            read_timeout,
            pace,
            write_timeout,
            dst_touched,
            gather,
        } = self;
        let pace = *pace;
        let (src, dst): (&mut S, &mut D) = (src, dst);
        let (from, to_chunked, limit) = (*from, *to_chunked, *limit);
        let (read_timeout, write_timeout) = (*read_timeout, *write_timeout);
        let mut relayed: u64 = 0;
        let mut decoder = ChunkedDecoder::new();
        let mut remaining = match from {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        if from == Framing::None {
            return flush(dst, pending, write_timeout, dst_touched)
                .await
                .map(|()| 0);
        }
        loop {
            match from {
                Framing::Length(_) => {
                    let take = (src_buf.len() as u64).min(remaining) as usize;
                    remaining -= take as u64;
                    relayed += take as u64;
                    if gathers(pending, take as u64 + remaining) {
                        // (Known to fit: `gathers` bounds the rest of the body.)
                        let needed = pending.len() + take + remaining as usize;
                        if set_aside.is_none() && pending.capacity() < needed {
                            let mut buf = gather.take_vec();
                            buf.extend_from_slice(pending);
                            *set_aside = Some(std::mem::replace(*pending, buf));
                        }
                        pending.extend_from_slice(&src_buf.data()[..take]);
                        src_buf.consume(take);
                    } else {
                        flush(dst, pending, write_timeout, dst_touched).await?;
                        **dst_touched = true;
                        src_buf
                            .write_to(dst, take, write_timeout)
                            .await
                            .map_err(dest_err)?;
                    }
                    if remaining == 0 {
                        return flush(dst, pending, write_timeout, dst_touched)
                            .await
                            .map(|()| relayed);
                    }
                }
                Framing::Chunked => {
                    let mut pos = 0;
                    let data = src_buf.data();
                    while pos < data.len() && !decoder.is_done() {
                        let step = decoder
                            .decode(&data[pos..])
                            .map_err(RelayError::BadFraming)?;
                        if let Some(r) = step.data {
                            let chunk = &data[pos + r.start..pos + r.end];
                            relayed += chunk.len() as u64;
                            if relayed > limit {
                                return Err(RelayError::TooLarge);
                            }
                            encode(pending, chunk, to_chunked);
                        }
                        pos += step.consumed;
                    }
                    src_buf.consume(pos);
                    if decoder.is_done() {
                        if to_chunked {
                            pending.extend_from_slice(LAST_CHUNK);
                        }
                        return flush(dst, pending, write_timeout, dst_touched)
                            .await
                            .map(|()| relayed);
                    }
                }
                Framing::UntilClose | Framing::None => {
                    let data = src_buf.data();
                    relayed += data.len() as u64;
                    if relayed > limit {
                        return Err(RelayError::TooLarge);
                    }
                    encode(pending, data, to_chunked);
                    let n = data.len();
                    src_buf.consume(n);
                }
            }
            if relayed > limit {
                return Err(RelayError::TooLarge);
            }
            let want = usize::try_from(remaining).unwrap_or(usize::MAX);
            // A small Content-Length body being gathered takes the bytes that already
            // arrived without a wait (its last few hundred bytes, usually).
            let gathering = matches!(from, Framing::Length(_)) && gathers(pending, remaining);
            if gathering && !pending.is_empty() {
                match src_buf.read_ready(src, want) {
                    Ok(0) => return Err(RelayError::SourceClosed),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(RelayError::SourceIo(e)),
                }
            }
            // About to wait on the source: whatever is ready goes out first, so a slow
            // stream (server-sent events, a long poll, a slow download) is never held
            // back.
            if !pending.is_empty() {
                flush(dst, pending, write_timeout, dst_touched).await?;
            }
            let wait = match pace {
                Some(p) => p
                    .next_wait(Instant::now(), relayed, read_timeout)
                    .ok_or(RelayError::SourceTooSlow)?,
                None => read_timeout,
            };
            match src_buf.read_up_to(src, BODY_BUF_MAX, want, wait).await {
                Ok(0) if from == Framing::UntilClose => {
                    if to_chunked {
                        pending.extend_from_slice(LAST_CHUNK);
                    }
                    return flush(dst, pending, write_timeout, dst_touched)
                        .await
                        .map(|()| relayed);
                }
                Ok(0) => return Err(RelayError::SourceClosed),
                Ok(_) => {}
                // Cut short by the pace rather than by a silence of read_timeout.
                Err(e) if e.kind() == io::ErrorKind::TimedOut && wait < read_timeout => {
                    return Err(RelayError::SourceTooSlow)
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(RelayError::SourceTimeout)
                }
                Err(e) => return Err(RelayError::SourceIo(e)),
            }
        }
    }
}

/// Whether `more` bytes of a Content-Length body, the rest of it, are gathered into
/// `pending` to go out with it in one write.
fn gathers(pending: &[u8], more: u64) -> bool {
    pending.len() as u64 + more <= GATHER_MAX as u64
}

fn encode(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        write_chunk_header(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

async fn flush(
    dst: &mut impl Wire,
    pending: &mut Vec<u8>,
    timeout: Duration,
    touched: &mut bool,
) -> Result<(), RelayError> {
    *touched |= !pending.is_empty();
    let res = write_all(dst, pending, timeout).await;
    pending.clear();
    res.map_err(dest_err)
}

fn dest_err(e: io::Error) -> RelayError {
    if e.kind() == io::ErrorKind::TimedOut {
        RelayError::DestTimeout
    } else {
        RelayError::DestIo(e)
    }
}
