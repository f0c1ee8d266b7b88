//! The echo client and server starter the echo benches share (included with `#[path]`).

#![allow(dead_code)] // each bench uses what it needs

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use posa::intercept::Chain;
use posa::net::Addr;
use posa::server::{Model, Server, ServerConfig};

/// Starts a posa echo server on loopback.
pub fn server(model: Model, threads: usize) -> (Server, SocketAddr) {
    server_with(model, threads, Chain::new())
}

/// Starts a posa echo server on loopback with interceptors.
pub fn server_with(model: Model, threads: usize, interceptors: Chain) -> (Server, SocketAddr) {
    start(ServerConfig {
        model,
        threads,
        interceptors,
        ..ServerConfig::default()
    })
}

/// Starts a posa echo server with `config` on a free loopback port.
pub fn start(config: ServerConfig) -> (Server, SocketAddr) {
    let server = Server::start(ServerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..config
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
pub struct Client {
    poll: Poll,
    events: Events,
    conns: HashMap<Token, Conn>,
    payload: Vec<u8>,
    scratch: Vec<u8>,
    size: usize,
    depth: usize,
}

impl Client {
    pub fn new(addr: SocketAddr, conns: usize, size: usize, depth: usize) -> Self {
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
    pub fn round(&mut self, mut latency: Option<&mut hdrhistogram::Histogram<u64>>) {
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
