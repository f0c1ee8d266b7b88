//! The io_uring backend: the kernel performs each operation and posts its completion, which
//! is what POSA2 calls a Proactor. One ring per loop thread, each thread its ring's only
//! submitter (`SINGLE_ISSUER`, `DEFER_TASKRUN` where the kernel has them); other threads hand
//! operations over through the connection's `OpQueue` and wake the loop through an eventfd
//! whose read the loop keeps in flight. Nothing locks a submission queue from another thread.
//!
//! - `sys.rs`: ring setup, the probe, the provided buffer ring, the eventfd (the `unsafe`).
//! - `shared.rs`: what other threads share with a loop (inbox, wake-up).
//! - `event_loop.rs`: the loop: operation table, connections, listeners, timers, connects.
//! - `slab.rs`: generation-keyed tables, so a late completion never reaches a new occupant.

mod event_loop;
mod ring;
mod shared;
mod slab;
mod sys;

#[cfg(posa_loom)]
pub use ring::{Cqe, MakeRing, Ring, Sqe};
#[cfg(not(posa_loom))]
pub(crate) use shared::RingWaker;
#[cfg(posa_loom)]
pub use shared::{Inbox, Key, RingShared, RingWaker};
pub use sys::Unavailable;
#[cfg(posa_loom)]
pub use sys::{Slab, eventfd};

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::time::Duration;

use super::accept::{AcceptShared, Accepts};
use super::conn::ConnShared;
use super::delivery::Delivery;
use super::ops::OpQueue;
use super::{Conn, ConnectToken, OpToken, TimerToken};
use crate::act::{self, Completer};
use crate::net::{Addr, ConnectOptions, Listener, Peer};
use crate::reactor::{LoopThreads, ShutdownReport};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::thread;
use event_loop::{RingLoop, TimerOps};
#[cfg(not(posa_loom))]
use shared::{Key, RingShared};

/// A timer waiting to fire.
pub(super) type TimerCompleter = Completer<(), std::convert::Infallible>;

/// Probes the kernel for everything the backend needs, once per process (the answer is
/// kept: the kernel's features do not change under a running process).
///
/// The probe's ring is made and dropped on a short-lived thread of its own, never on the
/// caller's. A task that created a ring is sent task work (`TIF_NOTIFY_SIGNAL`) when the
/// kernel tears that ring down, which happens asynchronously after the drop: a blocking
/// socket call with a timeout on the caller's thread (a `read` with `SO_RCVTIMEO`, say)
/// would then fail with `EINTR`. Found as a test that failed one run in eight under load.
pub fn probe() -> Result<(), Unavailable> {
    #[allow(clippy::disallowed_types)] // a process-wide cache, not state threads hand over
    static PROBED: std::sync::OnceLock<Result<(), Unavailable>> = std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            // A plain thread under loom too: it shares nothing, and models never probe.
            #[allow(clippy::disallowed_methods)]
            let helper = std::thread::Builder::new()
                .name("posa-uring-probe".into())
                .spawn(sys::probe)
                .map_err(|e| Unavailable::new("the probe's thread", &e))?;
            helper.join().unwrap_or_else(|_| {
                Err(Unavailable {
                    what: "the probe (it panicked)".into(),
                    errno: None,
                })
            })
        })
        .clone()
}

/// What the rest of the process holds of one ring loop.
pub(super) struct LoopParts {
    shared: Arc<RingShared>,
    timers: Arc<TimerOps>,
    /// The loop's own wakers for its timers, file reads and returned buffers (each key's
    /// `queued` flag lives in one waker, which the loop lowers when it takes the key).
    timer_waker: RingWaker,
    file_waker: RingWaker,
    buf_waker: RingWaker,
}

impl LoopParts {
    fn post(&self, job: shared::Job) -> Result<(), shared::Job> {
        self.shared.post(job)
    }
}

/// The io_uring backend's loops, shared by the proactor's handles and its loops.
pub(super) struct Rings {
    loops: Vec<LoopParts>,
    next: AtomicUsize,
    pub(super) delivery: Delivery,
    high_water: usize,
    low_water: usize,
}

