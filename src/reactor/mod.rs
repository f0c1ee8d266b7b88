//! Reactor: demultiplex I/O readiness and timer expiries to event handlers, on one thread.
//!
//! A [`Reactor`] owns a `mio::Poll`, a table of [`EventHandler`]s keyed by generation-tagged
//! tokens, a [`TimerQueue`] and a [`Mailbox`] other threads post to through a
//! [`ReactorHandle`]. Each turn of the loop waits for readiness (until the next timer at most),
//! dispatches every event to its handler, runs posted jobs and fires due timers, each within a
//! budget so that no single source can starve the others.
//!
//! # Invariants
//! - Every handler is opened once and closed once ([`EventHandler::close`]), whether it closes
//!   itself, fails to open, panics, or is closed at shutdown.
//! - A token carries its slot's generation: an event still queued for a closed handler can never
//!   reach a new handler that reuses the slot (mio#219). The same holds for timers.
//! - A handler is taken out of its slot for the duration of an upcall, so it is never dispatched
//!   twice at once, and a panic in it is caught: that handler is closed and reported, the loop
//!   and the other handlers go on.
//! - Readiness is edge-triggered: a handler must read or write until `WouldBlock`. A handler that
//!   stops early on purpose (a budget) calls [`Context::call_again`] and is dispatched again next
//!   turn with the same readiness, so no edge is lost.
//!
//! ```
//! use posa::reactor::{Context, EventHandler, Reactor, Readiness, TimerId};
//! use std::time::Duration;
//!
//! /// Fires three times, then closes itself; the third close shuts the reactor down.
//! struct Ticker { left: u32 }
//! impl EventHandler for Ticker {
//!     fn open(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
//!         cx.set_timer(Duration::from_millis(1));
//!         Ok(())
//!     }
//!     fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
//!     fn timeout(&mut self, _: TimerId, cx: &mut Context<'_>) {
//!         self.left -= 1;
//!         if self.left == 0 {
//!             cx.close();
//!             let _report = cx.handle().shutdown(Duration::from_secs(1)); // a token; run() returns it too
//!         } else {
//!             cx.set_timer(Duration::from_millis(1));
//!         }
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! reactor.add(Ticker { left: 3 })?;
//! let report = reactor.run()?;
//! assert_eq!(report.forced, 0);
//! # Ok::<(), std::io::Error>(())
//! ```

mod group;
mod lf;
mod mailbox;
pub mod serial;
mod table;
pub mod timer;

pub use group::ReactorGroup;
pub use lf::LeaderFollowers;
pub use mailbox::{Mailbox, Notify, Phase};
/// Readiness interests a handler registers for (mio's, re-exported so handlers need no mio
/// dependency of their own).
pub use mio::Interest;
pub use serial::{Finish, SerialCell, Work};
pub use timer::{MissedTicks, TimerId, TimerQueue};

use table::Table;

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};

use crate::act::{self, Completer, Token as ActToken};
use crate::clock::{Clock, SystemClock};
use crate::error::Refused;
use crate::panic_message;
use crate::sync::atomic::AtomicBool;
use crate::sync::{Arc, Mutex};

const WAKE_TOKEN: Token = Token(usize::MAX);
const INDEX_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// Names a handler registered with a reactor; its `mio::Token` carries a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(Token);

impl HandlerId {
    fn new(index: usize, generation: usize) -> Self {
        debug_assert!(index <= INDEX_MASK && generation <= usize::MAX >> INDEX_BITS);
        Self(Token((generation << INDEX_BITS) | index))
    }

    fn index(self) -> usize {
        self.0.0 & INDEX_MASK
    }

    /// The token the handler's sources are registered with.
    pub fn token(self) -> Token {
        self.0
    }
}

/// What an event says about a source, flattened from `mio::event::Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Reading will not block (or will return 0 at end of stream).
    pub readable: bool,
    /// Writing will not block.
    pub writable: bool,
    /// The source has an error pending (`SO_ERROR`).
    pub error: bool,
    /// The peer closed its write side (read returns 0 once drained).
    pub read_closed: bool,
    /// Our write side is closed (the peer reset or shut down reading).
    pub write_closed: bool,
    /// A [`HandlerWaker`] asked for this dispatch (work finished elsewhere is ready).
    pub woken: bool,
}

