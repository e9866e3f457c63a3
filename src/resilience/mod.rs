//! Protecting upstreams: circuit breakers, adaptive throttling and retry budgets, each a
//! pure struct over lock-free counters shared by every worker (time comes in as an
//! argument, so unit tests drive it by hand).
//!
//! - `window`: the sliding window of counters they share.
//! - `breaker`: closed / open / half-open on consecutive failures or an error rate.
//! - `throttle`: the SRE adaptive throttle, the alternative breaker mode.
//! - `budget`: how many retries the requests allow; `local_budget`: the same, kept per
//!   worker, for routes without a `retries` section.
//! - `load_shed`: the gateway protecting itself: a worker whose event loop stays late
//!   refuses a share of new requests early (per worker, not shared).

pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod guard;
pub mod health;
pub mod load_shed;
pub mod local_budget;
pub mod throttle;
pub mod window;