impl Rings {
    /// Starts `threads` ring loops with `recv` = (buffers, size) of provided buffers each.
    pub(super) fn start(
        threads: usize,
        delivery: Delivery,
        (high_water, low_water): (usize, usize),
        (recv_count, recv_size): (usize, usize),
        linger: Duration,
        #[cfg(posa_loom)] make_ring: Option<MakeRing>,
    ) -> io::Result<(Arc<Rings>, RingThreads)> {
        let threads = threads.max(1);
        let shareds = (0..threads)
            .map(|_| sys::eventfd().map(|fd| Arc::new(RingShared::new(fd))))
            .collect::<io::Result<Vec<_>>>()?;
        let rings = Arc::new(Rings {
            loops: shareds
                .iter()
                .map(|s| LoopParts {
                    shared: Arc::clone(s),
                    timers: Arc::new(OpQueue::new(1, 0)),
                    timer_waker: RingWaker::new(Arc::clone(s), Key::Timers),
                    file_waker: RingWaker::new(Arc::clone(s), Key::Files),
                    buf_waker: RingWaker::new(Arc::clone(s), Key::Buffers),
                })
                .collect(),
            next: AtomicUsize::new(0),
            delivery,
            high_water,
            low_water,
        });
        let started = RingThreads {
            rings: Arc::clone(&rings),
            threads: LoopThreads::new("io_uring loop"),
        };
        let mut ready = Vec::with_capacity(threads);
        for (i, shared) in shareds.into_iter().enumerate() {
            let (up, is_up) = act::pair::<(), io::Error>();
            let for_loop = Arc::clone(&rings);
            #[cfg(posa_loom)]
            let make_ring = make_ring.clone();
            // The ring is made on its loop's thread: with SINGLE_ISSUER the task that creates
            // a ring is the only one that may submit to it.
            let thread = thread::Builder::new()
                .name(format!("posa-proactor-uring-{i}"))
                .spawn(move || {
                    #[cfg(not(posa_loom))]
                    let ring = sys::new_ring(1024);
                    #[cfg(posa_loom)]
                    let ring = match &make_ring {
                        Some(make) => (make.0)(),
                        None => sys::new_ring(1024).map(|r| Box::new(r) as Box<dyn Ring>),
                    };
                    let made = ring.and_then(|mut ring| {
                        let bufs = sys::BufRing::new(&mut ring, recv_count, recv_size)?;
                        Ok((ring, bufs))
                    });
                    match made {
                        Ok((ring, bufs)) => {
                            up.complete(Ok(()));
                            RingLoop::new(i, ring, bufs, shared, for_loop, linger).run()
                        }
                        Err(e) => {
                            let kind = e.kind();
                            up.complete(Err(e));
                            Err(io::Error::new(kind, "io_uring loop setup failed"))
                        }
                    }
                })?; // on error, `started` shuts down and joins the loops already running
            started.threads.push(thread);
            ready.push(is_up);
        }
        for up in ready {
            match up.wait().into_result() {
                Ok(()) => {}
                Err(crate::act::Error::Failed(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("io_uring loop setup was abandoned")),
            }
        }
        Ok((rings, started))
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len()
    }

    fn new_conn(&self, peer: Peer) -> super::conn::SharedConn {
        ConnShared::new(
            peer,
            (self.high_water, self.low_water),
            self.delivery.clone(),
        )
    }

    /// Posts `job` to loop `i`; a refused job is dropped (its completers answer `Abandoned`).
    fn post(&self, i: usize, job: shared::Job) {
        if let Err(job) = self.loops[i].post(job) {
            drop(job);
        }
    }

    /// Loops in all.
    pub(super) fn len(&self) -> usize {
        self.loops.len()
    }

    /// See [`ProactorHandle::listen`](super::ProactorHandle::listen).
    pub(super) fn listen(&self, listener: Listener) -> io::Result<Accepts> {
        let shared = AcceptShared::new();
        let (c, token) = act::pair::<(), io::Error>();
        let for_loop = shared.clone();
        self.post(
            0,
            Box::new(move |lp: &mut RingLoop| {
                lp.add_listener(listener, for_loop);
                c.complete(Ok(()));
            }),
        );
        match token.wait().into_result() {
            Ok(()) => Ok(Accepts { shared }),
            Err(_) => Err(io::Error::other(
                "the proactor's loop stopped before the listener was attached",
            )),
        }
    }

    /// See [`ProactorHandle::adopt`](super::ProactorHandle::adopt).
    pub(super) fn adopt(&self, stream: crate::net::Stream, peer: Peer) -> io::Result<Conn> {
        let fd = std::os::fd::OwnedFd::from(stream);
        let shared = self.new_conn(peer);
        let for_loop = super::conn::SharedConn::clone(&shared);
        let job: shared::Job = Box::new(move |lp: &mut RingLoop| lp.add_conn(fd, for_loop));
        match self.loops[self.pick()].post(job) {
            Ok(()) => Ok(Conn::new(shared)),
            // Dropping the job closes the descriptor.
            Err(_) => Err(io::Error::other("the proactor's loop is busy or stopping")),
        }
    }

    /// See [`ProactorHandle::connect_with`](super::ProactorHandle::connect_with).
    pub(super) fn connect(&self, addr: Addr, options: ConnectOptions) -> ConnectToken {
        let (c, token) = act::pair();
        let job: shared::Job = Box::new(move |lp: &mut RingLoop| lp.add_connect(addr, options, c));
        if let Err(job) = self.loops[self.pick()].post(job) {
            drop(job); // the loop is stopping: its completer answers Abandoned
        }
        token
    }

    /// See [`ProactorHandle::timer`](super::ProactorHandle::timer).
    pub(super) fn timer(&self, after: Duration) -> TimerToken {
        let parts = &self.loops[self.pick()];
        let (c, token) = act::pair();
        let waker = parts.timer_waker.clone();
        c.on_cancel(move || waker.wake());
        // `None`: the loop has not taken its timer queue yet; its first turn does.
        match parts.timers.submit((after, c), 0) {
            Ok(Some(w)) => w.wake(),
            Ok(None) => {}
            Err(refused) => {
                let (_, c) = refused.into_inner();
                c.cancel(());
            }
        }
        token
    }

    /// See [`ProactorHandle::read_file_at`](super::ProactorHandle::read_file_at).
    pub(super) fn read_file_at(&self, file: Arc<File>, offset: u64, buf: Vec<u8>) -> OpToken {
        let (c, token) = act::pair_with_residue();
        let parts = &self.loops[self.pick()];
        let waker = parts.file_waker.clone();
        c.on_cancel(move || waker.wake());
        let job: shared::Job =
            Box::new(move |lp: &mut RingLoop| lp.add_file_read(file, offset, buf, c));
        if let Err(job) = parts.post(job) {
            drop(job); // its completer answers Abandoned
        }
        token
    }

    /// Asks every loop to drain for `grace` and stop.
    pub(super) fn shutdown(&self, grace: Duration) {
        for l in &self.loops {
            l.shared.shutdown(grace);
        }
    }
}

/// The ring loops' threads; dropping shuts them down (no grace) and joins them, unless
/// [`join`](Self::join) did.
pub(super) struct RingThreads {
    rings: Arc<Rings>,
    threads: LoopThreads,
}

impl RingThreads {
    pub(super) fn join(&self) -> io::Result<Vec<ShutdownReport>> {
        self.threads.join()
    }
}

impl Drop for RingThreads {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.rings.shutdown(Duration::ZERO);
        let _ = self.join();
    }
}

/// Received bytes in a buffer of a loop's provided buffer ring; dropping it gives the buffer
/// back to the ring (through the loop's return queue), and wakes the loop if receives wait
/// for a buffer.
pub(super) struct RingBuf {
    slab: Arc<sys::Slab>,
    bid: u16,
    len: usize,
    waker: RingWaker,
}

impl RingBuf {
    fn new(slab: Arc<sys::Slab>, bid: u16, len: usize, waker: RingWaker) -> Self {
        RingBuf {
            slab,
            bid,
            len,
            waker,
        }
    }
}

impl Deref for RingBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: this `RingBuf` owns buffer `bid`: the kernel handed it out in a completion
        // and it is returned only when this drops.
        unsafe { self.slab.bytes(self.bid, self.len) }
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        if self.slab.give_back(self.bid) {
            self.waker.wake(); // a receive waits for a buffer
        }
    }
}

impl fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}
