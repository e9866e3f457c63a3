//! Deadlines of parked connections (see `conn::serve`): one list per worker, swept on the
//! worker's tick, instead of a timer per connection. A runtime timer is several hundred
//! bytes; a parked connection must cost little more than its socket, and its deadline
//! (`keepalive_timeout`, or `head_timeout` for a new connection) needs no finer
//! precision than the sweep's.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::Instant;

/// One parked connection's deadline, shared with the list.
#[derive(Default)]
pub struct Deadline {
    passed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Deadline {
    /// Whether the deadline passed; if not, the task is woken when it does.
    pub fn passed(&self, cx: &Context<'_>) -> bool {
        if self.passed.get() {
            return true;
        }
        self.waker.set(Some(cx.waker().clone()));
        false
    }
}

/// A worker's parked connections' deadlines.
#[derive(Default)]
pub struct ParkedDeadlines {
    entries: RefCell<Vec<(Instant, Rc<Deadline>)>>,
    /// Connections parked since `take_parked` last asked.
    parked: Cell<usize>,
}

impl ParkedDeadlines {
    pub fn add(&self, at: Instant) -> Rc<Deadline> {
        let deadline = Rc::new(Deadline::default());
        self.entries.borrow_mut().push((at, deadline.clone()));
        self.parked.set(self.parked.get() + 1);
        deadline
    }

    /// How many connections were parked since the last call.
    pub fn take_parked(&self) -> usize {
        self.parked.replace(0)
    }

    /// Wakes the connections whose deadline passed, and forgets those that are no
    /// longer parked (woken by their client, or closed).
    pub fn sweep(&self, now: Instant) {
        self.entries.borrow_mut().retain(|(at, deadline)| {
            if Rc::strong_count(deadline) == 1 {
                return false;
            }
            if *at > now {
                return true;
            }
            deadline.passed.set(true);
            if let Some(w) = deadline.waker.take() {
                w.wake();
            }
            false
        });
    }

    /// Connections parked right now (an upper bound until the next sweep).
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;
    use std::time::Duration;

    #[test]
    fn a_deadline_passes_at_the_first_sweep_after_it() {
        let list = ParkedDeadlines::default();
        let t0 = Instant::now();
        let soon = list.add(t0 + Duration::from_millis(100));
        let later = list.add(t0 + Duration::from_secs(60));
        let gone = list.add(t0);
        drop(gone);
        let waker = std::task::Waker::noop();
        let cx = Context::from_waker(waker);
        assert!(!soon.passed(&cx));
        list.sweep(t0 + Duration::from_millis(50));
        assert!(!soon.passed(&cx));
        assert_eq!(list.len(), 2, "the dropped one is forgotten");
        list.sweep(t0 + Duration::from_millis(150));
        assert!(soon.passed(&cx));
        assert!(!later.passed(&cx));
        assert_eq!(list.len(), 1);
        let _ = Poll::<()>::Pending;
    }
}
