//! The Connector on loopback: success hands the stream over, refused ports retry a bounded
//! number of times, a full backlog times out, cancellation is prompt and typed, Unix sockets,
//! and a reactor shutdown answers pending connects.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use posa::act::Outcome;
use posa::net::{Addr, ConnectError, ConnectOptions, Stream, connect};
use posa::reactor::{Reactor, ReactorHandle, ShutdownReport};

fn reactor() -> (ReactorHandle, JoinHandle<io::Result<ShutdownReport>>) {
    let mut r = Reactor::new().unwrap();
    let h = r.handle();
    (h, std::thread::spawn(move || r.run()))
}

fn stop(handle: ReactorHandle, thread: JoinHandle<io::Result<ShutdownReport>>) {
    drop(handle.shutdown(Duration::from_secs(1)));
    thread.join().unwrap().unwrap();
}

/// A listener that never accepts and whose backlog is full: new connects hang.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    // fill the accept queue (backlog 0 admits one; a few more for slack), non-blocking so a
    // connect that would hang is simply abandoned
    let fill = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .collect();
    (s, fill, addr)
}

fn quick(attempts: u32, timeout_ms: u64) -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_millis(timeout_ms),
        attempts,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ConnectOptions::default()
    }
}

#[test]
fn connects_and_hands_over_an_unregistered_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (h, t) = reactor();
    let outcome = connect(&h, Addr::Tcp(addr), ConnectOptions::default()).wait();
    let Outcome::Completed(Ok(Stream::Tcp(s))) = outcome else {
        panic!("expected a stream, got {outcome:?}")
    };
    assert_eq!(s.peer_addr().unwrap(), addr);
    let (_server_side, peer) = listener.accept().unwrap();
    assert_eq!(peer, s.local_addr().unwrap());
    // the stream is ours to register anywhere: a fresh poll takes it
    let poll = mio::Poll::new().unwrap();
    let mut s = s;
    poll.registry()
        .register(&mut s, mio::Token(1), mio::Interest::READABLE)
        .unwrap();
    stop(h, t);
}

