//! A readiness watch kept armed on an idle pooled upstream connection, so a close or
//! stray bytes are seen as they happen and taking the connection from the pool costs no
//! syscall.
//!
//! An idle upstream connection must never be handed to a request if its peer closed it
//! or sent unsolicited bytes (a body after a HEAD or 204 answer, in a later segment):
//! those bytes would be read as the next client's response. Peeking the socket before
//! each reuse is one `recv` syscall per proxied request. Instead, a connection going idle
//! gets a readiness poll (io_uring: one `PollAdd`, submitted with the worker's next batch
//! of operations); the pool looks at it at checkout and on its sweep, and cancelling it
//! at checkout is one more queued entry, submitted with the request's write. Nothing
//! enters the kernel on its own for either.
//!
//! The epoll driver keeps readiness from its last edge, which may be stale (a response
//! read to its end without meeting `EAGAIN` leaves the socket marked readable), so a
//! watch that fired is always confirmed with a peek: on epoll that is the old cost, on
//! io_uring it only happens for connections that really did see a close or data.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use monoio::net::TcpStream;

use super::io::peer_closed_or_dirty;

type Readable = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// An idle connection's socket with its readiness poll.
pub struct WatchedStream {
    /// Shared with the armed watch; the only owner again once the watch is dropped.
    stream: Rc<TcpStream>,
    watch: Watch,
}

enum Watch {
    Armed(Readable),
    /// The poll completed: a close, data, or (epoll) stale readiness. A completed
    /// future must not be polled again.
    Fired,
}

impl WatchedStream {
    /// Arms the watch on a connection going idle.
    pub fn arm(stream: TcpStream) -> Self {
        let mut watched = WatchedStream {
            stream: Rc::new(stream),
            watch: Watch::Fired,
        };
        watched.rearm();
        watched
    }

    fn rearm(&mut self) {
        let held = self.stream.clone();
        // `relaxed`: no `poll` syscall on the epoll driver (a fired watch is confirmed
        // by `quiet` anyway).
        let mut watch: Readable = Box::pin(async move { held.readable(true).await });
        // The first poll submits the operation. Nobody is woken when it fires: the pool
        // looks at it when it needs to know.
        self.watch = match poll_once(&mut watch) {
            Poll::Pending => Watch::Armed(watch),
            Poll::Ready(_) => Watch::Fired,
        };
    }

    /// Whether the connection is still quiet: its peer neither closed it nor sent
    /// anything. No syscall while the watch has not fired.
    pub fn quiet(&mut self) -> bool {
        if let Watch::Armed(watch) = &mut self.watch {
            if poll_once(watch).is_pending() {
                return true;
            }
            self.watch = Watch::Fired;
        }
        !peer_closed_or_dirty(&self.stream)
    }

    /// For a connection staying in the pool: arms the watch again if it fired on stale
    /// readiness (`quiet` said quiet after all).
    pub fn keep_watching(&mut self) {
        if matches!(self.watch, Watch::Fired) {
            self.rearm();
        }
    }

    /// The socket back for a request, its watch cancelled (`None` if the watch somehow
    /// still holds it; the connection is then not reused).
    pub fn into_stream(mut self) -> Option<TcpStream> {
        self.watch = Watch::Fired;
        Rc::try_unwrap(self.stream).ok()
    }
}

fn poll_once(watch: &mut Readable) -> Poll<io::Result<()>> {
    watch.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}
