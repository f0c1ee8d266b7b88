//! Thread Pool with pluggable schedulers.
//!
//! A [`ThreadPool`] runs submitted closures on a fixed set of worker threads and answers each
//! with an [`act`](crate::act) token. Which queued job runs next is a [`Scheduler`] strategy:
//! [`Fifo`], [`Lifo`], [`Priority`] (strict, with optional aging) or [`Deadline`] (earliest
//! deadline first). The queue is bounded; when it is full, [`WhenFull`] decides: block the
//! submitter, reject (the job comes back in the error), or run the job on the caller's thread.
//!
//! # Algorithm and invariants
//! - The queue is the scheduler inside a [`Monitor`] with two [`Condition`]s (not empty, not
//!   full), the crate's one bounded-queue mechanism. Workers wait on "not empty", submitters on
//!   "not full"; each hand-off notifies one waiter.
//! - A job runs at most once and its token is answered exactly once: `Completed` with the value,
//!   `Completed(Err(JobError::Panicked))` if it panicked (the worker survives, so the pool keeps
//!   its size), `Cancelled` if the pool was shut down `Now` before it ran or its token asked for
//!   cancellation before a worker picked it up.
//! - Shutdown is graceful (queued jobs still run) or `Now` (queued jobs are cancelled); either
//!   way no job is lost and every worker is joined. `Drop` shuts down `Now`, joins, and logs
//!   while a running job keeps it waiting rather than hanging silently.
//!
//! ```
//! use posa::pool::{JobOptions, Priority, ThreadPool};
//!
//! let pool = ThreadPool::builder().threads(2).scheduler(Priority::new(4, None)).build()?;
//! let answer = pool.submit(|| 6 * 7).unwrap();
//! let urgent = pool.submit_with(JobOptions::priority(3), || "urgent").unwrap();
//! assert_eq!(answer.wait().into_result().unwrap(), 42);
//! assert_eq!(urgent.wait().into_result().unwrap(), "urgent");
//! pool.shutdown(posa::pool::Shutdown::Graceful);
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod scheduler;

pub use scheduler::{Deadline, Fifo, JobMeta, Lifo, Priority, Queued, Scheduler};

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::act::{self, Completer, Token};
use crate::monitor::{Condition, Monitor};
use crate::sync::Arc;
use crate::sync::thread::{self, JoinHandle};

/// Why a job produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The job panicked; the payload's message.
    Panicked(String),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked(msg) => write!(f, "job panicked: {msg}"),
        }
    }
}

impl std::error::Error for JobError {}

/// The token a submitted job answers through.
pub type JobToken<T> = Token<T, JobError>;

/// What a full queue does to a submitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room.
    #[default]
    Block,
    /// Refuse: the job comes back in [`SubmitError::Full`].
    Reject,
    /// Run the job on the submitting thread (natural backpressure).
    CallerRuns,
}

/// A job that was not queued; it comes back unrun.
pub enum SubmitError<F> {
    /// The queue was full and the policy is [`WhenFull::Reject`].
    Full(F),
    /// The pool is shutting down.
    ShutDown(F),
}

impl<F> SubmitError<F> {
    /// The job that was not queued.
    pub fn into_inner(self) -> F {
        match self {
            SubmitError::Full(f) | SubmitError::ShutDown(f) => f,
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Full(_) => "Full(..)",
            SubmitError::ShutDown(_) => "ShutDown(..)",
        })
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Full(_) => "pool queue is full",
            SubmitError::ShutDown(_) => "pool is shutting down",
        })
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// How to shut a pool down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop taking jobs; run everything queued; then stop.
    Graceful,
    /// Stop taking jobs; cancel everything queued (tokens see `Cancelled`); finish running jobs.
    Now,
}

/// Scheduling hints for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Priority for [`Priority`] (higher first).
    pub priority: u8,
    /// Deadline for [`Deadline`] (earlier first).
    pub deadline: Option<Instant>,
}

impl JobOptions {
    /// Just a priority.
    pub fn priority(priority: u8) -> Self {
        Self {
            priority,
            deadline: None,
        }
    }

    /// Just a deadline.
    pub fn deadline(deadline: Instant) -> Self {
        Self {
            priority: 0,
            deadline: Some(deadline),
        }
    }
}

trait Task: Send {
    fn run(self: Box<Self>);
    fn cancel(self: Box<Self>);
    fn cancel_requested(&self) -> bool;
}

struct TaskImpl<F, T> {
    f: F,
    completer: Completer<T, JobError>,
}

