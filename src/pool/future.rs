//! Futures on the pool: a waker that re-queues the future when woken.
//!
//! # Algorithm and invariants
//! One state word per future: `IDLE` (waiting for a wake-up), `SCHEDULED` (queued exactly
//! once), `RUNNING` (being polled), `NOTIFIED` (woken while being polled), `DONE`.
//! - A wake-up moves `IDLE -> SCHEDULED` and queues the future; `RUNNING -> NOTIFIED` and
//!   leaves the re-queueing to the poller; any other state is already covered. So a future is in
//!   the queue at most once, and a wake-up during a poll is never lost: the poller, finding
//!   `NOTIFIED` instead of `RUNNING` after `Pending`, queues it again.
//! - The future and its completer sit in one slot that the poll, cancellation and drop take;
//!   whoever takes them answers the token and gives back the future's unit of capacity, once.
#![allow(
    clippy::disallowed_types,
    reason = "std::task::Wake is implemented on std's Arc, so the task a Waker holds is one; the state inside it is the shim's atomics, which the loom models of spawn_future check"
)]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::act::{self, Completer};
use crate::intercept::Ended;
use crate::sync::atomic::{AtomicU8, Ordering::SeqCst};
use crate::sync::{Arc, Mutex};

use super::job::{Body, Header};
use super::{Inner, Job, JobOptions, JobToken, stats::Stats};
use crate::error::RunError;

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

type Slot<T> = Option<(
    Pin<Box<dyn Future<Output = T> + Send>>,
    Completer<T, RunError>,
)>;

struct FutureTask<T> {
    state: AtomicU8,
    slot: Mutex<Slot<T>>,
    pool: Arc<Inner>,
    options: JobOptions,
    /// The future's `PoolJob` dispatch when the pool has interceptors: `before` at its first
    /// poll, `after` when it ends, with the time spent polling it (not the time it waited).
    intercept: Option<Mutex<Intercepted>>,
}

struct Intercepted {
    dispatch: crate::intercept::Dispatch,
    began: bool,
    polling: std::time::Duration,
}

/// Spawns `future` (its unit of capacity already reserved) and queues its first poll.
pub(super) fn spawn<F>(
    pool: &Arc<Inner>,
    options: JobOptions,
    dispatch: Option<crate::intercept::Dispatch>,
    future: F,
) -> JobToken<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (completer, token) = act::detaching_pair();
    let task = std::sync::Arc::new(FutureTask {
        state: AtomicU8::new(SCHEDULED),
        slot: Mutex::new(Some((Box::pin(future), completer))),
        pool: Arc::clone(pool),
        options,
        intercept: dispatch.map(|dispatch| {
            Mutex::new(Intercepted {
                dispatch,
                began: false,
                polling: std::time::Duration::ZERO,
            })
        }),
    });
    schedule(task);
    token
}

/// Queues a poll of `task` (its state is `SCHEDULED`); cancels it if the pool stopped.
fn schedule<T: Send + 'static>(task: std::sync::Arc<FutureTask<T>>) {
    let pool = Arc::clone(&task.pool);
    let options = task.options;
    let header = Header {
        enqueued: pool.stats.timing.then(Instant::now),
        holds_load: false,
        dispatch: None, // a future's polls are not separate dispatches
    };
    let job = Job::new(header, PollTask(task));
    if let Err(job) = Inner::push(&pool, job, options) {
        job.task.cancel();
        pool.stats.cancelled.incr();
    }
}

impl<T> FutureTask<T> {
    /// The chain's `before`, at the first poll only (called outside the lock: a future is
    /// polled by one thread at a time). `Err`: refused, do not poll.
    fn begin(&self) -> Result<(), crate::intercept::Rejection> {
        let Some(i) = &self.intercept else {
            return Ok(());
        };
        let (began, dispatch) = {
            let i = i.lock();
            (i.began, i.dispatch)
        };
        if !began {
            self.pool.chain.before(&dispatch)?;
            i.lock().began = true;
        }
        Ok(())
    }

