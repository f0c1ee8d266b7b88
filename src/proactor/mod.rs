//! Proactor: asynchronous operations initiated by the caller, completed by the event loop.
//!
//! A reactor tells a handler that it *may* now read; a proactor does the read itself and tells
//! the initiator that the read is *done*, with the data. Each operation (accept, connect, read
//! some, read exact, write all, shut down writing, a timer, a positioned file read) completes
//! exactly once through an [`act`](crate::act) token, which hands back the operation's buffer
//! with every outcome: done, failed, or cancelled.
//!
//! Emulated on the reactor, as Boost.Asio does on epoll: an operation is queued to its
//! connection's loop, which tries it at once (speculatively) and waits for readiness only when
//! the socket says `WouldBlock`.
//!
//! ```text
//! initiator (any thread)                 loop thread (a Reactor)                       initiator
//! conn.read_some(buf) ─ OpQueue::submit ─▶ ConnHandler: take ops; try read ─ WouldBlock ─▶ wait
//!        (waker, coalesced) ─────────────▶ readable: read into buf ─ complete(Done{buf, n}) ─▶ token
//! ```
//!
//! # Algorithm and invariants
//! - Operations wait in the connection's [`OpQueue`] (see [`ops`]) until its loop takes them;
//!   the loop keeps reads and writes in two ordered local queues, so several writes may be
//!   issued without waiting and complete in order, and reads likewise.
//! - Writes are bounded per connection by a high-water mark on queued bytes (ACE's
//!   `Svc_Handler` water marks): above it, [`Conn::write_all`] refuses and hands the buffer back
//!   ([`Refused::Full`]); [`Conn::writable`] completes when the queue has drained to the
//!   low-water mark. A slow peer pushes back on the initiator; memory does not grow.
//! - Cancellation: dropping or cancelling a token wakes the loop (a cancel hook), which answers
//!   the operation `Cancelled(buf)` if it had no effect yet, `CancelledAfterEffect` with the
//!   partial result if it had; closing a connection answers every outstanding operation the
//!   same way. No busy polling: an operation waits on readiness, a timer or a wake-up.
//! - Completion dispatch: on the loop thread that did the work ([`Dispatch::Loop`]), or handed
//!   to a thread pool ([`Dispatch::Pool`]); never on the initiating thread, except that an
//!   operation refused at initiation (closed connection, full write queue) is answered there
//!   and [`Conn::close`] answers what it cancels on the closing thread.
//!
//! ```
//! use posa::proactor::{Done, Proactor};
//! use posa::net::{Addr, Listener};
//!
//! let proactor = Proactor::new()?;
//! let listener = Listener::bind(&"127.0.0.1:0".parse::<Addr>().unwrap())?;
//! let addr = listener.local_addr()?;
//! let accepts = proactor.listen(listener)?;
//! let accepted = accepts.accept();
//! let client = proactor.connect(addr).wait().into_result().unwrap();
//! let (server, _peer) = accepted.wait().into_result().unwrap();
//!
//! let sent = client.write_all(b"ping".to_vec()).unwrap();
//! let Done { buf, n } = server.read_exact(vec![0; 4]).wait().into_result().unwrap();
//! assert_eq!((&buf[..], n), (&b"ping"[..], 4));
//! assert_eq!(sent.wait().into_result().unwrap().n, 4);
//! proactor.shutdown(std::time::Duration::from_secs(1));
//! proactor.join()?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod ops;

pub use ops::OpQueue;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use crate::reactor::Interest;

use crate::act::{self, Completer, Token};
use crate::error::Refused;
use crate::net::{Addr, ConnectError, ConnectOptions, Listener, Peer, Stream};
use crate::pool::ThreadPool;
use crate::reactor::{
    CloseReason, Context, EventHandler, HandlerWaker, Reactor, ReactorGroup, ReactorHandle,
    Readiness, ShutdownReport, TimerId,
};
use crate::sync::atomic::{AtomicUsize, Ordering};

/// A finished read or write: the buffer back, and how many bytes moved (for a read, the data
/// is `buf[..n]`; 0 means the peer closed its side).
#[derive(Debug, PartialEq, Eq)]
pub struct Done {
    /// The operation's buffer.
    pub buf: Vec<u8>,
    /// Bytes read or written.
    pub n: usize,
}

/// A failed operation: why, and its buffer back (with `n` bytes moved before the failure).
#[derive(Debug)]
pub struct OpError {
    /// What went wrong (`TimedOut` for a read that outlived its timeout, `UnexpectedEof` for a
    /// `read_exact` cut short, `NotConnected` for a closed connection).
    pub error: io::Error,
    /// The operation's buffer.
    pub buf: Vec<u8>,
    /// Bytes moved before it failed.
    pub n: usize,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation failed after {} bytes: {}", self.n, self.error)
    }
}

