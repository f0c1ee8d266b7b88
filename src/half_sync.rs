//! Half-Sync/Half-Async: an event loop does the I/O, a thread pool does the work.
//!
//! The asynchronous half is a reactor: a [`HalfSyncConn`] reads what a connection sends,
//! frames it into requests with the [`Service`]'s cheap `frame`, and queues the whole
//! requests of each read, as one job, to a [`ThreadPool`] (the queueing layer: bounded, with a
//! rejection policy so the loop never blocks). The synchronous half is the pool's workers,
//! which run the service's `call`, which may block (a database call, a file read, a CPU-heavy
//! parse). The replies come back to the connection's loop through its [`HandlerWaker`], and
//! the loop writes them.
//!
//! # Algorithm and invariants
//! - Requests carry a sequence number; replies land in a per-connection reorder map and are
//!   written strictly in sequence order, so the byte stream a client gets back is the one a
//!   single-threaded server would send, however the workers interleave.
//! - Bounded per connection: at most `max_in_flight` jobs queued or running, a partial
//!   request of at most the service's `max_request` bytes, and at most
//!   `buffer` bytes read but not yet written back (in flight plus owed). At either bound the
//!   connection stops reading, and the peer's TCP window closes: backpressure, not memory.
//! - A full pool queue hands the request back ([`WhenFull::Reject`]); the connection keeps it
//!   and retries after a short timer instead of blocking the loop.
//! - A worker's reply is stored, then the waker fires; the loop lowers the waker's flag before
//!   the handler reads the map, so no reply is stranded (the mailbox's flagged posts, `reactor/mailbox.rs`).
//!
//! [`WhenFull::Reject`]: crate::pool::WhenFull::Reject

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::Shutdown;

use std::time::Duration;

use crate::reactor::Interest;

use crate::act::Outcome;
use crate::error::{Refused, RunError};
use crate::net::{Closing, ConnGuard, ConnStats, Peer, Requests, Service, ServiceFactory, Stream};
use crate::pool::ThreadPool;
use crate::reactor::{CloseReason, Context, EventHandler, HandlerWaker, Readiness, TimerId};
use crate::sync::{Arc, Mutex};

/// Settings of a half-sync connection.
#[derive(Debug, Clone)]
pub struct HalfSyncConfig {
    /// Most bytes read but not yet written back (in flight plus owed), at least 1.
    pub buffer: usize,
    /// Most jobs (the whole requests of one read each) queued or running per connection, at
    /// least 1.
    pub max_in_flight: usize,
    /// Most bytes the loop reads in one go.
    pub chunk: usize,
    /// Close a connection that sent nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a lingering close (after an idle timeout, or when a drain's grace ran out)
    /// waits for the peer's end of stream, at most.
    pub linger: Duration,
}

impl Default for HalfSyncConfig {
    fn default() -> Self {
        Self {
            buffer: 64 * 1024,
            max_in_flight: 4,
            chunk: 16 * 1024,
            idle_timeout: None,
            linger: Duration::from_secs(2),
        }
    }
}

const RETRY_FULL: Duration = Duration::from_millis(1);

type Reply = Outcome<Vec<u8>, RunError>;

/// A job as the pool runs it: the service calls for the requests of one read, boxed so a
/// refused one can be kept and queued again as it is.
type Request = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// Replies that complete in any order on the pool's workers, taken by the connection's loop in
/// request order: the reorder buffer between the two halves. Bounded by the connection's
/// `max_in_flight` (a request is queued only below it).
pub struct Replies<T> {
    map: Mutex<BTreeMap<u64, T>>,
}

impl<T> Default for Replies<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Replies<T> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self {
            map: Mutex::new(BTreeMap::new()),
        }
    }

    /// Worker side: the reply to request `seq`.
    pub fn put(&self, seq: u64, reply: T) {
        self.map.lock().insert(seq, reply);
    }

    /// Loop side: the reply to request `*next` if it has arrived (then `*next` moves on).
    /// Called until `None`, it takes the arrived replies in order and stops at the first gap.
    pub fn take_next(&self, next: &mut u64) -> Option<T> {
        let reply = self.map.lock().remove(next)?;
        *next += 1;
        Some(reply)
    }
}