impl Readiness {
    fn from_event(e: &mio::event::Event) -> Self {
        Self {
            readable: e.is_readable(),
            writable: e.is_writable(),
            error: e.is_error(),
            read_closed: e.is_read_closed(),
            write_closed: e.is_write_closed(),
            woken: false,
        }
    }
}

/// Why a handler was closed.
#[derive(Debug)]
pub enum CloseReason {
    /// The handler asked for it ([`Context::close`]).
    Closed,
    /// [`EventHandler::open`] failed with this error.
    OpenFailed(io::Error),
    /// An upcall panicked; the payload's message, if it had one.
    Panicked(String),
    /// The reactor shut down before the handler finished draining.
    Shutdown,
}

/// A reactor's user code: reacts to readiness, timers, drain requests; closed exactly once.
pub trait EventHandler: Send + 'static {
    /// Called once when added: register sources ([`Context::register`]) and arm timers. An error
    /// closes the handler at once with [`CloseReason::OpenFailed`].
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()>;

    /// A source registered with this handler's token is ready. Drain it until `WouldBlock`.
    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>);

    /// A timer this handler armed expired.
    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        let _ = (timer, cx);
    }

    /// Shutdown began: stop taking new work and close when done. The default closes at once;
    /// a connection overrides it to flush what it owes first.
    fn drain(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The handler is being removed: release what it holds. Called exactly once. Sources are
    /// deregistered when they drop; timers are cancelled by the reactor.
    fn close(&mut self, reason: &CloseReason, cx: &mut Context<'_>) {
        let _ = (reason, cx);
    }
}

/// What a posted job can do with the event loop it runs on (a [`Reactor`], or a thread of a
/// [`LeaderFollowers`] pool).
pub trait Host {
    /// Adds and opens a handler.
    fn add_boxed(&mut self, handler: Box<dyn EventHandler>) -> io::Result<HandlerId>;
    /// Closes a handler (see [`Reactor::close`]); `false` if it is gone or mid-upcall.
    fn close(&mut self, id: HandlerId) -> bool;
    /// Dispatches handler `id` (if it is still there) with `readiness` on this loop's next turn.
    fn wake(&mut self, id: HandlerId, readiness: Readiness);
    /// Handlers open now.
    fn len(&self) -> usize;
    /// `true` if no handler is open.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A job posted to an event loop.
pub type Job = Box<dyn FnOnce(&mut dyn Host) + Send>;

/// What a reactor did at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Handlers that closed themselves while draining.
    pub drained: usize,
    /// Handlers still open at the drain deadline, closed with [`CloseReason::Shutdown`].
    pub forced: usize,
    /// Posted jobs that never ran.
    pub jobs_dropped: usize,
}

struct Shared {
    mailbox: Mailbox<Job, mio::Waker>,
    grace: Mutex<Duration>,
    report: Mutex<ReportState>,
}

#[derive(Default)]
struct ReportState {
    done: Option<ShutdownReport>,
    waiting: Vec<Completer<ShutdownReport, std::convert::Infallible>>,
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
    shared: Arc<Shared>,
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

    /// Begins shutdown: intake stops now; handlers drain for up to `grace`, the rest are closed.
    /// The token completes with the report when the loop has stopped.
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
        if self.shared.mailbox.phase() == Phase::Running {
            *self.shared.grace.lock() = grace;
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

/// Budgets and thresholds of a reactor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Readiness events taken from the OS per turn.
    pub event_budget: usize,
    /// Posted jobs run per turn.
    pub post_budget: usize,
    /// Timer expiries fired per turn.
    pub timer_budget: usize,
    /// Jobs the mailbox holds before posting fails with [`Refused::Full`].
    pub mailbox_capacity: usize,
    /// Handlers the reactor holds at most; [`Reactor::add`] fails beyond it.
    pub max_handlers: usize,
    /// An upcall running longer than this is reported (`tracing::warn`); `None` disables timing.
    pub stall_threshold: Option<Duration>,
    /// Interceptors around every upcall ([`Point::ReactorEvent`](crate::intercept::Point)); a
    /// refused upcall is skipped (the handler is not told; use with care with edge-triggered
    /// readiness). Default: none.
    pub interceptors: crate::intercept::Chain,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            event_budget: 1024,
            post_budget: 256,
            timer_budget: 1024,
            mailbox_capacity: 65_536,
            max_handlers: 1 << 20,
            stall_threshold: Some(Duration::from_millis(100)),
            interceptors: crate::intercept::Chain::new(),
        }
    }
}

