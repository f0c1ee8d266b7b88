//! The Connector: establish an outgoing connection asynchronously, with a per-attempt timeout
//! and bounded retries, and hand the connected stream back through an `act` token.
//!
//! # Algorithm
//! A `Connect` handler on the reactor starts a non-blocking connect and registers for
//! writable; writable (or an error) completes the attempt: `SO_ERROR` and `peer_addr` say
//! whether it connected. A failed attempt is retried, if the error is worth retrying and
//! attempts are left, after a full-jitter exponential backoff (AWS's "exponential backoff and
//! jitter"); each attempt has its own timeout timer.
//!
//! # Invariants
//! - Bounded: at most `attempts` attempts, each at most `timeout`, backoff capped.
//! - The token is answered exactly once: the stream, a typed [`ConnectError`] (attempts,
//!   timeout, shutdown, an interceptor's rejection), `Cancelled` if cancellation came before a
//!   connection existed, or `CancelledAfterEffect` with the stream if it came after: a
//!   connected stream is handed over, never leaked.
//! - Interceptors see every attempt (`Point::Connect`): a circuit breaker counts each failure
//!   and can refuse the next attempt.

use std::fmt;
use std::io;
use std::time::Duration;

use mio::Interest;

use super::{Addr, Stream};
use crate::act::{self, Completer, Token};
use crate::reactor::{
    CloseReason, Context, EventHandler, HandlerId, ReactorHandle, Readiness, TimerId,
};

/// How hard to try.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Backoff before retry `n` is random in `[0, min(max_backoff, base_backoff * 2^n)]`
    /// ("full jitter"), so many clients retrying do not move in lockstep.
    pub base_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
    /// Interceptors around each attempt ([`Point::Connect`](crate::intercept::Point)): a
    /// circuit breaker here fails fast while the peer is down.
    pub interceptors: crate::intercept::Chain,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempts: 3,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            interceptors: crate::intercept::Chain::new(),
        }
    }
}

/// Why a connection could not be established.
#[derive(Debug)]
pub enum ConnectError {
    /// Every attempt failed; the last error (an error not worth retrying ends at once).
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: io::Error,
    },
    /// The last attempt ran out of time.
    TimedOut {
        /// Attempts made.
        attempts: u32,
    },
    /// The reactor shut down (or could not take the request) before a connection was made.
    Shutdown,
    /// An interceptor refused the attempt (an open circuit breaker, a rate limit).
    Rejected {
        /// Attempts made before.
        attempts: u32,
        /// Who refused and why.
        rejection: crate::intercept::Rejection,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Failed { attempts, last } => {
                write!(f, "connect failed after {attempts} attempt(s): {last}")
            }
            ConnectError::TimedOut { attempts } => {
                write!(f, "connect timed out ({attempts} attempt(s))")
            }
            ConnectError::Shutdown => f.write_str("reactor shut down before the connect finished"),
            ConnectError::Rejected {
                attempts,
                rejection,
            } => {
                write!(
                    f,
                    "connect refused after {attempts} attempt(s): {rejection}"
                )
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Failed { last, .. } => Some(last),
            _ => None,
        }
    }
}

/// The token a connect returns: the stream, or why not; cancelling it aborts the attempt.
pub type ConnectToken = Token<Stream, ConnectError>;

/// Starts connecting to `addr` on the reactor behind `handle`, from any thread.
pub fn connect(handle: &ReactorHandle, addr: Addr, options: ConnectOptions) -> ConnectToken {
    let (completer, token) = act::pair();
    let handler = Connect::new(addr, options, completer, handle.clone());
    // If the reactor cannot take it, dropping the job drops the handler, whose completer then
    // reports Shutdown (see Drop).
    if let Err(e) = handle.post(move |r| {
        let _ = r.add_boxed(Box::new(handler));
    }) {
        drop(e.into_inner());
    }
    token
}

/// Starts connecting from inside a handler, on the same reactor.
pub fn connect_from(cx: &mut Context<'_>, addr: Addr, options: ConnectOptions) -> ConnectToken {
    let (completer, token) = act::pair();
    let handle = cx.handle().clone();
    cx.spawn(Connect::new(addr, options, completer, handle));
    token
}

