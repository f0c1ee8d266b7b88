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

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::super::accept::{AcceptCompleter, SharedAccept};
use super::super::conn::{LoopWaker, Op, Read, ReadOp, RecvOp, SharedConn, WriteOp};
use super::super::delivery::Delivery;
use super::super::ops::OpQueue;
use super::super::recv::RecvBuf;
use super::super::{Conn, Done, OpCompleter, OpError};
use super::shared::{Inbox, Key, RingShared, RingWaker};
use super::slab::Slab;
use super::sys::{self, BufRing};
use super::{RingBuf, Rings, TimerCompleter};
use crate::net::{ConnectError, ConnectOptions, Listener, Peer};
use crate::reactor::{ShutdownReport, TimerId, TimerQueue};
use crate::sync::Arc;
use crate::sync::atomic::Ordering::SeqCst;
use crate::sync::dekker_fence;

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
    incoming: VecDeque<Op>,
    reads: VecDeque<Read>,
    read_op: Option<u64>,
    read_timer: Option<TimerId>,
    /// A pooled receive is parked: the buffer ring ran dry.
    starved: bool,
    writes: VecDeque<WriteOp>,
    write_op: Option<u64>,
    waiters: Vec<OpCompleter>,
    /// Closing: answer everything, cancel what is in flight, free when nothing is.
    closing: Option<io::ErrorKind>,
    /// Closed by the drain deadline, not by its owner.
    forced: bool,
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
    ring: IoUring,
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
    drained: usize,
    forced: usize,
}

impl RingLoop {
    pub(super) fn new(
        index: usize,
        ring: IoUring,
        bufs: BufRing,
        shared: Arc<RingShared>,
        rings: Arc<Rings>,
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
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = self.ring.submit() {
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
        self.arm_wake();
        loop {
            self.take_inbox();
            self.fire_timers();
            self.progress();
            if self.finished() {
                break;
            }
            let busy = !self.dirty.is_empty();
            let timeout = crate::reactor::wait_timeout(
                Instant::now(),
                self.timers.next_deadline(),
                busy,
                self.drain_deadline,
            );
            self.wait(timeout)?;
            self.reap();
        }
        Ok(self.teardown())
    }

    /// Submits what is queued and waits for a completion, at most `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match result {
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
        loop {
            let cqe = self.ring.completion().next();
            let Some(cqe) = cqe else { break };
            self.complete(cqe.user_data(), cqe.result(), cqe.flags());
        }
    }

