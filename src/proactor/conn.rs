//! The caller's side of a proactor connection: [`Conn`] initiates operations from any thread
//! and returns their tokens at once; the operations wait in the connection's [`OpQueue`] until
//! its loop takes them.
//!
//! # Invariants
//! - Each operation is answered exactly once: by the loop, by [`Conn::close`] (which takes
//!   what is still queued out of the `OpQueue`), or here when the queue refuses it (closed
//!   connection: `Cancelled`; full write queue: the buffer comes back in [`Refused::Full`]).
//! - A cancel hook is registered before the operation becomes visible to the loop, so
//!   dropping or cancelling a token always wakes the loop that holds the operation.
//! - The last [`Conn`] clone to drop closes the connection.
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Duration;

use super::delivery::Delivery;
use super::ops::OpQueue;
use super::recv::{RecvCompleter, RecvToken};
use super::{OpCompleter, OpToken};
use crate::act;
use crate::error::Refused;
use crate::net::Peer;
use crate::reactor::HandlerWaker;
use std::sync::Arc;

/// How the caller's side wakes the loop that owns a connection, listener or timer: each
/// backend's own wake-up.
#[derive(Clone)]
pub(super) enum LoopWaker {
    /// The emulated backend: the handler's waker on its reactor.
    Reactor(HandlerWaker),
    /// The io_uring backend: the ring loop's inbox and eventfd.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Ring(super::uring::RingWaker),
}

impl LoopWaker {
    /// Asks the loop to look at what it owns.
    pub(super) fn wake(&self) {
        match self {
            LoopWaker::Reactor(w) => {
                w.wake();
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            LoopWaker::Ring(w) => w.wake(),
        }
    }
}

/// A receive into a pooled buffer ([`Conn::recv`]): the loop picks a buffer only when data
/// arrives.
pub(super) struct RecvOp {
    pub(super) timeout: Option<Duration>,
    pub(super) c: RecvCompleter,
}

impl RecvOp {
    /// Stops it: nothing was received, so it is cancelled (a receive moves no caller buffer).
    pub(super) fn stop(self, delivery: &Delivery) {
        let c = self.c;
        delivery.run(move || c.cancel(()));
    }
}

/// A read-side operation, in issue order: into the caller's buffer, or into a pooled one.
pub(super) enum Read {
    Into(ReadOp),
    Pooled(RecvOp),
}

impl Read {
    pub(super) fn timeout(&self) -> Option<Duration> {
        match self {
            Read::Into(r) => r.timeout,
            Read::Pooled(r) => r.timeout,
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        match self {
            Read::Into(r) => r.c.is_cancelled(),
            Read::Pooled(r) => r.c.is_cancelled(),
        }
    }

    /// Stops it: cancelled, or (a caller-buffer read that moved bytes) its partial result.
    pub(super) fn stop(self, delivery: &Delivery, why: io::ErrorKind) {
        match self {
            Read::Into(r) => r.stop(delivery, why),
            Read::Pooled(r) => r.stop(delivery),
        }
    }

    /// Fails it with `kind` (a timeout, an end of stream cut short), the caller's buffer and
    /// what it read coming back.
    pub(super) fn fail(self, delivery: &Delivery, kind: io::ErrorKind) {
        match self {
            Read::Into(ReadOp { buf, filled, c, .. }) => {
                let error = kind.into();
                delivery.complete(
                    c,
                    Err(super::OpError {
                        error,
                        buf,
                        n: filled,
                    }),
                );
            }
            Read::Pooled(RecvOp { c, .. }) => delivery.run(move || c.complete(Err(kind.into()))),
        }
    }
}

/// A read waiting for data.
pub(super) struct ReadOp {
    pub(super) buf: Vec<u8>,
    /// Bytes read into `buf` so far.
    pub(super) filled: usize,
    /// Fill all of `buf` (`read_exact`), or complete with whatever came (`read_some`).
    pub(super) exact: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) c: OpCompleter,
}

/// An operation on the write side, kept in issue order.
pub(super) enum WriteOp {
    /// Write `buf[..len]`.
    Write {
        buf: Vec<u8>,
        len: usize,
        written: usize,
        c: OpCompleter,
    },
    /// Shut down the writing side after every write before it.
    Shutdown { c: OpCompleter },
}

/// One operation of a connection, as initiated.
pub(super) enum Op {
    Read(Read),
    Write(WriteOp),
    /// Completes when the write queue is at its low-water mark.
    Writable(OpCompleter),
}

impl WriteOp {
    /// The bytes it holds against the write queue's high-water mark (at least 1 for a write,
    /// so an empty write still counts; 0 for a shutdown).
    pub(super) fn queued_bytes(&self) -> usize {
        match self {
            WriteOp::Write { len, .. } => (*len).max(1),
            WriteOp::Shutdown { .. } => 0,
        }
    }