#[test]
fn refused_port_is_retried_a_bounded_number_of_times() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // now closed
    let (h, t) = reactor();
    match connect(&h, Addr::Tcp(addr), quick(3, 1_000))
        .wait()
        .into_result()
    {
        Err(posa::act::Error::Failed(ConnectError::Failed { attempts, last })) => {
            assert_eq!(attempts, 3);
            assert_eq!(last.kind(), io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected refused after 3 attempts, got {other:?}"),
    }
    stop(h, t);
}

#[test]
fn full_backlog_times_out_after_the_last_attempt() {
    let (_listener, _fill, addr) = black_hole();
    let (h, t) = reactor();
    match connect(&h, Addr::Tcp(addr), quick(2, 50))
        .wait()
        .into_result()
    {
        Err(posa::act::Error::Failed(ConnectError::TimedOut { attempts })) => {
            assert_eq!(attempts, 2)
        }
        other => panic!("expected a time-out, got {other:?}"),
    }
    stop(h, t);
}

#[test]
fn cancelling_the_token_aborts_a_hanging_connect_with_a_typed_outcome() {
    let (_listener, _fill, addr) = black_hole();
    let (h, t) = reactor();
    let token = connect(&h, Addr::Tcp(addr), quick(1, 60_000));
    token.cancel();
    let outcome = token.wait();
    // Normally Cancelled; if the kernel completed the connect first, the stream comes back.
    assert!(outcome.is_cancelled(), "got {outcome:?}");
    stop(h, t);
}

#[test]
fn unix_socket_connect() {
    let path = std::env::temp_dir().join(format!("posa-connect-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (h, t) = reactor();
    let outcome = connect(&h, Addr::Unix(path.clone()), ConnectOptions::default()).wait();
    assert!(
        matches!(outcome, Outcome::Completed(Ok(Stream::Unix(_)))),
        "{outcome:?}"
    );
    assert!(listener.accept().is_ok());
    stop(h, t);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn reactor_shutdown_answers_a_pending_connect() {
    let (_listener, _fill, addr) = black_hole();
    let (h, t) = reactor();
    let token = connect(&h, Addr::Tcp(addr), quick(1, 60_000));
    drop(h.shutdown(Duration::ZERO));
    match token.wait().into_result() {
        Err(posa::act::Error::Failed(ConnectError::Shutdown)) => {}
        other => panic!("expected Shutdown, got {other:?}"),
    }
    t.join().unwrap().unwrap();
    // after the stop, a new request is answered at once, never hangs
    let late = connect(&h, Addr::Tcp(addr), quick(1, 60_000)).wait();
    assert!(
        matches!(late, Outcome::Completed(Err(ConnectError::Shutdown))),
        "{late:?}"
    );
}

/// A handler that connects from inside the reactor (`connect_from`) and reports the outcome.
struct Dialer {
    target: Addr,
    result: std::sync::mpsc::Sender<bool>,
    token: Option<posa::net::ConnectToken>,
}

impl posa::reactor::EventHandler for Dialer {
    fn open(&mut self, cx: &mut posa::reactor::Context<'_>) -> io::Result<()> {
        self.token = Some(posa::net::connect_from(
            cx,
            self.target.clone(),
            quick(1, 5_000),
        ));
        cx.set_timer(Duration::from_millis(1)); // poll the token without blocking the loop
        Ok(())
    }
    fn ready(&mut self, _: posa::reactor::Readiness, _: &mut posa::reactor::Context<'_>) {}
    fn timeout(&mut self, _: posa::reactor::TimerId, cx: &mut posa::reactor::Context<'_>) {
        match self.token.take().map(|t| t.try_take()) {
            Some(Ok(outcome)) => {
                let _ = self
                    .result
                    .send(matches!(outcome, Outcome::Completed(Ok(Stream::Tcp(_)))));
                cx.close();
            }
            Some(Err(pending)) => {
                self.token = Some(pending);
                cx.set_timer(Duration::from_millis(1));
            }
            None => cx.close(),
        }
    }
}

#[test]
fn a_handler_can_connect_from_inside_the_reactor() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (h, t) = reactor();
    let (tx, rx) = std::sync::mpsc::channel();
    let dialer = Dialer {
        target: Addr::Tcp(listener.local_addr().unwrap()),
        result: tx,
        token: None,
    };
    assert!(h.add(dialer).wait().into_result().is_ok());
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "connect from a handler failed"
    );
    assert!(listener.accept().is_ok());
    stop(h, t);
}

// ---- The proactor's connect, on both backends ----------------------------------------------
// (cargo-mutants, issue 14: no test connected through the proactor, so the io_uring
// backend's whole connect path could be removed unseen.)

use posa::proactor::{Backend, Proactor, skip_without_io_uring};

macro_rules! proactor_on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod proactor_emulated {
            $( #[test] fn $name() { super::$name(super::Backend::Emulated) } )*
        }
        mod proactor_uring {
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

proactor_on_both_backends!(
    proactor_connects_and_the_connection_carries_bytes_both_ways,
    proactor_connect_to_a_refused_port_fails_after_every_attempt,
    proactor_connect_to_a_full_backlog_times_out_after_the_last_attempt,
    proactor_connect_cancelled_while_hanging_answers_cancelled,
);

fn proactor(backend: Backend) -> Proactor {
    Proactor::builder().backend(backend).build().unwrap()
}

fn proactor_connects_and_the_connection_carries_bytes_both_ways(backend: Backend) {
    use std::io::{Read as _, Write as _};
    let p = proactor(backend);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let conn = p
        .connect(Addr::Tcp(listener.local_addr().unwrap()))
        .wait()
        .into_result()
        .expect("connected");
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"ping".to_vec())
        .unwrap()
        .wait()
        .into_result()
        .unwrap();
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    peer.write_all(b"pong").unwrap();
    let read = conn.read_exact(vec![0; 4]).wait().into_result().unwrap();
    assert_eq!(&read.buf[..], b"pong");
}

fn proactor_connect_to_a_refused_port_fails_after_every_attempt(backend: Backend) {
    let p = proactor(backend);
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // closed: connects are refused
    // Refused is retried every attempt; an error not worth retrying (no such socket file)
    // ends at the first.
    let missing = std::env::temp_dir().join(format!("posa-no-such-{}.sock", std::process::id()));
    for (to, want_attempts, want_kind) in [
        (Addr::Tcp(addr), 3, io::ErrorKind::ConnectionRefused),
        (Addr::Unix(missing), 1, io::ErrorKind::NotFound),
    ] {
        match p.connect_with(to, quick(3, 5_000)).wait().into_result() {
            Err(posa::act::Error::Failed(ConnectError::Failed { attempts, last })) => {
                assert_eq!(attempts, want_attempts, "{last}");
                assert_eq!(last.kind(), want_kind);
            }
            other => panic!("expected {want_kind:?} after {want_attempts}, got {other:?}"),
        }
    }
}

fn proactor_connect_to_a_full_backlog_times_out_after_the_last_attempt(backend: Backend) {
    let (_listener, _fill, addr) = black_hole();
    let p = proactor(backend);
    match p
        .connect_with(Addr::Tcp(addr), quick(2, 50))
        .wait()
        .into_result()
    {
        Err(posa::act::Error::Failed(ConnectError::TimedOut { attempts })) => {
            assert_eq!(attempts, 2)
        }
        other => panic!("expected a time-out, got {other:?}"),
    }
}

fn proactor_connect_cancelled_while_hanging_answers_cancelled(backend: Backend) {
    let (_listener, _fill, addr) = black_hole();
    let p = proactor(backend);
    let token = p.connect_with(Addr::Tcp(addr), quick(1, 60_000));
    token.cancel();
    let outcome = token.wait();
    // Normally Cancelled; if the kernel completed the connect first, the connection comes back.
    assert!(
        outcome.is_cancelled() || matches!(outcome, Outcome::Completed(Ok(_))),
        "got {outcome:?}"
    );
    // The loop is not left holding the attempt: a shutdown finishes.
    p.shutdown(Duration::ZERO);
}
