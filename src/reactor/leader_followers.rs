//! Leader/Followers: a pool of threads sharing one demultiplexer.
//!
//! One thread at a time, the *leader*, holds the poll and waits for events; the others, the
//! *followers*, wait for leadership. When events arrive the leader promotes a follower (it
//! releases the poll) and then dispatches what it got, so a new leader is already waiting while
//! the old one runs handlers. A handler is never run by two threads at once: dispatch goes
//! through its `SerialCell` (`serial.rs`), which queues work that arrives while another thread runs it
//! (ACE's TP_Reactor suspends the handle for the same reason).
//!
//! Handlers are the same [`EventHandler`]s a [`Reactor`](super::Reactor) runs; the timer queue is
//! shared under a lock (an upcall that arms a new earliest timer wakes the leader); posted jobs
//! and shutdown work as on a reactor, through the same [`ReactorHandle`].
//!
//! ```
//! use posa::reactor::{Context, EventHandler, LeaderFollowers, Readiness, TimerId};
//! use std::time::Duration;
//!
//! struct Once;
//! impl EventHandler for Once {
//!     fn open(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
//!         cx.set_timer(Duration::from_millis(1));
//!         Ok(())
//!     }
//!     fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
//!     fn timeout(&mut self, _: TimerId, cx: &mut Context<'_>) {
//!         drop(cx.handle().shutdown(Duration::from_secs(1)));
//!     }
//! }
//!
//! let lf = LeaderFollowers::new(2)?;
//! lf.add(Once)?;
//! let report = lf.run()?; // on this thread and one more, until shut down
//! assert_eq!(report.drained, 1);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry};

use super::demux::{Demux, MioDemux};
use super::mailbox::Notify;

use super::context::TimerAccess;
use super::handle::{ReportState, Shared, publish_report};
use super::serial::{Finish, SerialCell, Work};
use super::table::Table;
use super::turn::{self, timed_upcall};
use super::{
    CloseReason, Config, Context, EventHandler, HandlerId, Host, Job, Mailbox, Phase,
    ReactorHandle, Readiness, ShutdownReport, TimerId, TimerQueue, WAKE_TOKEN,
};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::panic_message;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex, thread};

type Cell = SerialCell<Box<dyn EventHandler>>;

/// Per-thread scratch: what an upcall spawns or asks to re-run, the events it took as leader.
#[derive(Default)]
struct Local {
    spawned: Vec<Box<dyn EventHandler>>,
    again: Vec<(HandlerId, Readiness)>,
    ready: Vec<(HandlerId, Readiness)>,
    jobs: Vec<Job>,
}

struct Lf {
    /// The demultiplexer; whoever holds this lock leads.
    poll: Mutex<Box<dyn Demux>>,
    registry: Registry,
    table: Mutex<Table<Arc<Cell>>>,
    timers: Mutex<TimerQueue<HandlerId>>,
    handle: ReactorHandle,
    clock: SharedClock,
    config: Config,
    draining: AtomicBool,
    stopping: AtomicBool,
    /// The drain's deadline; once forcing, the linger deadline.
    drain_deadline: Mutex<Option<Instant>>,
    /// When the drain began (a later, shorter grace counts from here).
    drain_started: Mutex<Option<Instant>>,
    /// The grace ran out: the handlers still open were told to `force`.
    forcing: AtomicBool,
    drained: AtomicUsize,
    forced: AtomicUsize,
    panics: AtomicU64,
    /// Re-runs asked for by handlers added before `run` (no pool thread existed to hold them).
    early_again: Mutex<Vec<(HandlerId, Readiness)>>,
}

/// A Leader/Followers pool. See [`posa::reactor`](crate::reactor) and docs/leader-followers.md.
pub struct LeaderFollowers {
    lf: Arc<Lf>,
    threads: usize,
    ran: bool,
}

impl LeaderFollowers {
    /// A pool of `threads` (at least 1) with the default [`Config`] on the system clock.
    pub fn new(threads: usize) -> io::Result<Self> {
        Self::with_config(
            threads,
            Config::default(),
            crate::clock::shared(SystemClock),
        )
    }

