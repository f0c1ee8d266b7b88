//! Servers: the wiring that puts a service on a threading model. This module implements no
//! pattern of its own; it sits above every pattern it wires (reactor, Leader/Followers,
//! Half-Sync/Half-Async, proactor, Acceptor-Connector) and nothing below imports it.
//!
//! [`Server::serve`] binds, starts the [`Model`] the caller chose, and serves a [`Service`]
//! on it ([`Server::start`] serves echo). The service is written once; the model is a choice:
//!
//! | model | threads | what serves a connection, and where `Service::call` runs |
//! |---|---|---|
//! | [`Model::Reactor`] | one reactor | [`ServiceConn`], an event handler: on the loop |
//! | [`Model::ReactorPool`] | a reactor per thread, connections handed out round-robin | [`ServiceConn`]: on its loop |
//! | [`Model::LeaderFollowers`] | threads taking turns on one demultiplexer | [`ServiceConn`]: on the thread that took the event |
//! | [`Model::HalfSync`] | one reactor for I/O, a pool of workers for the service | a [`HalfSyncConn`](crate::half_sync::HalfSyncConn): on the pool |
//! | [`Model::Proactor`] | the proactor's loops | completion handlers (`proactor_conn.rs`): on the loop |
//!
//! Signals ([`Server::shutdown_on_signals`]), the connection limit, the idle timeout, the drain
//! and the shutdown reports come with every model.
//!
//! ```
//! use posa::net::Addr;
//! use posa::server::{Model, Server, ServerConfig};
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! let server = Server::start(ServerConfig {
//!     addr: "127.0.0.1:0".parse::<Addr>()?,
//!     model: Model::ReactorPool,
//!     ..ServerConfig::default()
//! })?;
//! let Addr::Tcp(addr) = *server.local_addr() else { unreachable!() };
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"ping")?;
//! let mut reply = [0u8; 4];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"ping");
//! drop(client);
//! server.shutdown(Duration::from_secs(1));
//! server.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod proactor_conn;
pub mod work;

pub use crate::net::{ProtocolError, Service};
pub use conn::{ConnConfig, EchoService, ServiceConn, ServiceConnFactory};
pub use work::{BadWorkMix, HEADER as WORK_HEADER, Work, WorkMix, WorkService};

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::SystemClock;
use crate::net::{
    AcceptStats, Acceptor, Addr, ConnLimit, ConnStats, Listener, Placement, ServiceFactory,
};
use crate::proactor::Proactor;
use crate::reactor::{
    LeaderFollowers, LoopThreads, Reactor, ReactorGroup, ReactorHandle, ShutdownReport,
};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Mutex};

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
            "unknown model {:?}: expected reactor, reactor-pool, leader-followers, half-sync or proactor",
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
    /// Half-sync only: the synchronous workers, when they should not be `threads` (a service
    /// that blocks wants more workers than cores: by Little's law, arrival rate times
    /// blocking time).
    pub sync_workers: Option<usize>,
    /// Connections open at once, at most.
    pub max_conns: usize,
    /// Each connection's settings (buffer bound, idle timeout, linger).
    pub conn: ConnConfig,
    /// Reactor budgets and thresholds.
    pub reactor: crate::reactor::Config,
    /// Interceptors at every accepted connection and every reactor upcall (rate limits,
    /// metrics, tracing...). Default: none.
    pub interceptors: crate::intercept::Chain,
    /// The proactor model's backend (default [`Backend::Auto`](crate::proactor::Backend)).
    pub backend: crate::proactor::Backend,
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
            sync_workers: None,
            max_conns: 10_000,
            conn: ConnConfig::default(),
            reactor: crate::reactor::Config::default(),
            interceptors: crate::intercept::Chain::new(),
            backend: crate::proactor::Backend::Auto,
        }
    }
}

/// What runs a server's connections, by model.
enum Run {
    /// The reactor, reactor-pool and half-sync models.
    Reactors(ReactorGroup),
    /// Leader/Followers: one thread runs the group (it spawns the followers).
    LeaderFollowers {
        handle: ReactorHandle,
        thread: LoopThreads,
    },
    /// The proactor model (its threads are the proactor's).
    Proactor(Proactor),
}

/// A running server. Dropping it without [`Server::join`] shuts it down at once (no grace)
/// and joins its threads.
pub struct Server {
    local_addr: Addr,
    run: Run,
    limit: ConnLimit,
    accept_stats: Arc<AcceptStats>,
    conn_stats: Arc<ConnStats>,
    signals: Mutex<Option<SignalThread>>,
}

