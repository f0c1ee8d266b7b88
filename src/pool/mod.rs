//! Thread Pool with pluggable schedulers.
//!
//! A [`ThreadPool`] runs submitted closures (and futures, [`ThreadPool::spawn_future`]) on a set of
//! worker threads that grows when work waits and shrinks after a keep-alive, and answers each
//! with an [`act`](crate::act) token. Which queued job runs next is a strategy:
//!
//! - **work-stealing FIFO** (the default, [`Builder::work_stealing`]): jobs submitted from outside
//!   go to a shared injector queue, jobs submitted by a job go to its worker's own deque; an idle
//!   worker takes from its deque, then a batch from the injector, then steals half of another
//!   worker's deque (crossbeam-deque). Every [`GLOBAL_CHECK_INTERVAL`]th job a worker looks at
//!   the injector first, so jobs that keep re-submitting each other cannot starve work from
//!   outside for more than that many jobs.
//! - an **ordered** [`Scheduler`] ([`Builder::scheduler`]): [`Fifo`], [`Lifo`], [`Priority`]
//!   (strict, with optional aging) or [`Deadline`] (earliest deadline first), one queue shared by
//!   all workers under a lock, so every worker always takes the globally best job. That is how
//!   stealing never inverts priorities here (rayon#957): ordered pools do not steal, and the
//!   stealing pool has no priorities to invert. There is no "run next" slot in either.
//!
//! The queue is bounded; when it is full, [`WhenFull`] decides: block the submitter, reject (the
//! job comes back in the error), or run the job on the caller's thread. A worker of the pool
//! never blocks on its own pool: when the queue is full it runs its new job inline instead,
//! so workers cannot all wait for room that only workers can make.
//!
//! # Algorithm and invariants
//! - No job sleeps in a queue while a worker sleeps: a worker reads the push count before it
//!   looks for work, and when it found nothing it registers as idle and re-reads the count
//!   under the control lock; a submitter pushes, bumps the count, then reads the idle count and
//!   wakes a worker under the same lock. Both pairs are `SeqCst` (Dekker), so either the worker
//!   sees the push or the submitter sees the worker.
//! - Submit racing shutdown: a submitter checks the phase before it pushes (refused: the job
//!   comes back) and again after; a worker exits only when, under the control lock, the queue
//!   is empty. A submitter that finds shutdown begun after its push and no worker alive cancels
//!   what is queued itself. Each job is run, cancelled or refused; none is stranded.
//! - `load` counts queued jobs plus live futures against the capacity; a blocked submitter waits
//!   for it under the same idle/wake protocol (on the "room" condition).
//! - A job runs at most once and its token is answered exactly once: `Completed` with the
//!   value, `Completed(Err(RunError::Panicked))` if it panicked (the worker survives, so the
//!   pool keeps its size), `Cancelled` if the pool was shut down `Now` before it ran or its token
//!   asked for cancellation before a worker picked it up.
//! - Shutdown is graceful (queued jobs still run) or `Now` (queued jobs are cancelled, from every
//!   deque); either way no job is lost and every worker is joined. `Drop` shuts down `Now`,
//!   joins, and logs while a running job keeps it waiting rather than hanging silently.
//! - Statistics are per-thread ([`tss`](crate::tss)) counters and HDR histograms: a worker
//!   never writes a cache line another worker writes.
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

mod deque;
mod future;
pub mod scheduler;
mod stats;

pub use scheduler::{Deadline, Fifo, JobMeta, Lifo, Priority, Queued, Scheduler};
pub use stats::{Latency, PoolStats, Running};

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::act::{self, Completer, Token};
use crate::error::{Refused, RunError};
use crate::monitor::{Condition, Monitor};
use crate::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::SeqCst};
use crate::sync::dekker_fence;
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Mutex};
use crossbeam_utils::CachePadded;

use deque::{Injector, Steal, Stealer, Worker};

/// A work-stealing worker looks at the shared injector before its own deque once every this
/// many jobs (Go's and tokio's choice), the bound on how long work from outside can wait behind
/// jobs that keep re-submitting each other.
pub const GLOBAL_CHECK_INTERVAL: u32 = 61;

/// The token a submitted job answers through.
pub type JobToken<T> = Token<T, RunError>;