    /// A pool with custom budgets and clock.
    pub fn with_config(threads: usize, config: Config, clock: SharedClock) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        let events = Events::with_capacity(config.event_budget.max(1));
        let demux = Box::new(MioDemux { poll, events });
        Ok(Self::build(
            threads,
            config,
            clock,
            demux,
            Box::new(waker),
            registry,
        ))
    }

    /// Loom models only: a pool whose leaders wait on `demux` (scripted events) and whose
    /// mailbox wakes them through `notify`. Sources registered by handlers go to a real but
    /// never-polled `mio::Registry`.
    #[cfg(posa_loom)]
    pub fn with_demux(
        threads: usize,
        config: Config,
        clock: SharedClock,
        demux: Box<dyn Demux>,
        notify: Box<dyn Notify>,
    ) -> io::Result<Self> {
        let registry = Poll::new()?.registry().try_clone()?;
        Ok(Self::build(threads, config, clock, demux, notify, registry))
    }

    fn build(
        threads: usize,
        config: Config,
        clock: SharedClock,
        demux: Box<dyn Demux>,
        notify: Box<dyn Notify>,
        registry: Registry,
    ) -> Self {
        let shared = Arc::new(Shared {
            mailbox: Mailbox::new(config.mailbox_capacity, notify),
            grace: Mutex::new(Duration::ZERO),
            report: Mutex::new(ReportState::default()),
        });
        Self {
            lf: Arc::new(Lf {
                poll: Mutex::new(demux),
                registry,
                table: Mutex::new(Table::new()),
                timers: Mutex::new(TimerQueue::new()),
                handle: ReactorHandle { shared },
                clock,
                config,
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                drain_deadline: Mutex::new(None),
                drain_started: Mutex::new(None),
                forcing: AtomicBool::new(false),
                drained: AtomicUsize::new(0),
                forced: AtomicUsize::new(0),
                panics: AtomicU64::new(0),
                early_again: Mutex::new(Vec::new()),
            }),
            threads: threads.max(1),
            ran: false,
        }
    }

    /// A handle for other threads (post, add, shutdown), as for a reactor.
    pub fn handle(&self) -> ReactorHandle {
        self.lf.handle.clone()
    }

    /// Adds and opens a handler from this thread.
    pub fn add(&self, handler: impl EventHandler) -> io::Result<HandlerId> {
        let mut local = Local::default();
        let id = self.lf.add(&mut local, Box::new(handler));
        // keep what `open` asked to re-run for the first pool thread
        self.lf.early_again.lock().append(&mut local.again);
        id
    }

    /// Runs the pool on this thread and `threads - 1` more until shutdown completes.
    pub fn run(mut self) -> io::Result<ShutdownReport> {
        self.ran = true;
        let helpers = (1..self.threads)
            .map(|i| {
                let lf = Arc::clone(&self.lf);
                thread::Builder::new()
                    .name(format!("posa-lf-{i}"))
                    .spawn(move || lf.worker())
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mine = self.lf.worker();
        let mut result = mine;
        for h in helpers {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("leader/followers thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        let report = self.lf.finish_shutdown();
        result.map(|()| report)
    }
}

impl Drop for LeaderFollowers {
    /// A pool dropped without running still closes every handler exactly once.
    fn drop(&mut self) {
        if !self.ran {
            self.lf.finish_shutdown();
        }
    }
}

impl std::fmt::Debug for LeaderFollowers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderFollowers")
            .field("threads", &self.threads)
            .field("handlers", &self.lf.table.lock().len())
            .finish()
    }
}

struct LfHost<'a> {
    lf: &'a Lf,
    local: &'a mut Local,
}

impl Host for LfHost<'_> {
    fn add_boxed(&mut self, handler: Box<dyn EventHandler>) -> io::Result<HandlerId> {
        self.lf.add(self.local, handler)
    }
    fn close(&mut self, id: HandlerId) -> bool {
        self.lf.close_by_id(self.local, id)
    }
    fn wake(&mut self, id: HandlerId, readiness: Readiness) {
        self.local.again.push((id, readiness));
    }
    fn len(&self) -> usize {
        self.lf.table.lock().len()
    }
}

impl Lf {
    fn wake(&self) {
        self.handle.shared.mailbox.wake();
    }

