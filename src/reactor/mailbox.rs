//! The reactor's cross-thread state: posted jobs, wake-up coalescing and the shutdown phase.
//!
//! mio cannot run under loom, so everything other threads share with an event loop lives here,
//! generic over the [`Notify`] that wakes the demultiplexer: `mio::Waker` in production, a fake
//! in `loom-tests/tests/reactor.rs`.
//!
//! # Algorithm and invariants
//! - Posting pushes onto a bounded queue under a lock, then sets `notified`; only the poster
//!   that flips it from false to true calls [`Notify::notify`], so a burst of posts costs one
//!   wake-up. The loop clears `notified` *before* it drains, so a post that lands after the
//!   drain started either is drained now or finds the flag clear and wakes the loop again: no
//!   post is stranded.
//! - The phase (running, draining, stopped) is read and changed under the queue lock. Once the
//!   loop marks the mailbox stopped and takes what is left (to report it as dropped), no post can
//!   enter: each job is run, handed back to its poster, or counted as dropped. Never lost.
//! - A post from the loop's own thread (marked by [`Mailbox::enter_loop`] while the loop
//!   turns) raises `notified` but makes no system call: the loop checks `is_notified` before
//!   it waits and does not block while it is up.
//! - The queue is bounded: a full mailbox hands the job back ([`Refused::Full`]) instead of
//!   growing, so a flood of posts cannot exhaust memory.
// Public for the loom models (re-exported under `--cfg posa_loom` only).
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::collections::VecDeque;
use std::fmt;
use std::io;

use crate::error::Refused;
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, Ordering};

/// Wakes a demultiplexer blocked in its wait (`mio::Waker::wake`).
pub trait Notify: Send + Sync {
    /// Makes the demultiplexer's current or next wait return promptly.
    fn notify(&self) -> io::Result<()>;
}

impl Notify for mio::Waker {
    fn notify(&self) -> io::Result<()> {
        self.wake()
    }
}

/// What the event loops hold: mio's waker in production, a fake in the loom models.
impl Notify for Box<dyn Notify> {
    fn notify(&self) -> io::Result<()> {
        (**self).notify()
    }
}

/// The lifecycle of a reactor as other threads see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting posts and running handlers.
    Running,
    /// Shutdown requested: intake stopped, handlers are draining.
    Draining,
    /// The loop has stopped; nothing more will run.
    Stopped,
}

struct Queue<J> {
    jobs: VecDeque<J>,
    /// Flagged wake-ups ([`Mailbox::post_flagged`]): not counted against the capacity, run
    /// before jobs, and not reported as dropped when the loop stops (there is no one left to
    /// wake).
    wakes: VecDeque<J>,
    phase: Phase,
}

