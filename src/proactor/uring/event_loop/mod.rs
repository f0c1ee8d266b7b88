//! One ring loop: the thread that owns an io_uring, submits every operation of its
//! connections, listeners, timers and file reads, and answers each from its completion.
//!
//! ```text
//! initiator (any thread)                  ring loop thread                         kernel
//! conn.read_some(buf) ─ OpQueue::submit ─▶ take ops ─ Recv SQE (buf in op table) ─▶ recv(2)
//!     RingWaker: inbox + eventfd ───────▶ ◀─ CQE(n) ─ complete(Done{buf, n}) ─▶ token
//! ```
//!
//! # Invariants
//! - The kernel owns an operation's buffer (and the socket address of a connect, the file of a
//!   file read) from submission to completion: they live in the operation table, keyed by the
//!   `user_data` of the submission (slot index and generation), and are handed back only from
//!   the operation's final completion. A cancelled operation is answered from its completion
//!   too: `Cancelled` if the kernel says `ECANCELED` and nothing moved, the result (seen by the
//!   token as `CancelledAfterEffect`) if the kernel completed it first.
//! - One read-side and one write-side operation in flight per connection, so reads and writes
//!   each complete in issue order; a short send is re-submitted for the rest before the next
//!   write starts.
//! - A connection is freed (its descriptor closed) only when nothing of it is in flight. A
//!   loop exits only when its operation table is empty: at shutdown it cancels what remains and
//!   reaps until the kernel has answered everything, so no buffer or descriptor outlives it.
//! - Multishot accept is re-armed only when the kernel ends it (no `MORE` flag). An accepted
//!   connection with no accept waiting is held, at most `HELD_ACCEPTS`; past that the multishot
//!   is cancelled and the rest wait in the kernel's backlog until accepts are initiated.
//! - Receives into pooled buffers select a buffer from the provided ring only when data
//!   arrives; `ENOBUFS` (every buffer lent out) parks the receive until a buffer comes back.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue};

use super::super::accept::{AcceptCompleter, SharedAccept};
use super::super::conn::{LoopOps, LoopWaker, Read, ReadOp, RecvOp, SharedConn, WriteOp};
use super::super::delivery::Delivery;
use super::super::ops::OpQueue;
use super::super::recv::RecvBuf;
use super::super::{Conn, Done, OpCompleter, OpError};
use super::ring::{LoopRing, Ring};
use super::shared::{Inbox, Key, RingShared, RingWaker};
use super::slab::Slab;
use super::sys::{self, BufRing};
use super::{RingBuf, Rings, TimerCompleter};
use crate::net::{ConnectError, ConnectOptions, Listener, Peer};
use crate::reactor::{ShutdownReport, TimerId, TimerQueue};
use crate::sync::Arc;

mod conn;
mod connect;
mod listen;
mod timers;

/// Accepted connections held for accepts not yet initiated, at most.
const HELD_ACCEPTS: usize = 64;

/// What a timer of the loop is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerFor {
    /// A user's timer (`ProactorHandle::timer`), by its slot.
    User(u64),
    /// The in-flight read of a connection outlived its timeout.
    Read(u64),
    /// A connect attempt outlived its timeout (the connect's slot).
    ConnectAttempt(u64),
    /// A connect's backoff ended: the next attempt.
    ConnectRetry(u64),
    /// A connection's graceful close ran out of time.
    Linger(u64),
}

/// An operation the kernel holds, with everything it uses.
enum Entry {
    /// The read of the eventfd that wakes the loop (`_buf`: the counter the kernel writes,
    /// kept here until the read completes).
    Wake { _buf: Box<[u8; 8]> },
    /// A listener's multishot accept.
    Accept { listener: u64 },
    /// A read into the caller's buffer.
    Read { conn: u64, op: ReadOp },
    /// A receive into a buffer the kernel selects.
    Recv { conn: u64, op: RecvOp },
    /// A send (its buffer), or a write shutdown.
    Write { conn: u64, op: WriteOp },
    /// A connect attempt (the socket address the kernel reads).
    Connect {
        connect: u64,
        fd: OwnedFd,
        /// Read by the kernel until the connect completes.
        _addr: Box<socket2::SockAddr>,
    },
    /// A positioned file read.
    File {
        /// Open until the read completes.
        _file: Arc<File>,
        buf: Vec<u8>,
        c: OpCompleter,
    },
    /// An `AsyncCancel`'s own completion.
    Cancel,
    /// A closing connection's write shutdown (its lingering close begins).
    LingerFin { conn: u64 },
    /// A closing connection's receive of input to throw away (`_buf`: written by the kernel,
    /// never read).
    LingerRecv { conn: u64, _buf: Box<[u8]> },
}

