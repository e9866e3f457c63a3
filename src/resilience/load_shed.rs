//! A worker's load shedding: when its event loop runs persistently late, the worker is
//! offered more than it can do, and every request it admits waits behind all the others.
//! It then refuses a share of new requests right after parsing their heads (503
//! `overloaded`, `retry-after: 1`), before any filter, signature or upstream exchange
//! runs: a refusal costs a fraction of a served request, so the work left fits the core
//! and the admitted requests keep a bounded latency.
//!
//! The signal is the loop's delay, measured by the worker's tick: a 10 ms sleep that
//! wakes late by however long the loop took to come back to it (every ready connection
//! had its turn first). It needs no per-request bookkeeping and sees every kind of work
//! (parsing, filters, TLS, upstream I/O), unlike a count of requests in flight, which
//! says nothing when the cost is in the gateway itself.
//!
//! The share is a feedback loop, adjusted at every tick. Late by `delay` over a limit
//! `max_loop_delay`, the worker admits `limit / delay` of what it admitted (at least
//! `STEP_UP` more is shed): a loop 400 ms late must cut its work at once, not over the
//! dozens of 400 ms rounds that a fixed step would take. Under half the limit, the share
//! comes down by `STEP_DOWN` a tick; in between it is held (the band keeps it from
//! swinging). Shedding starts only after the delay has stayed over the limit for `ONSET`
//! without a break: one late tick (the thread was descheduled, a burst arrived at once)
//! is not overload, and refusing on it would fail requests a healthy gateway serves.
//! Pure: time comes in as an argument.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long the delay must stay over the limit before shedding starts.
pub const ONSET: Duration = Duration::from_millis(200);
/// The least share added at a late tick while shedding (when the delay is barely over
/// the limit, the proportional cut alone would be tiny).
pub const STEP_UP: f64 = 0.05;
/// The most that is shed: some requests always get through. Where a refusal costs about
/// what serving does (a small proxied request is mostly the kernel's TCP work, which a
/// 503 pays too) shedding cannot bring the delay down, and without a cap the share
/// stayed at everything for as long as the load lasted, serving nothing.
pub const MAX_SHARE: f64 = 0.9;
/// Below this share a late tick must still wait out `ONSET`: one stall while a trace of
/// shedding remains is no more overload than one stall with none.
const SHEDDING: f64 = 0.1;
/// Share taken off at each tick under half the limit: slower than `STEP_UP`, so a worker
/// that just caught up does not at once admit everything again and fall behind.
pub const STEP_DOWN: f64 = 0.01;
/// How long the worst delay is remembered for the metrics.
const REPORT_WINDOW: Duration = Duration::from_secs(1);

/// One worker's shedding state. Not shared: each worker judges its own loop.
pub struct LoadShed {
    /// `None`: shedding is off (`max_loop_delay = "off"`).
    limit: Cell<Option<Duration>>,
    /// The share of new requests refused, in [0, 1].
    share: Cell<f64>,
    /// Since when every tick has been late (reset by a tick in time).
    late_since: Cell<Option<Instant>>,
    /// The worst delay in the current and the previous report window.
    worst: Cell<(Duration, Duration)>,
    window_start: Cell<Option<Instant>>,
}

impl LoadShed {
    pub fn new(limit: Option<Duration>) -> Self {
        LoadShed {
            limit: Cell::new(limit),
            share: Cell::new(0.0),
            late_since: Cell::new(None),
            worst: Cell::new((Duration::ZERO, Duration::ZERO)),
            window_start: Cell::new(None),
        }
    }

    /// Whether shedding is on at all (`max_loop_delay` is not `"off"`).
    pub fn is_on(&self) -> bool {
        self.limit.get().is_some()
    }

    /// A reload may change the limit; the state carries on.
    pub fn set_limit(&self, limit: Option<Duration>) {
        self.limit.set(limit);
        if limit.is_none() {
            self.share.set(0.0);
            self.late_since.set(None);
        }
    }

    /// Called at each tick with how late it woke (`delay`) at `now`.
    pub fn on_tick(&self, now: Instant, delay: Duration) {
        self.remember(now, delay);
        let Some(limit) = self.limit.get() else {
            return;
        };
        let share = self.share.get();
        if delay > limit {
            let since = self.late_since.get().unwrap_or(now);
            if share >= SHEDDING || now.duration_since(since) >= ONSET {
                let admitted = (1.0 - share) * (limit.as_secs_f64() / delay.as_secs_f64());
                self.share
                    .set((1.0 - admitted).max(share + STEP_UP).min(MAX_SHARE));
            }
            self.late_since.set(Some(since));
        } else {
            self.late_since.set(None);
            if delay < limit / 2 {
                self.share.set((share - STEP_DOWN).max(0.0));
            }
        }
    }

