//! loom models of `SerialCell`, the per-handler serializer Leader/Followers dispatches through:
//! a close request racing an upcall, and drain and readiness offered from two threads. The
//! pool's loop itself (hand-off, promotion, re-runs, drain, shutdown) runs under loom in
//! `leader_followers_loop.rs`, against a fake demultiplexer; the copy of that loop this file
//! used to carry is gone.
#![cfg(posa_loom)]

use posa::reactor::{Finish, Readiness, SerialCell, Work};
use posa::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use posa::sync::{Arc, thread};

struct Handler {
    inside: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

fn bits(w: Work) -> usize {
    match w {
        Work::Ready(r) => usize::from(r.readable) | usize::from(r.writable) << 1,
        Work::Timeout(_) => 4,
        Work::Drain => 8,
        Work::Force => 16,
    }
}

/// What a pool thread does with one piece of work after it promoted a follower.
fn dispatch(cell: &SerialCell<Handler>, work: Work) {
    let Some(mut h) = cell.offer(work) else {
        return; // queued for the thread running it (or closed)
    };
    let mut work = work;
    loop {
        assert!(
            !h.inside.swap(true, Ordering::SeqCst),
            "two threads inside one handler"
        );
        h.seen.fetch_or(bits(work), Ordering::SeqCst);
        h.inside.store(false, Ordering::SeqCst);
        match cell.finish(h) {
            Finish::Parked => return,
            Finish::Next(next, w) => {
                h = next;
                work = w;
            }
            Finish::Close(closing) => {
                closing.closes.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn parked_cell() -> (Arc<SerialCell<Handler>>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(SerialCell::new_busy());
    let h = Handler {
        inside: Arc::new(AtomicBool::new(false)),
        seen: Arc::clone(&seen),
        closes: Arc::clone(&closes),
    };
    assert!(matches!(cell.finish(h), Finish::Parked));
    (cell, seen, closes)
}

fn readable() -> Work {
    Work::Ready(Readiness {
        readable: true,
        ..Readiness::default()
    })
}

fn writable() -> Work {
    Work::Ready(Readiness {
        writable: true,
        ..Readiness::default()
    })
}

#[test]
fn close_request_racing_an_upcall_closes_exactly_once() {
    loom::model(|| {
        let (cell, seen, closes) = parked_cell();
        let runner = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || dispatch(&cell, readable()))
        };
        if let Some(h) = cell.request_close() {
            h.closes.fetch_add(1, Ordering::SeqCst); // it was idle: we close it
        }
        runner.join().unwrap();
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        let delivered = seen.load(Ordering::SeqCst);
        assert!(delivered == 0 || delivered == 1, "seen {delivered}");
        assert!(
            cell.offer(writable()).is_none(),
            "a closed cell takes no more work"
        );
    });
}

#[test]
fn drain_and_readiness_from_two_threads_both_arrive() {
    loom::model(|| {
        let (cell, seen, _) = parked_cell();
        let other = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || dispatch(&cell, Work::Drain))
        };
        dispatch(&cell, readable());
        other.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0b1001);
    });
}
