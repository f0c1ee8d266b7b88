//! The echo service and server: what `posa echo-server` and `examples/echo_server.rs` run.
//!
//! # The service handler
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
//! - Drain (graceful shutdown): stops reading, flushes what it owes, then closes.
//!
//! # The server
//! [`Server::start`] binds, starts the reactors of the chosen [`Model`] on their threads, and
//! puts an [`Acceptor`](super::Acceptor) on the first one.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Interest;

use super::{
    AcceptStats, Acceptor, Addr, ConnGuard, ConnLimit, Listener, Peer, Placement, ServiceFactory,
    Stream,
};
use crate::clock::SystemClock;
use crate::reactor::{
    CloseReason, Context, EventHandler, LeaderFollowers, Reactor, ReactorHandle, Readiness,
    ShutdownReport, TimerId,
};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::tss::Counter;

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
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            buffer: 64 * 1024,
            idle_timeout: None,
        }
    }
}

/// What the echo service counts, across all connections and reactor threads. The per-event
/// counts are per-thread [`Counter`]s: a read on one reactor thread never contends with a read
/// on another (a shared atomic here would bounce one cache line between all of them).
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Bytes read (and so echoed or owed).
    pub bytes: Counter,
    /// The most bytes any connection held at once.
    pub max_buffered: AtomicUsize,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Connections closed because of an I/O error (resets included).
    pub errors: Counter,
    /// Connections closed.
    pub closed: Counter,
}

/// The echo service handler for one connection. See the [module docs](self).
pub struct Echo {
    stream: Stream,
    peer: Peer,
    pending: Vec<u8>,
    sent: usize,
    cap: usize,
    read_closed: bool,
    draining: bool,
    idle: Option<(Duration, TimerId)>,
    idle_after: Option<Duration>,
    stats: Arc<EchoStats>,
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
        if self.read_closed || self.draining || room == 0 {
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
        if (self.read_closed || self.draining) && self.owed() == 0 {
            // Everything read has been echoed: finish with an orderly close of our side.
            let _ = self.stream.shutdown(Shutdown::Write);
            return Ok(Step::Done);
        }
        Ok(Step::Continue)
    }

    fn run(&mut self, cx: &mut Context<'_>) {
        match self.pump(cx) {
            Ok(Step::Continue) => {}
            Ok(Step::Done) => cx.close(),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "echo: connection error");
                self.stats.errors.incr();
                cx.close();
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
        if self.idle.is_some_and(|(_, id)| id == timer) {
            tracing::debug!(peer = %self.peer, "echo: idle timeout");
            self.stats.idle_closed.incr();
            cx.close();
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) {
        self.draining = true;
        self.run(cx);
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        self.stats.closed.incr();
    }
}

/// Makes an [`Echo`] per connection.
#[derive(Debug, Clone)]
pub struct EchoFactory {
    config: EchoConfig,
    stats: Arc<EchoStats>,
}

impl EchoFactory {
    /// A factory with these settings, counting into `stats`.
    pub fn new(config: EchoConfig, stats: Arc<EchoStats>) -> Self {
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
            draining: false,
            idle: None,
            idle_after: self.config.idle_timeout,
            stats: Arc::clone(&self.stats),
            _guard: guard,
        }
    }
}

/// How the server spreads work over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// One reactor on one thread.
    Reactor,
    /// One reactor per thread; the acceptor hands connections out round-robin.
    ReactorPool,
    /// Threads take turns waiting on one shared demultiplexer (Leader/Followers).
    LeaderFollowers,
    /// One reactor does the I/O and queues each read to a pool of `threads` synchronous
    /// workers; replies come back through the reactor in order (Half-Sync/Half-Async).
    HalfSync,
    /// Proactor (emulated on `threads` reactors): the service initiates a read, on its
    /// completion a write, on that completion the next read.
    Proactor,
}

/// A model name that is not one of the known models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownModel(String);

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown model {:?}: expected reactor or reactor-pool",
            self.0
        )
    }
}

impl std::error::Error for UnknownModel {}

impl FromStr for Model {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reactor" => Ok(Model::Reactor),
            "reactor-pool" => Ok(Model::ReactorPool),
            "leader-followers" => Ok(Model::LeaderFollowers),
            "half-sync" => Ok(Model::HalfSync),
            "proactor" => Ok(Model::Proactor),
            other => Err(UnknownModel(other.to_owned())),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Reactor => "reactor",
            Model::ReactorPool => "reactor-pool",
            Model::LeaderFollowers => "leader-followers",
            Model::HalfSync => "half-sync",
            Model::Proactor => "proactor",
        })
    }
}

