//! loom models of `posa::pool`: a worker completing a token, submit racing shutdown (stealing
//! and ordered queues), blocking submitters against a capacity-1 queue, a job queued on a busy
//! worker's own deque being stolen, a pool growing from zero workers, and a future woken while
//! it is being polled. (The work-stealing deques are a lock-based stand-in under loom; the
//! models cover the pool's protocol around them: `pending`, idle/wake, shutdown.)
#![cfg(posa_loom)]

use posa::Refused;
use posa::act::{self, Outcome};
use posa::pool::{Builder, Fifo, Shutdown, ThreadPool, WhenFull};
use posa::sync::{Arc, thread};

/// One worker over an ordered FIFO queue (the protocol under test does not depend on the
/// queue; the work-stealing stand-in's extra locks would multiply the interleavings).
fn pool(capacity: usize) -> ThreadPool {
    builder()
        .scheduler(Fifo::default())
        .threads(1)
        .capacity(capacity)
        .when_full(WhenFull::Block)
        .build()
        .unwrap()
}

/// Timing off: per-thread HDR histograms would only slow the models down.
fn builder() -> Builder {
    ThreadPool::builder().timing(false)
}

#[test]
fn worker_completes_the_token() {
    loom::model(|| {
        let p = pool(2);
        let t = p.submit(|| 5).unwrap();
        assert_eq!(t.wait(), Outcome::Completed(Ok(5)));
        drop(p); // joins the worker
    });
}

