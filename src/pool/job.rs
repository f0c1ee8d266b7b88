//! A queued job: the closure (or a future's next poll) with its completer, type-erased.
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

pub(super) trait Task: Send {
    /// Runs the task; counts it in `stats` *before* answering its token, so whoever waits on
    /// the token sees the count.
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Ended;
    fn cancel(self: Box<Self>);
    /// Answers the token with `error` without running (an interceptor refused it).
    fn refuse(self: Box<Self>, error: RunError);
    fn cancel_requested(&self) -> bool;
}

pub(super) struct TaskImpl<F, T> {
    pub(super) f: F,
    pub(super) completer: Completer<T, RunError>,
}

impl<F: FnOnce() -> T + Send, T: Send> Task for TaskImpl<F, T> {
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Ended {
        let TaskImpl { f, completer } = *self;
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

    fn refuse(self: Box<Self>, error: RunError) {
        self.completer.complete(Err(error));
    }

    fn cancel(self: Box<Self>) {
        self.completer.cancel(());
    }

    fn cancel_requested(&self) -> bool {
        self.completer.is_cancelled()
    }
}

/// A queued job, opaque: what a [`Scheduler`](super::Scheduler) of this pool holds.
pub struct Job {
    pub(super) task: Box<dyn Task>,
    /// When it was queued (for the queue-wait histogram), if the pool times jobs.
    pub(super) enqueued: Option<Instant>,
    /// A closure job holds one unit of `load` until it is taken off the queue; a future's
    /// runnable does not (the future holds one for its whole life).
    pub(super) holds_load: bool,
    /// What interceptors see (only filled in when the pool has a chain).
    pub(super) dispatch: Option<Box<crate::intercept::Dispatch>>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}