struct InFlight {
    entry: Entry,
    /// An `AsyncCancel` was submitted for it.
    cancelling: bool,
    /// Why it was cancelled, when the loop (not the token) asked: a read's timeout.
    timed_out: bool,
}

struct RingConn {
    fd: OwnedFd,
    shared: SharedConn,
    waker: RingWaker,
    loop_waker: LoopWaker,
    ops: LoopOps,
    read_op: Option<u64>,
    read_timer: Option<TimerId>,
    /// A pooled receive is parked: the buffer ring ran dry.
    starved: bool,
    write_op: Option<u64>,
    /// Closing: answer everything, cancel what is in flight, free when nothing is.
    closing: Option<io::ErrorKind>,
    /// Closed by the drain deadline, not by its owner.
    forced: bool,
    /// Closing gracefully: where it is, and the timer that bounds it.
    linger: Option<(Linger, TimerId)>,
}

/// The steps of a connection's graceful close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linger {
    /// Writes accepted before the close go out.
    Flush,
    /// The write shutdown is in flight.
    Fin,
    /// Input is discarded until the peer's end of stream.
    Discard,
}

struct RingListener {
    listener: Listener,
    shared: SharedAccept,
    waker: RingWaker,
    loop_waker: LoopWaker,
    waiting: VecDeque<AcceptCompleter>,
    held: VecDeque<OwnedFd>,
    accept_op: Option<u64>,
    closing: bool,
}

/// A connect in progress: its attempts, timer and token.
struct Connecting {
    addr: crate::net::Addr,
    options: ConnectOptions,
    c: Option<crate::act::Completer<Conn, ConnectError>>,
    attempts: u32,
    rng: u64,
    op: Option<u64>,
    timer: Option<TimerId>,
    watched: Option<(crate::intercept::Dispatch, Instant)>,
}

/// One ring loop. See the [module docs](self).
pub(crate) struct RingLoop {
    index: usize,
    ring: LoopRing,
    bufs: BufRing,
    shared: Arc<RingShared>,
    rings: Arc<Rings>,
    delivery: Delivery,
    ops: Slab<InFlight>,
    conns: Slab<RingConn>,
    listeners: Slab<RingListener>,
    connects: Slab<Connecting>,
    user_timers: Slab<(TimerId, TimerCompleter)>,
    timers: TimerQueue<TimerFor>,
    incoming_timers: VecDeque<(Duration, TimerCompleter)>,
    files: Vec<u64>,
    /// Connections and listeners to look at this turn.
    dirty: VecDeque<Key>,
    starved: Vec<u64>,
    wake_armed: bool,
    /// Tearing down: the eventfd read is not re-armed.
    stopping: bool,
    drain_deadline: Option<Instant>,
    /// When the drain began (a later, shorter grace counts from here).
    drain_started: Option<Instant>,
    /// The drain's deadline passed and the connections left were forced.
    forcing: bool,
    /// How long a connection's graceful close may take.
    linger: Duration,
    /// Connections closing gracefully now (bounded by [`MAX_LINGERING`]).
    lingering: usize,
    drained: usize,
    forced: usize,
}

/// Connections a loop closes gracefully at once, at most; past that a close is immediate.
const MAX_LINGERING: usize = 4096;

impl RingLoop {
    pub(super) fn new(
        index: usize,
        ring: LoopRing,
        bufs: BufRing,
        shared: Arc<RingShared>,
        rings: Arc<Rings>,
        linger: Duration,
    ) -> Self {
        RingLoop {
            index,
            ring,
            bufs,
            delivery: rings.delivery.clone(),
            shared,
            rings,
            ops: Slab::new(),
            conns: Slab::new(),
            listeners: Slab::new(),
            connects: Slab::new(),
            user_timers: Slab::new(),
            timers: TimerQueue::new(),
            incoming_timers: VecDeque::new(),
            files: Vec::new(),
            // The first turn takes the timer queue, which attaches the loop's waker to it.
            dirty: VecDeque::from([Key::Timers]),
            starved: Vec::new(),
            wake_armed: false,
            stopping: false,
            drain_deadline: None,
            drain_started: None,
            forcing: false,
            linger,
            lingering: 0,
            drained: 0,
            forced: 0,
        }
    }

