//! The loop's side of a connection on the emulated backend: operations are tried at once
//! (speculatively) and wait for readiness only on `WouldBlock`.
//!
//! # Invariants
//! - Reads and writes sit in two ordered queues of their own types, so several of each may be
//!   outstanding and each kind completes in issue order; a write shutdown waits behind the
//!   writes issued before it.
//! - The socket is registered once, edge-triggered, for both directions: no `epoll_ctl` per
//!   operation. A pump runs until both queues are blocked on `WouldBlock`, re-taking new
//!   operations that completions issued meanwhile, so no edge is lost.
//! - A cancelled read, or a cancelled write that wrote nothing, is answered `Cancelled` with
//!   its buffer; a partly done one answers its partial result. On close, every operation still
//!   held (local queues, incoming, the `OpQueue`, writable waiters) is answered once.
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

use std::collections::VecDeque;
use std::io::{self, Read as _};

use super::super::conn::{ConnShared, LoopOps, LoopWaker, Read, ReadOp, RecvOp, WriteOp};
use super::super::delivery::Delivery;
use super::super::recv::{HeapPool, RecvBuf};
use super::super::{Done, OpError};
use crate::net::{LingerState, Stream};
use crate::reactor::{CloseReason, Context, EventHandler, Interest, Readiness, TimerId};
use std::sync::Arc;

/// The loop side of a connection.
pub(super) struct ConnHandler {
    stream: Stream,
    shared: Arc<ConnShared>,
    waker: Option<LoopWaker>,
    ops: LoopOps,
    /// Where pooled receives borrow their buffer (shared by the loop's connections).
    pool: crate::sync::Arc<HeapPool>,
    read_timer: Option<TimerId>,
    /// How long a graceful close may take (writes out, then a lingering close), and the
    /// loops' cap on connections closing so at once.
    linger: (std::time::Duration, crate::net::ConnLimit),
    /// A slot of that cap, held while closing gracefully.
    linger_slot: Option<crate::net::ConnGuard>,
    /// Closing gracefully (the owner closed, or the drain's grace ran out): its timer, and the
    /// lingering close once the writes are out.
    closing: Option<(TimerId, Option<LingerState>)>,
}

enum Step {
    Progress,
    Blocked,
}

/// How a read finished: a caller-buffer read with its byte count or the error kind that ended
/// it, or a pooled receive with its data.
enum ReadDone {
    Into(Result<usize, io::ErrorKind>),
    Pooled(RecvBuf),
}

fn front_timeout(reads: &VecDeque<Read>) -> Option<std::time::Duration> {
    reads.front().and_then(Read::timeout)
}

impl ConnHandler {
    fn delivery(&self) -> &Delivery {
        &self.shared.delivery
    }

