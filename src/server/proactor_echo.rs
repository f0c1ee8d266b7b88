//! The echo service written the way a proactor user writes it: initiate a read; on its
//! completion, a write; on that completion, the next read. Accepts likewise: each completed
//! accept initiates the next.
use crate::sync::atomic::Ordering;
use std::io;
use std::time::Duration;

use super::{Run, Server, ServerConfig};
use crate::act::Outcome;
use crate::net::{AcceptStats, ConnGuard, ConnLimit, ConnStats, Listener};
use crate::proactor::{Accepts, Conn, Proactor, ProactorHandle};
use crate::sync::Arc;

/// What every connection's callbacks share.
struct Service {
    accepts: Accepts,
    proactor: ProactorHandle,
    limit: ConnLimit,
    stats: Arc<ConnStats>,
    accept_stats: Arc<AcceptStats>,
    idle: Option<Duration>,
    chain: crate::intercept::Chain,
}

/// One connection; dropped (and counted closed) when its last operation has answered.
struct Echo {
    conn: Conn,
    service: Arc<Service>,
    /// The peer ended its stream and got every byte back (set by `finish`).
    finished: crate::sync::atomic::AtomicBool,
    _guard: ConnGuard,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.conn.close();
        let finished = self.finished.load(Ordering::Acquire);
        self.service.stats.count_close(!finished);
    }
}

pub(super) fn start(config: ServerConfig, listener: Listener) -> io::Result<Server> {
    let local_addr = listener.local_addr()?;
    let proactor = Proactor::builder()
        .backend(config.backend)
        .threads(config.threads.max(1))
        // A connection's bytes in flight are one receive buffer: the echo's bound.
        .recv_buffers(256, config.echo.buffer.clamp(1, 16 * 1024))
        .reactor(config.reactor_config())
        .build()?;
    let accepts = proactor.listen(listener)?;
    let limit = ConnLimit::new(config.max_conns);
    let stats = Arc::new(ConnStats::default());
    let accept_stats = Arc::new(AcceptStats::default());
    let service = Arc::new(Service {
        accepts,
        proactor: proactor.handle(),
        limit: limit.clone(),
        stats: Arc::clone(&stats),
        accept_stats: Arc::clone(&accept_stats),
        idle: config.echo.idle_timeout,
        chain: config.interceptors.clone(),
    });
    accept_next(service);
    Ok(Server {
        local_addr,
        run: Run::Proactor(proactor),
        limit,
        accept_stats,
        conn_stats: stats,
        signals: crate::sync::Mutex::new(None),
    })
}

/// Initiate an accept; on its completion, start the connection and initiate the next.
fn accept_next(service: Arc<Service>) {
    let token = service.accepts.accept();
    token.on_complete(move |outcome| match outcome {
        Outcome::Completed(Ok((conn, peer))) => {
            if !admitted(&service, peer) {
                service
                    .accept_stats
                    .rejected_intercept
                    .fetch_add(1, Ordering::Relaxed);
                conn.close();
                accept_next(service);
                return;
            }
            match service.limit.try_acquire() {
                Some(guard) => {
                    service
                        .accept_stats
                        .accepted
                        .fetch_add(1, Ordering::Relaxed);
                    let echo = Arc::new(Echo {
                        conn,
                        service: Arc::clone(&service),
                        finished: crate::sync::atomic::AtomicBool::new(false),
                        _guard: guard,
                    });
                    read_next(echo);
                }
                None => {
                    service
                        .accept_stats
                        .rejected_limit
                        .fetch_add(1, Ordering::Relaxed);
                    conn.close();
                }
            }
            accept_next(service);
        }
        Outcome::Completed(Err(e)) => {
            // EMFILE and friends: back off instead of spinning on a readable listener.
            tracing::warn!(error = %e, "proactor echo: accept failed; retrying in 10 ms");
            service
                .accept_stats
                .exhausted_accepts
                .fetch_add(1, Ordering::Relaxed);
            let retry = Arc::clone(&service);
            service
                .proactor
                .timer(Duration::from_millis(10))
                .on_complete(move |o| {
                    if o.is_completed() {
                        accept_next(retry);
                    }
                });
        }
        _ => {} // cancelled: the proactor is shutting down
    });
}

/// The interceptors' verdict on an accepted connection.
fn admitted(service: &Service, peer: crate::net::Peer) -> bool {
    use crate::intercept::{Dispatch, Ended, Point};
    if service.chain.is_empty() {
        return true;
    }
    let mut d = Dispatch::new(Point::Accept, 0);
    if let crate::net::Peer::Tcp(a) = peer {
        d.peer = Some(a);
    }
    let ok = service.chain.before(&d).is_ok();
    if ok {
        service.chain.after(&d, Ended::Ok, Duration::ZERO);
    }
    ok
}

/// Initiate a receive; on its completion, write what came, and on that, receive again. The
/// receive borrows a buffer only when data arrives (a provided buffer ring on io_uring), so an
/// idle connection holds none; the bytes are copied into the write's own buffer, which the
/// write hands back and which is freed before the next receive.
fn read_next(echo: Arc<Echo>) {
    let token = match echo.service.idle {
        Some(idle) => echo.conn.recv_timeout(idle),
        None => echo.conn.recv(),
    };
    token.on_complete(move |outcome| match outcome {
        Outcome::Completed(Ok(data)) if data.is_empty() => finish(echo),
        Outcome::Completed(Ok(data)) => {
            let n = data.len();
            let stats = &echo.service.stats;
            stats.bytes.add(n as u64);
            stats.max_buffered.fetch_max(n, Ordering::Relaxed);
            let out = data.to_vec();
            drop(data); // the receive buffer goes back at once
            match echo.conn.write_all(out) {
                Ok(written) => written.on_complete(move |o| match o {
                    Outcome::Completed(Ok(_)) => read_next(echo),
                    Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => {}
                    _ => echo.service.stats.errors.incr(),
                }),
                Err(_) => echo.service.stats.errors.incr(),
            }
        }
        Outcome::Completed(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            echo.service.stats.idle_closed.incr();
        }
        // The connection was closed under us (the drain's deadline): it closes lingering.
        Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => {}
        _ => echo.service.stats.errors.incr(),
    });
}

/// The peer ended its stream: shut down writing after the queued writes, then close.
fn finish(echo: Arc<Echo>) {
    echo.finished.store(true, Ordering::Release);
    echo.conn.shutdown_write().on_complete(move |_| drop(echo));
}