/// Everything `posa echo-server` takes.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: Addr,
    /// Threading model.
    pub model: Model,
    /// Reactor threads for the pool model (ignored by `reactor`).
    pub threads: usize,
    /// Connections open at once, at most.
    pub max_conns: usize,
    /// The service's settings.
    pub echo: EchoConfig,
    /// Reactor budgets and thresholds.
    pub reactor: crate::reactor::Config,
    /// Interceptors at every accepted connection and every reactor upcall (rate limits,
    /// metrics, tracing...). Default: none.
    pub interceptors: crate::intercept::Chain,
}

impl ServerConfig {
    /// The reactor settings with the server's interceptors added.
    fn reactor_config(&self) -> crate::reactor::Config {
        let mut c = self.reactor.clone();
        if c.interceptors.is_empty() {
            c.interceptors = self.interceptors.clone();
        }
        c
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: Addr::Tcp(([127, 0, 0, 1], 7000).into()),
            model: Model::Reactor,
            threads: 2,
            max_conns: 10_000,
            echo: EchoConfig::default(),
            reactor: crate::reactor::Config::default(),
            interceptors: crate::intercept::Chain::new(),
        }
    }
}

/// A running echo server. Dropping it without [`Server::shutdown`] detaches its threads.
pub struct Server {
    local_addr: Addr,
    handles: Vec<ReactorHandle>,
    threads: Vec<JoinHandle<io::Result<ShutdownReport>>>,
    /// The proactor model's loops (their threads are the proactor's).
    proactor: Option<crate::proactor::Proactor>,
    limit: Arc<ConnLimit>,
    accept_stats: Arc<AcceptStats>,
    echo_stats: Arc<EchoStats>,
}

