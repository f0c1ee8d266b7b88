//! loom models of the interceptors with shared state: the token bucket and the circuit
//! breaker under concurrent dispatches.
#![cfg(posa_loom)]

use std::sync::Arc as StdArc;
use std::time::Duration;

use posa::clock::ManualClock;
use posa::intercept::{BreakerState, CircuitBreaker, RateLimit};
use posa::intercept::{Dispatch, Ended, Interceptor, Point};
use posa::sync::{Arc, thread};

#[test]
fn a_token_bucket_never_hands_out_more_than_its_burst() {
    loom::model(|| {
        let clock = StdArc::new(ManualClock::new());
        let limit = Arc::new(RateLimit::global(0.0, 2).clock(clock));
        let other = {
            let limit = Arc::clone(&limit);
            thread::spawn(move || {
                usize::from(limit.try_acquire(None)) + usize::from(limit.try_acquire(None))
            })
        };
        let mine = usize::from(limit.try_acquire(None)) + usize::from(limit.try_acquire(None));
        assert_eq!(
            mine + other.join().unwrap(),
            2,
            "exactly the burst, no refill"
        );
    });
}

#[test]
fn a_half_open_breaker_lets_exactly_one_probe_through() {
    use posa::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    loom::model(|| {
        let clock = StdArc::new(ManualClock::new());
        let breaker = Arc::new(
            CircuitBreaker::new(1, 1.0, Duration::from_secs(1))
                .min_samples(1)
                .clock(clock.clone()),
        );
        let d = Dispatch::new(Point::Connect, 0);
        breaker.before(&d).unwrap();
        breaker.after(&d, Ended::Error, Duration::ZERO); // opens
        clock.advance(Duration::from_secs(1)); // cool-down over: half-open
        // Probes in flight at once: a dispatch counts itself between `before` and `after`.
        let probing = Arc::new(AtomicUsize::new(0));
        let try_probe = |breaker: &CircuitBreaker, probing: &AtomicUsize, id: u64| {
            let d = Dispatch::new(Point::Connect, id);
            if breaker.before(&d).is_err() {
                return false;
            }
            assert_eq!(
                probing.fetch_add(1, SeqCst),
                0,
                "two dispatches let through at once"
            );
            probing.fetch_sub(1, SeqCst);
            breaker.after(&d, Ended::Ok, Duration::ZERO);
            true
        };
        let other = {
            let (breaker, probing) = (Arc::clone(&breaker), Arc::clone(&probing));
            thread::spawn(move || try_probe(&breaker, &probing, 1))
        };
        let mine = try_probe(&breaker, &probing, 2);
        let theirs = other.join().unwrap();
        assert!(mine || theirs, "a probe went through");
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "the good probe closed it"
        );
    });
}

/// A bulkhead of 1 with three racing dispatches: never two inside at once, at least one
/// admitted, and every slot given back (a check-then-add split would let two in).
#[test]
fn a_bulkhead_never_admits_more_than_its_max() {
    use posa::intercept::Bulkhead;
    use posa::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    loom::model(|| {
        let bulkhead = Arc::new(Bulkhead::new(1));
        let inside = Arc::new(AtomicUsize::new(0));
        let attempt = |b: &Bulkhead, inside: &AtomicUsize, id: u64| -> bool {
            let d = Dispatch::new(Point::PoolSubmit, id);
            if b.before(&d).is_err() {
                return false;
            }
            assert_eq!(inside.fetch_add(1, SeqCst), 0, "two admitted at once");
            inside.fetch_sub(1, SeqCst);
            b.after(&d, Ended::Ok, Duration::ZERO);
            true
        };
        let others: Vec<_> = (1..3)
            .map(|id| {
                let (b, inside) = (Arc::clone(&bulkhead), Arc::clone(&inside));
                thread::spawn(move || attempt(&b, &inside, id))
            })
            .collect();
        let mut admitted = usize::from(attempt(&bulkhead, &inside, 0));
        for o in others {
            admitted += usize::from(o.join().unwrap());
        }
        assert!(admitted >= 1, "someone gets in");
        assert_eq!(bulkhead.in_flight(), 0, "every slot given back");
        assert!(
            attempt(&bulkhead, &inside, 9),
            "a free bulkhead admits again"
        );
    });
}

/// A per-peer rate limit with a burst of 1: two racing acquires for one peer get exactly one
/// token; another peer's bucket is its own.
#[test]
fn a_per_peer_limit_gives_each_peer_its_own_burst() {
    use std::net::{IpAddr, Ipv4Addr};
    loom::model(|| {
        let clock = StdArc::new(ManualClock::new());
        let limit = Arc::new(RateLimit::per_peer(0.0, 1).clock(clock));
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let other = {
            let limit = Arc::clone(&limit);
            thread::spawn(move || usize::from(limit.try_acquire(Some(a))))
        };
        let mine = usize::from(limit.try_acquire(Some(a)));
        assert_eq!(mine + other.join().unwrap(), 1, "one token for peer a");
        assert!(limit.try_acquire(Some(b)), "peer b has its own bucket");
        assert!(!limit.try_acquire(Some(b)), "and its own burst of 1");
    });
}
