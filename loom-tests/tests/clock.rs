//! loom models of `posa::clock`: CAS races must never duplicate or reorder stamps.
#![cfg(posa_loom)]

use std::time::Duration;

use posa::clock::{HlcTimestamp, HybridClock, LamportClock, LamportTime, ManualClock};
use posa::sync::{Arc, thread};

#[test]
fn lamport_tick_vs_receive_stamps_are_unique_and_increasing() {
    loom::model(|| {
        let c = Arc::new(LamportClock::new());
        let c2 = Arc::clone(&c);
        let other = thread::spawn(move || {
            let a = c2.receive(LamportTime(5)).unwrap();
            let b = c2.tick();
            assert!(a < b);
            vec![a, b]
        });
        let x = c.tick();
        let y = c.tick();
        assert!(x < y);
        let mut all = other.join().unwrap();
        all.extend([x, y]);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4, "duplicate Lamport stamps");
        assert!(c.current() >= LamportTime(7));
    });
}

#[test]
fn hlc_now_vs_receive_stamps_are_unique_and_increasing() {
    loom::model(|| {
        let wall = ManualClock::with_wall(Duration::from_millis(1_000));
        let hlc = Arc::new(HybridClock::with_clock(wall, Duration::from_secs(1)));
        let h2 = Arc::clone(&hlc);
        let other = thread::spawn(move || {
            let a = h2.receive(HlcTimestamp::new(1_500, 3)).unwrap();
            let b = h2.now();
            assert!(a < b);
            assert!(a > HlcTimestamp::new(1_500, 3));
            vec![a, b]
        });
        let x = hlc.now();
        hlc.clock().step_wall_back(Duration::from_millis(500));
        let y = hlc.now();
        assert!(x < y, "HLC went back with the wall clock");
        let mut all = other.join().unwrap();
        all.extend([x, y]);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4, "duplicate HLC stamps");
    });
}
