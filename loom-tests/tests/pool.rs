//! loom models of `posa::pool`: a worker completing a token, submit racing shutdown, and
//! blocking submitters against a capacity-1 queue.
#![cfg(posa_loom)]

use posa::act::Outcome;
use posa::pool::{Shutdown, SubmitError, ThreadPool, WhenFull};
use posa::sync::{Arc, thread};

fn pool(capacity: usize) -> ThreadPool {
    ThreadPool::builder()
        .threads(1)
        .capacity(capacity)
        .when_full(WhenFull::Block)
        .build()
        .unwrap()
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
                Err(SubmitError::ShutDown(_)) => "refused",
                Err(SubmitError::Full(_)) => unreachable!("capacity 2"),
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
