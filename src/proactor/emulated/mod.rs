//! The emulated backend: the proactor on reactors, as Boost.Asio runs on epoll. Each loop is a
//! [`Reactor`] on its own thread; an operation is queued to the loop that owns its connection
//! (or listener, or timer), which tries it at once and waits for readiness only on
//! `WouldBlock`. The kernel reports readiness; the loop completes the operation.
//!
//! ```text
//! initiator (any thread)                 loop thread (a Reactor)                       initiator
//! conn.read_some(buf) ─ OpQueue::submit ─▶ ConnHandler: take ops; try read ─ WouldBlock ─▶ wait
//!        (waker, coalesced) ─────────────▶ readable: read into buf ─ complete(Done{buf, n}) ─▶ token
//! ```
//!
//! # Invariants
//! - Connections are placed on loops round-robin and stay there; a connection accepted on a
//!   loop thread for that same loop is added directly, otherwise it is posted to its loop.
//! - File reads run as jobs on a loop thread (a positioned read of a regular file never
//!   returns `WouldBlock`, so readiness cannot help: the read blocks that loop while the page
//!   cache misses).
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

mod accept;
mod conn;
mod timer;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::accept::{AcceptShared, Accepts};
use super::conn::{Conn, ConnShared};
use super::delivery::Delivery;
use super::ops::OpQueue;
use super::recv::HeapPool;
use super::{ConnectToken, Done, OpError, OpToken, TimerToken};
use crate::act;
use crate::net::{Addr, ConnectError, ConnectOptions, Listener, Peer, Stream};
use crate::reactor::{Context, Reactor, ReactorGroup, ReactorHandle};
use crate::sync::atomic::{AtomicUsize, Ordering};
use accept::AcceptHandler;
use conn::ConnHandler;
use std::sync::Arc;
use timer::{TimerHandler, TimerShared};

/// The emulated backend's event loops, shared by the proactor's handles and its accept
/// handlers.
pub(super) struct Loops {
    handles: Vec<ReactorHandle>,
    timers: Vec<Arc<TimerShared>>,
    next: AtomicUsize,
    pub(super) delivery: Delivery,
    high_water: usize,
    low_water: usize,
    /// Buffers lent to pooled receives, shared by the loops.
    pool: crate::sync::Arc<HeapPool>,
    /// How long a connection's graceful close may take, and the cap on connections closing
    /// so at once (past it a close is immediate).
    linger: (Duration, crate::net::ConnLimit),
}

/// Connections the emulated loops close gracefully at once, at most.
const MAX_LINGERING: usize = 4096;