    /// Adds a poll's time.
    fn polled(&self, took: std::time::Duration) {
        if let Some(i) = &self.intercept {
            i.lock().polling += took;
        }
    }

    /// The chain's `after`, once, if `before` ran.
    fn end(&self, ended: Ended) {
        if let Some(i) = &self.intercept {
            let ending = {
                let mut i = i.lock();
                std::mem::take(&mut i.began).then_some((i.dispatch, i.polling))
            };
            // Outside the lock: interceptors are user code.
            if let Some((dispatch, polling)) = ending {
                self.pool.chain.after(&dispatch, ended, polling);
            }
        }
    }

    /// Takes the future and completer out of the slot; the caller answers the token.
    fn finish(&self) -> Option<Completer<T, RunError>> {
        let taken = self.slot.lock().take();
        self.state.store(DONE, SeqCst);
        taken.map(|(future, completer)| {
            drop(future);
            self.pool.release();
            completer
        })
    }
}

impl<T> Drop for FutureTask<T> {
    /// The last waker went away while the future was still waiting: nobody can wake it again.
    /// Its token sees `Abandoned` (the completer drops); give its capacity back.
    fn drop(&mut self) {
        if self.slot.get_mut().take().is_some() {
            self.pool.release();
        }
    }
}

impl<T: Send + 'static> Wake for FutureTask<T> {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let mut state = self.state.load(SeqCst);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return, // queued, already notified, or done
            };
            match self.state.compare_exchange(state, next, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state == IDLE {
            schedule(std::sync::Arc::clone(self));
        }
    }
}

/// One queued poll of a future.
struct PollTask<T>(std::sync::Arc<FutureTask<T>>);

impl<T: Send + 'static> Body for PollTask<T> {
    fn run(self, stats: &Stats) -> Ended {
        let task = self.0;
        if let Err(rejection) = task.begin() {
            if let Some(completer) = task.finish() {
                completer.complete(Err(RunError::from_rejection(rejection)));
            }
            return Ended::Rejected;
        }
        task.state.store(RUNNING, SeqCst);
        let waker = Waker::from(std::sync::Arc::clone(&task));
        let started = task.intercept.as_ref().map(|_| Instant::now());
        let polled = {
            let mut slot = task.slot.lock();
            let Some((future, _)) = slot.as_mut() else {
                return Ended::Ok; // finished or cancelled elsewhere
            };
            catch_unwind(AssertUnwindSafe(|| {
                future.as_mut().poll(&mut Context::from_waker(&waker))
            }))
        };
        if let Some(started) = started {
            task.polled(started.elapsed());
        }
        match polled {
            Ok(Poll::Ready(value)) => {
                task.end(Ended::Ok);
                if let Some(completer) = task.finish() {
                    stats.completed.incr();
                    completer.complete(Ok(value));
                }
                Ended::Ok
            }
            Err(panic) => {
                task.end(Ended::Panicked);
                if let Some(completer) = task.finish() {
                    stats.panicked.incr();
                    let msg = crate::panic_message(&*panic);
                    completer.complete(Err(RunError::Panicked(msg)));
                }
                Ended::Panicked
            }
            Ok(Poll::Pending) => {
                if task
                    .state
                    .compare_exchange(RUNNING, IDLE, SeqCst, SeqCst)
                    .is_err()
                {
                    // Woken while it was being polled: poll it again, behind queued work.
                    task.state.store(SCHEDULED, SeqCst);
                    schedule(task);
                }
                Ended::Ok
            }
        }
    }

    fn cancel(self) {
        self.0.end(Ended::Error);
        if let Some(completer) = self.0.finish() {
            completer.cancel(());
        }
    }

    fn refuse(self, error: RunError) {
        self.0.end(Ended::Rejected);
        if let Some(completer) = self.0.finish() {
            completer.complete(Err(error));
        }
    }

    fn cancel_requested(&self) -> bool {
        self.0
            .slot
            .lock()
            .as_ref()
            .is_some_and(|(_, completer)| completer.is_cancelled())
    }
}