    /// Takes keys, jobs and a shutdown request from the inbox; puts returned buffers back.
    fn take_inbox(&mut self) {
        self.shared.lower();
        let Inbox {
            keys,
            jobs,
            shutdown,
            ..
        } = {
            let mut inbox = self.shared.inbox.lock();
            Inbox {
                keys: std::mem::take(&mut inbox.keys),
                jobs: std::mem::take(&mut inbox.jobs),
                shutdown: inbox.shutdown,
                stopped: false,
            }
        };
        self.dirty.extend(keys);
        for job in jobs {
            job(self);
        }
        if let (Some(grace), None) = (shutdown, self.drain_deadline) {
            self.begin_drain(grace);
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
        self.bufs.slab.starving.store(false, SeqCst);
    }

    fn finished(&self) -> bool {
        self.drain_deadline.is_some()
            && self.conns.is_empty()
            && self.listeners.is_empty()
            && self.connects.is_empty()
            && self.files.is_empty()
    }

    fn begin_drain(&mut self, grace: Duration) {
        for (k, c) in self.conns.iter() {
            tracing::debug!(k, read = ?c.read_op, write = ?c.write_op, writes = c.writes.len(), reads = c.reads.len(), starved = c.starved, "drain: conn");
        }
        self.drain_deadline = Some(Instant::now() + grace);
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
            let _ = self.ring.submit_and_wait(1);
            self.reap();
        }
        let jobs_dropped = {
            let mut inbox = self.shared.inbox.lock();
            inbox.stopped = true;
            inbox.keys.clear();
            std::mem::take(&mut inbox.jobs).len()
        };
        let _ = self.ring.submitter().unregister_buf_ring(0);
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

    // ---- connections ----------------------------------------------------------------------

    /// Takes `fd` (a connected socket) as a connection of this loop.
    pub(super) fn add_conn(&mut self, fd: OwnedFd, shared: SharedConn) {
        let key = self.conns.vacant_key();
        let waker = RingWaker::new(Arc::clone(&self.shared), Key::Conn(key));
        let loop_waker = LoopWaker::Ring(waker.clone());
        let inserted = self.conns.insert(RingConn {
            fd,
            shared,
            waker,
            loop_waker,
            incoming: VecDeque::new(),
            reads: VecDeque::new(),
            read_op: None,
            read_timer: None,
            starved: false,
            writes: VecDeque::new(),
            write_op: None,
            waiters: Vec::new(),
            closing: None,
            forced: false,
        });
        debug_assert_eq!(inserted, key);
        self.dirty.push_back(Key::Conn(key));
    }

    fn progress_conn(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.waker.taken();
        let open = c.shared.queue.take(&c.loop_waker, &mut c.incoming);
        while let Some(op) = c.incoming.pop_front() {
            match op {
                Op::Read(r) => c.reads.push_back(r),
                Op::Write(w) => c.writes.push_back(w),
                Op::Writable(w) => c.waiters.push(w),
            }
        }
        if !open && c.closing.is_none() {
            c.closing = Some(io::ErrorKind::NotConnected);
        }
        // Draining: reads are cancelled (`start_read`), writes go on; the owner closes the
        // connection when it has said everything. At the deadline it is forced closed.
        if c.closing.is_none() && self.drain_deadline.is_some_and(|d| Instant::now() >= d) {
            c.closing = Some(io::ErrorKind::NotConnected);
            c.forced = true;
        }
        self.answer_writable(key);
        if self.conns.get(key).is_some_and(|c| c.closing.is_some()) {
            return self.close_conn(key);
        }
        self.start_read(key);
        self.start_write(key);
    }

    /// Stops every queued operation, cancels what is in flight, frees the connection once
    /// nothing is.
    fn close_conn(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let kind = c.closing.unwrap_or(io::ErrorKind::NotConnected);
        let (queued, _) = c.shared.queue.close();
        let delivery = &self.delivery;
        for r in c.reads.drain(..) {
            r.stop(delivery, kind);
        }
        for w in c.writes.drain(..) {
            w.stop(delivery, kind);
        }
        for op in c.incoming.drain(..).chain(queued) {
            op.stop(delivery, kind);
        }
        for w in c.waiters.drain(..) {
            delivery.stop(w, Vec::new(), 0, kind);
        }
        if let Some(t) = c.read_timer.take() {
            self.timers.cancel(t);
        }
        let in_flight: Vec<u64> = c.read_op.into_iter().chain(c.write_op).collect();
        if in_flight.is_empty() {
            let forced = c.forced;
            self.conns.remove(key); // closes the descriptor
            self.starved.retain(|&k| k != key);
            if self.drain_deadline.is_some() {
                if forced {
                    self.forced += 1;
                } else {
                    self.drained += 1;
                }
            }
            return;
        }
        for op in in_flight {
            self.cancel_op(op);
        }
    }

    fn start_read(&mut self, key: u64) {
        let draining = self.drain_deadline.is_some();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(op) = c.read_op {
            // In flight: cancel it if its token asked, or the loop is draining.
            if draining
                || self.ops.get(op).is_some_and(|f| match &f.entry {
                    Entry::Read { op, .. } => op.c.is_cancelled(),
                    Entry::Recv { op, .. } => op.c.is_cancelled(),
                    _ => false,
                })
            {
                self.cancel_op(op);
            }
            return;
        }
        if c.starved {
            return; // parked until a buffer comes back
        }
        while let Some(front) = c.reads.front() {
            if front.is_cancelled() || draining {
                if let Some(r) = c.reads.pop_front() {
                    r.stop(&self.delivery, io::ErrorKind::Interrupted);
                }
                continue;
            }
            break;
        }
        let Some(read) = c.reads.pop_front() else {
            return;
        };
        let timeout = read.timeout();
        let fd = sys::fd(c.fd.as_raw_fd());
        let op = match read {
            Read::Into(mut r) => {
                if r.buf.is_empty() {
                    let ReadOp { buf, c: done, .. } = r;
                    self.delivery.complete(done, Ok(Done { buf, n: 0 }));
                    self.dirty.push_back(Key::Conn(key));
                    return;
                }
                let rest = &mut r.buf[r.filled..];
                let sqe = opcode::Recv::new(fd, rest.as_mut_ptr(), rest.len() as u32).build();
                self.submit(sqe, Entry::Read { conn: key, op: r })
            }
            Read::Pooled(r) => {
                let sqe = opcode::Recv::new(fd, std::ptr::null_mut(), self.bufs.slab.size as u32)
                    .buf_group(0)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT);
                self.submit(sqe, Entry::Recv { conn: key, op: r })
            }
        };
        let read_timer = timeout.map(|t| self.timers.arm(TimerFor::Read(key), Instant::now() + t));
        if let Some(c) = self.conns.get_mut(key) {
            c.read_op = Some(op);
            c.read_timer = read_timer;
        }
    }

