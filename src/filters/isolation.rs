//! Isolation groups (`[[isolation]]`, a route's `isolation = "name"`): a bulkhead caps the
//! requests a group of routes has in flight across all workers, so one slow backend
//! cannot take every connection. A request enters at once, after a short wait in the
//! group's queue, or not at all (`503 overloaded` with `Retry-After`); its place is held
//! until the request is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BuildCtx, Env, Filter, Flow, Phases, RequestCtx, RequestView};
use crate::config::ConfigError;
use crate::error::{ErrorKind, ProxyError};
use crate::resilience::bulkhead::{Bulkhead, Entry};

/// How often a queued request looks for a free place: places come back on any core,
/// and polling a shared counter every millisecond is cheaper than waking across cores.
const POLL: Duration = Duration::from_millis(1);

pub struct Isolation {
    group: Arc<Bulkhead>,
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    Ok(b.bulkhead.map(|group| {
        Filter::Isolation(Isolation {
            group: group.clone(),
        })
    }))
}

fn overloaded(group: &Bulkhead) -> Flow {
    Flow::Respond(
        ProxyError::upstream(
            ErrorKind::Overloaded,
            format!(
                "isolation group {:?} has {} requests in flight, its limit",
                group.config.name, group.config.max_in_flight
            ),
        )
        .with_headers(b"retry-after: 1\r\n".to_vec())
        .into(),
    )
}

impl Phases for Isolation {
    const EDITS_REQUEST_HEADERS: bool = false;
    const EDITS_RESPONSE_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        _req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        let group = &*self.group;
        match group.try_enter() {
            Entry::Admitted(permit) => {
                ctx.held.permit = Some(permit);
                Flow::Continue
            }
            Entry::Queued(place) => {
                ctx.held.queued = Some(place);
                Flow::Wait
            }
            Entry::Refused => overloaded(group),
        }
    }

    async fn wait<'g>(
        &'g self,
        _req: &RequestView<'_>,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        let group = &*self.group;
        let deadline = Instant::now() + group.config.queue_timeout;
        while Instant::now() < deadline {
            monoio::time::sleep(POLL).await;
            if let Some(permit) = group.try_take() {
                ctx.held.queued = None;
                ctx.held.permit = Some(permit);
                return Flow::Continue;
            }
        }
        ctx.held.queued = None;
        group.refuse();
        overloaded(group)
    }
}
