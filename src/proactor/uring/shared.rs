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

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::sync::atomic::{AtomicBool, Ordering::SeqCst};
use crate::sync::{Arc, Mutex, dekker_fence};

/// Jobs an inbox holds at most.
pub(super) const JOB_CAPACITY: usize = 65_536;

/// What a key names on its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Conn(u64),
    Listener(u64),
    Timers,
    Files,
    /// Buffers came back to a ring that had run dry.
    Buffers,
}

/// A job run on the loop thread with the loop.
pub(super) type Job = Box<dyn FnOnce(&mut super::event_loop::RingLoop) + Send>;

#[derive(Default)]
pub(super) struct Inbox {
    pub(super) keys: Vec<Key>,
    pub(super) jobs: Vec<Job>,
    pub(super) shutdown: Option<Duration>,
    /// The loop has stopped: nothing more is taken.
    pub(super) stopped: bool,
}

/// The cross-thread half of one ring loop.
pub(super) struct RingShared {
    pub(super) inbox: Mutex<Inbox>,
    notified: AtomicBool,
    pub(super) event_fd: OwnedFd,
}

impl RingShared {
    pub(super) fn new(event_fd: OwnedFd) -> Self {
        RingShared {
            inbox: Mutex::new(Inbox::default()),
            notified: AtomicBool::new(false),
            event_fd,
        }
    }

    /// Raises the flag and signals the eventfd if it was down.
    fn notify(&self) {
        dekker_fence(); // pairs with the fence in `lower`: the push before, the flag after
        if !self.notified.swap(true, SeqCst) {
            super::sys::signal(&self.event_fd);
        }
    }

    /// Loop side, before taking the inbox: lower the flag.
    pub(super) fn lower(&self) {
        self.notified.store(false, SeqCst);
        dekker_fence();
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

    /// Asks the loop to drain for `grace` and stop. The first request's grace holds.
    pub(super) fn shutdown(&self, grace: Duration) {
        {
            let mut inbox = self.inbox.lock();
            if inbox.stopped {
                return;
            }
            inbox.shutdown.get_or_insert(grace);
        }
        self.notify();
    }
}

/// Wakes one key of a ring loop from any thread (the caller's side of a connection, a
/// listener, the timers): what `LoopWaker::Ring` holds.
#[derive(Clone)]
pub(crate) struct RingWaker {
    shared: Arc<RingShared>,
    key: Key,
    /// Raised while the key waits in the inbox; the loop lowers it when it takes the key.
    queued: Arc<AtomicBool>,
}

impl RingWaker {
    pub(super) fn new(shared: Arc<RingShared>, key: Key) -> Self {
        RingWaker {
            shared,
            key,
            queued: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the loop to look at this key.
    pub(crate) fn wake(&self) {
        self.shared.wake(self.key, &self.queued);
    }

    /// Loop side: the key was taken; a wake from now on queues it again.
    pub(super) fn taken(&self) {
        self.queued.store(false, SeqCst);
    }
}
