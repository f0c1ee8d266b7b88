//! Monitor Object: state that only one thread touches at a time, with condition waits.
//!
//! A [`Monitor<T, R>`] owns a value `T` behind a lock `R`. Its synchronized methods are whatever
//! you do while holding a [`MonitorGuard`]; a guard can wait on a [`Condition`] until a predicate
//! over the state holds ([`MonitorGuard::wait_while`]), with or without a deadline, and notify
//! one or all waiters. [`BoundedQueue`] is the classic monitor built on it, and [`locks`] shows
//! the companion locking patterns (Scoped, Strategized, Thread-Safe Interface, Double-Checked
//! Locking) in Rust terms.
//!
//! # Strategized locking
//!
//! The lock is a type parameter: any [`lock_api::RawMutex`]. The default is the crate's
//! [`sync::RawMutex`](crate::sync::RawMutex) (parking_lot's, or a loom model under
//! `posa_loom`); [`locks::NoLock`] makes a monitor for single-threaded use that costs a flag.
//! Condition waits exist only where `R: Sync`: with a lock that cannot be shared, nobody else
//! could ever make the predicate true, so a wait would be a certain deadlock and does not compile.
//!
//! # Algorithm and invariants of [`Condition`]
//!
//! A condition is a wait queue that works with any raw lock: a count of waiters, a generation
//! counter that every notification moves, and a sleep lock with a condition variable.
//! - A waiter, still holding the monitor's lock, counts itself in and reads the generation, then
//!   releases the monitor's lock and waits until the generation moves. A notifier changes the
//!   state under the monitor's lock, so its bump comes after that read: the waiter cannot miss
//!   it, and no wake-up is lost.
//! - The wait spins briefly first ([`sync::spin_until`](crate::sync::spin_until)): a hand-off
//!   that completes within microseconds costs no sleep and no wake-up system call. Then it
//!   sleeps: the generation only moves under the sleep lock, which the condition variable
//!   releases atomically as the waiter sleeps.
//! - The waiter never holds the sleep lock while taking the monitor's lock, so the lock order
//!   is always monitor, then sleep.
//! - A notifier that sees zero waiters returns after one atomic load. The count is raised under
//!   the monitor's lock before the waiter releases it, so a notifier that changed the state
//!   under that lock (before or after notifying) cannot miss a waiter.
//!
//! ```
//! use posa::monitor::Monitor;
//! use std::sync::Arc;
//!
//! let jobs = Arc::new(Monitor::new(Vec::<u32>::new()));
//! let worker = {
//!     let jobs = Arc::clone(&jobs);
//!     std::thread::spawn(move || {
//!         let mut g = jobs.lock();
//!         g.wait_while(|v| v.is_empty());
//!         g.pop()
//!     })
//! };
//! jobs.lock().push(7);
//! jobs.notify_all();
//! assert_eq!(worker.join().unwrap(), Some(7));
//! ```

mod queue;

pub mod locks;

pub use queue::{BoundedQueue, TakeError};

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use lock_api::RawMutex;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

/// A condition wait ran out of time before its predicate stopped holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimedOut;

impl fmt::Display for WaitTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting on a monitor condition")
    }
}

impl std::error::Error for WaitTimedOut {}

/// A wait queue of a monitor: threads wait on it for the monitor's state to change.
///
/// Every [`Monitor`] has a built-in condition; declare more when different waiters wait for
/// different things (a bounded queue's "not full" and "not empty"), so a notification wakes
/// only a thread that can use it.
#[derive(Debug, Default)]
pub struct Condition {
    waiters: AtomicUsize,
    /// Bumped by every notification, under `sleep`; read without it while spinning.
    generation: AtomicU64,
    sleep: Mutex<()>,
    cv: Condvar,
}

impl Condition {
    /// A condition with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes one thread waiting on this condition, if any.
    ///
    /// Change the state the waiter checks under the monitor's lock before notifying; notifying
    /// with or without the lock still held are both correct.
    pub fn notify_one(&self) {
        if self.bump() {
            self.cv.notify_one();
        }
    }

    /// Wakes every thread waiting on this condition.
    pub fn notify_all(&self) {
        if self.bump() {
            self.cv.notify_all();
        }
    }

