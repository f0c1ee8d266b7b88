//! Serialized dispatch: a handler is run by at most one thread at a time, and work offered
//! while it runs is queued for that thread instead of being lost or run concurrently.
//!
//! This is what lets the threads of a [`LeaderFollowers`](super::LeaderFollowers) pool share one
//! demultiplexer (ACE's TP_Reactor suspends a handle during its upcall for the same reason):
//! with edge-triggered readiness, the leader that takes the next event for a handler another
//! thread is still running must neither run it beside that thread nor drop it.
//!
//! # Algorithm and invariants
//! A cell is `Idle(handler)`, `Busy { queue, close }` or `Closed`, behind the shim's mutex.
//! - [`offer`](SerialCell::offer) on an idle cell takes the handler out (the cell turns busy) and
//!   gives it to the caller, who runs the work; on a busy cell it queues the work (readiness is
//!   OR-merged into a queued readiness, so the queue stays bounded by the kinds of work); on a
//!   closed cell it drops the work.
//! - [`finish`](SerialCell::finish) is called by the running thread when an upcall returns: it
//!   gets the next queued work (and keeps the handler), or a close request, or parks the handler
//!   (the cell turns idle). So exactly one thread holds the handler while the cell is busy.
//! - [`request_close`](SerialCell::request_close) on an idle cell hands the handler to the
//!   caller to close; on a busy one it marks the close for the running thread.
// Public for the loom models (re-exported under `--cfg posa_loom` only).
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::collections::VecDeque;
use std::fmt;

use super::{Readiness, TimerId};
use crate::sync::Mutex;

/// One piece of work for a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Readiness of its sources.
    Ready(Readiness),
    /// A timer it armed expired.
    Timeout(TimerId),
    /// Shutdown began.
    Drain,
    /// The drain's grace ran out.
    Force,
}

/// What the running thread does after an upcall.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish<H> {
    /// Nothing queued: the handler is parked in the cell.
    Parked,
    /// More work arrived meanwhile: run it, still holding the handler.
    Next(H, Work),
    /// A close was requested meanwhile: close the handler.
    Close(H),
}

enum State<H> {
    Idle(H),
    Busy { queue: VecDeque<Work>, close: bool },
    Closed,
}

/// A handler that only one thread runs at a time. See the [module docs](self).
pub struct SerialCell<H> {
    state: Mutex<State<H>>,
}

impl<H> SerialCell<H> {
    /// A busy cell whose handler is held by the creating thread (which will `finish` it):
    /// work offered before the handler is first parked (while it opens) is queued.
    pub fn new_busy() -> Self {
        Self {
            state: Mutex::new(State::Busy {
                queue: VecDeque::new(),
                close: false,
            }),
        }
    }

    /// Offers work: `Some(handler)` if the caller must run it now; `None` if it was queued for
    /// the running thread or the cell is closed.
    pub fn offer(&self, work: Work) -> Option<H> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Idle(_) => {
                let idle = std::mem::replace(
                    &mut *state,
                    State::Busy {
                        queue: VecDeque::new(),
                        close: false,
                    },
                );
                match idle {
                    State::Idle(h) => Some(h),
                    _ => unreachable!("matched Idle above"),
                }
            }
            State::Busy { queue, .. } => {
                if matches!(work, Work::Drain | Work::Force) && queue.contains(&work) {
                    return None; // one drain (or force) is enough
                }
                match (queue.back_mut(), work) {
                    (Some(Work::Ready(queued)), Work::Ready(new)) => merge(queued, new),
                    _ => queue.push_back(work),
                }
                None
            }
            State::Closed => None,
        }
    }

    /// Called by the running thread when an upcall returns, with the handler.
    pub fn finish(&self, handler: H) -> Finish<H> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Busy { close: true, .. } => {
                *state = State::Closed;
                Finish::Close(handler)
            }
            State::Busy { queue, .. } => match queue.pop_front() {
                Some(work) => Finish::Next(handler, work),
                None => {
                    *state = State::Idle(handler);
                    Finish::Parked
                }
            },
            // finish is only called by the holder of a busy cell
            State::Idle(_) | State::Closed => Finish::Close(handler),
        }
    }

    /// Asks for the handler to be closed: `Some(handler)` if it was idle (close it now), `None`
    /// if a thread is running it (that thread gets [`Finish::Close`]) or it is already closed.
    pub fn request_close(&self) -> Option<H> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Idle(_) => match std::mem::replace(&mut *state, State::Closed) {
                State::Idle(h) => Some(h),
                _ => unreachable!("matched Idle above"),
            },
            State::Busy { close, .. } => {
                *close = true;
                None
            }
            State::Closed => None,
        }
    }

    /// Marks the cell closed (the running thread closed the handler itself).
    pub fn mark_closed(&self) {
        *self.state.lock() = State::Closed;
    }
}

