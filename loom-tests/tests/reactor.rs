//! loom models of the reactor's cross-thread state (`posa::reactor::Mailbox`): posted jobs,
//! coalesced wake-ups and the shutdown phase, against a fake demultiplexer (mio cannot run under
//! loom). A lost wake-up shows up as a deadlock of the loop thread.
#![cfg(posa_loom)]

use std::io;

use posa::Refused;
use posa::reactor::{Mailbox, Notify, Phase};
use posa::sync::{Arc, Condvar, Mutex, thread};

/// Stands in for `mio::Poll` + `mio::Waker`: `wait` blocks until `notify` was called.
#[derive(Default)]
struct FakeDemux {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl FakeDemux {
    fn wait(&self) {
        let mut woken = self.woken.lock();
        while !*woken {
            self.cv.wait(&mut woken);
        }
        *woken = false;
    }
}

struct Waker(Arc<FakeDemux>);

impl Notify for Waker {
    fn notify(&self) -> io::Result<()> {
        *self.0.woken.lock() = true;
        self.0.cv.notify_one();
        Ok(())
    }
}

fn mailbox(capacity: usize) -> (Arc<Mailbox<u32, Waker>>, Arc<FakeDemux>) {
    let demux = Arc::new(FakeDemux::default());
    (
        Arc::new(Mailbox::new(capacity, Waker(Arc::clone(&demux)))),
        demux,
    )
}

#[test]
fn posts_from_another_thread_always_wake_the_loop() {
    loom::model(|| {
        let (mb, demux) = mailbox(4);
        let producer = {
            let mb = Arc::clone(&mb);
            thread::spawn(move || {
                mb.post(1).unwrap();
                mb.post(2).unwrap();
            })
        };
        // The loop: block only when the last batch left nothing behind.
        let mut got = Vec::new();
        let mut more = false;
        while got.len() < 2 {
            if !more {
                demux.wait();
            }
            more = mb.take_batch(1, &mut got);
        }
        assert_eq!(got, vec![1, 2]);
        producer.join().unwrap();
    });
}

#[test]
fn two_posters_and_the_loop_lose_nothing() {
    loom::model(|| {
        let (mb, demux) = mailbox(4);
        let posters: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let mb = Arc::clone(&mb);
                thread::spawn(move || mb.post(v).unwrap())
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            demux.wait();
            mb.take_batch(8, &mut got);
        }
        got.sort_unstable();
        assert_eq!(got, vec![10, 20]);
        for p in posters {
            p.join().unwrap();
        }
    });
}

#[test]
fn shutdown_vs_post_each_job_is_run_returned_or_reported() {
    loom::model(|| {
        let (mb, demux) = mailbox(4);
        let poster = {
            let mb = Arc::clone(&mb);
            thread::spawn(move || match mb.post(7) {
                Ok(()) => None,
                Err(Refused::Closed(job)) => Some(job),
                Err(other) => unreachable!("capacity 4: {other:?}"),
            })
        };
        let stopper = {
            let mb = Arc::clone(&mb);
            thread::spawn(move || assert!(mb.begin_shutdown()))
        };
        // The loop: run what arrived, and once draining, stop and count what is left.
        let mut ran = Vec::new();
        loop {
            demux.wait();
            mb.take_batch(8, &mut ran);
            if mb.phase() == Phase::Draining {
                break;
            }
        }
        let dropped = mb.stop();
        let returned = poster.join().unwrap();
        stopper.join().unwrap();
        let accounted = ran.len() + dropped.len() + usize::from(returned.is_some());
        assert_eq!(
            accounted, 1,
            "ran {ran:?}, dropped {dropped:?}, returned {returned:?}"
        );
        assert!(matches!(mb.post(8), Err(Refused::Closed(8))));
    });
}

#[test]
fn full_mailbox_hands_the_job_back() {
    loom::model(|| {
        let (mb, _demux) = mailbox(1);
        let other = {
            let mb = Arc::clone(&mb);
            thread::spawn(move || mb.post(1))
        };
        let mine = mb.post(2);
        let theirs = other.join().unwrap();
        // exactly one fits; the other comes back as Full with its job
        match (mine, theirs) {
            (Ok(()), Err(Refused::Full(1))) | (Err(Refused::Full(2)), Ok(())) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(mb.len(), 1);
    });
}

#[test]
fn flagged_posts_coalesce_and_never_strand_a_wake_up() {
    use posa::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    // A `HandlerWaker`'s path: a worker stores a reply, then posts under the waker's flag; the
    // loop lowers the flag before it looks at the replies. The loop must see the last reply,
    // and the flag must keep the mailbox to one queued wake-up at a time.
    loom::model(|| {
        let (mb, demux) = mailbox(1);
        let flag = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (mb, flag, reply) = (Arc::clone(&mb), Arc::clone(&flag), Arc::clone(&reply));
            thread::spawn(move || {
                for v in [1, 2] {
                    reply.store(v, SeqCst);
                    mb.post_flagged(&flag, 0).unwrap();
                }
            })
        };
        let mut seen = 0;
        let mut jobs = Vec::new();
        let mut dispatches = 0;
        while seen != 2 {
            if jobs.is_empty() {
                demux.wait();
            }
            mb.take_batch(8, &mut jobs);
            assert!(jobs.len() <= 1, "the flag admits one queued wake-up");
            for _ in jobs.drain(..) {
                flag.store(false, SeqCst);
                seen = reply.load(SeqCst);
                dispatches += 1;
            }
        }
        assert!(dispatches <= 2);
        worker.join().unwrap();
    });
}
