//! Locking patterns of POSA2 in Rust terms, and the locks that go with them.
//!
//! posa adds one lock of its own, [`NoLock`]; the rest is parking_lot's, re-exported where it
//! adds something std lacks (no poisoning, a re-entrant mutex, upgradable reads). There is no
//! wrapper that adds nothing.
//!
//! # Scoped Locking
//! A guard acquires in its constructor and releases in `Drop`, on every path out of the scope,
//! panics included. Every Rust lock works this way; keep the scope as small as the invariant.
//!
//! ```
//! use posa::sync::Mutex;
//! let hits = Mutex::new(0u64);
//! {
//!     let mut g = hits.lock(); // acquired
//!     *g += 1;
//! } // released here, even on panic
//! assert_eq!(*hits.lock(), 1);
//! ```
//!
//! # Strategized Locking
//! Make the lock a type parameter so one component serves both single-threaded and
//! multi-threaded callers, paying for synchronization only where it is needed. With
//! [`lock_api`], the parameter is a raw lock; [`NoLock`] costs a flag and makes the component
//! `!Sync`, so the compiler keeps it on one thread.
//!
//! ```
//! use lock_api::RawMutex;
//! use posa::monitor::{Monitor, locks::NoLock};
//!
//! /// A counter table usable with any lock strategy.
//! struct Stats<R: RawMutex> {
//!     table: Monitor<Vec<u64>, R>,
//! }
//! impl<R: RawMutex> Stats<R> {
//!     fn new(n: usize) -> Self { Stats { table: Monitor::with_lock(vec![0; n]) } }
//!     fn bump(&self, i: usize) { self.table.with(|t| t[i] += 1) }
//!     fn total(&self) -> u64 { self.table.with(|t| t.iter().sum()) }
//! }
//!
//! let local: Stats<NoLock> = Stats::new(4); // single-threaded: no atomic RMW at all
//! local.bump(1);
//! let shared: Stats<parking_lot::RawMutex> = Stats::new(4); // shareable across threads
//! std::thread::scope(|s| { s.spawn(|| shared.bump(2)); });
//! assert_eq!(local.total() + shared.total(), 2);
//! ```
//!
//! # Thread-Safe Interface
//! Public methods take the lock once and call private helpers that work on the already-locked
//! state, so a method that calls another never locks twice (self-deadlock) and never pays for
//! the lock twice. In Rust the helpers take `&mut State`, which the compiler only lets you get
//! through the guard.
//!
//! ```
//! use posa::sync::Mutex;
//! struct Account { state: Mutex<State> }
//! struct State { balance: i64, log: Vec<i64> }
//! impl Account {
//!     pub fn deposit(&self, amount: i64) { Self::apply(&mut self.state.lock(), amount) }
//!     pub fn transfer_in(&self, amounts: &[i64]) {
//!         let mut s = self.state.lock(); // one acquisition for the whole batch
//!         for &a in amounts { Self::apply(&mut s, a) }
//!     }
//!     fn apply(s: &mut State, amount: i64) { s.balance += amount; s.log.push(amount) }
//! }
//! let acct = Account { state: Mutex::new(State { balance: 0, log: vec![] }) };
//! acct.deposit(5);
//! acct.transfer_in(&[1, 2]);
//! assert_eq!(acct.state.lock().balance, 8);
//! ```
//!
//! # Double-Checked Locking Optimization
//! Check without the lock, lock, check again, initialize once. In C++ the unlocked check needs
//! memory barriers people forget; in Rust, [`std::sync::OnceLock`] (or `LazyLock`) *is* the
//! pattern, with the acquire/release pairing done right: the fast path is one acquire load.
//!
//! ```
//! use std::sync::OnceLock;
//! static CONFIG: OnceLock<String> = OnceLock::new();
//! fn config() -> &'static str {
//!     CONFIG.get_or_init(|| "loaded once".to_owned()) // first caller initializes, others wait
//! }
//! assert_eq!(config(), "loaded once");
//! ```
//!
//! # Re-entrant and reader-writer locks
//! [`ReentrantMutex`] lets the thread that holds it lock again (it hands out `&T` only; add a
//! `RefCell` for mutation). [`RwLock`] lets readers share; its upgradable read
//! ([`RwLock::upgradable_read`]) is held alongside plain readers and upgrades to a write
//! without letting another writer in between: the read-check-write of a cache fill.
//!
//! ```
//! use posa::monitor::locks::{ReentrantMutex, RwLock, RwLockUpgradableReadGuard};
//! use std::cell::RefCell;
//!
//! let m = ReentrantMutex::new(RefCell::new(0));
//! let outer = m.lock();
//! { let inner = m.lock(); *inner.borrow_mut() += 1; } // same thread: no deadlock
//! assert_eq!(*outer.borrow(), 1);
//!
//! let cache = RwLock::new(None::<u32>);
//! let r = cache.upgradable_read();
//! if r.is_none() {
//!     let mut w = RwLockUpgradableReadGuard::upgrade(r);
//!     *w = Some(42);
//! }
//! assert_eq!(*cache.read(), Some(42));
//! ```
//!
//! These parking_lot locks are not routed through [`crate::sync`]: posa's own shared state does
//! not use them, so loom has nothing of posa's to check there.

use std::cell::Cell;

#[allow(
    clippy::disallowed_types,
    reason = "the reader-writer and re-entrant lock patterns are parking_lot's, for users; posa's own state does not use them"
)]
pub use parking_lot::{
    ReentrantMutex, ReentrantMutexGuard, RwLock, RwLockReadGuard, RwLockUpgradableReadGuard,
    RwLockWriteGuard,
};

/// The no-op lock of Strategized Locking, for a component used by one thread only.
///
/// It is `Send` but not `Sync`, so anything guarded by it stays on one thread at a time. It still
/// tracks whether it is held: locking it twice (re-entrant use) panics instead of handing out two
/// `&mut` to the same state, and `try_lock` reports it held.
#[derive(Debug)]
pub struct NoLock {
    held: Cell<bool>,
}

// SAFETY: `NoLock` is `!Sync`, so all calls come from one thread at a time; `lock` refuses (by
// panicking) to hand out a second hold while `held` is set, and `try_lock` returns false then,
// so at most one guard exists at a time, as `RawMutex` requires.
unsafe impl lock_api::RawMutex for NoLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = NoLock {
        held: Cell::new(false),
    };
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        assert!(
            !self.held.replace(true),
            "NoLock locked twice on one thread; use ReentrantMutex for re-entrant locking"
        );
    }

    fn try_lock(&self) -> bool {
        !self.held.replace(true)
    }

    unsafe fn unlock(&self) {
        self.held.set(false);
    }

    fn is_locked(&self) -> bool {
        self.held.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_lock_says_when_it_is_held() {
        let m: lock_api::Mutex<NoLock, u8> = lock_api::Mutex::new(0);
        assert!(!m.is_locked());
        let g = m.lock();
        assert!(m.is_locked());
        assert!(m.try_lock().is_none(), "held: try_lock refuses");
        drop(g);
        assert!(!m.is_locked());
    }

    #[test]
    #[should_panic(expected = "NoLock locked twice")]
    fn no_lock_refuses_reentry() {
        let m: lock_api::Mutex<NoLock, u8> = lock_api::Mutex::new(0);
        let _a = m.lock();
        let _b = m.lock();
    }
}