    fn read_done(&mut self, key: u64, mut r: ReadOp, res: i32, timed_out: bool) {
        if self.end_read(key).is_none() {
            return r.stop(&self.delivery, io::ErrorKind::NotConnected);
        }
        if res == -libc::ECANCELED || (timed_out && res < 0) {
            if timed_out {
                let ReadOp { buf, filled, c, .. } = r;
                let error = io::ErrorKind::TimedOut.into();
                self.delivery.complete(
                    c,
                    Err(OpError {
                        error,
                        buf,
                        n: filled,
                    }),
                );
            } else {
                r.stop(&self.delivery, io::ErrorKind::Interrupted);
            }
            return;
        }
        if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            let kind = error.kind();
            let ReadOp { buf, filled, c, .. } = r;
            self.delivery.complete(
                c,
                Err(OpError {
                    error,
                    buf,
                    n: filled,
                }),
            );
            return self.fail_conn(key, kind);
        }
        let n = res as usize;
        if n == 0 && r.exact {
            let ReadOp { buf, filled, c, .. } = r;
            let error = io::ErrorKind::UnexpectedEof.into();
            return self.delivery.complete(
                c,
                Err(OpError {
                    error,
                    buf,
                    n: filled,
                }),
            );
        }
        r.filled += n;
        if r.exact && n > 0 && r.filled < r.buf.len() {
            // More to fill: back to the front, and on.
            if let Some(c) = self.conns.get_mut(key) {
                c.reads.push_front(Read::Into(r));
            }
            return;
        }
        let ReadOp { buf, filled, c, .. } = r;
        self.delivery.complete(c, Ok(Done { buf, n: filled }));
    }

    fn recv_done(&mut self, key: u64, r: RecvOp, res: i32, flags: u32, timed_out: bool) {
        let bid = cqueue::buffer_select(flags);
        let waker = self.rings.loops[self.index].buf_waker.clone();
        let data = bid
            .map(|bid| RingBuf::new(Arc::clone(&self.bufs.slab), bid, res.max(0) as usize, waker));
        if self.end_read(key).is_none() {
            drop(data);
            return r.stop(&self.delivery);
        }
        tracing::trace!(key, res, "posa io_uring: recv done");
        if res == -libc::ENOBUFS {
            // Every buffer is lent out: park the receive until one comes back. Raise the flag,
            // then look at the returns once more (a buffer dropped before the flag was up did
            // not wake us): the Dekker pair of `RingBuf::drop`.
            if let Some(c) = self.conns.get_mut(key) {
                c.reads.push_front(Read::Pooled(r));
                c.starved = true;
            }
            self.starved.push(key);
            self.bufs.slab.starving.store(true, SeqCst);
            dekker_fence();
            if self.bufs.recycle() > 0 {
                self.unstarve();
            }
            return;
        }
        if res == -libc::ECANCELED || (timed_out && res < 0) {
            let done = r.c;
            if timed_out {
                self.delivery
                    .run(move || done.complete(Err(io::ErrorKind::TimedOut.into())));
            } else {
                self.delivery.run(move || done.cancel(()));
            }
            return;
        }
        if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            let kind = error.kind();
            let done = r.c;
            self.delivery.run(move || done.complete(Err(error)));
            return self.fail_conn(key, kind);
        }
        let buf = data.map_or_else(RecvBuf::eof, RecvBuf::ring);
        let done = r.c;
        self.delivery.run(move || done.complete(Ok(buf)));
    }

    /// The read-side operation of `key` ended: clear it and its timer, look at the connection
    /// again. `None` if the connection is gone.
    fn end_read(&mut self, key: u64) -> Option<()> {
        let c = self.conns.get_mut(key)?;
        c.read_op = None;
        if let Some(t) = c.read_timer.take() {
            self.timers.cancel(t);
        }
        self.dirty.push_back(Key::Conn(key));
        Some(())
    }

    fn start_write(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(op) = c.write_op {
            if self.ops.get(op).is_some_and(|f| match &f.entry {
                Entry::Write {
                    op: WriteOp::Write { c, written, .. },
                    ..
                } => c.is_cancelled() && *written == 0,
                _ => false,
            }) {
                self.cancel_op(op);
            }
            return;
        }
        let fd = sys::fd(c.fd.as_raw_fd());
        let Some(w) = c.writes.pop_front() else {
            return;
        };
        let sqe = match &w {
            WriteOp::Write {
                c: done, written, ..
            } if done.is_cancelled() && *written == 0 => {
                let bytes = w.queued_bytes();
                c.shared.queue.written(bytes);
                w.stop(&self.delivery, io::ErrorKind::Interrupted);
                self.dirty.push_back(Key::Conn(key));
                return;
            }
            WriteOp::Write {
                buf, len, written, ..
            } => {
                let rest = &buf[*written..*len];
                opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            WriteOp::Shutdown { .. } => opcode::Shutdown::new(fd, libc::SHUT_WR).build(),
        };
        let op = self.submit(sqe, Entry::Write { conn: key, op: w });
        if let Some(c) = self.conns.get_mut(key) {
            c.write_op = Some(op);
        }
    }

    fn write_done(&mut self, key: u64, w: WriteOp, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return w.stop(&self.delivery, io::ErrorKind::NotConnected);
        };
        c.write_op = None;
        self.dirty.push_back(Key::Conn(key));
        match w {
            WriteOp::Shutdown { c: done } => {
                let result = if res < 0 {
                    Err(OpError {
                        error: io::Error::from_raw_os_error(-res),
                        buf: Vec::new(),
                        n: 0,
                    })
                } else {
                    Ok(Done {
                        buf: Vec::new(),
                        n: 0,
                    })
                };
                self.delivery.complete(done, result);
            }
            WriteOp::Write {
                buf,
                len,
                mut written,
                c: done,
            } => {
                if res == -libc::ECANCELED {
                    let w = WriteOp::Write {
                        buf,
                        len,
                        written,
                        c: done,
                    };
                    c.shared.queue.written(w.queued_bytes());
                    return w.stop(&self.delivery, io::ErrorKind::Interrupted);
                }
                if res < 0 {
                    let error = io::Error::from_raw_os_error(-res);
                    let kind = error.kind();
                    c.shared.queue.written(len.max(1));
                    self.delivery.complete(
                        done,
                        Err(OpError {
                            error,
                            buf,
                            n: written,
                        }),
                    );
                    return self.fail_conn(key, kind);
                }
                written += res as usize;
                if written < len {
                    // A short send: the rest goes first, before any later write.
                    c.writes.push_front(WriteOp::Write {
                        buf,
                        len,
                        written,
                        c: done,
                    });
                    return;
                }
                c.shared.queue.written(len.max(1));
                self.delivery.complete(done, Ok(Done { buf, n: len }));
            }
        }
    }

    /// Answers the "writable" waiters once the write queue is at its low-water mark.
    fn answer_writable(&mut self, key: u64) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.waiters.is_empty() || !c.shared.queue.is_writable() {
            return;
        }
        let n = c.shared.queue.queued_bytes();
        for w in c.waiters.drain(..) {
            self.delivery.complete(w, Ok(Done { buf: Vec::new(), n }));
        }
    }

    fn fail_conn(&mut self, key: u64, kind: io::ErrorKind) {
        if let Some(c) = self.conns.get_mut(key) {
            tracing::debug!(peer = %c.shared.peer, ?kind, "posa io_uring: connection error");
            c.closing.get_or_insert(kind);
        }
        self.dirty.push_back(Key::Conn(key));
    }

    // ---- listeners ------------------------------------------------------------------------

    pub(super) fn add_listener(&mut self, listener: Listener, shared: SharedAccept) {
        let key = self.listeners.vacant_key();
        let waker = RingWaker::new(Arc::clone(&self.shared), Key::Listener(key));
        let loop_waker = LoopWaker::Ring(waker.clone());
        self.listeners.insert(RingListener {
            listener,
            shared,
            waker,
            loop_waker,
            waiting: VecDeque::new(),
            held: VecDeque::new(),
            accept_op: None,
            closing: false,
        });
        self.dirty.push_back(Key::Listener(key));
    }

    fn progress_listener(&mut self, key: u64) {
        let Some(l) = self.listeners.get_mut(key) else {
            return;
        };
        l.waker.taken();
        let open = l.shared.queue.take(&l.loop_waker, &mut l.waiting);
        if !open {
            l.closing = true;
        }
        if l.closing {
            let (queued, _) = l.shared.queue.close();
            for c in l.waiting.drain(..).chain(queued) {
                c.cancel(());
            }
            l.held.clear(); // closes them
            match l.accept_op {
                Some(op) => self.cancel_op(op),
                None => {
                    self.listeners.remove(key);
                }
            }
            return;
        }
        // Hand held connections to waiting accepts, dropping cancelled accepts.
        self.hand_out(key);
        let Some(l) = self.listeners.get_mut(key) else {
            return;
        };
        if l.accept_op.is_none() && !l.waiting.is_empty() && l.held.len() < HELD_ACCEPTS {
            let fd = sys::fd(l.listener.as_raw_fd());
            let sqe = opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build();
            let op = self.submit(sqe, Entry::Accept { listener: key });
            if let Some(l) = self.listeners.get_mut(key) {
                l.accept_op = Some(op);
            }
        }
    }

    /// Matches held connections with waiting accepts.
    fn hand_out(&mut self, key: u64) {
        loop {
            let Some(l) = self.listeners.get_mut(key) else {
                return;
            };
            while l.waiting.front().is_some_and(|c| c.is_cancelled()) {
                if let Some(c) = l.waiting.pop_front() {
                    c.cancel(());
                }
            }
            if l.waiting.is_empty() || l.held.is_empty() {
                return;
            }
            let (Some(c), Some(fd)) = (l.waiting.pop_front(), l.held.pop_front()) else {
                return;
            };
            let result = self.attach_accepted(fd);
            c.complete(result);
        }
    }

    /// One completion of a multishot accept: a descriptor, or an error.
    fn accepted(&mut self, key: u64, res: i32) {
        if res < 0 {
            if res == -libc::ECANCELED {
                return;
            }
            let error = io::Error::from_raw_os_error(-res);
            tracing::debug!(%error, "posa io_uring: accept failed");
            // The caller decides (EMFILE: back off); the multishot has ended.
            if let Some(l) = self.listeners.get_mut(key)
                && let Some(c) = l.waiting.pop_front()
            {
                c.complete(Err(error));
            }
            return;
        }
        // SAFETY: the kernel handed us a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        let Some(l) = self.listeners.get_mut(key) else {
            return; // dropping closes it
        };
        if l.closing {
            return;
        }
        l.held.push_back(fd);
        let full = l.held.len() >= HELD_ACCEPTS;
        let op = l.accept_op;
        self.hand_out(key);
        if full && let Some(op) = op {
            self.cancel_op(op); // the rest wait in the kernel's backlog
        }
    }

    /// Makes a [`Conn`] of an accepted descriptor, on this loop or the next one round-robin.
    fn attach_accepted(&mut self, fd: OwnedFd) -> io::Result<(Conn, Peer)> {
        let sock = socket2::SockRef::from(&fd);
        let peer = match sock.peer_addr().ok().and_then(|a| a.as_socket()) {
            Some(a) => {
                let _ = sock.set_tcp_nodelay(true);
                Peer::Tcp(a)
            }
            None => Peer::Unix,
        };
        let shared = self.rings.new_conn(peer);
        let target = self.rings.pick();
        if target == self.index {
            self.add_conn(fd, SharedConn::clone(&shared));
        } else {
            let conn_shared = SharedConn::clone(&shared);
            self.rings.loops[target]
                .post(Box::new(move |lp: &mut RingLoop| {
                    lp.add_conn(fd, conn_shared)
                }))
                .map_err(|_| io::Error::other("the proactor's loop is busy or stopping"))?;
        }
        Ok((Conn::new(shared), peer))
    }

    // ---- connect --------------------------------------------------------------------------

    pub(super) fn add_connect(
        &mut self,
        addr: crate::net::Addr,
        options: ConnectOptions,
        c: crate::act::Completer<Conn, ConnectError>,
    ) {
        let seed = (Instant::now().elapsed().subsec_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15) | 1;
        let key = self.connects.insert(Connecting {
            addr,
            options,
            c: Some(c),
            attempts: 0,
            rng: seed,
            op: None,
            timer: None,
            watched: None,
        });
        self.attempt(key);
    }

    fn attempt(&mut self, key: u64) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        if k.c.as_ref().is_none_or(|c| c.is_cancelled()) {
            if let Some(c) = k.c.take() {
                c.cancel(());
            }
            self.connects.remove(key);
            return;
        }
        if !k.options.interceptors.is_empty() {
            use crate::intercept::{Dispatch, Point};
            let mut d = Dispatch::new(Point::Connect, u64::from(k.attempts));
            if let crate::net::Addr::Tcp(a) = &k.addr {
                d.peer = Some(*a);
            }
            if let Err(rejection) = k.options.interceptors.before(&d) {
                let attempts = k.attempts;
                return self.stop_connect(
                    key,
                    ConnectError::Rejected {
                        attempts,
                        rejection,
                    },
                );
            }
            k.watched = Some((d, Instant::now()));
        }
        k.attempts += 1;
        let addr = match &k.addr {
            crate::net::Addr::Tcp(a) => socket2::SockAddr::from(*a),
            crate::net::Addr::Unix(p) => match socket2::SockAddr::unix(p) {
                Ok(a) => a,
                Err(e) => return self.attempt_failed(key, e),
            },
        };
        let sock = match socket2::Socket::new(addr.domain(), socket2::Type::STREAM.cloexec(), None)
        {
            Ok(s) => s,
            Err(e) => return self.attempt_failed(key, e),
        };
        if addr.is_ipv4() || addr.is_ipv6() {
            let _ = sock.set_tcp_nodelay(true);
        }
        let fd = OwnedFd::from(sock);
        let addr = Box::new(addr);
        let sqe =
            opcode::Connect::new(sys::fd(fd.as_raw_fd()), addr.as_ptr().cast(), addr.len()).build();
        let timeout = k.options.timeout;
        let op = self.submit(
            sqe,
            Entry::Connect {
                connect: key,
                fd,
                _addr: addr,
            },
        );
        let timer = self
            .timers
            .arm(TimerFor::ConnectAttempt(key), Instant::now() + timeout);
        if let Some(k) = self.connects.get_mut(key) {
            k.op = Some(op);
            k.timer = Some(timer);
        }
    }

    fn connect_done(&mut self, key: u64, fd: OwnedFd, res: i32) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        k.op = None;
        if k.c.is_none() {
            // Already answered (stopped while in flight): nothing more to do.
            self.connects.remove(key);
            return;
        }
        if let Some(t) = k.timer.take() {
            self.timers.cancel(t);
        }
        if res < 0 {
            drop(fd);
            let error = if res == -libc::ECANCELED {
                io::ErrorKind::TimedOut.into()
            } else {
                io::Error::from_raw_os_error(-res)
            };
            return self.attempt_failed(key, error);
        }
        self.observed(key, crate::intercept::Ended::Ok);
        let Some(mut k) = self.connects.remove(key) else {
            return;
        };
        let peer = match &k.addr {
            crate::net::Addr::Tcp(a) => Peer::Tcp(*a),
            crate::net::Addr::Unix(_) => Peer::Unix,
        };
        let shared = self.rings.new_conn(peer);
        self.add_conn(fd, SharedConn::clone(&shared));
        if let Some(c) = k.c.take() {
            // Cancelled meanwhile: the token sees CancelledAfterEffect with the connection.
            c.complete(Ok(Conn::new(shared)));
        }
    }

    fn attempt_failed(&mut self, key: u64, error: io::Error) {
        self.observed(key, crate::intercept::Ended::Error);
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        let timed_out = error.kind() == io::ErrorKind::TimedOut;
        if k.attempts >= k.options.attempts.max(1) || !crate::net::retryable(&error) {
            let attempts = k.attempts;
            let e = if timed_out {
                ConnectError::TimedOut { attempts }
            } else {
                ConnectError::Failed {
                    attempts,
                    last: error,
                }
            };
            return self.stop_connect(key, e);
        }
        let delay = crate::net::backoff_delay(&k.options, k.attempts, &mut k.rng);
        k.timer = Some(
            self.timers
                .arm(TimerFor::ConnectRetry(key), Instant::now() + delay),
        );
    }

    fn observed(&mut self, key: u64, ended: crate::intercept::Ended) {
        if let Some(k) = self.connects.get_mut(key)
            && let Some((d, started)) = k.watched.take()
        {
            k.options.interceptors.after(&d, ended, started.elapsed());
        }
    }

    /// Ends a connect with `error` (its attempt in flight, if any, is cancelled first and
    /// answers nothing more).
    fn stop_connect(&mut self, key: u64, error: ConnectError) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        if let Some(c) = k.c.take() {
            c.complete(Err(error));
        }
        if let Some(t) = k.timer.take() {
            self.timers.cancel(t);
        }
        match k.op {
            Some(op) => self.cancel_op(op), // its completion removes the entry
            None => {
                self.connects.remove(key);
            }
        }
    }

    // ---- timers and file reads ------------------------------------------------------------

    fn progress_timers(&mut self) {
        let parts = &self.rings.loops[self.index];
        parts.timer_waker.taken();
        let waker = LoopWaker::Ring(parts.timer_waker.clone());
        let open = parts.timers.take(&waker, &mut self.incoming_timers);
        let draining = self.drain_deadline.is_some() || !open;
        while let Some((after, c)) = self.incoming_timers.pop_front() {
            if draining {
                c.cancel(());
                continue;
            }
            let slot = self.user_timers.vacant_key();
            let id = self
                .timers
                .arm(TimerFor::User(slot), Instant::now() + after);
            self.user_timers.insert((id, c));
        }
        let cancelled: Vec<u64> = self
            .user_timers
            .iter()
            .filter(|(_, (_, c))| draining || c.is_cancelled())
            .map(|(k, _)| k)
            .collect();
        for k in cancelled {
            if let Some((id, c)) = self.user_timers.remove(k) {
                self.timers.cancel(id);
                c.cancel(());
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((_, what)) = self.timers.poll(now) {
            match what {
                TimerFor::User(k) => {
                    if let Some((_, c)) = self.user_timers.remove(k) {
                        c.complete(Ok(()));
                    }
                }
                TimerFor::Read(conn) => {
                    if let Some(c) = self.conns.get_mut(conn)
                        && let Some(op) = c.read_op
                    {
                        c.read_timer = None;
                        if let Some(f) = self.ops.get_mut(op) {
                            f.timed_out = true;
                        }
                        self.cancel_op(op);
                    }
                }
                TimerFor::ConnectAttempt(k) => {
                    if let Some(c) = self.connects.get_mut(k) {
                        c.timer = None;
                        if let Some(op) = c.op {
                            self.cancel_op(op); // answers TimedOut from its completion
                        }
                    }
                }
                TimerFor::ConnectRetry(k) => {
                    if let Some(c) = self.connects.get_mut(k) {
                        c.timer = None;
                    }
                    self.attempt(k);
                }
            }
        }
        if let Some(deadline) = self.drain_deadline
            && now >= deadline
        {
            // The grace is over: whatever is left is forced closed.
            let conns: Vec<u64> = self.conns.keys().collect();
            self.dirty.extend(conns.into_iter().map(Key::Conn));
        }
    }

    pub(super) fn add_file_read(
        &mut self,
        file: Arc<File>,
        offset: u64,
        mut buf: Vec<u8>,
        c: OpCompleter,
    ) {
        if c.is_cancelled() || self.drain_deadline.is_some() {
            return self.delivery.stop(c, buf, 0, io::ErrorKind::Interrupted);
        }
        let sqe = opcode::Read::new(
            sys::fd(file.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .offset(offset)
        .build();
        let key = self.submit(
            sqe,
            Entry::File {
                _file: file,
                buf,
                c,
            },
        );
        self.files.push(key);
    }

    fn progress_files(&mut self) {
        self.rings.loops[self.index].file_waker.taken();
        let cancelled: Vec<u64> = self
            .files
            .iter()
            .copied()
            .filter(|&k| {
                self.ops.get(k).is_some_and(|f| match &f.entry {
                    Entry::File { c, .. } => c.is_cancelled(),
                    _ => false,
                })
            })
            .collect();
        for k in cancelled {
            self.cancel_op(k);
        }
    }
}

/// The timer queue a user's timers wait in for this loop.
pub(super) type TimerOps = OpQueue<(Duration, TimerCompleter), LoopWaker>;
