//! Scheduling strategies: which queued job a free worker runs next.
//!
//! Each strategy states its ordering guarantee; the pool holds one behind the [`Scheduler`]
//! trait (Strategy pattern) and calls it under its monitor's lock.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// What a job was submitted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMeta {
    /// Submission order (unique, increasing).
    pub seq: u64,
    /// Priority: higher runs first under [`Priority`] (0 is the lowest).
    pub priority: u8,
    /// EarliestDeadline: earlier runs first under [`EarliestDeadline`].
    pub deadline: Option<Instant>,
    /// When it was queued (exact when the pool times jobs or the scheduler
    /// [`uses_time`](Scheduler::uses_time); otherwise the pool's start, to keep the clock out
    /// of the submit path).
    pub enqueued: Instant,
}

/// A queued job with its metadata (the job itself is opaque to schedulers).
pub struct Queued<J> {
    /// What it was submitted with.
    pub meta: JobMeta,
    /// The job.
    pub job: J,
}

impl<J> fmt::Debug for Queued<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued").field("meta", &self.meta).finish()
    }
}

/// Which of a job's options a scheduler orders by. The pool asks once, at build, and counts
/// every submission whose options the scheduler would ignore or clamp
/// ([`PoolStats::options_ignored`](super::PoolStats::options_ignored),
/// [`PoolStats::priority_clamped`](super::PoolStats::priority_clamped)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Honours {
    /// The highest priority it tells apart (priorities above are clamped to it); `None` if it
    /// ignores priorities.
    pub top_priority: Option<u8>,
    /// It orders by deadline.
    pub deadline: bool,
}

/// A scheduling strategy: a queue with its own ordering.
pub trait Scheduler<J>: Send {
    /// Adds a job.
    fn push(&mut self, job: Queued<J>);
    /// Removes the job to run next (`now` is for strategies that age jobs).
    fn pop(&mut self, now: Instant) -> Option<Queued<J>>;
    /// Jobs queued.
    fn len(&self) -> usize;
    /// `true` if `pop` looks at `now` or at when jobs were queued (aging). When `false`, the
    /// pool does not read the clock for it, and never inside its lock.
    fn uses_time(&self) -> bool {
        false
    }
    /// `true` if nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Which job options it orders by (default: none, as [`Fifo`] and [`Lifo`]).
    fn honours(&self) -> Honours {
        Honours::default()
    }
}

/// First in, first out: jobs run in submission order.
#[derive(Debug)]
pub struct Fifo<J>(VecDeque<Queued<J>>);

impl<J> Default for Fifo<J> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<J: Send> Scheduler<J> for Fifo<J> {
    fn push(&mut self, job: Queued<J>) {
        self.0.push_back(job);
    }
    fn pop(&mut self, _: Instant) -> Option<Queued<J>> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out: the newest job runs first (cache-warm, unfair under load).
#[derive(Debug)]
pub struct Lifo<J>(Vec<Queued<J>>);

impl<J> Default for Lifo<J> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<J: Send> Scheduler<J> for Lifo<J> {
    fn push(&mut self, job: Queued<J>) {
        self.0.push(job);
    }
    fn pop(&mut self, _: Instant) -> Option<Queued<J>> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Strict priority with optional aging: the highest *effective* priority runs first, FIFO within
/// a level. Without aging, effective = submitted priority. With aging `a`, a job gains one level
/// for every `a` it has waited, so a low-priority job waits at most about
/// `a × (levels above it)` once higher levels stop being refilled faster than that.
#[derive(Debug)]
pub struct Priority<J> {
    levels: Vec<VecDeque<Queued<J>>>,
    aging: Option<Duration>,
    len: usize,
}

impl<J> Priority<J> {
    /// `levels` priorities (0 to levels-1; higher values are clamped), optional aging.
    pub fn new(levels: u8, aging: Option<Duration>) -> Self {
        Self {
            levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            aging: aging.filter(|a| !a.is_zero()),
            len: 0,
        }
    }

    fn effective(&self, level: usize, meta: &JobMeta, now: Instant) -> u128 {
        let aged = self.aging.map_or(0, |a| {
            now.saturating_duration_since(meta.enqueued).as_nanos() / a.as_nanos()
        });
        level as u128 + aged
    }
}

impl<J: Send> Scheduler<J> for Priority<J> {
    fn push(&mut self, job: Queued<J>) {
        let level = usize::from(job.meta.priority).min(self.levels.len() - 1);
        self.levels[level].push_back(job);
        self.len += 1;
    }