    /// Whether to serve a new request; `draw` is uniform in [0, 1), asked for only
    /// while shedding (the common case costs one load and a compare).
    pub fn admit(&self, draw: impl FnOnce() -> f64) -> bool {
        let share = self.share.get();
        share == 0.0 || draw() >= share
    }

    /// Whether to turn a new connection away, in the share shed: a new connection is
    /// where work starts, and on a TLS listener refusing it saves the handshake, the
    /// dearest step of all.
    pub fn refuse_connection(&self, draw: impl FnOnce() -> f64) -> bool {
        let share = self.share.get();
        share > 0.0 && draw() < share
    }

    /// The share of new requests refused now.
    pub fn share(&self) -> f64 {
        self.share.get()
    }

    /// The worst loop delay in the last one to two seconds.
    pub fn worst_delay(&self) -> Duration {
        let (current, previous) = self.worst.get();
        current.max(previous)
    }

    fn remember(&self, now: Instant, delay: Duration) {
        let (mut current, mut previous) = self.worst.get();
        let start = self.window_start.get().unwrap_or(now);
        self.window_start.set(Some(start));
        if now.duration_since(start) >= REPORT_WINDOW {
            // A window with no tick at all (the loop stalled through it) counts as
            // empty: this tick's delay covers it.
            previous = if now.duration_since(start) >= 2 * REPORT_WINDOW {
                Duration::ZERO
            } else {
                current
            };
            current = Duration::ZERO;
            self.window_start.set(Some(now));
        }
        current = current.max(delay);
        self.worst.set((current, previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Ticks every `every` with `delay`, `n` times, from `t`; returns the time after.
    fn ticks(
        shed: &LoadShed,
        mut t: Instant,
        n: usize,
        every: Duration,
        delay: Duration,
    ) -> Instant {
        for _ in 0..n {
            t += every;
            shed.on_tick(t, delay);
        }
        t
    }

    #[test]
    fn one_late_tick_sheds_nothing() {
        let shed = LoadShed::new(Some(LIMIT));
        let t = Instant::now();
        shed.on_tick(t, ms(400));
        assert_eq!(shed.share(), 0.0);
        let t = ticks(&shed, t, 5, ms(10), ms(1));
        shed.on_tick(t + ms(200), ms(190));
        assert_eq!(shed.share(), 0.0, "late ticks with one in time between");
        assert!(shed.admit(|| unreachable!("no draw while not shedding")));
    }

    #[test]
    fn persistent_delay_starts_shedding_and_catching_up_stops_it() {
        let shed = LoadShed::new(Some(LIMIT));
        let t0 = Instant::now();
        // Late by 60 ms at every tick: the first shed comes once ONSET has passed.
        let t = ticks(&shed, t0, 3, ms(70), ms(60));
        assert_eq!(shed.share(), 0.0, "{:?} is under the onset", ms(140));
        let t = ticks(&shed, t, 1, ms(70), ms(60));
        // 60 ms late for 50: admit 50/60 of everything.
        assert!((shed.share() - 1.0 / 6.0).abs() < 1e-9, "{}", shed.share());
        let t = ticks(&shed, t, 30, ms(70), ms(60));
        assert_eq!(shed.share(), MAX_SHARE, "capped: some always get through");
        assert!(!shed.admit(|| 0.89) && shed.admit(|| 0.91));
        // Between half the limit and the limit: held.
        let t = ticks(&shed, t, 10, ms(40), ms(30));
        assert_eq!(shed.share(), MAX_SHARE);
        // Under half: comes down step by step, to nothing.
        let t = ticks(&shed, t, 50, ms(10), ms(1));
        assert!((shed.share() - 0.4).abs() < 1e-9, "{}", shed.share());
        assert!(shed.admit(|| 0.41) && !shed.admit(|| 0.39));
        ticks(&shed, t, 60, ms(10), ms(1));
        assert_eq!(shed.share(), 0.0);
    }

    #[test]
    fn the_later_the_loop_the_larger_the_cut() {
        let shed = LoadShed::new(Some(LIMIT));
        let t = ticks(&shed, Instant::now(), 1, ms(410), ms(400));
        assert_eq!(
            shed.share(),
            0.0,
            "the first late tick starts the onset clock"
        );
        // 400 ms late for 50: an eighth of the work is admitted, in one step.
        let t = ticks(&shed, t, 1, ms(410), ms(400));
        assert!((shed.share() - 0.875).abs() < 1e-9, "{}", shed.share());
        // Still 100 ms late at that share: half of the admitted eighth would go too,
        // but no more than MAX_SHARE is ever shed.
        ticks(&shed, t, 1, ms(110), ms(100));
        assert_eq!(shed.share(), MAX_SHARE);
        // Barely late: the least step.
        let shed = LoadShed::new(Some(LIMIT));
        let t = ticks(&shed, Instant::now(), 4, ms(70), ms(60));
        let share = shed.share();
        ticks(&shed, t, 1, ms(61), ms(51));
        assert!((shed.share() - share - STEP_UP).abs() < 1e-9);
    }

    #[test]
    fn a_stall_while_a_trace_of_shedding_remains_waits_for_the_onset() {
        let shed = LoadShed::new(Some(LIMIT));
        let t = ticks(&shed, Instant::now(), 4, ms(70), ms(60));
        // Caught up: the share decays to a trace.
        let t = ticks(&shed, t, 10, ms(10), ms(1));
        let trace = shed.share();
        assert!(trace > 0.0 && trace < SHEDDING, "{trace}");
        // One 2 s stall: the onset clock starts, the share stays.
        let t = ticks(&shed, t, 1, ms(2010), ms(2000));
        assert_eq!(shed.share(), trace);
        // Still late 200 ms on: now it is overload.
        ticks(&shed, t, 1, ms(210), ms(200));
        assert!(shed.share() > 0.7, "{}", shed.share());
    }

    #[test]
    fn once_shedding_a_late_tick_raises_the_share_at_once() {
        let shed = LoadShed::new(Some(LIMIT));
        let t = ticks(&shed, Instant::now(), 5, ms(70), ms(60));
        let share = shed.share();
        assert!(share > 0.0);
        // In time (but not under half): held, and the onset clock resets...
        let t = ticks(&shed, t, 1, ms(40), ms(30));
        assert_eq!(shed.share(), share);
        // ...yet a shedding worker reacts to the next late tick without waiting.
        ticks(&shed, t, 1, ms(70), ms(60));
        assert!((shed.share() - (1.0 - (1.0 - share) * 50.0 / 60.0)).abs() < 1e-9);
    }

    #[test]
    fn connections_are_refused_in_the_share() {
        let shed = LoadShed::new(Some(LIMIT));
        assert!(!shed.refuse_connection(|| unreachable!("no draw while not shedding")));
        ticks(&shed, Instant::now(), 4, ms(70), ms(60));
        let share = shed.share();
        assert!(shed.refuse_connection(|| share - 0.01));
        assert!(!shed.refuse_connection(|| share + 0.01));
    }

    #[test]
    fn off_never_sheds_and_turning_off_clears_the_share() {
        let shed = LoadShed::new(None);
        ticks(&shed, Instant::now(), 20, ms(200), ms(190));
        assert_eq!(shed.share(), 0.0);
        let shed = LoadShed::new(Some(LIMIT));
        ticks(&shed, Instant::now(), 20, ms(70), ms(60));
        assert!(shed.share() > 0.0);
        shed.set_limit(None);
        assert_eq!(shed.share(), 0.0);
    }

    #[test]
    fn worst_delay_covers_the_last_second_or_two() {
        let shed = LoadShed::new(Some(LIMIT));
        let t = Instant::now();
        shed.on_tick(t, ms(30));
        let t = ticks(&shed, t, 50, ms(10), ms(2));
        assert_eq!(shed.worst_delay(), ms(30));
        let t = ticks(&shed, t, 100, ms(10), ms(2));
        assert_eq!(
            shed.worst_delay(),
            ms(30),
            "the previous window still counts"
        );
        let t = ticks(&shed, t, 100, ms(10), ms(2));
        assert_eq!(shed.worst_delay(), ms(2));
        shed.on_tick(t + ms(3000), ms(2990));
        assert_eq!(shed.worst_delay(), ms(2990));
    }
}
