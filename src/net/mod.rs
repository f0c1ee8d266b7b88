//! Acceptor-Connector: the connection-setup half of a server, decoupled from the service.
//!
//! - [`Acceptor`] is an [`EventHandler`](crate::reactor::EventHandler) that owns a listener
//!   (TCP v4/v6 or Unix), accepts until `WouldBlock` (within a budget), makes a service handler
//!   for each connection through a [`ServiceFactory`], and activates it on a reactor: its own, or
//!   round-robin over a pool of reactors. It enforces a connection limit and survives file
//!   descriptor exhaustion without spinning.
//! - [`connect`] / [`connect_from`] are the Connector: a non-blocking connect completed on
//!   writable + `SO_ERROR`, with a per-attempt timeout and bounded retries (exponential backoff,
//!   full jitter, retryable errors only), answered through an [`act`](crate::act) token.
//! - [`ConnLimit`] caps the connections open at once; [`ConnStats`] is what a connection
//!   service counts.
//!
//! The services that run on these connections, and the server that puts them on a threading
//! model, live above this layer, in [`crate::server`] and [`crate::half_sync`].
//!
//! Addresses are `host:port` (`127.0.0.1:7000`, `[::1]:7000`) or `unix:/path`.

mod acceptor;
mod connector;
mod linger;
mod service;

pub use acceptor::{AcceptStats, Acceptor, Placement, REFUSED_LINGERING, ServiceFactory};
pub use connector::{ConnectError, ConnectOptions, ConnectToken, connect, connect_from};
#[cfg_attr(
    not(all(target_os = "linux", feature = "io-uring")),
    allow(unused_imports)
)] // the io_uring backend's
pub(crate) use connector::{backoff_delay, jitter_seed, retryable};
pub use linger::{Closing, LINGER_READ_BUDGET, Linger, LingerState};
pub use service::{ProtocolError, Requests, Service};

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::sync::Arc;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// Where to listen or connect: a socket address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// TCP over IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix domain stream socket at this path.
    Unix(PathBuf),
}

/// An address string that is neither `host:port` nor `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError(String);

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: expected IP:PORT (127.0.0.1:7000, [::1]:7000) or unix:/path",
            self.0
        )
    }
}

impl std::error::Error for AddrParseError {}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddrParseError(s.to_owned()));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Addr::Tcp)
            .map_err(|_| AddrParseError(s.to_owned()))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket, TCP or Unix, non-blocking.
#[derive(Debug)]
pub enum Listener {
    /// TCP listener.
    Tcp(mio::net::TcpListener),
    /// Unix listener (the path is removed when it drops).
    Unix(mio::net::UnixListener, PathBuf),
}

/// Connections a TCP listener's accept queue holds (the kernel caps it at somaxconn).
pub const LISTEN_BACKLOG: i32 = 1024;

impl Listener {
    /// Binds to `addr`. For a Unix path, a stale socket file left by a dead server is removed
    /// first; any other existing file is an error.
    pub fn bind(addr: &Addr) -> io::Result<Self> {
        match addr {
            Addr::Tcp(a) => {
                // The accept queue holds LISTEN_BACKLOG connections (capped by the kernel's
                // somaxconn): a burst of connects beyond it has its SYNs dropped and waits a
                // 1 s retransmit. std's 128 made opening 10,000 connections take minutes on
                // a busy machine.
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(*a),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_reuse_address(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&(*a).into())?;
                socket.listen(LISTEN_BACKLOG)?;
                let std: std::net::TcpListener = socket.into();
                Ok(Listener::Tcp(mio::net::TcpListener::from_std(std)))
            }
            Addr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if !meta.file_type().is_socket() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("a server is listening on {}", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                mio::net::UnixListener::bind(path).map(|l| Listener::Unix(l, path.clone()))
            }
        }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Tcp),
            Listener::Unix(_, p) => Ok(Addr::Unix(p.clone())),
        }
    }

    /// Accepts one pending connection.
    ///
    /// Accepted TCP connections have `TCP_NODELAY` set: a request/response service must not
    /// hold a reply back waiting for the peer's delayed ACK (Nagle), which costs up to 40 ms
    /// per exchange once several messages are in flight.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                // Best effort: a socket that refuses the option still works, only slower.
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Peer::Tcp(a))
            }),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// Who connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer's address.
    Tcp(SocketAddr),
    /// A Unix socket peer (unnamed).
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// A connected stream, TCP or Unix, non-blocking.
#[derive(Debug)]
pub enum Stream {
    /// TCP stream.
    Tcp(mio::net::TcpStream),
    /// Unix stream.
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// The peer's address (`NotConnected` if the stream is not connected).
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Tcp),
            Stream::Unix(_) => Ok(Peer::Unix),
        }
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

