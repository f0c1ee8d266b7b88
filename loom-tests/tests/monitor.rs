//! loom models of `posa::monitor`: the bounded queue and condition waits, close included.
#![cfg(posa_loom)]

use posa::Refused;
use posa::monitor::{BoundedQueue, Condition, Monitor};
use posa::sync::{Arc, thread};

#[test]
fn queue_capacity_one_put_take_keeps_fifo() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1));
        let q2 = Arc::clone(&q);
        let producer = thread::spawn(move || {
            q2.put(1).unwrap();
            q2.put(2).unwrap();
        });
        assert_eq!(q.take(), Some(1));
        assert_eq!(q.take(), Some(2));
        producer.join().unwrap();
    });
}

#[test]
fn queue_two_producers_one_consumer_capacity_one() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1));
        let producers: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.put(v).unwrap())
            })
            .collect();
        let mut got = vec![q.take().unwrap(), q.take().unwrap()];
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![10, 20]);
    });
}

#[test]
fn queue_close_vs_put_and_take_loses_nothing() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1));
        let (qp, qc) = (Arc::clone(&q), Arc::clone(&q));
        let producer = thread::spawn(move || {
            let mut returned = Vec::new();
            for v in [1, 2] {
                if let Err(Refused::Closed(v)) = qp.put(v) {
                    returned.push(v);
                }
            }
            returned
        });
        let consumer = thread::spawn(move || {
            let mut taken = Vec::new();
            while let Some(v) = qc.take() {
                taken.push(v);
            }
            taken
        });
        q.close();
        let returned = producer.join().unwrap();
        let mut taken = consumer.join().unwrap();
        // After close the consumer drained the queue; what it did not take went back.
        taken.extend(std::iter::from_fn(|| q.take()));
        let mut all = [taken, returned].concat();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2], "every item is either taken or handed back");
    });
}

#[test]
fn condition_notify_outside_lock_is_never_lost() {
    loom::model(|| {
        let m = Arc::new(Monitor::new(false));
        let cond = Arc::new(Condition::new());
        let (m2, c2) = (Arc::clone(&m), Arc::clone(&cond));
        let waiter = thread::spawn(move || {
            let mut g = m2.lock();
            g.wait_on_while(&c2, |ready| !*ready);
        });
        m.with(|ready| *ready = true);
        cond.notify_one(); // after the lock is released
        waiter.join().unwrap();
    });
}

#[test]
fn notify_all_wakes_two_waiters() {
    loom::model(|| {
        let m = Arc::new(Monitor::new(0u8));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let m = Arc::clone(&m);
                thread::spawn(move || {
                    let mut g = m.lock();
                    g.wait_while(|n| *n == 0);
                    *g
                })
            })
            .collect();
        {
            let mut g = m.lock();
            *g = 1;
            g.notify_all();
        }
        for w in waiters {
            assert_eq!(w.join().unwrap(), 1);
        }
    });
}

/// Close wakes every blocked taker, not one: two takers wait on an empty queue; both return
/// `None` once it closes. (A `notify_one` where `notify_all` belongs leaves one asleep for
/// ever: loom reports the deadlock.)
#[test]
fn close_wakes_every_blocked_taker() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::<u32>::new(1));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.take())
            })
            .collect();
        q.close();
        for t in takers {
            assert_eq!(t.join().unwrap(), None, "a closed, empty queue yields None");
        }
    });
}

/// Close wakes every blocked putter: two putters wait on a full queue; each gets its item
/// back (or, had a slot opened, put it), and nothing is lost: the queue still yields what it
/// held, then `None`.
#[test]
fn close_wakes_every_blocked_putter_and_hands_items_back() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1));
        q.put(0).unwrap();
        let putters: Vec<_> = [1, 2]
            .into_iter()
            .map(|v| {
                let q = Arc::clone(&q);
                thread::spawn(move || match q.put(v) {
                    Ok(()) => None,
                    Err(Refused::Closed(v)) => Some(v),
                    Err(other) => panic!("unexpected {other:?}"),
                })
            })
            .collect();
        q.close();
        let mut handed_back: Vec<u32> = putters
            .into_iter()
            .filter_map(|p| p.join().unwrap())
            .collect();
        handed_back.sort_unstable();
        assert_eq!(
            handed_back,
            vec![1, 2],
            "both blocked putters get their item back"
        );
        assert_eq!(q.take(), Some(0), "what the queue held is still there");
        assert_eq!(q.take(), None);
    });
}
