//! One service, every model: the work service (request/response), a user's key-value
//! protocol (examples/kv_server) and the lifecycle hooks, served through `Server::serve` on
//! every model and both proactor backends, over loopback.

#[path = "../examples/kv_server/kv.rs"]
mod kv;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use posa::net::{Addr, Peer, ProtocolError, Service};
use posa::proactor::{Backend, skip_without_io_uring};
use posa::server::{Model, Server, ServerConfig, Work, WorkService};

const SAFETY: Duration = Duration::from_secs(20);

fn serve<S: Service>(model: Model, backend: Backend, service: S) -> Server {
    let server = Server::serve(
        ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            model,
            threads: 2,
            backend,
            ..ServerConfig::default()
        },
        service,
    )
    .expect("server starts");
    if model == Model::Proactor && backend != Backend::Auto {
        assert!(server.describe().contains(&format!("proactor/{backend}")));
    }
    server
}

fn connect(server: &Server) -> TcpStream {
    let Addr::Tcp(addr) = *server.local_addr() else {
        panic!("not tcp")
    };
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s.set_write_timeout(Some(SAFETY)).unwrap();
    s
}

/// Pipelined work requests of every kind and several sizes, written in odd-sized pieces so
/// requests straddle reads: every reply is its request, in order.
fn work_round_trip(model: Model, backend: Backend) {
    let server = serve(model, backend, WorkService::new());
    let mut c = connect(&server);
    let mut requests = Vec::new();
    for i in 0..60u32 {
        let work = match i % 4 {
            0 => Work::None,
            1 => Work::Compute(Duration::from_micros(20)),
            2 => Work::Block(Duration::from_micros(200)),
            _ => Work::ReadFile(4096), // no file configured: answered without a read
        };
        work.encode(16 + (i as usize * 37) % 3000, i, &mut requests);
    }
    let writer = {
        let mut w = c.try_clone().unwrap();
        let requests = requests.clone();
        std::thread::spawn(move || {
            for piece in requests.chunks(777) {
                w.write_all(piece).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("replies until EOF");
    writer.join().unwrap();
    assert!(
        back == requests,
        "{model}: {} of {} bytes",
        back.len(),
        requests.len()
    );
    drop(server);
}

/// The key-value example's protocol: commands and replies line by line, split lines too.
fn kv_round_trip(model: Model, backend: Backend) {
    let server = serve(model, backend, kv::Kv::default());
    let c = connect(&server);
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let mut ask = |line: &str| {
        // Each command written in two pieces: the service sees partial lines.
        let (a, b) = line.split_at(line.len() / 2);
        w.write_all(a.as_bytes()).unwrap();
        w.flush().unwrap();
        w.write_all(b.as_bytes()).unwrap();
        let mut reply = String::new();
        r.read_line(&mut reply).unwrap();
        reply
    };
    assert_eq!(ask("SET color blue sky\n"), "OK\n");
    assert_eq!(ask("GET color\n"), "VALUE blue sky\n");
    assert_eq!(ask("DEL color\n"), "OK\n");
    assert_eq!(ask("GET color\n"), "NONE\n");
    assert!(ask("FLY away\n").starts_with("ERR"));
    drop(server);
}

/// Counts the lifecycle hooks; a request of `!` is malformed.
#[derive(Default)]
struct Hooks {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// The service: one byte is one request, echoed.
struct HookSvc(Arc<Hooks>);

impl Service for HookSvc {
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if input[0] == b'!' {
            return Err(ProtocolError::new("bang"));
        }
        Ok(Some(1))
    }
    fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(request);
    }
    fn opened(&self, _: &Peer) {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn closed(&self, _: &Peer) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Malformed input closes the connection after what was answered before it; every
/// connection is opened and closed once through the hooks.
fn protocol_error_and_hooks(model: Model, backend: Backend) {
    let hooks = Arc::new(Hooks::default());
    let server = serve(model, backend, HookSvc(Arc::clone(&hooks)));
    let mut good = connect(&server);
    good.write_all(b"abc").unwrap();
    let mut three = [0u8; 3];
    good.read_exact(&mut three).unwrap();
    assert_eq!(&three, b"abc");
    let mut bad = connect(&server);
    bad.write_all(b"xy!z").unwrap();
    let mut back = Vec::new();
    // The server answers x and y, then closes (lingering: an orderly end of stream).
    bad.read_to_end(&mut back)
        .expect("an orderly close, not a reset");
    assert_eq!(back, b"xy");
    good.shutdown(Shutdown::Write).unwrap();
    assert_eq!(good.read(&mut three).unwrap(), 0);
    drop((good, bad));
    server.shutdown(Duration::from_secs(5));
    server.join().unwrap();
    assert_eq!(hooks.opened.load(Ordering::SeqCst), 2, "{model}");
    assert_eq!(hooks.closed.load(Ordering::SeqCst), 2, "{model}");
}

macro_rules! on_every_model {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test] fn reactor() { $name(Model::Reactor, Backend::Auto) }
                #[test] fn reactor_pool() { $name(Model::ReactorPool, Backend::Auto) }
                #[test] fn leader_followers() { $name(Model::LeaderFollowers, Backend::Auto) }
                #[test] fn half_sync() { $name(Model::HalfSync, Backend::Auto) }
                #[test] fn proactor_emulated() { $name(Model::Proactor, Backend::Emulated) }
                #[test]
                fn proactor_uring() {
                    if skip_without_io_uring(concat!(stringify!($name), "::proactor_uring")) {
                        $name(Model::Proactor, Backend::IoUring)
                    }
                }
            }
        )*
    };
}

on_every_model!(work_round_trip, kv_round_trip, protocol_error_and_hooks);