impl std::error::Error for OpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The token of a read or write: `Completed(Ok(Done))`, `Completed(Err(OpError))`,
/// `Cancelled(buf)` or `CancelledAfterEffect(..)` with the partial result.
pub type OpToken = Token<Done, OpError, Vec<u8>>;

type OpCompleter = Completer<Done, OpError, Vec<u8>>;

/// The token of an accept: the connection, attached to one of the proactor's loops.
pub type AcceptToken = Token<(Conn, Peer), io::Error>;

/// The token of a connect: the connector's typed error (attempts, timeout, rejection) comes
/// through unchanged.
pub type ConnectToken = Token<Conn, ConnectError>;

/// The token of a timer: `Completed(Ok(()))` when it expires.
pub type TimerToken = Token<(), std::convert::Infallible>;

/// Where completions are delivered.
#[derive(Clone, Default)]
pub enum Dispatch {
    /// On the loop thread that finished the operation (the default; no hand-off).
    #[default]
    Loop,
    /// Handed to this pool: completion handlers (`on_complete`) run on its workers. If the
    /// pool refuses (full or shut down), the completion is delivered on the loop thread.
    Pool(Arc<ThreadPool>),
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dispatch::Loop => "Loop",
            Dispatch::Pool(_) => "Pool",
        })
    }
}

/// Runs its delivery when dropped, unless already run: a pool that cancels or refuses the
/// delivery job drops it, and so delivers it all the same.
struct DeliverOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for DeliverOnDrop {
    fn drop(&mut self) {
        if let Some(deliver) = self.0.take() {
            deliver();
        }
    }
}

impl Dispatch {
    /// Runs `deliver` (which states an outcome) per this policy, exactly once: on this thread
    /// for [`Dispatch::Loop`]; on a pool worker for [`Dispatch::Pool`], or here if the pool
    /// refuses it, or on the thread that shuts the pool down if it cancels it.
    pub fn run(&self, deliver: impl FnOnce() + Send + 'static) {
        match self {
            Dispatch::Loop => deliver(),
            Dispatch::Pool(pool) => {
                let guard = DeliverOnDrop(Some(Box::new(deliver)));
                match pool.submit(move || drop(guard)) {
                    Ok(token) => token.detach(),
                    Err(refused) => drop(refused.into_inner()),
                }
            }
        }
    }
}

/// Where completions go, and who watches them ([`Point::ProactorCompletion`]
/// (crate::intercept::Point)): interceptors observe each delivery; they cannot refuse one
/// (that would lose a buffer), so a rejection is logged and the completion delivered anyway.
#[derive(Clone, Default)]
struct Delivery {
    dispatch: Dispatch,
    chain: crate::intercept::Chain,
}

impl Delivery {
    fn run(&self, deliver: impl FnOnce() + Send + 'static) {
        if self.chain.is_empty() {
            return self.dispatch.run(deliver);
        }
        let chain = self.chain.clone();
        self.dispatch.run(move || {
            use crate::intercept::{Dispatch, Outcome, Point};
            let d = Dispatch::new(Point::ProactorCompletion, 0);
            if let Err(why) = chain.before(&d) {
                tracing::debug!(%why, "proactor: an interceptor refused a completion; delivered anyway");
                deliver();
                return;
            }
            let started = std::time::Instant::now();
            deliver();
            chain.after(&d, Outcome::Ok, started.elapsed());
        });
    }

    fn complete(&self, c: OpCompleter, result: Result<Done, OpError>) {
        self.run(move || c.complete(result));
    }

    fn stop(&self, c: OpCompleter, buf: Vec<u8>, n: usize, why: io::ErrorKind) {
        if n == 0 {
            self.run(move || c.cancel(buf));
        } else {
            let error = io::Error::from(why);
            self.complete(c, Err(OpError { error, buf, n }));
        }
    }
}

/// One queued operation of a connection.
enum Op {
    Read {
        buf: Vec<u8>,
        filled: usize,
        exact: bool,
        timeout: Option<Duration>,
        c: OpCompleter,
    },
    Write {
        buf: Vec<u8>,
        len: usize,
        written: usize,
        c: OpCompleter,
    },
    ShutdownWrite {
        c: OpCompleter,
    },
    Writable {
        c: OpCompleter,
    },
}

impl Op {
    fn completer(&self) -> &OpCompleter {
        match self {
            Op::Read { c, .. }
            | Op::Write { c, .. }
            | Op::ShutdownWrite { c }
            | Op::Writable { c } => c,
        }
    }

