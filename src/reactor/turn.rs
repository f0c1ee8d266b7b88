//! The loop skeleton both event-loop models share: how long to wait, one poll of the
//! demultiplexer, a batch of posted jobs, and one upcall. [`Reactor::turn`](super::Reactor::turn)
//! runs them on one thread; a [`LeaderFollowers`](super::LeaderFollowers) leader polls and its
//! threads dispatch.
//!
//! # Invariants
//! - A loop never sleeps past its next timer, past the drain deadline, or while it owes work
//!   (re-runs asked for with `call_again`, or a mailbox with more jobs than one batch).
//! - `EINTR` from the poll is a turn with no events, never an error.
//! - A posted job or upcall that panics is caught and counted; the loop goes on.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::{Config, HandlerId, Host, Job, Mailbox, Readiness, WAKE_TOKEN};
use crate::panic_message;

/// How long the next poll may wait: until the next timer, not past the drain deadline, and
/// not at all when the loop owes work (`busy`).
pub(crate) fn wait_timeout(
    now: Instant,
    next_timer: Option<Instant>,
    busy: bool,
    drain_deadline: Option<Instant>,
) -> Option<Duration> {
    let mut timeout = next_timer.map(|d| d.saturating_duration_since(now));
    if busy {
        timeout = Some(Duration::ZERO);
    }
    if let Some(deadline) = drain_deadline {
        let left = deadline.saturating_duration_since(now);
        timeout = Some(timeout.map_or(left, |t| t.min(left)));
    }
    timeout
}

/// Polls once and appends each handler event to `ready`. Returns whether the loop's waker
/// fired (jobs were posted, or shutdown began).
pub(super) fn poll_ready(
    poll: &mut Poll,
    events: &mut Events,
    timeout: Option<Duration>,
    ready: &mut Vec<(HandlerId, Readiness)>,
) -> io::Result<bool> {
    match poll.poll(events, timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
        Err(e) => return Err(e),
    }
    let mut woken = false;
    for event in events.iter() {
        if event.token() == WAKE_TOKEN {
            woken = true;
        } else {
            ready.push((HandlerId(event.token()), Readiness::from_event(event)));
        }
    }
    Ok(woken)
}

/// Takes up to `budget` posted jobs and runs each with `host`, catching panics. Returns
/// whether more jobs wait, and how many panicked.
pub(super) fn run_jobs(
    mailbox: &Mailbox<Job, Box<dyn super::mailbox::Notify>>,
    budget: usize,
    jobs: &mut Vec<Job>,
    host: &mut dyn Host,
) -> (bool, u64) {
    let more = mailbox.take_batch(budget, jobs);
    let mut panics = 0;
    for job in jobs.drain(..) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job(&mut *host))) {
            panics += 1;
            tracing::error!(panic = %panic_message(&*panic), "posa: posted job panicked");
        }
    }
    (more, panics)
}

/// Runs one upcall under `catch_unwind`, inside the interceptor chain, and reports it
/// (`tracing::warn`) if it ran longer than the stall threshold: the one dispatch path of both
/// event-loop models. Returns the upcall's result and whether it stalled.
pub(super) fn timed_upcall(
    id: HandlerId,
    config: &Config,
    upcall: impl FnOnce(),
) -> (std::thread::Result<()>, bool) {
    use crate::intercept::{Dispatch, Ended, Point};
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
            Ended::Ok
        } else {
            Ended::Panicked
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