    fn add(&self, local: &mut Local, mut handler: Box<dyn EventHandler>) -> io::Result<HandlerId> {
        let cell = Arc::new(SerialCell::new_busy());
        let id = self
            .table
            .lock()
            .insert(Arc::clone(&cell), self.config.max_handlers)?;
        let wake = || self.wake();
        let mut cx = self.context(id, local, &wake);
        let opened = catch_unwind(AssertUnwindSafe(|| handler.open(&mut cx)));
        let close = cx.close;
        match opened {
            Ok(Ok(())) if close => {
                self.finish_close(local, id, &cell, handler, CloseReason::Closed)
            }
            Ok(Ok(())) => self.run_queued(local, id, &cell, handler),
            Ok(Err(e)) => {
                let (kind, msg) = (e.kind(), e.to_string());
                self.finish_close(local, id, &cell, handler, CloseReason::OpenFailed(e));
                return Err(io::Error::new(kind, msg));
            }
            Err(panic) => {
                let msg = panic_message(&*panic);
                self.panics.fetch_add(1, Ordering::Relaxed);
                self.finish_close(
                    local,
                    id,
                    &cell,
                    handler,
                    CloseReason::Panicked(msg.clone()),
                );
                return Err(io::Error::other(format!("handler open panicked: {msg}")));
            }
        }
        self.open_spawned(local);
        Ok(id)
    }

