//! loom models of `posa::active`: a call racing shutdown, and guard re-checks that must wake
//! a guarded request once another call makes its guard hold.
#![cfg(posa_loom)]

use posa::Refused;
use posa::act::Outcome;
use posa::active::ActiveObject;
use posa::sync::thread;

#[test]
fn call_racing_shutdown_is_run_cancelled_or_refused() {
    loom::model(|| {
        let ao = ActiveObject::with_capacity(0u32, 2).unwrap();
        let proxy = ao.proxy();
        let caller = thread::spawn(move || match proxy.call(|n: &mut u32| *n + 1) {
            Ok(token) => match token.wait() {
                Outcome::Completed(Ok(1)) => "ran",
                Outcome::Cancelled(()) => "cancelled",
                other => panic!("unexpected {other:?}"),
            },
            Err(Refused::Closed(_)) => "refused",
            Err(other) => unreachable!("capacity 2, blocking call: {other:?}"),
        });
        assert_eq!(ao.shutdown(), 0);
        let fate = caller.join().unwrap();
        assert!(["ran", "cancelled", "refused"].contains(&fate));
    });
}

#[test]
fn guarded_request_runs_once_another_call_makes_its_guard_hold() {
    loom::model(|| {
        let ao = ActiveObject::with_capacity(Vec::<u8>::new(), 2).unwrap();
        let proxy = ao.proxy();
        let putter = {
            let proxy = ao.proxy();
            thread::spawn(move || proxy.call(|v: &mut Vec<u8>| v.push(9)).unwrap().wait())
        };
        let get = proxy
            .call_when(|v: &Vec<u8>| !v.is_empty(), |v: &mut Vec<u8>| v.remove(0))
            .unwrap();
        assert_eq!(get.wait(), Outcome::Completed(Ok(9)));
        assert_eq!(putter.join().unwrap(), Outcome::Completed(Ok(())));
        assert!(ao.shutdown().is_empty());
    });
}
