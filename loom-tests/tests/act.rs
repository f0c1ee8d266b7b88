//! loom models of `posa::act`: every interleaving of a completer against its token.
#![cfg(posa_loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use posa::act::{self, Outcome, TokenSet};
use posa::sync::atomic::{AtomicUsize, Ordering};
use posa::sync::{Arc, thread};

#[test]
fn complete_vs_wait() {
    loom::model(|| {
        let (completer, token) = act::pair::<u32, ()>();
        let producer = thread::spawn(move || completer.complete(Ok(7)));
        assert_eq!(token.wait(), Outcome::Completed(Ok(7)));
        producer.join().unwrap();
    });
}

#[test]
fn producer_drop_vs_wait_is_abandoned_not_a_hang() {
    loom::model(|| {
        let (completer, token) = act::pair::<u32, ()>();
        let producer = thread::spawn(move || drop(completer));
        assert_eq!(token.wait(), Outcome::Abandoned);
        producer.join().unwrap();
    });
}

#[test]
fn cancel_vs_complete_states_one_typed_outcome_and_returns_residue() {
    loom::model(|| {
        let (completer, token) = act::pair_with_residue::<u32, (), Vec<u8>>();
        let hooks = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hooks);
        completer.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        let producer = thread::spawn(move || {
            if completer.is_cancelled() {
                completer.cancel(vec![9]);
            } else {
                completer.complete(Ok(1));
            }
        });
        token.cancel();
        let outcome = token.wait();
        producer.join().unwrap();
        let hooks = hooks.load(Ordering::SeqCst);
        assert!(hooks <= 1, "cancel hook ran {hooks} times");
        match outcome {
            Outcome::Completed(Ok(1)) => {}
            Outcome::CancelledAfterEffect(Ok(1)) => {}
            // The producer polled the flag; the hook may or may not have run first (the
            // request sets the flag before it takes the hook), but never twice.
            Outcome::Cancelled(residue) => assert_eq!(residue, vec![9], "the buffer comes back"),
            other => panic!("unexpected outcome {other:?}"),
        }
    });
}

#[test]
fn cancel_vs_hook_registration_runs_hook_exactly_once() {
    loom::model(|| {
        let (completer, token) = act::pair::<u32, ()>();
        let hooks = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hooks);
        let canceller = thread::spawn(move || {
            token.cancel();
            token
        });
        completer.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        let token = canceller.join().unwrap();
        assert_eq!(hooks.load(Ordering::SeqCst), 1);
        completer.cancel(());
        assert_eq!(token.wait(), Outcome::Cancelled(()));
    });
}

#[test]
fn callback_vs_complete_runs_exactly_once() {
    loom::model(|| {
        let (completer, token) = act::pair::<u32, ()>();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let producer = thread::spawn(move || completer.complete(Ok(3)));
        token.on_complete(move |outcome| {
            assert_eq!(outcome, Outcome::Completed(Ok(3)));
            c.fetch_add(1, Ordering::SeqCst);
        });
        producer.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn token_drop_vs_complete_requests_cancel_and_frees_everything() {
    loom::model(|| {
        let (completer, token) = act::pair::<u32, ()>();
        let producer = thread::spawn(move || {
            let saw_cancel = completer.is_cancelled();
            completer.complete(Ok(1));
            saw_cancel
        });
        drop(token);
        // Either order is fine; loom checks that no Arc leaks and nothing blocks.
        let _ = producer.join().unwrap();
    });
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn waker_replacement_vs_complete_wakes_the_latest_waker() {
    loom::model(|| {
        let (completer, mut token) = act::pair::<u32, ()>();
        let w1 = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let w2 = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker1 = Waker::from(std::sync::Arc::clone(&w1));
        let waker2 = Waker::from(std::sync::Arc::clone(&w2));
        let producer = thread::spawn(move || completer.complete(Ok(5)));
        let first = Pin::new(&mut token).poll(&mut Context::from_waker(&waker1));
        if first.is_ready() {
            assert_eq!(first, Poll::Ready(Outcome::Completed(Ok(5))));
            producer.join().unwrap();
            return;
        }
        let second = Pin::new(&mut token).poll(&mut Context::from_waker(&waker2));
        producer.join().unwrap();
        match second {
            Poll::Ready(outcome) => {
                assert_eq!(outcome, Outcome::Completed(Ok(5)));
                // completed between the polls: the then-current waker was the one woken
                assert_eq!(w2.0.load(Ordering::SeqCst), 0);
            }
            Poll::Pending => {
                assert_eq!(w1.0.load(Ordering::SeqCst), 0, "stale waker woken");
                assert_eq!(w2.0.load(Ordering::SeqCst), 1, "latest waker not woken");
                let third = Pin::new(&mut token).poll(&mut Context::from_waker(&waker2));
                assert_eq!(third, Poll::Ready(Outcome::Completed(Ok(5))));
            }
        }
    });
}

#[test]
fn wait_any_yields_each_completion_once() {
    loom::model(|| {
        let mut set = TokenSet::new();
        let (a, ta) = act::pair::<u32, ()>();
        let (b, tb) = act::pair::<u32, ()>();
        let ia = set.insert(ta);
        let ib = set.insert(tb);
        let pa = thread::spawn(move || a.complete(Ok(10)));
        let pb = thread::spawn(move || b.complete(Ok(20)));
        let mut seen: Vec<(usize, u32)> = set
            .by_ref()
            .map(|(id, o)| (id, o.into_result().unwrap()))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![(ia, 10), (ib, 20)]);
        assert!(set.is_empty());
        pa.join().unwrap();
        pb.join().unwrap();
    });
}

/// A token with a waiter and a callback: `map` completes a second token from the first's
/// callback while one thread waits on it and another cancels it. The waiter wakes exactly
/// once, with the mapped result (`Completed` or `CancelledAfterEffect`) or `Cancelled`; never
/// a hang, never `Abandoned`.
#[test]
fn a_mapped_token_waited_on_and_cancelled_answers_its_waiter_once() {
    loom::model(|| {
        let (c, t) = act::pair::<u32, ()>();
        let mapped = t.map(|v| v + 1);
        let canceller = mapped.canceller();
        let producer = thread::spawn(move || c.complete(Ok(1)));
        let cancel = thread::spawn(move || canceller.cancel());
        match mapped.wait() {
            Outcome::Completed(Ok(2)) | Outcome::CancelledAfterEffect(Ok(2)) => {}
            Outcome::Cancelled(()) => {}
            other => panic!("unexpected {other:?}"),
        }
        producer.join().unwrap();
        cancel.join().unwrap();
    });
}

/// Issue 16: a detaching token (pool jobs, active-object calls) dropped while its producer
/// finishes: the producer never sees a cancel request, in any interleaving, and nothing
/// leaks or blocks. The same race with `cancel_on_drop` asks for cancellation only if the
/// drop came first.
#[test]
fn detaching_token_drop_vs_complete_never_requests_cancel() {
    loom::model(|| {
        let (completer, token) = act::detaching_pair::<u32, ()>();
        let producer = thread::spawn(move || {
            let saw_cancel = completer.is_cancelled();
            completer.complete(Ok(1));
            saw_cancel
        });
        drop(token);
        assert!(
            !producer.join().unwrap(),
            "a dropped detaching token asked to cancel"
        );
    });
}
