//! The submit path: admission by the interceptor chain, a unit of capacity, the push, and
//! waking (or starting) a worker.
//!
//! # Invariants
//! - `load` counts queued jobs plus live futures against the capacity. A reservation is one
//!   compare-and-swap below the capacity; a blocked submitter registers in `blocked` and waits
//!   on `room`, and `release` reads `blocked` after its decrement: both sides are `SeqCst`
//!   with a [`dekker_fence`], so either the releaser sees the waiter or the waiter sees the
//!   room.
//! - No job sleeps in a queue while a worker sleeps: a submitter pushes, bumps `pushes`, then
//!   reads `idle` (Dekker with the worker's idle registration in `worker.rs`), and wakes one
//!   worker under the control lock, or starts a new one when none is idle and the pool may grow.
//! - Submit racing shutdown: the phase is checked before the push (refused: the job comes back)
//!   and again after; a submitter that finds shutdown begun after its push and no worker alive
//!   cancels what is queued itself. Each job is run, cancelled or refused; none is stranded.

use std::io;
use std::time::Instant;

use super::queue::Queue;
use super::worker::{CURRENT, Current, worker_main};
use super::{Ctl, Inner, Job, JobMeta, JobOptions, Queued, RUNNING, WhenFull};
use crate::sync::atomic::Ordering::SeqCst;
use crate::sync::dekker_fence;
use crate::sync::{Arc, thread};

/// A submission the interceptor chain admitted, not yet finished.
pub(super) struct Admission {
    dispatch: crate::intercept::Dispatch,
    started: Instant,
}

impl Admission {
    /// What the job's run shows interceptors: the same dispatch (id, deadline, stamp) at
    /// `PoolJob`.
    pub(super) fn for_job(&self) -> Box<crate::intercept::Dispatch> {
        Box::new(crate::intercept::Dispatch {
            point: crate::intercept::Point::PoolJob,
            ..self.dispatch
        })
    }

    /// Ends the `PoolSubmit` dispatch: `after`, with the time the whole submit step took
    /// (admission, capacity, the push and the wake-up).
    pub(super) fn done(self, chain: &crate::intercept::Chain, ended: crate::intercept::Ended) {
        chain.after(&self.dispatch, ended, self.started.elapsed());
    }
}

impl Inner {
    /// Starts a worker in a free slot (under the control lock).
    pub(super) fn start_worker(inner: &Arc<Inner>, ctl: &mut Ctl) -> io::Result<()> {
        let Some(slot) = ctl.free.pop() else {
            return Ok(());
        };
        // The slot's previous thread has left its loop (it freed the slot): reap it.
        if let Some(old) = ctl.handles[slot].take() {
            let _ = old.join();
        }
        let inner2 = Arc::clone(inner);
        let spawned = thread::Builder::new()
            .name(format!("{}-{slot}", inner.name))
            .spawn(move || worker_main(inner2, slot));
        match spawned {
            Ok(handle) => {
                ctl.handles[slot] = Some(handle);
                ctl.alive += 1;
                Ok(())
            }
            Err(e) => {
                ctl.free.push(slot);
                Err(e)
            }
        }
    }

    /// Takes a unit of capacity for a new job, blocking per policy. `Err(true)`: shut down;
    /// `Err(false)`: full.
    pub(super) fn reserve(&self, may_block: bool) -> Result<(), bool> {
        loop {
            if self.phase() != RUNNING {
                return Err(true);
            }
            let n = self.hot.load.load(SeqCst);
            if n < self.capacity {
                if self
                    .hot
                    .load
                    .compare_exchange(n, n + 1, SeqCst, SeqCst)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if !may_block || self.when_full != WhenFull::Block {
                return Err(false);
            }
            let mut ctl = self.ctl.lock();
            self.quiet.blocked.fetch_add(1, SeqCst);
            dekker_fence(); // pairs with the fence in `release`
            ctl.wait_on_while(&self.room, |_| {
                self.phase() == RUNNING && self.hot.load.load(SeqCst) >= self.capacity
            });
            self.quiet.blocked.fetch_sub(1, SeqCst);
        }
    }

    /// Runs the chain's admission (`PoolSubmit`). `Ok(None)` when there is no chain; otherwise
    /// the submission, to be finished with [`Admission::done`] once the job is queued (or
    /// refused), so the `PoolSubmit` dispatch is timed over the whole submit step.
    pub(super) fn admit(
        &self,
        options: &JobOptions,
    ) -> Result<Option<Admission>, crate::intercept::Rejection> {
        use crate::intercept::{Dispatch, Point};
        if self.chain.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, SeqCst);
        let mut d = Dispatch::new(Point::PoolSubmit, id);
        d.deadline = options.deadline;
        d.stamp = self.chain.stamp();
        self.chain.before(&d)?;
        Ok(Some(Admission {
            dispatch: d,
            started,
        }))
    }