/// A seed for one connector's backoff jitter: the wall clock's nanoseconds hashed with a fresh
/// `RandomState` (std seeds it randomly per thread and moves it on with every new one), so
/// connectors started in the same instant (a burst of clients after an outage) still draw
/// different backoffs. Never zero (xorshift needs that).
pub(crate) fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.finish() | 1
}

/// The wait before retry number `attempts`: random in `[0, min(max, base * 2^attempts)]` (full
/// jitter), from the xorshift state `rng` (full jitter does not need a cryptographic
/// generator). Shared by every connector, on either proactor backend.
pub(crate) fn backoff_delay(options: &ConnectOptions, attempts: u32, rng: &mut u64) -> Duration {
    let exp = options
        .base_backoff
        .saturating_mul(1u32 << attempts.min(20))
        .min(options.max_backoff);
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(if nanos == 0 { 0 } else { *rng % (nanos + 1) })
}

/// Errors worth another attempt.
pub(crate) fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

enum Wait {
    /// A connect is in flight; the timer bounds it.
    Connecting(TimerId),
    /// Backing off before the next attempt.
    Backoff(TimerId),
}

struct Connect {
    addr: Addr,
    options: ConnectOptions,
    completer: Option<Completer<Stream, ConnectError>>,
    handle: ReactorHandle,
    stream: Option<Stream>,
    wait: Option<Wait>,
    attempts: u32,
    rng: u64,
    /// The attempt the interceptors are watching, and when it started.
    watched: Option<(crate::intercept::Dispatch, std::time::Instant)>,
}

impl Connect {
    fn new(
        addr: Addr,
        options: ConnectOptions,
        completer: Completer<Stream, ConnectError>,
        handle: ReactorHandle,
    ) -> Self {
        let seed = jitter_seed();
        Self {
            addr,
            options,
            completer: Some(completer),
            handle,
            stream: None,
            wait: None,
            attempts: 0,
            rng: seed,
            watched: None,
        }
    }

    /// States the result. If cancellation was requested meanwhile, the token sees
    /// `CancelledAfterEffect` with it: a stream that did connect is handed over, not leaked.
    fn finish(&mut self, result: Result<Stream, ConnectError>, cx: &mut Context<'_>) {
        if let Some(c) = self.completer.take() {
            c.complete(result);
        }
        cx.close();
    }

    /// Gives up before any connection exists: the token sees `Cancelled`.
    fn abort(&mut self, cx: &mut Context<'_>) {
        self.drop_stream(cx);
        if let Some(c) = self.completer.take() {
            c.cancel(());
        }
        cx.close();
    }

    /// Tells the interceptors how the watched attempt ended.
    fn observed(&mut self, outcome: crate::intercept::Ended) {
        if let Some((d, started)) = self.watched.take() {
            self.options
                .interceptors
                .after(&d, outcome, started.elapsed());
        }
    }

    fn attempt(&mut self, cx: &mut Context<'_>) {
        if !self.options.interceptors.is_empty() {
            use crate::intercept::{Dispatch, Point};
            let mut d = Dispatch::new(Point::Connect, u64::from(self.attempts));
            if let Addr::Tcp(a) = &self.addr {
                d.peer = Some(*a);
            }
            if let Err(rejection) = self.options.interceptors.before(&d) {
                let attempts = self.attempts;
                self.finish(
                    Err(ConnectError::Rejected {
                        attempts,
                        rejection,
                    }),
                    cx,
                );
                return;
            }
            self.watched = Some((d, std::time::Instant::now()));
        }
        self.attempts += 1;
        let started = match &self.addr {
            Addr::Tcp(a) => mio::net::TcpStream::connect(*a).map(Stream::Tcp),
            Addr::Unix(p) => mio::net::UnixStream::connect(p).map(Stream::Unix),
        };
        match started.and_then(|mut s| cx.register(&mut s, Interest::WRITABLE).map(|()| s)) {
            Ok(s) => {
                self.stream = Some(s);
                self.wait = Some(Wait::Connecting(cx.set_timer(self.options.timeout)));
            }
            Err(e) => self.failed(e, cx),
        }
    }

