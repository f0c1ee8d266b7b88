//! The echo service on a reactor: the handler that the `reactor`, `reactor-pool` and
//! `leader-followers` models run for each connection.
//!
//! [`Echo`] writes back every byte it reads, in order, with bounded memory:
//! - Reads land in a per-thread 64 KiB scratch buffer (Thread-Specific Storage) and are written
//!   straight back; only what the peer will not take yet is copied into the connection's own
//!   buffer, which never holds more than the configured bound and is freed once drained. An
//!   idle connection owns no buffer at all.
//! - Backpressure: while its buffer is full the handler stops reading, so a peer that never
//!   reads fills its own kernel buffers and then blocks, instead of growing server memory.
//! - Half-close: when the peer shuts down its write side, the handler finishes echoing, then
//!   shuts down its own write side and closes.
//! - Idle timeout: re-armed on every read (an O(1) lazy re-arm in the timer queue).
//! - Drain (graceful shutdown): serves on until the peer half-closes and every byte is echoed,
//!   then closes in order. When the grace runs out ([`EventHandler::force`]) or the connection
//!   idles out, it closes lingering ([`LingerState`]): what it owes still goes out, its write
//!   side is shut down, and input is discarded until the peer's end of stream or the linger
//!   time, so the close never turns into a reset that destroys replies on their way.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use crate::half_sync::SyncService;
use crate::net::{Closing, ConnGuard, ConnStats, Peer, ServiceFactory, Stream};
use crate::reactor::{CloseReason, Context, EventHandler, Interest, Readiness, TimerId};
use crate::sync::Arc;
use crate::sync::atomic::Ordering;

const SCRATCH_LEN: usize = 64 * 1024;

crate::sync::thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Settings of the echo service.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Most bytes a connection buffers for a slow reader before it stops reading (at least 1).
    pub buffer: usize,
    /// Close a connection that sent nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a lingering close (after an idle timeout, or when a drain's grace ran out)
    /// waits for the peer's end of stream, at most.
    pub linger: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            buffer: 64 * 1024,
            idle_timeout: None,
            linger: Duration::from_secs(2),
        }
    }
}

/// The echo service handler for one connection. See [`posa::server`](crate::server).
pub struct Echo {
    stream: Stream,
    peer: Peer,
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

impl Echo {
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

    /// Writes `data` (just read) straight back; keeps what the peer will not take.
    fn echo(&mut self, data: &[u8]) -> io::Result<()> {
        let mut off = 0;
        if self.owed() == 0 {
            while off < data.len() {
                match self.stream.write(&data[off..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if off < data.len() {
            self.pending.extend_from_slice(&data[off..]);
            self.stats
                .max_buffered
                .fetch_max(self.owed(), Ordering::Relaxed);
        }
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
                    self.echo(&buf[..n])?;
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
            // Everything read has been echoed: finish with an orderly close of our side.
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
                // The socket may still be healthy (a service error): close lingering; on a
                // broken one the linger's first step fails and closes at once.
                tracing::debug!(peer = %self.peer, error = %e, "echo: connection error");
                self.stats.errors.incr();
                self.start_linger(cx);
            }
        }
    }
}

impl EventHandler for Echo {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        if let Some(after) = self.idle_after {
            self.idle = Some((after, cx.set_timer(after)));
        }
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
            tracing::debug!(peer = %self.peer, "echo: idle timeout");
            self.stats.idle_closed.incr();
            self.start_linger(cx);
        }
    }

    /// Serve on: the connection closes itself once its peer half-closed and got every byte
    /// back (or is forced at the deadline).
    fn drain(&mut self, cx: &mut Context<'_>) {
        self.run(cx);
    }

    fn force(&mut self, cx: &mut Context<'_>) {
        self.forced = true;
        self.start_linger(cx);
    }

    fn close(&mut self, reason: &CloseReason, _: &mut Context<'_>) {
        self.stats
            .count_close(self.forced || matches!(reason, CloseReason::Shutdown));
    }
}

/// Makes an [`Echo`] per connection.
#[derive(Debug, Clone)]
pub struct EchoFactory {
    config: EchoConfig,
    stats: Arc<ConnStats>,
}

impl EchoFactory {
    /// A factory with these settings, counting into `stats`.
    pub fn new(config: EchoConfig, stats: Arc<ConnStats>) -> Self {
        Self { config, stats }
    }
}

impl ServiceFactory for EchoFactory {
    type Handler = Echo;

    fn make(&mut self, stream: Stream, peer: Peer, guard: ConnGuard) -> Echo {
        Echo {
            stream,
            peer,
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

/// Echo as a synchronous service, for the half-sync model: the reply is the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl SyncService for EchoService {
    fn call(&self, request: Vec<u8>) -> Vec<u8> {
        request
    }
}