    fn pop(&mut self, now: Instant) -> Option<Queued<J>> {
        if self.aging.is_none() {
            // Strict priority: the highest non-empty level's oldest job. No arithmetic.
            let job = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
            self.len -= 1;
            return Some(job);
        }
        // The head of each level is its oldest job, so it has the level's highest effective
        // priority: compare heads only. Ties go to the higher level; within a level, FIFO.
        let best = self
            .levels
            .iter()
            .enumerate()
            .filter_map(|(level, q)| q.front().map(|j| (level, j)))
            .max_by_key(|(level, j)| (self.effective(*level, &j.meta, now), *level))
            .map(|(level, _)| level)?;
        self.len -= 1;
        self.levels[best].pop_front()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn uses_time(&self) -> bool {
        self.aging.is_some()
    }

    fn honours(&self) -> Honours {
        Honours {
            top_priority: Some(u8::try_from(self.levels.len() - 1).unwrap_or(u8::MAX)),
            deadline: false,
        }
    }
}

/// When a job is due: any deadline comes before none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    At(Instant),
    Never,
}

struct ByDue<J> {
    key: (Due, u64),
    job: Queued<J>,
}

impl<J> PartialEq for ByDue<J> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<J> Eq for ByDue<J> {}
impl<J> PartialOrd for ByDue<J> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for ByDue<J> {
    /// Reversed, so the max-heap pops the earliest key.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key.cmp(&self.key)
    }
}

/// Earliest deadline first (scheduling by timestamp): the job with the earliest deadline runs
/// first; equal deadlines run in submission order; jobs without a deadline run after every job
/// that has one, in submission order.
pub struct EarliestDeadline<J>(BinaryHeap<ByDue<J>>);

impl<J> Default for EarliestDeadline<J> {
    fn default() -> Self {
        Self(BinaryHeap::new())
    }
}

impl<J> fmt::Debug for EarliestDeadline<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarliestDeadline")
            .field("len", &self.0.len())
            .finish()
    }
}

impl<J: Send> Scheduler<J> for EarliestDeadline<J> {
    fn push(&mut self, job: Queued<J>) {
        let due = job.meta.deadline.map_or(Due::Never, Due::At);
        self.0.push(ByDue {
            key: (due, job.meta.seq),
            job,
        });
    }

    fn pop(&mut self, _: Instant) -> Option<Queued<J>> {
        self.0.pop().map(|b| b.job)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn honours(&self) -> Honours {
        Honours {
            top_priority: None,
            deadline: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, priority: u8, deadline: Option<Instant>, enqueued: Instant) -> Queued<u64> {
        Queued {
            meta: JobMeta {
                seq,
                priority,
                deadline,
                enqueued,
            },
            job: seq,
        }
    }

    #[test]
    fn priority_clamps_counts_and_ages_by_whole_periods() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Priority::new(3, Some(ms(10)));
        assert!(p.uses_time(), "aging reads the clock");
        assert!(!Priority::<u64>::new(3, None).uses_time());
        assert!(p.is_empty());
        p.push(job(1, 200, None, t0)); // above levels-1: clamped to the top level
        p.push(job(2, 2, None, t0 + ms(10)));
        p.push(job(3, 0, None, t0));
        assert_eq!((p.len(), p.is_empty()), (3, false));
        assert_eq!(p.pop(t0).map(|q| q.job), Some(1), "top level, oldest first");
        // At +10 ms job 3 has aged one period (effective 1), below job 2 (2).
        assert_eq!(p.pop(t0 + ms(10)).map(|q| q.job), Some(2));
        assert_eq!(p.pop(t0 + ms(10)).map(|q| q.job), Some(3));
        assert!(p.pop(t0).is_none());
        // Aged past a higher level: 30 ms = 3 periods beats level 2 queued just now.
        p.push(job(4, 0, None, t0));
        p.push(job(5, 2, None, t0 + ms(30)));
        assert_eq!(p.pop(t0 + ms(30)).map(|q| q.job), Some(4));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn earliest_deadline_counts_and_orders_deadlines_before_none() {
        let t0 = Instant::now();
        let mut e = EarliestDeadline::default();
        e.push(job(1, 0, None, t0));
        e.push(job(2, 0, Some(t0 + Duration::from_millis(5)), t0));
        e.push(job(3, 0, Some(t0 + Duration::from_millis(1)), t0));
        assert_eq!(e.len(), 3);
        let order: Vec<u64> = std::iter::from_fn(|| e.pop(t0).map(|q| q.job)).collect();
        assert_eq!(order, [3, 2, 1]);
        assert_eq!(e.len(), 0);
    }
}
