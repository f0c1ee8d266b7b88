//! loom models of the io_uring backend's cross-thread state, running the production types:
//! the loop's inbox and eventfd wake-up (`RingShared`, `RingWaker`), and the hand-back of
//! provided buffers against a loop that parks receives for want of one (`Slab`). The ring
//! itself is the kernel's and single-threaded (one submitter per loop), so it is not modelled;
//! the eventfd is real (a syscall per model iteration).
#![cfg(posa_loom)]

use posa::proactor::{Key, RingShared, RingWaker, Slab, eventfd};
use posa::sync::{Arc, thread};

fn shared() -> Arc<RingShared> {
    Arc::new(RingShared::new(eventfd().expect("eventfd")))
}

/// A wake racing the loop's turn: either the turn takes the key, or the eventfd was signalled
/// (the loop's eventfd read completes and the next turn takes it). Never neither.
#[test]
fn a_wake_racing_the_loops_turn_is_never_lost() {
    loom::model(|| {
        let ring = shared();
        // The loop was woken (its eventfd read completed) and is about to take its inbox: the
        // flag is still up from that wake-up.
        let earlier = RingWaker::new(Arc::clone(&ring), Key::Conn(1));
        earlier.wake();
        assert!(ring.take_signal());
        let waker = RingWaker::new(Arc::clone(&ring), Key::Conn(7));
        let t = {
            let w = waker.clone();
            thread::spawn(move || w.wake())
        };
        let first = ring.take();
        assert!(first.keys.contains(&Key::Conn(1)));
        let seen = first.keys.contains(&Key::Conn(7));
        if seen {
            waker.taken();
        }
        t.join().unwrap();
        if !seen {
            assert!(
                ring.take_signal(),
                "the key waits, but the loop was not woken"
            );
            assert_eq!(ring.take().keys, vec![Key::Conn(7)]);
        }
    });
}

/// Two threads wake the same key: it is queued once until the loop takes it, and a wake after
/// the loop took it (and lowered its flag) queues it again.
#[test]
fn wakes_of_one_key_coalesce_until_the_loop_takes_it() {
    loom::model(|| {
        let ring = shared();
        let waker = RingWaker::new(Arc::clone(&ring), Key::Timers);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let w = waker.clone();
                thread::spawn(move || w.wake())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ring.take().keys, vec![Key::Timers], "queued once");
        waker.taken();
        waker.wake();
        assert_eq!(
            ring.take().keys,
            vec![Key::Timers],
            "queued again after it was taken"
        );
    });
}

/// A buffer given back while the loop parks a receive for want of one: the loop's second look
/// finds it, or the returner was told to wake the loop. Never neither (a parked receive would
/// then wait for ever).
#[test]
fn a_returned_buffer_never_strands_a_starving_loop() {
    loom::model(|| {
        let slab = Arc::new(Slab::new(2, 8).expect("slab"));
        let returner = {
            let slab = Arc::clone(&slab);
            thread::spawn(move || slab.give_back(1))
        };
        let found = slab.starve();
        let must_wake = returner.join().unwrap();
        assert!(
            found.contains(&1) || must_wake,
            "the buffer came back unseen and no one woke the loop"
        );
        if !found.contains(&1) {
            assert_eq!(slab.take_returned(), vec![1]);
        }
        slab.unstarve();
    });
}