    /// Stops the operation: cancelled (with its buffer) or its partial result.
    fn stop(self, dispatch: &Delivery, why: io::ErrorKind) {
        match self {
            Op::Read { buf, filled, c, .. } => dispatch.stop(c, buf, filled, why),
            Op::Write {
                buf, written, c, ..
            } => dispatch.stop(c, buf, written, why),
            Op::ShutdownWrite { c } | Op::Writable { c } => dispatch.stop(c, Vec::new(), 0, why),
        }
    }
}

struct ConnShared {
    queue: OpQueue<Op, HandlerWaker>,
    peer: Peer,
    dispatch: Delivery,
}

impl ConnShared {
    /// Queues `op`; refused operations are answered here, on the initiating thread.
    fn submit(self: &Arc<Self>, op: Op, write_bytes: usize) -> Result<(), Refused<Op>> {
        // Registered before the op is visible to the loop: cancelling the token wakes the loop.
        let weak = Arc::downgrade(self);
        op.completer().on_cancel(move || {
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
}

/// A connection driven by a [`Proactor`]: every call initiates an operation and returns at
/// once with its token. Clones share the connection; when the last clone drops, it closes.
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
        close_shared(&self.shared);
    }
}

fn close_shared(shared: &Arc<ConnShared>) {
    let (ops, waker) = shared.queue.close();
    for op in ops {
        op.stop(&shared.dispatch, io::ErrorKind::NotConnected);
    }
    if let Some(w) = waker {
        w.wake();
    }
}

impl Conn {
    fn initiate(&self, op: Op, write_bytes: usize) -> Result<(), Refused<Op>> {
        self.user.shared.submit(op, write_bytes)
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
        let op = Op::Read {
            buf,
            filled: 0,
            exact,
            timeout,
            c,
        };
        if let Err(refused) = self.initiate(op, 0) {
            refused
                .into_inner()
                .stop(&Delivery::default(), io::ErrorKind::NotConnected);
        }
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
        let op = Op::Write {
            buf,
            len,
            written: 0,
            c,
        };
        match self.initiate(op, len.max(1)) {
            Ok(()) => Ok(token),
            Err(refused) => {
                // Nobody will wait for the refused write: its completer and token just go.
                let back = |op| match op {
                    Op::Write { buf, .. } => buf,
                    _ => Vec::new(),
                };
                drop(token);
                Err(refused.map(back))
            }
        }
    }

    /// Completes when the write queue has drained to its low-water mark (at once if it is).
    pub fn writable(&self) -> OpToken {
        let (c, token) = act::pair_with_residue();
        if let Err(refused) = self.initiate(Op::Writable { c }, 0) {
            refused
                .into_inner()
                .stop(&Delivery::default(), io::ErrorKind::NotConnected);
        }
        token
    }

    /// Shuts down the writing side once every write issued before has gone out.
    pub fn shutdown_write(&self) -> OpToken {
        let (c, token) = act::pair_with_residue();
        if let Err(refused) = self.initiate(Op::ShutdownWrite { c }, 0) {
            refused
                .into_inner()
                .stop(&Delivery::default(), io::ErrorKind::NotConnected);
        }
        token
    }