/// The stream's descriptor, taken out of it (for code that drives the socket itself, such as
/// the proactor's io_uring backend).
impl From<Stream> for std::os::fd::OwnedFd {
    fn from(stream: Stream) -> Self {
        match stream {
            Stream::Tcp(s) => std::net::TcpStream::from(s).into(),
            Stream::Unix(s) => std::os::unix::net::UnixStream::from(s).into(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// Writes `buf[*sent..]` until it is all out or the socket would block, advancing `sent`.
/// Returns whether anything was written. The one non-blocking write loop of the echo handlers
/// and the proactor's write queue.
pub(crate) fn write_from(stream: &mut Stream, buf: &[u8], sent: &mut usize) -> io::Result<bool> {
    let mut progress = false;
    while *sent < buf.len() {
        match stream.write(&buf[*sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *sent += n;
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}

/// A cap on concurrent connections, shared by every acceptor and reactor of a server. Clones
/// share the cap.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    inner: Arc<LimitInner>,
}

#[derive(Debug)]
struct LimitInner {
    max: usize,
    open: AtomicUsize,
}

impl ConnLimit {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(LimitInner {
                max,
                open: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes a place if one is free; the guard gives it back when dropped. One compare-and-swap
    /// decides, so racing callers can never take more places than the cap.
    pub fn try_acquire(&self) -> Option<ConnGuard> {
        let inner = &self.inner;
        let mut open = inner.open.load(Ordering::Acquire);
        loop {
            if open >= inner.max {
                return None;
            }
            match inner.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(ConnGuard {
                        limit: self.clone(),
                    });
                }
                Err(seen) => open = seen,
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }
}

/// One place under a [`ConnLimit`]; released on drop.
#[derive(Debug)]
pub struct ConnGuard {
    limit: ConnLimit,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limit.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection service counts, across all its connections and threads (the echo
/// service on every model, half-sync connections). The per-event counts are per-thread
/// [`Counter`](crate::tss::Counter)s: a read on one loop thread never contends with a read on
/// another (a shared atomic here would bounce one cache line between all of them).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Bytes read (and so served or owed).
    pub bytes: crate::tss::Counter,
    /// The most bytes any connection held at once.
    pub max_buffered: AtomicUsize,
    /// Connections closed by the idle timeout.
    pub idle_closed: crate::tss::Counter,
    /// Connections closed because of an I/O error (resets included).
    pub errors: crate::tss::Counter,
    /// Connections closed.
    pub closed: crate::tss::Counter,
    /// Set when the server begins to drain (a signal, or `Server::shutdown`).
    pub draining: crate::sync::atomic::AtomicBool,
    /// Connections that finished on their own while draining (their peer half-closed and got
    /// every byte back).
    pub drained: crate::tss::Counter,
    /// Connections still open at the drain's deadline, closed lingering.
    pub forced: crate::tss::Counter,
}

impl ConnStats {
    /// Counts a connection closing: as drained or forced if the server is draining.
    pub fn count_close(&self, forced: bool) {
        self.closed.incr();
        if self.draining.load(crate::sync::atomic::Ordering::Acquire) {
            if forced {
                self.forced.incr();
            } else {
                self.drained.incr();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_typed_errors() {
        assert_eq!(
            "127.0.0.1:7000".parse::<Addr>().unwrap(),
            Addr::Tcp("127.0.0.1:7000".parse().unwrap())
        );
        assert!(matches!("[::1]:0".parse::<Addr>(), Ok(Addr::Tcp(a)) if a.is_ipv6()));
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        for bad in ["", "localhost", "unix:", "1.2.3.4", "127.0.0.1:99999"] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} parsed");
        }
        assert!(
            "nope"
                .parse::<Addr>()
                .unwrap_err()
                .to_string()
                .contains("unix:/path")
        );
    }

    #[test]
    fn conn_limit_caps_and_releases() {
        let limit = ConnLimit::new(2);
        let a = ConnLimit::try_acquire(&limit).unwrap();
        let _b = ConnLimit::try_acquire(&limit).unwrap();
        assert!(ConnLimit::try_acquire(&limit).is_none());
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(ConnLimit::try_acquire(&limit).is_some());
    }

    #[test]
    fn unix_bind_refuses_a_regular_file_and_replaces_a_stale_socket() {
        let dir = std::env::temp_dir().join(format!("posa-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = Listener::bind(&Addr::Unix(file.clone())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let sock = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // leaves a dead socket file
        let l = Listener::bind(&Addr::Unix(sock.clone())).unwrap();
        drop(l);
        assert!(!sock.exists(), "the listener removes its socket file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
