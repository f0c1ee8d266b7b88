//! What other threads share with a ring loop: its inbox (connections, listeners and timer
//! queues with new operations or cancellations, jobs, a shutdown request) and the eventfd
//! that wakes it. Nothing but the loop thread touches the ring itself.
//!
//! # Invariants
//! - A wake-up is never lost: a waker pushes its key under the inbox lock, *then* raises
//!   `notified` and, if it was down, signals the eventfd; the loop lowers `notified` *before*
//!   it takes the inbox. Either the loop's take sees the key, or the waker saw the flag down
//!   and signalled (both `SeqCst`), and the loop's eventfd read completes.
//! - Wake-ups coalesce per key: a key is queued at most once until the loop takes it (its
//!   `queued` flag), so wakers cannot grow the inbox past the number of live keys.
//! - Jobs are bounded (`JOB_CAPACITY`): a full or stopped inbox hands the job back.
//!
//! Public only in a `--cfg posa_loom` build, for the models in `loom-tests/tests/uring.rs`.
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::sync::atomic::{AtomicBool, Ordering::SeqCst};
use crate::sync::{Arc, Mutex, dekker_fence};

/// Jobs an inbox holds at most.
pub(super) const JOB_CAPACITY: usize = 65_536;

/// What a key names on its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A connection, by its slab key.
    Conn(u64),
    /// A listener, by its slab key.
    Listener(u64),
    /// The loop's timer queue.
    Timers,
    /// The loop's file reads (a cancellation).
    Files,
    /// Buffers came back to a ring that had run dry.
    Buffers,
}

/// A job run on the loop thread with the loop.
pub(super) type Job = Box<dyn FnOnce(&mut super::event_loop::RingLoop) + Send>;

/// What the loop takes from its inbox in a turn.
#[derive(Default)]
pub struct Inbox {
    /// Keys woken since the last turn.
    pub keys: Vec<Key>,
    pub(super) jobs: Vec<Job>,
    pub(super) shutdown: Option<Duration>,
    /// The loop has stopped: nothing more is taken.
    pub(super) stopped: bool,
}

crate::sync::const_thread_local! {
    /// The `RingShared` whose loop runs on this thread (its address), 0 on other threads.
    static ON_LOOP: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// The cross-thread half of one ring loop.
pub struct RingShared {
    pub(super) inbox: Mutex<Inbox>,
    notified: AtomicBool,
    pub(super) event_fd: OwnedFd,
}

impl RingShared {
    /// The shared half of a loop woken through `event_fd`.
    pub fn new(event_fd: OwnedFd) -> Self {
        RingShared {
            inbox: Mutex::new(Inbox::default()),
            notified: AtomicBool::new(false),
            event_fd,
        }
    }

    /// Marks the calling thread as this loop's: wakes from it skip the eventfd (the loop
    /// looks at its inbox before it waits).
    pub(super) fn enter(&self) {
        ON_LOOP.with(|c| c.set(self as *const RingShared as usize));
    }

    fn on_loop_thread(&self) -> bool {
        ON_LOOP.with(|c| c.get() == self as *const RingShared as usize)
    }

    /// Loop side, before it waits: something was queued from the loop thread itself.
    pub(super) fn pending(&self) -> bool {
        let inbox = self.inbox.lock();
        !inbox.keys.is_empty() || !inbox.jobs.is_empty()
    }

    /// Raises the flag and signals the eventfd if it was down. A wake from the loop's own
    /// thread (an operation initiated in a completion handler) needs no signal: the loop is
    /// awake and looks at its inbox before it waits (`pending`).
    fn notify(&self) {
        if self.on_loop_thread() {
            return;
        }
        dekker_fence(); // pairs with the fence in `lower`: the push before, the flag after
        if !self.notified.swap(true, SeqCst) {
            super::sys::signal(&self.event_fd);
        }
    }

    /// Loop side, each turn: lowers the flag, then takes what the inbox holds (keys, jobs; the
    /// shutdown request stays, for `shutdown_requested`).
    pub fn take(&self) -> Inbox {
        // A swap, not a store: the same instruction on x86 (a SeqCst store is an `xchg`), and
        // loom 0.7 builds impossible histories from a store racing an RMW on one atomic
        // (tokio-rs/loom#254): with a store, the loop's own lowering could read back as up.
        self.notified.swap(false, SeqCst);
        dekker_fence(); // pairs with the fence in `notify`
        let mut inbox = self.inbox.lock();
        Inbox {
            keys: std::mem::take(&mut inbox.keys),
            jobs: std::mem::take(&mut inbox.jobs),
            shutdown: inbox.shutdown,
            stopped: false,
        }
    }

    /// Reads and resets the eventfd's counter (non-blocking): `true` if a wake-up was
    /// signalled. For the loom models, which have no ring to complete the eventfd read.
    #[cfg(posa_loom)]
    pub fn take_signal(&self) -> bool {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from a descriptor this value owns.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.event_fd),
                (&mut counter as *mut u64).cast(),
                8,
            )
        };
        n == 8 && counter > 0
    }

    /// Queues `key` (once per `queued` flag) and wakes the loop.
    pub(super) fn wake(&self, key: Key, queued: &AtomicBool) {
        if queued.swap(true, SeqCst) {
            return; // already queued: the loop will look at it
        }
        {
            let mut inbox = self.inbox.lock();
            if inbox.stopped {
                return;
            }
            inbox.keys.push(key);
        }
        self.notify();
    }

    /// Queues `job` for the loop. A full or stopped inbox hands it back.
    pub(super) fn post(&self, job: Job) -> Result<(), Job> {
        {
            let mut inbox = self.inbox.lock();
            if inbox.stopped || inbox.shutdown.is_some() || inbox.jobs.len() >= JOB_CAPACITY {
                return Err(job);
            }
            inbox.jobs.push(job);
        }
        self.notify();
        Ok(())
    }

    /// Asks the loop to drain for `grace` and stop. A later, shorter grace brings the deadline
    /// forward.
    pub(super) fn shutdown(&self, grace: Duration) {
        {
            let mut inbox = self.inbox.lock();
            if inbox.stopped {
                return;
            }
            // The first request's grace holds, unless a later one is shorter (a second signal).
            inbox.shutdown = Some(inbox.shutdown.map_or(grace, |g| g.min(grace)));
        }
        self.notify();
    }
}

/// Wakes one key of a ring loop from any thread (the caller's side of a connection, a
/// listener, the timers): what `LoopWaker::Ring` holds.
#[derive(Clone)]
pub struct RingWaker {
    shared: Arc<RingShared>,
    key: Key,
    /// Raised while the key waits in the inbox; the loop lowers it when it takes the key.
    queued: Arc<AtomicBool>,
}

impl RingWaker {
    /// A waker for `key` on the loop `shared` belongs to.
    pub fn new(shared: Arc<RingShared>, key: Key) -> Self {
        RingWaker {
            shared,
            key,
            queued: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the loop to look at this key.
    pub fn wake(&self) {
        self.shared.wake(self.key, &self.queued);
    }

    /// Loop side: the key was taken; a wake from now on queues it again.
    pub fn taken(&self) {
        self.queued.swap(false, SeqCst); // a swap: see `RingShared::take`
    }
}
