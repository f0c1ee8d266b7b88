//! A worker's loop: find a job, run it, and park when there is none; shrink after the
//! keep-alive.
//!
//! # Invariants
//! - Parking cannot miss a push: a worker that found nothing reads `pushes` and looks for
//!   work once more; when it still found nothing it may watch `pushes` for a few
//!   microseconds, then registers in `idle` and re-reads `pushes` under the control lock
//!   (Dekker with the submitter in `submit.rs`), and sleeps only if nothing moved.
//! - A worker exits only when, under the control lock, the pool is stopping and every queue is
//!   empty, or it sat idle for the whole keep-alive above `min_threads`. It frees its slot
//!   under the same lock, so a submitter that finds no idle worker can start one in it at once.
//! - A job runs at most once; a job whose token asked for cancellation, or that is taken while
//!   the pool stops `Now`, is cancelled instead. A panic is caught: the worker survives.

use std::cell::RefCell;
use std::time::Instant;

use super::deque::Worker;
use super::job::Job;
use super::queue::Queue;
use super::{Ctl, Inner, RUNNING, STOPPING};
use crate::error::RunError;
use crate::sync::Arc;
use crate::sync::atomic::Ordering::SeqCst;
use crate::sync::dekker_fence;

/// The worker this thread is, if it is one.
pub(super) struct Current {
    pub(super) pool: usize,
    pub(super) slot: usize,
    pub(super) local: Option<Worker<Job>>,
}

crate::sync::const_thread_local! {
    pub(super) static CURRENT: RefCell<Option<Current>> = RefCell::new(None);
}

impl Inner {
    /// Runs (or, when stopping or unwanted, cancels) a job taken off the queue.
    pub(super) fn execute(&self, slot: usize, mut job: Job) {
        let header = job.task.header();
        let (enqueued, dispatch) = (header.enqueued, header.dispatch.take());
        if header.holds_load {
            self.release();
        }
        if self.phase() == STOPPING || job.task.cancel_requested() {
            job.task.cancel();
            self.stats.cancelled.incr();
            return;
        }
        // Interceptors: one pointer test when there are none.
        let dispatch = dispatch.map(|mut d| {
            d.queued_at = enqueued;
            *d
        });
        if let Some(d) = &dispatch
            && let Err(rejection) = self.chain.before(d)
        {
            job.task.refuse(RunError::from_rejection(rejection));
            return;
        }
        let started = (self.stats.timing || dispatch.is_some()).then(Instant::now);
        if let (Some(started), true) = (started, self.stats.timing) {
            if let Some(enqueued) = enqueued {
                self.stats
                    .record_wait(started.saturating_duration_since(enqueued));
            }
            let since = started.saturating_duration_since(self.epoch).as_nanos();
            self.running[slot].store(u64::try_from(since).unwrap_or(u64::MAX - 1) + 1, SeqCst);
        }
        let outcome = job.task.run(&self.stats);
        if let (Some(d), Some(started)) = (&dispatch, started) {
            self.chain.after(d, outcome, started.elapsed());
        }
        if let (Some(started), true) = (started, self.stats.timing) {
            self.running[slot].store(0, SeqCst);
            let took = started.elapsed();
            self.stats.record_run(took);
            if let Some(threshold) = self.stall
                && took > threshold
            {
                self.stats.stalled.incr();
                tracing::warn!(pool = %self.name, ?took, ?threshold, "posa pool: job stalled its worker");
            }
        }
    }