    fn context<'a>(
        &'a self,
        id: HandlerId,
        local: &'a mut Local,
        wake: &'a dyn Fn(),
    ) -> Context<'a> {
        Context {
            id,
            registry: &self.registry,
            timers: TimerAccess::Shared {
                queue: &self.timers,
                wake,
            },
            spawned: &mut local.spawned,
            again: &mut local.again,
            handle: &self.handle,
            draining: self.draining.load(Ordering::Acquire),
            now: self.clock.now(),
            close: false,
        }
    }

    fn open_spawned(&self, local: &mut Local) {
        while let Some(h) = local.spawned.pop() {
            if let Err(e) = self.add(local, h) {
                tracing::warn!(error = %e, "posa leader/followers: spawned handler failed to open");
            }
        }
    }

    /// Runs one upcall; the handler comes back unless it was closed.
    fn upcall(
        &self,
        local: &mut Local,
        id: HandlerId,
        cell: &Cell,
        mut handler: Box<dyn EventHandler>,
        work: Work,
    ) -> Option<Box<dyn EventHandler>> {
        let wake = || self.wake();
        let mut cx = self.context(id, local, &wake);
        let (result, _stalled) = timed_upcall(id, &self.config, || match work {
            Work::Ready(r) => handler.ready(r, &mut cx),
            Work::Timeout(t) => handler.timeout(t, &mut cx),
            Work::Drain => handler.drain(&mut cx),
            Work::Force => handler.force(&mut cx),
        });
        let close = cx.close;
        match result {
            Ok(()) if close => {
                // Past the drain deadline a handler's own close is the forced one.
                let reason = if self.forcing.load(Ordering::Acquire) {
                    CloseReason::Shutdown
                } else {
                    CloseReason::Closed
                };
                self.finish_close(local, id, cell, handler, reason);
                None
            }
            Ok(()) => Some(handler),
            Err(panic) => {
                let msg = panic_message(&*panic);
                self.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(handler = ?id, panic = %msg, "posa leader/followers: handler panicked; closing it");
                self.finish_close(local, id, cell, handler, CloseReason::Panicked(msg));
                None
            }
        }
    }

    /// After an upcall: run what was queued meanwhile, close if asked, or park the handler.
    fn run_queued(
        &self,
        local: &mut Local,
        id: HandlerId,
        cell: &Cell,
        handler: Box<dyn EventHandler>,
    ) {
        let mut handler = handler;
        loop {
            match cell.finish(handler) {
                Finish::Parked => return,
                Finish::Close(h) => {
                    let reason = if self.stopping.load(Ordering::Acquire) {
                        CloseReason::Shutdown
                    } else {
                        CloseReason::Closed
                    };
                    self.finish_close(local, id, cell, h, reason);
                    return;
                }
                Finish::Next(h, work) => match self.upcall(local, id, cell, h, work) {
                    Some(h) => handler = h,
                    None => return,
                },
            }
        }
    }

    fn dispatch(&self, local: &mut Local, id: HandlerId, work: Work) {
        let Some(cell) = self.table.lock().get(id).cloned() else {
            return; // stale token
        };
        if let Some(handler) = cell.offer(work) {
            if let Some(handler) = self.upcall(local, id, &cell, handler, work) {
                self.run_queued(local, id, &cell, handler);
            }
            self.open_spawned(local);
        }
    }

    fn close_by_id(&self, local: &mut Local, id: HandlerId) -> bool {
        let Some(cell) = self.table.lock().get(id).cloned() else {
            return false;
        };
        match cell.request_close() {
            Some(h) => {
                self.finish_close(local, id, &cell, h, CloseReason::Closed);
                true
            }
            None => false,
        }
    }

    fn finish_close(
        &self,
        local: &mut Local,
        id: HandlerId,
        cell: &Cell,
        mut handler: Box<dyn EventHandler>,
        reason: CloseReason,
    ) {
        cell.mark_closed();
        let wake = || self.wake();
        let mut cx = self.context(id, local, &wake);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.close(&reason, &mut cx))) {
            self.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(handler = ?id, panic = %panic_message(&*panic), "posa leader/followers: close panicked");
        }
        drop(handler);
        self.timers.lock().cancel_owned_by(|owner| *owner == id);
        // Counted and removed under the table lock, which the deadline also takes to raise
        // `forcing` and list the rest: a handler closing at the deadline is counted once,
        // drained or forced, never neither nor both.
        let mut table = self.table.lock();
        if self.draining.load(Ordering::Acquire)
            && !self.forcing.load(Ordering::Acquire)
            && matches!(reason, CloseReason::Closed)
        {
            self.drained.fetch_add(1, Ordering::Relaxed);
        }
        table.remove(id);
    }

    fn check_drain(&self, local: &mut Local) {
        let now = self.clock.now();
        if !self.draining.load(Ordering::Acquire)
            && self.handle.shared.mailbox.phase() == Phase::Draining
            && !self.draining.swap(true, Ordering::AcqRel)
        {
            let grace = *self.handle.shared.grace.lock();
            *self.drain_started.lock() = Some(now);
            *self.drain_deadline.lock() = Some(now + grace);
            let ids = self.table.lock().ids();
            tracing::info!(
                ?grace,
                handlers = ids.len(),
                "posa leader/followers: draining"
            );
            for id in ids {
                self.dispatch(local, id, Work::Drain);
            }
            // The leader may be asleep with no deadline: have it wait again with this one.
            self.wake();
        }
        if self.draining.load(Ordering::Acquire) {
            let forcing = self.forcing.load(Ordering::Acquire);
            let deadline = {
                let mut d = self.drain_deadline.lock();
                if !forcing && let Some(started) = *self.drain_started.lock() {
                    // A later shutdown request may have shortened the grace (a second signal).
                    let shortest = started + *self.handle.shared.grace.lock();
                    *d = d.map(|d| d.min(shortest));
                }
                *d
            };
            let live = self.table.lock().len();
            let due = deadline.is_some_and(|d| now >= d);
            let forced_now = (!forcing && live > 0 && due)
                .then(|| {
                    let table = self.table.lock(); // see `finish_close`
                    (!self.forcing.swap(true, Ordering::AcqRel)).then(|| table.ids())
                })
                .flatten();
            if let Some(ids) = forced_now {
                // The grace ran out: the rest are forced, and may close lingering until the
                // linger deadline.
                self.forced.store(ids.len(), Ordering::Relaxed);
                *self.drain_deadline.lock() = Some(now + self.config.linger);
                tracing::info!(forced = ids.len(), "posa leader/followers: drain deadline");
                for id in ids {
                    self.dispatch(local, id, Work::Force);
                }
                // The leader may be asleep until the old deadline: wake it for the new one.
                self.wake();
            }
            let forcing = self.forcing.load(Ordering::Acquire);
            let live = self.table.lock().len();
            let due = self.drain_deadline.lock().is_some_and(|d| now >= d);
            if (live == 0 || (forcing && due)) && !self.stopping.swap(true, Ordering::AcqRel) {
                self.wake(); // the leader may be asleep in poll
            }
        }
    }

    fn worker(&self) -> io::Result<()> {
        let mut local = Local::default();
        local.again.append(&mut self.early_again.lock());
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            self.check_drain(&mut local);
            let mut woken = false;
            // Become the leader: followers wait on this lock. A thread that owes re-runs
            // (`call_again`) only tries: if another thread leads (perhaps asleep in poll), it
            // runs its re-runs now instead of waiting behind that sleeper.
            let lead = if local.again.is_empty() {
                Some(self.poll.lock())
            } else {
                self.poll.try_lock()
            };
            if let Some(mut side) = lead {
                if self.stopping.load(Ordering::Acquire) {
                    drop(side);
                    self.wake(); // pass the news on to whoever leads next
                    return Ok(());
                }
                let now = self.clock.now();
                let busy = !local.again.is_empty() || self.handle.shared.mailbox.is_notified();
                let next_timer = self.timers.lock().next_deadline();
                let timeout =
                    turn::wait_timeout(now, next_timer, busy, *self.drain_deadline.lock());
                match side.wait(timeout, &mut local.ready) {
                    Ok(w) => woken = w,
                    Err(e) => {
                        self.stopping.store(true, Ordering::Release);
                        self.wake();
                        return Err(e);
                    }
                }
            } // promote a follower: the next thread takes the poll while this one dispatches

            let mut ready = std::mem::take(&mut local.ready);
            ready.append(&mut local.again);
            for (id, readiness) in ready.drain(..) {
                self.dispatch(&mut local, id, Work::Ready(readiness));
            }
            local.ready = ready;

            if woken || self.handle.shared.mailbox.is_notified() {
                let mut jobs = std::mem::take(&mut local.jobs);
                let mut host = LfHost {
                    lf: self,
                    local: &mut local,
                };
                let budget = self.config.post_budget;
                let (_, panics) =
                    turn::run_jobs(&self.handle.shared.mailbox, budget, &mut jobs, &mut host);
                self.panics.fetch_add(panics, Ordering::Relaxed);
                local.jobs = jobs;
            }

            let now = self.clock.now();
            let due: Vec<(TimerId, HandlerId)> = {
                let mut q = self.timers.lock();
                std::iter::from_fn(|| q.poll(now))
                    .take(self.config.timer_budget)
                    .collect()
            };
            for (timer, owner) in due {
                self.dispatch(&mut local, owner, Work::Timeout(timer));
            }
        }
    }

    /// After every thread stopped: close what is left, report, answer waiting tokens.
    fn finish_shutdown(&self) -> ShutdownReport {
        self.draining.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        let mut local = Local::default();
        let ids = self.table.lock().ids();
        let mut forced = 0;
        for id in ids {
            let Some(cell) = self.table.lock().get(id).cloned() else {
                continue;
            };
            if let Some(h) = cell.request_close() {
                forced += 1;
                self.finish_close(&mut local, id, &cell, h, CloseReason::Shutdown);
            }
        }
        if self.forcing.load(Ordering::Acquire) {
            // Counted when the grace ran out; those still lingering now are not counted twice.
            forced = self.forced.load(Ordering::Relaxed);
        }
        let report = ShutdownReport {
            drained: self.drained.load(Ordering::Relaxed),
            forced,
            jobs_dropped: self.handle.shared.mailbox.stop().len(),
        };
        tracing::info!(?report, "posa leader/followers: stopped");
        publish_report(&self.handle.shared, report);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::MissedTicks;
    use std::sync::atomic::AtomicBool as StdBool;

    /// Two fast periodic timers; every upcall checks that no other thread is inside.
    struct Busy {
        inside: std::sync::Arc<StdBool>,
        ticks: u32,
        closes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl EventHandler for Busy {
        fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
            cx.set_periodic(Duration::from_nanos(1), MissedTicks::Burst);
            cx.set_periodic(Duration::from_nanos(1), MissedTicks::Burst);
            Ok(())
        }
        fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
        fn timeout(&mut self, _: TimerId, cx: &mut Context<'_>) {
            assert!(
                !self.inside.swap(true, Ordering::SeqCst),
                "two threads inside one handler"
            );
            std::hint::spin_loop();
            self.ticks += 1;
            self.inside.store(false, Ordering::SeqCst);
            if self.ticks == 300 {
                cx.close();
            }
        }
        fn close(&mut self, reason: &CloseReason, cx: &mut Context<'_>) {
            let mut closes = self.closes.lock().unwrap();
            closes.push(format!("{reason:?}"));
            if closes.len() == 8 {
                drop(cx.handle().shutdown(Duration::from_secs(5)));
            }
        }
    }

    #[test]
    fn a_handler_is_never_run_by_two_threads_at_once() {
        let lf = LeaderFollowers::new(4).unwrap();
        let closes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for _ in 0..8 {
            lf.add(Busy {
                inside: std::sync::Arc::new(StdBool::new(false)),
                ticks: 0,
                closes: std::sync::Arc::clone(&closes),
            })
            .unwrap();
        }
        let report = lf.run().unwrap();
        let closes = closes.lock().unwrap();
        assert_eq!(closes.len(), 8);
        assert!(
            closes.iter().all(|c| c == "Closed"),
            "a handler was closed abnormally: {closes:?}"
        );
        assert_eq!(report.forced, 0);
    }

    #[test]
    fn posts_and_adds_from_other_threads_reach_the_pool() {
        let lf = LeaderFollowers::new(2).unwrap();
        let handle = lf.handle();
        let runner = std::thread::spawn(move || lf.run().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        handle
            .post(move |host: &mut dyn Host| tx.send(host.len()).unwrap())
            .unwrap();
        assert_eq!(rx.recv().unwrap(), 0);
        let report = handle
            .shutdown(Duration::from_secs(1))
            .wait()
            .into_result()
            .unwrap();
        assert_eq!(runner.join().unwrap(), report);
    }

    /// A scripted demultiplexer on std threads: hands out queued events, counts the waits that
    /// began, returns when the mailbox notifies it; a timeout is real time.
    #[derive(Default)]
    struct Script {
        events: std::collections::VecDeque<(HandlerId, Readiness)>,
        woken: bool,
        /// Waits begun so far, and the count when events were last handed out.
        waits: usize,
        handed_at: usize,
        /// The timeout the latest wait began with.
        last_timeout: Option<Duration>,
    }
    type Shared = std::sync::Arc<(std::sync::Mutex<Script>, std::sync::Condvar)>;
    struct FakeDemux(Shared);
    struct FakeNotify(Shared);

    impl Demux for FakeDemux {
        fn wait(
            &mut self,
            timeout: Option<Duration>,
            ready: &mut Vec<(HandlerId, Readiness)>,
        ) -> io::Result<bool> {
            let (lock, cv) = &*self.0;
            let mut s = lock.lock().unwrap();
            s.waits += 1;
            s.last_timeout = timeout;
            cv.notify_all();
            let deadline = timeout.map(|t| Instant::now() + t);
            loop {
                if !s.events.is_empty() || s.woken {
                    if !s.events.is_empty() {
                        s.handed_at = s.waits;
                    }
                    ready.extend(s.events.drain(..));
                    return Ok(std::mem::take(&mut s.woken));
                }
                s = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                    None => cv.wait(s).unwrap(),
                    Some(Duration::ZERO) => return Ok(false),
                    Some(left) => cv.wait_timeout(s, left).unwrap().0,
                };
            }
        }
    }

    impl Notify for FakeNotify {
        fn notify(&self) -> io::Result<()> {
            self.0.0.lock().unwrap().woken = true;
            self.0.1.notify_all();
            Ok(())
        }
    }

    /// On each event, waits until another thread has taken the lead and gone to sleep in the
    /// demultiplexer, then arms a near timer and waits (at most a minute) until a leader
    /// waits again with that timer's deadline; on the first timer it also arms a far one.
    struct ArmsFromBeside {
        script: Shared,
        fired: std::sync::mpsc::Sender<&'static str>,
        near: Vec<TimerId>,
    }

    const NEAR: Duration = Duration::from_millis(50);

    impl EventHandler for ArmsFromBeside {
        fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
            Ok(())
        }
        fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
            let (lock, cv) = &*self.script;
            let s = lock.lock().unwrap();
            let handed_at = s.handed_at;
            let s = cv.wait_while(s, |s| s.waits <= handed_at).unwrap();
            let armed_at = s.waits;
            drop(s);
            self.near.push(cx.set_timer(NEAR));
            // This thread holds the upcall, so only the sleeping leader can look again; it
            // must be woken to (the timer cannot fire on this thread and hide a lost wake-up).
            let s = lock.lock().unwrap();
            let (guard, waited) = cv
                .wait_timeout_while(s, Duration::from_secs(60), |s| {
                    s.waits == armed_at || s.last_timeout.is_none_or(|t| t > NEAR)
                })
                .unwrap();
            drop(guard);
            if waited.timed_out() {
                self.fired.send("slept through").unwrap();
            }
        }
        fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
            if self.near.first() == Some(&timer) {
                cx.set_timer(Duration::from_secs(3600));
                self.fired.send("first").unwrap();
            } else if self.near.get(1) == Some(&timer) {
                self.fired.send("second").unwrap();
            }
        }
    }

    /// cargo-mutants (issue 14): a timer armed in an upcall while another thread leads must
    /// wake that leader, asleep with no deadline (the first timer) or a later one (the far
    /// timer): `TimerAccess::with`'s wake condition. Without the wake-up the leader sleeps
    /// through the timer and nothing else would wake it here.
    #[test]
    fn a_timer_armed_beside_a_sleeping_leader_wakes_it() {
        let script: Shared = Default::default();
        let registry = Poll::new().unwrap().registry().try_clone().unwrap();
        let lf = LeaderFollowers::build(
            2,
            Config::default(),
            crate::clock::shared(SystemClock),
            Box::new(FakeDemux(std::sync::Arc::clone(&script))),
            Box::new(FakeNotify(std::sync::Arc::clone(&script))),
            registry,
        );
        let (fired, rx) = std::sync::mpsc::channel();
        let id = lf
            .add(ArmsFromBeside {
                script: std::sync::Arc::clone(&script),
                fired,
                near: Vec::new(),
            })
            .unwrap();
        let handle = lf.handle();
        let runner = std::thread::spawn(move || lf.run().unwrap());
        let event = || {
            script
                .0
                .lock()
                .unwrap()
                .events
                .push_back((id, Readiness::default()));
            script.1.notify_all();
        };
        for round in ["first", "second"] {
            event();
            let got = rx.recv_timeout(Duration::from_secs(60));
            assert_eq!(got, Ok(round), "the leader slept through the {round} timer");
        }
        let report = handle
            .shutdown(Duration::ZERO)
            .wait()
            .into_result()
            .unwrap();
        assert_eq!(runner.join().unwrap(), report);
        // Drained, or forced if its last timer upcall was still returning at the (zero)
        // deadline: closed once either way.
        assert_eq!(report.drained + report.forced, 1, "{report:?}");
    }

    /// Counts its closes and its `ready` upcalls.
    struct Counted {
        closes: std::sync::Arc<AtomicUsize>,
        readies: std::sync::mpsc::Sender<()>,
    }

    impl EventHandler for Counted {
        fn open(&mut self, _: &mut Context<'_>) -> io::Result<()> {
            Ok(())
        }
        fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {
            let _ = self.readies.send(());
        }
        fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (
        Counted,
        std::sync::Arc<AtomicUsize>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let closes = std::sync::Arc::new(AtomicUsize::new(0));
        let (readies, rx) = std::sync::mpsc::channel();
        let h = Counted {
            closes: std::sync::Arc::clone(&closes),
            readies,
        };
        (h, closes, rx)
    }

    /// cargo-mutants (issue 14): a handler that closes itself in `open` is closed at once.
    #[test]
    fn a_handler_closing_itself_in_open_is_closed_at_once() {
        struct ClosesAtOnce(std::sync::Arc<AtomicUsize>);
        impl EventHandler for ClosesAtOnce {
            fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
                cx.close();
                Ok(())
            }
            fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {}
            fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let lf = LeaderFollowers::new(1).unwrap();
        let closes = std::sync::Arc::new(AtomicUsize::new(0));
        lf.add(ClosesAtOnce(std::sync::Arc::clone(&closes)))
            .unwrap();
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        assert_eq!(lf.lf.table.lock().len(), 0);
    }

    /// cargo-mutants (issue 14): a pool dropped without running closes its handlers, once.
    #[test]
    fn a_pool_dropped_without_running_closes_every_handler_once() {
        let lf = LeaderFollowers::new(2).unwrap();
        let (h, closes, _) = counted();
        lf.add(h).unwrap();
        drop(lf);
        assert_eq!(closes.load(Ordering::SeqCst), 1);
    }

    /// cargo-mutants (issue 14): a posted job's view of the pool (`Host::len`, `close`'s
    /// answer, `wake`) was unasserted.
    #[test]
    fn posted_jobs_see_close_and_wake_handlers_on_the_pool() {
        let lf = LeaderFollowers::new(2).unwrap();
        let (a, a_closes, _) = counted();
        let (b, b_closes, b_readies) = counted();
        let a = lf.add(a).unwrap();
        let b = lf.add(b).unwrap();
        let handle = lf.handle();
        let runner = std::thread::spawn(move || lf.run().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        handle
            .post(move |host: &mut dyn Host| {
                let before = host.len();
                let closed = (host.close(a), host.close(a));
                host.wake(b, Readiness::default());
                tx.send((before, closed, host.len())).unwrap();
            })
            .unwrap();
        assert_eq!(rx.recv().unwrap(), (2, (true, false), 1));
        assert_eq!(a_closes.load(Ordering::SeqCst), 1);
        b_readies
            .recv_timeout(Duration::from_secs(60))
            .expect("the woken handler was dispatched");
        let report = handle
            .shutdown(Duration::from_secs(5))
            .wait()
            .into_result()
            .unwrap();
        assert_eq!(runner.join().unwrap(), report);
        assert_eq!(b_closes.load(Ordering::SeqCst), 1);
    }

    /// Stays open through drain and force (a drain is reported on `drained`), and asks to run
    /// again every time, so the pool's threads keep turning.
    /// With `close_after_drain`, it closes itself on its first run after the drain began.
    struct Lingers {
        drained: std::sync::mpsc::Sender<()>,
        close_after_drain: bool,
        saw_drain: bool,
    }

    impl Lingers {
        fn new(drained: std::sync::mpsc::Sender<()>, close_after_drain: bool) -> Self {
            Self {
                drained,
                close_after_drain,
                saw_drain: false,
            }
        }
    }

    impl EventHandler for Lingers {
        fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
            cx.call_again(Readiness::default());
            Ok(())
        }
        fn ready(&mut self, r: Readiness, cx: &mut Context<'_>) {
            if self.close_after_drain && self.saw_drain {
                cx.close();
            } else {
                cx.call_again(r);
            }
        }
        fn drain(&mut self, _: &mut Context<'_>) {
            self.saw_drain = true;
            let _ = self.drained.send(());
        }
        fn force(&mut self, _: &mut Context<'_>) {}
    }

    /// cargo-mutants (issue 14): a handler that closes during the drain, before the
    /// deadline, is counted drained, not forced (the deadline is not due early).
    #[test]
    fn a_handler_closed_before_the_deadline_is_drained_not_forced() {
        let (drained, drain_began) = std::sync::mpsc::channel();
        let lf = LeaderFollowers::new(2).unwrap();
        lf.add(Lingers::new(drained, true)).unwrap();
        let handle = lf.handle();
        let runner = std::thread::spawn(move || lf.run().unwrap());
        let stopped = handle.shutdown(Duration::from_secs(3600));
        drain_began.recv().unwrap();
        let report = stopped.wait().into_result().unwrap();
        assert_eq!((report.drained, report.forced), (1, 0), "{report:?}");
        assert_eq!(runner.join().unwrap(), report);
    }

    /// cargo-mutants (issue 14): a handler forced at the deadline may linger until the
    /// linger bound, no less: on virtual time the pool goes on while the bound is ahead and
    /// stops when it passes.
    #[test]
    fn a_forced_handler_may_linger_until_the_linger_bound() {
        let clock = std::sync::Arc::new(crate::clock::ManualClock::new());
        let config = Config {
            linger: Duration::from_secs(3600),
            ..Config::default()
        };
        let lf = LeaderFollowers::with_config(2, config, clock.clone()).unwrap();
        let (drained, drain_began) = std::sync::mpsc::channel();
        lf.add(Lingers::new(drained, false)).unwrap();
        let handle = lf.handle();
        let runner = std::thread::spawn(move || lf.run().unwrap());
        let stopped = handle.shutdown(Duration::ZERO);
        drain_began.recv().unwrap();
        // Virtual time stands still: however long this waits, the bound stays an hour away.
        let stopped = match stopped.wait_timeout(Duration::from_millis(200)) {
            Err(still) => still.into_token(),
            Ok(report) => panic!("stopped while the handler may still linger: {report:?}"),
        };
        clock.advance(Duration::from_secs(3601));
        let report = stopped.wait().into_result().unwrap();
        assert_eq!(report.forced, 1);
        assert_eq!(runner.join().unwrap(), report);
    }
}