    fn failed(&mut self, e: io::Error, cx: &mut Context<'_>) {
        self.observed(crate::intercept::Ended::Error);
        self.drop_stream(cx);
        if self.attempts >= self.options.attempts.max(1) || !retryable(&e) {
            let attempts = self.attempts;
            self.finish(Err(ConnectError::Failed { attempts, last: e }), cx);
            return;
        }
        self.backoff(cx);
    }

    fn backoff(&mut self, cx: &mut Context<'_>) {
        let delay = backoff_delay(&self.options, self.attempts, &mut self.rng);
        self.wait = Some(Wait::Backoff(cx.set_timer(delay)));
    }

    fn drop_stream(&mut self, cx: &mut Context<'_>) {
        if let Some(mut s) = self.stream.take() {
            let _ = cx.deregister(&mut s);
        }
        if let Some(Wait::Connecting(t) | Wait::Backoff(t)) = self.wait.take() {
            cx.cancel_timer(t);
        }
    }
}

impl EventHandler for Connect {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(c) = &self.completer {
            // Cancelling the token closes this handler promptly, on the reactor's thread.
            let (handle, id): (ReactorHandle, HandlerId) = (self.handle.clone(), cx.id());
            c.on_cancel(move || {
                let _ = handle.post(move |r| {
                    r.close(id);
                });
            });
        }
        self.attempt(cx);
        Ok(())
    }

    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        if !(readiness.writable || readiness.error || readiness.write_closed) {
            return;
        }
        let pending = match stream {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        };
        let connected = match stream {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match (pending, connected) {
            (Ok(None), Ok(())) => {
                if let Some(Wait::Connecting(t)) = self.wait.take() {
                    cx.cancel_timer(t);
                }
                let Some(mut s) = self.stream.take() else {
                    return;
                };
                // Hand the stream over unregistered: its new owner registers it its own way.
                let _ = cx.deregister(&mut s);
                self.observed(crate::intercept::Ended::Ok);
                self.finish(Ok(s), cx);
            }
            (Ok(Some(e)), _) | (Err(e), _) => self.failed(e, cx),
            (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {} // not yet
            (Ok(None), Err(e)) => self.failed(e, cx),
        }
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        match self.wait {
            Some(Wait::Connecting(t)) if t == timer => {
                self.wait = None;
                self.observed(crate::intercept::Ended::Error);
                self.drop_stream(cx);
                if self.attempts >= self.options.attempts.max(1) {
                    let attempts = self.attempts;
                    self.finish(Err(ConnectError::TimedOut { attempts }), cx);
                } else {
                    self.backoff(cx);
                }
            }
            Some(Wait::Backoff(t)) if t == timer => {
                self.wait = None;
                if self.completer.as_ref().is_some_and(Completer::is_cancelled) {
                    self.abort(cx);
                } else {
                    self.attempt(cx);
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, _: &CloseReason, cx: &mut Context<'_>) {
        self.observed(crate::intercept::Ended::Rejected); // cut short: neither ok nor failed
        self.drop_stream(cx);
        if let Some(c) = self.completer.take() {
            if c.is_cancelled() {
                c.cancel(()); // closed by the cancel hook (or cancelled meanwhile)
            } else {
                c.complete(Err(ConnectError::Shutdown));
            }
        }
    }
}

impl Drop for Connect {
    /// A request the reactor never took (full or stopped mailbox) still gets an answer.
    fn drop(&mut self) {
        if let Some(c) = self.completer.take() {
            c.complete(Err(ConnectError::Shutdown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connectors started together draw different backoffs (the io_uring backend's seed was
    /// a constant once: every retry of a burst of clients moved in lockstep).
    #[test]
    fn connectors_started_together_draw_different_backoffs() {
        let options = ConnectOptions::default();
        let draws: std::collections::HashSet<Vec<Duration>> = (0..8)
            .map(|_| {
                let mut rng = jitter_seed();
                assert_ne!(rng, 0, "xorshift needs a non-zero state");
                (1..4)
                    .map(|n| backoff_delay(&options, n, &mut rng))
                    .collect()
            })
            .collect();
        assert_eq!(draws.len(), 8, "two connectors drew the same backoffs");
    }
}
