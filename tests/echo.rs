//! The echo server on real loopback sockets: many concurrent connections with random payloads,
//! half-close, abrupt resets, a client that never reads, idle timeout, the connection limit,
//! Unix sockets, and graceful shutdown. Every loop is bounded in count and time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use posa::net::Addr;
use posa::proactor::{Backend, skip_without_io_uring};
use posa::server::{ConnConfig, Model, Server, ServerConfig};

const SAFETY: Duration = Duration::from_secs(20);

fn start(model: Model, conn: ConnConfig, max_conns: usize) -> Server {
    start_on(model, Backend::Auto, conn, max_conns)
}

/// `model` with the proactor `backend` (the other models ignore it).
fn start_on(model: Model, backend: Backend, conn: ConnConfig, max_conns: usize) -> Server {
    let server = Server::start(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model,
        threads: 2,
        max_conns,
        conn,
        backend,
        ..ServerConfig::default()
    })
    .expect("server starts");
    if model == Model::Proactor && backend != Backend::Auto {
        let live = server.describe();
        assert!(live.contains(&format!("proactor/{backend}")), "{live}");
    }
    server
}

fn tcp_addr(server: &Server) -> std::net::SocketAddr {
    match server.local_addr() {
        Addr::Tcp(a) => *a,
        other => panic!("not tcp: {other}"),
    }
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(tcp_addr(server)).expect("connect");
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s.set_write_timeout(Some(SAFETY)).unwrap();
    s
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Writes everything, half-closes, reads until EOF: a full echo exchange.
fn exchange<S: Read + Write>(s: &mut S, payload: &[u8], shutdown: impl FnOnce(&S)) -> Vec<u8> {
    s.write_all(payload).expect("write");
    shutdown(s);
    let mut back = Vec::with_capacity(payload.len());
    s.read_to_end(&mut back).expect("read to EOF");
    back
}

fn raise_fd_limit() {
    // 500 client + 500 server sockets in one process: lift the soft limit to the hard one.
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct; no memory is shared.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn many_connections(model: Model, backend: Backend) {
    raise_fd_limit();
    let server = start_on(model, backend, ConnConfig::default(), 10_000);
    const CONNS: usize = 500;
    const THREADS: usize = 5;
    // open every connection first, so all 500 are concurrent
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(&server)).collect();
    let mut groups: Vec<Vec<TcpStream>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (i, c) in conns.drain(..).enumerate() {
        groups[i % THREADS].push(c);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, group)| {
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let mut bytes = 0;
                for mut c in group {
                    let size = 1 + (rng.next() % (64 * 1024)) as usize;
                    let payload = rng.bytes(size);
                    let back = exchange(&mut c, &payload, |s| s.shutdown(Shutdown::Write).unwrap());
                    assert!(
                        back == payload,
                        "echo differs ({} bytes sent, {} back)",
                        size,
                        back.len()
                    );
                    bytes += size;
                }
                bytes
            })
        })
        .collect();
    let sent: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let echo = server.conn_stats();
    let accepts = server.accept_stats();
    server.shutdown(Duration::from_secs(5));
    let reports = server.join().unwrap();
    assert_eq!(accepts.accepted.load(Ordering::Relaxed), CONNS as u64);
    assert_eq!(echo.bytes.sum(), sent as u64);
    assert_eq!(echo.closed.sum(), CONNS as u64, "each closed exactly once");
    assert!(
        reports.iter().all(|r| r.forced == 0 && r.jobs_dropped == 0),
        "{reports:?}"
    );
}

#[test]
fn five_hundred_concurrent_connections_echo_random_payloads_single_reactor() {
    many_connections(Model::Reactor, Backend::Auto);
}

#[test]
fn five_hundred_concurrent_connections_echo_random_payloads_reactor_pool() {
    many_connections(Model::ReactorPool, Backend::Auto);
}

#[test]
fn five_hundred_concurrent_connections_echo_random_payloads_leader_followers() {
    many_connections(Model::LeaderFollowers, Backend::Auto);
}

#[test]
fn five_hundred_concurrent_connections_echo_random_payloads_half_sync() {
    many_connections(Model::HalfSync, Backend::Auto);
}

#[test]
fn leader_followers_never_reads_past_the_bound_and_drains_gracefully() {
    bounded_and_graceful(Model::LeaderFollowers, Backend::Auto);
}

#[test]
fn half_sync_never_reads_past_the_bound_and_drains_gracefully() {
    bounded_and_graceful(Model::HalfSync, Backend::Auto);
}