impl Loops {
    /// Starts `threads` loops (reactors built from `reactor`) on a [`ReactorGroup`].
    pub(super) fn start(
        threads: usize,
        reactor: &crate::reactor::Config,
        delivery: Delivery,
        (high_water, low_water): (usize, usize),
        recv_size: usize,
        linger: Duration,
    ) -> io::Result<(Arc<Loops>, ReactorGroup)> {
        let mut reactors = (0..threads.max(1))
            .map(|_| Reactor::builder().config(reactor.clone()).build())
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
            delivery,
            high_water,
            low_water,
            pool: crate::sync::Arc::new(HeapPool::new(recv_size, 1024)),
            linger: (linger, crate::net::ConnLimit::new(MAX_LINGERING)),
        });
        let group = ReactorGroup::spawn(reactors, "posa-proactor")?;
        Ok((loops, group))
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// Handles to the loops (first: where listeners live).
    pub(super) fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    fn new_conn(&self, peer: Peer) -> Arc<ConnShared> {
        ConnShared::new(
            peer,
            (self.high_water, self.low_water),
            self.delivery.clone(),
        )
    }

    /// A connection's shared state and the loop handler that will serve `stream`.
    fn conn_handler(&self, stream: Stream, peer: Peer) -> (Arc<ConnShared>, ConnHandler) {
        let shared = self.new_conn(peer);
        let handler = ConnHandler::new(
            stream,
            Arc::clone(&shared),
            crate::sync::Arc::clone(&self.pool),
            self.linger.clone(),
        );
        (shared, handler)
    }

    /// Attaches `stream`, accepted on a loop thread (`cx`), to a loop.
    fn attach(&self, stream: Stream, peer: Peer, cx: &mut Context<'_>) -> io::Result<(Conn, Peer)> {
        let (shared, handler) = self.conn_handler(stream, peer);
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

    /// See [`ProactorHandle::listen`](super::ProactorHandle::listen).
    pub(super) fn listen(self: &Arc<Self>, listener: Listener) -> io::Result<Accepts> {
        let shared = AcceptShared::new();
        let handler = AcceptHandler {
            listener,
            shared: Arc::clone(&shared),
            waker: None,
            waiting: VecDeque::new(),
            loops: Arc::clone(self),
        };
        match self.handles[0].add(handler).wait().into_result() {
            Ok(_) => Ok(Accepts { shared }),
            // The loop's own error (registration, the handler limit) comes through unchanged.
            Err(act::Error::Failed(e)) => Err(e),
            Err(_) => Err(io::Error::other(
                "the proactor's loop stopped before the listener was attached",
            )),
        }
    }

    /// See [`ProactorHandle::adopt`](super::ProactorHandle::adopt).
    pub(super) fn adopt(&self, stream: Stream, peer: Peer) -> io::Result<Conn> {
        let handle = &self.handles[self.pick()];
        self.adopt_on(handle, stream, peer)
    }

    /// Attaches `stream` to the loop `handle` names (posted: any thread may call this).
    fn adopt_on(&self, handle: &ReactorHandle, stream: Stream, peer: Peer) -> io::Result<Conn> {
        let (shared, handler) = self.conn_handler(stream, peer);
        handle
            .post(move |host| {
                let _ = host.add_boxed(Box::new(handler));
            })
            .map_err(|_| io::Error::other("the proactor's loop is busy or stopping"))?;
        Ok(Conn::new(shared))
    }

    /// See [`ProactorHandle::connect_with`](super::ProactorHandle::connect_with).
    pub(super) fn connect(self: &Arc<Self>, addr: Addr, options: ConnectOptions) -> ConnectToken {
        let handle = self.handles[self.pick()].clone();
        let loops = Arc::clone(self);
        let peer = match &addr {
            Addr::Tcp(a) => Peer::Tcp(*a),
            Addr::Unix(_) => Peer::Unix,
        };
        let (c, token) = act::pair();
        let connecting = crate::net::connect(&handle, addr, options);
        // Cancelling this token cancels the connector's attempt (it closes the socket and
        // answers Cancelled at once), rather than leaving it to run to its timeout.
        let attempt = connecting.canceller();
        c.on_cancel(move || attempt.cancel());
        connecting.on_complete(move |outcome| {
            if matches!(outcome, act::Outcome::Cancelled(())) && c.is_cancelled() {
                return c.cancel(());
            }
            let result = match outcome.into_result() {
                Ok(stream) => loops
                    .adopt_on(&handle, stream, peer)
                    .map_err(|_| ConnectError::Shutdown),
                Err(act::Error::Failed(e)) => Err(e),
                Err(_) => Err(ConnectError::Shutdown),
            };
            c.complete(result);
        });
        token
    }

    /// See [`ProactorHandle::timer`](super::ProactorHandle::timer).
    pub(super) fn timer(&self, after: Duration) -> TimerToken {
        let shared = &self.timers[self.pick()];
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

    /// See [`ProactorHandle::read_file_at`](super::ProactorHandle::read_file_at).
    pub(super) fn read_file_at(
        &self,
        file: crate::sync::Arc<File>,
        offset: u64,
        buf: Vec<u8>,
    ) -> OpToken {
        let (c, token) = act::pair_with_residue();
        let delivery = self.delivery.clone();
        let job = move |_: &mut dyn crate::reactor::Host| {
            let mut buf = buf;
            if c.is_cancelled() {
                delivery.stop(c, buf, 0, io::ErrorKind::Interrupted);
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
            delivery.complete(c, result);
        };
        if let Err(refused) = self.handles[self.pick()].post(job) {
            // The job owns the completer: dropping it unrun answers `Abandoned`.
            drop(refused.into_inner());
        }
        token
    }
}
