//! Configuring and starting a [`ThreadPool`].

use std::io;
use std::time::{Duration, Instant};

use super::deque::{Injector, Worker};
use super::queue::{Ordered, Queue};
use super::{
    Condition, Ctl, Honours, Hot, Inner, Job, Monitor, Quiet, RUNNING, Scheduler, Shutdown,
    ThreadPool, WhenFull, stats,
};
use crate::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize};
use crate::sync::{Arc, Mutex};
use crossbeam_utils::CachePadded;

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
            timing: false,
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

    /// Work-stealing FIFO (the default): see the [module docs](crate::pool).
    pub fn work_stealing(mut self) -> Self {
        self.scheduler = None;
        self
    }

    /// An ordered scheduling strategy shared by all workers: [`Fifo`](super::Fifo), [`Lifo`](super::Lifo), [`Priority`](super::Priority),
    /// [`EarliestDeadline`](super::EarliestDeadline) or your own.
    pub fn scheduler(mut self, scheduler: impl Scheduler<Job> + 'static) -> Self {
        self.scheduler = Some(Box::new(scheduler));
        self
    }

    /// Record queue-wait and run-time histograms ([`PoolStats::queue_wait`],
    /// [`PoolStats::run_time`]) and track running jobs for
    /// [`ThreadPool::running_longer_than`]. Default off: three clock reads and two histogram
    /// records a job were about 540 of the 1,720 instructions a tiny job cost (callgrind,
    /// docs/thread-pool.md), so a pool times its jobs only when asked.
    ///
    /// [`PoolStats::queue_wait`]: super::PoolStats::queue_wait
    /// [`PoolStats::run_time`]: super::PoolStats::run_time
    pub fn timing(mut self, timing: bool) -> Self {
        self.timing = timing;
        self
    }

    /// Log (`tracing::warn`) and count every job that ran longer than `threshold`
    /// (default: off). Turns [`timing`](Self::timing) on: a stall is measured by it.
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall = Some(threshold);
        self.timing = true;
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
        let honours = self
            .scheduler
            .as_ref()
            .map_or(Honours::default(), |s| s.honours());
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
            honours,
            told_options: AtomicBool::new(false),
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