    /// Stops it: cancelled (with its buffer) if nothing was written, else its partial result.
    pub(super) fn stop(self, delivery: &Delivery, why: io::ErrorKind) {
        match self {
            WriteOp::Write {
                buf, written, c, ..
            } => delivery.stop(c, buf, written, why),
            WriteOp::Shutdown { c } => delivery.stop(c, Vec::new(), 0, why),
        }
    }

    /// Fails it with `kind` (the socket's error), the buffer and what was written coming back.
    pub(super) fn fail(self, delivery: &Delivery, kind: io::ErrorKind) {
        let (buf, n, c) = match self {
            WriteOp::Write {
                buf, written, c, ..
            } => (buf, written, c),
            WriteOp::Shutdown { c } => (Vec::new(), 0, c),
        };
        let error = kind.into();
        delivery.complete(c, Err(super::OpError { error, buf, n }));
    }
}

impl ReadOp {
    /// Stops it: cancelled (with its buffer) if nothing was read, else its partial result.
    pub(super) fn stop(self, delivery: &Delivery, why: io::ErrorKind) {
        delivery.stop(self.c, self.buf, self.filled, why);
    }
}

impl Op {
    /// Registers `hook` to run when the operation's token asks for cancellation.
    fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        match self {
            Op::Read(Read::Into(ReadOp { c, .. }))
            | Op::Write(WriteOp::Write { c, .. } | WriteOp::Shutdown { c })
            | Op::Writable(c) => c.on_cancel(hook),
            Op::Read(Read::Pooled(RecvOp { c, .. })) => c.on_cancel(hook),
        }
    }

    /// Stops the operation: cancelled (with its buffer) or its partial result.
    pub(super) fn stop(self, delivery: &Delivery, why: io::ErrorKind) {
        match self {
            Op::Read(r) => r.stop(delivery, why),
            Op::Write(w) => w.stop(delivery, why),
            Op::Writable(c) => delivery.stop(c, Vec::new(), 0, why),
        }
    }
}

/// The loop's side of a connection's operations, on either backend: reads and writes in two
/// ordered queues of their own types, "writable" waiters apart.
#[derive(Default)]
pub(super) struct LoopOps {
    incoming: VecDeque<Op>,
    pub(super) reads: VecDeque<Read>,
    /// Writes and write shutdowns, in the order issued.
    pub(super) writes: VecDeque<WriteOp>,
    /// "Writable" waiters, answered when the write queue is at its low-water mark.
    waiters: Vec<OpCompleter>,
}

impl LoopOps {
    /// Takes what was initiated since the last look (attaching `waker` on the first) and
    /// answers the "writable" waiters if the write queue allows. `false` once the connection's
    /// queue is closed.
    pub(super) fn take(&mut self, shared: &ConnShared, waker: &LoopWaker) -> bool {
        let open = shared.queue.take(waker, &mut self.incoming);
        while let Some(op) = self.incoming.pop_front() {
            match op {
                Op::Read(r) => self.reads.push_back(r),
                Op::Write(w) => self.writes.push_back(w),
                Op::Writable(c) => self.waiters.push(c),
            }
        }
        self.answer_writable(shared);
        open
    }