/// Counters a reactor keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Upcalls made (ready, timeout, drain).
    pub dispatches: u64,
    /// Upcalls that ran past the stall threshold.
    pub stalls: u64,
    /// Upcalls and jobs that panicked.
    pub panics: u64,
    /// Handlers opened.
    pub opened: u64,
    /// Handlers closed.
    pub closed: u64,
}

impl Core {
    fn context(&mut self, id: HandlerId, now: Instant) -> Context<'_> {
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

/// The pieces of a reactor an upcall may touch, split from the handler table.
struct Core {
    registry: Registry,
    timers: TimerQueue<HandlerId>,
    spawned: Vec<Box<dyn EventHandler>>,
    again: Vec<(HandlerId, Readiness)>,
    handle: ReactorHandle,
    clock: std::sync::Arc<dyn Clock>,
    draining: bool,
}

/// How an upcall reaches the timer queue: owned by a single-threaded reactor, or shared under a
/// lock by the threads of a Leader/Followers pool.
enum TimerAccess<'a> {
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

/// What a handler can do during an upcall. See [`EventHandler`].
pub struct Context<'a> {
    id: HandlerId,
    registry: &'a Registry,
    timers: TimerAccess<'a>,
    spawned: &'a mut Vec<Box<dyn EventHandler>>,
    again: &'a mut Vec<(HandlerId, Readiness)>,
    handle: &'a ReactorHandle,
    draining: bool,
    now: Instant,
    close: bool,
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

/// Builds a [`Reactor`] with a custom [`Config`] or [`Clock`].
#[derive(Default)]
pub struct Builder {
    config: Config,
    clock: Option<std::sync::Arc<dyn Clock>>,
}

impl Builder {
    /// Sets the budgets and thresholds.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock timers run on (a [`ManualClock`](crate::clock::ManualClock) in tests;
    /// after advancing it, post a job to wake the loop).
    pub fn clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Creates the reactor (a `mio::Poll` and its waker).
    pub fn build(self) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        let shared = Arc::new(Shared {
            mailbox: Mailbox::new(self.config.mailbox_capacity, waker),
            grace: Mutex::new(Duration::ZERO),
            report: Mutex::new(ReportState::default()),
        });
        let clock = self
            .clock
            .unwrap_or_else(|| std::sync::Arc::new(SystemClock));
        Ok(Reactor {
            events: Events::with_capacity(self.config.event_budget.max(1)),
            poll,
            table: Table::new(),
            core: Core {
                registry,
                timers: TimerQueue::new(),
                spawned: Vec::new(),
                again: Vec::new(),
                handle: ReactorHandle { shared },
                clock,
                draining: false,
            },
            config: self.config,
            stats: Stats::default(),
            jobs: Vec::new(),
            ready: Vec::new(),
            more_jobs: false,
            drain_deadline: None,
            drained: 0,
        })
    }
}

/// A single-threaded event loop on `mio`. See the [module docs](self).
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// A slot's value is `None` while its handler is out for an upcall.
    table: Table<Option<Box<dyn EventHandler>>>,
    core: Core,
    config: Config,
    stats: Stats,
    jobs: Vec<Job>,
    ready: Vec<(HandlerId, Readiness)>,
    more_jobs: bool,
    drain_deadline: Option<Instant>,
    drained: usize,
}

impl Reactor {
    /// A reactor with the default [`Config`] on the system clock.
    pub fn new() -> io::Result<Self> {
        Builder::default().build()
    }

    /// A builder for a custom configuration or clock.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ReactorHandle {
        self.core.handle.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Handlers open now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// `true` if no handler is open.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Closes handler `id` (its `close` runs with [`CloseReason::Closed`]). Returns `false` if it
    /// is already gone, or if it is in the middle of an upcall (it can close itself then).
    pub fn close(&mut self, id: HandlerId) -> bool {
        let live = self.table.get(id).is_some_and(Option::is_some);
        if live {
            self.close_slot(id, CloseReason::Closed);
        }
        live
    }

    /// Adds and opens a handler on this thread.
    pub fn add(&mut self, handler: impl EventHandler) -> io::Result<HandlerId> {
        self.add_boxed(Box::new(handler))
    }

