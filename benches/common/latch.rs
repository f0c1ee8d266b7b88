//! A count-down latch for the benches: the peers (rayon, a channel pool) have no per-job
//! token, so a round waits for its last job through this. Shared by `pools.rs` and
//! `ratios.rs` (`#[path]`: `benches/common/` holds no bench target of its own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Counts down to zero; the operation that reaches zero wakes the waiter.
pub struct Latch {
    left: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(n),
            done: Mutex::new(n == 0),
            cv: Condvar::new(),
        })
    }
    pub fn count_down(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.done.lock().expect("latch") = true;
            self.cv.notify_all();
        }
    }
    pub fn wait(&self) {
        let mut done = self.done.lock().expect("latch");
        while !*done {
            done = self.cv.wait(done).expect("latch");
        }
    }
}
