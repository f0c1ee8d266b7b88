//! Proactor: asynchronous operations initiated by the caller, completed by the event loop.
//!
//! A reactor tells a handler that it *may* now read; a proactor does the read itself and tells
//! the initiator that the read is *done*, with the data. Each operation (accept, connect, read
//! some, read exact, write all, shut down writing, a timer, a positioned file read) completes
//! exactly once through an [`act`](crate::act) token, which hands back the operation's buffer
//! with every outcome: done, failed, or cancelled.
//!
//! Emulated on the reactor, as Boost.Asio does on epoll (`emulated/`): an operation is queued
//! to its connection's loop, which tries it at once (speculatively) and waits for readiness
//! only when the socket says `WouldBlock`.
//!
//! # Layout
//! - this file: the public API ([`Proactor`], [`ProactorHandle`], the operation results and
//!   tokens, [`Builder`]);
//! - `conn.rs`, `accept.rs`: the caller's side of a connection and of a listener;
//! - `ops.rs`: the cross-thread queue where operations wait for their loop (loom-modelled);
//! - `delivery.rs`: where completions run ([`CompleteOn`]) and the interceptors around them;
//! - `emulated/`: the backend: its loops, and the loop's side of connections, listeners and
//!   timers. Another backend is one more folder beside it.
//!
//! # Algorithm and invariants
//! - Operations wait in the connection's `OpQueue` (`ops.rs`) until its loop takes them;
//!   the loop keeps reads and writes in two ordered local queues, so several writes may be
//!   issued without waiting and complete in order, and reads likewise.
//! - Writes are bounded per connection by a high-water mark on queued bytes (ACE's
//!   `Svc_Handler` water marks): above it, [`Conn::write_all`] refuses and hands the buffer back
//!   ([`Refused::Full`](crate::Refused::Full)); [`Conn::writable`] completes when the queue has drained to the
//!   low-water mark. A slow peer pushes back on the initiator; memory does not grow.
//! - Cancellation: dropping or cancelling a token wakes the loop (a cancel hook), which answers
//!   the operation `Cancelled(buf)` if it had no effect yet, `CancelledAfterEffect` with the
//!   partial result if it had; closing a connection answers every outstanding operation the
//!   same way. No busy polling: an operation waits on readiness, a timer or a wake-up.
//! - Completion dispatch: on the loop thread that did the work ([`CompleteOn::Loop`]), or handed
//!   to a thread pool ([`CompleteOn::Pool`]); never on the initiating thread, except that an
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
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

mod accept;
mod conn;
mod delivery;
mod emulated;
mod ops;
mod recv;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod uring;
/// The cross-thread queue of operations, public only where the loom models drive it.
#[cfg(posa_loom)]
pub use ops::OpQueue;

pub use accept::Accepts;
pub use conn::Conn;
pub use delivery::CompleteOn;
pub use recv::{RecvBuf, RecvToken};
/// The io_uring backend's cross-thread state, public only where the loom models drive it.
#[cfg(all(posa_loom, target_os = "linux", feature = "io-uring"))]
pub use uring::{Cqe, Inbox, Key, MakeRing, Ring, RingShared, RingWaker, Slab, Sqe, eventfd};
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub use uring::{Unavailable, probe};

use std::fmt;
use std::fs::File;
use std::io;
use std::time::Duration;

use crate::act::{Completer, Token};
use crate::net::{Addr, ConnectError, ConnectOptions, Listener, Peer};
use crate::reactor::{ReactorGroup, ReactorHandle, ShutdownReport};
use delivery::Delivery;
use emulated::Loops;
use std::sync::Arc;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
use uring::{RingThreads, Rings};

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

pub(crate) type OpCompleter = Completer<Done, OpError, Vec<u8>>;

/// The token of an accept: the connection, attached to one of the proactor's loops.
pub type AcceptToken = Token<(Conn, Peer), io::Error>;

/// The token of a connect: the connector's typed error (attempts, timeout, rejection) comes
/// through unchanged.
pub type ConnectToken = Token<Conn, ConnectError>;

/// The token of a timer: `Completed(Ok(()))` when it expires.
pub type TimerToken = Token<(), std::convert::Infallible>;

/// Which mechanism completes the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Readiness plus speculative system calls on reactors (mio/epoll), as Boost.Asio does on
    /// epoll: the loop completes each operation. Works everywhere.
    Emulated,
    /// io_uring: the kernel performs each operation and posts its completion (Linux, with the
    /// `io-uring` feature). Asked for and unavailable, [`Builder::build`] fails with the
    /// reason.
    IoUring,
    /// io_uring where the probe finds it usable, else the emulated backend, with one log line
    /// saying why (the default).
    #[default]
    Auto,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Emulated => "emulated",
            Backend::IoUring => "uring",
            Backend::Auto => "auto",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulated" => Ok(Backend::Emulated),
            "uring" | "io-uring" | "io_uring" => Ok(Backend::IoUring),
            "auto" => Ok(Backend::Auto),
            other => Err(format!(
                "unknown backend {other:?}: expected auto, uring or emulated"
            )),
        }
    }
}