    /// Threads waiting on this condition now (for diagnostics and tests: it can change as
    /// soon as it is read).
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Moves the generation if anyone waits; `true` if it did (then wake the sleepers).
    fn bump(&self) -> bool {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let _sleep = self.sleep.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Waits with `guard`'s lock released until notified (or `deadline`): spins briefly, then
    /// sleeps. `true` on time-out.
    fn wait<R: RawMutex, T>(
        &self,
        guard: &mut lock_api::MutexGuard<'_, R, T>,
        deadline: Option<Instant>,
    ) -> bool {
        // Both under the monitor's lock: a notifier that changes the state after we release it
        // sees us counted, and its bump makes the generation differ from `seen`.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seen = self.generation.load(Ordering::SeqCst);
        let moved = || self.generation.load(Ordering::SeqCst) != seen;
        let timed_out = lock_api::MutexGuard::unlocked(guard, || {
            if crate::sync::spin_until(moved) {
                return false;
            }
            // The generation only moves under `sleep`, and the condvar releases `sleep`
            // atomically as it sleeps, so a bump cannot fall between the check and the sleep.
            let mut sleep = self.sleep.lock();
            let mut timed_out = false;
            while !moved() && !timed_out {
                match deadline {
                    None => self.cv.wait(&mut sleep),
                    Some(deadline) => timed_out = self.cv.wait_until(&mut sleep, deadline),
                }
            }
            timed_out && !moved()
        });
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        timed_out
    }
}

/// State `T` guarded by lock `R`, with condition waits. See the [module docs](self).
pub struct Monitor<T, R: RawMutex = crate::sync::RawMutex> {
    state: lock_api::Mutex<R, T>,
    condition: Condition,
}

impl<T> Monitor<T> {
    /// A monitor owning `value`, guarded by the crate's default lock.
    pub fn new(value: T) -> Self {
        Self::with_lock(value)
    }
}

impl<T, R: RawMutex> Monitor<T, R> {
    /// A monitor owning `value`, guarded by the lock strategy `R` (name it in the type:
    /// `Monitor::<_, NoLock>::with_lock(v)`).
    pub fn with_lock(value: T) -> Self {
        Self {
            state: lock_api::Mutex::new(value),
            condition: Condition::new(),
        }
    }

    /// Enters the monitor, blocking until no other thread is inside.
    pub fn lock(&self) -> MonitorGuard<'_, T, R> {
        MonitorGuard {
            guard: self.state.lock(),
            condition: &self.condition,
        }
    }

    /// Enters the monitor if no other thread is inside.
    pub fn try_lock(&self) -> Option<MonitorGuard<'_, T, R>> {
        self.state.try_lock().map(|guard| MonitorGuard {
            guard,
            condition: &self.condition,
        })
    }

    /// Runs `f` inside the monitor: a synchronized method in one line.
    pub fn with<U>(&self, f: impl FnOnce(&mut T) -> U) -> U {
        f(&mut self.lock())
    }

    /// The monitor's built-in condition.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// Wakes one thread waiting on the built-in condition.
    pub fn notify_one(&self) {
        self.condition.notify_one();
    }

    /// Wakes every thread waiting on the built-in condition.
    pub fn notify_all(&self) {
        self.condition.notify_all();
    }

    /// Mutable access without locking: `&mut self` proves no other thread is inside.
    pub fn get_mut(&mut self) -> &mut T {
        self.state.get_mut()
    }

    /// Consumes the monitor and returns the state.
    pub fn into_inner(self) -> T {
        self.state.into_inner()
    }
}

impl<T: Default, R: RawMutex> Default for Monitor<T, R> {
    fn default() -> Self {
        Self::with_lock(T::default())
    }
}

impl<T, R: RawMutex> fmt::Debug for Monitor<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

/// Proof of being inside a [`Monitor`]: derefs to the state; leaving the scope leaves the monitor.
pub struct MonitorGuard<'a, T, R: RawMutex = crate::sync::RawMutex> {
    guard: lock_api::MutexGuard<'a, R, T>,
    condition: &'a Condition,
}

impl<T, R: RawMutex> MonitorGuard<'_, T, R> {
    /// Wakes one thread waiting on the monitor's built-in condition.
    pub fn notify_one(&self) {
        self.condition.notify_one();
    }

    /// Wakes every thread waiting on the monitor's built-in condition.
    pub fn notify_all(&self) {
        self.condition.notify_all();
    }
}

impl<T, R: RawMutex + Sync> MonitorGuard<'_, T, R> {
    /// Leaves the monitor until the built-in condition is notified, then re-enters.
    /// Prefer [`wait_while`](Self::wait_while), which re-checks the predicate for you.
    pub fn wait(&mut self) {
        self.condition.wait(&mut self.guard, None);
    }

    /// Waits on the built-in condition while `predicate` holds for the state.
    pub fn wait_while(&mut self, predicate: impl FnMut(&mut T) -> bool) {
        let condition = self.condition;
        self.wait_on_while(condition, predicate);
    }

    /// Waits on the built-in condition while `predicate` holds, for at most `timeout`.
    pub fn wait_while_for(
        &mut self,
        timeout: Duration,
        predicate: impl FnMut(&mut T) -> bool,
    ) -> Result<(), WaitTimedOut> {
        let condition = self.condition;
        self.wait_on_while_until(condition, deadline_after(timeout), predicate)
    }

    /// Waits on `condition` while `predicate` holds for the state.
    pub fn wait_on_while(
        &mut self,
        condition: &Condition,
        mut predicate: impl FnMut(&mut T) -> bool,
    ) {
        while predicate(&mut self.guard) {
            condition.wait(&mut self.guard, None);
        }
    }

    /// Waits on `condition` while `predicate` holds, until `deadline` (`None`: no deadline).
    ///
    /// On time-out the guard is still held and the predicate still holds.
    pub fn wait_on_while_until(
        &mut self,
        condition: &Condition,
        deadline: Option<Instant>,
        mut predicate: impl FnMut(&mut T) -> bool,
    ) -> Result<(), WaitTimedOut> {
        while predicate(&mut self.guard) {
            if condition.wait(&mut self.guard, deadline) && predicate(&mut self.guard) {
                return Err(WaitTimedOut);
            }
        }
        Ok(())
    }
}

