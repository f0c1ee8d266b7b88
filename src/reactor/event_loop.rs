//! The single-threaded event loop: [`Reactor`] and its [`Builder`].
//!
//! Each turn waits for readiness (until the next timer at most), dispatches every event to its
//! handler, runs posted jobs and fires due timers, each within a budget so that no single
//! source can starve the others (the skeleton is `turn.rs`, shared with Leader/Followers).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::context::Core;
use super::handle::{ReportState, Shared, publish_report};
use super::table::Table;
use super::turn;
use super::{
    CloseReason, Config, Context, EventHandler, HandlerId, Host, Job, Mailbox, Phase,
    ReactorHandle, Readiness, ShutdownReport, Stats, TimerQueue, WAKE_TOKEN,
};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::panic_message;
use crate::sync::{Arc, Mutex};

/// Builds a [`Reactor`] with a custom [`Config`] or [`Clock`].
#[derive(Default)]
pub struct Builder {
    config: Config,
    clock: Option<SharedClock>,
}

impl Builder {
    /// Sets the budgets and thresholds.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock timers run on (a [`ManualClock`](crate::clock::ManualClock) in tests;
    /// after advancing it, post a job to wake the loop).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Creates the reactor (a `mio::Poll` and its waker).
    pub fn build(self) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        let shared = Arc::new(Shared {
            mailbox: Mailbox::new(self.config.mailbox_capacity, Box::new(waker)),
            grace: Mutex::new(Duration::ZERO),
            report: Mutex::new(ReportState::default()),
        });
        let clock = self
            .clock
            .unwrap_or_else(|| crate::clock::shared(SystemClock));
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
            drain_started: None,
            drain_deadline: None,
            linger_deadline: None,
            drained: 0,
            forced: 0,
        })
    }
}

