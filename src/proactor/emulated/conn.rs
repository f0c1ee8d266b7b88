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
use std::io::{self, Read};

use super::super::conn::{ConnShared, Op, ReadOp, WriteOp};
use super::super::delivery::Delivery;
use super::super::{Done, OpCompleter, OpError};
use crate::net::Stream;
use crate::reactor::{
    CloseReason, Context, EventHandler, HandlerWaker, Interest, Readiness, TimerId,
};
use std::sync::Arc;

/// The loop side of a connection.
pub(super) struct ConnHandler {
    stream: Stream,
    shared: Arc<ConnShared>,
    waker: Option<HandlerWaker>,
    incoming: VecDeque<Op>,
    reads: VecDeque<ReadOp>,
    /// Writes and write shutdowns, in the order issued.
    writes: VecDeque<WriteOp>,
    /// "Writable" waiters, answered when the write queue is at its low-water mark.
    waiters: Vec<OpCompleter>,
    read_timer: Option<TimerId>,
    draining: bool,
}

enum Step {
    Progress,
    Blocked,
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
            let open = self.shared.queue.take(waker, &mut self.incoming);
            while let Some(op) = self.incoming.pop_front() {
                match op {
                    Op::Read(r) => self.reads.push_back(r),
                    Op::Write(w) => self.writes.push_back(w),
                    Op::Writable(c) => self.waiters.push(c),
                }
            }
            self.answer_writable();
            if !open {
                cx.close(); // `close` answers what is left
                return;
            }
            let r = self.pump_reads(cx);
            let w = self.pump_writes();
            match (r, w) {
                (Ok(Step::Blocked), Ok(Step::Blocked)) => return,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(peer = %self.shared.peer, error = %e, "proactor: connection error");
                    self.fail_all(e.kind());
                    cx.close();
                    return;
                }
                _ => {}
            }
        }
    }

    fn pump_reads(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        let mut step = Step::Blocked;
        while let Some(ReadOp {
            buf,
            filled,
            exact,
            timeout,
            c,
        }) = self.reads.front_mut()
        {
            if c.is_cancelled() || self.draining {
                self.finish_read(cx, |buf, n| Err((buf, n, io::ErrorKind::Interrupted)));
                step = Step::Progress;
                continue;
            }
            if buf.is_empty() {
                let done = Ok(Done {
                    buf: std::mem::take(buf),
                    n: 0,
                });
                self.finish_read_with(cx, done);
                step = Step::Progress;
                continue;
            }
            match self.stream.read(&mut buf[*filled..]) {
                Ok(0) => {
                    let n = *filled;
                    let short = *exact;
                    self.finish_read(cx, move |buf, _| {
                        if short {
                            Err((buf, n, io::ErrorKind::UnexpectedEof))
                        } else {
                            Ok(Done { buf, n })
                        }
                    });
                    step = Step::Progress;
                }
                Ok(k) => {
                    *filled += k;
                    if !*exact || *filled == buf.len() {
                        let n = *filled;
                        self.finish_read(cx, move |buf, _| Ok(Done { buf, n }));
                        step = Step::Progress;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let (Some(after), None) = (*timeout, self.read_timer) {
                        self.read_timer = Some(cx.set_timer(after));
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(step)
    }

    /// Pops the front read and answers it per `how(buf, filled)`: `Ok(done)` completes,
    /// `Err((buf, n, kind))` stops it (cancelled if nothing moved).
    fn finish_read(
        &mut self,
        cx: &mut Context<'_>,
        how: impl FnOnce(Vec<u8>, usize) -> Result<Done, (Vec<u8>, usize, io::ErrorKind)>,
    ) {
        let Some(ReadOp { buf, filled, c, .. }) = self.reads.pop_front() else {
            return;
        };
        if let Some(t) = self.read_timer.take() {
            cx.cancel_timer(t);
        }
        match how(buf, filled) {
            Ok(done) => self.delivery().complete(c, Ok(done)),
            Err((buf, n, kind)) if kind == io::ErrorKind::Interrupted => {
                self.delivery().stop(c, buf, n, kind)
            }
            Err((buf, n, kind)) => self.delivery().complete(
                c,
                Err(OpError {
                    error: kind.into(),
                    buf,
                    n,
                }),
            ),
        }
    }

    fn finish_read_with(&mut self, cx: &mut Context<'_>, done: Result<Done, OpError>) {
        if let Some(ReadOp { c, .. }) = self.reads.pop_front() {
            if let Some(t) = self.read_timer.take() {
                cx.cancel_timer(t);
            }
            self.delivery().complete(c, done);
        }
    }

    fn pump_writes(&mut self) -> io::Result<Step> {
        let mut step = Step::Blocked;
        while let Some(front) = self.writes.front_mut() {
            match front {
                WriteOp::Write {
                    buf,
                    len,
                    written,
                    c,
                } => {
                    if c.is_cancelled() && *written == 0 {
                        let Some(op) = self.writes.pop_front() else {
                            break;
                        };
                        self.shared.queue.written(op.queued_bytes());
                        op.stop(self.delivery(), io::ErrorKind::Interrupted);
                        step = Step::Progress;
                        self.answer_writable();
                        continue;
                    }
                    crate::net::write_from(&mut self.stream, &buf[..*len], written)?;
                    if *written < *len {
                        return Ok(step); // WouldBlock: wait for writable
                    }
                    let Some(WriteOp::Write { buf, len, c, .. }) = self.writes.pop_front() else {
                        break;
                    };
                    self.shared.queue.written(len.max(1));
                    self.delivery().complete(c, Ok(Done { buf, n: len }));
                    step = Step::Progress;
                    self.answer_writable();
                }
                WriteOp::Shutdown { .. } => {
                    let Some(WriteOp::Shutdown { c }) = self.writes.pop_front() else {
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

    /// Answers the "writable" waiters once the write queue is at its low-water mark.
    fn answer_writable(&mut self) {
        if self.waiters.is_empty() || !self.shared.queue.is_writable() {
            return;
        }
        let n = self.shared.queue.queued_bytes();
        for c in self.waiters.drain(..) {
            let done = Done { buf: Vec::new(), n };
            self.shared.delivery.complete(c, Ok(done));
        }
    }

    fn fail_all(&mut self, kind: io::ErrorKind) {
        let (queued, _) = self.shared.queue.close();
        let delivery = &self.shared.delivery;
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

impl EventHandler for ConnHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        self.waker = Some(cx.waker());
        self.pump(cx); // operations issued before the loop took the connection
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        if self.read_timer == Some(timer) {
            self.read_timer = None;
            self.finish_read(cx, |buf, n| Err((buf, n, io::ErrorKind::TimedOut)));
            self.pump(cx);
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) {
        // Reads still waiting are answered (cancelled); queued writes may finish. The owner
        // closes the connection when it has nothing more to say.
        self.draining = true;
        self.pump(cx);
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        self.fail_all(io::ErrorKind::NotConnected);
    }
}

impl ConnHandler {
    /// The handler for `stream`, sharing `shared` with the connection's [`Conn`](super::super::Conn)s.
    pub(super) fn new(stream: Stream, shared: Arc<ConnShared>) -> Self {
        ConnHandler {
            stream,
            shared,
            waker: None,
            incoming: VecDeque::new(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
            waiters: Vec::new(),
            read_timer: None,
            draining: false,
        }
    }
}
