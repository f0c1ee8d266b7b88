//! The Acceptor: accept, make a service handler, activate it; bounded and exhaustion-proof.
//!
//! # Algorithm
//! On readable, accept until `WouldBlock`, at most `budget` connections per upcall (then
//! `call_again`, so one busy listener cannot starve the loop's other handlers). For each: ask
//! the interceptors (`Point::Accept`), take a place under the [`ConnLimit`], make the service
//! handler through the [`ServiceFactory`], and activate it on this loop or the next one
//! round-robin ([`Placement`]).
//!
//! # Invariants
//! - Bounded: a connection over the limit, or refused by an interceptor, is accepted and
//!   closed at once (counted), never queued; the backlog is the kernel's.
//! - Descriptor exhaustion (EMFILE/ENFILE) does not spin on a readable listener (tokio#3529):
//!   the acceptor keeps one reserve descriptor, frees it to accept and close the backlog's
//!   head, re-takes it, pauses accepting for a while, logs once per episode, and keeps serving
//!   open connections.
//! - A per-connection error (the peer reset before we accepted) skips that connection only.
//! - Every accepted connection holds a [`ConnGuard`] until its handler drops, so the count of
//!   open connections is exact across all the loops of a server.

use std::fs::File;
use std::io;
use std::time::Duration;

use mio::Interest;

use super::{ConnGuard, ConnLimit, Listener, Peer, Stream};
use crate::reactor::{Context, EventHandler, ReactorHandle, Readiness, TimerId};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Makes the service handler for each accepted connection.
pub trait ServiceFactory: Send + 'static {
    /// The handler type it makes.
    type Handler: EventHandler;
    /// Makes the handler for `stream`; `guard` holds the connection's place under the limit and
    /// must live as long as the connection.
    fn make(&mut self, stream: Stream, peer: Peer, guard: ConnGuard) -> Self::Handler;
}

/// Where accepted connections run.
#[derive(Debug, Clone)]
pub enum Placement {
    /// On the acceptor's own reactor.
    Local,
    /// Round-robin over these reactors (a reactor-per-thread pool); `own` is the index of the
    /// acceptor's reactor in the list, whose connections are added locally.
    RoundRobin {
        /// The pool's reactors.
        reactors: Vec<ReactorHandle>,
        /// Which of them runs the acceptor.
        own: usize,
    },
}

/// What an acceptor counts (shared, readable from any thread).
#[derive(Debug, Default)]
pub struct AcceptStats {
    /// Connections accepted and activated.
    pub accepted: AtomicU64,
    /// Connections refused because the connection limit was reached.
    pub rejected_limit: AtomicU64,
    /// File-descriptor exhaustion episodes (EMFILE/ENFILE), each logged once.
    pub fd_exhaustion_episodes: AtomicU64,
    /// Connections accepted and closed at once to drain the backlog during exhaustion.
    pub shed_on_exhaustion: AtomicU64,
    /// Accept calls that failed with EMFILE/ENFILE. A spinning acceptor would make this grow
    /// by millions a second; a pausing one by about one per pause.
    pub exhausted_accepts: AtomicU64,
    /// Connections an interceptor refused (rate limit, ...): accepted and closed at once.
    pub rejected_intercept: AtomicU64,
}

/// Accepts connections on a listener and activates a service handler for each.
///
/// - Accepts until `WouldBlock`, at most `budget` per dispatch (then asks to be called again),
///   so a connection storm cannot starve the reactor's other handlers.
/// - At the connection limit, a new connection is accepted and closed at once (the client sees
///   an orderly close, not a hang in the backlog) and counted.
/// - On EMFILE/ENFILE it does not spin (tokio#3529): it frees a reserve descriptor, accepts and
///   closes the connection at the head of the backlog, re-takes the reserve, pauses accepting
///   for `pause`, logs once per episode, and keeps serving existing connections.
/// - On drain (shutdown) it closes, which stops intake.
pub struct Acceptor<F> {
    listener: Listener,
    factory: F,
    placement: Placement,
    limit: ConnLimit,
    stats: Arc<AcceptStats>,
    reserve: Option<File>,
    paused: Option<TimerId>,
    in_episode: bool,
    next: usize,
    budget: usize,
    pause: Duration,
    chain: crate::intercept::Chain,
    /// Refused connections closing lingering, at most [`REFUSED_LINGERING`] at once.
    lingering: ConnLimit,
    linger: Duration,
}

/// Refused connections (limit, interceptors) that close lingering at once, at most; past that
/// a refused connection is closed at once.
pub const REFUSED_LINGERING: usize = 64;

impl<F: ServiceFactory> Acceptor<F> {
    /// An acceptor on `listener` making handlers with `factory`, capped by `limit`.
    pub fn new(listener: Listener, factory: F, limit: ConnLimit) -> Self {
        Self {
            listener,
            factory,
            placement: Placement::Local,
            limit,
            stats: Arc::new(AcceptStats::default()),
            reserve: None,
            paused: None,
            in_episode: false,
            next: 0,
            budget: 64,
            pause: Duration::from_millis(100),
            chain: crate::intercept::Chain::new(),
            lingering: ConnLimit::new(REFUSED_LINGERING),
            linger: Duration::from_secs(2),
        }
    }

