//! Shutdown that loses nothing, on every model, as a user meets it: `posa echo-server` in a
//! child process, real loopback sockets, SIGTERM/SIGINT from outside.
//!
//! - 20 clients each send 8 MiB and half-close; SIGTERM arrives while every one of them is in
//!   flight: each gets every byte back in order, then an orderly end of stream, and the server
//!   exits by itself, reporting 20 connections finished on their own and none forced.
//! - A client that never half-closes is forced at the deadline and counted; it still gets
//!   everything the server echoed, then an orderly end of stream.
//! - Lingering close: a client's reply is waiting in its socket and it keeps sending data the
//!   server will not read when the server forces the connection: the reply arrives whole,
//!   then end of stream, never a reset.
//! - A second signal forces at once (the grace is a minute; the client sees its end of stream
//!   long before).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const CLIENTS: usize = 20;
const PER_CLIENT: usize = 8 << 20;
/// Bounds every wait, so a broken server fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(120);

/// `posa echo-server` in a child process, with its stderr collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// Each stderr line, as it comes.
    incoming: mpsc::Receiver<String>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(model: &str, args: &[&str]) -> Server {
        let (model, backend) = match model {
            "proactor-emulated" => ("proactor", Some("emulated")),
            "proactor-uring" => ("proactor", Some("uring")),
            m => (m, None),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posa"));
        cmd.args(["echo-server", "--model", model, "--addr", "127.0.0.1:0"])
            .args(["--threads", "2"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(b) = backend {
            cmd.args(["--backend", b]);
        }
        let mut child = cmd.spawn().expect("spawn posa echo-server");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, incoming) = mpsc::channel();
        let reader = {
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = line_tx.send(line.clone());
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let banner = wait_line(&incoming, "listening on");
        let addr = banner
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {banner:?}"));
        Server {
            child,
            addr,
            lines,
            incoming,
            reader: Some(reader),
        }
    }

    /// Waits (bounded) for the server to log a line containing `what`.
    fn logged(&self, what: &str) -> String {
        wait_line(&self.incoming, what)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) of our own child process, by its pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill");
    }

    /// Waits (bounded) for the server to exit by itself; returns its final report line.
    fn exit(mut self) -> String {
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(BOUND)
            .expect("the server exits by itself")
            .expect("wait");
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let lines = self.lines.lock().unwrap().clone();
        assert!(status.success(), "{status:?}: {lines:#?}");
        lines
            .iter()
            .rev()
            .find(|l| l.contains("stopped:"))
            .cloned()
            .unwrap_or_else(|| panic!("no final report: {lines:#?}"))
    }
}

fn wait_line(incoming: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        let line = incoming
            .recv_timeout(BOUND)
            .unwrap_or_else(|e| panic!("the server never logged {what:?}: {e}"));
        if line.contains(what) {
            return line;
        }
    }
}

/// A process that has exited, to leave in a `Server` whose child was taken.
fn dummy_child() -> Child {
    Command::new("true").spawn().expect("true")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (finished on their own, forced) from the final report line.
fn counts(report: &str) -> (usize, usize) {
    let number_before = |what: &str| -> usize {
        let head = report
            .split(what)
            .next()
            .unwrap_or_else(|| panic!("{what:?} not in {report:?}"));
        head.split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {what:?} in {report:?}"))
    };
    assert!(report.contains("finished on their own"), "{report}");
    (
        number_before(" connections finished on their own"),
        number_before(" forced at the deadline"),
    )
}

fn pattern(client: usize, offset: usize) -> u8 {
    ((offset * 31 + client * 7) % 251) as u8
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// 20 clients × 8 MiB, half-closed, SIGTERM while all are in flight: nothing lost.
fn drain_loses_nothing(model: &str) {
    let server = Server::start(model, &["--drain-grace", "60"]);
    let (progress_tx, progress_rx) = mpsc::channel::<usize>();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = server.addr;
            let progress = progress_tx.clone();
            thread::spawn(move || -> Result<usize, String> {
                let mut s = connect(addr);
                let mut w = s.try_clone().unwrap();
                let writer = thread::spawn(move || -> std::io::Result<()> {
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut off = 0;
                    while off < PER_CLIENT {
                        for (k, b) in chunk.iter_mut().enumerate() {
                            *b = pattern(i, off + k);
                        }
                        w.write_all(&chunk)?;
                        off += chunk.len();
                    }
                    w.shutdown(Shutdown::Write)
                });
                let mut got = 0usize;
                let mut told = false;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = s
                        .read(&mut buf)
                        .map_err(|e| format!("client {i}: after {got} bytes: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    for (k, &b) in buf[..n].iter().enumerate() {
                        if b != pattern(i, got + k) {
                            return Err(format!("client {i}: wrong byte at {}", got + k));
                        }
                    }
                    got += n;
                    if !told && got >= 1 << 20 {
                        told = true;
                        let _ = progress.send(i);
                    }
                }
                writer
                    .join()
                    .unwrap()
                    .map_err(|e| format!("client {i} write: {e}"))?;
                Ok(got)
            })
        })
        .collect();
    drop(progress_tx);
    // Every client has had at least 1 MiB back: all are in flight. Now the signal.
    for _ in 0..CLIENTS {
        progress_rx
            .recv_timeout(BOUND)
            .expect("every client gets its first MiB back");
    }
    server.signal(libc::SIGTERM);
    let signalled = std::time::Instant::now();
    let mut total = 0;
    for (i, c) in clients.into_iter().enumerate() {
        let got = c.join().unwrap().unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(got, PER_CLIENT, "{model}: client {i} got every byte back");
        total += got;
    }
    let report = server.exit();
    // Figures for the record (not asserted): what came back, and how long the drain took.
    eprintln!(
        "{model}: {total} of {} bytes back; exited {:?} after SIGTERM; {report}",
        CLIENTS * PER_CLIENT,
        signalled.elapsed()
    );
    assert_eq!(counts(&report), (CLIENTS, 0), "{model}: {report}");
}