/// What a full queue does to a submitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room.
    #[default]
    Block,
    /// Refuse: the job comes back in [`Refused::Full`].
    Reject,
    /// Run the job on the submitting thread (natural backpressure).
    CallerRuns,
}

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
    /// Runs the task; counts it in `stats` *before* answering its token, so whoever waits on
    /// the token sees the count.
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Outcome;
    fn cancel(self: Box<Self>);
    /// Answers the token with `error` without running (an interceptor refused it).
    fn refuse(self: Box<Self>, error: RunError);
    fn cancel_requested(&self) -> bool;
}

struct TaskImpl<F, T> {
    f: F,
    completer: Completer<T, RunError>,
}

impl<F: FnOnce() -> T + Send, T: Send> Task for TaskImpl<F, T> {
    fn run(self: Box<Self>, stats: &stats::Stats) -> crate::intercept::Outcome {
        let TaskImpl { f, completer } = *self;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => {
                stats.completed.incr();
                completer.complete(Ok(value));
                crate::intercept::Outcome::Ok
            }
            Err(p) => {
                stats.panicked.incr();
                completer.complete(Err(RunError::Panicked(crate::panic_message(&*p))));
                crate::intercept::Outcome::Panicked
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

/// A queued job, opaque: what a [`Scheduler`] of this pool holds.
pub struct Job {
    task: Box<dyn Task>,
    /// When it was queued (for the queue-wait histogram), if the pool times jobs.
    enqueued: Option<Instant>,
    /// A closure job holds one unit of `load` until it is taken off the queue; a future's
    /// runnable does not (the future holds one for its whole life).
    holds_load: bool,
    /// What interceptors see (only filled in when the pool has a chain).
    dispatch: Option<Box<crate::intercept::Dispatch>>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

// One per pool, built once and never moved: the injector's padding costs nothing here.
#[allow(clippy::large_enum_variant)]
enum Queue {
    Stealing {
        injector: Injector<Job>,
        stealers: Box<[Stealer<Job>]>,
        /// Each slot's own deque while no thread holds it.
        locals: Box<[Mutex<Option<Worker<Job>>>]>,
    },
    Ordered(Mutex<Ordered>),
}

struct Ordered {
    scheduler: Box<dyn Scheduler<Job>>,
    next_seq: u64,
}

struct Ctl {
    alive: usize,
    /// Worker slots no thread holds.
    free: Vec<usize>,
    /// The last thread that held each slot.
    handles: Vec<Option<JoinHandle<()>>>,
}

struct Hot {
    /// Queued jobs plus live futures, against `capacity`.
    load: AtomicUsize,
    /// Pushes so far (wrapping): what an idle worker waits to see move.
    pushes: AtomicUsize,
}

struct Quiet {
    phase: AtomicU8,
    /// Workers registered idle (changed under `ctl`).
    idle: AtomicUsize,
    /// Submitters waiting for room (changed under `ctl`).
    blocked: AtomicUsize,
}

struct Inner {
    queue: Queue,
    name: String,
    capacity: usize,
    when_full: WhenFull,
    min: usize,
    max: usize,
    keep_alive: Duration,
    stall: Option<Duration>,
    /// Written for every job by submitters and workers: one cache line.
    hot: CachePadded<Hot>,
    /// Read for every job, written rarely: a line of its own, so the writes above do not
    /// evict it.
    quiet: CachePadded<Quiet>,
    ctl: Monitor<Ctl>,
    work: Condition,
    room: Condition,
    exited: Condition,
    stats: stats::Stats,
    chain: crate::intercept::Chain,
    /// Ids for interceptors' dispatches.
    next_id: AtomicU64,
    /// Per slot: when its current job started (ns since `epoch`, plus 1), 0 when idle.
    running: Box<[AtomicU64]>,
    /// The ordered scheduler looks at time (aging).
    sched_clock: bool,
    epoch: Instant,
}

/// The worker this thread is, if it is one.
struct Current {
    pool: usize,
    slot: usize,
    local: Option<Worker<Job>>,
}

#[cfg(not(posa_loom))]
std::thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

#[cfg(posa_loom)]
loom::thread_local! {
    static CURRENT: RefCell<Option<Current>> = RefCell::new(None);
}

/// Configures a [`ThreadPool`].
pub struct Builder {
    name: String,
    min: usize,
    max: usize,
    keep_alive: Duration,
    capacity: usize,
    when_full: WhenFull,
    scheduler: Option<Box<dyn Scheduler<Job>>>,
    timing: bool,
    stall: Option<Duration>,
    chain: crate::intercept::Chain,
}

impl Default for Builder {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            name: "posa-pool".to_owned(),
            min: n,
            max: n,
            keep_alive: Duration::from_secs(10),
            capacity: 1024,
            when_full: WhenFull::Block,
            scheduler: None,
            timing: true,
            stall: None,
            chain: crate::intercept::Chain::new(),
        }
    }
}

impl Builder {
    /// Thread name prefix (default `posa-pool`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed number of workers (at least 1; default: available parallelism).
    pub fn threads(mut self, threads: usize) -> Self {
        self.min = threads.max(1);
        self.max = self.min;
        self
    }

    /// Workers kept even when idle (default: the fixed size). May be 0.
    pub fn min_threads(mut self, min: usize) -> Self {
        self.min = min;
        self.max = self.max.max(min).max(1);
        self
    }

    /// Workers at most: the pool starts one more when a job is queued and no worker is idle,
    /// up to this many (at least 1).
    pub fn max_threads(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self.min = self.min.min(self.max);
        self
    }

    /// How long a worker above `min_threads` may stay idle before it exits (default 10 s).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Jobs queued at most (at least 1; default 1024). Live futures count too.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What a full queue does (default [`WhenFull::Block`]).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Work-stealing FIFO (the default): see the [module docs](self).
    pub fn work_stealing(mut self) -> Self {
        self.scheduler = None;
        self
    }

    /// An ordered scheduling strategy shared by all workers: [`Fifo`], [`Lifo`], [`Priority`],
    /// [`Deadline`] or your own.
    pub fn scheduler(mut self, scheduler: impl Scheduler<Job> + 'static) -> Self {
        self.scheduler = Some(Box::new(scheduler));
        self
    }

    /// Record queue-wait and run-time histograms and track running jobs for
    /// [`ThreadPool::running_longer_than`] (default on; two clock reads per job).
    pub fn timing(mut self, timing: bool) -> Self {
        self.timing = timing;
        self
    }

    /// Log (`tracing::warn`) and count every job that ran longer than `threshold`
    /// (default: off). Needs [`timing`](Self::timing).
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall = Some(threshold);
        self
    }

    /// Interceptors around admission ([`Point::PoolSubmit`](crate::intercept::Point)) and
    /// every job run ([`Point::PoolJob`](crate::intercept::Point)); default: none.
    pub fn interceptors(mut self, chain: crate::intercept::Chain) -> Self {
        self.chain = chain;
        self
    }

    /// Starts the first `min_threads` workers.
    pub fn build(self) -> io::Result<ThreadPool> {
        let slots = self.max;
        let sched_clock = self.scheduler.as_ref().is_some_and(|s| s.uses_time());
        let queue = match self.scheduler {
            Some(scheduler) => Queue::Ordered(Mutex::new(Ordered {
                scheduler,
                next_seq: 0,
            })),
            None => {
                let locals: Vec<Worker<Job>> = (0..slots).map(|_| Worker::new_fifo()).collect();
                Queue::Stealing {
                    injector: Injector::new(),
                    stealers: locals.iter().map(Worker::stealer).collect(),
                    locals: locals.into_iter().map(|w| Mutex::new(Some(w))).collect(),
                }
            }
        };
        let inner = Arc::new(Inner {
            queue,
            name: self.name,
            capacity: self.capacity,
            when_full: self.when_full,
            min: self.min,
            max: self.max,
            keep_alive: self.keep_alive,
            stall: self.stall.filter(|_| self.timing),
            hot: CachePadded::new(Hot {
                load: AtomicUsize::new(0),
                pushes: AtomicUsize::new(0),
            }),
            quiet: CachePadded::new(Quiet {
                phase: AtomicU8::new(RUNNING),
                idle: AtomicUsize::new(0),
                blocked: AtomicUsize::new(0),
            }),
            ctl: Monitor::new(Ctl {
                alive: 0,
                free: (0..slots).rev().collect(),
                handles: (0..slots).map(|_| None).collect(),
            }),
            work: Condition::new(),
            room: Condition::new(),
            exited: Condition::new(),
            stats: stats::Stats::new(self.timing),
            chain: self.chain,
            next_id: AtomicU64::new(0),
            running: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            sched_clock,
            epoch: Instant::now(),
        });
        let mut pool = ThreadPool {
            inner,
            stopped: false,
        };
        for _ in 0..self.min {
            let mut ctl = pool.inner.ctl.lock();
            if let Err(e) = Inner::start_worker(&pool.inner, &mut ctl) {
                drop(ctl);
                pool.stop(Shutdown::Now); // do not leave the started workers behind
                return Err(e);
            }
        }
        Ok(pool)
    }
}

impl Inner {
    fn id(inner: &Arc<Inner>) -> usize {
        Arc::as_ptr(inner) as usize
    }