impl<F: FnOnce() -> T + Send, T: Send> Task for TaskImpl<F, T> {
    fn run(self: Box<Self>) {
        let TaskImpl { f, completer } = *self;
        let result = catch_unwind(AssertUnwindSafe(f))
            .map_err(|p| JobError::Panicked(crate::panic_message(&*p)));
        completer.complete(result);
    }

    fn cancel(self: Box<Self>) {
        self.completer.cancel(());
    }

    fn cancel_requested(&self) -> bool {
        self.completer.is_cancelled()
    }
}

/// A queued job, opaque: what a [`Scheduler`] of this pool holds.
pub struct Job(Box<dyn Task>);

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopping,
}

struct State {
    scheduler: Box<dyn Scheduler<Job>>,
    capacity: usize,
    next_seq: u64,
    phase: Phase,
    alive: usize,
}

struct Inner {
    state: Monitor<State>,
    not_empty: Condition,
    not_full: Condition,
    exited: Condition,
    when_full: WhenFull,
}

/// Configures a [`ThreadPool`].
pub struct Builder {
    name: String,
    threads: usize,
    capacity: usize,
    when_full: WhenFull,
    scheduler: Box<dyn Scheduler<Job>>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            name: "posa-pool".to_owned(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            capacity: 1024,
            when_full: WhenFull::Block,
            scheduler: Box::new(Fifo::default()),
        }
    }
}

impl Builder {
    /// Thread name prefix (default `posa-pool`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Worker threads (at least 1; default: available parallelism).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Jobs queued at most (at least 1; default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What a full queue does (default [`WhenFull::Block`]).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// The scheduling strategy (default [`Fifo`]).
    pub fn scheduler(mut self, scheduler: impl Scheduler<Job> + 'static) -> Self {
        self.scheduler = Box::new(scheduler);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> io::Result<ThreadPool> {
        let inner = Arc::new(Inner {
            state: Monitor::new(State {
                scheduler: self.scheduler,
                capacity: self.capacity,
                next_seq: 0,
                phase: Phase::Running,
                alive: self.threads,
            }),
            not_empty: Condition::new(),
            not_full: Condition::new(),
            exited: Condition::new(),
            when_full: self.when_full,
        });
        let mut workers = Vec::with_capacity(self.threads);
        for i in 0..self.threads {
            let inner2 = Arc::clone(&inner);
            let spawned = thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || worker(&inner2));
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    // Do not leave the started workers behind.
                    inner.state.with(|s| s.alive -= self.threads - i);
                    let mut pool = ThreadPool { inner, workers };
                    pool.stop(Shutdown::Now);
                    return Err(e);
                }
            }
        }
        Ok(ThreadPool { inner, workers })
    }
}

fn worker(inner: &Inner) {
    loop {
        let job = {
            let mut s = inner.state.lock();
            s.wait_on_while(&inner.not_empty, |s| {
                s.scheduler.is_empty() && s.phase == Phase::Running
            });
            s.scheduler.pop(Instant::now())
        };
        let Some(job) = job else {
            break; // draining or stopping, and nothing left
        };
        inner.not_full.notify_one();
        let task = job.job.0;
        if task.cancel_requested() {
            task.cancel(); // nobody waits for it any more: do not run it
        } else {
            task.run();
        }
    }
    inner.state.with(|s| s.alive -= 1);
    inner.exited.notify_all();
}

/// A pool of worker threads with a pluggable scheduler. See the [module docs](self).
pub struct ThreadPool {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A FIFO pool of `threads` workers with a queue of 1024 that blocks submitters when full.
    pub fn new(threads: usize) -> io::Result<Self> {
        Builder::default().threads(threads).build()
    }