fn merge(into: &mut Readiness, new: Readiness) {
    into.readable |= new.readable;
    into.writable |= new.writable;
    into.error |= new.error;
    into.read_closed |= new.read_closed;
    into.write_closed |= new.write_closed;
}

impl<H> fmt::Debug for SerialCell<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.state.lock() {
            State::Idle(_) => "idle",
            State::Busy { .. } => "busy",
            State::Closed => "closed",
        };
        f.debug_struct("SerialCell").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable() -> Work {
        Work::Ready(Readiness {
            readable: true,
            ..Readiness::default()
        })
    }

    fn writable() -> Work {
        Work::Ready(Readiness {
            writable: true,
            ..Readiness::default()
        })
    }

    #[test]
    fn busy_cell_queues_and_merges_then_hands_work_to_the_runner() {
        let cell = SerialCell::new_busy();
        assert!(cell.offer(readable()).is_none());
        assert!(cell.offer(writable()).is_none()); // merged into the queued readiness
        assert!(cell.offer(Work::Drain).is_none());
        assert!(cell.offer(Work::Drain).is_none()); // one drain is enough
        let merged = Work::Ready(Readiness {
            readable: true,
            writable: true,
            ..Readiness::default()
        });
        assert_eq!(cell.finish("h"), Finish::Next("h", merged));
        assert_eq!(cell.finish("h"), Finish::Next("h", Work::Drain));
        assert_eq!(cell.finish("h"), Finish::Parked);
        assert_eq!(cell.offer(readable()), Some("h"));
    }

    /// cargo-mutants (issue 14): `|=` as `&=` for `error`, `read_closed` and `write_closed`
    /// survived; a lost flag is a lost edge-triggered event, which can stall a connection.
    #[test]
    fn every_readiness_flag_survives_a_merge() {
        let flags: [fn(&mut Readiness); 5] = [
            |r| r.readable = true,
            |r| r.writable = true,
            |r| r.error = true,
            |r| r.read_closed = true,
            |r| r.write_closed = true,
        ];
        let cell = SerialCell::new_busy();
        let mut all = Readiness::default();
        for set in flags {
            let mut one = Readiness::default();
            set(&mut one);
            set(&mut all);
            assert!(cell.offer(Work::Ready(one)).is_none());
        }
        assert_eq!(cell.finish("h"), Finish::Next("h", Work::Ready(all)));
    }

    #[test]
    fn close_requests_reach_the_runner_or_the_caller() {
        let cell = SerialCell::new_busy();
        assert_eq!(cell.request_close(), None);
        assert_eq!(cell.finish(1), Finish::Close(1));
        assert_eq!(cell.offer(readable()), None, "closed cells drop work");
        let cell = SerialCell::new_busy();
        assert_eq!(cell.finish(2), Finish::Parked);
        assert_eq!(cell.request_close(), Some(2));
        assert_eq!(cell.request_close(), None);
    }
}