    /// How long a refused connection lingers for its peer's end of stream (default 2 s; zero
    /// closes refused connections at once).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Closes a refused connection lingering (its request, if it sent one, then does not turn
    /// the close into a reset), while lingering slots are free; else at once.
    fn refuse(&self, stream: Stream, cx: &mut Context<'_>) {
        if self.linger.is_zero() {
            return drop(stream);
        }
        match self.lingering.try_acquire() {
            Some(slot) => {
                cx.spawn(super::Linger::new(stream, Vec::new(), self.linger).with_guard(slot))
            }
            None => drop(stream),
        }
    }

    /// Interceptors for every accepted connection ([`Point::Accept`](crate::intercept::Point)):
    /// a refused connection is closed at once and counted (`rejected_intercept`).
    pub fn interceptors(mut self, chain: crate::intercept::Chain) -> Self {
        self.chain = chain;
        self
    }

    /// `true` if the chain lets this connection in.
    fn admitted(&self, peer: &Peer) -> bool {
        use crate::intercept::{Dispatch, Ended, Point};
        if self.chain.is_empty() {
            return true;
        }
        let mut d = Dispatch::new(Point::Accept, self.stats.accepted.load(Ordering::Relaxed));
        if let Peer::Tcp(addr) = peer {
            d.peer = Some(*addr);
        }
        match self.chain.before(&d) {
            Ok(()) => {
                self.chain.after(&d, Ended::Ok, Duration::ZERO);
                true
            }
            Err(why) => {
                tracing::debug!(%peer, %why, "posa acceptor: connection refused by an interceptor");
                self.stats
                    .rejected_intercept
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Where to run accepted connections (default: [`Placement::Local`]).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Accepts per dispatch before yielding to other handlers (default 64).
    pub fn budget(mut self, budget: usize) -> Self {
        self.budget = budget.max(1);
        self
    }

    /// How long to stop accepting after descriptor exhaustion (default 100 ms).
    pub fn exhaustion_pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// The counters, shared.
    pub fn stats(&self) -> Arc<AcceptStats> {
        Arc::clone(&self.stats)
    }

    fn activate(&mut self, stream: Stream, peer: Peer, guard: ConnGuard, cx: &mut Context<'_>) {
        let handler = self.factory.make(stream, peer, guard);
        match &self.placement {
            Placement::Local => cx.spawn(handler),
            Placement::RoundRobin { reactors, own } => {
                let i = self.next % reactors.len().max(1);
                self.next = self.next.wrapping_add(1);
                if i == *own || reactors.is_empty() {
                    cx.spawn(handler);
                } else {
                    // Bounded mailbox: a full or stopping reactor hands the job back, and
                    // dropping it closes the connection (the guard frees its place).
                    drop(reactors[i].add(handler));
                }
            }
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn exhausted(&mut self, err: &io::Error, cx: &mut Context<'_>) {
        self.stats.exhausted_accepts.fetch_add(1, Ordering::Relaxed);
        if !self.in_episode {
            self.in_episode = true;
            self.stats
                .fd_exhaustion_episodes
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, pause = ?self.pause,
                "posa acceptor: out of file descriptors; shedding the backlog head and pausing");
        }
        // Free the reserve so one accept can succeed, and close that connection at once.
        self.reserve = None;
        if let Ok((stream, _)) = self.listener.accept() {
            drop(stream);
            self.stats
                .shed_on_exhaustion
                .fetch_add(1, Ordering::Relaxed);
        }
        self.reserve = File::open("/dev/null").ok();
        self.paused = Some(cx.set_timer(self.pause));
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Errors of one accepted connection that say nothing about the listener: skip and go on.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM))
}

impl<F: ServiceFactory> EventHandler for Acceptor<F> {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.reserve = Some(File::open("/dev/null")?);
        cx.register(&mut self.listener, Interest::READABLE)
    }

    fn ready(&mut self, readiness: Readiness, cx: &mut Context<'_>) {
        if self.paused.is_some() {
            return; // the pause timer resumes us
        }
        for _ in 0..self.budget {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.in_episode = false;
                    if !self.admitted(&peer) {
                        self.refuse(stream, cx);
                        continue;
                    }
                    match self.limit.try_acquire() {
                        Some(guard) => self.activate(stream, peer, guard, cx),
                        None => {
                            self.stats.rejected_limit.fetch_add(1, Ordering::Relaxed);
                            self.refuse(stream, cx);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_fd_exhaustion(&e) => {
                    self.exhausted(&e, cx);
                    return;
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Unknown listener trouble: do not spin on it; retry after a pause.
                    tracing::error!(error = %e, "posa acceptor: accept failed; pausing");
                    self.paused = Some(cx.set_timer(self.pause));
                    return;
                }
            }
        }
        cx.call_again(readiness); // budget spent: more may wait, and the edge is consumed
    }

    fn timeout(&mut self, timer: TimerId, cx: &mut Context<'_>) {
        if self.paused == Some(timer) {
            self.paused = None;
            cx.call_again(Readiness {
                readable: true,
                ..Readiness::default()
            });
        }
    }
}
