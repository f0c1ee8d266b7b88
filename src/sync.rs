//! The one door to synchronization types.
//!
//! Every other module of posa takes its `Arc`, atomics, `Mutex`, `Condvar`, thread spawning and
//! `thread_local!` from here, never from `std`, `parking_lot` or `loom` directly. A normal build
//! maps them to the fast production types; a build with `RUSTFLAGS="--cfg posa_loom"` maps them to
//! [loom]'s model-checked types, so the code that ships is the code the models in `loom-tests/`
//! explore. (tokio's `src/loom/` is the model for this module.)
//!
//! | name | normal build | `cfg(posa_loom)` | why this one |
//! |---|---|---|---|
//! | [`Arc`] | `std::sync::Arc` | `loom::sync::Arc` | loom tracks leaks and drops |
//! | [`atomic`] | `std::sync::atomic` | `loom::sync::atomic` | loom explores every permitted ordering |
//! | [`RawMutex`] | `parking_lot::RawMutex` | `loom_impl::LoomRawMutex` | small, fair-enough, no poisoning, a [`lock_api`] raw lock so Strategized Locking ([`crate::monitor`]) can swap it |
//! | [`Mutex`], [`MutexGuard`] | `lock_api::Mutex<RawMutex, T>` | same, over the loom raw mutex | one lock API in both builds |
//! | [`Condvar`] | wraps `parking_lot::Condvar` | a condvar built from loom's | the same calls in both builds |
//! | [`thread`] | `std::thread` | `loom::thread` | loom schedules its own threads |
//! | [`thread_local!`](crate::sync::thread_local), `const_thread_local!` (crate-private) | `std::thread_local!` | `loom::thread_local!` | loom runs every model thread on one OS thread |
//! | [`spin_until`] | bounded spin then yield (crossbeam `Backoff`) | one check | loom explores the blocking path |
//!
//! Not shimmed, on purpose: `std::time` (loom has no time; timed waits are modelled by their
//! untimed paths and tested for timing in ordinary tests), and `crossbeam` data structures (they
//! are peers in the benchmarks, not building blocks of posa's shared state).
//!
//! [loom]: https://docs.rs/loom

use std::time::Instant;

#[cfg(not(posa_loom))]
pub use std::sync::Arc;
#[cfg(not(posa_loom))]
pub use std::thread;
#[cfg(not(posa_loom))]
pub use std::thread_local;

#[cfg(posa_loom)]
pub use loom::sync::Arc;
#[cfg(posa_loom)]
pub use loom::thread;
#[cfg(posa_loom)]
pub use loom::thread_local;

/// A `thread_local!` whose initializer is a constant: std's with a `const { .. }` initializer
/// (no lazy-init check on each access) in normal builds, loom's (which takes no `const`) under
/// `posa_loom`.
macro_rules! const_thread_local {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(posa_loom))]
        std::thread_local! { $(#[$attr])* $vis static $name: $t = const { $init }; }
        #[cfg(posa_loom)]
        loom::thread_local! { $(#[$attr])* $vis static $name: $t = $init; }
    };
}
pub(crate) use const_thread_local;

/// Atomic types and orderings (std in normal builds, loom's under `posa_loom`).
pub mod atomic {
    #[cfg(not(posa_loom))]
    pub use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};

    #[cfg(posa_loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};
}

/// The raw lock behind [`Mutex`]: `parking_lot::RawMutex` in normal builds.
#[cfg(not(posa_loom))]
pub type RawMutex = parking_lot::RawMutex;

/// The raw lock behind [`Mutex`]: a loom-modelled lock under `posa_loom`.
#[cfg(posa_loom)]
pub type RawMutex = loom_impl::LoomRawMutex;

/// A mutual-exclusion lock without poisoning: `lock()` returns the guard directly.
pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;

/// The RAII guard of a [`Mutex`]; the lock is released when it drops.
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// A condition variable paired with [`Mutex`], with the same calls in both builds.
///
/// Waits take the guard by `&mut` (parking_lot style). There are no spurious wake-ups in the
/// normal build, but callers must still re-check their predicate in a loop, as always.
#[derive(Debug, Default)]
pub struct Condvar {
    #[cfg(not(posa_loom))]
    inner: parking_lot::Condvar,
    #[cfg(posa_loom)]
    inner: loom_impl::LoomCondvar,
}

impl Condvar {
    /// A condition variable with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Atomically releases `guard`'s lock and blocks until notified, then re-acquires it.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.inner.wait(guard);
    }

    /// Like [`wait`](Self::wait), but gives up at `deadline`. Returns `true` if it timed out.
    ///
    /// Under `posa_loom` this never times out (loom has no time): models cover the untimed path.
    pub fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) -> bool {
        #[cfg(not(posa_loom))]
        {
            self.inner.wait_until(guard, deadline).timed_out()
        }
        #[cfg(posa_loom)]
        {
            let _ = deadline;
            self.inner.wait(guard);
            false
        }
    }

    /// Wakes one waiting thread, if there is one.
    pub fn notify_one(&self) {
        self.inner.notify_one();
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self) {
        self.inner.notify_all();
    }
}

