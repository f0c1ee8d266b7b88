//! What an upcall may touch: [`Context`], split from the handler table so a handler can be
//! out of its slot (running) while it arms timers, spawns handlers and asks to run again.
//!
//! The same `Context` serves both event-loop models: a [`Reactor`](super::Reactor) owns its
//! timer queue, the threads of a [`LeaderFollowers`](super::LeaderFollowers) pool share one
//! under a lock (and wake the leader when a new timer becomes the earliest).

use std::io;
use std::time::{Duration, Instant};

use mio::{Interest, Registry};

use super::{
    EventHandler, HandlerId, HandlerWaker, MissedTicks, ReactorHandle, Readiness, TimerId,
    TimerQueue,
};
use crate::clock::SharedClock;
use crate::sync::Mutex;

/// The pieces of a reactor an upcall may touch, split from the handler table.
pub(super) struct Core {
    pub(super) registry: Registry,
    pub(super) timers: TimerQueue<HandlerId>,
    pub(super) spawned: Vec<Box<dyn EventHandler>>,
    pub(super) again: Vec<(HandlerId, Readiness)>,
    pub(super) handle: ReactorHandle,
    pub(super) clock: SharedClock,
    pub(super) draining: bool,
}

/// How an upcall reaches the timer queue: owned by a single-threaded reactor, or shared under a
/// lock by the threads of a Leader/Followers pool.
pub(super) enum TimerAccess<'a> {
    Owned(&'a mut TimerQueue<HandlerId>),
    Shared {
        queue: &'a Mutex<TimerQueue<HandlerId>>,
        /// Wakes the leader when a new timer becomes the earliest (it may be asleep past it).
        wake: &'a dyn Fn(),
    },
}

impl TimerAccess<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut TimerQueue<HandlerId>) -> R) -> R {
        match self {
            TimerAccess::Owned(q) => f(q),
            TimerAccess::Shared { queue, wake } => {
                let mut q = queue.lock();
                let before = q.next_deadline();
                let r = f(&mut q);
                let after = q.next_deadline();
                drop(q);
                if after.is_some() && (before.is_none() || after < before) {
                    wake();
                }
                r
            }
        }
    }
}

impl Core {
    pub(super) fn context(&mut self, id: HandlerId, now: Instant) -> Context<'_> {
        Context {
            id,
            registry: &self.registry,
            timers: TimerAccess::Owned(&mut self.timers),
            spawned: &mut self.spawned,
            again: &mut self.again,
            handle: &self.handle,
            draining: self.draining,
            now,
            close: false,
        }
    }
}

/// What a handler can do during an upcall. See [`EventHandler`].
pub struct Context<'a> {
    pub(super) id: HandlerId,
    pub(super) registry: &'a Registry,
    pub(super) timers: TimerAccess<'a>,
    pub(super) spawned: &'a mut Vec<Box<dyn EventHandler>>,
    pub(super) again: &'a mut Vec<(HandlerId, Readiness)>,
    pub(super) handle: &'a ReactorHandle,
    pub(super) draining: bool,
    pub(super) now: Instant,
    pub(super) close: bool,
}

impl Context<'_> {
    /// This handler's id.
    pub fn id(&self) -> HandlerId {
        self.id
    }

    /// The registry, to register sources under another token (rarely needed).
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// Registers `source` for `interest` under this handler's token.
    pub fn register<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.register(source, self.id.0, interest)
    }

    /// Changes the interest of a source registered under this handler's token.
    pub fn reregister<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.reregister(source, self.id.0, interest)
    }

    /// Deregisters a source (dropping it does the same).
    pub fn deregister<S: mio::event::Source + ?Sized>(&self, source: &mut S) -> io::Result<()> {
        self.registry.deregister(source)
    }

    /// The reactor clock's time at the start of this upcall.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Arms a one-shot timer `after` from now; [`EventHandler::timeout`] gets its id.
    pub fn set_timer(&mut self, after: Duration) -> TimerId {
        let (id, deadline) = (self.id, self.now + after);
        self.timers.with(|q| q.arm(id, deadline))
    }

    /// Arms a periodic timer.
    pub fn set_periodic(&mut self, period: Duration, missed: MissedTicks) -> TimerId {
        let (id, first) = (self.id, self.now + period);
        self.timers
            .with(|q| q.arm_periodic(id, first, period, missed))
    }

    /// Moves a timer to `after` from now (cheap when later). `false` if it already fired or
    /// was cancelled.
    pub fn reset_timer(&mut self, timer: TimerId, after: Duration) -> bool {
        let deadline = self.now + after;
        self.timers.with(|q| q.reset(timer, deadline))
    }

    /// Disarms a timer; `false` if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.timers.with(|q| q.cancel(timer))
    }

    /// Adds another handler to this reactor, opened right after this upcall returns.
    pub fn spawn(&mut self, handler: impl EventHandler) {
        self.spawned.push(Box::new(handler));
    }

    /// Dispatches this handler again next turn with `readiness` (for a handler that stopped
    /// draining early to respect a budget).
    pub fn call_again(&mut self, readiness: Readiness) {
        self.again.push((self.id, readiness));
    }

    /// A waker for this handler, for work that finishes on other threads.
    pub fn waker(&self) -> HandlerWaker {
        self.handle().waker(self.id)
    }

    /// Closes this handler when the upcall returns.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// `true` once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// A handle to this reactor (to post, or to shut it down).
    pub fn handle(&self) -> &ReactorHandle {
        self.handle
    }
}
