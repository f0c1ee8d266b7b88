//! The cross-thread side of an event loop: [`ReactorHandle`] (post, add, shut down) and
//! [`HandlerWaker`] (wake one handler), shared by [`Reactor`](super::Reactor) and
//! [`LeaderFollowers`](super::LeaderFollowers).
//!
//! # Invariants
//! - Every `shutdown` token is answered once with the loop's report: at once if the loop has
//!   already stopped, else when it publishes the report (under the same lock, so none is
//!   missed between the check and the wait).
//! - Wake-ups of one [`HandlerWaker`] coalesce on its flag (see
//!   [`Mailbox::post_flagged`](super::Mailbox::post_flagged)): a waker can never fill the
//!   mailbox.

use std::fmt;
use std::io;
use std::time::Duration;

use super::{EventHandler, HandlerId, Host, Job, Mailbox, Phase, Readiness, ShutdownReport};
use crate::act::{self, Completer, Token as ActToken};
use crate::error::Refused;
use crate::sync::atomic::AtomicBool;
use crate::sync::{Arc, Mutex};

/// What a loop shares with its handles.
pub(super) struct Shared {
    pub(super) mailbox: Mailbox<Job, Box<dyn super::mailbox::Notify>>,
    pub(super) grace: Mutex<Duration>,
    pub(super) report: Mutex<ReportState>,
}

/// The shutdown report, once there is one, and the tokens waiting for it.
#[derive(Default)]
pub(super) struct ReportState {
    pub(super) done: Option<ShutdownReport>,
    pub(super) waiting: Vec<Completer<ShutdownReport, std::convert::Infallible>>,
}

/// Wakes one handler from any thread: the way work finished elsewhere (a pool job, in
/// Half-Sync/Half-Async) gets back to the event loop that owns the connection.
///
/// Wake-ups coalesce: while one is queued, more cost one atomic swap and queue nothing, so a
/// waker can never fill the loop's mailbox. The handler sees `ready` with `woken: true` on the
/// loop's thread; it must then look at everything the wakers announce, since several wake-ups
/// may have been folded into one.
#[derive(Clone)]
pub struct HandlerWaker {
    id: HandlerId,
    flag: Arc<AtomicBool>,
    handle: ReactorHandle,
}

impl HandlerWaker {
    /// Asks the loop to dispatch the handler. `false` if the loop has stopped.
    pub fn wake(&self) -> bool {
        let flag = Arc::clone(&self.flag);
        let id = self.id;
        let job: Job = Box::new(move |host: &mut dyn Host| {
            // Lowered before the handler runs: a wake-up from now on queues a new dispatch.
            flag.store(false, crate::sync::atomic::Ordering::SeqCst);
            host.wake(
                id,
                Readiness {
                    woken: true,
                    ..Readiness::default()
                },
            );
        });
        self.handle
            .shared
            .mailbox
            .post_flagged(&self.flag, job)
            .is_ok()
    }

    /// The handler it wakes.
    pub fn id(&self) -> HandlerId {
        self.id
    }
}

impl fmt::Debug for HandlerWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerWaker")
            .field("id", &self.id)
            .finish()
    }
}

/// A `Send + Clone` handle to a reactor: post jobs, add handlers, wake it, shut it down.
#[derive(Clone)]
pub struct ReactorHandle {
    pub(super) shared: Arc<Shared>,
}

impl ReactorHandle {
    /// Runs `job` on the reactor's thread with the reactor itself. Bounded: a full mailbox
    /// hands the job back.
    pub fn post(
        &self,
        job: impl FnOnce(&mut dyn Host) + Send + 'static,
    ) -> Result<(), Refused<Job>> {
        self.shared.mailbox.post(Box::new(job))
    }

    /// Adds a handler on the reactor's thread; the token yields its id once it is open.
    pub fn add(
        &self,
        handler: impl EventHandler,
    ) -> ActToken<HandlerId, io::Error, Option<Box<dyn EventHandler>>> {
        let (completer, token) = act::pair_with_residue();
        let handler: Box<dyn EventHandler> = Box::new(handler);
        // The job owns the completer: if the job is dropped unrun, the token sees Abandoned.
        let job = move |r: &mut dyn Host| completer.complete(r.add_boxed(handler));
        if let Err(e) = self.post(job) {
            drop(e.into_inner());
        }
        token
    }

    /// Begins shutdown: intake stops now; handlers drain for up to `grace`; those still open at
    /// the deadline are told to [`force`](super::EventHandler::force) (counted as forced) and
    /// get at most [`Config::linger`](super::Config::linger) to close lingering, then the rest
    /// are closed. A second call with a shorter grace brings the deadline forward. The token
    /// completes with the report when the loop has stopped.
    pub fn shutdown(&self, grace: Duration) -> ActToken<ShutdownReport, std::convert::Infallible> {
        let (completer, token) = act::pair();
        {
            let mut report = self.shared.report.lock();
            match report.done {
                Some(done) => {
                    drop(report);
                    completer.complete(Ok(done));
                    return token;
                }
                None => report.waiting.push(completer),
            }
        }
        {
            // The first request sets the grace; a later, shorter one brings the deadline
            // forward (a second signal forces at once), and wakes the loop to see it.
            let mut g = self.shared.grace.lock();
            if self.shared.mailbox.phase() == Phase::Running {
                *g = grace;
            } else if grace < *g {
                *g = grace;
                drop(g);
                self.shared.mailbox.wake();
            }
        }
        self.shared.mailbox.begin_shutdown();
        token
    }

    /// A waker for handler `id`: any thread may call [`HandlerWaker::wake`] to have the loop
    /// dispatch the handler's [`ready`](EventHandler::ready) (with [`Readiness::woken`]) soon.
    pub fn waker(&self, id: HandlerId) -> HandlerWaker {
        HandlerWaker {
            id,
            flag: Arc::new(AtomicBool::new(false)),
            handle: self.clone(),
        }
    }

    /// `true` if both handles name the same event loop.
    pub fn same_loop(&self, other: &ReactorHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The reactor's lifecycle phase.
    pub fn phase(&self) -> Phase {
        self.shared.mailbox.phase()
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("phase", &self.phase())
            .finish()
    }
}

/// Stores the final report and answers every `shutdown` token waiting for it.
pub(super) fn publish_report(shared: &Shared, report: ShutdownReport) {
    let waiting = {
        let mut state = shared.report.lock();
        state.done = Some(report);
        std::mem::take(&mut state.waiting)
    };
    for completer in waiting {
        completer.complete(Ok(report));
    }
}
