//! A line-based key-value server: a protocol of one's own on any of posa's models, chosen
//! with one flag. The service (`kv.rs`) is written once, as a `posa::net::Service`; posa owns
//! the sockets, buffers, backpressure, half-close, drain and lingering close on every model.
//!
//! ```sh
//! cargo run --release --example kv_server -- --model half-sync
//! printf 'SET a 1\nGET a\nDEL a\nGET a\n' | nc -q1 127.0.0.1 7001   # OK, VALUE 1, OK, NONE
//! ```
//! Ctrl-C drains connections for up to 5 s, then exits.

mod kv;

use std::time::Duration;

use clap::Parser;
use posa::net::Addr;
use posa::server::{Model, Server, ServerConfig};

#[derive(Parser)]
struct Args {
    /// IP:PORT or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7001")]
    addr: Addr,
    /// reactor, reactor-pool, leader-followers, half-sync or proactor.
    #[arg(long, default_value = "reactor")]
    model: Model,
    /// Threads for reactor-pool, leader-followers and proactor; workers for half-sync.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let server = Server::serve(
        ServerConfig {
            addr: args.addr,
            model: args.model,
            threads: args.threads,
            ..ServerConfig::default()
        },
        kv::Kv::default(),
    )?;
    server.shutdown_on_signals(Duration::from_secs(5))?;
    println!(
        "kv server on {} ({}, {})",
        server.local_addr(),
        args.model,
        server.describe()
    );
    server.join()?;
    Ok(())
}
