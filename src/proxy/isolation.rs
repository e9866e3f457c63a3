//! Entering a route's isolation group before its request goes upstream: at once, after a
//! short wait in the group's queue, or not at all (`503 overloaded`).

use std::time::{Duration, Instant};

use crate::error::{ErrorKind, ProxyError};
use crate::resilience::bulkhead::{Bulkhead, Entry, Permit};

/// How often a queued request looks for a free permit: permits come back on any core,
/// and polling a shared counter every millisecond is cheaper than waking across cores.
const POLL: Duration = Duration::from_millis(1);

pub async fn enter(group: &Bulkhead) -> Result<Permit<'_>, ProxyError> {
    match group.try_enter() {
        Entry::Admitted(permit) => return Ok(permit),
        Entry::Queued(_place) => {
            let deadline = Instant::now() + group.config.queue_timeout;
            while Instant::now() < deadline {
                monoio::time::sleep(POLL).await;
                if let Some(permit) = group.try_take() {
                    return Ok(permit);
                }
            }
            group.refuse();
        }
        Entry::Refused => {}
    }
    Err(ProxyError::upstream(
        ErrorKind::Overloaded,
        format!(
            "isolation group {:?} has {} requests in flight, its limit",
            group.config.name, group.config.max_in_flight
        ),
    )
    .with_headers(b"retry-after: 1\r\n".to_vec()))
}