/// The asynchronous half of one connection. See the [module docs](self).
pub struct HalfSyncConn<S> {
    stream: Stream,
    requests: Requests,
    peer: Peer,
    service: Arc<S>,
    pool: Arc<ThreadPool>,
    config: HalfSyncConfig,
    /// Each reply with the bytes of its requests (which stop counting as in flight then).
    replies: Arc<Replies<(usize, Reply)>>,
    waker: Option<HandlerWaker>,
    /// A request the pool refused (queue full), to retry: sequence number, length, job.
    refused: Option<(u64, usize, Request)>,
    retry: Option<TimerId>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    in_flight_bytes: usize,
    out: Vec<u8>,
    sent: usize,
    read_closed: bool,
    /// The peer sent malformed input: answer what came before it, then close lingering.
    broken: Option<crate::net::ProtocolError>,
    /// Told the drain's grace ran out.
    forced: bool,
    /// Closing lingering (grace ran out, or idle), until its timer.
    linger: Option<Closing>,
    idle: Option<(Duration, TimerId)>,
    stats: Arc<ConnStats>,
    _guard: ConnGuard,
}

impl<S: Service> HalfSyncConn<S> {
    fn owed(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Queues request `seq` (`len` bytes) to the pool; keeps it for a retry if the queue is
    /// full.
    fn dispatch(
        &mut self,
        seq: u64,
        len: usize,
        job: Request,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        let Some(waker) = self.waker.clone() else {
            return Err(io::Error::other("half-sync connection used before open"));
        };
        match self.pool.submit(job) {
            Ok(token) => {
                let replies = Arc::clone(&self.replies);
                token.on_complete(move |outcome| {
                    replies.put(seq, (len, outcome));
                    waker.wake();
                });
                self.in_flight += 1;
                self.in_flight_bytes += len;
                Ok(())
            }
            Err(Refused::Full(job)) => {
                self.refused = Some((seq, len, job));
                if self.retry.is_none() {
                    self.retry = Some(cx.set_timer(RETRY_FULL));
                }
                Ok(())
            }
            Err(refused) => Err(io::Error::other(refused.map(drop))),
        }
    }

    /// Moves replies that are next in sequence into the output buffer.
    fn collect(&mut self) -> io::Result<()> {
        while let Some((len, reply)) = self.replies.take_next(&mut self.next_write) {
            self.in_flight -= 1;
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(len);
            match reply {
                Outcome::Completed(Ok(data)) | Outcome::CancelledAfterEffect(Ok(data)) => {
                    self.out.extend_from_slice(&data);
                }
                Outcome::Completed(Err(e)) | Outcome::CancelledAfterEffect(Err(e)) => {
                    return Err(io::Error::other(e));
                }
                Outcome::Cancelled(()) | Outcome::Abandoned => {
                    return Err(io::Error::other("request cancelled by the worker pool"));
                }
            }
        }
        self.stats.max_buffered.fetch_max(
            self.owed() + self.in_flight_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    fn flush(&mut self) -> io::Result<bool> {
        let progress = crate::net::write_from(&mut self.stream, &self.out, &mut self.sent)?;
        if self.sent == self.out.len() {
            self.sent = 0;
            self.out.clear();
        }
        Ok(progress)
    }

    /// Reads one request if the bounds allow; `true` if it made progress.
    fn read_once(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let used = self.owed() + self.in_flight_bytes;
        let room = self
            .config
            .buffer
            .saturating_sub(used)
            .min(self.config.chunk);
        if self.read_closed
            || self.broken.is_some()
            || self.refused.is_some()
            || self.in_flight >= self.config.max_in_flight
            || room == 0
        {
            return Ok(false);
        }
        let mut data = vec![0; room];
        match self.stream.read(&mut data) {
            Ok(0) => {
                self.read_closed = true;
                Ok(true)
            }
            Ok(n) => {
                self.stats.bytes.add(n as u64);
                if let Some((after, id)) = self.idle {
                    cx.reset_timer(id, after);
                }
                // Frame on the loop (cheap); the whole requests of this read go to the pool as
                // one job, their ends marked.
                let mut batch = Vec::new();
                let mut ends = Vec::new();
                let framed = self.requests.feed(&*self.service, &data[..n], |request| {
                    batch.extend_from_slice(request);
                    ends.push(batch.len());
                });
                if let Err(e) = framed {
                    // Malformed input: read no more; the requests before it are still
                    // answered, then the connection closes lingering (`pump`).
                    self.broken = Some(e);
                }
                if ends.is_empty() {
                    return Ok(true); // a partial request, kept
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let len = batch.len();
                let service = Arc::clone(&self.service);
                let job = move || {
                    let mut reply = Vec::new();
                    let mut start = 0;
                    for end in ends {
                        service.call(&batch[start..end], &mut reply);
                        start = end;
                    }
                    reply
                };
                self.dispatch(seq, len, Box::new(job), cx)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn pump(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        loop {
            self.collect()?;
            let wrote = self.flush()?;
            let read = self.read_once(cx)?;
            if !wrote && !read {
                break;
            }
        }
        let quiet = self.in_flight == 0 && self.refused.is_none() && self.owed() == 0;
        if quiet && let Some(e) = self.broken.take() {
            return Err(e.into());
        }
        if self.read_closed && quiet {
            let _ = self.stream.shutdown(Shutdown::Write);
            return Ok(true);
        }
        Ok(false)
    }

    /// Stops serving and closes lingering: what is already collected still goes out, later
    /// replies are dropped, input is discarded until the peer's end of stream or the linger
    /// time.
    fn start_linger(&mut self, cx: &mut Context<'_>) {
        if self.linger.is_some() {
            return;
        }
        let idle = self.idle.take().map(|(_, id)| id);
        self.linger = Some(Closing::start(cx, self.config.linger, idle));
        self.run(cx);
    }

    fn run(&mut self, cx: &mut Context<'_>) {
        if let Some(closing) = &mut self.linger {
            return closing.run(&mut self.stream, &self.out, &mut self.sent, cx);
        }
        match self.pump(cx) {
            Ok(false) => {}
            Ok(true) => cx.close(),
            Err(e) => {
                // The socket may still be healthy (a service error): close lingering; on a
                // broken one the linger's first step fails and closes at once.
                tracing::debug!(peer = %self.peer, error = %e, "half-sync: connection error");
                self.stats.errors.incr();
                self.start_linger(cx);
            }
        }
    }
}

impl<S: Service> EventHandler for HalfSyncConn<S> {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.stream, Interest::READABLE | Interest::WRITABLE)?;
        self.waker = Some(cx.waker());
        self.service.opened(&self.peer);
        if let Some(after) = self.config.idle_timeout {
            self.idle = Some((after, cx.set_timer(after)));
        }
        Ok(())
    }

    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>) {
        if readiness.error && !readiness.readable && !readiness.woken {
            self.stats.errors.incr();
            cx.close();
            return;
        }
        self.run(cx);
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        if self.linger.as_ref().is_some_and(|c| c.is_timer(timer)) {
            cx.close(); // the peer did not end its stream in time
        } else if self.retry == Some(timer) {
            self.retry = None;
            if let Some((seq, len, job)) = self.refused.take()
                && let Err(e) = self.dispatch(seq, len, job, cx)
            {
                tracing::debug!(peer = %self.peer, error = %e, "half-sync: connection error");
                self.stats.errors.incr();
                cx.close();
                return;
            }
            self.run(cx);
        } else if self.idle.is_some_and(|(_, id)| id == timer) && self.in_flight == 0 {
            tracing::debug!(peer = %self.peer, "half-sync: idle timeout");
            self.stats.idle_closed.incr();
            self.start_linger(cx);
        } else if let Some((after, id)) = self.idle
            && id == timer
        {
            cx.reset_timer(id, after); // busy in the pool, not idle
        }
    }

    /// Serve on: the connection closes itself once its peer half-closed and got every reply.
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

/// Makes a [`HalfSyncConn`] per accepted connection, all sharing one pool and one service.
pub struct HalfSyncFactory<S> {
    service: Arc<S>,
    pool: Arc<ThreadPool>,
    config: HalfSyncConfig,
    stats: Arc<ConnStats>,
}

impl<S> HalfSyncFactory<S> {
    /// A factory over `pool` and `service`, counting into `stats`.
    pub fn new(
        service: S,
        pool: Arc<ThreadPool>,
        config: HalfSyncConfig,
        stats: Arc<ConnStats>,
    ) -> Self {
        Self::from_arc(Arc::new(service), pool, config, stats)
    }

    /// [`new`](Self::new) for a service already shared.
    pub fn from_arc(
        service: Arc<S>,
        pool: Arc<ThreadPool>,
        config: HalfSyncConfig,
        stats: Arc<ConnStats>,
    ) -> Self {
        Self {
            service,
            pool,
            config,
            stats,
        }
    }
}

impl<S: Service> ServiceFactory for HalfSyncFactory<S> {
    type Handler = HalfSyncConn<S>;

    fn make(&mut self, stream: Stream, peer: Peer, guard: ConnGuard) -> HalfSyncConn<S> {
        let mut config = self.config.clone();
        config.buffer = config.buffer.max(1);
        config.max_in_flight = config.max_in_flight.max(1);
        config.chunk = config.chunk.max(1);
        HalfSyncConn {
            stream,
            requests: Requests::new(),
            peer,
            service: Arc::clone(&self.service),
            pool: Arc::clone(&self.pool),
            config,
            replies: Arc::new(Replies::new()),
            waker: None,
            refused: None,
            retry: None,
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            out: Vec::new(),
            sent: 0,
            read_closed: false,
            broken: None,
            forced: false,
            linger: None,
            idle: None,
            stats: Arc::clone(&self.stats),
            _guard: guard,
        }
    }
}