/// A single-threaded event loop on `mio`. See the [module docs](crate::reactor).
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
    /// When the drain began (its grace counts from here).
    drain_started: Option<Instant>,
    drain_deadline: Option<Instant>,
    /// Set when the grace ran out: handlers still open were told to `force`, and may linger
    /// until here.
    linger_deadline: Option<Instant>,
    drained: usize,
    forced: usize,
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
        let (result, stalled) =
            turn::timed_upcall(id, &self.config, || upcall(&mut *handler, &mut cx));
        let close = cx.close;
        if stalled {
            self.stats.stalls += 1;
        }
        match result {
            Ok(()) if close => {
                // Past the drain deadline a handler's own close is the forced one.
                let reason = if self.linger_deadline.is_some() {
                    CloseReason::Shutdown
                } else {
                    CloseReason::Closed
                };
                self.finish_close(id, handler, reason)
            }
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
        if self.core.draining
            && self.linger_deadline.is_none()
            && matches!(reason, CloseReason::Closed)
        {
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
        // Posts from this thread during the turn need no wake-up call: `busy` below sees them.
        let _on_loop = self.core.handle.shared.mailbox.enter_loop();
        let now = self.core.clock.now();
        if !self.core.draining && self.core.handle.shared.mailbox.phase() == Phase::Draining {
            self.begin_drain(now);
        }
        if let Some(started) = self.drain_started
            && self.linger_deadline.is_none()
        {
            // A later shutdown request may have shortened the grace (a second signal).
            let deadline = started + *self.core.handle.shared.grace.lock();
            self.drain_deadline = self.drain_deadline.map(|d| d.min(deadline));
        }
        if let Some(deadline) = self.drain_deadline {
            if self.linger_deadline.is_none() && self.table.len() > 0 && now >= deadline {
                self.begin_force(now);
            }
            if self.table.len() == 0 || self.linger_deadline.is_some_and(|end| now >= end) {
                return Ok(Some(self.finish_shutdown()));
            }
        }

        let busy = !self.core.again.is_empty()
            || self.more_jobs
            || self.core.handle.shared.mailbox.is_notified();
        let timeout = turn::wait_timeout(
            now,
            self.core.timers.next_deadline(),
            busy,
            self.linger_deadline.or(self.drain_deadline),
        );
        let mut ready = std::mem::take(&mut self.ready);
        let woken = turn::poll_ready(&mut self.poll, &mut self.events, timeout, &mut ready)?;
        ready.append(&mut self.core.again);
        for (id, readiness) in ready.drain(..) {
            self.dispatch(id, |h, cx| h.ready(readiness, cx));
        }
        self.ready = ready;

        if woken || self.more_jobs || self.core.handle.shared.mailbox.is_notified() {
            let mut jobs = std::mem::take(&mut self.jobs);
            let shared = Arc::clone(&self.core.handle.shared);
            let (more, panics) =
                turn::run_jobs(&shared.mailbox, self.config.post_budget, &mut jobs, self);
            self.more_jobs = more;
            self.stats.panics += panics;
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
        self.drain_started = Some(now);
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

    /// The grace ran out: every handler still open is counted as forced and told so; those that
    /// close lingering get until the linger deadline.
    fn begin_force(&mut self, now: Instant) {
        let ids = self.table.ids();
        self.forced = ids.len();
        self.linger_deadline = Some(now + self.config.linger);
        tracing::info!(
            forced = self.forced,
            linger = ?self.config.linger,
            "posa reactor: drain deadline; closing the rest"
        );
        for id in ids {
            self.dispatch(id, |h, cx| h.force(cx));
        }
    }

    fn finish_shutdown(&mut self) -> ShutdownReport {
        let ids = self.table.ids();
        // Past the deadline the rest were counted when forced; handlers still lingering at the
        // linger deadline are closed without counting them twice.
        let forced = if self.linger_deadline.is_some() {
            self.forced
        } else {
            ids.len()
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::error::Refused;
    use crate::reactor::{MissedTicks, TimerId};
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
            assert!(!cx.is_draining(), "not draining while it opens");
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
            assert!(cx.is_draining(), "draining in drain");
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

    /// Posts a chain of jobs from the loop thread (each job posts the next): with no other
    /// thread to wake it, each must still run, on one of the next turns, and the loop must not
    /// sleep in between (its only timer is a far fail-safe, which must not fire first).
    struct SelfPoster {
        ran: std::sync::Arc<AtomicUsize>,
        slept: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    fn post_chain(handle: ReactorHandle, ran: std::sync::Arc<AtomicUsize>, left: usize) {
        let next = handle.clone();
        handle
            .post(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                if left > 1 {
                    post_chain(next, ran, left - 1);
                }
            })
            .unwrap();
    }

    impl EventHandler for SelfPoster {
        fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
            cx.set_timer(Duration::from_secs(10)); // the fail-safe
            post_chain(cx.handle().clone(), std::sync::Arc::clone(&self.ran), 3);
            Ok(())
        }
        fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
        fn timeout(&mut self, _: TimerId, _: &mut Context<'_>) {
            self.slept.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn jobs_posted_from_the_loop_thread_run_without_a_wake_up() {
        let mut r = Reactor::new().unwrap();
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        let slept = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        r.add(SelfPoster {
            ran: std::sync::Arc::clone(&ran),
            slept: std::sync::Arc::clone(&slept),
        })
        .unwrap();
        for _ in 0..10 {
            r.turn().unwrap();
            if ran.load(Ordering::SeqCst) == 3 || slept.load(Ordering::SeqCst) {
                break;
            }
        }
        assert!(
            !slept.load(Ordering::SeqCst),
            "the loop slept until its fail-safe timer with jobs posted from its own thread"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 3, "every job of the chain ran");
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

    /// cargo-mutants (issue 14): the stall check's comparison and its match arm were
    /// unasserted. An upcall always takes longer than zero and never an hour: the count is
    /// decided by the comparison, not by timing.
    #[test]
    fn upcalls_longer_than_the_stall_threshold_are_counted_and_shorter_ones_are_not() {
        for (threshold, stalled) in [(Duration::ZERO, true), (Duration::from_secs(3600), false)] {
            let clock = std::sync::Arc::new(ManualClock::new());
            let mut r = Reactor::builder()
                .clock(clock.clone())
                .config(Config {
                    stall_threshold: Some(threshold),
                    ..Config::default()
                })
                .build()
                .unwrap();
            let log = std::sync::Arc::new(Log::default());
            let mut p = Probe::new("p", &log);
            p.timers = vec![(1, "t")];
            r.add(p).unwrap();
            clock.advance(Duration::from_millis(5));
            r.turn().unwrap();
            assert_eq!(log.take(), vec!["p open", "p timer t"]);
            assert_eq!(r.stats().stalls > 0, stalled, "threshold {threshold:?}");
        }
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

    /// Runs `r` on its own thread with a handler that does not close when told to drain
    /// ("stubborn", logging to `log`); returns its handle and the thread.
    fn run_with_stubborn(
        mut r: Reactor,
        log: &std::sync::Arc<Log>,
    ) -> (ReactorHandle, std::thread::JoinHandle<ShutdownReport>) {
        let mut stubborn = Probe::new("stubborn", log);
        stubborn.close_on_drain = false;
        r.add(stubborn).unwrap();
        let handle = r.handle();
        (handle, std::thread::spawn(move || r.run().unwrap()))
    }

    #[test]
    fn shutdown_from_another_thread_drains_forces_and_reports() {
        let log = std::sync::Arc::new(Log::default());
        let (handle, runner) = run_with_stubborn(Reactor::new().unwrap(), &log);
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

    /// cargo-mutants (issue 14): `reset_timer`'s answer and the `now + after` of
    /// `reset_timer` and `set_periodic` were unasserted (a `-` there fires at once).
    #[test]
    fn reset_and_periodic_timers_fire_when_due_and_reset_says_whether_it_moved_one() {
        struct Timers {
            log: std::sync::Arc<Log>,
            moved: Option<TimerId>,
            periodic: Option<TimerId>,
        }
        impl EventHandler for Timers {
            fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
                let moved = cx.set_timer(Duration::from_millis(10));
                assert!(
                    cx.reset_timer(moved, Duration::from_millis(35)),
                    "armed: moved"
                );
                let gone = cx.set_timer(Duration::from_millis(10));
                assert!(cx.cancel_timer(gone));
                assert!(
                    !cx.reset_timer(gone, Duration::from_millis(5)),
                    "cancelled: not moved"
                );
                self.moved = Some(moved);
                self.periodic = Some(cx.set_periodic(Duration::from_millis(20), MissedTicks::Skip));
                Ok(())
            }
            fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
            fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
                if Some(timer) == self.moved {
                    assert!(
                        !cx.reset_timer(timer, Duration::from_millis(1)),
                        "fired: not moved"
                    );
                    self.log.push("moved");
                } else if Some(timer) == self.periodic {
                    self.log.push("tick");
                }
            }
        }
        let clock = std::sync::Arc::new(ManualClock::new());
        let mut r = Reactor::builder().clock(clock.clone()).build().unwrap();
        let log = std::sync::Arc::new(Log::default());
        r.add(Timers {
            log: std::sync::Arc::clone(&log),
            moved: None,
            periodic: None,
        })
        .unwrap();
        let mut at = |ms: u64| {
            clock.advance(Duration::from_millis(ms));
            r.turn().unwrap();
            log.take()
        };
        assert!(at(15).is_empty(), "nothing is due at 15 ms");
        assert_eq!(at(10), vec!["tick"], "25 ms: the first tick");
        assert_eq!(at(10), vec!["moved"], "35 ms: the moved timer");
        assert_eq!(at(10), vec!["tick"], "45 ms: the second tick");
    }

    /// cargo-mutants (issue 14): a second shutdown request with a shorter grace brings the
    /// drain deadline forward (a second Ctrl-C forces at once). The first grace is an hour:
    /// only the second request can end this drain.
    #[test]
    fn a_second_shorter_shutdown_request_forces_the_drain_now() {
        let log = std::sync::Arc::new(Log::default());
        let (handle, runner) = run_with_stubborn(Reactor::new().unwrap(), &log);
        let first = handle.shutdown(Duration::from_secs(3600));
        while !log.0.lock().unwrap().iter().any(|e| e == "stubborn drain") {
            std::thread::yield_now(); // the drain has visibly begun
        }
        let second = handle
            .shutdown(Duration::ZERO)
            .wait_timeout(Duration::from_secs(60))
            .expect("the shorter grace ended the drain (the first one is an hour)")
            .into_result()
            .unwrap();
        assert_eq!(second.forced, 1);
        assert_eq!(first.wait().into_result(), Ok(second));
        assert_eq!(runner.join().unwrap(), second);
    }

    /// cargo-mutants (issue 14): the reactor's and a posted job's view of what is open
    /// (`len`, `is_empty`, `close`'s answer, `Host::wake`) were unasserted.
    #[test]
    fn the_reactor_and_posted_jobs_see_what_is_open_close_it_and_wake_it() {
        let mut r = Reactor::new().unwrap();
        assert!(r.is_empty());
        let log = std::sync::Arc::new(Log::default());
        let a = r.add(Probe::new("a", &log)).unwrap();
        let b = r.add(Probe::new("b", &log)).unwrap();
        assert_eq!((r.len(), r.is_empty()), (2, false));
        let (tx, rx) = std::sync::mpsc::channel();
        r.handle()
            .post(move |host: &mut dyn Host| {
                let seen = (host.len(), host.is_empty());
                let closed = (host.close(a), host.close(a));
                host.wake(b, Readiness::default());
                tx.send((seen, closed, host.is_empty())).unwrap();
            })
            .unwrap();
        r.turn().unwrap(); // runs the job
        assert_eq!(rx.recv().unwrap(), ((2, false), (true, false), false));
        r.turn().unwrap(); // the woken dispatch
        assert_eq!(
            log.take(),
            vec!["a open", "b open", "a close closed", "b ready"]
        );
        assert!(r.close(b) && !r.close(b), "closes once, then it is gone");
        assert!(r.is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        r.handle()
            .post(move |host: &mut dyn Host| tx.send(host.is_empty()).unwrap())
            .unwrap();
        r.turn().unwrap();
        assert!(rx.recv().unwrap(), "a posted job sees the reactor empty");
    }

    /// cargo-mutants (issue 14): `Context::reregister` changes what the handler hears.
    #[test]
    fn reregister_changes_the_interest() {
        struct Switches {
            sock: mio::net::UdpSocket,
            log: std::sync::Arc<Log>,
        }
        impl EventHandler for Switches {
            fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
                cx.register(&mut self.sock, mio::Interest::READABLE)?; // nothing to read
                cx.reregister(&mut self.sock, mio::Interest::WRITABLE)?; // writable at once
                cx.set_timer(Duration::from_millis(100)); // the turn's fail-safe
                Ok(())
            }
            fn ready(&mut self, r: Readiness, _: &mut Context<'_>) {
                self.log.push(format!("writable {}", r.writable));
            }
        }
        let sock = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        sock.connect(sock.local_addr().unwrap()).unwrap();
        let log = std::sync::Arc::new(Log::default());
        let mut r = Reactor::new().unwrap();
        r.add(Switches {
            sock,
            log: std::sync::Arc::clone(&log),
        })
        .unwrap();
        r.turn().unwrap();
        assert_eq!(log.take(), vec!["writable true"]);
    }

    /// cargo-mutants (issue 14): the default `force` closes the handler at the deadline; it
    /// does not linger (here the linger bound is an hour, so only the close ends the loop).
    #[test]
    fn a_handler_that_does_not_drain_is_closed_by_the_default_force() {
        let log = std::sync::Arc::new(Log::default());
        let r = Reactor::builder()
            .config(Config {
                linger: Duration::from_secs(3600),
                ..Config::default()
            })
            .build()
            .unwrap();
        let (handle, runner) = run_with_stubborn(r, &log);
        let report = handle
            .shutdown(Duration::ZERO)
            .wait_timeout(Duration::from_secs(60))
            .expect("forced closed at the deadline, not after the hour's linger")
            .into_result()
            .unwrap();
        assert_eq!(report.forced, 1);
        assert_eq!(runner.join().unwrap(), report);
    }

    /// cargo-mutants (issue 14): posts beyond one turn's budget run on the next turns
    /// without another wake-up (`take_batch` says that jobs are left).
    #[test]
    fn posts_beyond_the_budget_run_on_the_next_turns() {
        let mut r = Reactor::builder()
            .config(Config {
                post_budget: 2,
                ..Config::default()
            })
            .build()
            .unwrap();
        let handle = r.handle();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            handle.post(move |_| tx.send(i).unwrap()).unwrap();
        }
        let runner = std::thread::spawn(move || r.run().unwrap());
        let got: Vec<_> = (0..5)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(60))
                    .expect("every post runs")
            })
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        drop(handle.shutdown(Duration::ZERO));
        runner.join().unwrap();
    }

    /// cargo-mutants (issue 14): a `HandlerWaker`'s dispatch says it was woken, and
    /// `same_loop` tells handles of one loop from another's.
    #[test]
    fn a_woken_dispatch_says_so_and_handles_know_their_loop() {
        struct Woken(std::sync::Arc<Log>);
        impl EventHandler for Woken {
            fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
                Ok(())
            }
            fn ready(&mut self, r: Readiness, _: &mut Context<'_>) {
                self.0.push(format!("woken {}", r.woken));
            }
        }
        let log = std::sync::Arc::new(Log::default());
        let mut r = Reactor::new().unwrap();
        let id = r.add(Woken(std::sync::Arc::clone(&log))).unwrap();
        assert!(r.handle().waker(id).wake());
        r.turn().unwrap(); // runs the wake-up job, which queues the dispatch
        r.turn().unwrap();
        assert_eq!(log.take(), vec!["woken true"]);
        let other = Reactor::new().unwrap();
        assert!(r.handle().same_loop(&r.handle()));
        assert!(!r.handle().same_loop(&other.handle()));
    }

    /// cargo-mutants (issue 14): a handler forced at the drain deadline may linger until the
    /// linger bound (`now + linger`), no less: on virtual time, the loop goes on while the
    /// bound is ahead and stops when it passes.
    #[test]
    fn a_forced_handler_may_linger_until_the_linger_bound() {
        /// Stays open through drain and force, and asks to run again every turn, so no turn
        /// sleeps until the (virtual) bound.
        struct Lingers;
        impl EventHandler for Lingers {
            fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
                cx.call_again(Readiness::default());
                Ok(())
            }
            fn ready(&mut self, r: Readiness, cx: &mut Context<'_>) {
                cx.call_again(r);
            }
            fn drain(&mut self, _: &mut Context<'_>) {}
            fn force(&mut self, _: &mut Context<'_>) {}
        }
        let clock = std::sync::Arc::new(ManualClock::new());
        let mut r = Reactor::builder()
            .clock(clock.clone())
            .config(Config {
                linger: Duration::from_secs(3600),
                ..Config::default()
            })
            .build()
            .unwrap();
        r.add(Lingers).unwrap();
        let handle = r.handle();
        drop(handle.shutdown(Duration::ZERO));
        for _ in 0..3 {
            assert!(
                r.turn().unwrap().is_none(),
                "stopped while the handler may still linger"
            );
        }
        clock.advance(Duration::from_secs(3601));
        let report = r.turn().unwrap().expect("the linger bound ends the loop");
        assert_eq!(report.forced, 1);
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