/// Orders a `SeqCst` write before a later `SeqCst` load of *another* atomic in a Dekker-style
/// hand-off ("I set my flag, now I read yours"; the other side does the mirror image).
///
/// In Rust's (C++20's) memory model all `SeqCst` operations form one total order, which already
/// forbids both sides missing each other, so a normal build emits nothing here. loom models
/// `SeqCst` accesses as `AcqRel` (weaker) but `SeqCst` fences exactly, so under `posa_loom`
/// this is a `SeqCst` fence and the models check the same argument instead of reporting a
/// false alarm. Use it only between `SeqCst` accesses of plain atomics.
#[inline(always)]
pub fn dekker_fence() {
    #[cfg(posa_loom)]
    atomic::fence(atomic::Ordering::SeqCst);
}

/// Spins briefly, then yields a few times, until `done()` holds; returns whether it did.
///
/// This is posa's one spin-then-block policy (crossbeam's `Backoff`): a blocking hand-off that
/// completes within a few microseconds skips the sleep and the wake-up, a system call each,
/// which dominate a hand-off between threads. Callers block for real when this returns `false`.
/// Under `posa_loom` it checks once and loom explores the blocking path.
#[inline]
pub fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    #[cfg(not(posa_loom))]
    {
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            if done() {
                return true;
            }
            if backoff.is_completed() {
                return false;
            }
            backoff.snooze();
        }
    }
    #[cfg(posa_loom)]
    {
        done()
    }
}

/// The loom-backed raw lock and condition variable used when built with `--cfg posa_loom`.
#[cfg(posa_loom)]
pub mod loom_impl {
    use std::sync::OnceLock;

    use super::MutexGuard;

    /// A [`lock_api::RawMutex`] made of a loom `Mutex<bool>` ("held") and a loom `Condvar`.
    ///
    /// `lock_api` needs a `const INIT`, and loom has no const constructors, so the loom objects
    /// are created on first use. That lazy creation runs no loom operation, so loom sees it as
    /// one atomic step; each model iteration creates fresh objects.
    #[derive(Debug)]
    pub struct LoomRawMutex {
        cell: OnceLock<(loom::sync::Mutex<bool>, loom::sync::Condvar)>,
    }

    impl LoomRawMutex {
        fn parts(&self) -> &(loom::sync::Mutex<bool>, loom::sync::Condvar) {
            self.cell
                .get_or_init(|| (loom::sync::Mutex::new(false), loom::sync::Condvar::new()))
        }
    }

    // SAFETY: `lock` returns only once it has flipped `held` from false to true under the inner
    // loom mutex, and `unlock` flips it back, so at most one holder exists at a time.
    unsafe impl lock_api::RawMutex for LoomRawMutex {
        #[allow(clippy::declare_interior_mutable_const)]
        const INIT: Self = Self {
            cell: OnceLock::new(),
        };
        type GuardMarker = lock_api::GuardNoSend;

        fn lock(&self) {
            let (m, cv) = self.parts();
            let mut held = m.lock().expect("loom mutex poisoned");
            while *held {
                held = cv.wait(held).expect("loom mutex poisoned");
            }
            *held = true;
        }

        fn try_lock(&self) -> bool {
            let (m, _) = self.parts();
            let mut held = m.lock().expect("loom mutex poisoned");
            if *held {
                false
            } else {
                *held = true;
                true
            }
        }

        unsafe fn unlock(&self) {
            let (m, cv) = self.parts();
            *m.lock().expect("loom mutex poisoned") = false;
            cv.notify_one();
        }
    }

    /// A condition variable for guards of [`LoomRawMutex`]: a generation counter under a loom
    /// mutex. A waiter takes the generation lock before it releases the caller's lock, so a
    /// notifier (who must change the awaited state under the caller's lock) cannot slip between.
    #[derive(Debug, Default)]
    pub struct LoomCondvar {
        cell: OnceLock<(loom::sync::Mutex<u64>, loom::sync::Condvar)>,
    }

    impl LoomCondvar {
        fn parts(&self) -> &(loom::sync::Mutex<u64>, loom::sync::Condvar) {
            self.cell
                .get_or_init(|| (loom::sync::Mutex::new(0), loom::sync::Condvar::new()))
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let (m, cv) = self.parts();
            let mut gen_guard = m.lock().expect("loom mutex poisoned");
            let seen = *gen_guard;
            lock_api::MutexGuard::unlocked(guard, move || {
                while *gen_guard == seen {
                    gen_guard = cv.wait(gen_guard).expect("loom mutex poisoned");
                }
                drop(gen_guard);
            });
        }

        pub(crate) fn notify_one(&self) {
            let (m, cv) = self.parts();
            *m.lock().expect("loom mutex poisoned") += 1;
            cv.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            let (m, cv) = self.parts();
            *m.lock().expect("loom mutex poisoned") += 1;
            cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn condvar_wakes_a_waiter_that_checks_its_predicate() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = Arc::clone(&pair);
        let t = thread::spawn(move || {
            let mut ready = p2.0.lock();
            while !*ready {
                p2.1.wait(&mut ready);
            }
            *ready
        });
        *pair.0.lock() = true;
        pair.1.notify_all();
        assert!(t.join().unwrap());
    }

    #[test]
    fn wait_until_reports_timeout_when_nobody_notifies() {
        let m = Mutex::new(());
        let cv = Condvar::new();
        let mut g = m.lock();
        let timed_out = cv.wait_until(&mut g, Instant::now() + Duration::from_millis(1));
        assert!(timed_out);
    }
}
