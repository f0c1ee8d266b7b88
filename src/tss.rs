//! Thread-Specific Storage: one value per thread, reachable without a lock, and aggregated
//! across threads on demand.
//!
//! [`ThreadSpecific<T>`] is an object-scoped thread-local (unlike `thread_local!`, which is
//! static): each thread that touches it gets its own lazily created `T`, and any thread can fold
//! over all of them. On it stand the two metrics that every posa layer uses for statistics:
//! - [`Counter`]: a per-thread `u64` bumped with a plain load and store of the thread's own
//!   cache-padded cell (no read-modify-write, no shared cache line); [`Counter::sum`] adds the
//!   cells up.
//! - [`Histogram`]: a per-thread HDR histogram behind a lock only its own thread and the
//!   occasional [`Histogram::snapshot`] take, so recording never contends with other recorders.
//!
//! # Algorithm and invariants
//! - Normal builds store values in the [`thread_local`](mod@thread_local) crate's `ThreadLocal` (a lock-free
//!   table indexed by a per-thread id). A thread's value outlives the thread; a later thread may
//!   reuse the id and inherit the value, which is what counters want (nothing is lost).
//! - Under `posa_loom` every model thread runs on one OS thread, so `ThreadLocal` would give them
//!   all one slot. There, values live in a shimmed mutex-guarded list keyed by loom's thread id;
//!   the counting and aggregation code above it is the same.
//! - A [`Counter`] cell has one writer at a time (its thread), so a relaxed load+store cannot
//!   lose an increment; readers see each cell's latest store, so a sum is exact once the writers
//!   are quiescent (joined), and a monotone under-estimate while they run.
//!
//! ```
//! use posa::tss::Counter;
//! use std::sync::Arc;
//!
//! let requests = Arc::new(Counter::new());
//! let workers: Vec<_> = (0..4)
//!     .map(|_| {
//!         let c = Arc::clone(&requests);
//!         std::thread::spawn(move || (0..1000).for_each(|_| c.incr()))
//!     })
//!     .collect();
//! workers.into_iter().for_each(|w| w.join().unwrap());
//! assert_eq!(requests.sum(), 4000);
//! ```

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU64, Ordering};

/// A value per thread, created on the thread's first access; see the [module docs](self).
pub struct ThreadSpecific<T: Send> {
    #[cfg(not(posa_loom))]
    inner: thread_local::ThreadLocal<T>,
    #[cfg(posa_loom)]
    inner: loom_tls::LoomThreadLocal<T>,
}

impl<T: Send> ThreadSpecific<T> {
    /// Storage with no values yet.
    pub fn new() -> Self {
        Self {
            #[cfg(not(posa_loom))]
            inner: thread_local::ThreadLocal::new(),
            #[cfg(posa_loom)]
            inner: loom_tls::LoomThreadLocal::new(),
        }
    }

    /// The calling thread's value, if it has one.
    pub fn get(&self) -> Option<&T> {
        self.inner.get()
    }

    /// The calling thread's value, created by `init` on first access.
    pub fn get_or(&self, init: impl FnOnce() -> T) -> &T {
        self.inner.get_or(init)
    }

    /// The calling thread's value, created by `T::default()` on first access.
    pub fn get_or_default(&self) -> &T
    where
        T: Default,
    {
        self.get_or(T::default)
    }

    /// Folds over every thread's value (in no particular order).
    pub fn fold<A>(&self, init: A, f: impl FnMut(A, &T) -> A) -> A
    where
        T: Sync,
    {
        self.inner.iter().fold(init, f)
    }

    /// Every thread's value (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = &T>
    where
        T: Sync,
    {
        self.inner.iter()
    }

    /// Every thread's value, mutably: `&mut self` proves no thread is using them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.inner.iter_mut()
    }
}

impl<T: Send> Default for ThreadSpecific<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send> fmt::Debug for ThreadSpecific<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadSpecific").finish_non_exhaustive()
    }
}

/// A contention-free event counter: each thread bumps its own cell; [`sum`](Self::sum) adds
/// them up.
#[derive(Debug, Default)]
pub struct Counter {
    cells: ThreadSpecific<CachePadded<AtomicU64>>,
}

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` on the calling thread's cell (wrapping on overflow).
    #[inline]
    pub fn add(&self, n: u64) {
        let cell = self.cells.get_or_default();
        // Only this thread writes this cell, so load+store cannot lose an update; the store is
        // atomic so concurrent `sum`s read a whole value.
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// The sum over all threads: exact once the writers are quiescent.
    pub fn sum(&self) -> u64 {
        self.cells
            .fold(0u64, |acc, c| acc.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// The histogram could not be created with these bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramError(String);

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid histogram bounds: {}", self.0)
    }
}

impl std::error::Error for HistogramError {}

/// A per-thread HDR histogram of `u64` values (typically latencies in nanoseconds), merged on
/// [`snapshot`](Self::snapshot).
///
/// Values above the upper bound are recorded as the upper bound (saturating), so a wild value
/// never fails a hot path. Memory is bounded per thread by the bounds and precision.
///
/// ```
/// use posa::tss::Histogram;
/// let h = Histogram::latency();
/// for v in [1_000u64, 2_000, 3_000, 1_000_000] {
///     h.record(v);
/// }
/// let snap = h.snapshot();
/// assert_eq!(snap.len(), 4);
/// assert!(snap.value_at_quantile(0.5) <= 2_001);
/// assert!(snap.max() >= 999_000);
/// ```
pub struct Histogram {
    template: hdrhistogram::Histogram<u64>,
    cells: ThreadSpecific<Mutex<hdrhistogram::Histogram<u64>>>,
}