    /// Answers the "writable" waiters once the write queue is at its low-water mark.
    pub(super) fn answer_writable(&mut self, shared: &ConnShared) {
        if self.waiters.is_empty() || !shared.queue.is_writable() {
            return;
        }
        let n = shared.queue.queued_bytes();
        for c in self.waiters.drain(..) {
            shared
                .delivery
                .complete(c, Ok(super::Done { buf: Vec::new(), n }));
        }
    }

    /// Closes the connection's queue and stops every operation not in flight with `kind`
    /// (cancelled, or its partial result), each answered once.
    pub(super) fn stop_all(&mut self, shared: &ConnShared, kind: io::ErrorKind) {
        let (queued, _) = shared.queue.close();
        let delivery = &shared.delivery;
        for r in self.reads.drain(..) {
            r.stop(delivery, kind);
        }
        for w in self.writes.drain(..) {
            w.stop(delivery, kind);
        }
        for op in self.incoming.drain(..).chain(queued) {
            op.stop(delivery, kind);
        }
        for c in self.waiters.drain(..) {
            delivery.stop(c, Vec::new(), 0, kind);
        }
    }
}

/// How the loops hold a connection's shared state (a std `Arc`: the cancel hooks hold `Weak`s).
#[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
pub(super) type SharedConn = Arc<ConnShared>;

/// What the caller's side and the loop's side of a connection share.
pub(super) struct ConnShared {
    pub(super) queue: OpQueue<Op, LoopWaker>,
    pub(super) peer: Peer,
    pub(super) delivery: Delivery,
}

impl ConnShared {
    /// The shared state of a new connection to `peer`, its writes bounded by the water marks.
    pub(super) fn new(peer: Peer, (high, low): (usize, usize), delivery: Delivery) -> Arc<Self> {
        Arc::new(ConnShared {
            queue: OpQueue::new(high, low),
            peer,
            delivery,
        })
    }

    /// Queues `op`; a refused operation comes back.
    fn submit(self: &Arc<Self>, op: Op, write_bytes: usize) -> Result<(), Refused<Op>> {
        // Registered before the op is visible to the loop: cancelling the token wakes the loop.
        let weak = Arc::downgrade(self);
        op.on_cancel(move || {
            if let Some(shared) = weak.upgrade() {
                shared.wake();
            }
        });
        let waker = self.queue.submit(op, write_bytes)?;
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn wake(&self) {
        if let (_, Some(w)) = self.queue.waker() {
            w.wake();
        }
    }

    /// Closes the queue: what is still queued is answered here, and the loop is told.
    /// The owner is done: no new operations; the loop stops the queued reads, writes out what
    /// was accepted for writing (bounded by the linger time), ends the stream and closes
    /// lingering.
    fn close(&self) {
        if let Some(w) = self.queue.seal() {
            w.wake();
        }
    }
}

/// A connection driven by a [`Proactor`](super::Proactor): every call initiates an operation
/// and returns at once with its token. Clones share the connection; when the last clone drops,
/// it closes.
#[derive(Clone)]
pub struct Conn {
    user: Arc<ConnUser>,
}

/// The users' share of a connection: dropping the last one closes it.
struct ConnUser {
    shared: Arc<ConnShared>,
}

impl Drop for ConnUser {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Conn {
    pub(super) fn new(shared: Arc<ConnShared>) -> Self {
        Conn {
            user: Arc::new(ConnUser { shared }),
        }
    }

    /// Initiates `op`; a refused operation is answered here, on the initiating thread
    /// (`Cancelled` with its buffer: the connection is closed).
    fn initiate(&self, op: Op) {
        if let Err(refused) = self.user.shared.submit(op, 0) {
            refused
                .into_inner()
                .stop(&Delivery::default(), io::ErrorKind::NotConnected);
        }
    }

    /// Reads what is there (at least 1 byte, at most `buf.len()`), or 0 at end of stream.
    pub fn read_some(&self, buf: Vec<u8>) -> OpToken {
        self.read(buf, false, None)
    }

    /// Like [`read_some`](Self::read_some), but fails with `TimedOut` (and the buffer) if nothing
    /// arrives within `timeout` of the read starting.
    pub fn read_some_timeout(&self, buf: Vec<u8>, timeout: Duration) -> OpToken {
        self.read(buf, false, Some(timeout))
    }