    /// A builder for every other setting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Submits `f` with default options.
    pub fn submit<F, T>(&self, f: F) -> Result<JobToken<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_with(JobOptions::default(), f)
    }

    /// Submits `f` with a priority and/or deadline for the scheduler.
    pub fn submit_with<F, T>(
        &self,
        options: JobOptions,
        f: F,
    ) -> Result<JobToken<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut s = self.inner.state.lock();
        loop {
            if s.phase != Phase::Running {
                return Err(SubmitError::ShutDown(f));
            }
            if s.scheduler.len() < s.capacity {
                break;
            }
            match self.inner.when_full {
                WhenFull::Reject => return Err(SubmitError::Full(f)),
                WhenFull::CallerRuns => {
                    drop(s);
                    let (completer, token) = act::pair();
                    Box::new(TaskImpl { f, completer }).run();
                    return Ok(token);
                }
                WhenFull::Block => s.wait_on_while(&self.inner.not_full, |s| {
                    s.phase == Phase::Running && s.scheduler.len() >= s.capacity
                }),
            }
        }
        let (completer, token) = act::pair();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.scheduler.push(Queued {
            meta: JobMeta {
                seq,
                priority: options.priority,
                deadline: options.deadline,
                enqueued: Instant::now(),
            },
            job: Job(Box::new(TaskImpl { f, completer })),
        });
        drop(s);
        self.inner.not_empty.notify_one();
        Ok(token)
    }

    /// Jobs queued and not yet started.
    pub fn queued(&self) -> usize {
        self.inner.state.lock().scheduler.len()
    }

    /// Shuts down and joins every worker; returns how many queued jobs were cancelled.
    pub fn shutdown(mut self, mode: Shutdown) -> usize {
        self.stop(mode)
    }

    /// Begins shutdown from any thread without waiting: intake stops at once (later submits get
    /// [`SubmitError::ShutDown`]); with [`Shutdown::Now`] queued jobs are cancelled now. Returns
    /// how many were cancelled. Dropping or [`shutdown`](Self::shutdown) then joins the workers.
    pub fn close(&self, mode: Shutdown) -> usize {
        let cancelled: Vec<Job> = {
            let mut s = self.inner.state.lock();
            match mode {
                Shutdown::Graceful => {
                    if s.phase == Phase::Running {
                        s.phase = Phase::Draining;
                    }
                    Vec::new()
                }
                Shutdown::Now => {
                    s.phase = Phase::Stopping;
                    let now = Instant::now();
                    std::iter::from_fn(|| s.scheduler.pop(now).map(|q| q.job)).collect()
                }
            }
        };
        self.inner.not_empty.notify_all();
        self.inner.not_full.notify_all();
        let n = cancelled.len();
        for job in cancelled {
            job.0.cancel();
        }
        n
    }

    fn stop(&mut self, mode: Shutdown) -> usize {
        let n = self.close(mode);
        // Wait for the workers; say so while a long-running job keeps us waiting.
        loop {
            let mut s = self.inner.state.lock();
            let waited = s.wait_on_while_until(
                &self.inner.exited,
                crate::monitor::deadline_after(Duration::from_secs(5)),
                |s| s.alive > 0,
            );
            if waited.is_ok() {
                break;
            }
            tracing::warn!(
                running = s.alive,
                "posa pool: still waiting for running jobs to finish before the pool can stop"
            );
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        n
    }
}

impl Drop for ThreadPool {
    /// Cancels what is queued, waits for running jobs (logging while it waits), joins workers.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop(Shutdown::Now);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers.len())
            .field("queued", &self.queued())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::Outcome;
    use std::sync::mpsc;

    /// A pool whose single worker is parked on a gate, so queued order can be observed.
    /// (Dropping the gate job's token would cancel it, so the token is handed back too.)
    fn gated_with(builder: Builder) -> (ThreadPool, mpsc::Sender<()>, JobToken<()>) {
        let pool = builder.threads(1).build().unwrap();
        let (open, gate) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let held = pool
            .submit(move || {
                started_tx.send(()).unwrap();
                gate.recv().unwrap();
            })
            .unwrap();
        started.recv().unwrap(); // the worker is busy: what follows queues up
        (pool, open, held)
    }

    fn gated(
        scheduler: impl Scheduler<Job> + 'static,
    ) -> (ThreadPool, mpsc::Sender<()>, JobToken<()>) {
        gated_with(ThreadPool::builder().scheduler(scheduler))
    }