    /// Takes new operations and moves every queue as far as the socket allows; repeats while
    /// completions (whose handlers may issue more operations) keep coming.
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(waker) = &self.waker else { return };
            let open = self.ops.take(&self.shared, waker);
            if !open && self.closing.is_none() {
                self.begin_close(cx);
            }
            if self.closing.is_some() {
                return self.pump_closing(cx);
            }
            let r = self.pump_reads(cx);
            let w = self.pump_writes();
            let e = match (r, w) {
                (Ok(Step::Blocked), Ok(Step::Blocked)) => return,
                // The operation that met the error answers with it (as on io_uring, where the
                // kernel completes that operation with it); the rest are stopped.
                (Err(e), _) => {
                    if let Some(read) = self.ops.reads.pop_front() {
                        read.fail(self.delivery(), e.kind());
                    }
                    e
                }
                (_, Err(e)) => {
                    if let Some(write) = self.ops.writes.pop_front() {
                        write.fail(self.delivery(), e.kind());
                    }
                    e
                }
                _ => continue,
            };
            tracing::debug!(peer = %self.shared.peer, error = %e, "proactor: connection error");
            self.fail_all(e.kind());
            cx.close();
            return;
        }
    }

    fn pump_reads(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        let mut step = Step::Blocked;
        while let Some(front) = self.ops.reads.front_mut() {
            if front.is_cancelled() {
                self.stop_read(cx, io::ErrorKind::Interrupted);
                step = Step::Progress;
                continue;
            }
            let outcome = match front {
                Read::Into(r) => Self::read_into(&mut self.stream, r)?,
                Read::Pooled(_) => Self::read_pooled(&mut self.stream, &self.pool)?,
            };
            match outcome {
                Some(done) => {
                    self.finish_read(cx, done);
                    step = Step::Progress;
                }
                None => {
                    if let (Some(after), None) = (front_timeout(&self.ops.reads), self.read_timer) {
                        self.read_timer = Some(cx.set_timer(after));
                    }
                    break; // WouldBlock: wait for readable
                }
            }
        }
        Ok(step)
    }

    /// One read into the caller's buffer: `Some` when the read is finished, `None` on
    /// `WouldBlock`.
    fn read_into(stream: &mut Stream, r: &mut ReadOp) -> io::Result<Option<ReadDone>> {
        if r.buf.is_empty() {
            return Ok(Some(ReadDone::Into(Ok(0))));
        }
        loop {
            match stream.read(&mut r.buf[r.filled..]) {
                Ok(0) if r.exact => {
                    return Ok(Some(ReadDone::Into(Err(io::ErrorKind::UnexpectedEof))));
                }
                Ok(0) => return Ok(Some(ReadDone::Into(Ok(r.filled)))),
                Ok(k) => {
                    r.filled += k;
                    if !r.exact || r.filled == r.buf.len() {
                        return Ok(Some(ReadDone::Into(Ok(r.filled))));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One receive into a pooled buffer, taken only for the read and given back on
    /// `WouldBlock`, so an idle connection holds none.
    fn read_pooled(
        stream: &mut Stream,
        pool: &crate::sync::Arc<HeapPool>,
    ) -> io::Result<Option<ReadDone>> {
        let mut buf = pool.get();
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    pool.put(buf);
                    return Ok(Some(ReadDone::Pooled(RecvBuf::eof())));
                }
                Ok(n) => {
                    return Ok(Some(ReadDone::Pooled(RecvBuf::heap(
                        buf,
                        n,
                        crate::sync::Arc::clone(pool),
                    ))));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pool.put(buf);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    pool.put(buf);
                    return Err(e);
                }
            }
        }
    }

    /// Pops the front read and answers it with `done`.
    fn finish_read(&mut self, cx: &mut Context<'_>, done: ReadDone) {
        let Some(front) = self.ops.reads.pop_front() else {
            return;
        };
        if let Some(t) = self.read_timer.take() {
            cx.cancel_timer(t);
        }
        let delivery = &self.shared.delivery;
        match (front, done) {
            (Read::Into(ReadOp { buf, c, .. }), ReadDone::Into(Ok(n))) => {
                delivery.complete(c, Ok(Done { buf, n }))
            }
            (front @ Read::Into(_), ReadDone::Into(Err(kind))) => front.fail(delivery, kind),
            (Read::Pooled(RecvOp { c, .. }), ReadDone::Pooled(data)) => {
                delivery.run(move || c.complete(Ok(data)))
            }
            (other, _) => other.stop(delivery, io::ErrorKind::Interrupted),
        }
    }

    /// Pops the front read and stops it: `Interrupted` answers cancelled (or the partial
    /// result); another kind (a timeout) fails it with that error and its buffer.
    fn stop_read(&mut self, cx: &mut Context<'_>, kind: io::ErrorKind) {
        let Some(front) = self.ops.reads.pop_front() else {
            return;
        };
        if let Some(t) = self.read_timer.take() {
            cx.cancel_timer(t);
        }
        let delivery = &self.shared.delivery;
        if kind == io::ErrorKind::Interrupted {
            front.stop(delivery, kind);
        } else {
            front.fail(delivery, kind);
        }
    }

    fn pump_writes(&mut self) -> io::Result<Step> {
        let mut step = Step::Blocked;
        while let Some(front) = self.ops.writes.front_mut() {
            match front {
                WriteOp::Write {
                    buf,
                    len,
                    written,
                    c,
                } => {
                    if c.is_cancelled() && *written == 0 {
                        let Some(op) = self.ops.writes.pop_front() else {
                            break;
                        };
                        self.shared.queue.written(op.queued_bytes());
                        op.stop(self.delivery(), io::ErrorKind::Interrupted);
                        step = Step::Progress;
                        self.ops.answer_writable(&self.shared);
                        continue;
                    }
                    crate::net::write_from(&mut self.stream, &buf[..*len], written)?;
                    if *written < *len {
                        return Ok(step); // WouldBlock: wait for writable
                    }
                    let Some(WriteOp::Write { buf, len, c, .. }) = self.ops.writes.pop_front()
                    else {
                        break;
                    };
                    self.shared.queue.written(len.max(1));
                    self.delivery().complete(c, Ok(Done { buf, n: len }));
                    step = Step::Progress;
                    self.ops.answer_writable(&self.shared);
                }
                WriteOp::Shutdown { .. } => {
                    let Some(WriteOp::Shutdown { c }) = self.ops.writes.pop_front() else {
                        break;
                    };
                    let result = self
                        .stream
                        .shutdown(std::net::Shutdown::Write)
                        .map(|()| Done {
                            buf: Vec::new(),
                            n: 0,
                        })
                        .map_err(|error| OpError {
                            error,
                            buf: Vec::new(),
                            n: 0,
                        });
                    self.delivery().complete(c, result);
                    step = Step::Progress;
                }
            }
        }
        Ok(step)
    }

    /// Starts a graceful close: no new operations, the reads answered, a timer for the rest.
    fn begin_close(&mut self, cx: &mut Context<'_>) {
        drop(self.shared.queue.seal());
        if let Some(t) = self.read_timer.take() {
            cx.cancel_timer(t);
        }
        for r in self.ops.reads.drain(..) {
            r.stop(&self.shared.delivery, io::ErrorKind::NotConnected);
        }
        match self.linger.1.try_acquire() {
            Some(slot) => self.linger_slot = Some(slot),
            None => {
                // Too many closing at once: close now (`close` answers what is left).
                self.closing = Some((cx.set_timer(std::time::Duration::ZERO), None));
                return cx.close();
            }
        }
        self.closing = Some((cx.set_timer(self.linger.0), None));
    }

    /// Closing: writes out what was accepted, then closes lingering.
    fn pump_closing(&mut self, cx: &mut Context<'_>) {
        let Some(waker) = &self.waker else { return };
        self.ops.take(&self.shared, waker); // what was queued before the seal
        for r in self.ops.reads.drain(..) {
            r.stop(&self.shared.delivery, io::ErrorKind::NotConnected);
        }
        if let Err(e) = self.pump_writes() {
            tracing::debug!(peer = %self.shared.peer, error = %e, "proactor: connection error while closing");
            self.fail_all(e.kind());
            return cx.close();
        }
        if !self.ops.writes.is_empty() {
            return; // wait for writable
        }
        let Some((_, linger)) = &mut self.closing else {
            return;
        };
        let state = linger.get_or_insert_with(LingerState::new);
        let mut sent = 0;
        match state.step(&mut self.stream, &[], &mut sent, cx) {
            Ok(false) => {}
            Ok(true) | Err(_) => cx.close(),
        }
    }

    fn fail_all(&mut self, kind: io::ErrorKind) {
        self.ops.stop_all(&self.shared, kind);
    }
}

impl EventHandler for ConnHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        self.waker = Some(LoopWaker::Reactor(cx.waker()));
        self.pump(cx); // operations issued before the loop took the connection
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        if self.closing.as_ref().is_some_and(|(t, _)| *t == timer) {
            cx.close(); // the linger time ran out: `close` answers what is left
        } else if self.read_timer == Some(timer) {
            self.read_timer = None;
            self.stop_read(cx, io::ErrorKind::TimedOut);
            self.pump(cx);
        }
    }

    /// Serve on: the owner closes the connection when its peer is done.
    fn drain(&mut self, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    /// The grace ran out: close gracefully (writes out, lingering), bounded by the linger time.
    fn force(&mut self, cx: &mut Context<'_>) {
        if self.closing.is_none() {
            self.begin_close(cx);
        }
        self.pump(cx);
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        self.fail_all(io::ErrorKind::NotConnected);
    }
}

impl ConnHandler {
    /// The handler for `stream`, sharing `shared` with the connection's [`Conn`](super::super::Conn)s.
    pub(super) fn new(
        stream: Stream,
        shared: Arc<ConnShared>,
        pool: crate::sync::Arc<HeapPool>,
        linger: (std::time::Duration, crate::net::ConnLimit),
    ) -> Self {
        ConnHandler {
            stream,
            shared,
            pool,
            waker: None,
            ops: LoopOps::default(),
            read_timer: None,
            linger,
            linger_slot: None,
            closing: None,
        }
    }
}
