//! The cross-thread half of a proactor connection: operations initiated from any thread wait
//! here until the connection's event loop takes them.
//!
//! mio cannot run under loom, so this is the part other threads share, generic over the
//! operation type and the waker, and modelled in `loom-tests/tests/proactor.rs`.
//!
//! # Algorithm and invariants
//! - [`OpQueue::submit`] pushes an operation under the lock and returns the loop's waker (if the
//!   loop has attached one) for the caller to wake *after* the lock is released. The loop
//!   attaches its waker and takes operations under the same lock, so an operation submitted
//!   before the waker was attached is taken by the loop's first look, and one submitted after
//!   finds the waker: none waits unseen.
//! - Closing takes every waiting operation out under the lock and marks the queue closed; a
//!   later submit gets its operation back. So each operation is taken by the loop, handed back
//!   by `close`, or refused: exactly one of the three. Sealing ([`OpQueue::seal`], a graceful
//!   close) marks it closed but leaves the waiting operations for the loop's next take.
//! - Write bytes are accounted here, against a high-water mark: a submit that would take the
//!   queued bytes above it is refused with its operation back (unless nothing is queued, so one
//!   oversized write can always proceed); the loop gives bytes back with
//!   [`OpQueue::written`] and answers "writable" waiters once
//!   [`OpQueue::is_writable`] says the queue is at or below the low-water mark.
// Public for the loom models (re-exported under `--cfg posa_loom` only).
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::collections::VecDeque;

use crate::error::Refused;
use crate::sync::Mutex;

struct State<O, W> {
    ops: VecDeque<O>,
    waker: Option<W>,
    closed: bool,
    /// Bytes of writes submitted and not yet written.
    queued_bytes: usize,
}

/// Operations waiting for a connection's loop. See the [module docs](self).
pub struct OpQueue<O, W> {
    state: Mutex<State<O, W>>,
    high_water: usize,
    low_water: usize,
}

impl<O, W: Clone> OpQueue<O, W> {
    /// A queue whose writes are bounded by `high_water` bytes; "writable" again at `low_water`.
    pub fn new(high_water: usize, low_water: usize) -> Self {
        Self {
            state: Mutex::new(State {
                ops: VecDeque::new(),
                waker: None,
                closed: false,
                queued_bytes: 0,
            }),
            high_water: high_water.max(1),
            low_water: low_water.min(high_water),
        }
    }

    /// Queues `op` (`write_bytes`: how many bytes it will write, 0 for others). On success,
    /// returns the waker to wake once the caller holds no lock.
    pub fn submit(&self, op: O, write_bytes: usize) -> Result<Option<W>, Refused<O>> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(Refused::Closed(op));
        }
        if write_bytes > 0 && s.queued_bytes > 0 && s.queued_bytes + write_bytes > self.high_water {
            return Err(Refused::Full(op));
        }
        s.queued_bytes += write_bytes;
        s.ops.push_back(op);
        Ok(s.waker.clone())
    }

    /// Loop side: attaches the waker, then moves every waiting operation into `out`. `false`
    /// if the queue is closed.
    pub fn take(&self, waker: &W, out: &mut VecDeque<O>) -> bool {
        let mut s = self.state.lock();
        if s.waker.is_none() {
            s.waker = Some(waker.clone());
        }
        out.extend(s.ops.drain(..));
        !s.closed
    }

    /// Loop side: `bytes` of queued writes went out. (Whether that crossed the low-water
    /// mark is asked afterwards, by [`is_writable`](Self::is_writable), when waiters exist.)
    pub fn written(&self, bytes: usize) {
        let mut s = self.state.lock();
        s.queued_bytes = s.queued_bytes.saturating_sub(bytes);
    }

    /// `true` if queued writes are at or below the low-water mark.
    pub fn is_writable(&self) -> bool {
        self.state.lock().queued_bytes <= self.low_water
    }

    /// Bytes of writes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().queued_bytes
    }

    /// Closes the queue and hands back every operation still waiting (to be cancelled), with
    /// the waker (to tell the loop). Later submits are refused.
    pub fn close(&self) -> (Vec<O>, Option<W>) {
        let mut s = self.state.lock();
        s.closed = true;
        (s.ops.drain(..).collect(), s.waker.clone())
    }

    /// Closes the queue to new operations but leaves those waiting for the loop to take (a
    /// graceful close: queued writes still go out). Returns the loop's waker, to tell it.
    pub fn seal(&self) -> Option<W> {
        let mut s = self.state.lock();
        s.closed = true;
        s.waker.clone()
    }

    /// Whether the queue is closed, and the loop's waker if one is attached (to wake the loop
    /// about something other than a new operation: a cancellation).
    pub fn waker(&self) -> (bool, Option<W>) {
        let s = self.state.lock();
        (s.closed, s.waker.clone())
    }
}