crate::sync::const_thread_local! {
    /// The mailbox whose loop runs on this thread now (its address), 0 elsewhere.
    static ON_LOOP: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// The calling thread is a mailbox's loop until this drops ([`Mailbox::enter_loop`]); dropping
/// restores what the thread was before (a loop turned inside another loop's handler).
#[must_use = "the thread counts as the loop only while this lives"]
pub struct OnLoop(usize);

impl Drop for OnLoop {
    fn drop(&mut self) {
        ON_LOOP.with(|c| c.set(self.0));
    }
}

/// Jobs posted to a loop from any thread, with coalesced wake-ups and a shutdown phase.
pub struct Mailbox<J, N> {
    queue: Mutex<Queue<J>>,
    capacity: usize,
    notified: AtomicBool,
    notify: N,
}

impl<J, N: Notify> Mailbox<J, N> {
    /// A mailbox holding at most `capacity` (at least 1) jobs, waking its loop through `notify`.
    pub fn new(capacity: usize, notify: N) -> Self {
        Self {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                wakes: VecDeque::new(),
                phase: Phase::Running,
            }),
            capacity: capacity.max(1),
            notified: AtomicBool::new(false),
            notify,
        }
    }

    /// Queues `job` for the loop and wakes it if needed.
    pub fn post(&self, job: J) -> Result<(), Refused<J>> {
        {
            let mut q = self.queue.lock();
            if q.phase != Phase::Running {
                return Err(Refused::Closed(job));
            }
            if q.jobs.len() >= self.capacity {
                return Err(Refused::Full(job));
            }
            q.jobs.push_back(job);
        }
        self.wake_coalesced();
        Ok(())
    }

    /// Queues `job` unless `flag` is already up, and raises it. The job must lower `flag`
    /// (with `SeqCst`) before it looks at whatever the flag announces; a poster that finds the
    /// flag up knows a queued job will see its work. `Ok(false)`: coalesced into the job already
    /// queued.
    ///
    /// Bounded without a capacity check: each flag admits one queued job at a time, so these
    /// jobs number at most the flags in use (one per [`HandlerWaker`](super::HandlerWaker)).
    pub fn post_flagged(&self, flag: &AtomicBool, job: J) -> Result<bool, Refused<J>> {
        if flag.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        {
            let mut q = self.queue.lock();
            if q.phase == Phase::Stopped {
                flag.store(false, Ordering::SeqCst);
                return Err(Refused::Closed(job));
            }
            q.wakes.push_back(job);
        }
        self.wake_coalesced();
        Ok(true)
    }

    fn wake_coalesced(&self) {
        if self.notified.swap(true, Ordering::AcqRel) {
            return; // a wake-up is on its way already
        }
        if self.on_loop_thread() {
            // Posted by the loop itself (a handler, a job, a completion handler): the loop
            // looks at `is_notified` before it waits, so the system call would only make its
            // next poll return at once for nothing.
            return;
        }
        if let Err(e) = self.notify.notify() {
            // The loop checks `is_notified` every turn: a failed wake-up delays the job to the
            // loop's next turn, it does not strand it.
            tracing::warn!(error = %e, "posa reactor: wake-up failed");
        }
    }

    /// Marks the calling thread as this mailbox's loop until the guard drops: posts from it
    /// then skip the wake-up system call. Only for a loop that checks
    /// [`is_notified`](Self::is_notified) before every wait, on the one thread that waits
    /// (the reactor's turn; not Leader/Followers, whose posting thread is not the one polling).
    pub fn enter_loop(&self) -> OnLoop {
        OnLoop(ON_LOOP.with(|c| c.replace(self as *const Self as *const () as usize)))
    }

    fn on_loop_thread(&self) -> bool {
        ON_LOOP.with(|c| c.get() == self as *const Self as *const () as usize)
    }

    /// Wakes the loop without posting anything (to make a sleeping leader look again).
    pub fn wake(&self) {
        if let Err(e) = self.notify.notify() {
            tracing::warn!(error = %e, "posa reactor: wake-up failed");
        }
    }

    /// `true` if jobs were posted (or shutdown requested) since the loop last took a batch.
    pub fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Loop side: acknowledges the wake-up, then moves up to `max` jobs into `out`. Returns
    /// `true` if jobs remain (the loop should not block on its next poll).
    pub fn take_batch(&self, max: usize, out: &mut Vec<J>) -> bool {
        self.notified.store(false, Ordering::SeqCst);
        let mut q = self.queue.lock();
        out.extend(q.wakes.drain(..));
        let n = q.jobs.len().min(max);
        out.extend(q.jobs.drain(..n));
        !q.jobs.is_empty()
    }

    /// Jobs waiting now.
    #[cfg_attr(not(posa_loom), allow(dead_code))] // read by the loom models
    pub fn len(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// `true` if no job waits.
    #[cfg_attr(not(posa_loom), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.queue.lock().phase
    }

    /// Stops intake and asks the loop to drain. Returns `false` if shutdown had already begun.
    pub fn begin_shutdown(&self) -> bool {
        let begun = {
            let mut q = self.queue.lock();
            if q.phase == Phase::Running {
                q.phase = Phase::Draining;
                true
            } else {
                false
            }
        };
        // Always wake: the loop must see the new phase even if it was notified before.
        self.notified.store(true, Ordering::SeqCst);
        if let Err(e) = self.notify.notify() {
            tracing::warn!(error = %e, "posa reactor: wake-up failed");
        }
        begun
    }

    /// Loop side, last step: marks the mailbox stopped and returns the jobs that never ran.
    pub fn stop(&self) -> Vec<J> {
        let mut q = self.queue.lock();
        q.phase = Phase::Stopped;
        q.wakes.clear();
        q.jobs.drain(..).collect()
    }
}

impl<J, N> fmt::Debug for Mailbox<J, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}