/// `now + timeout`, or no deadline if that overflows `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T, R: RawMutex> Deref for MonitorGuard<'_, T, R> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T, R: RawMutex> DerefMut for MonitorGuard<'_, T, R> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: fmt::Debug, R: RawMutex> fmt::Debug for MonitorGuard<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MonitorGuard").field(&*self.guard).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, thread};

    /// Until `waiter` is asleep on `m`'s built-in condition (bounded by count, not time).
    fn until_waiting(m: &Monitor<u32>) {
        for _ in 0..100_000_000u64 {
            if m.condition().waiting() == 1 {
                return;
            }
            std::thread::yield_now();
        }
        panic!("the waiter never waited");
    }

    /// Each way to notify the built-in condition (the monitor's and the guard's, one and all)
    /// wakes a thread asleep in `wait_while` or `wait`, whose state the notifier changed
    /// without any other wake-up.
    #[test]
    fn every_notification_reaches_a_sleeping_waiter() {
        for how in 0..4 {
            for plain_wait in [false, true] {
                let m = Arc::new(Monitor::new(0u32));
                let m2 = Arc::clone(&m);
                let waiter = thread::spawn(move || {
                    let mut g = m2.lock();
                    if plain_wait {
                        while *g == 0 {
                            g.wait();
                        }
                    } else {
                        g.wait_while(|n| *n == 0);
                    }
                    *g
                });
                until_waiting(&m);
                {
                    let mut g = m.lock();
                    *g = 7;
                    match how {
                        0 => g.notify_one(),
                        1 => g.notify_all(),
                        _ => {}
                    }
                }
                match how {
                    2 => m.notify_one(),
                    3 => m.notify_all(),
                    _ => {}
                }
                assert_eq!(waiter.join().unwrap(), 7, "notification {how}");
            }
        }
    }

    #[test]
    fn a_timed_out_wait_says_so() {
        assert_eq!(
            WaitTimedOut.to_string(),
            "timed out waiting on a monitor condition"
        );
    }

    #[test]
    fn wait_while_returns_once_predicate_fails() {
        let m = Arc::new(Monitor::new(0u32));
        let m2 = Arc::clone(&m);
        let h = thread::spawn(move || {
            let mut g = m2.lock();
            g.wait_while(|n| *n < 3);
            *g
        });
        for _ in 0..3 {
            m.with(|n| *n += 1);
            m.notify_all();
        }
        assert_eq!(h.join().unwrap(), 3);
    }

    #[test]
    fn timed_wait_times_out_and_keeps_the_lock() {
        let m = Monitor::new(false);
        let mut g = m.lock();
        let r = g.wait_while_for(Duration::from_millis(1), |ready| !*ready);
        assert_eq!(r, Err(WaitTimedOut));
        *g = true; // still inside the monitor
        assert!(m.try_lock().is_none());
    }

    #[test]
    fn separate_conditions_wake_their_own_waiters() {
        let m = Arc::new(Monitor::new((false, false)));
        let first = Arc::new(Condition::new());
        let second = Arc::new(Condition::new());
        let (m2, c2) = (Arc::clone(&m), Arc::clone(&second));
        let h = thread::spawn(move || {
            let mut g = m2.lock();
            g.wait_on_while(&c2, |s| !s.1);
            g.0
        });
        m.with(|s| s.0 = true);
        first.notify_all(); // nobody waits here: must not disturb the other waiter
        m.with(|s| s.1 = true);
        second.notify_one();
        assert!(h.join().unwrap());
    }

    #[test]
    fn no_lock_monitor_is_a_cheap_single_threaded_monitor() {
        let m = Monitor::<Vec<u8>, locks::NoLock>::with_lock(Vec::new());
        m.with(|v| v.push(1));
        assert_eq!(m.lock().len(), 1);
        assert!(m.try_lock().is_some());
        let g = m.lock();
        assert!(m.try_lock().is_none(), "a held NoLock reports held");
        drop(g);
        assert_eq!(m.into_inner(), vec![1]);
    }
}
