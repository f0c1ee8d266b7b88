//! Question: what does the proactor's completion model cost against the reactor's readiness
//! model, on the same echo workload and the same machine?
//!
//! Servers, on loopback, started once: posa `reactor` (1 thread), posa `proactor` (1 loop
//! thread, emulated on a reactor), and, for scale, posa `reactor-pool` and `proactor` with 2
//! threads each. The client is a mio loop on the bench thread; every connection keeps `depth`
//! messages in flight (1: ping-pong; 8: pipelined). An iteration is one round: every
//! connection sends `depth` messages and reads all of them back, checked byte for byte.
//!
//! Throughput comes from criterion (time per round, elements = messages). Latency is a
//! distribution: after the criterion groups, a fixed run per configuration records each
//! message's round trip in an HDR histogram and prints p50/p99/p99.9/max (skipped under
//! `--test`, the smoke run).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use posa::net::Addr;
use posa::net::echo::{Model, Server, ServerConfig};

fn server(model: Model, threads: usize) -> (Server, SocketAddr) {
    let server = Server::start(ServerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        model,
        threads,
        ..ServerConfig::default()
    })
    .expect("posa server");
    let addr = match server.local_addr() {
        Addr::Tcp(a) => *a,
        Addr::Unix(_) => unreachable!(),
    };
    (server, addr)
}

struct Conn {
    stream: TcpStream,
    /// Bytes of the current round still to send.
    to_send: usize,
    sent: usize,
    received: usize,
    /// When each in-flight message was sent (for latency), oldest first.
    sent_at: std::collections::VecDeque<Instant>,
}

/// A mio client: `conns` connections, each with `depth` messages of `size` bytes per round.
struct Client {
    poll: Poll,
    events: Events,
    conns: HashMap<Token, Conn>,
    payload: Vec<u8>,
    scratch: Vec<u8>,
    size: usize,
    depth: usize,
}

impl Client {
    fn new(addr: SocketAddr, conns: usize, size: usize, depth: usize) -> Self {
        let poll = Poll::new().expect("poll");
        let mut map = HashMap::new();
        for i in 0..conns {
            let mut stream = TcpStream::from_std(
                std::net::TcpStream::connect(addr).expect("connect to the bench server"),
            );
            stream.set_nodelay(true).expect("nodelay");
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register");
            map.insert(
                Token(i),
                Conn {
                    stream,
                    to_send: 0,
                    sent: 0,
                    received: 0,
                    sent_at: std::collections::VecDeque::new(),
                },
            );
        }
        Self {
            poll,
            events: Events::with_capacity(1024),
            conns: map,
            payload: (0..size).map(|i| (i % 251) as u8).collect(),
            scratch: vec![0; 64 * 1024],
            size,
            depth,
        }
    }

    /// One round; records each message's round trip into `latency` if given.
    fn round(&mut self, mut latency: Option<&mut hdrhistogram::Histogram<u64>>) {
        let total = self.size * self.depth;
        for c in self.conns.values_mut() {
            c.to_send = total;
            c.sent = 0;
            c.received = 0;
            c.sent_at.clear();
        }
        let mut done = 0;
        let mut pending: Vec<Token> = self.conns.keys().copied().collect();
        while done < self.conns.len() {
            for token in pending.drain(..) {
                let c = self.conns.get_mut(&token).expect("conn");
                // Write what this round still owes.
                while c.sent < c.to_send {
                    let off = c.sent % self.size;
                    let end = (self.size - off).min(c.to_send - c.sent);
                    match c.stream.write(&self.payload[off..off + end]) {
                        Ok(n) => {
                            if off == 0 {
                                c.sent_at.push_back(Instant::now());
                            }
                            c.sent += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                // Read what came back, checking every byte.
                loop {
                    match c.stream.read(&mut self.scratch) {
                        Ok(0) => panic!("server closed the connection"),
                        Ok(n) => {
                            for (i, b) in self.scratch[..n].iter().enumerate() {
                                let at = (c.received + i) % self.size;
                                assert_eq!(*b, self.payload[at], "echo corrupted");
                            }
                            let before = c.received / self.size;
                            c.received += n;
                            let after = c.received / self.size;
                            for _ in before..after {
                                if let (Some(sent), Some(h)) =
                                    (c.sent_at.pop_front(), latency.as_deref_mut())
                                {
                                    let ns = u64::try_from(sent.elapsed().as_nanos())
                                        .unwrap_or(u64::MAX);
                                    h.saturating_record(ns.max(1));
                                }
                            }
                            if c.received == total {
                                done += 1;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
            if done == self.conns.len() {
                break;
            }
            self.poll
                .poll(&mut self.events, Some(Duration::from_secs(10)))
                .expect("poll");
            assert!(!self.events.is_empty(), "echo stalled for 10 s");
            pending.extend(self.events.iter().map(|e| e.token()));
        }
    }
}

const CONFIGS: [(usize, usize, usize); 6] = [
    // (size, connections, depth)
    (64, 1, 1),
    (64, 100, 1),
    (64, 100, 8),
    (4096, 1, 1),
    (4096, 100, 1),
    (4096, 100, 8),
];

fn bench(c: &mut Criterion) {
    let servers = [
        ("reactor", server(Model::Reactor, 1)),
        ("proactor", server(Model::Proactor, 1)),
        ("reactor_pool_2", server(Model::ReactorPool, 2)),
        ("proactor_2", server(Model::Proactor, 2)),
    ];
    for (size, conns, depth) in CONFIGS {
        let mut g = c.benchmark_group(format!("rvp/{size}B/{conns}conn/depth{depth}"));
        g.throughput(Throughput::Elements((conns * depth) as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(3));
        for (name, (_, addr)) in &servers {
            let mut client = Client::new(*addr, conns, size, depth);
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.round(None);
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }
    if std::env::args().any(|a| a == "--test") {
        return; // smoke run: no latency pass
    }
    eprintln!("\nlatency per message (round trip), 300 rounds after 30 warm-up rounds:");
    eprintln!("config                          model            p50       p99     p99.9       max");
    for (size, conns, depth) in CONFIGS {
        for (name, (_, addr)) in &servers {
            let mut client = Client::new(*addr, conns, size, depth);
            for _ in 0..30 {
                client.round(None);
            }
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .expect("histogram bounds");
            for _ in 0..300 {
                client.round(Some(&mut h));
            }
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            eprintln!(
                "{:<31} {:<14} {:>7.1}µs {:>7.1}µs {:>7.1}µs {:>7.1}µs",
                format!("{size}B {conns}conn depth{depth}"),
                name,
                us(0.5),
                us(0.99),
                us(0.999),
                h.max() as f64 / 1000.0
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
