//! Reactor: demultiplex I/O readiness and timer expiries to event handlers, on one thread.
//!
//! A [`Reactor`] owns a `mio::Poll`, a table of [`EventHandler`]s keyed by generation-tagged
//! tokens, a [`TimerQueue`] and a mailbox (`mailbox.rs`) other threads post to through a
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

mod context;
mod demux;
mod event_loop;
mod group;
mod handle;
pub mod leader_followers;
mod mailbox;
mod serial;
mod table;
pub mod timer;
mod turn;

pub use context::Context;
pub use event_loop::{Builder, Reactor};
pub(crate) use group::LoopThreads;
pub use group::ReactorGroup;
pub use handle::{HandlerWaker, ReactorHandle};
pub use leader_followers::LeaderFollowers;
pub use mailbox::Phase;
// The cross-thread cores of the two event loops, public only where the loom models drive them.
#[cfg(posa_loom)]
pub use demux::Demux;
#[cfg(not(posa_loom))]
use mailbox::Mailbox;
#[cfg(posa_loom)]
pub use mailbox::{Mailbox, Notify};
/// Readiness interests a handler registers for (mio's, re-exported so handlers need no mio
/// dependency of their own).
pub use mio::Interest;
#[cfg(posa_loom)]
pub use serial::{Finish, SerialCell, Work};
pub use timer::{MissedTicks, TimerId, TimerQueue};
#[cfg_attr(
    not(all(target_os = "linux", feature = "io-uring")),
    allow(unused_imports)
)] // the io_uring backend's
pub(crate) use turn::wait_timeout;

use std::io;
use std::time::Duration;

use mio::Token;

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
    /// The reactor shut down before the handler finished draining: closed at or after the
    /// drain deadline (by [`EventHandler::force`], or when lingering ran out).
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
    /// a connection overrides it to finish what its peer started (serve until the peer
    /// half-closes and everything owed is written) and then close itself.
    fn drain(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    /// The drain's grace ran out with this handler still open: it is counted as forced. The
    /// default closes at once. A connection that may hold unread input overrides it to close
    /// lingering ([`net::Linger`](crate::net::Linger): shut down its write side, discard input
    /// until the peer's end of stream or a short timeout, then close itself), so the close does
    /// not become a reset that destroys bytes already on their way to the peer. The loop runs
    /// such handlers at most [`Config::linger`] past the deadline, then closes what remains.
    fn force(&mut self, cx: &mut Context<'_>) {
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
    /// Handlers still open at the drain deadline (each was told [`EventHandler::force`]).
    pub forced: usize,
    /// Posted jobs that never ran.
    pub jobs_dropped: usize,
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
    /// Jobs the mailbox holds before posting fails with [`Refused::Full`](crate::Refused::Full).
    pub mailbox_capacity: usize,
    /// Handlers the reactor holds at most; [`Reactor::add`] fails beyond it.
    pub max_handlers: usize,
    /// An upcall running longer than this is reported (`tracing::warn`); `None` disables timing.
    pub stall_threshold: Option<Duration>,
    /// Interceptors around every upcall ([`Point::ReactorEvent`](crate::intercept::Point)); a
    /// refused upcall is skipped (the handler is not told; use with care with edge-triggered
    /// readiness). Default: none.
    pub interceptors: crate::intercept::Chain,
    /// After the drain deadline, how long handlers that close lingering
    /// ([`EventHandler::force`]) may take before the loop closes them (default 2 s).
    pub linger: Duration,
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
            linger: Duration::from_secs(2),
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