    fn add_boxed(&mut self, mut handler: Box<dyn EventHandler>) -> io::Result<HandlerId> {
        let id = self.table.insert(None, self.config.max_handlers)?;
        self.stats.opened += 1;
        let now = self.core.clock.now();
        let mut cx = self.core.context(id, now);
        match catch_unwind(AssertUnwindSafe(|| handler.open(&mut cx))) {
            Ok(Ok(())) => {
                let close = cx.close;
                if let Some(slot) = self.table.get_mut(id) {
                    *slot = Some(handler);
                }
                if close {
                    self.close_slot(id, CloseReason::Closed);
                }
                self.open_spawned();
                Ok(id)
            }
            Ok(Err(e)) => {
                let kind = e.kind();
                let msg = e.to_string();
                self.finish_close(id, handler, CloseReason::OpenFailed(e));
                Err(io::Error::new(kind, msg))
            }
            Err(panic) => {
                let msg = panic_message(&*panic);
                self.stats.panics += 1;
                tracing::error!(handler = ?id, panic = %msg, "posa reactor: open panicked");
                self.finish_close(id, handler, CloseReason::Panicked(msg.clone()));
                Err(io::Error::other(format!("handler open panicked: {msg}")))
            }
        }
    }

    fn open_spawned(&mut self) {
        while let Some(h) = self.core.spawned.pop() {
            if let Err(e) = self.add_boxed(h) {
                tracing::warn!(error = %e, "posa reactor: spawned handler failed to open");
            }
        }
    }

    /// Runs one upcall on handler `id` if it is (still) there.
    fn dispatch(
        &mut self,
        id: HandlerId,
        upcall: impl FnOnce(&mut dyn EventHandler, &mut Context<'_>),
    ) {
        // A stale token (the handler it named is gone) finds nothing.
        let Some(mut handler) = self.table.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.stats.dispatches += 1;
        let now = self.core.clock.now();
        let mut cx = self.core.context(id, now);
        let (result, stalled) = timed_upcall(id, &self.config, || upcall(&mut *handler, &mut cx));
        let close = cx.close;
        if stalled {
            self.stats.stalls += 1;
        }
        match result {
            Ok(()) if close => self.finish_close(id, handler, CloseReason::Closed),
            Ok(()) => {
                if let Some(slot) = self.table.get_mut(id) {
                    *slot = Some(handler);
                }
            }
            Err(panic) => {
                let msg = panic_message(&*panic);
                self.stats.panics += 1;
                tracing::error!(handler = ?id, panic = %msg, "posa reactor: handler panicked; closing it");
                self.finish_close(id, handler, CloseReason::Panicked(msg));
            }
        }
        self.open_spawned();
    }

    fn close_slot(&mut self, id: HandlerId, reason: CloseReason) {
        if let Some(handler) = self.table.get_mut(id).and_then(Option::take) {
            self.finish_close(id, handler, reason);
        }
    }

    /// Calls `close` once, cancels the handler's timers and frees its slot (new generation).
    fn finish_close(
        &mut self,
        id: HandlerId,
        mut handler: Box<dyn EventHandler>,
        reason: CloseReason,
    ) {
        let now = self.core.clock.now();
        let mut cx = self.core.context(id, now);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.close(&reason, &mut cx))) {
            self.stats.panics += 1;
            tracing::error!(handler = ?id, panic = %panic_message(&*panic), "posa reactor: close panicked");
        }
        drop(handler);
        self.core.timers.cancel_owned_by(|owner| *owner == id);
        self.table.remove(id);
        self.stats.closed += 1;
        if self.core.draining && matches!(reason, CloseReason::Closed) {
            self.drained += 1;
        }
    }

    /// Runs until shutdown completes; returns what shutdown did.
    pub fn run(&mut self) -> io::Result<ShutdownReport> {
        loop {
            if let Some(report) = self.turn()? {
                return Ok(report);
            }
        }
    }

    /// One turn: wait (bounded by the next timer), dispatch events, run posted jobs, fire
    /// timers. Returns the report once shutdown has completed.
    pub fn turn(&mut self) -> io::Result<Option<ShutdownReport>> {
        let now = self.core.clock.now();
        if !self.core.draining && self.core.handle.shared.mailbox.phase() == Phase::Draining {
            self.begin_drain(now);
        }
        if let Some(deadline) = self.drain_deadline
            && (self.table.len() == 0 || now >= deadline)
        {
            return Ok(Some(self.finish_shutdown()));
        }

        let mut timeout = self
            .core
            .timers
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        if !self.core.again.is_empty() || self.more_jobs {
            timeout = Some(Duration::ZERO);
        }
        if let Some(deadline) = self.drain_deadline {
            let left = deadline.saturating_duration_since(now);
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e),
        }

        let mut ready = std::mem::take(&mut self.ready);
        let mut woken = false;
        for event in self.events.iter() {
            if event.token() == WAKE_TOKEN {
                woken = true;
            } else {
                ready.push((HandlerId(event.token()), Readiness::from_event(event)));
            }
        }
        ready.append(&mut self.core.again);
        for (id, readiness) in ready.drain(..) {
            self.dispatch(id, |h, cx| h.ready(readiness, cx));
        }
        self.ready = ready;

        if woken || self.more_jobs || self.core.handle.shared.mailbox.is_notified() {
            let mut jobs = std::mem::take(&mut self.jobs);
            self.more_jobs = self
                .core
                .handle
                .shared
                .mailbox
                .take_batch(self.config.post_budget, &mut jobs);
            for job in jobs.drain(..) {
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job(self))) {
                    self.stats.panics += 1;
                    tracing::error!(panic = %panic_message(&*panic), "posa reactor: posted job panicked");
                }
            }
            self.jobs = jobs;
        }

        let now = self.core.clock.now();
        for _ in 0..self.config.timer_budget {
            let Some((timer, owner)) = self.core.timers.poll(now) else {
                break;
            };
            self.dispatch(owner, |h, cx| h.timeout(timer, cx));
        }
        Ok(None)
    }

    fn begin_drain(&mut self, now: Instant) {
        self.core.draining = true;
        let grace = *self.core.handle.shared.grace.lock();
        self.drain_deadline = Some(now + grace);
        tracing::info!(
            ?grace,
            handlers = self.table.len(),
            "posa reactor: draining"
        );
        let ids = self.table.ids();
        for id in ids {
            self.dispatch(id, |h, cx| h.drain(cx));
        }
    }

    fn finish_shutdown(&mut self) -> ShutdownReport {
        let ids = self.table.ids();
        let forced = ids.len();
        for id in ids {
            self.close_slot(id, CloseReason::Shutdown);
        }
        let jobs_dropped = self.core.handle.shared.mailbox.stop().len();
        let report = ShutdownReport {
            drained: self.drained,
            forced,
            jobs_dropped,
        };
        tracing::info!(?report, "posa reactor: stopped");
        publish_report(&self.core.handle.shared, report);
        report
    }
}