    fn order_of(
        pool: ThreadPool,
        gate: mpsc::Sender<()>,
        jobs: Vec<(JobOptions, u32)>,
    ) -> Vec<u32> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tokens: Vec<_> = jobs
            .into_iter()
            .map(|(opts, n)| {
                let log = std::sync::Arc::clone(&log);
                pool.submit_with(opts, move || log.lock().unwrap().push(n))
                    .unwrap()
            })
            .collect();
        gate.send(()).unwrap();
        for t in tokens {
            t.wait().into_result().unwrap();
        }
        pool.shutdown(Shutdown::Graceful);
        std::sync::Arc::try_unwrap(log)
            .unwrap()
            .into_inner()
            .unwrap()
    }

    #[test]
    fn fifo_lifo_priority_and_deadline_orders() {
        let d = JobOptions::default();
        let (p, g, _held) = gated(Fifo::default());
        assert_eq!(order_of(p, g, vec![(d, 1), (d, 2), (d, 3)]), vec![1, 2, 3]);
        let (p, g, _held) = gated(Lifo::default());
        assert_eq!(order_of(p, g, vec![(d, 1), (d, 2), (d, 3)]), vec![3, 2, 1]);
        let (p, g, _held) = gated(Priority::new(4, None));
        let pr = JobOptions::priority;
        assert_eq!(
            order_of(p, g, vec![(pr(0), 1), (pr(3), 2), (pr(1), 3), (pr(3), 4)]),
            vec![2, 4, 3, 1]
        );
        let (p, g, _held) = gated(Deadline::default());
        let t0 = Instant::now() + Duration::from_secs(60);
        let dl = |ms| JobOptions::deadline(t0 + Duration::from_millis(ms));
        assert_eq!(
            order_of(p, g, vec![(d, 1), (dl(30), 2), (dl(10), 3), (dl(10), 4)]),
            vec![3, 4, 2, 1]
        );
    }

    #[test]
    fn panicking_job_answers_with_an_error_and_the_worker_survives() {
        let pool = ThreadPool::new(1).unwrap();
        let bad = pool.submit(|| -> u8 { panic!("job failed") }).unwrap();
        assert_eq!(
            bad.wait(),
            Outcome::Completed(Err(JobError::Panicked("job failed".into())))
        );
        assert_eq!(pool.submit(|| 7).unwrap().wait().into_result().unwrap(), 7);
    }

    #[test]
    fn rejection_policies() {
        let (pool, gate, _held) = gated_with(
            ThreadPool::builder()
                .capacity(1)
                .when_full(WhenFull::Reject),
        );
        let queued = pool.submit(|| 1).unwrap();
        match pool.submit(|| 2) {
            Err(SubmitError::Full(f)) => assert_eq!(f(), 2, "the job comes back"),
            other => panic!("expected Full, got {other:?}"),
        }
        gate.send(()).unwrap();
        assert_eq!(queued.wait().into_result().unwrap(), 1);
        drop(pool);

        let (pool, gate, _held) = gated_with(
            ThreadPool::builder()
                .capacity(1)
                .when_full(WhenFull::CallerRuns),
        );
        let _queued = pool.submit(|| ()).unwrap();
        let here = std::thread::current().id();
        let ran_on = pool.submit(move || std::thread::current().id()).unwrap();
        assert_eq!(
            ran_on.wait().into_result().unwrap(),
            here,
            "ran on the caller"
        );
        gate.send(()).unwrap();
    }

    #[test]
    fn shutdown_now_cancels_every_queued_job() {
        let (pool, gate, _held) = gated(Fifo::default());
        let queued: Vec<_> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
        let stopper = std::thread::spawn(move || pool.shutdown(Shutdown::Now));
        // The only worker is held at the gate, so no queued job can start: all are cancelled.
        for t in queued {
            assert_eq!(t.wait(), Outcome::Cancelled(()));
        }
        gate.send(()).unwrap();
        assert_eq!(stopper.join().unwrap(), 3);
    }

    #[test]
    fn graceful_shutdown_runs_what_was_queued() {
        let (pool, gate, _held) = gated(Fifo::default());
        let queued: Vec<_> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
        gate.send(()).unwrap();
        assert_eq!(pool.shutdown(Shutdown::Graceful), 0);
        let done: Vec<_> = queued
            .into_iter()
            .map(|t| t.wait().into_result().unwrap())
            .collect();
        assert_eq!(done, vec![0, 1, 2]);
    }

    #[test]
    fn submit_after_shutdown_hands_the_job_back_and_drop_joins() {
        let pool = ThreadPool::new(2).unwrap();
        let inner = Arc::clone(&pool.inner);
        drop(pool);
        assert_eq!(inner.state.lock().alive, 0, "drop joined every worker");
        let pool = ThreadPool::new(1).unwrap();
        pool.inner.state.with(|s| s.phase = Phase::Draining);
        assert!(matches!(pool.submit(|| ()), Err(SubmitError::ShutDown(_))));
    }

    #[test]
    fn a_cancelled_token_skips_its_queued_job() {
        let (pool, gate, _held) = gated(Fifo::default());
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = std::sync::Arc::clone(&ran);
        let token = pool
            .submit(move || r.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap();
        token.cancel();
        gate.send(()).unwrap();
        assert_eq!(token.wait(), Outcome::Cancelled(()));
        pool.shutdown(Shutdown::Graceful);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