/// Issue 16: a job whose token is dropped at once still runs (the token detaches), whatever
/// the worker is doing when the drop lands; and an `execute`d job (no token) runs.
#[test]
fn a_job_whose_token_is_dropped_still_runs() {
    loom::model(|| {
        use posa::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let p = pool(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        drop(p.submit(move || r.fetch_add(1, SeqCst)).unwrap());
        let r = Arc::clone(&ran);
        p.execute(move || {
            r.fetch_add(1, SeqCst);
        })
        .unwrap();
        p.shutdown(Shutdown::Graceful); // runs what is queued, joins the worker
        assert_eq!(ran.load(SeqCst), 2);
    });
}

#[test]
fn submit_racing_shutdown_now_is_run_cancelled_or_refused() {
    loom::model(|| {
        let p = Arc::new(pool(2));
        let submitter = {
            let p = Arc::clone(&p);
            thread::spawn(move || match p.submit(|| 1) {
                Ok(token) => match token.wait() {
                    Outcome::Completed(Ok(1)) => "ran",
                    Outcome::Cancelled(()) => "cancelled",
                    other => panic!("unexpected {other:?}"),
                },
                Err(Refused::Closed(_)) => "refused",
                Err(other) => unreachable!("capacity 2, no interceptors: {other:?}"),
            })
        };
        p.close(Shutdown::Now);
        let fate = submitter.join().unwrap();
        assert!(["ran", "cancelled", "refused"].contains(&fate));
        drop(p); // the last Arc joins the worker
    });
}

#[test]
fn blocking_submitters_against_capacity_one_lose_nothing() {
    loom::model(|| {
        let p = Arc::new(pool(1));
        let other = {
            let p = Arc::clone(&p);
            thread::spawn(move || p.submit(|| 10).unwrap().wait())
        };
        let a = p.submit(|| 1).unwrap();
        let b = p.submit(|| 2).unwrap(); // may block until the worker takes one
        assert_eq!(a.wait(), Outcome::Completed(Ok(1)));
        assert_eq!(b.wait(), Outcome::Completed(Ok(2)));
        assert_eq!(other.join().unwrap(), Outcome::Completed(Ok(10)));
    });
}

#[test]
fn ordered_submit_racing_shutdown_now_is_run_cancelled_or_refused() {
    loom::model(|| {
        let p = Arc::new(
            builder()
                .threads(1)
                .scheduler(Fifo::default())
                .build()
                .unwrap(),
        );
        let submitter = {
            let p = Arc::clone(&p);
            thread::spawn(move || match p.submit(|| 1) {
                Ok(token) => !matches!(token.wait(), Outcome::Abandoned),
                Err(Refused::Closed(_)) => true,
                Err(_) => false,
            })
        };
        p.close(Shutdown::Now);
        assert!(submitter.join().unwrap(), "the job was lost");
    });
}

#[test]
fn a_job_queued_on_a_blocked_workers_deque_is_stolen() {
    loom::model(|| {
        let p = Arc::new(builder().threads(2).build().unwrap());
        let inner_pool = Arc::clone(&p);
        // A runs on one worker, queues B on that worker's own deque, then waits for B: only the
        // other worker stealing B can finish A.
        let a = p
            .submit(move || {
                let b = inner_pool.submit(|| 2).unwrap();
                b.wait()
            })
            .unwrap();
        assert_eq!(a.wait(), Outcome::Completed(Ok(Outcome::Completed(Ok(2)))));
        // The job held the pool's Arc; dropping the last one joins both workers.
    });
}

#[test]
fn a_pool_grows_from_zero_workers() {
    loom::model(|| {
        let p = builder().min_threads(0).max_threads(1).build().unwrap();
        assert_eq!(p.threads(), 0);
        let t = p.submit(|| 3).unwrap();
        assert_eq!(t.wait(), Outcome::Completed(Ok(3)));
        assert_eq!(p.shutdown(Shutdown::Graceful), 0);
    });
}

#[test]
fn a_future_woken_during_its_poll_is_polled_again() {
    loom::model(|| {
        let p = builder().threads(1).build().unwrap();
        let (completer, later) = act::pair::<u8, ()>();
        let fut = p
            .spawn_future(async move { later.await.into_result().unwrap() + 1 })
            .unwrap();
        // Completes (and wakes) from another thread: before, during or after the first poll.
        let waker = thread::spawn(move || completer.complete(Ok(1)));
        assert_eq!(fut.wait(), Outcome::Completed(Ok(2)));
        waker.join().unwrap();
    });
}

/// Blocking submitters at capacity while the pool closes: the worker is held by a job, the
/// queue (capacity 1) fills, two more submitters block; `close(Graceful)` must wake both. Each
/// submit is then refused with its job back, or accepted and then run or (when it raced the
/// close and the last worker had already gone: the pool's documented contract, `submit.rs`)
/// cancelled. None hangs, none is abandoned.
#[test]
fn blocked_submitters_wake_when_the_pool_closes() {
    loom::model(|| {
        let p = Arc::new(pool(1));
        let (gate, held) = act::pair::<(), ()>();
        let first = p
            .submit(move || {
                let _ = held.wait();
                0
            })
            .unwrap();
        let submitters: Vec<_> = [1, 2]
            .into_iter()
            .map(|v| {
                let p = Arc::clone(&p);
                thread::spawn(move || match p.submit(move || v) {
                    Ok(t) => Some(t.wait()),
                    Err(Refused::Closed(_)) => None,
                    Err(other) => panic!("unexpected {:?}", other.map(drop)),
                })
            })
            .collect();
        p.close(Shutdown::Graceful);
        gate.complete(Ok(()));
        assert_eq!(first.wait(), Outcome::Completed(Ok(0)));
        for (s, v) in submitters.into_iter().zip([1, 2]) {
            match s.join().unwrap() {
                None | Some(Outcome::Cancelled(())) => {}
                Some(outcome) => assert_eq!(outcome, Outcome::Completed(Ok(v)), "run as submitted"),
            }
        }
    });
}

/// Half-Sync/Half-Async's reorder buffer (`posa::half_sync::Replies`): two workers put the
/// replies to requests 0 and 1 in any order while the loop takes what has arrived; the loop
/// gets them in request order, never past a gap, none lost.
#[test]
fn half_sync_replies_come_back_in_request_order() {
    use posa::half_sync::Replies;
    loom::model(|| {
        let replies = Arc::new(Replies::new());
        let workers: Vec<_> = [1u64, 0]
            .into_iter()
            .map(|seq| {
                let replies = Arc::clone(&replies);
                thread::spawn(move || replies.put(seq, seq * 10))
            })
            .collect();
        let mut next = 0;
        let mut got = Vec::new();
        got.extend(std::iter::from_fn(|| replies.take_next(&mut next)));
        for w in workers {
            w.join().unwrap();
        }
        got.extend(std::iter::from_fn(|| replies.take_next(&mut next)));
        assert_eq!(got, vec![0, 10], "in request order, none lost");
        assert_eq!(next, 2);
    });
}
