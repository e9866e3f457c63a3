//! A one-shot, single-thread broadcast: the worker fires it once (drain) and every task
//! waiting on it wakes. Waiters deregister when dropped, so a long-lived worker does not
//! accumulate stale wakers from connections that came and went.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        self.free.borrow_mut().clear();
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            slot: None,
        }
    }
}

pub struct Wait<'a> {
    signal: &'a LocalSignal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = self.signal;
        if signal.fired.get() {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut waiters = signal.waiters.borrow_mut();
        match self.slot {
            Some(i) => waiters[i] = Some(cx.waker().clone()),
            None => {
                let i = match signal.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if !self.signal.fired.get() {
                if let Some(w) = self.signal.waiters.borrow_mut().get_mut(i) {
                    *w = None;
                }
                self.signal.free.borrow_mut().push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_fire_wakes() {
        let s = LocalSignal::default();
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut w = Box::pin(s.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(s.waiters.borrow().len(), 1);
        let mut w = Box::pin(s.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        s.fire();
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert!(s.is_fired());
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }
}