impl Server {
    /// Binds and starts the reactors; returns once the acceptor is accepting.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let listener = Listener::bind(&config.addr)?;
        let n = match config.model {
            Model::Reactor => 1,
            Model::ReactorPool => config.threads.max(1),
            Model::LeaderFollowers => return Self::start_leader_followers(config, listener),
            Model::HalfSync => return Self::start_half_sync(config, listener),
            Model::Proactor => return proactor_echo::start(config, listener),
        };
        let echo_stats = Arc::new(EchoStats::default());
        let factory = EchoFactory::new(config.echo.clone(), Arc::clone(&echo_stats));
        Self::start_reactors(&config, listener, n, factory, echo_stats, "posa-reactor")
    }

    /// `n` reactors on their own threads, the first running the acceptor (which spreads
    /// connections round-robin when there are several): the reactor, reactor-pool and
    /// half-sync models, which differ only in the service each connection gets.
    fn start_reactors<F>(
        config: &ServerConfig,
        listener: Listener,
        n: usize,
        factory: F,
        echo_stats: Arc<EchoStats>,
        name: &str,
    ) -> io::Result<Server>
    where
        F: ServiceFactory + Send + 'static,
    {
        let local_addr = listener.local_addr()?;
        let mut reactors = (0..n)
            .map(|_| Reactor::builder().config(config.reactor_config()).build())
            .collect::<io::Result<Vec<_>>>()?;
        let handles: Vec<ReactorHandle> = reactors.iter().map(Reactor::handle).collect();
        let limit = ConnLimit::new(config.max_conns);
        let mut acceptor = Acceptor::new(listener, factory, Arc::clone(&limit))
            .interceptors(config.interceptors.clone());
        if n > 1 {
            acceptor = acceptor.placement(Placement::RoundRobin {
                reactors: handles.clone(),
                own: 0,
            });
        }
        let accept_stats = acceptor.stats();
        reactors[0].add(acceptor)?;
        let threads = reactors
            .into_iter()
            .enumerate()
            .map(|(i, mut reactor)| {
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || reactor.run())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Server {
            local_addr,
            handles,
            threads,
            proactor: None,
            limit,
            accept_stats,
            echo_stats,
        })
    }

    fn start_leader_followers(config: ServerConfig, listener: Listener) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let lf = LeaderFollowers::with_config(
            config.threads,
            config.reactor_config(),
            std::sync::Arc::new(SystemClock),
        )?;
        let limit = ConnLimit::new(config.max_conns);
        let echo_stats = Arc::new(EchoStats::default());
        let factory = EchoFactory::new(config.echo.clone(), Arc::clone(&echo_stats));
        let acceptor = Acceptor::new(listener, factory, Arc::clone(&limit))
            .interceptors(config.interceptors.clone());
        let accept_stats = acceptor.stats();
        lf.add(acceptor)?;
        let handles = vec![lf.handle()];
        let thread = std::thread::Builder::new()
            .name("posa-lf-0".to_owned())
            .spawn(move || lf.run())?;
        Ok(Server {
            local_addr,
            handles,
            threads: vec![thread],
            proactor: None,
            limit,
            accept_stats,
            echo_stats,
        })
    }

    fn start_half_sync(config: ServerConfig, listener: Listener) -> io::Result<Server> {
        use crate::net::half_sync::{EchoService, HalfSyncConfig, HalfSyncFactory};
        use crate::pool::{ThreadPool, WhenFull};
        // The queueing layer: bounded, and it refuses rather than blocks (the reactor must
        // never block); a refused request waits in its connection and is retried.
        let pool = Arc::new(
            ThreadPool::builder()
                .name("posa-sync")
                .threads(config.threads.max(1))
                .capacity(4096)
                .when_full(WhenFull::Reject)
                .build()?,
        );
        let echo_stats = Arc::new(EchoStats::default());
        let factory = HalfSyncFactory::new(
            EchoService,
            pool,
            HalfSyncConfig {
                buffer: config.echo.buffer,
                idle_timeout: config.echo.idle_timeout,
                ..HalfSyncConfig::default()
            },
            Arc::clone(&echo_stats),
        );
        // The asynchronous half: one reactor.
        Self::start_reactors(&config, listener, 1, factory, echo_stats, "posa-async")
    }

    /// The address it listens on (the real port if 0 was asked for).
    pub fn local_addr(&self) -> &Addr {
        &self.local_addr
    }

    /// Handles to its reactors (the first runs the acceptor).
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.limit.open()
    }

    /// The acceptor's counters (shared: they stay readable after [`join`](Self::join)).
    pub fn accept_stats(&self) -> Arc<AcceptStats> {
        Arc::clone(&self.accept_stats)
    }

    /// The echo service's counters (shared: they stay readable after [`join`](Self::join)).
    pub fn echo_stats(&self) -> Arc<EchoStats> {
        Arc::clone(&self.echo_stats)
    }

    /// Closes the server on SIGINT or SIGTERM: each signal starts a drain of `grace`.
    pub fn shutdown_on_signals(&self, grace: Duration) -> io::Result<()> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let read = mio::net::UnixStream::from_std(read);
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        let signals = SignalHandler {
            read,
            ids,
            handles: self.handles.clone(),
            grace,
        };
        match self.handles[0].add(signals).wait().into_result() {
            Ok(_) => Ok(()),
            Err(crate::act::Error::Failed(e)) => Err(e),
            Err(_) => Err(io::Error::other(
                "the server stopped before signals were installed",
            )),
        }
    }

    /// Starts a graceful shutdown of every reactor: intake stops, connections drain for up to
    /// `grace`, the rest are closed. Returns at once; [`join`](Self::join) waits.
    pub fn shutdown(&self, grace: Duration) {
        for h in &self.handles {
            drop(h.shutdown(grace));
        }
    }

    /// Waits for every reactor to stop; returns their reports (first: the acceptor's).
    pub fn join(self) -> io::Result<Vec<ShutdownReport>> {
        if let Some(proactor) = &self.proactor {
            return proactor.join();
        }
        self.threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("reactor thread panicked")))
            })
            .collect()
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("reactors", &self.handles.len())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// Turns SIGINT/SIGTERM (written to a socket by signal-hook's handler) into a shutdown.
struct SignalHandler {
    read: mio::net::UnixStream,
    ids: Vec<signal_hook::SigId>,
    handles: Vec<ReactorHandle>,
    grace: Duration,
}

impl EventHandler for SignalHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.read, Interest::READABLE)
    }

    fn ready(&mut self, _: Readiness, _: &mut Context<'_>) {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: drained
            }
        }
        if got {
            tracing::info!(grace = ?self.grace, "posa: signal received; shutting down");
            for h in &self.handles {
                drop(h.shutdown(self.grace));
            }
        }
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The echo service written the way a proactor user writes it.
mod proactor_echo {
    use std::io;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{EchoStats, Server, ServerConfig};
    use crate::act::Outcome;
    use crate::net::{AcceptStats, ConnGuard, ConnLimit, Listener};
    use crate::proactor::{Accepts, Conn, Done, Proactor, ProactorHandle};
    use crate::sync::Arc;

    /// What every connection's callbacks share.
    struct Service {
        accepts: Accepts,
        proactor: ProactorHandle,
        limit: Arc<ConnLimit>,
        stats: Arc<EchoStats>,
        accept_stats: Arc<AcceptStats>,
        chunk: usize,
        idle: Option<Duration>,
        chain: crate::intercept::Chain,
    }