    fn phase(&self) -> u8 {
        self.quiet.phase.load(SeqCst)
    }

    /// The calling thread's slot if it is a worker of this pool.
    fn current_slot(inner: &Arc<Inner>) -> Option<usize> {
        let id = Inner::id(inner);
        CURRENT.with(|c| c.borrow().as_ref().filter(|c| c.pool == id).map(|c| c.slot))
    }

    /// Starts a worker in a free slot (under the control lock).
    fn start_worker(inner: &Arc<Inner>, ctl: &mut Ctl) -> io::Result<()> {
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
    fn reserve(&self, may_block: bool) -> Result<(), bool> {
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

    /// Runs the chain's admission (`PoolSubmit`) and prepares what the job's run will show it
    /// (`PoolJob`). `Ok(None)` when there is no chain.
    fn admit(
        &self,
        options: &JobOptions,
    ) -> Result<Option<Box<crate::intercept::Dispatch>>, crate::intercept::Rejection> {
        use crate::intercept::{Dispatch, Outcome, Point};
        if self.chain.is_empty() {
            return Ok(None);
        }
        let id = self.next_id.fetch_add(1, SeqCst);
        let mut d = Dispatch::new(Point::PoolSubmit, id);
        d.deadline = options.deadline;
        d.stamp = self.chain.stamp();
        self.chain.before(&d)?;
        self.chain.after(&d, Outcome::Ok, Duration::ZERO);
        d.point = Point::PoolJob;
        Ok(Some(Box::new(d)))
    }

    /// Gives a unit of capacity back and wakes a blocked submitter.
    fn release(&self) {
        self.hot.load.fetch_sub(1, SeqCst);
        dekker_fence(); // pairs with the fence in `reserve`: see the blocked count or be seen
        if self.quiet.blocked.load(SeqCst) > 0 {
            drop(self.ctl.lock());
            self.room.notify_one();
        }
    }

    /// Queues `job`; hands it back if the pool had stopped taking work.
    fn push(inner: &Arc<Inner>, job: Job, options: JobOptions) -> Result<(), Job> {
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
    fn wake_worker(inner: &Arc<Inner>) {
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

    fn wake_one_idle(&self) {
        dekker_fence(); // pairs with the fence in `idle_wait`
        if self.quiet.idle.load(SeqCst) > 0 {
            drop(self.ctl.lock());
            self.work.notify_one();
        }
    }

    /// Takes the next job for the worker in `slot`.
    fn find(&self, slot: usize, tick: u32) -> Option<Job> {
        match &self.queue {
            Queue::Ordered(q) => {
                let now = self.sched_now();
                q.lock().scheduler.pop(now).map(|q| q.job)
            }
            Queue::Stealing {
                injector, stealers, ..
            } => CURRENT.with(|c| {
                let c = c.borrow();
                let local = c.as_ref().and_then(|c| c.local.as_ref())?;
                let from_injector = || retry(|| injector.steal_batch_and_pop(local));
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

    /// `now` for the ordered scheduler: the clock only if it uses time (read outside its lock).
    fn sched_now(&self) -> Instant {
        if self.sched_clock {
            Instant::now()
        } else {
            self.epoch
        }
    }

    /// Cancels every queued job (shutdown `Now`); returns how many.
    fn cancel_queued(&self) -> usize {
        let mut cancelled = 0;
        while let Some(job) = self.take_any() {
            if job.holds_load {
                self.release();
            }
            job.task.cancel();
            self.stats.cancelled.incr();
            cancelled += 1;
        }
        cancelled
    }

    /// `true` if some queue holds a job.
    fn has_work(&self) -> bool {
        match &self.queue {
            Queue::Ordered(q) => !q.lock().scheduler.is_empty(),
            Queue::Stealing {
                injector, stealers, ..
            } => !injector.is_empty() || stealers.iter().any(|s| !s.is_empty()),
        }
    }

    /// Jobs queued now.
    fn queued(&self) -> usize {
        match &self.queue {
            Queue::Ordered(q) => q.lock().scheduler.len(),
            Queue::Stealing {
                injector, stealers, ..
            } => injector.len() + stealers.iter().map(Stealer::len).sum::<usize>(),
        }
    }

    /// Takes any queued job from any thread (shutdown `Now`).
    fn take_any(&self) -> Option<Job> {
        match &self.queue {
            Queue::Ordered(q) => {
                let now = self.sched_now();
                q.lock().scheduler.pop(now).map(|q| q.job)
            }
            Queue::Stealing {
                injector, stealers, ..
            } => retry(|| injector.steal())
                .or_else(|| stealers.iter().find_map(|s| retry(|| s.steal()))),
        }
    }

    /// Runs (or, when stopping or unwanted, cancels) a job taken off the queue.
    fn execute(&self, slot: usize, job: Job) {
        if job.holds_load {
            self.release();
        }
        if self.phase() == STOPPING || job.task.cancel_requested() {
            job.task.cancel();
            self.stats.cancelled.incr();
            return;
        }
        // Interceptors: one pointer test when there are none.
        let dispatch = job.dispatch.map(|mut d| {
            d.queued_at = job.enqueued;
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
            if let Some(enqueued) = job.enqueued {
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

    /// Nothing found since `pushes` read `seen`: sleep until a push or shutdown. `false`: this
    /// worker exits (its slot freed).
    fn idle_wait(&self, slot: usize, seen: usize) -> bool {
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
                {
                    break false; // idle for the whole keep-alive, above the minimum: shrink
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

#[cfg(test)]
impl ThreadPool {
    /// Waits (up to 10 s) until at most `n` workers are alive; returns how many are.
    fn wait_threads_at_most(&self, n: usize) -> usize {
        let mut ctl = self.inner.ctl.lock();
        let deadline = crate::monitor::deadline_after(Duration::from_secs(10));
        let _ = ctl.wait_on_while_until(&self.inner.exited, deadline, |c| c.alive > n);
        ctl.alive
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

fn worker_main(inner: Arc<Inner>, slot: usize) {
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
        let seen = inner.hot.pushes.load(SeqCst);
        if let Some(job) = inner.find(slot, tick) {
            inner.execute(slot, job);
            continue;
        }
        if !inner.idle_wait(slot, seen) {
            break;
        }
    }
    CURRENT.with(|c| c.borrow_mut().take());
    inner.exited.notify_all();
}

/// A pool of worker threads with a pluggable scheduler. See the [module docs](self).
pub struct ThreadPool {
    inner: Arc<Inner>,
    stopped: bool,
}

impl ThreadPool {
    /// A work-stealing FIFO pool of `threads` workers with a queue of 1024 that blocks
    /// submitters when full.
    pub fn new(threads: usize) -> io::Result<Self> {
        Builder::default().threads(threads).build()
    }

    /// A builder for every other setting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Submits `f` with default options.
    pub fn submit<F, T>(&self, f: F) -> Result<JobToken<T>, Refused<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_with(JobOptions::default(), f)
    }

    /// Submits `f` with a priority and/or deadline for the scheduler.
    pub fn submit_with<F, T>(&self, options: JobOptions, f: F) -> Result<JobToken<T>, Refused<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = &self.inner;
        let dispatch = match inner.admit(&options) {
            Ok(d) => d,
            Err(rejection) => {
                inner.stats.rejected.incr();
                return Err(Refused::Rejected(f, rejection));
            }
        };
        let on_worker = Inner::current_slot(inner).is_some();
        match inner.reserve(!on_worker) {
            Ok(()) => {}
            Err(true) => return Err(Refused::Closed(f)),
            Err(false) if inner.when_full == WhenFull::Reject => {
                inner.stats.rejected.incr();
                return Err(Refused::Full(f));
            }
            Err(false) => {
                // CallerRuns, or a worker of this pool facing a full queue under Block.
                inner.stats.submitted.incr();
                let (completer, token) = act::pair();
                Box::new(TaskImpl { f, completer }).run(&inner.stats);
                return Ok(token);
            }
        }
        let (completer, token) = act::pair();
        let job = Job {
            task: Box::new(TaskImpl { f, completer }),
            enqueued: (inner.stats.timing || dispatch.is_some()).then(Instant::now),
            holds_load: true,
            dispatch,
        };
        match Inner::push(inner, job, options) {
            Ok(()) => inner.stats.submitted.incr(),
            Err(job) => {
                // Shut down between the reservation and the push: the token says Cancelled.
                inner.release();
                job.task.cancel();
            }
        }
        Ok(token)
    }

    /// Runs `future` on the pool: each time its waker is woken, the pool queues it to be polled
    /// again (with `options`). So `act` tokens, and any other future, can be awaited in pool
    /// work. A live future counts against the capacity until it finishes.
    ///
    /// A full queue rejects (under [`WhenFull::CallerRuns`] too: the future comes back, to be
    /// awaited by the caller). A future still waiting when the pool shuts down is cancelled
    /// when it is next woken; dropping its token cancels it at its next wake-up.
    ///
    /// ```
    /// use posa::pool::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2)?;
    /// let inner = pool.submit(|| 20).unwrap();
    /// let outer = pool.spawn_future(async move { inner.await.into_result().unwrap() + 1 });
    /// let outer = outer.unwrap();
    /// assert_eq!(outer.wait().into_result().unwrap(), 21);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_future<F>(&self, future: F) -> Result<JobToken<F::Output>, Refused<F>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_future_with(JobOptions::default(), future)
    }

    /// [`spawn_future`](Self::spawn_future) with a priority and/or deadline for every poll.
    pub fn spawn_future_with<F>(
        &self,
        options: JobOptions,
        future: F,
    ) -> Result<JobToken<F::Output>, Refused<F>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let inner = &self.inner;
        match inner.reserve(Inner::current_slot(inner).is_none()) {
            Ok(()) => {}
            Err(true) => return Err(Refused::Closed(future)),
            Err(false) => {
                inner.stats.rejected.incr();
                return Err(Refused::Full(future));
            }
        }
        inner.stats.submitted.incr();
        Ok(future::spawn(inner, options, future))
    }

    /// Jobs queued and not yet started.
    pub fn queued(&self) -> usize {
        self.inner.queued()
    }

    /// Worker threads alive now.
    pub fn threads(&self) -> usize {
        self.inner.ctl.lock().alive
    }

    /// Counters, queue depth and latency summaries, aggregated over every thread.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        inner.stats.snapshot(
            inner.queued(),
            inner.ctl.lock().alive,
            inner.quiet.idle.load(SeqCst),
        )
    }

    /// The stall report: every worker whose current job has been running longer than
    /// `threshold`, longest first (needs [`Builder::timing`]).
    pub fn running_longer_than(&self, threshold: Duration) -> Vec<Running> {
        let now = Instant::now().saturating_duration_since(self.inner.epoch);
        let mut out: Vec<Running> = self
            .inner
            .running
            .iter()
            .enumerate()
            .filter_map(|(worker, started)| {
                let started = started.load(SeqCst).checked_sub(1)?;
                let running_for = now.saturating_sub(Duration::from_nanos(started));
                (running_for > threshold).then_some(Running {
                    worker,
                    running_for,
                })
            })
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.running_for));
        out
    }

    /// Shuts down and joins every worker; returns how many queued jobs were cancelled.
    pub fn shutdown(mut self, mode: Shutdown) -> usize {
        self.stop(mode)
    }

    /// Begins shutdown from any thread without waiting: intake stops at once (later submits get
    /// [`Refused::Closed`]); with [`Shutdown::Now`] queued jobs are cancelled now. Returns
    /// how many were cancelled. Dropping or [`shutdown`](Self::shutdown) then joins the workers.
    pub fn close(&self, mode: Shutdown) -> usize {
        let inner = &self.inner;
        {
            let _ctl = inner.ctl.lock();
            match mode {
                Shutdown::Graceful => {
                    let _ = inner
                        .quiet
                        .phase
                        .compare_exchange(RUNNING, DRAINING, SeqCst, SeqCst);
                }
                Shutdown::Now => inner.quiet.phase.store(STOPPING, SeqCst),
            }
            dekker_fence(); // pairs with the fence in `push`
        }
        inner.work.notify_all();
        inner.room.notify_all();
        if mode == Shutdown::Graceful {
            return 0;
        }
        inner.cancel_queued()
    }

    fn stop(&mut self, mode: Shutdown) -> usize {
        let n = self.close(mode);
        self.stopped = true;
        // Wait for the workers; say so while a long-running job keeps us waiting.
        let handles = loop {
            let mut ctl = self.inner.ctl.lock();
            let waited = ctl.wait_on_while_until(
                &self.inner.exited,
                crate::monitor::deadline_after(Duration::from_secs(5)),
                |c| c.alive > 0,
            );
            if waited.is_ok() {
                break std::mem::take(&mut ctl.handles);
            }
            tracing::warn!(
                pool = %self.inner.name,
                running = ctl.alive,
                "posa pool: still waiting for running jobs to finish before the pool can stop"
            );
        };
        for handle in handles.into_iter().flatten() {
            let _ = handle.join();
        }
        n
    }
}

impl Drop for ThreadPool {
    /// Cancels what is queued, waits for running jobs (logging while it waits), joins workers.
    fn drop(&mut self) {
        if !self.stopped {
            self.stop(Shutdown::Now);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.inner.name)
            .field("threads", &self.threads())
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
            Outcome::Completed(Err(RunError::Panicked("job failed".into())))
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
            Err(Refused::Full(f)) => assert_eq!(f(), 2, "the job comes back"),
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
        assert_eq!(inner.ctl.lock().alive, 0, "drop joined every worker");
        let pool = ThreadPool::new(1).unwrap();
        assert_eq!(pool.close(Shutdown::Graceful), 0);
        assert!(matches!(pool.submit(|| ()), Err(Refused::Closed(_))));
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
    #[test]
    fn work_stealing_runs_outside_submissions_in_order_on_one_worker() {
        let (p, g, _held) = gated_with(ThreadPool::builder().work_stealing());
        let d = JobOptions::default();
        let jobs = (1..=50).map(|i| (d, i)).collect();
        assert_eq!(order_of(p, g, jobs), (1..=50).collect::<Vec<_>>());
    }

    /// Two jobs that keep re-submitting each other (A, B, A, ...) and one job from outside (C),
    /// one worker: how many chain jobs run after C was queued and before C runs.
    fn chain_jobs_ahead_of_outside_job(builder: Builder) -> usize {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        const CAP: usize = 10_000; // without fairness C would wait for the whole chain
        struct Chain {
            pool: std::sync::OnceLock<std::sync::Weak<ThreadPool>>,
            runs: AtomicUsize,
            c_ran: AtomicBool,
            go: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
        }
        fn link(chain: std::sync::Arc<Chain>) {
            if let Some(go) = chain.go.lock().unwrap().take() {
                go.recv().unwrap(); // the first link waits until C is queued
            } else {
                chain.runs.fetch_add(1, SeqCst);
            }
            if chain.c_ran.load(SeqCst) || chain.runs.load(SeqCst) >= CAP {
                return;
            }
            if let Some(pool) = chain.pool.get().and_then(std::sync::Weak::upgrade) {
                let next = std::sync::Arc::clone(&chain);
                if let Ok(token) = pool.submit(move || link(next)) {
                    token.detach();
                }
            }
        }
        let pool = std::sync::Arc::new(builder.threads(1).build().unwrap());
        let (go_tx, go_rx) = mpsc::channel();
        let chain = std::sync::Arc::new(Chain {
            pool: std::sync::OnceLock::new(),
            runs: AtomicUsize::new(0),
            c_ran: AtomicBool::new(false),
            go: std::sync::Mutex::new(Some(go_rx)),
        });
        let _ = chain.pool.set(std::sync::Arc::downgrade(&pool));
        let first = std::sync::Arc::clone(&chain);
        pool.submit(move || link(first)).unwrap().detach();
        let c_chain = std::sync::Arc::clone(&chain);
        let c = pool
            .submit(move || {
                c_chain.c_ran.store(true, SeqCst);
                c_chain.runs.load(SeqCst)
            })
            .unwrap();
        go_tx.send(()).unwrap();
        c.wait().into_result().unwrap()
    }

    #[test]
    fn jobs_resubmitting_each_other_cannot_starve_an_outside_job() {
        let stealing = chain_jobs_ahead_of_outside_job(ThreadPool::builder().work_stealing());
        assert!(
            stealing <= GLOBAL_CHECK_INTERVAL as usize,
            "work stealing: {stealing} chain jobs ran ahead of the outside job"
        );
        let fifo =
            chain_jobs_ahead_of_outside_job(ThreadPool::builder().scheduler(Fifo::default()));
        assert!(fifo <= 1, "ordered FIFO: {fifo} chain jobs ran ahead");
    }

    #[test]
    fn grows_when_work_waits_and_shrinks_after_keep_alive() {
        let pool = ThreadPool::builder()
            .min_threads(0)
            .max_threads(3)
            .keep_alive(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(pool.threads(), 0, "min 0: no worker until there is work");
        let (started_tx, started) = mpsc::channel();
        let gate = std::sync::Arc::new(std::sync::Barrier::new(4));
        let tokens: Vec<_> = (0..3)
            .map(|i| {
                let (tx, gate) = (started_tx.clone(), std::sync::Arc::clone(&gate));
                pool.submit(move || {
                    tx.send(i).unwrap();
                    gate.wait(); // all three must be running at once
                })
                .unwrap()
            })
            .collect();
        for _ in 0..3 {
            started
                .recv_timeout(Duration::from_secs(10))
                .expect("the pool grew to run three blocking jobs at once");
        }
        assert_eq!(pool.threads(), 3);
        gate.wait();
        for t in tokens {
            t.wait().into_result().unwrap();
        }
        assert_eq!(
            pool.wait_threads_at_most(0),
            0,
            "idle workers above min exit"
        );
        // And it grows again from zero.
        assert_eq!(pool.submit(|| 9).unwrap().wait().into_result().unwrap(), 9);
    }

    #[test]
    fn a_worker_never_blocks_on_its_own_full_pool() {
        let pool = std::sync::Arc::new(
            ThreadPool::builder()
                .threads(1)
                .capacity(1)
                .when_full(WhenFull::Block)
                .build()
                .unwrap(),
        );
        let p = std::sync::Arc::clone(&pool);
        let outer = pool
            .submit(move || {
                // Fill the queue from inside, then submit once more: Block would deadlock the
                // only worker; it runs the job inline instead.
                let queued = p.submit(|| 1).unwrap();
                let inline = p.submit(|| 2).unwrap();
                (queued, inline.wait().into_result().unwrap())
            })
            .unwrap();
        let (queued, inline) = outer.wait().into_result().unwrap();
        assert_eq!(inline, 2);
        assert_eq!(queued.wait().into_result().unwrap(), 1);
    }

    #[test]
    fn statistics_count_what_happened() {
        let (pool, gate, held) = gated_with(
            ThreadPool::builder()
                .capacity(2)
                .when_full(WhenFull::Reject),
        );
        let ok = pool.submit(|| 1).unwrap();
        let bad = pool.submit(|| -> u8 { panic!("boom") }).unwrap();
        assert!(matches!(pool.submit(|| 3), Err(Refused::Full(_))));
        let stalled = pool.running_longer_than(Duration::ZERO);
        assert_eq!(stalled.len(), 1, "the gate job is running: {stalled:?}");
        assert_eq!(stalled[0].worker, 0);
        assert_eq!(pool.stats().queued, 2);
        gate.send(()).unwrap();
        held.wait().into_result().unwrap();
        ok.wait().into_result().unwrap();
        assert!(bad.wait().into_result().is_err());
        let st = pool.stats();
        assert_eq!(st.submitted, 3);
        assert_eq!(st.rejected, 1);
        assert_eq!(st.panicked, 1);
        assert_eq!(st.queued, 0);
        assert_eq!(st.threads, 1);
        assert_eq!(st.queue_wait.map(|l| l.count), Some(3));
        drop(pool);
    }

    #[test]
    fn futures_are_polled_again_when_woken() {
        let pool = ThreadPool::new(2).unwrap();
        let (completer, later) = act::pair::<u32, ()>();
        let fut = pool
            .spawn_future(async move { later.await.into_result().unwrap() * 2 })
            .unwrap();
        completer.complete(Ok(21)); // wakes the future from this thread
        assert_eq!(fut.wait().into_result().unwrap(), 42);
        let failing = pool
            .spawn_future(async { panic!("future failed") })
            .unwrap();
        let outcome: Outcome<(), RunError> = failing.wait();
        assert_eq!(
            outcome,
            Outcome::Completed(Err(RunError::Panicked("future failed".into())))
        );
        // Woken after shutdown: cancelled, not lost.
        let (completer, later) = act::pair::<u32, ()>();
        let stranded = pool.spawn_future(later).unwrap();
        let s = pool.stats();
        assert_eq!(s.panicked, 1);
        pool.shutdown(Shutdown::Graceful);
        completer.complete(Ok(1));
        assert_eq!(stranded.wait(), Outcome::Cancelled(()));
    }

    #[test]
    fn dropping_a_pool_leaves_no_thread_behind() {
        fn named(prefix: &str) -> usize {
            std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                        .filter(|name| name.starts_with(prefix))
                        .count()
                })
                .unwrap_or(0)
        }
        let pool = ThreadPool::builder()
            .name("leakchk")
            .threads(3)
            .build()
            .unwrap();
        // Each worker names itself as it starts: wait until all three run a job.
        let all = std::sync::Arc::new(std::sync::Barrier::new(4));
        let running: Vec<_> = (0..3)
            .map(|_| {
                let all = std::sync::Arc::clone(&all);
                pool.submit(move || all.wait().is_leader()).unwrap()
            })
            .collect();
        all.wait();
        assert_eq!(named("leakchk-"), 3);
        for t in running {
            t.wait().into_result().unwrap();
        }
        drop(pool);
        assert_eq!(named("leakchk-"), 0);
    }
}
