//! The two queue kinds and how a worker finds its next job.
//!
//! - **Work stealing** (FIFO): jobs submitted from outside go to a shared injector, jobs
//!   submitted by a job go to its worker's own deque. A worker takes from its deque, then one
//!   job from the injector, then steals half of another worker's deque. Every
//!   [`GLOBAL_CHECK_INTERVAL`](super::GLOBAL_CHECK_INTERVAL)th job it looks at the injector
//!   first, which bounds how long outside work waits behind jobs that re-submit each other.
//! - **Ordered**: one [`Scheduler`] shared by all workers under a lock, so every pop takes the
//!   globally best job (priority, deadline, LIFO). Ordered pools never steal, so a priority can
//!   never be inverted by a thief.
//!
//! # Invariants
//! - A job is in exactly one place: the injector, one deque, or the ordered queue; a pop or a
//!   successful steal moves it out, so it is taken at most once.
//! - An ordered scheduler that ages jobs reads the clock outside the queue lock, and only
//!   when it uses time ([`Scheduler::uses_time`]).

use std::time::Instant;

use super::deque::{Injector, Steal, Stealer, Worker};
use super::worker::CURRENT;
use super::{GLOBAL_CHECK_INTERVAL, Inner, Job, Scheduler};
use crate::sync::Mutex;
use crate::sync::atomic::Ordering::SeqCst;

// One per pool, built once and never moved: the injector's padding costs nothing here.
#[allow(clippy::large_enum_variant)]
pub(super) enum Queue {
    Stealing {
        injector: Injector<Job>,
        stealers: Box<[Stealer<Job>]>,
        /// Each slot's own deque while no thread holds it.
        locals: Box<[Mutex<Option<Worker<Job>>>]>,
    },
    Ordered(Mutex<Ordered>),
}

pub(super) struct Ordered {
    pub(super) scheduler: Box<dyn Scheduler<Job>>,
    pub(super) next_seq: u64,
}

impl Inner {
    /// Takes the next job for the worker in `slot`.
    pub(super) fn find(&self, slot: usize, tick: u32) -> Option<Job> {
        match &self.queue {
            Queue::Ordered(q) => self.pop_ordered(q),
            Queue::Stealing {
                injector, stealers, ..
            } => CURRENT.with(|c| {
                let c = c.borrow();
                let local = c.as_ref().and_then(|c| c.local.as_ref())?;
                // One job at a time from the injector (as rayon does), never a batch into this
                // deque: outside jobs then never sit behind the injector's newer ones, so the
                // periodic look at the injector below cannot reorder them. The deque holds
                // only jobs submitted by jobs (and what was stolen from another deque).
                let from_injector = || retry(|| injector.steal());
                if tick.is_multiple_of(GLOBAL_CHECK_INTERVAL)
                    && let Some(job) = from_injector()
                {
                    return Some(job);
                }
                let job = local.pop().or_else(from_injector).or_else(|| {
                    let n = stealers.len();
                    (1..n)
                        .find_map(|i| retry(|| stealers[(slot + i) % n].steal_batch_and_pop(local)))
                })?;
                // Work left in this deque while others sleep: wake one to steal it. (A cheap
                // hint, not a guarantee: this worker runs its own deque in any case.)
                if self.quiet.idle.load(SeqCst) > 0 && !local.is_empty() {
                    self.hot.pushes.fetch_add(1, SeqCst);
                    self.wake_one_idle();
                }
                Some(job)
            }),
        }
    }

    /// The ordered scheduler's best job now.
    fn pop_ordered(&self, q: &Mutex<Ordered>) -> Option<Job> {
        let now = self.sched_now();
        q.lock().scheduler.pop(now).map(|q| q.job)
    }

    /// `now` for the ordered scheduler: the clock only if it uses time (read outside its lock).
    pub(super) fn sched_now(&self) -> Instant {
        if self.sched_clock {
            Instant::now()
        } else {
            self.epoch
        }
    }

    /// `true` if some queue holds a job.
    pub(super) fn has_work(&self) -> bool {
        match &self.queue {
            Queue::Ordered(q) => !q.lock().scheduler.is_empty(),
            Queue::Stealing {
                injector, stealers, ..
            } => !injector.is_empty() || stealers.iter().any(|s| !s.is_empty()),
        }
    }

    /// Jobs queued now.
    pub(super) fn queued(&self) -> usize {
        match &self.queue {
            Queue::Ordered(q) => q.lock().scheduler.len(),
            Queue::Stealing {
                injector, stealers, ..
            } => injector.len() + stealers.iter().map(Stealer::len).sum::<usize>(),
        }
    }

    /// Takes any queued job from any thread (shutdown `Now`).
    pub(super) fn take_any(&self) -> Option<Job> {
        match &self.queue {
            Queue::Ordered(q) => self.pop_ordered(q),
            Queue::Stealing {
                injector, stealers, ..
            } => retry(|| injector.steal())
                .or_else(|| stealers.iter().find_map(|s| retry(|| s.steal()))),
        }
    }
}

/// Retries a steal while it asks to.
fn retry(mut steal: impl FnMut() -> Steal<Job>) -> Option<Job> {
    loop {
        match steal() {
            Steal::Success(job) => return Some(job),
            Steal::Empty => return None,
            Steal::Retry => {}
        }
    }
}
