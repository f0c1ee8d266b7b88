//! The reactor's driver of a [`Service`]: the event handler that the `reactor`,
//! `reactor-pool` and `leader-followers` models run for each connection, whatever the
//! protocol.
//!
//! [`ServiceConn`] reads, frames requests ([`Requests`]), calls the service on the loop
//! thread and writes the replies back, in order, with bounded memory:
//! - Reads land in a per-thread 64 KiB scratch buffer (Thread-Specific Storage) and are framed
//!   where they lie; only a partial request is copied into the connection (at most the
//!   service's `max_request`), and replies wait in its output buffer, which is freed once a
//!   burst is drained. An idle connection owns no buffer at all.
//! - Backpressure: while `buffer` bytes of replies are owed the handler stops reading, so a
//!   peer that never reads fills its own kernel buffers and then blocks, instead of growing
//!   server memory.
//! - Half-close: when the peer shuts down its write side, the handler finishes what it owes,
//!   then shuts down its own write side and closes.
//! - Idle timeout: re-armed on every read (an O(1) lazy re-arm in the timer queue).
//! - Drain (graceful shutdown): serves on until the peer half-closes and every reply is out,
//!   then closes in order. When the grace runs out ([`EventHandler::force`]), the connection
//!   idles out, or the peer breaks the protocol, it closes lingering ([`LingerState`]): what it
//!   owes still goes out, its write side is shut down, and input is discarded until the peer's
//!   end of stream or the linger time, so the close never turns into a reset that destroys
//!   replies on their way.
//!
//! [`LingerState`]: crate::net::LingerState

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::Shutdown;
use std::time::Duration;

use crate::net::{
    Closing, ConnGuard, ConnStats, Peer, ProtocolError, Requests, Service, ServiceFactory, Stream,
};
use crate::reactor::{CloseReason, Context, EventHandler, Interest, Readiness, TimerId};
use crate::sync::Arc;
use crate::sync::atomic::Ordering;

const SCRATCH_LEN: usize = 64 * 1024;

crate::sync::thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Settings of a served connection, on every model.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Most bytes of replies a connection owes a slow reader before it stops reading (at least
    /// 1). On half-sync it also counts requests queued or running; on the proactor it sizes
    /// the receive buffers (at most 16 KiB).
    pub buffer: usize,
    /// Close a connection that sent nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a lingering close (after an idle timeout, a protocol error, or when a drain's
    /// grace ran out) waits for the peer's end of stream, at most.
    pub linger: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            buffer: 64 * 1024,
            idle_timeout: None,
            linger: Duration::from_secs(2),
        }
    }
}

/// One connection of a [`Service`] on a reactor: reads, frames, calls the service on the
/// loop thread and writes the replies in order, with bounded buffers, backpressure,
/// half-close, an idle timeout, drain and lingering close.
pub struct ServiceConn<S> {
    service: Arc<S>,
    stream: Stream,
    peer: Peer,
    requests: Requests,
    pending: Vec<u8>,
    sent: usize,
    cap: usize,
    read_closed: bool,
    /// Told the drain's grace ran out.
    forced: bool,
    /// Closing lingering, until its timer.
    linger: Option<Closing>,
    linger_after: Duration,
    idle: Option<(Duration, TimerId)>,
    idle_after: Option<Duration>,
    stats: Arc<ConnStats>,
    _guard: ConnGuard,
}

enum Step {
    Continue,
    Done,
}

impl<S: Service> ServiceConn<S> {
    fn owed(&self) -> usize {
        self.pending.len() - self.sent
    }

    fn flush(&mut self) -> io::Result<bool> {
        let progress = crate::net::write_from(&mut self.stream, &self.pending, &mut self.sent)?;
        if self.sent == self.pending.len() && !self.pending.is_empty() {
            self.sent = 0;
            if self.pending.capacity() > 16 * 1024 {
                self.pending = Vec::new(); // give the memory back once a burst is over
            } else {
                self.pending.clear();
            }
        }
        Ok(progress)
    }

    /// Frames `data` (just read) and queues the replies of every whole request in it.
    fn serve(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let service = &*self.service;
        let pending = &mut self.pending;
        self.requests
            .feed(service, data, |request| service.call(request, pending))?;
        let owed = self.pending.len() - self.sent;
        self.stats.max_buffered.fetch_max(owed, Ordering::Relaxed);
        Ok(())
    }

