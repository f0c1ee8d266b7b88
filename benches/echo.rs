//! Question: what does posa's reactor cost against a hand-written mio loop, and how do its
//! threading models compare with tokio's multi-thread runtime, for an echo service?
//!
//! Servers, all on loopback, started once: posa `reactor`, posa `reactor` with an idle timeout
//! armed on every connection and re-armed on every read, posa `reactor-pool` (2 threads), posa
//! `leader-followers` (2 threads sharing one demultiplexer), posa `half-sync` (1 reactor
//! thread + 2 pool workers, every read a pool job and a reply through the reactor), a raw
//! single-threaded mio echo loop, and tokio's multi-thread runtime (2 workers). The client is a
//! mio loop on the bench thread: one message in flight per connection; an iteration is one round
//! trip on every connection. Client and servers share the machine's 2 cores.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use posa::server::{ConnConfig, Model, Server, ServerConfig};

#[path = "common/echo_client.rs"]
mod echo_client;

fn posa_server(model: Model, idle: Option<Duration>) -> (Server, SocketAddr) {
    echo_client::start(ServerConfig {
        model,
        threads: 2,
        conn: ConnConfig {
            idle_timeout: idle,
            ..ConnConfig::default()
        },
        ..ServerConfig::default()
    })
}

/// The baseline: the smallest correct edge-triggered mio echo loop, one thread.
fn raw_mio_server() -> SocketAddr {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut poll = Poll::new().expect("poll");
        poll.registry()
            .register(&mut listener, Token(0), Interest::READABLE)
            .expect("register");
        let mut events = Events::with_capacity(1024);
        let mut conns: HashMap<Token, (TcpStream, Vec<u8>)> = HashMap::new();
        let mut next = 1;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            poll.poll(&mut events, None).expect("poll");
            for e in events.iter() {
                if e.token() == Token(0) {
                    while let Ok((mut s, _)) = listener.accept() {
                        let t = Token(next);
                        next += 1;
                        poll.registry()
                            .register(&mut s, t, Interest::READABLE | Interest::WRITABLE)
                            .expect("register");
                        conns.insert(t, (s, Vec::new()));
                    }
                    continue;
                }
                let Some((s, pending)) = conns.get_mut(&e.token()) else {
                    continue;
                };
                let mut closed = false;
                loop {
                    while !pending.is_empty() {
                        match s.write(pending) {
                            Ok(n) => drop(pending.drain(..n)),
                            Err(_) => break,
                        }
                    }
                    if !pending.is_empty() {
                        break;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed {
                    conns.remove(&e.token());
                }
            }
        }
    });
    addr
}

fn tokio_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .expect("tokio");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            loop {
                let (mut s, _) = l.accept().await.expect("accept");
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
    rx.recv().expect("tokio server address")
}

/// Closed-loop echo client over `conns` connections.
struct Client {
    poll: Poll,
    events: Events,
    conns: Vec<TcpStream>,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr, conns: usize, size: usize) -> Self {
        let poll = Poll::new().expect("poll");
        let conns = (0..conns)
            .map(|i| {
                let std = std::net::TcpStream::connect(addr).expect("connect");
                std.set_nodelay(true).expect("nodelay");
                std.set_nonblocking(true).expect("nonblocking");
                let mut s = TcpStream::from_std(std);
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE)
                    .expect("register");
                s
            })
            .collect();
        Self {
            poll,
            events: Events::with_capacity(1024),
            conns,
            msg: vec![0xA5; size],
            buf: vec![0; size],
        }
    }

    /// One message out and back on every connection.
    fn round(&mut self) {
        let size = self.msg.len();
        for s in &mut self.conns {
            s.write_all(&self.msg).expect("send");
        }
        let mut got = vec![0usize; self.conns.len()];
        let mut done = 0;
        while done < self.conns.len() {
            self.poll
                .poll(&mut self.events, Some(Duration::from_secs(10)))
                .expect("poll");
            assert!(!self.events.is_empty(), "echo server stopped answering");
            for e in self.events.iter() {
                let i = e.token().0;
                loop {
                    match self.conns[i].read(&mut self.buf[..size - got[i]]) {
                        Ok(0) => panic!("server closed"),
                        Ok(n) => {
                            got[i] += n;
                            if got[i] == size {
                                done += 1;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let (_reactor, reactor_addr) = posa_server(Model::Reactor, None);
    let (_idle, idle_addr) = posa_server(Model::Reactor, Some(Duration::from_secs(60)));
    let (_pool, pool_addr) = posa_server(Model::ReactorPool, None);
    let (_lf, lf_addr) = posa_server(Model::LeaderFollowers, None);
    let (_hs, hs_addr) = posa_server(Model::HalfSync, None);
    let servers = [
        ("posa_reactor", reactor_addr),
        ("posa_reactor_idle_timeout", idle_addr),
        ("posa_reactor_pool", pool_addr),
        ("posa_leader_followers", lf_addr),
        ("posa_half_sync", hs_addr),
        ("raw_mio", raw_mio_server()),
        ("tokio_mt", tokio_server()),
    ];
    for (size, conns) in [(64, 1), (64, 100), (4096, 1), (4096, 100)] {
        let mut g = c.benchmark_group(format!("echo/{size}B/{conns}conn"));
        g.throughput(Throughput::Elements(conns as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(3));
        for (name, addr) in servers {
            let mut client = Client::new(addr, conns, size);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.round();
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
