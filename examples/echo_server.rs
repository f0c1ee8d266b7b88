//! A TCP/Unix echo server on posa's reactor: the library's `Server` with a few flags.
//!
//! ```sh
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000 --model reactor-pool
//! printf 'hello\n' | nc -q1 127.0.0.1 7000     # prints hello
//! ```
//! Ctrl-C drains connections for up to 5 s, then exits. `RUST_LOG=debug` shows connections.

use std::time::Duration;

use clap::Parser;
use posa::net::Addr;
use posa::server::{ConnConfig, Model, Server, ServerConfig};

#[derive(Parser)]
struct Args {
    /// IP:PORT or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: Addr,
    /// reactor, reactor-pool, leader-followers, half-sync or proactor.
    #[arg(long, default_value = "reactor")]
    model: Model,
    /// Threads for reactor-pool, leader-followers and proactor; workers for half-sync.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Idle timeout in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    idle_timeout: u64,
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let server = Server::start(ServerConfig {
        addr: args.addr,
        model: args.model,
        threads: args.threads,
        conn: ConnConfig {
            idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
            ..ConnConfig::default()
        },
        ..ServerConfig::default()
    })?;
    server.shutdown_on_signals(Duration::from_secs(5))?;
    println!("echo server on {}", server.local_addr());
    for report in server.join()? {
        println!("reactor stopped: {report:?}");
    }
    Ok(())
}
