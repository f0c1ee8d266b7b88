//! The servers a user would pick instead of posa, for `posa compare`: a blocking thread per
//! connection (the classic baseline) and tokio's multi-thread runtime (behind the default
//! `tokio-peer` feature). Both echo with the same wire behaviour as posa's models (echo what
//! is read, half-close, bounded buffer, connection limit) and stop on SIGINT/SIGTERM.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Names `posa echo-server --model` accepts on top of posa's own models.
pub const NAMES: &[&str] = if cfg!(feature = "tokio-peer") {
    &["thread-per-conn", "tokio"]
} else {
    &["thread-per-conn"]
};

/// Runs baseline `name` on `addr` until SIGINT/SIGTERM; prints the listening line first.
pub fn run(
    name: &str,
    addr: &str,
    threads: usize,
    max_conns: usize,
    buffer: usize,
) -> io::Result<()> {
    match name {
        "thread-per-conn" => thread_per_conn(addr, max_conns, buffer),
        #[cfg(feature = "tokio-peer")]
        "tokio" => tokio_echo(addr, threads, max_conns, buffer),
        other => {
            let _ = threads;
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown model {other:?}"),
            ))
        }
    }
}

/// Waits for SIGINT or SIGTERM on a helper thread, then exits the process: the baselines
/// have no graceful drain (that is one of the things posa's models add).
fn exit_on_signal() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("posa-baseline-signals".to_owned())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::process::exit(0);
            }
        })?;
    Ok(())
}

fn thread_per_conn(addr: &str, max_conns: usize, buffer: usize) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    exit_on_signal()?;
    eprintln!(
        "posa echo-server: listening on {} (model thread-per-conn)",
        listener.local_addr()?
    );
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::AcqRel) >= max_conns {
            open.fetch_sub(1, Ordering::AcqRel);
            drop(stream); // over the limit: closed at once
            continue;
        }
        let open = Arc::clone(&open);
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = echo_blocking(stream, buffer);
            open.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            // Out of threads: the stream was moved into the failed closure and is closed.
            tracing::warn!("thread-per-conn: cannot start a thread; connection closed");
        }
    }
    Ok(())
}

fn echo_blocking(mut stream: TcpStream, buffer: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; buffer.clamp(1, 64 * 1024)];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buf[..n])?;
    }
}

#[cfg(feature = "tokio-peer")]
fn tokio_echo(addr: &str, threads: usize, max_conns: usize, buffer: usize) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    exit_on_signal()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "posa echo-server: listening on {} (model tokio)",
            listener.local_addr()?
        );
        let open = Arc::new(AtomicUsize::new(0));
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            if open.fetch_add(1, Ordering::AcqRel) >= max_conns {
                open.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buf = vec![0u8; buffer.clamp(1, 64 * 1024)];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
                open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    })
}