impl Histogram {
    /// Values from 1 to `high`, with `sigfig` significant decimal digits (1 to 5).
    pub fn new(high: u64, sigfig: u8) -> Result<Self, HistogramError> {
        let template = hdrhistogram::Histogram::new_with_bounds(1, high, sigfig)
            .map_err(|e| HistogramError(format!("{e:?} (high={high}, sigfig={sigfig})")))?;
        Ok(Self {
            template,
            cells: ThreadSpecific::new(),
        })
    }

    /// Nanosecond latencies from 1 ns to 60 s at 3 significant digits (about 200 KiB a thread).
    pub fn latency() -> Self {
        match Self::new(60_000_000_000, 3) {
            Ok(h) => h,
            Err(e) => unreachable!("constant bounds are valid: {e}"),
        }
    }

    /// Records one value on the calling thread's histogram.
    pub fn record(&self, value: u64) {
        self.cells
            .get_or(|| Mutex::new(hdrhistogram::Histogram::new_from(&self.template)))
            .lock()
            .saturating_record(value);
    }

    /// All threads' values merged into one histogram.
    pub fn snapshot(&self) -> hdrhistogram::Histogram<u64> {
        let mut merged = hdrhistogram::Histogram::new_from(&self.template);
        for cell in self.cells.iter() {
            // Same bounds as the template: adding cannot fail.
            let _ = merged.add(&*cell.lock());
        }
        merged
    }

    /// Clears every thread's histogram.
    pub fn reset(&self) {
        for cell in self.cells.iter() {
            cell.lock().reset();
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("high", &self.template.high())
            .field("sigfig", &self.template.sigfig())
            .finish()
    }
}

#[cfg(posa_loom)]
mod loom_tls {
    use crate::sync::Mutex;

    /// Loom stand-in for `thread_local::ThreadLocal`: values keyed by loom's thread id.
    pub(super) struct LoomThreadLocal<T> {
        slots: Mutex<Vec<(loom::thread::ThreadId, Box<T>)>>,
    }

    impl<T> LoomThreadLocal<T> {
        pub(super) fn new() -> Self {
            Self {
                slots: Mutex::new(Vec::new()),
            }
        }

        fn find(&self, id: loom::thread::ThreadId) -> Option<&T> {
            let slots = self.slots.lock();
            let ptr: *const T = &*slots.iter().find(|(tid, _)| *tid == id)?.1;
            // SAFETY: boxes are only added while `&self` lives, never removed or replaced (that
            // takes `&mut self`), so the pointee outlives the returned borrow of `self`; its
            // own thread is the only one that creates it, and `T` is shared only as `&T`.
            Some(unsafe { &*ptr })
        }

        pub(super) fn get(&self) -> Option<&T> {
            self.find(loom::thread::current().id())
        }

        pub(super) fn get_or(&self, init: impl FnOnce() -> T) -> &T {
            let id = loom::thread::current().id();
            if let Some(v) = self.find(id) {
                return v;
            }
            let value = Box::new(init());
            self.slots.lock().push((id, value));
            self.find(id).expect("just inserted")
        }

        pub(super) fn iter(&self) -> std::vec::IntoIter<&T> {
            let slots = self.slots.lock();
            let ptrs: Vec<*const T> = slots.iter().map(|(_, b)| &**b as *const T).collect();
            drop(slots);
            // SAFETY: as in `find`: boxes live, unmoved, as long as `&self`.
            ptrs.into_iter()
                .map(|p| unsafe { &*p })
                .collect::<Vec<_>>()
                .into_iter()
        }

        pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
            self.slots.get_mut().iter_mut().map(|(_, b)| &mut **b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, thread};

    #[test]
    fn each_thread_sees_its_own_value_and_fold_sees_all() {
        let tss = Arc::new(ThreadSpecific::<std::sync::atomic::AtomicU64>::new());
        tss.get_or_default()
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let t = Arc::clone(&tss);
        thread::spawn(move || {
            assert!(t.get().is_none(), "a new thread starts without a value");
            t.get_or_default()
                .store(10, std::sync::atomic::Ordering::Relaxed);
        })
        .join()
        .unwrap();
        assert_eq!(
            tss.get()
                .unwrap()
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let total = tss.fold(0, |a, v| a + v.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(total, 11);
    }

    #[test]
    fn counter_sums_across_threads_after_join() {
        let c = Arc::new(Counter::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.incr();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        c.add(5);
        assert_eq!(c.sum(), 40_005);
    }

    #[test]
    fn histogram_merges_threads_and_saturates() {
        let h = Arc::new(Histogram::new(1_000, 2).unwrap());
        let h2 = Arc::clone(&h);
        thread::spawn(move || h2.record(10)).join().unwrap();
        h.record(5_000_000); // above the bound: clamped, not lost
        let snap = h.snapshot();
        assert_eq!(snap.len(), 2);
        assert!(snap.max() >= 1_000 && snap.max() < 1_100);
        h.reset();
        assert_eq!(h.snapshot().len(), 0);
    }

    #[test]
    fn bad_bounds_are_a_typed_error() {
        assert!(Histogram::new(1, 3).is_err());
        assert!(Histogram::new(1_000, 9).is_err());
    }
}