    /// Fills all of `buf`; fails with `UnexpectedEof` (and what was read) if the stream ends
    /// first.
    pub fn read_exact(&self, buf: Vec<u8>) -> OpToken {
        self.read(buf, true, None)
    }

    fn read(&self, buf: Vec<u8>, exact: bool, timeout: Option<Duration>) -> OpToken {
        let (c, token) = act::pair_with_residue();
        self.initiate(Op::Read(Read::Into(ReadOp {
            buf,
            filled: 0,
            exact,
            timeout,
            c,
        })));
        token
    }

    /// Receives what is there into a buffer the proactor lends (at least 1 byte, or an empty
    /// buffer at end of stream). No buffer is set aside while the connection is idle: the loop
    /// takes one from its pool only when data arrives (on io_uring, the kernel picks one from
    /// a provided buffer ring). Dropping the [`RecvBuf`](super::RecvBuf) gives it back.
    pub fn recv(&self) -> RecvToken {
        self.recv_inner(None)
    }

    /// Like [`recv`](Self::recv), but fails with `TimedOut` if nothing arrives within
    /// `timeout` of the receive starting.
    pub fn recv_timeout(&self, timeout: Duration) -> RecvToken {
        self.recv_inner(Some(timeout))
    }

    fn recv_inner(&self, timeout: Option<Duration>) -> RecvToken {
        let (c, token) = act::pair();
        self.initiate(Op::Read(Read::Pooled(RecvOp { timeout, c })));
        token
    }

    /// Writes all of `buf`, after every write issued before it. Refused with the buffer back
    /// when the connection's write queue is above its high-water mark (wait for
    /// [`writable`](Self::writable)) or the connection is closed.
    pub fn write_all(&self, buf: Vec<u8>) -> Result<OpToken, Refused<Vec<u8>>> {
        let len = buf.len();
        self.write_all_prefix(buf, len)
    }

    /// Writes `buf[..len]` (a read's buffer can go straight back out), handing back all of
    /// `buf`.
    pub fn write_all_prefix(&self, buf: Vec<u8>, len: usize) -> Result<OpToken, Refused<Vec<u8>>> {
        let len = len.min(buf.len());
        let (c, token) = act::pair_with_residue();
        let op = WriteOp::Write {
            buf,
            len,
            written: 0,
            c,
        };
        let bytes = op.queued_bytes();
        match self.user.shared.submit(Op::Write(op), bytes) {
            Ok(()) => Ok(token),
            Err(refused) => {
                // Nobody will wait for the refused write: its completer and token just go.
                drop(token);
                Err(refused.map(|op| match op {
                    Op::Write(WriteOp::Write { buf, .. }) => buf,
                    _ => Vec::new(),
                }))
            }
        }
    }

    /// Completes when the write queue has drained to its low-water mark (at once if it is).
    pub fn writable(&self) -> OpToken {
        let (c, token) = act::pair_with_residue();
        self.initiate(Op::Writable(c));
        token
    }

    /// Shuts down the writing side once every write issued before has gone out.
    pub fn shutdown_write(&self) -> OpToken {
        let (c, token) = act::pair_with_residue();
        self.initiate(Op::Write(WriteOp::Shutdown { c }));
        token
    }

    /// Closes the connection gracefully: later operations are refused, reads still waiting are
    /// answered (cancelled, or their partial result), and writes already accepted still go
    /// out, in order, before the write side is shut down; then input is discarded until the
    /// peer's end of stream, so the close never becomes a reset (a lingering close). All of it
    /// is bounded by the proactor's linger time ([`Builder::linger`](super::Builder::linger));
    /// what has not gone out by then is answered `NotConnected`. Dropping the last clone of a
    /// connection does the same.
    pub fn close(&self) {
        self.user.shared.close();
    }

    /// Bytes of writes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.user.shared.queue.queued_bytes()
    }

    /// Who is on the other end.
    pub fn peer(&self) -> Peer {
        self.user.shared.peer
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.user.shared.peer)
            .finish()
    }
}