    /// One connection; dropped (and counted closed) when its last operation has answered.
    struct Echo {
        conn: Conn,
        service: Arc<Service>,
        _guard: ConnGuard,
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.conn.close();
            self.service.stats.closed.incr();
        }
    }

    pub(super) fn start(config: ServerConfig, listener: Listener) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let proactor = Proactor::builder()
            .threads(config.threads.max(1))
            .reactor(config.reactor_config())
            .build()?;
        let accepts = proactor.listen(listener)?;
        let limit = ConnLimit::new(config.max_conns);
        let stats = Arc::new(EchoStats::default());
        let accept_stats = Arc::new(AcceptStats::default());
        let service = Arc::new(Service {
            accepts,
            proactor: proactor.handle(),
            limit: Arc::clone(&limit),
            stats: Arc::clone(&stats),
            accept_stats: Arc::clone(&accept_stats),
            chunk: config.echo.buffer.clamp(1, 64 * 1024),
            idle: config.echo.idle_timeout,
            chain: config.interceptors.clone(),
        });
        accept_next(service);
        Ok(Server {
            local_addr,
            handles: proactor.handles().to_vec(),
            threads: Vec::new(),
            proactor: Some(proactor),
            limit,
            accept_stats,
            echo_stats: stats,
        })
    }

    /// Initiate an accept; on its completion, start the connection and initiate the next.
    fn accept_next(service: Arc<Service>) {
        let token = service.accepts.accept();
        token.on_complete(move |outcome| match outcome {
            Outcome::Completed(Ok((conn, peer))) => {
                if !admitted(&service, peer) {
                    service
                        .accept_stats
                        .rejected_intercept
                        .fetch_add(1, Ordering::Relaxed);
                    conn.close();
                    accept_next(service);
                    return;
                }
                match ConnLimit::try_acquire(&service.limit) {
                    Some(guard) => {
                        service
                            .accept_stats
                            .accepted
                            .fetch_add(1, Ordering::Relaxed);
                        let buf = vec![0; service.chunk];
                        let echo = Arc::new(Echo {
                            conn,
                            service: Arc::clone(&service),
                            _guard: guard,
                        });
                        read_next(echo, buf);
                    }
                    None => {
                        service
                            .accept_stats
                            .rejected_limit
                            .fetch_add(1, Ordering::Relaxed);
                        conn.close();
                    }
                }
                accept_next(service);
            }
            Outcome::Completed(Err(e)) => {
                // EMFILE and friends: back off instead of spinning on a readable listener.
                tracing::warn!(error = %e, "proactor echo: accept failed; retrying in 10 ms");
                service
                    .accept_stats
                    .exhausted_accepts
                    .fetch_add(1, Ordering::Relaxed);
                let retry = Arc::clone(&service);
                service
                    .proactor
                    .timer(Duration::from_millis(10))
                    .on_complete(move |o| {
                        if o.is_completed() {
                            accept_next(retry);
                        }
                    });
            }
            _ => {} // cancelled: the proactor is shutting down
        });
    }

    /// The interceptors' verdict on an accepted connection.
    fn admitted(service: &Service, peer: crate::net::Peer) -> bool {
        use crate::intercept::{Dispatch, Outcome, Point};
        if service.chain.is_empty() {
            return true;
        }
        let mut d = Dispatch::new(Point::Accept, 0);
        if let crate::net::Peer::Tcp(a) = peer {
            d.peer = Some(a);
        }
        let ok = service.chain.before(&d).is_ok();
        if ok {
            service.chain.after(&d, Outcome::Ok, Duration::ZERO);
        }
        ok
    }

    /// Initiate a read; on its completion, write what came, and on that, read again.
    fn read_next(echo: Arc<Echo>, buf: Vec<u8>) {
        let token = match echo.service.idle {
            Some(idle) => echo.conn.read_some_timeout(buf, idle),
            None => echo.conn.read_some(buf),
        };
        token.on_complete(move |outcome| match outcome {
            Outcome::Completed(Ok(Done { n: 0, .. })) => finish(echo),
            Outcome::Completed(Ok(Done { buf, n })) => {
                let stats = &echo.service.stats;
                stats.bytes.add(n as u64);
                stats.max_buffered.fetch_max(n, Ordering::Relaxed);
                match echo.conn.write_all_prefix(buf, n) {
                    Ok(written) => written.on_complete(move |o| match o {
                        Outcome::Completed(Ok(Done { buf, .. })) => read_next(echo, buf),
                        Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => {}
                        _ => echo.service.stats.errors.incr(),
                    }),
                    Err(_) => echo.service.stats.errors.incr(),
                }
            }
            Outcome::Completed(Err(e)) if e.error.kind() == io::ErrorKind::TimedOut => {
                echo.service.stats.idle_closed.incr();
            }
            // Drain (shutdown): stop reading, let the writes go, close our side in order.
            Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => finish(echo),
            _ => echo.service.stats.errors.incr(),
        });
    }

    /// Shut down writing after the queued writes, then close.
    fn finish(echo: Arc<Echo>) {
        echo.conn.shutdown_write().on_complete(move |_| drop(echo));
    }
}