    /// Nothing found since `pushes` read `seen`: before going to sleep, watch `pushes` for a
    /// few microseconds (crossbeam's `Backoff`: spins, then yields). A submitter that keeps a
    /// worker busy then never pays for a wake-up (a lock, a notify, a futex call on each side)
    /// each time the worker runs dry a moment before the next push; with the worker asleep it
    /// would, for nearly every job. `true`: something was pushed, look again.
    ///
    /// An optimisation only: whatever this returns, `idle_wait`'s protocol decides whether
    /// the worker sleeps, so it cannot lose a wake-up. The loom models leave it out (a spin
    /// adds states, not interleavings of the protocol).
    ///
    /// Only in fixed-size pools: in a pool that may grow, a submitter that finds no worker
    /// registered idle starts a new one, so a spinning worker would cost a thread.
    pub(super) fn spin_for_work(&self, seen: usize) -> bool {
        if cfg!(posa_loom) || self.min != self.max {
            return false;
        }
        let backoff = crossbeam_utils::Backoff::new();
        while !backoff.is_completed() && self.phase() == RUNNING {
            if self.hot.pushes.load(SeqCst) != seen {
                return true;
            }
            backoff.snooze();
        }
        false
    }

    /// Nothing found since `pushes` read `seen`: sleep until a push or shutdown. `false`: this
    /// worker exits (its slot freed).
    pub(super) fn idle_wait(&self, slot: usize, seen: usize) -> bool {
        let mut ctl = self.ctl.lock();
        self.quiet.idle.fetch_add(1, SeqCst);
        dekker_fence(); // pairs with the fences in `wake_worker` and `wake_one_idle`
        let keep = loop {
            if self.hot.pushes.load(SeqCst) != seen {
                break true;
            }
            if self.phase() != RUNNING {
                // Stopping for good needs an empty queue (checked under the lock: see `push`).
                break self.has_work();
            }
            let waiting =
                |_: &mut Ctl| self.hot.pushes.load(SeqCst) == seen && self.phase() == RUNNING;
            if ctl.alive > self.min {
                let deadline = crate::monitor::deadline_after(self.keep_alive);
                if ctl
                    .wait_on_while_until(&self.work, deadline, waiting)
                    .is_err()
                    && ctl.alive > self.min
                {
                    // Idle for the whole keep-alive, and still above the minimum (asked again:
                    // the lock was let go while waiting, and other idle workers may have
                    // shrunk the pool meanwhile): shrink.
                    break false;
                }
            } else {
                ctl.wait_on_while(&self.work, waiting);
            }
        };
        self.quiet.idle.fetch_sub(1, SeqCst);
        if !keep {
            // Free the slot under the lock, so a submitter that finds no idle worker can start
            // one in it at once. The deque is empty: only this worker pushes to it, and it
            // found nothing.
            let local = CURRENT.with(|c| c.borrow_mut().as_mut().and_then(|c| c.local.take()));
            if let (Queue::Stealing { locals, .. }, Some(local)) = (&self.queue, local) {
                *locals[slot].lock() = Some(local);
            }
            ctl.free.push(slot);
            ctl.alive -= 1;
        }
        keep
    }
}

pub(super) fn worker_main(inner: Arc<Inner>, slot: usize) {
    let local = match &inner.queue {
        Queue::Stealing { locals, .. } => locals[slot].lock().take(),
        Queue::Ordered(_) => None,
    };
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            pool: Inner::id(&inner),
            slot,
            local,
        })
    });
    let mut tick = 0u32;
    loop {
        tick = tick.wrapping_add(1);
        if let Some(job) = inner.find(slot, tick) {
            inner.execute(slot, job);
            continue;
        }
        // The queues looked empty. Read the push count, then look once more: a push before
        // the read is found by the second look, one after it moves the count `idle_wait`
        // compares. (Reading the count only here, not before every job, spares a busy worker
        // a read of the line every submitter writes.)
        let seen = inner.hot.pushes.load(SeqCst);
        if let Some(job) = inner.find(slot, tick) {
            inner.execute(slot, job);
            continue;
        }
        if inner.spin_for_work(seen) {
            continue;
        }
        if !inner.idle_wait(slot, seen) {
            break;
        }
    }
    CURRENT.with(|c| c.borrow_mut().take());
    inner.exited.notify_all();
}