impl Server {
    /// Binds, starts the chosen model and serves echo ([`EchoService`]); returns once the
    /// acceptor is accepting.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        Self::serve(config, EchoService)
    }

    /// Binds, starts the chosen model and serves `service` on it; returns once the acceptor
    /// is accepting. The same service runs on every model; see [`Service`] for where each
    /// model runs its `call`.
    pub fn serve<S: Service>(config: ServerConfig, service: S) -> io::Result<Server> {
        let service = Arc::new(service);
        let listener = Listener::bind(&config.addr)?;
        let n = match config.model {
            Model::Reactor => 1,
            Model::ReactorPool => config.threads.max(1),
            Model::LeaderFollowers => {
                return Self::start_leader_followers(config, listener, service);
            }
            Model::HalfSync => return Self::start_half_sync(config, listener, service),
            Model::Proactor => return proactor_conn::start(config, listener, service),
        };
        let stats = Arc::new(ConnStats::default());
        let factory = ServiceConnFactory::new(service, config.conn.clone(), Arc::clone(&stats));
        Self::start_reactors(&config, listener, n, factory, stats, "posa-reactor")
    }

    /// `n` reactors on their own threads, the first running the acceptor (which spreads
    /// connections round-robin when there are several): the reactor, reactor-pool and
    /// half-sync models, which differ only in the service each connection gets.
    fn start_reactors<F>(
        config: &ServerConfig,
        listener: Listener,
        n: usize,
        factory: F,
        conn_stats: Arc<ConnStats>,
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
        let mut acceptor = Acceptor::new(listener, factory, limit.clone())
            .interceptors(config.interceptors.clone());
        if n > 1 {
            acceptor = acceptor.placement(Placement::RoundRobin {
                reactors: handles,
                own: 0,
            });
        }
        let accept_stats = acceptor.stats();
        reactors[0].add(acceptor)?;
        Ok(Server {
            local_addr,
            run: Run::Reactors(ReactorGroup::spawn(reactors, name)?),
            limit,
            accept_stats,
            conn_stats,
            signals: Mutex::new(None),
        })
    }

    fn start_leader_followers<S: Service>(
        config: ServerConfig,
        listener: Listener,
        service: Arc<S>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let lf = LeaderFollowers::with_config(
            config.threads,
            config.reactor_config(),
            crate::clock::shared(SystemClock),
        )?;
        let limit = ConnLimit::new(config.max_conns);
        let conn_stats = Arc::new(ConnStats::default());
        let factory =
            ServiceConnFactory::new(service, config.conn.clone(), Arc::clone(&conn_stats));
        let acceptor = Acceptor::new(listener, factory, limit.clone())
            .interceptors(config.interceptors.clone());
        let accept_stats = acceptor.stats();
        lf.add(acceptor)?;
        let handle = lf.handle();
        let thread = LoopThreads::new("leader/followers thread");
        thread.push(
            thread::Builder::new()
                .name("posa-lf-0".to_owned())
                .spawn(move || lf.run())?,
        );
        Ok(Server {
            local_addr,
            run: Run::LeaderFollowers { handle, thread },
            limit,
            accept_stats,
            conn_stats,
            signals: Mutex::new(None),
        })
    }

    fn start_half_sync<S: Service>(
        config: ServerConfig,
        listener: Listener,
        service: Arc<S>,
    ) -> io::Result<Server> {
        use crate::half_sync::{HalfSyncConfig, HalfSyncFactory};
        use crate::pool::{ThreadPool, WhenFull};
        // The queueing layer: bounded, and it refuses rather than blocks (the reactor must
        // never block); a refused request waits in its connection and is retried.
        let pool = Arc::new(
            ThreadPool::builder()
                .name("posa-sync")
                .threads(config.sync_workers.unwrap_or(config.threads).max(1))
                .capacity(4096)
                .when_full(WhenFull::Reject)
                .build()?,
        );
        let conn_stats = Arc::new(ConnStats::default());
        let factory = HalfSyncFactory::from_arc(
            service,
            pool,
            HalfSyncConfig {
                buffer: config.conn.buffer,
                idle_timeout: config.conn.idle_timeout,
                linger: config.conn.linger,
                ..HalfSyncConfig::default()
            },
            Arc::clone(&conn_stats),
        );
        // The asynchronous half: one reactor.
        Self::start_reactors(&config, listener, 1, factory, conn_stats, "posa-async")
    }

    /// The address it listens on (the real port if 0 was asked for).
    pub fn local_addr(&self) -> &Addr {
        &self.local_addr
    }

    /// What runs the server: the model, and for the proactor its live backend
    /// (`proactor/uring` or `proactor/emulated`).
    pub fn describe(&self) -> String {
        match &self.run {
            Run::Proactor(p) => format!("proactor/{} backend, {} loop(s)", p.backend(), p.loops()),
            Run::Reactors(g) => format!("{} reactor thread(s)", g.handles().len()),
            Run::LeaderFollowers { .. } => "leader/followers".to_owned(),
        }
    }

    /// Handles to its event loops (the first runs the acceptor).
    pub fn handles(&self) -> &[ReactorHandle] {
        match &self.run {
            Run::Reactors(group) => group.handles(),
            Run::LeaderFollowers { handle, .. } => std::slice::from_ref(handle),
            Run::Proactor(proactor) => proactor.handles(),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.limit.open()
    }

    /// The acceptor's counters (shared: they stay readable after [`join`](Self::join)).
    pub fn accept_stats(&self) -> Arc<AcceptStats> {
        Arc::clone(&self.accept_stats)
    }

    /// The service's counters (shared: they stay readable after [`join`](Self::join)).
    pub fn conn_stats(&self) -> Arc<ConnStats> {
        Arc::clone(&self.conn_stats)
    }

    /// Closes the server on SIGINT or SIGTERM: the first signal starts a drain of `grace`
    /// (the listener closes; open connections are served until their peers finish, or the
    /// grace runs out and they are forced, closing lingering); a second signal forces at once.
    /// A thread of its own waits for the signals (signal-hook), so this works on every model,
    /// the io_uring proactor's loops included; it ends when the server is joined or dropped.
    pub fn shutdown_on_signals(&self, grace: Duration) -> io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let handle = signals.handle();
        let stopper = self.stopper();
        let thread = thread::Builder::new()
            .name("posa-signals".to_owned())
            .spawn(move || {
                let mut seen = 0u32;
                for _ in signals.forever() {
                    seen += 1;
                    if seen == 1 {
                        tracing::info!(?grace, "posa: signal received; draining");
                        stopper.shutdown(grace);
                    } else {
                        tracing::info!("posa: second signal; closing every connection now");
                        stopper.shutdown(Duration::ZERO);
                    }
                }
            })?;
        if let Some(old) = self.signals.lock().replace(SignalThread { handle, thread }) {
            old.stop();
        }
        Ok(())
    }

    /// What stops the loops of this server, cloneable for another thread.
    fn stopper(&self) -> Stopper {
        let loops = match &self.run {
            Run::Proactor(p) => Loops::Proactor(p.handle()),
            _ => Loops::Reactors(self.handles().to_vec()),
        };
        Stopper {
            loops,
            stats: Arc::clone(&self.conn_stats),
        }
    }

    /// Starts a graceful shutdown of every loop: intake stops, connections drain for up to
    /// `grace`, the rest are closed. Returns at once; [`join`](Self::join) waits.
    pub fn shutdown(&self, grace: Duration) {
        self.stopper().shutdown(grace);
    }

    /// Waits for every loop to stop; returns their reports (first: the acceptor's).
    pub fn join(self) -> io::Result<Vec<ShutdownReport>> {
        let reports = match &self.run {
            Run::Reactors(group) => group.join(),
            Run::LeaderFollowers { thread, .. } => thread.join(),
            Run::Proactor(proactor) => proactor.join(),
        };
        if let Some(signals) = self.signals.lock().take() {
            signals.stop();
        }
        reports
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(signals) = self.signals.lock().take() {
            signals.stop();
        }
        // The reactor group and the proactor shut down and join on their own drop.
        if let Run::LeaderFollowers { handle, thread } = &self.run
            && !thread.is_empty()
        {
            drop(handle.shutdown(Duration::ZERO));
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("loops", &self.handles().len())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// The thread that waits for SIGINT/SIGTERM.
struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// Stops a server's loops from any thread.
#[derive(Clone)]
struct Stopper {
    loops: Loops,
    /// Where the services count connections drained and forced from now on.
    stats: Arc<ConnStats>,
}

#[derive(Clone)]
enum Loops {
    Reactors(Vec<ReactorHandle>),
    Proactor(crate::proactor::ProactorHandle),
}

impl Stopper {
    fn shutdown(&self, grace: Duration) {
        self.stats
            .draining
            .store(true, crate::sync::atomic::Ordering::Release);
        match &self.loops {
            Loops::Reactors(handles) => {
                for h in handles {
                    drop(h.shutdown(grace));
                }
            }
            Loops::Proactor(p) => p.shutdown(grace),
        }
    }
}
