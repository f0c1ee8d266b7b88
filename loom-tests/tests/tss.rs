//! loom models of `posa::tss`: per-thread values and aggregation racing with updates.
#![cfg(posa_loom)]

use posa::sync::atomic::{AtomicUsize, Ordering};
use posa::sync::{Arc, thread};
use posa::tss::{Counter, ThreadSpecific};

#[test]
fn counter_sum_vs_updates_is_monotone_and_exact_after_join() {
    loom::model(|| {
        let c = Arc::new(Counter::new());
        let c2 = Arc::clone(&c);
        let writer = thread::spawn(move || {
            c2.incr();
            c2.incr();
        });
        c.incr();
        let s1 = c.sum();
        let s2 = c.sum();
        assert!(s1 <= s2 && s2 <= 3, "sums {s1} then {s2}");
        assert!(s1 >= 1, "own increment must be visible to own sum");
        writer.join().unwrap();
        assert_eq!(c.sum(), 3);
    });
}

#[test]
fn each_thread_gets_its_own_slot_and_fold_sees_all() {
    loom::model(|| {
        let tss = Arc::new(ThreadSpecific::<AtomicUsize>::new());
        let t2 = Arc::clone(&tss);
        let other = thread::spawn(move || {
            assert!(t2.get().is_none());
            t2.get_or(|| AtomicUsize::new(10));
            t2.get().unwrap().fetch_add(1, Ordering::Relaxed);
        });
        tss.get_or(|| AtomicUsize::new(1));
        let partial = tss.fold(0, |a, v| a + v.load(Ordering::Relaxed));
        assert!([1, 11, 12].contains(&partial), "partial fold {partial}");
        other.join().unwrap();
        assert_eq!(tss.get().unwrap().load(Ordering::Relaxed), 1);
        assert_eq!(tss.fold(0, |a, v| a + v.load(Ordering::Relaxed)), 12);
    });
}
