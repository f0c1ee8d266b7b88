//! The proactor's driver of a [`Service`], written the way a proactor user writes it:
//! initiate a receive; on its completion, frame the requests, call the service for each
//! (in the completion handler: on the loop, or on the pool of `CompleteOn::Pool`) and
//! initiate the write of the replies; on that completion, the next receive. Accepts likewise:
//! each completed accept initiates the next.
use crate::sync::atomic::Ordering;
use std::io;
use std::time::Duration;

use super::{Run, Server, ServerConfig};
use crate::act::Outcome;
use crate::net::{AcceptStats, ConnGuard, ConnLimit, ConnStats, Listener, Requests, Service};
use crate::proactor::{Accepts, Conn, Proactor, ProactorHandle};
use crate::sync::Arc;

/// What every connection's callbacks share.
struct Shared<S> {
    service: Arc<S>,
    accepts: Accepts,
    proactor: ProactorHandle,
    limit: ConnLimit,
    stats: Arc<ConnStats>,
    accept_stats: Arc<AcceptStats>,
    idle: Option<Duration>,
    chain: crate::intercept::Chain,
}

/// One connection; dropped (and counted closed) when its last operation has answered.
struct Served<S: Service> {
    conn: Conn,
    peer: crate::net::Peer,
    shared: Arc<Shared<S>>,
    /// The peer ended its stream and got every byte back (set by `finish`).
    finished: crate::sync::atomic::AtomicBool,
    _guard: ConnGuard,
}

impl<S: Service> Drop for Served<S> {
    fn drop(&mut self) {
        self.conn.close();
        self.shared.service.closed(&self.peer);
        let finished = self.finished.load(Ordering::Acquire);
        self.shared.stats.count_close(!finished);
    }
}

pub(super) fn start<S: Service>(
    config: ServerConfig,
    listener: Listener,
    service: Arc<S>,
) -> io::Result<Server> {
    let local_addr = listener.local_addr()?;
    let proactor = Proactor::builder()
        .backend(config.backend)
        .threads(config.threads.max(1))
        // A connection's bytes in flight are one receive buffer: the echo's bound.
        .recv_buffers(256, config.conn.buffer.clamp(1, 16 * 1024))
        .reactor(config.reactor_config())
        .build()?;
    let accepts = proactor.listen(listener)?;
    let limit = ConnLimit::new(config.max_conns);
    let stats = Arc::new(ConnStats::default());
    let accept_stats = Arc::new(AcceptStats::default());
    let shared = Arc::new(Shared {
        service,
        accepts,
        proactor: proactor.handle(),
        limit: limit.clone(),
        stats: Arc::clone(&stats),
        accept_stats: Arc::clone(&accept_stats),
        idle: config.conn.idle_timeout,
        chain: config.interceptors.clone(),
    });
    accept_next(shared);
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
fn accept_next<S: Service>(service: Arc<Shared<S>>) {
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
                    service.service.opened(&peer);
                    let served = Arc::new(Served {
                        conn,
                        peer,
                        shared: Arc::clone(&service),
                        finished: crate::sync::atomic::AtomicBool::new(false),
                        _guard: guard,
                    });
                    read_next(served, Requests::new());
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
            tracing::warn!(error = %e, "proactor service: accept failed; retrying in 10 ms");
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
fn admitted<S>(service: &Shared<S>, peer: crate::net::Peer) -> bool {
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

/// Initiate a receive; on its completion, frame and serve what came and write the replies,
/// and on that, receive again. The receive borrows a buffer only when data arrives (a provided
/// buffer ring on io_uring), so an idle connection holds none; the replies go into the
/// write's own buffer, which the write hands back and which is freed before the next receive.
/// The connection's framing state travels with its one operation in flight.
fn read_next<S: Service>(served: Arc<Served<S>>, mut requests: Requests) {
    let token = match served.shared.idle {
        Some(idle) => served.conn.recv_timeout(idle),
        None => served.conn.recv(),
    };
    token.on_complete(move |outcome| match outcome {
        Outcome::Completed(Ok(data)) if data.is_empty() => finish(served),
        Outcome::Completed(Ok(data)) => {
            let shared = &served.shared;
            shared.stats.bytes.add(data.len() as u64);
            let mut out = Vec::new();
            let service = &*shared.service;
            let framed = requests.feed(service, &data, |r| service.call(r, &mut out));
            drop(data); // the receive buffer goes back at once
            shared
                .stats
                .max_buffered
                .fetch_max(out.len(), Ordering::Relaxed);
            if let Err(e) = framed {
                // Malformed input: what is answered goes out, then the close lingers.
                tracing::debug!(peer = %served.peer, error = %e, "proactor service");
                shared.stats.errors.incr();
                // Dropping the last reference closes lingering, once the replies are out (a
                // dropped token would cancel the write).
                if let Ok(written) = served.conn.write_all(out) {
                    written.on_complete(move |_| drop(served));
                }
                return;
            }
            if out.is_empty() {
                return read_next(served, requests); // a partial request: read on
            }
            match served.conn.write_all(out) {
                Ok(written) => written.on_complete(move |o| match o {
                    Outcome::Completed(Ok(_)) => read_next(served, requests),
                    Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => {}
                    _ => served.shared.stats.errors.incr(),
                }),
                Err(_) => served.shared.stats.errors.incr(),
            }
        }
        Outcome::Completed(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            served.shared.stats.idle_closed.incr();
        }
        // The connection was closed under us (the drain's deadline): it closes lingering.
        Outcome::Cancelled(_) | Outcome::CancelledAfterEffect(_) => {}
        _ => served.shared.stats.errors.incr(),
    });
}

/// The peer ended its stream: shut down writing after the queued writes, then close.
fn finish<S: Service>(served: Arc<Served<S>>) {
    served.finished.store(true, Ordering::Release);
    served
        .conn
        .shutdown_write()
        .on_complete(move |_| drop(served));
}