    /// Runs `body` on this thread (caller-runs), through the chain's `PoolJob` hooks when
    /// there is a dispatch.
    pub(super) fn run_here(
        &self,
        dispatch: Option<Box<crate::intercept::Dispatch>>,
        body: impl super::job::Body,
    ) {
        let Some(d) = dispatch else {
            body.run(&self.stats);
            return;
        };
        if let Err(rejection) = self.chain.before(&d) {
            body.refuse(crate::error::RunError::from_rejection(rejection));
            return;
        }
        let started = Instant::now();
        let ended = body.run(&self.stats);
        self.chain.after(&d, ended, started.elapsed());
    }

    /// Gives a unit of capacity back and wakes a blocked submitter.
    pub(super) fn release(&self) {
        self.hot.load.fetch_sub(1, SeqCst);
        dekker_fence(); // pairs with the fence in `reserve`: see the blocked count or be seen
        if self.quiet.blocked.load(SeqCst) > 0 {
            drop(self.ctl.lock());
            self.room.notify_one();
        }
    }

    /// Queues `job`; hands it back if the pool had stopped taking work.
    pub(super) fn push(inner: &Arc<Inner>, mut job: Job, options: JobOptions) -> Result<(), Job> {
        if inner.phase() != RUNNING {
            return Err(job);
        }
        match &inner.queue {
            Queue::Stealing { injector, .. } => {
                let id = Inner::id(inner);
                let job = CURRENT.with(|c| match c.borrow().as_ref() {
                    Some(Current {
                        pool,
                        local: Some(local),
                        ..
                    }) if *pool == id => {
                        local.push(job);
                        None
                    }
                    _ => Some(job),
                });
                if let Some(job) = job {
                    injector.push(job);
                }
            }
            Queue::Ordered(q) => {
                // Read the clock (if the scheduler needs it) before taking the lock.
                let enqueued = job
                    .task
                    .header()
                    .enqueued
                    .or_else(|| inner.sched_clock.then(Instant::now))
                    .unwrap_or(inner.epoch);
                let mut q = q.lock();
                let seq = q.next_seq;
                q.next_seq += 1;
                q.scheduler.push(Queued {
                    meta: JobMeta {
                        seq,
                        priority: options.priority,
                        deadline: options.deadline,
                        enqueued,
                    },
                    job,
                });
            }
        }
        inner.hot.pushes.fetch_add(1, SeqCst);
        Inner::wake_worker(inner);
        if inner.phase() != RUNNING {
            // Shutdown began while we pushed. A worker checks for work under the control lock
            // before it exits, so if one is still alive it will see this job; if none is, no
            // one will: answer the queue's jobs here (Cancelled), not never.
            let none_alive = inner.ctl.lock().alive == 0;
            if none_alive {
                inner.cancel_queued();
            }
        }
        Ok(())
    }

    /// After a push: wake an idle worker, or start one if none is idle and there is room.
    pub(super) fn wake_worker(inner: &Arc<Inner>) {
        // Pairs with the fence in `idle_wait`: a worker registers idle before it looks at
        // `pushes`, we moved `pushes` before we look at `idle`.
        dekker_fence();
        if inner.quiet.idle.load(SeqCst) == 0 && inner.min == inner.max {
            return; // every worker is busy and will look for work before it sleeps
        }
        let mut ctl = inner.ctl.lock();
        if inner.quiet.idle.load(SeqCst) > 0 {
            drop(ctl);
            inner.work.notify_one();
        } else if ctl.alive < inner.max
            && inner.phase() == RUNNING
            && let Err(e) = Inner::start_worker(inner, &mut ctl)
        {
            // The busy workers will still run the job; the pool just does not grow.
            tracing::warn!(error = %e, "posa pool: could not start another worker");
        }
    }

    pub(super) fn wake_one_idle(&self) {
        dekker_fence(); // pairs with the fence in `idle_wait`
        if self.quiet.idle.load(SeqCst) > 0 {
            drop(self.ctl.lock());
            self.work.notify_one();
        }
    }
}
