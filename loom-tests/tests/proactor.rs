//! loom models of the proactor's cross-thread state (`posa::proactor::OpQueue`): operations
//! initiated on one thread while the loop takes them or the connection closes, an operation's
//! cancellation racing its completion, and completions dispatched to a pool.
#![cfg(posa_loom)]

use posa::Refused;
use posa::act::{self, Outcome};
use posa::pool::{Shutdown, ThreadPool};
use posa::proactor::CompleteOn;
use posa::proactor::OpQueue;
use posa::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use posa::sync::{Arc, thread};

/// Stands in for a `HandlerWaker`: counts wake-ups.
#[derive(Clone, Default)]
struct Waker(Arc<AtomicUsize>);

impl Waker {
    fn wakes(&self) -> usize {
        self.0.load(SeqCst)
    }
}

#[test]
fn an_operation_is_taken_handed_back_or_refused_exactly_once() {
    loom::model(|| {
        let q = Arc::new(OpQueue::<u32, Waker>::new(8, 2));
        let waker = Waker::default();
        let initiator = {
            let q = Arc::clone(&q);
            thread::spawn(move || match q.submit(7, 0) {
                Ok(w) => {
                    if let Some(w) = w {
                        w.0.fetch_add(1, SeqCst);
                    }
                    "queued"
                }
                Err(Refused::Closed(7)) => "refused",
                Err(other) => panic!("unexpected {other:?}"),
            })
        };
        let closer = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.close().0)
        };
        let mut taken = std::collections::VecDeque::new();
        q.take(&waker, &mut taken);
        let handed_back = closer.join().unwrap();
        let fate = initiator.join().unwrap();
        let seen = taken.len() + handed_back.len();
        match fate {
            "queued" => assert_eq!(seen, 1, "a queued op is taken or handed back, once"),
            _ => assert_eq!(seen, 0),
        }
    });
}

/// A graceful close (`seal`) racing a submit: the operation is refused, or it stays for the
/// loop, which takes it on its look after the seal (a write accepted before the close still
/// goes out). Never lost, never taken after the loop saw the queue closed and looked again.
#[test]
fn a_sealed_queue_keeps_what_was_accepted_for_the_loop() {
    loom::model(|| {
        let q = Arc::new(OpQueue::<u32, Waker>::new(8, 2));
        let waker = Waker::default();
        let mut taken = std::collections::VecDeque::new();
        assert!(q.take(&waker, &mut taken), "open: the loop attaches");
        let initiator = {
            let q = Arc::clone(&q);
            thread::spawn(move || match q.submit(7, 1) {
                Ok(w) => {
                    if let Some(w) = w {
                        w.0.fetch_add(1, SeqCst);
                    }
                    true
                }
                Err(Refused::Closed(7)) => false,
                Err(other) => panic!("unexpected {other:?}"),
            })
        };
        let sealer = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.seal().is_some())
        };
        assert!(sealer.join().unwrap(), "the seal finds the loop's waker");
        let accepted = initiator.join().unwrap();
        // The loop's look after the seal's wake-up: closed, and whatever was accepted.
        assert!(!q.take(&waker, &mut taken), "sealed");
        assert_eq!(
            taken.len(),
            usize::from(accepted),
            "accepted once, taken once"
        );
        assert!(
            matches!(q.submit(8, 0), Err(Refused::Closed(8))),
            "refused after the seal"
        );
    });
}

#[test]
fn an_operation_submitted_before_the_loop_attached_is_not_missed() {
    loom::model(|| {
        let q = Arc::new(OpQueue::<u32, Waker>::new(8, 2));
        let waker = Waker::default();
        let initiator = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                if let Some(w) = q.submit(1, 0).unwrap() {
                    w.0.fetch_add(1, SeqCst);
                }
            })
        };
        // The loop's first look (which attaches the waker), then a second look only if woken.
        let mut taken = std::collections::VecDeque::new();
        q.take(&waker, &mut taken);
        initiator.join().unwrap();
        if taken.is_empty() {
            assert_eq!(
                waker.wakes(),
                1,
                "missed by the first look, so it must have woken us"
            );
            q.take(&waker, &mut taken);
        }
        assert_eq!(taken.len(), 1);
    });
}

#[test]
fn cancellation_racing_completion_answers_once() {
    loom::model(|| {
        // The loop completes the op while the initiator cancels it; the cancel hook (which wakes
        // the loop) fires at most once, and the token sees exactly one outcome.
        let (c, token) = act::pair_with_residue::<usize, (), Vec<u8>>();
        let waker = Waker::default();
        let w = waker.clone();
        c.on_cancel(move || {
            w.0.fetch_add(1, SeqCst);
        });
        let canceller = token.canceller();
        let cancel = thread::spawn(move || canceller.cancel());
        let completed = if c.is_cancelled() {
            c.cancel(vec![1, 2]);
            false
        } else {
            c.complete(Ok(5));
            true
        };
        cancel.join().unwrap();
        match token.wait() {
            Outcome::Completed(Ok(5)) | Outcome::CancelledAfterEffect(Ok(5)) => assert!(completed),
            Outcome::Cancelled(buf) => {
                assert!(!completed);
                assert_eq!(buf, vec![1, 2], "the buffer comes back");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(waker.wakes() <= 1);
    });
}

#[test]
fn a_completion_handed_to_a_pool_is_delivered_even_as_the_pool_stops_now() {
    loom::model(|| {
        let pool = Arc::new(
            ThreadPool::builder()
                .threads(1)
                .timing(false)
                .build()
                .unwrap(),
        );
        let dispatch = CompleteOn::Pool(Arc::clone(&pool));
        let (c, token) = act::pair::<u8, ()>();
        let stopper = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || pool.close(Shutdown::Now))
        };
        // Run by a worker, refused (pool closed) and run here, or cancelled by the stopper and
        // run as it is dropped: delivered exactly once in every interleaving.
        dispatch.run(move || c.complete(Ok(9)));
        stopper.join().unwrap();
        assert_eq!(token.wait(), Outcome::Completed(Ok(9)));
    });
}