/// Picks the backend for `requested`, given what the probe found (`Ok(())`: io_uring usable).
/// `Err` only when io_uring was asked for explicitly and is unavailable.
fn select(requested: Backend, probed: impl FnOnce() -> Result<(), String>) -> io::Result<Backend> {
    match requested {
        Backend::Emulated => Ok(Backend::Emulated),
        Backend::IoUring => match probed() {
            Ok(()) => Ok(Backend::IoUring),
            Err(why) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
        },
        Backend::Auto => match probed() {
            Ok(()) => Ok(Backend::IoUring),
            Err(why) => {
                tracing::info!("posa proactor: {why}; using the emulated backend");
                Ok(Backend::Emulated)
            }
        },
    }
}

/// The probe as `select` takes it: io_uring's own probe, or the reason it is not built.
fn probe_kernel() -> Result<(), String> {
    if let Ok(v) = std::env::var("POSA_IO_URING")
        && matches!(v.as_str(), "0" | "off" | "false" | "no")
    {
        return Err(format!("io_uring disabled by POSA_IO_URING={v}"));
    }
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    {
        uring::probe().map_err(|e| e.to_string())
    }
    #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
    {
        Err("io_uring unavailable: not built (Linux only, feature `io-uring`)".to_owned())
    }
}

/// Whether [`Backend::Auto`] would pick io_uring here: `Ok(())`, or the reason it would not
/// (the probe's finding, `POSA_IO_URING=off`, or a build without the `io-uring` feature).
pub fn io_uring_status() -> Result<(), String> {
    probe_kernel()
}

/// For test suites that run a scenario on both backends: `true` if io_uring is usable here;
/// otherwise prints why the io_uring run of `test` is skipped and, when the environment
/// variable `POSA_SKIP_LOG` names a file, appends that line to it (posa's test command counts
/// the lines in its summary).
pub fn skip_without_io_uring(test: &str) -> bool {
    let Err(why) = io_uring_status() else {
        return true;
    };
    let line = format!("skipped {test} on io_uring: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("POSA_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    false
}

/// Configures a [`Proactor`].
#[derive(Debug, Clone)]
pub struct Builder {
    threads: usize,
    backend: Backend,
    complete_on: CompleteOn,
    interceptors: crate::intercept::Chain,
    high_water: usize,
    low_water: usize,
    recv_count: usize,
    recv_size: usize,
    linger: Duration,
    reactor: crate::reactor::Config,
    #[cfg(all(posa_loom, target_os = "linux", feature = "io-uring"))]
    make_ring: Option<MakeRing>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            threads: 1,
            backend: Backend::Auto,
            complete_on: CompleteOn::Loop,
            interceptors: crate::intercept::Chain::new(),
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            recv_count: 1024,
            recv_size: 4096,
            linger: Duration::from_secs(2),
            reactor: crate::reactor::Config::default(),
            #[cfg(all(posa_loom, target_os = "linux", feature = "io-uring"))]
            make_ring: None,
        }
    }
}

impl Builder {
    /// Event-loop threads (at least 1; default 1). Connections are spread round-robin.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Which backend completes the operations (default [`Backend::Auto`]). The environment
    /// variable `POSA_IO_URING=off` makes io_uring count as unavailable.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Where completions are delivered (default: on the loop thread).
    pub fn complete_on(mut self, complete_on: CompleteOn) -> Self {
        self.complete_on = complete_on;
        self
    }

    /// Interceptors that observe every completion delivered
    /// ([`Point::ProactorCompletion`](crate::intercept::Point)). On the emulated backend the
    /// loops' own upcalls are intercepted through [`reactor`](Self::reactor)'s `interceptors`.
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

    /// Buffers lent to [`Conn::recv`] per loop: `count` buffers of `size` bytes (default
    /// 1024 of 4 KiB). On io_uring they form the provided buffer ring the kernel picks from
    /// (`count` is rounded up to a power of two, at most 32768); on the emulated backend up to
    /// `count` freed buffers are kept for reuse. A receive finds no buffer free when all are
    /// lent out: it waits (io_uring) for one to come back, or takes a fresh one (emulated).
    pub fn recv_buffers(mut self, count: usize, size: usize) -> Self {
        self.recv_count = count.clamp(1, 32768);
        self.recv_size = size.max(1);
        self
    }

    /// How long closing a connection may take at most (default 2 s): writes already accepted
    /// go out, the write side is shut down, and input is discarded until the peer's end of
    /// stream (a lingering close, so the close never becomes a reset). What is left at the end
    /// is answered `NotConnected` and the connection closed. Also how long connections still
    /// open at a drain's deadline get for the same.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The emulated backend's reactor settings.
    pub fn reactor(mut self, config: crate::reactor::Config) -> Self {
        self.reactor = config;
        self
    }