/// The proactor scenarios, on each backend (`proactor_emulated::x`, `proactor_uring::x`).
macro_rules! proactor_on_both_backends {
    ($($name:ident => $scenario:ident),* $(,)?) => {
        mod proactor_emulated {
            $( #[test] fn $name() { super::$scenario(super::Model::Proactor, super::Backend::Emulated) } )*
        }
        mod proactor_uring {
            $(
                #[test]
                fn $name() {
                    if super::skip_without_io_uring(stringify!($name)) {
                        super::$scenario(super::Model::Proactor, super::Backend::IoUring)
                    }
                }
            )*
        }
    };
}

proactor_on_both_backends!(
    five_hundred_concurrent_connections_echo_random_payloads => many_connections,
    never_reads_past_the_bound_and_drains_gracefully => bounded_and_graceful,
    a_client_that_never_reads_cannot_grow_server_memory_past_the_bound => never_reading_client,
    idle_connection_is_closed_by_its_timer => idle_closed,
);

fn bounded_and_graceful(model: Model, backend: Backend) {
    let server = start_on(model, backend, ConnConfig::default(), 100);
    let mut c = connect(&server);
    let payload = Rng(7).bytes(1 << 20);
    let back = exchange(&mut c, &payload, |s| s.shutdown(Shutdown::Write).unwrap());
    assert!(back == payload);
    let echo = server.conn_stats();
    server.shutdown(Duration::from_secs(5));
    let reports = server.join().unwrap();
    assert!(echo.max_buffered.load(Ordering::Relaxed) <= ConnConfig::default().buffer);
    assert!(!reports.is_empty());
    assert!(reports.iter().all(|r| r.forced == 0), "{reports:?}");
}

#[test]
fn abrupt_reset_mid_stream_closes_that_connection_only() {
    let server = start(Model::Reactor, ConnConfig::default(), 100);
    let victim = connect(&server);
    let sock = socket2::Socket::from(victim);
    sock.set_linger(Some(Duration::ZERO)).unwrap(); // close sends RST
    (&sock).write_all(&[7u8; 10_000]).unwrap();
    drop(sock);
    let mut ok = connect(&server);
    let back = exchange(&mut ok, b"still serving", |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(back, b"still serving");
    let echo = server.conn_stats();
    server.shutdown(Duration::from_secs(5));
    server.join().unwrap();
    assert_eq!(echo.closed.sum(), 2);
}

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory_past_the_bound() {
    never_reading_client(Model::Reactor, Backend::Auto);
}

#[test]
fn half_sync_a_client_that_never_reads_cannot_grow_server_memory_past_the_bound() {
    never_reading_client(Model::HalfSync, Backend::Auto);
}

fn never_reading_client(model: Model, backend: Backend) {
    const BOUND: usize = 16 * 1024;
    let server = start_on(
        model,
        backend,
        ConnConfig {
            buffer: BOUND,
            idle_timeout: None,
            ..ConnConfig::default()
        },
        100,
    );
    let mut hog = connect(&server);
    // One round trip first: the server has accepted the connection and serves it. Without it,
    // on a loaded machine the writes below can fill a connection still in the accept queue,
    // and the shutdown then finds nothing to force.
    hog.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    hog.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    hog.set_nonblocking(true).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0usize;
    let mut blocked = 0;
    // Bounded: at most 256 MiB of attempts. Writes stall once every buffer on the path is full.
    while written < 256 << 20 && blocked < 2_000 {
        match (&hog).write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        blocked > 0,
        "server kept reading {written} bytes from a peer that never reads"
    );
    let echo = server.conn_stats();
    server.shutdown(Duration::from_millis(50)); // it cannot flush: the peer never reads
    let reports = server.join().unwrap();
    let max = echo.max_buffered.load(Ordering::Relaxed);
    assert!(
        max <= BOUND,
        "a connection buffered {max} bytes, bound {BOUND}"
    );
    assert!(written < 256 << 20, "backpressure never reached the client");
    // A peer that never half-closes never finishes on its own: on every model it is forced
    // at the deadline (and closes lingering, bounded by the linger time).
    assert_eq!(
        (echo.drained.sum(), echo.forced.sum()),
        (0, 1),
        "the stuck connection is forced at the deadline: {reports:?}"
    );
}

#[test]
fn idle_connection_is_closed_by_its_timer() {
    idle_closed(Model::Reactor, Backend::Auto);
}

/// Leader/Followers: idle timers armed by handlers that run beside the leader fire too.
/// (It does not kill `TimerAccess::with`'s wake-condition mutants: the leader here is woken
/// by other means in time; see docs/verification.md.)
#[test]
fn leader_followers_idle_connection_is_closed_by_its_timer() {
    idle_closed(Model::LeaderFollowers, Backend::Auto);
}

fn idle_closed(model: Model, backend: Backend) {
    let server = start_on(
        model,
        backend,
        ConnConfig {
            buffer: 1024,
            idle_timeout: Some(Duration::from_millis(50)),
            ..ConnConfig::default()
        },
        100,
    );
    let mut quiet = connect(&server);
    quiet.write_all(b"x").unwrap();
    let mut back = Vec::new();
    quiet
        .read_to_end(&mut back)
        .expect("server closes the idle connection");
    assert_eq!(back, b"x");
    let echo = server.conn_stats();
    server.shutdown(Duration::from_secs(1));
    server.join().unwrap();
    assert_eq!(echo.idle_closed.sum(), 1);
}

#[test]
fn connection_limit_refuses_cleanly_and_frees_places() {
    let server = start(Model::Reactor, ConnConfig::default(), 2);
    let mut a = connect(&server);
    let mut b = connect(&server);
    // both are served (and so both places are taken before the third connects)
    for s in [&mut a, &mut b] {
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    let mut refused = connect(&server);
    let mut buf = [0u8; 1];
    let n = refused.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a refused connection is closed, not served");
    drop((a, b));
    let accepts = server.accept_stats();
    server.shutdown(Duration::from_secs(1));
    server.join().unwrap();
    assert_eq!(accepts.rejected_limit.load(Ordering::Relaxed), 1);
}

#[test]
fn unix_socket_echo_with_half_close() {
    let path = std::env::temp_dir().join(format!("posa-echo-{}.sock", std::process::id()));
    let server = Server::start(ServerConfig {
        addr: Addr::Unix(path.clone()),
        ..ServerConfig::default()
    })
    .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    let payload = Rng(42).bytes(200_000);
    let back = exchange(&mut s, &payload, |s| s.shutdown(Shutdown::Write).unwrap());
    assert!(back == payload);
    server.shutdown(Duration::from_secs(1));
    server.join().unwrap();
    assert!(!path.exists(), "socket file removed at shutdown");
}

#[test]
fn graceful_shutdown_serves_open_connections_until_their_peers_finish() {
    let server = start(Model::ReactorPool, ConnConfig::default(), 100);
    let mut c = connect(&server);
    c.write_all(&[5u8; 4096]).unwrap();
    let mut first = vec![0u8; 4096];
    c.read_exact(&mut first).unwrap(); // the server has read (and echoed) this chunk
    server.shutdown(Duration::from_secs(30));
    // Draining: no new connections, but this one is still served.
    let back = exchange(&mut c, &[6u8; 100_000], |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(
        back,
        vec![6u8; 100_000],
        "served in full after the shutdown began"
    );
    let reports = server.join().unwrap();
    assert!(reports.iter().all(|r| r.forced == 0), "{reports:?}");
    assert!(
        reports.iter().map(|r| r.drained).sum::<usize>() >= 1,
        "{reports:?}"
    );
}

/// A connection that is still sending when the drain begins keeps being served until its
/// peer finishes, however long the grace. cargo-mutants found the drain deadline's arithmetic
/// (`now + grace` as `now - grace`) unchecked: in the test above the peer finished within the
/// loop's first drain dispatch, before any deadline was looked at. Here the peer waits until
/// the drain has visibly begun (the listener refuses connections), then sends.
#[test]
fn a_peer_that_sends_after_the_drain_began_is_served_until_it_finishes() {
    sends_after_drain_began(Model::Reactor); // one loop: acceptor and connection together
}

#[test]
fn leader_followers_a_peer_that_sends_after_the_drain_began_is_served_until_it_finishes() {
    sends_after_drain_began(Model::LeaderFollowers); // one shared demultiplexer
}

fn sends_after_drain_began(model: Model) {
    let server = start(model, ConnConfig::default(), 100);
    let addr = tcp_addr(&server);
    let mut c = connect(&server);
    c.write_all(&[7u8; 1024]).unwrap();
    let mut first = vec![0u8; 1024];
    c.read_exact(&mut first).unwrap(); // accepted and served
    server.shutdown(Duration::from_secs(30));
    // Bounded: the loop closes its listener in its first drain turn.
    let mut refused = false;
    for _ in 0..100_000 {
        match TcpStream::connect(addr) {
            // Refused, or reset by a listener that closed with this probe in its backlog.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                refused = true;
                break;
            }
            Err(e) => panic!("connect: {e}"),
            Ok(probe) => drop(probe), // not yet draining; it ends at once
        }
        std::thread::yield_now();
    }
    assert!(refused, "the listener never closed");
    let back = exchange(&mut c, &[8u8; 100_000], |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(back, vec![8u8; 100_000], "served after the drain began");
    let reports = server.join().unwrap();
    assert!(reports.iter().all(|r| r.forced == 0), "{reports:?}");
}

#[test]
fn ipv6_loopback_echo() {
    let server = Server::start(ServerConfig {
        addr: "[::1]:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .expect("bind [::1]: IPv6 loopback is part of the supported setup");
    let Addr::Tcp(addr) = server.local_addr().clone() else {
        unreachable!()
    };
    assert!(addr.is_ipv6());
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    let back = exchange(&mut c, b"over ipv6", |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_eq!(back, b"over ipv6");
    server.shutdown(Duration::from_secs(1));
    server.join().unwrap();
}