    fn read_once(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let room = self.cap.saturating_sub(self.owed()).min(SCRATCH_LEN);
        if self.read_closed || room == 0 {
            return Ok(false);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let buf = &mut scratch[..room];
            match self.stream.read(buf) {
                Ok(0) => {
                    self.read_closed = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.stats.bytes.add(n as u64);
                    if let Some((after, id)) = self.idle {
                        cx.reset_timer(id, after);
                    }
                    self.serve(&buf[..n])?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
                Err(e) => Err(e),
            }
        })
    }

    fn pump(&mut self, cx: &mut Context<'_>) -> io::Result<Step> {
        loop {
            let wrote = self.flush()?;
            let read = self.read_once(cx)?;
            if !wrote && !read {
                break;
            }
        }
        if self.read_closed && self.owed() == 0 {
            // Everything asked has been answered: finish with an orderly close of our side.
            // A partial request left at the end of stream gets no reply (there is none).
            let _ = self.stream.shutdown(Shutdown::Write);
            return Ok(Step::Done);
        }
        Ok(Step::Continue)
    }

    /// Stops serving and closes lingering (bounded by `linger_after`).
    fn start_linger(&mut self, cx: &mut Context<'_>) {
        if self.linger.is_some() {
            return;
        }
        let idle = self.idle.take().map(|(_, id)| id);
        self.linger = Some(Closing::start(cx, self.linger_after, idle));
        self.run(cx);
    }

    fn run(&mut self, cx: &mut Context<'_>) {
        if let Some(closing) = &mut self.linger {
            return closing.run(&mut self.stream, &self.pending, &mut self.sent, cx);
        }
        match self.pump(cx) {
            Ok(Step::Continue) => {}
            Ok(Step::Done) => cx.close(),
            Err(e) => {
                // The socket may still be healthy (a protocol error): close lingering; on a
                // broken one the linger's first step fails and closes at once.
                tracing::debug!(peer = %self.peer, error = %e, "service: connection error");
                self.stats.errors.incr();
                self.start_linger(cx);
            }
        }
    }
}

impl<S: Service> EventHandler for ServiceConn<S> {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        if let Some(after) = self.idle_after {
            self.idle = Some((after, cx.set_timer(after)));
        }
        self.service.opened(&self.peer);
        Ok(())
    }

    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>) {
        if readiness.error && !readiness.readable {
            self.stats.errors.incr();
            cx.close();
            return;
        }
        self.run(cx);
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        if self.linger.as_ref().is_some_and(|c| c.is_timer(timer)) {
            cx.close(); // the peer did not end its stream in time
        } else if self.idle.is_some_and(|(_, id)| id == timer) {
            tracing::debug!(peer = %self.peer, "service: idle timeout");
            self.stats.idle_closed.incr();
            self.start_linger(cx);
        }
    }

    /// Serve on: the connection closes itself once its peer half-closed and got every reply
    /// (or is forced at the deadline).
    fn drain(&mut self, cx: &mut Context<'_>) {
        self.run(cx);
    }

    fn force(&mut self, cx: &mut Context<'_>) {
        self.forced = true;
        self.start_linger(cx);
    }

    fn close(&mut self, reason: &CloseReason, _: &mut Context<'_>) {
        self.service.closed(&self.peer);
        self.stats
            .count_close(self.forced || matches!(reason, CloseReason::Shutdown));
    }
}

/// Makes a [`ServiceConn`] per accepted connection, all sharing one service.
#[derive(Debug)]
pub struct ServiceConnFactory<S> {
    service: Arc<S>,
    config: ConnConfig,
    stats: Arc<ConnStats>,
}

impl<S> Clone for ServiceConnFactory<S> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<S: Service> ServiceConnFactory<S> {
    /// A factory serving `service` with these settings, counting into `stats`.
    pub fn new(service: Arc<S>, config: ConnConfig, stats: Arc<ConnStats>) -> Self {
        Self {
            service,
            config,
            stats,
        }
    }
}

impl<S: Service> ServiceFactory for ServiceConnFactory<S> {
    type Handler = ServiceConn<S>;

    fn make(&mut self, stream: Stream, peer: Peer, guard: ConnGuard) -> ServiceConn<S> {
        ServiceConn {
            service: Arc::clone(&self.service),
            stream,
            peer,
            requests: Requests::new(),
            pending: Vec::new(),
            sent: 0,
            cap: self.config.buffer.max(1),
            read_closed: false,
            forced: false,
            linger: None,
            linger_after: self.config.linger,
            idle: None,
            idle_after: self.config.idle_timeout,
            stats: Arc::clone(&self.stats),
            _guard: guard,
        }
    }
}

/// Echo: every byte read is the reply, in order. Each read is one request (there is no
/// framing to wait for).
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl Service for EchoService {
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        Ok(Some(input.len()))
    }

    fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(request);
    }
}