    /// Picks the backend (probing the kernel for [`Backend::Auto`] and
    /// [`Backend::IoUring`]) and starts the loop threads. Fails with
    /// [`io::ErrorKind::Unsupported`] and the probe's reason when io_uring was asked for and is
    /// unavailable.
    pub fn build(self) -> io::Result<Proactor> {
        #[cfg(all(posa_loom, target_os = "linux", feature = "io-uring"))]
        if self.make_ring.is_some() {
            return self.build_with(Backend::IoUring);
        }
        let backend = select(self.backend, probe_kernel)?;
        self.build_with(backend)
    }

    /// Loom models only: the io_uring loops drive rings `make` makes (a fake kernel) instead
    /// of the kernel's; the backend is io_uring, unprobed.
    #[cfg(all(posa_loom, target_os = "linux", feature = "io-uring"))]
    pub fn ring(mut self, make: MakeRing) -> Self {
        self.make_ring = Some(make);
        self
    }

    fn build_with(self, backend: Backend) -> io::Result<Proactor> {
        let delivery = Delivery {
            on: self.complete_on,
            chain: self.interceptors,
        };
        let marks = (self.high_water, self.low_water);
        match backend {
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Backend::IoUring => {
                let (rings, threads) = Rings::start(
                    self.threads,
                    delivery,
                    marks,
                    (self.recv_count, self.recv_size),
                    self.linger,
                    #[cfg(posa_loom)]
                    self.make_ring,
                )?;
                Ok(Proactor {
                    handle: ProactorHandle {
                        imp: Imp::Uring(rings),
                    },
                    runner: Runner::Rings(threads),
                })
            }
            _ => {
                // The loops' forcing phase lasts as long as a connection's graceful close.
                let reactor = crate::reactor::Config {
                    linger: self.linger,
                    ..self.reactor
                };
                let (loops, group) = Loops::start(
                    self.threads,
                    &reactor,
                    delivery,
                    marks,
                    self.recv_size,
                    self.linger,
                )?;
                Ok(Proactor {
                    handle: ProactorHandle {
                        imp: Imp::Emulated(loops),
                    },
                    runner: Runner::Group(group),
                })
            }
        }
    }
}

/// Asynchronous operations on sockets, timers and files, completed by the kernel (io_uring)
/// or by event-loop threads (emulated). See the [module docs](self). Operations are initiated
/// through its [`ProactorHandle`] (`Deref`), which can be cloned and sent to any thread.
/// Dropping it shuts the loops down (no grace) and joins them, unless [`join`](Self::join) did.
pub struct Proactor {
    handle: ProactorHandle,
    runner: Runner,
}

enum Runner {
    Group(ReactorGroup),
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Rings(RingThreads),
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
    imp: Imp,
}

#[derive(Clone)]
enum Imp {
    Emulated(Arc<Loops>),
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Uring(crate::sync::Arc<Rings>),
}

impl fmt::Debug for ProactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProactorHandle")
            .field("backend", &self.backend())
            .field("loops", &self.loops())
            .finish()
    }
}

impl Proactor {
    /// One loop thread, completions on the loop, the backend [`Backend::Auto`] picks.
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
        match &self.runner {
            Runner::Group(g) => g.join(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Runner::Rings(r) => r.join(),
        }
    }
}

impl ProactorHandle {
    /// The backend that completes this proactor's operations ([`Backend::Emulated`] or
    /// [`Backend::IoUring`], never `Auto`).
    pub fn backend(&self) -> Backend {
        match &self.imp {
            Imp::Emulated(_) => Backend::Emulated,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(_) => Backend::IoUring,
        }
    }