/// A client that never half-closes is forced at the deadline (1 s), counted, and still gets
/// what the server echoed, then an orderly end of stream.
fn a_client_that_never_finishes_is_forced_and_counted(model: &str) {
    let server = Server::start(model, &["--drain-grace", "1"]);
    let mut s = connect(server.addr);
    let request: Vec<u8> = (0..100_000).map(|k| pattern(1, k)).collect();
    s.write_all(&request).unwrap();
    let mut back = vec![0u8; request.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, request);
    server.signal(libc::SIGTERM);
    // Still served while draining.
    s.write_all(b"more").unwrap();
    let mut more = [0u8; 4];
    s.read_exact(&mut more).unwrap();
    assert_eq!(&more, b"more");
    // Never half-closed: at the deadline the server ends its side (an orderly EOF).
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "{model}: an orderly end of stream, got {end:?}"
    );
    assert!(rest.is_empty(), "{model}: nothing unexpected");
    drop(s);
    let report = server.exit();
    assert_eq!(counts(&report), (0, 1), "{model}: {report}");
}

/// The reply waits in the client's socket, and the client keeps sending what the server will
/// never read, when the server forces the connection (no grace): the whole reply, then end of
/// stream, never a reset.
fn a_forced_close_lingers_so_the_reply_is_not_reset(model: &str) {
    let server = Server::start(model, &["--drain-grace", "0"]);
    let mut s = connect(server.addr);
    let reply_len = 32 * 1024;
    let request: Vec<u8> = (0..reply_len).map(|k| pattern(2, k)).collect();
    s.write_all(&request).unwrap();
    // Wait (without reading it) until the whole reply sits in our receive buffer.
    let mut peek = vec![0u8; reply_len];
    let mut ready = false;
    for _ in 0..10_000_000 {
        if s.peek(&mut peek).unwrap() == reply_len {
            ready = true;
            break;
        }
        thread::yield_now();
    }
    assert!(ready, "{model}: the reply arrived");
    server.signal(libc::SIGTERM);
    // Keep sending (what the server may still echo before the deadline, then discards) until
    // the server ends its stream; only then end ours. At most 256 MiB.
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut w = s.try_clone().unwrap();
    let writer = {
        let ended = Arc::clone(&ended);
        thread::spawn(move || {
            let junk = vec![7u8; 64 * 1024];
            for _ in 0..4096 {
                if ended.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                if w.write_all(&junk).is_err() {
                    return false; // the server closed without reading to our end: a reset
                }
            }
            w.shutdown(Shutdown::Write).is_ok()
        })
    };
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    ended.store(true, std::sync::atomic::Ordering::Release);
    assert!(end.is_ok(), "{model}: a reset destroyed the reply: {end:?}");
    assert!(
        got.len() >= reply_len,
        "{model}: the reply was cut: {}",
        got.len()
    );
    assert!(
        got[..reply_len] == request[..],
        "{model}: the whole reply first"
    );
    // What the server echoed of our later data before the force is fine; nothing else.
    assert!(
        got[reply_len..].iter().all(|&b| b == 7),
        "{model}: only our own data after the reply"
    );
    assert!(
        writer.join().unwrap(),
        "{model}: the server read our data to its end"
    );
    let report = server.exit();
    assert_eq!(counts(&report), (0, 1), "{model}: {report}");
}

/// The grace is a minute; the second signal forces at once, so the client that never
/// half-closes sees the server end its stream long before.
fn a_second_signal_forces_at_once(model: &str) {
    let server = Server::start(model, &["--drain-grace", "60"]);
    let mut s = connect(server.addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    server.signal(libc::SIGINT);
    // Signals of one kind coalesce while pending: let the first be taken before the second.
    server.logged("signal received; draining");
    // Served on after the first signal...
    s.write_all(b"again").unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"again");
    server.signal(libc::SIGINT);
    // ...and forced by the second: an orderly end of stream within 30 s, not 60.
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "{model}: forced at once, with an orderly end: {end:?}"
    );
    drop(s);
    let report = server.exit();
    assert_eq!(counts(&report), (0, 1), "{model}: {report}");
}

macro_rules! on_every_model {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                fn run(model: &str) {
                    if model == "proactor-uring"
                        && !posa::proactor::skip_without_io_uring(concat!(stringify!($test), "_proactor_uring"))
                    {
                        return;
                    }
                    super::$test(model);
                }
                #[test] fn reactor() { run("reactor") }
                #[test] fn reactor_pool() { run("reactor-pool") }
                #[test] fn leader_followers() { run("leader-followers") }
                #[test] fn half_sync() { run("half-sync") }
                #[test] fn proactor_emulated() { run("proactor-emulated") }
                #[test] fn proactor_uring() { run("proactor-uring") }
            }
        )*
    };
}

on_every_model!(
    drain_loses_nothing,
    a_client_that_never_finishes_is_forced_and_counted,
    a_forced_close_lingers_so_the_reply_is_not_reset,
    a_second_signal_forces_at_once,
);
