//! Pool statistics on thread-specific storage: each worker (and each submitting thread) counts
//! and records into its own cell, so the hot path never writes a cache line another thread
//! writes; a snapshot sums the cells.

use std::time::Duration;

use crate::tss::{Counter, Histogram};

pub(super) struct Stats {
    pub(super) timing: bool,
    pub(super) submitted: Counter,
    pub(super) completed: Counter,
    pub(super) panicked: Counter,
    pub(super) rejected: Counter,
    pub(super) cancelled: Counter,
    pub(super) stalled: Counter,
    pub(super) options_ignored: Counter,
    pub(super) priority_clamped: Counter,
    queue_wait: Option<Histogram>,
    run_time: Option<Histogram>,
}

impl Stats {
    pub(super) fn new(timing: bool) -> Self {
        Self {
            timing,
            submitted: Counter::new(),
            completed: Counter::new(),
            panicked: Counter::new(),
            rejected: Counter::new(),
            cancelled: Counter::new(),
            stalled: Counter::new(),
            options_ignored: Counter::new(),
            priority_clamped: Counter::new(),
            queue_wait: timing.then(Histogram::latency),
            run_time: timing.then(Histogram::latency),
        }
    }

    pub(super) fn record_wait(&self, d: Duration) {
        if let Some(h) = &self.queue_wait {
            h.record(nanos(d));
        }
    }

    pub(super) fn record_run(&self, d: Duration) {
        if let Some(h) = &self.run_time {
            h.record(nanos(d));
        }
    }

    pub(super) fn snapshot(&self, queued: usize, threads: usize, idle: usize) -> PoolStats {
        PoolStats {
            submitted: self.submitted.sum(),
            completed: self.completed.sum(),
            panicked: self.panicked.sum(),
            rejected: self.rejected.sum(),
            cancelled: self.cancelled.sum(),
            stalled: self.stalled.sum(),
            options_ignored: self.options_ignored.sum(),
            priority_clamped: self.priority_clamped.sum(),
            queued,
            threads,
            idle,
            queue_wait: self.queue_wait.as_ref().map(|h| Latency::of(&h.snapshot())),
            run_time: self.run_time.as_ref().map(|h| Latency::of(&h.snapshot())),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// A latency distribution, summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
}

impl Latency {
    /// Summarises an HDR histogram of nanoseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: Duration::from_nanos(h.value_at_quantile(0.5)),
            p99: Duration::from_nanos(h.value_at_quantile(0.99)),
            p999: Duration::from_nanos(h.value_at_quantile(0.999)),
            max: Duration::from_nanos(h.max()),
        }
    }
}

/// What a pool has done, summed over every thread at the moment of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Jobs and futures accepted (queued, or run on the caller).
    pub submitted: u64,
    /// Jobs that returned a value, and futures that finished.
    pub completed: u64,
    /// Jobs and futures that panicked (their tokens carry the message).
    pub panicked: u64,
    /// Submissions refused because the queue was full ([`WhenFull::Reject`](super::WhenFull)).
    pub rejected: u64,
    /// Queued jobs cancelled (shutdown `Now`, or their token asked).
    pub cancelled: u64,
    /// Jobs that ran past the stall threshold.
    pub stalled: u64,
    /// Submissions with a priority or deadline their pool's scheduler does not order by (the
    /// default work-stealing pool orders by neither): accepted, run in the scheduler's order.
    pub options_ignored: u64,
    /// Submissions with a priority above the top level of a [`Priority`](super::Priority)
    /// scheduler: accepted at the top level.
    pub priority_clamped: u64,
    /// Queue depth now.
    pub queued: usize,
    /// Worker threads alive now.
    pub threads: usize,
    /// Of those, idle now.
    pub idle: usize,
    /// Time from submit to start (schedule latency), if the pool times jobs.
    pub queue_wait: Option<Latency>,
    /// Time from start to end of each run (each poll, for futures), if the pool times jobs.
    pub run_time: Option<Latency>,
}

/// A worker whose current job has been running a while (see
/// [`ThreadPool::running_longer_than`](super::ThreadPool::running_longer_than)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The worker's slot (its thread is named `<pool name>-<slot>`).
    pub worker: usize,
    /// How long its job has been running.
    pub running_for: Duration,
}
