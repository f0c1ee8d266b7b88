//! Connects on io_uring: `IORING_OP_CONNECT` per attempt, with the connector's per-attempt
//! timeout (a loop timer that cancels the attempt), bounded retries with full-jitter backoff,
//! and the interceptors around each attempt.

#[allow(clippy::wildcard_imports)]
use super::*;

impl RingLoop {
    // ---- connect --------------------------------------------------------------------------

    pub(in crate::proactor::uring) fn add_connect(
        &mut self,
        addr: crate::net::Addr,
        options: ConnectOptions,
        c: crate::act::Completer<Conn, ConnectError>,
    ) {
        // (It was `Instant::now().elapsed()`: about zero, so every connect drew the same
        // backoffs and retries moved in lockstep; cargo-mutants' surviving `^`/`|` showed it.)
        let seed = crate::net::jitter_seed();
        let key = self.connects.insert(Connecting {
            addr,
            options,
            c: Some(c),
            attempts: 0,
            rng: seed,
            op: None,
            timer: None,
            watched: None,
        });
        self.attempt(key);
    }

    pub(super) fn attempt(&mut self, key: u64) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        if k.c.as_ref().is_none_or(|c| c.is_cancelled()) {
            if let Some(c) = k.c.take() {
                c.cancel(());
            }
            self.connects.remove(key);
            return;
        }
        if !k.options.interceptors.is_empty() {
            use crate::intercept::{Dispatch, Point};
            let mut d = Dispatch::new(Point::Connect, u64::from(k.attempts));
            if let crate::net::Addr::Tcp(a) = &k.addr {
                d.peer = Some(*a);
            }
            if let Err(rejection) = k.options.interceptors.before(&d) {
                let attempts = k.attempts;
                return self.stop_connect(
                    key,
                    ConnectError::Rejected {
                        attempts,
                        rejection,
                    },
                );
            }
            k.watched = Some((d, Instant::now()));
        }
        k.attempts += 1;
        let addr = match &k.addr {
            crate::net::Addr::Tcp(a) => socket2::SockAddr::from(*a),
            crate::net::Addr::Unix(p) => match socket2::SockAddr::unix(p) {
                Ok(a) => a,
                Err(e) => return self.attempt_failed(key, e),
            },
        };
        let sock = match socket2::Socket::new(addr.domain(), socket2::Type::STREAM.cloexec(), None)
        {
            Ok(s) => s,
            Err(e) => return self.attempt_failed(key, e),
        };
        if addr.is_ipv4() || addr.is_ipv6() {
            let _ = sock.set_tcp_nodelay(true);
        }
        let fd = OwnedFd::from(sock);
        let addr = Box::new(addr);
        let sqe =
            opcode::Connect::new(sys::fd(fd.as_raw_fd()), addr.as_ptr().cast(), addr.len()).build();
        let timeout = k.options.timeout;
        let op = self.submit(
            sqe,
            Entry::Connect {
                connect: key,
                fd,
                _addr: addr,
            },
        );
        let timer = self
            .timers
            .arm(TimerFor::ConnectAttempt(key), Instant::now() + timeout);
        if let Some(k) = self.connects.get_mut(key) {
            k.op = Some(op);
            k.timer = Some(timer);
        }
    }

    pub(super) fn connect_done(&mut self, key: u64, fd: OwnedFd, res: i32) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        k.op = None;
        if k.c.is_none() {
            // Already answered (stopped while in flight): nothing more to do.
            self.connects.remove(key);
            return;
        }
        if let Some(t) = k.timer.take() {
            self.timers.cancel(t);
        }
        if res < 0 {
            drop(fd);
            let error = if res == -libc::ECANCELED {
                io::ErrorKind::TimedOut.into()
            } else {
                io::Error::from_raw_os_error(-res)
            };
            return self.attempt_failed(key, error);
        }
        self.observed(key, crate::intercept::Ended::Ok);
        let Some(mut k) = self.connects.remove(key) else {
            return;
        };
        let peer = match &k.addr {
            crate::net::Addr::Tcp(a) => Peer::Tcp(*a),
            crate::net::Addr::Unix(_) => Peer::Unix,
        };
        let shared = self.rings.new_conn(peer);
        self.add_conn(fd, SharedConn::clone(&shared));
        if let Some(c) = k.c.take() {
            // Cancelled meanwhile: the token sees CancelledAfterEffect with the connection.
            c.complete(Ok(Conn::new(shared)));
        }
    }

    pub(super) fn attempt_failed(&mut self, key: u64, error: io::Error) {
        self.observed(key, crate::intercept::Ended::Error);
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        let timed_out = error.kind() == io::ErrorKind::TimedOut;
        if k.attempts >= k.options.attempts.max(1) || !crate::net::retryable(&error) {
            let attempts = k.attempts;
            let e = if timed_out {
                ConnectError::TimedOut { attempts }
            } else {
                ConnectError::Failed {
                    attempts,
                    last: error,
                }
            };
            return self.stop_connect(key, e);
        }
        let delay = crate::net::backoff_delay(&k.options, k.attempts, &mut k.rng);
        k.timer = Some(
            self.timers
                .arm(TimerFor::ConnectRetry(key), Instant::now() + delay),
        );
    }

    pub(super) fn observed(&mut self, key: u64, ended: crate::intercept::Ended) {
        if let Some(k) = self.connects.get_mut(key)
            && let Some((d, started)) = k.watched.take()
        {
            k.options.interceptors.after(&d, ended, started.elapsed());
        }
    }

    /// Ends a connect with `error` (its attempt in flight, if any, is cancelled first and
    /// answers nothing more).
    pub(super) fn stop_connect(&mut self, key: u64, error: ConnectError) {
        let Some(k) = self.connects.get_mut(key) else {
            return;
        };
        if let Some(c) = k.c.take() {
            c.complete(Err(error));
        }
        if let Some(t) = k.timer.take() {
            self.timers.cancel(t);
        }
        match k.op {
            Some(op) => self.cancel_op(op), // its completion removes the entry
            None => {
                self.connects.remove(key);
            }
        }
    }
}