    /// Closes the connection: every outstanding operation is answered (cancelled, or its
    /// partial result), later ones are refused.
    pub fn close(&self) {
        close_shared(&self.user.shared);
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

/// The loop side of a connection.
struct ConnHandler {
    stream: Stream,
    shared: Arc<ConnShared>,
    waker: Option<HandlerWaker>,
    incoming: VecDeque<Op>,
    reads: VecDeque<Op>,
    /// Writes and write shutdowns, in the order issued.
    writes: VecDeque<Op>,
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
    fn dispatch(&self) -> &Delivery {
        &self.shared.dispatch
    }

    /// Takes new operations and moves every queue as far as the socket allows; repeats while
    /// completions (whose handlers may issue more operations) keep coming.
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(waker) = &self.waker else { return };
            let open = self.shared.queue.take(waker, &mut self.incoming);
            while let Some(op) = self.incoming.pop_front() {
                match op {
                    Op::Read { .. } => self.reads.push_back(op),
                    Op::Writable { c } => self.waiters.push(c),
                    op => self.writes.push_back(op),
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
        while let Some(front) = self.reads.front_mut() {
            let Op::Read {
                buf,
                filled,
                exact,
                timeout,
                c,
            } = front
            else {
                unreachable!("only reads are queued here")
            };
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
        let Some(Op::Read { buf, filled, c, .. }) = self.reads.pop_front() else {
            return;
        };
        if let Some(t) = self.read_timer.take() {
            cx.cancel_timer(t);
        }
        match how(buf, filled) {
            Ok(done) => self.dispatch().complete(c, Ok(done)),
            Err((buf, n, kind)) if kind == io::ErrorKind::Interrupted => {
                self.dispatch().stop(c, buf, n, kind)
            }
            Err((buf, n, kind)) => self.dispatch().complete(
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
        if let Some(Op::Read { c, .. }) = self.reads.pop_front() {
            if let Some(t) = self.read_timer.take() {
                cx.cancel_timer(t);
            }
            self.dispatch().complete(c, done);
        }
    }

    fn pump_writes(&mut self) -> io::Result<Step> {
        let mut step = Step::Blocked;
        while let Some(front) = self.writes.front_mut() {
            match front {
                Op::Write {
                    buf,
                    len,
                    written,
                    c,
                } => {
                    if c.is_cancelled() && *written == 0 {
                        let Some(op) = self.writes.pop_front() else {
                            break;
                        };
                        self.shared.queue.written(len_of(&op));
                        op.stop(self.dispatch(), io::ErrorKind::Interrupted);
                        step = Step::Progress;
                        self.answer_writable();
                        continue;
                    }
                    crate::net::write_from(&mut self.stream, &buf[..*len], written)?;
                    if *written < *len {
                        return Ok(step); // WouldBlock: wait for writable
                    }
                    let Some(Op::Write { buf, len, c, .. }) = self.writes.pop_front() else {
                        break;
                    };
                    self.shared.queue.written(len.max(1));
                    self.dispatch().complete(c, Ok(Done { buf, n: len }));
                    step = Step::Progress;
                    self.answer_writable();
                }
                Op::ShutdownWrite { .. } => {
                    let Some(Op::ShutdownWrite { c }) = self.writes.pop_front() else {
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
                    self.dispatch().complete(c, result);
                    step = Step::Progress;
                }
                Op::Read { .. } | Op::Writable { .. } => {
                    unreachable!("only writes and write shutdowns are queued here")
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
            self.shared.dispatch.complete(c, Ok(done));
        }
    }

    fn fail_all(&mut self, kind: io::ErrorKind) {
        let (queued, _) = self.shared.queue.close();
        let ops: Vec<Op> = self
            .reads
            .drain(..)
            .chain(self.writes.drain(..))
            .chain(self.incoming.drain(..))
            .chain(queued)
            .collect();
        for op in ops {
            op.stop(&self.shared.dispatch, kind);
        }
        for c in self.waiters.drain(..) {
            self.shared.dispatch.stop(c, Vec::new(), 0, kind);
        }
    }
}

fn len_of(op: &Op) -> usize {
    match op {
        Op::Write { len, .. } => (*len).max(1),
        _ => 0,
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

/// Accept operations on one listener.
struct AcceptShared {
    queue: OpQueue<Completer<(Conn, Peer), io::Error>, HandlerWaker>,
}

/// Initiates accepts on a listener the [`Proactor`] watches. Dropping it closes the listener.
pub struct Accepts {
    shared: Arc<AcceptShared>,
}

impl Accepts {
    /// Accepts one connection; several may be outstanding (they complete in order).
    pub fn accept(&self) -> AcceptToken {
        let (c, token) = act::pair();
        let weak = Arc::downgrade(&self.shared);
        c.on_cancel(move || {
            if let Some(s) = weak.upgrade()
                && let (_, Some(w)) = s.queue.waker()
            {
                w.wake();
            }
        });
        match self.shared.queue.submit(c, 0) {
            Ok(Some(w)) => {
                w.wake();
            }
            Ok(None) => {}
            Err(refused) => refused.into_inner().complete(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener is closed",
            ))),
        }
        token
    }
}

impl Drop for Accepts {
    fn drop(&mut self) {
        let (waiting, waker) = self.shared.queue.close();
        drop(waiting); // their tokens see Abandoned
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct AcceptHandler {
    listener: Listener,
    shared: Arc<AcceptShared>,
    waker: Option<HandlerWaker>,
    waiting: VecDeque<Completer<(Conn, Peer), io::Error>>,
    loops: Arc<Loops>,
}

impl AcceptHandler {
    /// Accepts for every waiting accept operation until `WouldBlock`, taking the operations
    /// that completions issue meanwhile (an accept loop re-issues from its completion).
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(waker) = &self.waker else { return };
            if !self.shared.queue.take(waker, &mut self.waiting) {
                cx.close();
                return;
            }
            if self.waiting.is_empty() || !self.accept_waiting(cx) {
                return;
            }
        }
    }

    /// `true` if it completed something and the socket may have more.
    fn accept_waiting(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Some(c) = self.waiting.front() {
            if c.is_cancelled() {
                if let Some(c) = self.waiting.pop_front() {
                    c.cancel(());
                }
                continue;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let Some(c) = self.waiting.pop_front() else {
                        break;
                    };
                    c.complete(self.loops.attach(stream, peer, cx));
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The caller decides (EMFILE: back off; others: give up).
                    let Some(c) = self.waiting.pop_front() else {
                        break;
                    };
                    c.complete(Err(e));
                    return false;
                }
            }
        }
        progress
    }
}

impl EventHandler for AcceptHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.listener, Interest::READABLE)?;
        self.waker = Some(cx.waker());
        self.pump(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        let (queued, _) = self.shared.queue.close();
        for c in self.waiting.drain(..).chain(queued) {
            c.cancel(());
        }
    }
}

/// Timers of one loop.
struct TimerShared {
    queue: OpQueue<(Duration, Completer<(), std::convert::Infallible>), HandlerWaker>,
}

struct TimerHandler {
    shared: Arc<TimerShared>,
    waker: Option<HandlerWaker>,
    incoming: VecDeque<(Duration, Completer<(), std::convert::Infallible>)>,
    armed: Vec<(TimerId, Completer<(), std::convert::Infallible>)>,
}

impl TimerHandler {
    fn pump(&mut self, cx: &mut Context<'_>) {
        let Some(waker) = &self.waker else { return };
        self.shared.queue.take(waker, &mut self.incoming);
        for (after, c) in self.incoming.drain(..) {
            let id = cx.set_timer(after);
            self.armed.push((id, c));
        }
        // Cancelled timers: stop them and answer their tokens.
        let mut i = 0;
        while i < self.armed.len() {
            if self.armed[i].1.is_cancelled() {
                let (id, c) = self.armed.swap_remove(i);
                cx.cancel_timer(id);
                c.cancel(());
            } else {
                i += 1;
            }
        }
    }
}

impl EventHandler for TimerHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.waker = Some(cx.waker());
        self.pump(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn timeout(&mut self, timer: TimerId, _: &mut Context<'_>) {
        if let Some(i) = self.armed.iter().position(|(id, _)| *id == timer) {
            let (_, c) = self.armed.swap_remove(i);
            c.complete(Ok(()));
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        let (queued, _) = self.shared.queue.close();
        let armed = self.armed.drain(..).map(|(_, c)| c);
        let waiting = self.incoming.drain(..).chain(queued).map(|(_, c)| c);
        for c in armed.chain(waiting) {
            c.cancel(());
        }
    }
}

/// The proactor's event loops, shared by its handles and its accept handlers.
struct Loops {
    handles: Vec<ReactorHandle>,
    timers: Vec<Arc<TimerShared>>,
    next: AtomicUsize,
    dispatch: Delivery,
    high_water: usize,
    low_water: usize,
}

impl Loops {
    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    fn new_conn(&self, peer: Peer) -> Arc<ConnShared> {
        Arc::new(ConnShared {
            queue: OpQueue::new(self.high_water, self.low_water),
            peer,
            dispatch: self.dispatch.clone(),
        })
    }

    /// Attaches `stream` to a loop, from a loop thread (`cx`) or any other thread (`None`).
    fn attach(&self, stream: Stream, peer: Peer, cx: &mut Context<'_>) -> io::Result<(Conn, Peer)> {
        let shared = self.new_conn(peer);
        let handler = conn_handler(stream, Arc::clone(&shared));
        let target = self.pick();
        if self.handles.len() == 1 || cx.handle().same_loop(&self.handles[target]) {
            cx.spawn(handler);
        } else {
            self.handles[target]
                .post(move |host| {
                    let _ = host.add_boxed(Box::new(handler));
                })
                .map_err(|_| io::Error::other("the proactor's loop is busy or stopping"))?;
        }
        Ok((Conn::new(shared), peer))
    }
}

fn conn_handler(stream: Stream, shared: Arc<ConnShared>) -> ConnHandler {
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

impl Conn {
    fn new(shared: Arc<ConnShared>) -> Self {
        Conn {
            user: Arc::new(ConnUser { shared }),
        }
    }
}

/// Configures a [`Proactor`].
#[derive(Debug, Clone)]
pub struct Builder {
    threads: usize,
    dispatch: Dispatch,
    interceptors: crate::intercept::Chain,
    high_water: usize,
    low_water: usize,
    reactor: crate::reactor::Config,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            threads: 1,
            dispatch: Dispatch::Loop,
            interceptors: crate::intercept::Chain::new(),
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            reactor: crate::reactor::Config::default(),
        }
    }
}

impl Builder {
    /// Event-loop threads (at least 1; default 1). Connections are spread round-robin.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Where completions are delivered (default: on the loop thread).
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// Interceptors that observe every completion delivered
    /// ([`Point::ProactorCompletion`](crate::intercept::Point)). The loops' own upcalls are
    /// intercepted through [`reactor`](Self::reactor)'s `interceptors`.
    pub fn interceptors(mut self, chain: crate::intercept::Chain) -> Self {
        self.interceptors = chain;
        self
    }

    /// Per-connection write queue bounds in bytes (default 256 KiB high, 64 KiB low).
    pub fn water_marks(mut self, high: usize, low: usize) -> Self {
        self.high_water = high.max(1);
        self.low_water = low.min(self.high_water);
        self
    }

    /// The loops' reactor settings.
    pub fn reactor(mut self, config: crate::reactor::Config) -> Self {
        self.reactor = config;
        self
    }

    /// Starts the loop threads.
    pub fn build(self) -> io::Result<Proactor> {
        let mut reactors = (0..self.threads)
            .map(|_| Reactor::builder().config(self.reactor.clone()).build())
            .collect::<io::Result<Vec<_>>>()?;
        let mut timers = Vec::with_capacity(reactors.len());
        for r in &mut reactors {
            let shared = Arc::new(TimerShared {
                queue: OpQueue::new(1, 0),
            });
            r.add(TimerHandler {
                shared: Arc::clone(&shared),
                waker: None,
                incoming: VecDeque::new(),
                armed: Vec::new(),
            })?;
            timers.push(shared);
        }
        let loops = Arc::new(Loops {
            handles: reactors.iter().map(Reactor::handle).collect(),
            timers,
            next: AtomicUsize::new(0),
            dispatch: Delivery {
                dispatch: self.dispatch,
                chain: self.interceptors,
            },
            high_water: self.high_water,
            low_water: self.low_water,
        });
        Ok(Proactor {
            handle: ProactorHandle { loops },
            group: ReactorGroup::spawn(reactors, "posa-proactor")?,
        })
    }
}

/// Asynchronous operations on sockets, timers and files, completed by event-loop threads.
/// See the [module docs](self). Operations are initiated through its [`ProactorHandle`]
/// (`Deref`), which can be cloned and sent to any thread.
pub struct Proactor {
    handle: ProactorHandle,
    /// The loop threads; dropping the group shuts them down (no grace) and joins them.
    group: ReactorGroup,
}

impl std::ops::Deref for Proactor {
    type Target = ProactorHandle;
    fn deref(&self) -> &ProactorHandle {
        &self.handle
    }
}

/// A `Send + Clone` handle that initiates operations on a [`Proactor`]'s loops.
#[derive(Clone)]
pub struct ProactorHandle {
    loops: Arc<Loops>,
}

impl fmt::Debug for ProactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProactorHandle")
            .field("loops", &self.loops.handles.len())
            .finish()
    }
}

impl Proactor {
    /// One loop thread, completions on the loop.
    pub fn new() -> io::Result<Self> {
        Builder::default().build()
    }

    /// A builder for every other setting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ProactorHandle {
        self.handle.clone()
    }

    /// Waits for every loop to stop (after [`shutdown`](ProactorHandle::shutdown)); returns
    /// their reports.
    pub fn join(&self) -> io::Result<Vec<ShutdownReport>> {
        self.group.join()
    }
}

impl ProactorHandle {
    /// Watches `listener` for accepts (on the first loop). Blocks until that loop has taken
    /// it: call it from outside the proactor's loops.
    pub fn listen(&self, listener: Listener) -> io::Result<Accepts> {
        let shared = Arc::new(AcceptShared {
            queue: OpQueue::new(1, 0),
        });
        let handler = AcceptHandler {
            listener,
            shared: Arc::clone(&shared),
            waker: None,
            waiting: VecDeque::new(),
            loops: Arc::clone(&self.loops),
        };
        let added = self.loops.handles[0].add(handler);
        match added.wait().into_result() {
            Ok(_) => Ok(Accepts { shared }),
            // The loop's own error (registration, the handler limit) comes through unchanged.
            Err(act::Error::Failed(e)) => Err(e),
            Err(_) => Err(io::Error::other(
                "the proactor's loop stopped before the listener was attached",
            )),
        }
    }

    /// Connects to `addr` (one attempt, 10 s) and attaches the connection to a loop.
    pub fn connect(&self, addr: Addr) -> ConnectToken {
        self.connect_with(
            addr,
            ConnectOptions {
                attempts: 1,
                ..ConnectOptions::default()
            },
        )
    }

    /// Connects with retries and timeouts per `options`.
    pub fn connect_with(&self, addr: Addr, options: ConnectOptions) -> ConnectToken {
        let target = self.loops.pick();
        let handle = self.loops.handles[target].clone();
        let loops = Arc::clone(&self.loops);
        let peer = match &addr {
            Addr::Tcp(a) => Peer::Tcp(*a),
            Addr::Unix(_) => Peer::Unix,
        };
        let (c, token) = act::pair();
        crate::net::connect(&handle, addr, options).on_complete(move |outcome| {
            let result = match outcome.into_result() {
                Ok(stream) => {
                    let shared = loops.new_conn(peer);
                    let handler = conn_handler(stream, Arc::clone(&shared));
                    match handle.post(move |host| {
                        let _ = host.add_boxed(Box::new(handler));
                    }) {
                        Ok(()) => Ok(Conn::new(shared)),
                        Err(_) => Err(ConnectError::Shutdown),
                    }
                }
                Err(act::Error::Failed(e)) => Err(e),
                Err(_) => Err(ConnectError::Shutdown),
            };
            c.complete(result);
        });
        token
    }

    /// Completes after `after` (on a loop's timer queue). Dropping the token cancels it.
    pub fn timer(&self, after: Duration) -> TimerToken {
        let shared = &self.loops.timers[self.loops.pick()];
        let (c, token) = act::pair();
        let weak = Arc::downgrade(shared);
        c.on_cancel(move || {
            if let Some(s) = weak.upgrade()
                && let (_, Some(w)) = s.queue.waker()
            {
                w.wake();
            }
        });
        match shared.queue.submit((after, c), 0) {
            Ok(Some(w)) => {
                w.wake();
            }
            Ok(None) => {}
            Err(refused) => {
                let (_, c) = refused.into_inner();
                c.cancel(());
            }
        }
        token
    }

    /// Reads up to `buf.len()` bytes of `file` at `offset` (a positioned read, so appended
    /// data can be read while someone writes) on a loop thread: `Done { buf, n }`, 0 at end.
    pub fn read_file_at(&self, file: Arc<File>, offset: u64, buf: Vec<u8>) -> OpToken {
        let (c, token) = act::pair_with_residue();
        let dispatch = self.loops.dispatch.clone();
        let job = move |_: &mut dyn crate::reactor::Host| {
            let mut buf = buf;
            if c.is_cancelled() {
                dispatch.stop(c, buf, 0, io::ErrorKind::Interrupted);
                return;
            }
            let result = loop {
                match file.read_at(&mut buf, offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let result = match result {
                Ok(n) => Ok(Done { buf, n }),
                Err(error) => Err(OpError { error, buf, n: 0 }),
            };
            dispatch.complete(c, result);
        };
        if let Err(refused) = self.loops.handles[self.loops.pick()].post(job) {
            // The job owns the completer: dropping it unrun answers `Abandoned`.
            drop(refused.into_inner());
        }
        token
    }

    /// Handles to the loops (first: where listeners live).
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.loops.handles
    }

    /// Begins shutdown on every loop: outstanding reads are cancelled, queued writes get up to
    /// `grace` to go out, then every connection is closed.
    pub fn shutdown(&self, grace: Duration) {
        for h in &self.loops.handles {
            drop(h.shutdown(grace));
        }
    }
}

impl fmt::Debug for Proactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proactor")
            .field("loops", &self.handle.loops.handles.len())
            .field("dispatch", &self.handle.loops.dispatch.dispatch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::Outcome;
    use std::io::Write as _;

    /// A proactor, a connection it accepted, and the blocking peer on the other end.
    fn pair(builder: Builder) -> (Proactor, Conn, std::net::TcpStream) {
        let proactor = builder.build().unwrap();
        let listener = Listener::bind(&"127.0.0.1:0".parse::<Addr>().unwrap()).unwrap();
        let Addr::Tcp(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let accepts = proactor.listen(listener).unwrap();
        let accepted = accepts.accept();
        let peer = std::net::TcpStream::connect(addr).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (conn, _) = accepted.wait().into_result().unwrap();
        (proactor, conn, peer)
    }

    #[test]
    fn queued_writes_complete_in_order_and_arrive_in_order() {
        let (_p, conn, mut peer) = pair(Proactor::builder());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tokens: Vec<_> = (0u8..3)
            .map(|i| {
                let token = conn.write_all(vec![i; 1000]).unwrap();
                let order = Arc::clone(&order);
                let (c, t) = act::pair::<(), ()>();
                token.on_complete(move |o| {
                    assert!(o.is_completed());
                    order.lock().unwrap().push(i);
                    c.complete(Ok(()));
                });
                t
            })
            .collect();
        let mut got = vec![0u8; 3000];
        peer.read_exact(&mut got).unwrap();
        for t in tokens {
            t.wait().into_result().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert!(got[..1000].iter().all(|&b| b == 0) && got[2000..].iter().all(|&b| b == 2));
    }

    #[test]
    fn a_full_write_queue_pushes_back_and_writable_says_when_to_go_on() {
        let (_p, conn, mut peer) = pair(Proactor::builder().water_marks(64 * 1024, 1024));
        // Without a reader, writes go until the socket buffers and the queue fill up.
        let mut accepted = Vec::new();
        let refused = loop {
            match conn.write_all(vec![7u8; 16 * 1024]) {
                Ok(t) => accepted.push(t),
                Err(Refused::Full(buf)) => break buf,
                Err(other) => panic!("{other:?}"),
            }
            assert!(accepted.len() < 10_000, "the queue never pushed back");
        };
        assert_eq!(refused.len(), 16 * 1024, "the buffer comes back");
        assert!(conn.queued_bytes() <= 64 * 1024);
        let writable = conn.writable();
        // Read everything that was accepted: the queue drains, and writable completes.
        let total = accepted.len() * 16 * 1024;
        let mut sink = vec![0u8; total];
        peer.read_exact(&mut sink).unwrap();
        let Done { n, .. } = writable.wait().into_result().unwrap();
        assert!(n <= 1024);
        for t in accepted {
            assert_eq!(t.wait().into_result().unwrap().n, 16 * 1024);
        }
    }

    #[test]
    fn cancelling_a_pending_read_hands_the_buffer_back() {
        let (_p, conn, _peer) = pair(Proactor::builder());
        let read = conn.read_some(vec![1, 2, 3]);
        read.cancel();
        assert!(matches!(read.wait(), Outcome::Cancelled(buf) if buf == vec![1, 2, 3]));
        // The connection still works.
        let again = conn.read_some(vec![0; 4]);
        drop(_peer);
        assert_eq!(again.wait().into_result().unwrap().n, 0, "end of stream");
    }

    #[test]
    fn closing_answers_every_outstanding_operation_once() {
        let (_p, conn, _peer) = pair(Proactor::builder());
        let a = conn.read_some(vec![0; 8]);
        let b = conn.read_exact(vec![0; 8]);
        conn.close();
        assert!(matches!(a.wait(), Outcome::Cancelled(buf) if buf.len() == 8));
        assert!(matches!(b.wait(), Outcome::Cancelled(buf) if buf.len() == 8));
        let late = conn.read_some(vec![0; 2]);
        assert!(
            matches!(late.wait(), Outcome::Cancelled(_)),
            "refused after close"
        );
        assert!(matches!(conn.write_all(vec![1]), Err(Refused::Closed(b)) if b == vec![1]));
    }

    #[test]
    fn read_exact_cut_short_fails_with_what_it_read() {
        let (_p, conn, mut peer) = pair(Proactor::builder());
        peer.write_all(b"ab").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        match conn.read_exact(vec![0; 4]).wait() {
            Outcome::Completed(Err(e)) => {
                assert_eq!(e.error.kind(), io::ErrorKind::UnexpectedEof);
                assert_eq!((&e.buf[..e.n], e.n), (&b"ab"[..], 2));
            }
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
    }

    #[test]
    fn a_read_that_outlives_its_timeout_fails_with_its_buffer() {
        let (_p, conn, _peer) = pair(Proactor::builder());
        match conn
            .read_some_timeout(vec![9; 3], Duration::from_millis(20))
            .wait()
        {
            Outcome::Completed(Err(e)) => {
                assert_eq!(e.error.kind(), io::ErrorKind::TimedOut);
                assert_eq!(e.buf, vec![9; 3]);
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
    }

    #[test]
    fn completions_run_on_the_loop_or_on_the_pool_never_on_the_initiator() {
        for pool in [
            None,
            Some(Arc::new(
                ThreadPool::builder()
                    .name("done")
                    .threads(1)
                    .build()
                    .unwrap(),
            )),
        ] {
            let dispatch = pool.clone().map_or(Dispatch::Loop, Dispatch::Pool);
            let (_p, conn, mut peer) = pair(Proactor::builder().dispatch(dispatch));
            let (c, ran_on) = act::pair::<String, ()>();
            conn.read_some(vec![0; 4]).on_complete(move |_| {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                c.complete(Ok(name));
            });
            peer.write_all(b"x").unwrap();
            let name = ran_on.wait().into_result().unwrap();
            let expected = if pool.is_some() {
                "done-"
            } else {
                "posa-proactor-"
            };
            assert!(name.starts_with(expected), "ran on {name}");
        }
    }

    #[test]
    fn timers_and_file_reads_complete_through_tokens() {
        let p = Proactor::new().unwrap();
        assert_eq!(
            p.timer(Duration::from_millis(1)).wait(),
            Outcome::Completed(Ok(()))
        );
        let cancelled = p.timer(Duration::from_secs(3600));
        cancelled.cancel();
        assert_eq!(cancelled.wait(), Outcome::Cancelled(()));
        let path = std::env::temp_dir().join(format!("posa-proactor-{}", std::process::id()));
        std::fs::write(&path, b"hello, appended").unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let Done { buf, n } = p
            .read_file_at(file, 7, vec![0; 64])
            .wait()
            .into_result()
            .unwrap();
        assert_eq!(&buf[..n], b"appended");
        std::fs::remove_file(path).unwrap();
    }
}
