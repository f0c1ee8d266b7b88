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
