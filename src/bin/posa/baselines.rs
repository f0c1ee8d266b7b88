//! The servers a user would pick instead of posa, for `posa compare`: a blocking thread per
//! connection (the classic baseline) and tokio's multi-thread and current-thread runtimes
//! (behind the default `tokio-peer` feature). They serve the same [`Service`] as posa's
//! models with the same wire behaviour (framing through [`Requests`], replies in order,
//! half-close, bounded buffer, connection limit) and stop on SIGINT/SIGTERM. The service's
//! work runs where a user of each would run it without further thought: in the connection's
//! thread, or inline in the tokio task (so blocking work blocks a tokio worker, as it blocks
//! posa's reactor).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use posa::net::{Requests, Service};

type Svc = Arc<dyn Service>;

/// Names `posa echo-server --model` accepts on top of posa's own models.
pub const NAMES: &[&str] = if cfg!(feature = "tokio-peer") {
    &["thread-per-conn", "tokio", "tokio-current"]
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
    service: Svc,
) -> io::Result<()> {
    match name {
        "thread-per-conn" => thread_per_conn(addr, max_conns, buffer, service),
        #[cfg(feature = "tokio-peer")]
        "tokio" => tokio_serve(addr, Some(threads), max_conns, buffer, service),
        #[cfg(feature = "tokio-peer")]
        "tokio-current" => tokio_serve(addr, None, max_conns, buffer, service),
        other => {
            let _ = (threads, service);
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

/// A listener with posa's accept queue depth ([`posa::net::LISTEN_BACKLOG`]), non-blocking.
fn listen(addr: &str) -> io::Result<TcpListener> {
    let addr: std::net::SocketAddr = addr.parse().map_err(io::Error::other)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(posa::net::LISTEN_BACKLOG)?;
    Ok(TcpListener::from(socket))
}

fn thread_per_conn(addr: &str, max_conns: usize, buffer: usize, service: Svc) -> io::Result<()> {
    // The same accept queue as posa's listeners (std's default is 128), so the comparison
    // measures the threading model, not the backlog.
    let listener = listen(addr)?;
    listener.set_nonblocking(false)?;
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
        let service = Arc::clone(&service);
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = serve_blocking(stream, buffer, &*service);
            open.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            // Out of threads: the stream was moved into the failed closure and is closed.
            tracing::warn!("thread-per-conn: cannot start a thread; connection closed");
        }
    }
    Ok(())
}

fn serve_blocking(mut stream: TcpStream, buffer: usize, service: &dyn Service) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; buffer.clamp(1, 64 * 1024)];
    let mut requests = Requests::new();
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        requests.feed(service, &buf[..n], |r| service.call(r, &mut out))?;
        stream.write_all(&out)?;
        out.clear();
    }
}

#[cfg(feature = "tokio-peer")]
fn tokio_serve(
    addr: &str,
    threads: Option<usize>,
    max_conns: usize,
    buffer: usize,
    service: Svc,
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = match threads {
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    let name = if threads.is_some() {
        "tokio"
    } else {
        "tokio-current"
    };
    exit_on_signal()?;
    rt.block_on(async move {
        // The same accept queue as posa's listeners (tokio's bind gives 128 here).
        let listener = tokio::net::TcpListener::from_std(listen(addr)?)?;
        eprintln!(
            "posa echo-server: listening on {} (model {name})",
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
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buf = vec![0u8; buffer.clamp(1, 64 * 1024)];
                let mut requests = Requests::new();
                let mut out = Vec::new();
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let served =
                                requests.feed(&*service, &buf[..n], |r| service.call(r, &mut out));
                            if served.is_err() || stream.write_all(&out).await.is_err() {
                                break;
                            }
                            out.clear();
                        }
                    }
                }
                let _ = stream.shutdown().await;
                open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    })
}
