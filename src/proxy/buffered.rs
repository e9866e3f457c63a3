//! Reading a whole request body into memory, for the one feature that needs it before
//! forwarding: a signature over the body's hash. Bounded by the route's body limit (413
//! above it); everything else streams.

use std::cell::Cell;
use std::time::Instant;

use super::body_pace::BodyPace;
use super::client::ClientConn;
use super::io::write_all;
use crate::config::ServerConfig;
use crate::error::{ErrorKind, ProxyError};
use crate::http::chunked::ChunkedDecoder;
use crate::http::Framing;

/// Why a body could not be read. `client_gone`: nothing can be answered.
pub struct BodyError {
    pub error: ProxyError,
    pub client_gone: bool,
}

fn fail(kind: ErrorKind, message: &'static str) -> BodyError {
    BodyError {
        error: ProxyError::client(kind, message),
        client_gone: false,
    }
}

/// Bytes of request bodies a worker holds in memory while their signatures are pending.
/// App keys are not secret, so without a budget many connections each sending a body up
/// to the route limit could make a worker buffer without bound before any check.
#[derive(Default)]
pub struct BufferBudget {
    used: Cell<u64>,
}

/// A share of the budget, given back when the body is done with.
pub struct BudgetShare<'a> {
    budget: &'a BufferBudget,
    held: u64,
}

impl BufferBudget {
    fn share(&self) -> BudgetShare<'_> {
        BudgetShare {
            budget: self,
            held: 0,
        }
    }
}

impl BudgetShare<'_> {
    /// Takes `n` more bytes unless that would pass `cap`.
    fn take(&mut self, n: u64, cap: u64) -> bool {
        let used = self.budget.used.get();
        if used + n > cap {
            return false;
        }
        self.budget.used.set(used + n);
        self.held += n;
        true
    }
}

impl Drop for BudgetShare<'_> {
    fn drop(&mut self) {
        let b = &self.budget.used;
        b.set(b.get().saturating_sub(self.held));
    }
}

fn over_budget() -> BodyError {
    BodyError {
        error: ProxyError::new(
            ErrorKind::Overloaded,
            crate::error::Side::Internal,
            "too many request bodies awaiting authentication on this worker (apps.max_buffered_bytes)",
        ),
        client_gone: false,
    }
}

/// Reads the body framed by `framing` into a buffer, within the worker's budget. The
/// returned share keeps the body's bytes counted until it is dropped with the body.
pub async fn read_body<'b>(
    c: &mut ClientConn,
    framing: Framing,
    expect_continue: bool,
    limit: u64,
    server: &ServerConfig,
    budget: &'b BufferBudget,
    budget_cap: u64,
) -> Result<(Vec<u8>, BudgetShare<'b>), BodyError> {
    let mut share = budget.share();
    let gone = || BodyError {
        error: ProxyError::client(
            ErrorKind::BadRequest,
            "client closed during the request body",
        ),
        client_gone: true,
    };
    let timeout = server.body_timeout;
    let pace = BodyPace::new(Instant::now(), timeout, server.min_body_rate);
    if expect_continue && c.rbuf.is_empty() {
        let mut cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        write_all(&mut c.stream, &mut cont, timeout)
            .await
            .map_err(|_| gone())?;
    }
    let mut body = Vec::new();
    if let Framing::Length(n) = framing {
        if !share.take(n, budget_cap) {
            return Err(over_budget());
        }
        // The length was checked against the limit with the head; allocate it once, and
        // fail cleanly rather than abort if the allocation is refused.
        body.try_reserve_exact(n as usize).map_err(|_| {
            fail(
                ErrorKind::PayloadTooLarge,
                "request body too large to buffer",
            )
        })?;
    }
    let mut decoder = ChunkedDecoder::new();
    loop {
        let done = match framing {
            Framing::Length(n) => {
                let take = (c.rbuf.len() as u64).min(n - body.len() as u64) as usize;
                body.extend_from_slice(&c.rbuf.data()[..take]);
                c.rbuf.consume(take);
                body.len() as u64 == n
            }
            Framing::Chunked => {
                let mut pos = 0;
                let data = c.rbuf.data();
                while pos < data.len() && !decoder.is_done() {
                    let step = decoder
                        .decode(&data[pos..])
                        .map_err(|_| fail(ErrorKind::BadRequest, "invalid chunked request body"))?;
                    if let Some(r) = step.data {
                        // Checked before growing, so a chunked body never takes more
                        // memory than the limit.
                        if (body.len() + r.len()) as u64 > limit {
                            return Err(fail(
                                ErrorKind::PayloadTooLarge,
                                "request body exceeds the route's limit",
                            ));
                        }
                        if !share.take(r.len() as u64, budget_cap) {
                            return Err(over_budget());
                        }
                        body.extend_from_slice(&data[pos + r.start..pos + r.end]);
                    }
                    pos += step.consumed;
                }
                c.rbuf.consume(pos);
                decoder.is_done()
            }
            Framing::None | Framing::UntilClose => true,
        };
        if body.len() as u64 > limit {
            return Err(fail(
                ErrorKind::PayloadTooLarge,
                "request body exceeds the route's limit",
            ));
        }
        if done {
            return Ok((body, share));
        }
        let too_slow = || {
            fail(
                ErrorKind::RequestTimeout,
                "request body arrived slower than the gateway's minimum rate",
            )
        };
        let wait = pace
            .next_wait(Instant::now(), body.len() as u64, timeout)
            .ok_or_else(too_slow)?;
        match c
            .rbuf
            .read_from(&mut c.stream, super::relay::BODY_BUF_MAX, wait)
            .await
        {
            Ok(0) => return Err(gone()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && wait < timeout => {
                return Err(too_slow())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(fail(
                    ErrorKind::RequestTimeout,
                    "request body not received in time",
                ))
            }
            Err(_) => return Err(gone()),
        }
    }
}