    // ---- submission -----------------------------------------------------------------------

    /// Puts `entry` (whose memory `sqe` points into) in the table and submits `sqe` for it.
    fn submit(&mut self, sqe: squeue::Entry, entry: Entry) -> u64 {
        let key = self.ops.insert(InFlight {
            entry,
            cancelling: false,
            timed_out: false,
        });
        self.push(sqe.user_data(key));
        key
    }

    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every pointer in an SQE this loop builds points into memory the
            // operation table owns (a buffer, a socket address, an eventfd counter) or that
            // outlives the ring (the buffer ring, the descriptors of live connections), and
            // stays put until the operation's final completion is reaped.
            if unsafe { self.ring.push(&sqe) } {
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = Ring::submit(&mut self.ring) {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(error = %e, "posa io_uring: submit failed");
                }
                self.reap(); // EBUSY: the completion queue is full; make room
            }
        }
    }

    /// Asks the kernel to cancel operation `key` (once); its own completion answers it.
    fn cancel_op(&mut self, key: u64) {
        let Some(op) = self.ops.get_mut(key) else {
            return;
        };
        if op.cancelling {
            return;
        }
        op.cancelling = true;
        let sqe = opcode::AsyncCancel::new(key).build();
        self.submit(sqe, Entry::Cancel);
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let mut buf = Box::new([0u8; 8]);
        let sqe = opcode::Read::new(
            sys::fd(self.shared.event_fd.as_raw_fd()),
            buf.as_mut_ptr(),
            8,
        )
        .build();
        self.submit(sqe, Entry::Wake { _buf: buf });
        self.wake_armed = true;
    }

    // ---- the loop -------------------------------------------------------------------------

    /// Runs until shutdown has drained (or been forced) and the kernel answered everything.
    pub(super) fn run(mut self) -> io::Result<ShutdownReport> {
        self.shared.enter();
        self.arm_wake();
        loop {
            self.take_inbox();
            self.fire_timers();
            self.progress();
            if self.finished() {
                break;
            }
            let busy = !self.dirty.is_empty() || self.shared.pending();
            let timeout = crate::reactor::wait_timeout(
                Instant::now(),
                self.timers.next_deadline(),
                busy,
                self.drain_deadline.filter(|_| !self.forcing),
            );
            self.wait(timeout)?;
            self.reap();
        }
        Ok(self.teardown())
    }

    /// Submits what is queued and waits for a completion, at most `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.ring.submit_and_wait_timeout(timeout) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Handles every completion the kernel has posted.
    fn reap(&mut self) {
        while let Some(cqe) = self.ring.next_completion() {
            self.complete(cqe.user_data, cqe.result, cqe.flags);
        }
    }

    /// Takes keys, jobs and a shutdown request from the inbox; puts returned buffers back.
    fn take_inbox(&mut self) {
        let Inbox {
            keys,
            jobs,
            shutdown,
            ..
        } = self.shared.take();
        self.dirty.extend(keys);
        for job in jobs {
            job(self);
        }
        match (shutdown, self.drain_deadline, self.drain_started) {
            (Some(grace), None, _) => self.begin_drain(grace),
            // A later, shorter grace brings the deadline forward (a second signal).
            (Some(grace), Some(deadline), Some(started))
                if !self.forcing && started + grace < deadline =>
            {
                self.drain_deadline = Some(started + grace);
            }
            _ => {}
        }
        self.rings.loops[self.index].buf_waker.taken();
        if self.bufs.recycle() > 0 && !self.starved.is_empty() {
            self.unstarve();
        }
    }

    fn progress(&mut self) {
        while let Some(key) = self.dirty.pop_front() {
            match key {
                Key::Conn(k) => self.progress_conn(k),
                Key::Listener(k) => self.progress_listener(k),
                Key::Timers => self.progress_timers(),
                Key::Files => self.progress_files(),
                Key::Buffers => {} // `take_inbox` recycled them
            }
        }
    }

    /// Buffers came back: the parked receives go on.
    fn unstarve(&mut self) {
        let starved = std::mem::take(&mut self.starved);
        for k in starved {
            if let Some(c) = self.conns.get_mut(k) {
                c.starved = false;
            }
            self.dirty.push_back(Key::Conn(k));
        }
        self.bufs.slab.unstarve();
    }

    fn finished(&self) -> bool {
        self.drain_deadline.is_some()
            && self.conns.is_empty()
            && self.listeners.is_empty()
            && self.connects.is_empty()
            && self.files.is_empty()
    }

    fn begin_drain(&mut self, grace: Duration) {
        let now = Instant::now();
        self.drain_started = Some(now);
        self.drain_deadline = Some(now + grace);
        tracing::info!(?grace, conns = self.conns.len(), "posa io_uring: draining");
        let listeners: Vec<u64> = self.listeners.keys().collect();
        for k in listeners {
            if let Some(l) = self.listeners.get_mut(k) {
                l.closing = true;
            }
            self.dirty.push_back(Key::Listener(k));
        }
        let conns: Vec<u64> = self.conns.keys().collect();
        self.dirty.extend(conns.into_iter().map(Key::Conn));
        self.dirty.push_back(Key::Timers);
        let connects: Vec<u64> = self.connects.keys().collect();
        for k in connects {
            self.stop_connect(k, ConnectError::Shutdown);
        }
    }

    /// Cancels what is in flight, reaps until the kernel has answered everything, and reports.
    fn teardown(mut self) -> ShutdownReport {
        self.stopping = true;
        let keys: Vec<u64> = self.ops.keys().collect();
        for key in keys {
            self.cancel_op(key);
        }
        while !self.ops.is_empty() {
            let _ = self.ring.submit_and_wait_timeout(None);
            self.reap();
        }
        let jobs_dropped = {
            let mut inbox = self.shared.inbox.lock();
            inbox.stopped = true;
            inbox.keys.clear();
            std::mem::take(&mut inbox.jobs).len()
        };
        let _ = self.ring.unregister_buf_ring(0);
        let report = ShutdownReport {
            drained: self.drained,
            forced: self.forced,
            jobs_dropped,
        };
        tracing::info!(loop_ = self.index, ?report, "posa io_uring: stopped");
        report
    }

    // ---- completions ----------------------------------------------------------------------

    fn complete(&mut self, key: u64, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if more {
            // A multishot accept that goes on: its entry stays.
            if let Some(InFlight {
                entry: Entry::Accept { listener },
                ..
            }) = self.ops.get(key)
            {
                let listener = *listener;
                self.accepted(listener, res);
            }
            return;
        }
        let Some(op) = self.ops.remove(key) else {
            return; // an AsyncCancel for an operation already gone
        };
        match op.entry {
            Entry::Cancel => {}
            Entry::Wake { .. } => {
                self.wake_armed = false;
                if !self.stopping {
                    self.arm_wake();
                }
            }
            Entry::Accept { listener } => {
                if let Some(l) = self.listeners.get_mut(listener) {
                    l.accept_op = None;
                }
                self.accepted(listener, res);
                self.dirty.push_back(Key::Listener(listener));
            }
            Entry::Read { conn, op: read } => self.read_done(conn, read, res, op.timed_out),
            Entry::Recv { conn, op: recv } => self.recv_done(conn, recv, res, flags, op.timed_out),
            Entry::Write { conn, op: write } => self.write_done(conn, write, res),
            Entry::LingerFin { conn } => self.linger_fin_done(conn),
            Entry::LingerRecv { conn, .. } => self.linger_recv_done(conn, res),
            Entry::Connect { connect, fd, .. } => self.connect_done(connect, fd, res),
            Entry::File { buf, c, .. } => {
                self.files.retain(|&k| k != key);
                let result = if res >= 0 {
                    Ok(Done {
                        buf,
                        n: res as usize,
                    })
                } else if res == -libc::ECANCELED {
                    self.delivery.stop(c, buf, 0, io::ErrorKind::Interrupted);
                    return;
                } else {
                    Err(OpError {
                        error: io::Error::from_raw_os_error(-res),
                        buf,
                        n: 0,
                    })
                };
                self.delivery.complete(c, result);
            }
        }
    }
}

/// The timer queue a user's timers wait in for this loop.
pub(super) type TimerOps = OpQueue<(Duration, TimerCompleter), LoopWaker>;