    /// Loop threads.
    pub fn loops(&self) -> usize {
        match &self.imp {
            Imp::Emulated(l) => l.handles().len(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.len(),
        }
    }

    /// Watches `listener` for accepts (on the first loop). Blocks until that loop has taken
    /// it: call it from outside the proactor's loops.
    pub fn listen(&self, listener: Listener) -> io::Result<Accepts> {
        match &self.imp {
            Imp::Emulated(l) => l.listen(listener),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.listen(listener),
        }
    }

    /// Takes `stream`, a connected socket made elsewhere (a `std` or mio stream, one end of a
    /// socket pair), as a connection of one of the loops. Fails if the loops are stopping (the
    /// stream is then closed).
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// use posa::net::Stream;
    /// use posa::proactor::Proactor;
    /// use std::io::Write;
    ///
    /// let proactor = Proactor::new()?;
    /// let (ours, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    /// ours.set_nonblocking(true)?;
    /// let conn = proactor.adopt(Stream::Unix(mio::net::UnixStream::from_std(ours)))?;
    /// theirs.write_all(b"hello")?;
    /// let done = conn.read_exact(vec![0; 5]).wait().into_result().expect("read");
    /// assert_eq!(&done.buf[..], b"hello");
    /// # Ok(()) }
    /// ```
    pub fn adopt(&self, stream: crate::net::Stream) -> io::Result<Conn> {
        let peer = stream.peer()?;
        match &self.imp {
            Imp::Emulated(l) => l.adopt(stream, peer),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.adopt(stream, peer),
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
        match &self.imp {
            Imp::Emulated(l) => l.connect(addr, options),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.connect(addr, options),
        }
    }

    /// Completes after `after` (on a loop's timer queue). Dropping the token cancels it.
    pub fn timer(&self, after: Duration) -> TimerToken {
        match &self.imp {
            Imp::Emulated(l) => l.timer(after),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.timer(after),
        }
    }

    /// Reads up to `buf.len()` bytes of `file` at `offset` (a positioned read, so appended
    /// data can be read while someone writes): `Done { buf, n }`, 0 at end. On io_uring the
    /// kernel performs the read (`IORING_OP_READ`) and no loop thread blocks on it; on the
    /// emulated backend a loop thread reads (readiness cannot help with regular files).
    pub fn read_file_at(&self, file: crate::sync::Arc<File>, offset: u64, buf: Vec<u8>) -> OpToken {
        match &self.imp {
            Imp::Emulated(l) => l.read_file_at(file, offset, buf),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.read_file_at(file, offset, buf),
        }
    }

    /// The emulated backend's reactors (first: where listeners live); empty on io_uring,
    /// whose loops are not reactors.
    pub fn handles(&self) -> &[ReactorHandle] {
        match &self.imp {
            Imp::Emulated(l) => l.handles(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(_) => &[],
        }
    }

    /// Begins shutdown on every loop: listeners close; open connections are served on until
    /// their owners close them (a graceful close: accepted writes out, then lingering); at the
    /// `grace` deadline the rest are forced into the same close, bounded by
    /// [`Builder::linger`]. A later call with a shorter grace brings the deadline forward.
    pub fn shutdown(&self, grace: Duration) {
        match &self.imp {
            Imp::Emulated(l) => {
                for h in l.handles() {
                    drop(h.shutdown(grace));
                }
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => r.shutdown(grace),
        }
    }
}

impl fmt::Debug for Proactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = match &self.handle.imp {
            Imp::Emulated(l) => &l.delivery.on,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Imp::Uring(r) => &r.delivery.on,
        };
        f.debug_struct("Proactor")
            .field("backend", &self.backend())
            .field("loops", &self.loops())
            .field("complete_on", on)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{self, Outcome};
    use crate::error::Refused;
    use crate::pool::ThreadPool;
    use std::io::{Read as _, Write as _};

    /// Each scenario below takes the backend; this runs it on both (`on_emulated::x`,
    /// `on_io_uring::x`), skipping io_uring only where the kernel refuses it.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod on_emulated {
                $( #[test] fn $name() { super::$name(super::Backend::Emulated) } )*
            }
            mod on_io_uring {
                $(
                    #[test]
                    fn $name() {
                        if super::skip_without_io_uring(stringify!($name)) {
                            super::$name(super::Backend::IoUring)
                        }
                    }
                )*
            }
        };
    }

    on_both_backends!(
        queued_writes_complete_in_order_and_arrive_in_order,
        a_full_write_queue_pushes_back_and_writable_says_when_to_go_on,
        cancelling_a_pending_read_hands_the_buffer_back,
        closing_answers_every_outstanding_operation_once,
        read_exact_cut_short_fails_with_what_it_read,
        a_read_that_outlives_its_timeout_fails_with_its_buffer,
        completions_run_on_the_loop_or_on_the_pool_never_on_the_initiator,
        timers_and_file_reads_complete_through_tokens,
        recv_lends_a_buffer_when_data_arrives_and_an_empty_one_at_end_of_stream,
        a_cancel_racing_a_completion_answers_once_and_hands_the_buffer_back,
        adopted_streams_serve_like_accepted_ones_and_close_when_dropped,
        dropping_the_last_handle_flushes_accepted_writes_then_closes_in_order,
        dropping_the_accepts_answers_its_waiting_accepts,
        a_second_shorter_shutdown_forces_the_drain_now,
        failures_carry_the_kernels_error,
        a_write_cancelled_before_it_starts_is_never_sent,
        receives_starved_of_buffers_go_on_when_buffers_come_back,
        a_forced_close_at_the_deadline_still_delivers_accepted_writes,
    );

    #[test]
    fn auto_falls_back_to_emulated_and_an_explicit_io_uring_request_fails_clearly() {
        let refused = || Err("io_uring unavailable: ring setup failed: EPERM".to_owned());
        assert_eq!(select(Backend::Auto, refused).unwrap(), Backend::Emulated);
        let err = select(Backend::IoUring, refused).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("EPERM"), "{err}");
        let never = || -> Result<(), String> { panic!("emulated needs no probe") };
        assert_eq!(select(Backend::Emulated, never).unwrap(), Backend::Emulated);
        assert_eq!(select(Backend::Auto, || Ok(())).unwrap(), Backend::IoUring);
        // And the emulated backend serves when Auto falls back.
        let p = Builder::default()
            .build_with(select(Backend::Auto, refused).unwrap())
            .unwrap();
        assert_eq!(p.backend(), Backend::Emulated);
        assert_eq!(
            p.timer(Duration::from_millis(1)).wait(),
            Outcome::Completed(Ok(()))
        );
        assert_eq!("uring".parse::<Backend>(), Ok(Backend::IoUring));
        assert!("epoll".parse::<Backend>().is_err());
    }

