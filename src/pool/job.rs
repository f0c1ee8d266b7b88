//! A queued job: the closure (or a future's next poll) with its completer, type-erased.
//!
//! A job is one heap allocation: what the pool needs to know of it (the [`Header`]: when it
//! was queued, whether it holds a unit of capacity, what interceptors see) sits in the same box
//! as the closure, so a [`Job`] is one (fat) pointer. That keeps the queues' slots small: the
//! work-stealing injector allocates and zeroes its slots 63 at a time, and at 48 bytes a job
//! that zeroing cost about 130 instructions a job (callgrind, docs/thread-pool.md).
//!
//! # Invariants
//! - A task is consumed by exactly one of `run`, `cancel` or `refuse`, so its token is
//!   answered exactly once.
//! - `run` counts the job in the pool's statistics *before* it answers the token, so whoever
//!   waits on the token sees the count.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::stats;
use crate::act::Completer;
use crate::error::RunError;

/// What the pool keeps of a job besides its body.
#[derive(Default)]
pub(super) struct Header {
    /// When it was queued (for the queue-wait histogram and interceptors), if anyone looks.
    pub(super) enqueued: Option<Instant>,
    /// A closure job holds one unit of `load` until it is taken off the queue; a future's
    /// poll does not (the future holds one for its whole life).
    pub(super) holds_load: bool,
    /// What interceptors see (only filled in when the pool has a chain).
    pub(super) dispatch: Option<Box<crate::intercept::Dispatch>>,
}

/// A job's body: what runs, and how its token is answered when it does not.
pub(super) trait Body: Send + Sized {
    /// Runs the body; counts it in `stats` *before* answering its token, so whoever waits on
    /// the token sees the count.
    fn run(self, stats: &stats::Stats) -> crate::intercept::Ended;
    fn cancel(self);
    /// Answers the token with `error` without running (an interceptor refused it).
    fn refuse(self, error: RunError);
    fn cancel_requested(&self) -> bool;
}

/// The type-erased job the queues hold.
pub(super) trait Task: Send {
    fn header(&mut self) -> &mut Header;
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Ended;
    fn cancel(self: Box<Self>);
    fn refuse(self: Box<Self>, error: RunError);
    fn cancel_requested(&self) -> bool;
}

/// A body and its header in one allocation.
pub(super) struct Boxed<B> {
    pub(super) header: Header,
    pub(super) body: B,
}

impl<B: Body> Task for Boxed<B> {
    fn header(&mut self) -> &mut Header {
        &mut self.header
    }
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Ended {
        self.body.run(stats)
    }
    fn cancel(self: Box<Self>) {
        self.body.cancel()
    }
    fn refuse(self: Box<Self>, error: RunError) {
        self.body.refuse(error)
    }
    fn cancel_requested(&self) -> bool {
        self.body.cancel_requested()
    }
}

impl Job {
    /// A job of `body`, with what the pool keeps of it.
    pub(super) fn new(header: Header, body: impl Body + 'static) -> Self {
        Job {
            task: Box::new(Boxed { header, body }),
        }
    }
}

pub(super) struct TaskImpl<F, T> {
    pub(super) f: F,
    pub(super) completer: Completer<T, RunError>,
}

impl<F: FnOnce() -> T + Send, T: Send> Body for TaskImpl<F, T> {
    fn run(self, stats: &stats::Stats) -> crate::intercept::Ended {
        let TaskImpl { f, completer } = self;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => {
                stats.completed.incr();
                completer.complete(Ok(value));
                crate::intercept::Ended::Ok
            }
            Err(p) => {
                stats.panicked.incr();
                completer.complete(Err(RunError::Panicked(crate::panic_message(&*p))));
                crate::intercept::Ended::Panicked
            }
        }
    }

    fn refuse(self, error: RunError) {
        self.completer.complete(Err(error));
    }

    fn cancel(self) {
        self.completer.cancel(());
    }

    fn cancel_requested(&self) -> bool {
        self.completer.is_cancelled()
    }
}

/// A job nobody waits on ([`ThreadPool::execute`](super::ThreadPool::execute)): no completer.
/// A panic is counted and logged, since no token can carry it.
pub(super) struct Detached<F>(pub(super) F);

impl<F: FnOnce() + Send> Body for Detached<F> {
    fn run(self, stats: &stats::Stats) -> crate::intercept::Ended {
        match catch_unwind(AssertUnwindSafe(self.0)) {
            Ok(()) => {
                stats.completed.incr();
                crate::intercept::Ended::Ok
            }
            Err(p) => {
                stats.panicked.incr();
                tracing::warn!(
                    panic = %crate::panic_message(&*p),
                    "posa pool: a job run by `execute` panicked"
                );
                crate::intercept::Ended::Panicked
            }
        }
    }

    fn refuse(self, _: RunError) {}

    fn cancel(self) {}

    fn cancel_requested(&self) -> bool {
        false
    }
}

/// A queued job, opaque: what a [`Scheduler`](super::Scheduler) of this pool holds.
pub struct Job {
    pub(super) task: Box<dyn Task>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}