impl Host for Reactor {
    fn add_boxed(&mut self, handler: Box<dyn EventHandler>) -> io::Result<HandlerId> {
        Reactor::add_boxed(self, handler)
    }
    fn close(&mut self, id: HandlerId) -> bool {
        Reactor::close(self, id)
    }
    fn wake(&mut self, id: HandlerId, readiness: Readiness) {
        self.core.again.push((id, readiness));
    }
    fn len(&self) -> usize {
        self.table.len()
    }
}

impl Drop for Reactor {
    /// A reactor dropped without running to shutdown still closes every handler exactly once.
    fn drop(&mut self) {
        if self.core.handle.shared.mailbox.phase() != Phase::Stopped {
            self.core.draining = true;
            self.finish_shutdown();
        }
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("handlers", &self.table.len())
            .field("timers", &self.core.timers.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Runs one upcall under `catch_unwind`, inside the interceptor chain, and reports it
/// (`tracing::warn`) if it ran longer than the stall threshold: the one dispatch path of both
/// event-loop models. Returns the upcall's result and whether it stalled.
fn timed_upcall(
    id: HandlerId,
    config: &Config,
    upcall: impl FnOnce(),
) -> (std::thread::Result<()>, bool) {
    use crate::intercept::{Dispatch, Outcome, Point};
    let threshold = config.stall_threshold;
    let chain = &config.interceptors;
    let dispatch = (!chain.is_empty()).then(|| Dispatch::new(Point::ReactorEvent, id.0.0 as u64));
    if let Some(d) = &dispatch
        && let Err(why) = chain.before(d)
    {
        tracing::trace!(handler = ?id, %why, "posa reactor: upcall refused by an interceptor");
        return (Ok(()), false);
    }
    let started = (threshold.is_some() || dispatch.is_some()).then(Instant::now);
    let result = catch_unwind(AssertUnwindSafe(upcall));
    if let (Some(d), Some(started)) = (&dispatch, started) {
        let outcome = if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Panicked
        };
        chain.after(d, outcome, started.elapsed());
    }
    let stalled = match (started, threshold) {
        (Some(started), Some(threshold)) => {
            let took = started.elapsed();
            if took > threshold {
                tracing::warn!(handler = ?id, ?took, ?threshold, "posa: upcall stalled its thread");
            }
            took > threshold
        }
        _ => false,
    };
    (result, stalled)
}

/// Stores the final report and answers every `shutdown` token waiting for it.
fn publish_report(shared: &Shared, report: ShutdownReport) {
    let waiting = {
        let mut state = shared.report.lock();
        state.done = Some(report);
        std::mem::take(&mut state.waiting)
    };
    for completer in waiting {
        completer.complete(Ok(report));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Log(std::sync::Mutex<Vec<String>>);
    impl Log {
        fn push(&self, s: impl Into<String>) {
            self.0.lock().unwrap().push(s.into());
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// Records every upcall; arms the timers it is told to.
    struct Probe {
        name: &'static str,
        log: std::sync::Arc<Log>,
        timers: Vec<(u64, &'static str)>,
        cancel: Option<&'static str>,
        armed: Vec<(TimerId, &'static str)>,
        panic_on_timeout: bool,
        close_on_drain: bool,
    }

    impl Probe {
        fn new(name: &'static str, log: &std::sync::Arc<Log>) -> Self {
            Self {
                name,
                log: std::sync::Arc::clone(log),
                timers: Vec::new(),
                cancel: None,
                armed: Vec::new(),
                panic_on_timeout: false,
                close_on_drain: true,
            }
        }
    }

    impl EventHandler for Probe {
        fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
            self.log.push(format!("{} open", self.name));
            for &(ms, label) in &self.timers {
                let id = cx.set_timer(Duration::from_millis(ms));
                self.armed.push((id, label));
            }
            if let Some(label) = self.cancel {
                let id = self.armed.iter().find(|(_, l)| *l == label).unwrap().0;
                assert!(cx.cancel_timer(id));
            }
            Ok(())
        }
        fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {
            self.log.push(format!("{} ready", self.name));
        }
        fn timeout(&mut self, timer: TimerId, _: &mut Context<'_>) {
            assert!(!self.panic_on_timeout, "boom in {}", self.name);
            let label = self.armed.iter().find(|(t, _)| *t == timer).unwrap().1;
            self.log.push(format!("{} timer {label}", self.name));
        }
        fn drain(&mut self, cx: &mut Context<'_>) {
            self.log.push(format!("{} drain", self.name));
            if self.close_on_drain {
                cx.close();
            }
        }
        fn close(&mut self, reason: &CloseReason, _: &mut Context<'_>) {
            let why = match reason {
                CloseReason::Closed => "closed",
                CloseReason::OpenFailed(_) => "open-failed",
                CloseReason::Panicked(_) => "panicked",
                CloseReason::Shutdown => "shutdown",
            };
            self.log.push(format!("{} close {why}", self.name));
        }
    }

    #[test]
    fn timers_fire_in_deadline_order_on_virtual_time_and_cancel_works() {
        let clock = std::sync::Arc::new(ManualClock::new());
        let mut r = Reactor::builder().clock(clock.clone()).build().unwrap();
        let log = std::sync::Arc::new(Log::default());
        let mut p = Probe::new("p", &log);
        p.timers = vec![(30, "c"), (10, "a"), (20, "b"), (15, "x")];
        p.cancel = Some("x");
        r.add(p).unwrap();
        assert_eq!(log.take(), vec!["p open"]);
        clock.advance(Duration::from_millis(25));
        r.turn().unwrap();
        assert_eq!(log.take(), vec!["p timer a", "p timer b"]);
        clock.advance(Duration::from_millis(5));
        r.turn().unwrap();
        assert_eq!(log.take(), vec!["p timer c"]);
    }

    #[test]
    fn panicking_handler_is_closed_and_others_go_on() {
        let clock = std::sync::Arc::new(ManualClock::new());
        let mut r = Reactor::builder().clock(clock.clone()).build().unwrap();
        let log = std::sync::Arc::new(Log::default());
        let mut bad = Probe::new("bad", &log);
        bad.timers = vec![(1, "t")];
        bad.panic_on_timeout = true;
        let mut good = Probe::new("good", &log);
        good.timers = vec![(2, "t")];
        r.add(bad).unwrap();
        r.add(good).unwrap();
        log.take();
        clock.advance(Duration::from_millis(5));
        r.turn().unwrap();
        assert_eq!(log.take(), vec!["bad close panicked", "good timer t"]);
        assert_eq!(r.stats().panics, 1);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn stale_token_never_reaches_the_handler_that_reused_its_slot() {
        let mut r = Reactor::new().unwrap();
        let log = std::sync::Arc::new(Log::default());
        let old = r.add(Probe::new("old", &log)).unwrap();
        r.close_slot(old, CloseReason::Closed);
        let new = r.add(Probe::new("new", &log)).unwrap();
        assert_eq!(old.index(), new.index(), "slot reused");
        assert_ne!(old, new, "with a new generation");
        log.take();
        r.dispatch(old, |h, cx| h.ready(Readiness::default(), cx));
        assert!(log.take().is_empty(), "stale event was delivered");
        r.dispatch(new, |h, cx| h.ready(Readiness::default(), cx));
        assert_eq!(log.take(), vec!["new ready"]);
    }

    #[test]
    fn failed_open_closes_once_and_reports_the_error() {
        struct Fails(std::sync::Arc<AtomicUsize>);
        impl EventHandler for Fails {
            fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
                Err(io::Error::new(io::ErrorKind::AddrInUse, "taken"))
            }
            fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
            fn close(&mut self, reason: &CloseReason, _: &mut Context<'_>) {
                assert!(matches!(reason, CloseReason::OpenFailed(_)));
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let closes = std::sync::Arc::new(AtomicUsize::new(0));
        let mut r = Reactor::new().unwrap();
        let err = r.add(Fails(closes.clone())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn call_again_redispatches_next_turn() {
        struct Again(std::sync::Arc<AtomicUsize>);
        impl EventHandler for Again {
            fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
                cx.call_again(Readiness::default());
                Ok(())
            }
            fn ready(&mut self, r: Readiness, cx: &mut Context<'_>) {
                if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                    cx.call_again(r);
                }
            }
        }
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        let mut r = Reactor::new().unwrap();
        r.add(Again(n.clone())).unwrap();
        for _ in 0..3 {
            r.turn().unwrap(); // never blocks: a re-dispatch is pending each time
        }
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert!(
            r.core.again.is_empty(),
            "no re-dispatch after the handler stopped asking"
        );
    }

    #[test]
    fn shutdown_from_another_thread_drains_forces_and_reports() {
        let log = std::sync::Arc::new(Log::default());
        let mut r = Reactor::new().unwrap();
        let handle = r.handle();
        let mut stubborn = Probe::new("stubborn", &log);
        stubborn.close_on_drain = false;
        r.add(stubborn).unwrap();
        let runner = std::thread::spawn(move || r.run().unwrap());
        let id = handle.add(Probe::new("polite", &log)).wait().into_result();
        assert!(id.is_ok());
        let (tx, rx) = std::sync::mpsc::channel();
        handle
            .post(move |r: &mut dyn Host| tx.send(r.len()).unwrap())
            .unwrap();
        assert_eq!(rx.recv().unwrap(), 2);
        let report = handle
            .shutdown(Duration::from_millis(20))
            .wait()
            .into_result()
            .unwrap();
        assert_eq!(runner.join().unwrap(), report);
        assert_eq!(
            report,
            ShutdownReport {
                drained: 1,
                forced: 1,
                jobs_dropped: 0
            }
        );
        let mut events = log.take();
        events.sort();
        assert_eq!(
            events,
            vec![
                "polite close closed",
                "polite drain",
                "polite open",
                "stubborn close shutdown",
                "stubborn drain",
                "stubborn open",
            ]
        );
        // after stop: posts come back, and a late shutdown still gets the report
        assert!(matches!(handle.post(|_| {}), Err(Refused::Closed(_))));
        assert_eq!(
            handle.shutdown(Duration::ZERO).wait().into_result(),
            Ok(report)
        );
        assert_eq!(handle.phase(), Phase::Stopped);
    }

    #[test]
    fn dropping_a_reactor_closes_every_handler_once() {
        let log = std::sync::Arc::new(Log::default());
        let mut r = Reactor::new().unwrap();
        r.add(Probe::new("a", &log)).unwrap();
        drop(r);
        assert_eq!(log.take(), vec!["a open", "a close shutdown"]);
    }
}