    fn recv_lends_a_buffer_when_data_arrives_and_an_empty_one_at_end_of_stream(backend: Backend) {
        let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend).recv_buffers(4, 8));
        let first = conn.recv();
        peer.write_all(b"hello").unwrap();
        let data = first.wait().into_result().unwrap();
        assert_eq!(&data[..], b"hello");
        drop(data); // back to the pool or ring
        // More than one buffer's worth arrives in buffer-sized pieces, in order.
        peer.write_all(b"0123456789abcdef").unwrap();
        let mut got = Vec::new();
        while got.len() < 16 {
            let piece = conn.recv().wait().into_result().unwrap();
            assert!(!piece.is_empty() && piece.len() <= 8, "{}", piece.len());
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, b"0123456789abcdef");
        // Data that comes within the timeout is received (the timer is armed `after` ahead).
        let within = conn.recv_timeout(Duration::from_secs(60));
        peer.write_all(b"late").unwrap();
        assert_eq!(&within.wait().into_result().unwrap()[..], b"late");
        let timed = conn.recv_timeout(Duration::from_millis(20)).wait();
        assert!(
            matches!(&timed, Outcome::Completed(Err(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{timed:?}"
        );
        drop(peer);
        let end = conn.recv().wait().into_result().unwrap();
        assert!(end.is_empty(), "end of stream");
    }

    fn a_cancel_racing_a_completion_answers_once_and_hands_the_buffer_back(backend: Backend) {
        let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend));
        let mut read_bytes = 0;
        for i in 0..200u32 {
            let read = conn.read_some(vec![0; 16]);
            if i % 2 == 0 {
                peer.write_all(b"x").unwrap(); // the completion and the cancel race
            }
            read.cancel();
            match read.wait() {
                Outcome::Cancelled(buf) => assert_eq!(buf.len(), 16, "the buffer comes back"),
                Outcome::CancelledAfterEffect(Ok(Done { buf, n }))
                | Outcome::Completed(Ok(Done { buf, n })) => {
                    assert_eq!(buf.len(), 16, "the buffer comes back");
                    assert!(
                        n > 0 && buf[..n].iter().all(|&b| b == b'x'),
                        "{:?}",
                        &buf[..n]
                    );
                    read_bytes += n;
                }
                other => panic!("read {i}: {other:?}"),
            }
        }
        // No byte is lost or read twice: what the reads that took effect got, plus what is
        // still there, is what was sent.
        let mut rest = 100 - read_bytes;
        while rest > 0 {
            let Done { n, .. } = conn.read_some(vec![0; 256]).wait().into_result().unwrap();
            assert!(n <= rest, "more bytes than were sent");
            rest -= n;
        }
    }

    /// A proactor, a connection it accepted, and the blocking peer on the other end.
    fn adopted_streams_serve_like_accepted_ones_and_close_when_dropped(backend: Backend) {
        let p = Proactor::builder().backend(backend).build().unwrap();
        // A Unix socket pair.
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = p
            .adopt(crate::net::Stream::Unix(mio::net::UnixStream::from_std(
                ours,
            )))
            .unwrap();
        assert_eq!(conn.peer(), Peer::Unix);
        theirs.write_all(b"ping").unwrap();
        let done = conn.read_exact(vec![0; 4]).wait().into_result().unwrap();
        assert_eq!(&done.buf[..], b"ping");
        conn.write_all(b"pong".to_vec())
            .unwrap()
            .wait()
            .into_result()
            .unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        drop(conn);
        assert_eq!(theirs.read(&mut got).unwrap(), 0, "closed when dropped");
        // A TCP stream connected elsewhere keeps its peer address.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, from) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = p
            .adopt(crate::net::Stream::Tcp(mio::net::TcpStream::from_std(
                server,
            )))
            .unwrap();
        assert_eq!(conn.peer(), Peer::Tcp(from));
        drop(client);
        let end = conn.read_some(vec![0; 8]).wait().into_result().unwrap();
        assert_eq!(end.n, 0, "end of stream");
        // An unconnected TCP socket is refused with the kernel's error.
        let lone = mio::net::TcpStream::from_std(
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .unwrap()
                .into(),
        );
        let err = p.adopt(crate::net::Stream::Tcp(lone)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        // Once the loops stop, adopting fails rather than losing the stream silently.
        p.shutdown(Duration::ZERO);
        p.join().unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(
            p.adopt(crate::net::Stream::Unix(mio::net::UnixStream::from_std(
                ours
            )))
            .is_err()
        );
        assert_eq!(
            theirs.read(&mut got).unwrap(),
            0,
            "the refused stream is closed"
        );
    }

    /// cargo-mutants (issue 14): dropping the `Accepts` answers the accepts still waiting
    /// (their owner is gone), rather than leaving them until the proactor stops.
    fn dropping_the_accepts_answers_its_waiting_accepts(backend: Backend) {
        let p = Proactor::builder().backend(backend).build().unwrap();
        let (accepts, _) = listening(&p);
        let waiting = accepts.accept();
        drop(accepts);
        let outcome = waiting
            .wait_timeout(Duration::from_secs(60))
            .expect("a waiting accept is answered when its Accepts is dropped");
        assert!(!outcome.is_completed(), "nobody connected: {outcome:?}");
    }

    /// cargo-mutants (issue 14): a second shutdown with a shorter grace brings the drain
    /// deadline forward, and one with a longer grace does not push it back. A connection
    /// stays open (its owner holds it), so only the deadline ends each drain.
    fn a_second_shorter_shutdown_forces_the_drain_now(backend: Backend) {
        // First an hour, then none: only the second request can end this drain.
        assert_eq!(
            drain_with(backend, Duration::from_secs(3600), Duration::ZERO),
            1
        );
        // First half a second, then an hour: the hour must not count.
        assert_eq!(
            drain_with(
                backend,
                Duration::from_millis(500),
                Duration::from_secs(3600)
            ),
            1
        );
    }

    /// Shuts a proactor with one open connection down twice, the second request once the
    /// drain has visibly begun; returns how many connections were forced.
    fn drain_with(backend: Backend, first: Duration, second: Duration) -> usize {
        let p = Proactor::builder()
            .backend(backend)
            .threads(1)
            .linger(Duration::from_millis(10))
            .build()
            .unwrap();
        let (accepts, addr) = listening(&p);
        let (conn, peer) = accept_one(&accepts, addr);
        let drain_began = accepts.accept(); // answered when the listener closes
        p.shutdown(first);
        assert!(
            !drain_began.wait().is_completed(),
            "no second connection came"
        );
        p.shutdown(second);
        let (tx, rx) = std::sync::mpsc::channel();
        let joiner = std::thread::spawn(move || tx.send(p.join().unwrap()).unwrap());
        let reports = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the shorter grace ended the drain (the longer one is an hour)");
        joiner.join().unwrap();
        drop((conn, peer, accepts));
        reports.iter().map(|r| r.forced).sum()
    }

    /// cargo-mutants (issue 14): a failed operation says which error (the sign of the
    /// kernel's `-errno` was dropped unseen), and on both backends the operation that met the
    /// error answers with it: a file read of a directory, a write and a receive on a
    /// connection the peer reset.
    fn failures_carry_the_kernels_error(backend: Backend) {
        let reset = |kind: io::ErrorKind| {
            matches!(
                kind,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        };
        // The peer resets the connection (SO_LINGER 0), with nothing unread on either side.
        let reset_by_peer = || {
            let (p, conn, peer) = pair(Proactor::builder().backend(backend));
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            (p, conn)
        };
        let (p, conn) = reset_by_peer();
        let dir = Arc::new(File::open(std::env::temp_dir()).unwrap());
        match p.read_file_at(dir, 0, vec![0; 16]).wait() {
            Outcome::Completed(Err(e)) => {
                assert_eq!(e.error.kind(), io::ErrorKind::IsADirectory, "{e:?}");
            }
            other => panic!("reading a directory answered {other:?}"),
        }
        // Writes until the kernel refuses (the first may still be taken into the buffer).
        let mut refused = None;
        for _ in 0..100 {
            match conn.write_all(vec![1; 64 * 1024]).unwrap().wait() {
                Outcome::Completed(Ok(_)) => continue,
                Outcome::Completed(Err(e)) => {
                    refused = Some(e.error.kind());
                    break;
                }
                other => panic!("a write to a reset peer answered {other:?}"),
            }
        }
        let kind = refused.expect("a write to a reset peer fails");
        assert!(reset(kind), "{kind:?}");
        let (_p, conn) = reset_by_peer();
        match conn.recv().wait() {
            Outcome::Completed(Err(e)) => assert!(reset(e.kind()), "{e:?}"),
            other => panic!("a receive from a reset peer answered {other:?}"),
        }
        let (_p, conn) = reset_by_peer();
        match conn.read_some(vec![0; 8]).wait() {
            Outcome::Completed(Err(e)) => {
                assert!(reset(e.error.kind()), "{e:?}");
                assert_eq!((e.buf.len(), e.n), (8, 0), "the buffer comes back");
            }
            other => panic!("a read from a reset peer answered {other:?}"),
        }
    }

    /// cargo-mutants (issue 14): connections still open at a drain's deadline are forced into
    /// a graceful close: accepted writes go out whole, then the write side shuts (no reset
    /// that would destroy them), even with unread input from the peer.
    fn a_forced_close_at_the_deadline_still_delivers_accepted_writes(backend: Backend) {
        let (p, conn, mut peer) = pair(Proactor::builder().backend(backend).threads(1));
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let write = conn.write_all(big.clone()).unwrap();
        peer.write_all(b"unread request").unwrap();
        p.shutdown(Duration::ZERO);
        let mut got = Vec::new();
        peer.read_to_end(&mut got)
            .expect("an orderly end of stream, not a reset");
        assert!(
            got == big,
            "every accepted byte, in order ({} of {})",
            got.len(),
            big.len()
        );
        assert!(write.wait().is_completed());
        drop(peer);
        let forced: usize = p.join().unwrap().iter().map(|r| r.forced).sum();
        assert_eq!(forced, 1);
        drop(conn);
    }

    /// cargo-mutants (issue 14): a queued write cancelled before any of it went out is
    /// dropped whole (its buffer back); the writes around it go out, in order.
    fn a_write_cancelled_before_it_starts_is_never_sent(backend: Backend) {
        let (_p, conn, mut peer) = pair(
            Proactor::builder()
                .backend(backend)
                .water_marks(64 << 20, 1 << 20),
        );
        const BIG: usize = 16 << 20; // more than the socket buffers: the next write waits
        let big = conn.write_all(vec![b'a'; BIG]).unwrap();
        let cancelled = conn.write_all(b"NOT SENT".to_vec()).unwrap();
        let after = conn.write_all(b"end".to_vec()).unwrap();
        cancelled.cancel();
        let mut got = vec![0u8; BIG + 3];
        peer.read_exact(&mut got).unwrap();
        assert!(got[..BIG].iter().all(|&b| b == b'a'));
        assert_eq!(&got[BIG..], b"end", "the cancelled write was not sent");
        assert!(big.wait().is_completed() && after.wait().is_completed());
        match cancelled.wait() {
            Outcome::Cancelled(buf) => assert_eq!(buf, b"NOT SENT"),
            other => panic!("the cancelled write answered {other:?}"),
        }
    }

    /// cargo-mutants (issue 14): with every receive buffer lent out, receives wait; when the
    /// buffers come back they go on (none is stranded).
    fn receives_starved_of_buffers_go_on_when_buffers_come_back(backend: Backend) {
        let builder = || {
            Proactor::builder()
                .backend(backend)
                .threads(1)
                .recv_buffers(2, 8)
        };
        let (p, first, mut first_peer) = pair(builder());
        let (accepts, addr) = listening(&p);
        let mut conns = vec![first];
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (conn, peer) = accept_one(&accepts, addr);
            conns.push(conn);
            peers.push(peer);
        }
        first_peer.write_all(b"0").unwrap();
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.write_all(&[b'1' + i as u8]).unwrap();
        }
        // Two receives take the two buffers and are held; the other two wait for one.
        let mut set = act::TokenSet::new();
        for conn in &conns {
            set.insert(conn.recv());
        }
        let mut held = Vec::new();
        let mut got = Vec::new();
        for _ in 0..2 {
            let (_, outcome) = set.next().expect("a receive completes");
            let buf = outcome.into_result().unwrap();
            got.push(buf[0]);
            held.push(buf);
        }
        drop(held); // the buffers go back: the waiting receives go on
        for (_, outcome) in set {
            got.push(outcome.into_result().unwrap()[0]);
        }
        got.sort_unstable();
        assert_eq!(got, b"0123");
    }

    fn dropping_the_last_handle_flushes_accepted_writes_then_closes_in_order(backend: Backend) {
        let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend));
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let write = conn.write_all(big.clone()).unwrap();
        peer.write_all(b"unread request").unwrap(); // input the server never reads
        drop(conn); // the last handle, with 4 MiB still queued or in flight
        let mut got = Vec::new();
        peer.read_to_end(&mut got)
            .expect("an orderly end of stream, not a reset");
        assert_eq!(got.len(), big.len(), "every accepted byte arrived");
        assert!(got == big, "in order");
        match write.wait() {
            Outcome::Completed(Ok(Done { n, .. })) => assert_eq!(n, big.len()),
            other => panic!("the accepted write was cut off: {other:?}"),
        }
    }

    fn pair(builder: Builder) -> (Proactor, Conn, std::net::TcpStream) {
        let proactor = builder.build().unwrap();
        let (accepts, addr) = listening(&proactor);
        let (conn, peer) = accept_one(&accepts, addr);
        (proactor, conn, peer)
    }

    /// A loopback listener handed to `p`, and its address.
    fn listening(p: &Proactor) -> (Accepts, std::net::SocketAddr) {
        let listener = Listener::bind(&"127.0.0.1:0".parse::<Addr>().unwrap()).unwrap();
        let Addr::Tcp(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        (p.listen(listener).unwrap(), addr)
    }

    /// Connects a blocking peer (10 s read timeout) to `addr` and accepts it.
    fn accept_one(accepts: &Accepts, addr: std::net::SocketAddr) -> (Conn, std::net::TcpStream) {
        let accepted = accepts.accept();
        let peer = std::net::TcpStream::connect(addr).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (accepted.wait().into_result().unwrap().0, peer)
    }

    fn queued_writes_complete_in_order_and_arrive_in_order(backend: Backend) {
        let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend));
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

    fn a_full_write_queue_pushes_back_and_writable_says_when_to_go_on(backend: Backend) {
        let (_p, conn, mut peer) = pair(
            Proactor::builder()
                .backend(backend)
                .water_marks(64 * 1024, 1024),
        );
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
        assert_eq!(conn.queued_bytes(), 0, "every written byte given back");
        // An empty write is a write of nothing, not an error.
        let empty = conn.write_all(Vec::new()).unwrap().wait().into_result();
        assert_eq!(empty.map(|d| d.n).ok(), Some(0));
    }

    fn cancelling_a_pending_read_hands_the_buffer_back(backend: Backend) {
        let (_p, conn, _peer) = pair(Proactor::builder().backend(backend));
        let read = conn.read_some(vec![1, 2, 3]);
        read.cancel();
        assert!(matches!(read.wait(), Outcome::Cancelled(buf) if buf == vec![1, 2, 3]));
        // The connection still works.
        let again = conn.read_some(vec![0; 4]);
        drop(_peer);
        assert_eq!(again.wait().into_result().unwrap().n, 0, "end of stream");
    }

    fn closing_answers_every_outstanding_operation_once(backend: Backend) {
        let (_p, conn, _peer) = pair(Proactor::builder().backend(backend));
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

    fn read_exact_cut_short_fails_with_what_it_read(backend: Backend) {
        let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend));
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

    fn a_read_that_outlives_its_timeout_fails_with_its_buffer(backend: Backend) {
        let (_p, conn, _peer) = pair(Proactor::builder().backend(backend));
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

    fn completions_run_on_the_loop_or_on_the_pool_never_on_the_initiator(backend: Backend) {
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
            let on = pool.clone().map_or(CompleteOn::Loop, CompleteOn::Pool);
            let (_p, conn, mut peer) = pair(Proactor::builder().backend(backend).complete_on(on));
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
        // A pool that no longer takes work still gets its completions delivered (on the
        // loop, by the refused delivery job's drop), never lost.
        let closed = Arc::new(ThreadPool::new(1).unwrap());
        closed.close(crate::pool::Shutdown::Now);
        let p = Proactor::builder()
            .backend(backend)
            .complete_on(CompleteOn::Pool(closed))
            .build()
            .unwrap();
        assert_eq!(
            p.timer(Duration::from_millis(1)).wait(),
            Outcome::Completed(Ok(()))
        );
    }

    fn timers_and_file_reads_complete_through_tokens(backend: Backend) {
        let p = Proactor::builder().backend(backend).build().unwrap();
        assert_eq!(
            p.timer(Duration::from_millis(1)).wait(),
            Outcome::Completed(Ok(()))
        );
        let cancelled = p.timer(Duration::from_secs(3600));
        cancelled.cancel();
        assert_eq!(cancelled.wait(), Outcome::Cancelled(()));
        // An operation started inside a completion, on the loop's own thread, goes on with no
        // wake-up from outside (cargo-mutants: the loop's look at its inbox before it sleeps).
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = p.handle();
        p.timer(Duration::from_millis(1)).on_complete(move |_| {
            handle
                .timer(Duration::from_millis(1))
                .on_complete(move |o| tx.send(o.is_completed()).unwrap());
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(true));
        // A far timer has not fired when a near one armed after it has (same loop, in order).
        let far = p.timer(Duration::from_secs(3600));
        p.timer(Duration::from_millis(1))
            .wait()
            .into_result()
            .unwrap();
        assert!(!far.is_ready(), "an hour's timer fired early");
        assert_eq!(
            p.handles().len(),
            if backend == Backend::Emulated {
                p.loops()
            } else {
                0
            },
            "the emulated backend's reactors are handed out; io_uring has none"
        );
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
