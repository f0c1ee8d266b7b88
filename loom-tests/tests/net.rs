//! loom models of `posa::net`'s shared state: the connection limit every acceptor and reactor
//! of a server shares.
#![cfg(posa_loom)]

use posa::net::ConnLimit;
use posa::sync::thread;

#[test]
fn racing_acquires_never_exceed_the_limit() {
    loom::model(|| {
        let limit = ConnLimit::new(1);
        let l2 = limit.clone();
        // the thread hands its guard back, so both guards are alive at the same time
        let other = thread::spawn(move || l2.try_acquire());
        let mine = limit.try_acquire();
        let theirs = other.join().unwrap();
        assert_eq!(
            usize::from(mine.is_some()) + usize::from(theirs.is_some()),
            1
        );
        assert_eq!(limit.open(), 1);
        drop((mine, theirs));
        assert_eq!(limit.open(), 0, "dropping the guard frees the place");
    });
}

#[test]
fn release_vs_acquire_frees_the_place() {
    loom::model(|| {
        let limit = ConnLimit::new(1);
        let held = limit.try_acquire().unwrap();
        let releaser = thread::spawn(move || drop(held));
        let got = limit.try_acquire();
        releaser.join().unwrap();
        if got.is_none() {
            // it raced ahead of the release; now the place must be free
            assert!(limit.try_acquire().is_some());
        }
    });
}
