//! loom models of the io_uring backend's ring loop itself: the production `RingLoop` (its
//! operation table, cancellation against completion, closing with operations in flight,
//! teardown, cross-thread submission and wake-up) runs on a loom thread against a fake kernel
//! (`FakeRing`, through the backend's `Ring` trait) instead of the kernel's ring.
//!
//! The fake kernel performs what is submitted with non-blocking syscalls on real socket pairs
//! and the loop's real eventfd: a receive completes when data is there, the eventfd read when
//! another thread signalled it. It completes one operation per wait, the oldest ready one or
//! the newest (each model runs both orders). It processes `AsyncCancel` at submission as the
//! kernel does: the cancel completes `ENOENT` if its target already completed, `EALREADY` if
//! it is being cancelled, else 0, and the target `ECANCELED`: before the cancel's completion
//! (oldest-first order) or on a later wait (newest-first). It holds at most two unsubmitted
//! entries, so the loop's "submission queue full" path runs too. loom chooses when the other
//! threads act against it.
//!
//! What every model checks:
//! - every operation the loop submitted was completed and its completion taken (the loop ends
//!   only with an empty table: `Kernel::settled`), and every token was answered;
//! - a buffer comes back to its owner only after the kernel is done with it (`Kernel::holds`);
//! - a descriptor is closed only when no operation of it is in flight (the fake kernel sees
//!   `EBADF` otherwise, and fails the model), and is closed by the end (the peer sees EOF).
//!
//! They bite. Each mutation below was tried by hand (LOOM_MAX_PREEMPTIONS=2) and failed:
//! - the loop answers a read from its `AsyncCancel`'s completion, before the read's own (the
//!   classic io_uring use-after-free: the buffer back with the user while the kernel may still
//!   write it): `Kernel::holds` fails in the cancel, close and shutdown models (newest-first
//!   order, where the target's completion comes later);
//! - the loop drops the completion of a cancelled read (`read_done` returns on `ECANCELED`
//!   without answering): the token says `Abandoned` in the same three models;
//! - the fake kernel loses the `ECANCELED` completion of a cancelled operation: the loop
//!   never empties its table, waits for ever, and all four models fail ("the loop waits for a
//!   completion that will never come").
//!
//! A literal second answer to one token cannot be written: `Completer::complete` takes the
//! completer by value. The io_uring form of that bug is the first mutation above.
//!
//! loom 0.7 builds impossible histories when a plain store races a read-modify-write on the
//! same atomic (tokio-rs/loom#254): the first runs of these models stalled on a wake-up flag
//! that read back as raised right after the loop lowered it. The loop's flags are lowered with
//! a swap now (`RingShared::take`, `RingWaker::taken`), the same instruction on x86.
#![cfg(posa_loom)]

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use posa::act::Outcome;
use posa::net::Stream;
use posa::proactor::{Conn, Cqe, Done, MakeRing, OpError, Proactor, Ring, Sqe};
use posa::sync::{Arc, Mutex, thread};

/// Which ready operation the fake kernel completes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Oldest,
    Newest,
}

/// Submission entries the fake holds before the loop must submit.
const SQ_ENTRIES: usize = 2;

/// Waits in a row with nothing to complete, after which the loop is taken to wait for ever.
/// Each wait yields to the other threads, which a legitimate wake-up needs only a few of.
const MAX_IDLE_WAITS: usize = 1_000;

/// The fields of an SQE the fake kernel reads (the kernel ABI's `io_uring_sqe`).
#[derive(Debug, Clone, Copy)]
struct Op {
    user_data: u64,
    opcode: u8,
    flags: u8,
    fd: i32,
    addr: u64,
    len: u32,
    op_flags: u32,
    /// An `AsyncCancel` found it: it completes `ECANCELED` when next picked.
    cancelled: bool,
}

/// `struct io_uring_sqe` as the kernel lays it out (64 bytes; the io-uring crate's
/// `squeue::Entry` is a `repr(C)` wrapper of it).
#[repr(C)]
struct RawSqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

impl Op {
    fn decode(sqe: &Sqe) -> Op {
        const { assert!(size_of::<Sqe>() == 64 && size_of::<RawSqe>() == 64) };
        // SAFETY: `Sqe` (io_uring::squeue::Entry) is `#[repr(C)]` around the kernel's 64-byte
        // `io_uring_sqe`, which `RawSqe` spells out field by field; every bit pattern is a
        // valid `RawSqe` (integers only), and the reference lives only for this read.
        let raw = unsafe { &*(sqe as *const Sqe).cast::<RawSqe>() };
        Op {
            user_data: raw.user_data,
            opcode: raw.opcode,
            flags: raw.flags,
            fd: raw.fd,
            addr: raw.addr,
            len: raw.len,
            op_flags: raw.op_flags,
            cancelled: false,
        }
    }

    /// Performs the operation without blocking: `None` if it would block (it stays in flight).
    fn perform(&self) -> Option<i32> {
        use io_uring::opcode;
        if self.cancelled {
            return Some(-libc::ECANCELED);
        }
        let errno = || {
            -io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        let n: isize = match self.opcode {
            opcode::Read::CODE => {
                // SAFETY: the loop keeps `addr..addr+len` alive and untouched until this
                // operation's completion is taken (the contract of `Ring::push`).
                unsafe { libc::read(self.fd, self.addr as *mut libc::c_void, self.len as usize) }
            }
            opcode::Recv::CODE if self.flags & (1 << 5) != 0 => {
                return Some(-libc::EOPNOTSUPP); // buffer select: the fake has no buffer ring
            }
            opcode::Recv::CODE => {
                // SAFETY: as for Read.
                unsafe {
                    libc::recv(
                        self.fd,
                        self.addr as *mut libc::c_void,
                        self.len as usize,
                        libc::MSG_DONTWAIT,
                    )
                }
            }
            opcode::Send::CODE => {
                // SAFETY: as for Read (the loop keeps the bytes to send alive).
                unsafe {
                    libc::send(
                        self.fd,
                        self.addr as *const libc::c_void,
                        self.len as usize,
                        self.op_flags as i32 | libc::MSG_DONTWAIT,
                    )
                }
            }
            opcode::Shutdown::CODE => {
                // SAFETY: a plain syscall on a descriptor number.
                unsafe { libc::shutdown(self.fd, self.len as i32) as isize }
            }
            _ => return Some(-libc::EOPNOTSUPP),
        };
        if n >= 0 {
            return Some(n as i32);
        }
        let e = errno();
        assert_ne!(
            e,
            -libc::EBADF,
            "the loop closed descriptor {} with an operation in flight",
            self.fd
        );
        if e == -libc::EAGAIN { None } else { Some(e) }
    }

    /// Whether the operation's memory overlaps `ptr..ptr+len`.
    fn touches(&self, ptr: *const u8, len: usize) -> bool {
        let (a, b) = (self.addr as usize, self.addr as usize + self.len as usize);
        let (p, q) = (ptr as usize, ptr as usize + len);
        self.addr != 0 && a < q && p < b
    }
}

/// The fake kernel's state: shared by the loop's `FakeRing` and the model, which looks at it.
struct Kernel {
    order: Order,
    /// Pushed, not yet submitted.
    sq: Vec<Op>,
    /// Submitted, not yet completed.
    in_flight: Vec<Op>,
    /// Posted, not yet taken by the loop.
    cq: VecDeque<Cqe>,
}

impl Kernel {
    fn post(&mut self, user_data: u64, result: i32) {
        self.cq.push_back(Cqe {
            user_data,
            result,
            flags: 0,
        });
    }

    fn submit(&mut self) -> usize {
        let n = self.sq.len();
        for op in std::mem::take(&mut self.sq) {
            if op.opcode == io_uring::opcode::AsyncCancel::CODE {
                let target = self.in_flight.iter().position(|t| t.user_data == op.addr);
                match (target, self.order) {
                    (None, _) => self.post(op.user_data, -libc::ENOENT),
                    (Some(i), _) if self.in_flight[i].cancelled => {
                        self.post(op.user_data, -libc::EALREADY)
                    }
                    // The target's completion first, then the cancel's.
                    (Some(i), Order::Oldest) => {
                        let target = self.in_flight.remove(i);
                        self.post(target.user_data, -libc::ECANCELED);
                        self.post(op.user_data, 0);
                    }
                    // The cancel's completion now, the target's on a later wait (as when the
                    // kernel cancels work already handed to a worker).
                    (Some(i), Order::Newest) => {
                        self.in_flight[i].cancelled = true;
                        self.post(op.user_data, 0);
                    }
                }
            } else {
                self.in_flight.push(op);
            }
        }
        n
    }

    /// Completes one ready operation (per `order`). `false` if none is ready.
    fn complete_one(&mut self) -> bool {
        let n = self.in_flight.len();
        for j in 0..n {
            let i = match self.order {
                Order::Oldest => j,
                Order::Newest => n - 1 - j,
            };
            if let Some(result) = self.in_flight[i].perform() {
                let op = self.in_flight.remove(i);
                self.post(op.user_data, result);
                return true;
            }
        }
        false
    }

    /// Whether the kernel still holds (may still read or write) any of `ptr..ptr+len`.
    fn holds(&self, ptr: *const u8, len: usize) -> bool {
        self.sq
            .iter()
            .chain(&self.in_flight)
            .any(|op| op.touches(ptr, len))
    }

    /// Every submitted operation completed and its completion taken.
    fn settled(&self) -> bool {
        self.sq.is_empty() && self.in_flight.is_empty() && self.cq.is_empty()
    }
}

/// The loop's ring: the fake kernel behind the backend's `Ring` trait.
struct FakeRing(Arc<Mutex<Kernel>>);

impl Ring for FakeRing {
    unsafe fn push(&mut self, sqe: &Sqe) -> bool {
        let mut k = self.0.lock();
        if k.sq.len() >= SQ_ENTRIES {
            return false;
        }
        k.sq.push(Op::decode(sqe));
        true
    }

    fn submit(&mut self) -> io::Result<usize> {
        Ok(self.0.lock().submit())
    }

    /// Blocks (spinning with `yield_now`, which loom reads as "waits for another thread") until
    /// a completion is posted. loom has no time, so a timeout other than zero waits like none:
    /// these models arm no timers, and a zero timeout (the loop has more to do) polls once.
    fn submit_and_wait_timeout(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let n = self.0.lock().submit();
        for _ in 0..MAX_IDLE_WAITS {
            {
                let mut k = self.0.lock();
                if !k.cq.is_empty() || k.complete_one() {
                    return Ok(n);
                }
            }
            if timeout == Some(Duration::ZERO) {
                return Err(io::Error::from_raw_os_error(libc::ETIME));
            }
            loom::thread::yield_now();
        }
        let k = self.0.lock();
        panic!(
            "the loop waits for a completion that will never come (a lost wake-up or a lost \
             completion): in flight {:?}",
            k.in_flight
        );
    }

    fn next_completion(&mut self) -> Option<Cqe> {
        self.0.lock().cq.pop_front()
    }

    unsafe fn register_buf_ring(
        &mut self,
        _addr: u64,
        _entries: u16,
        _bgid: u16,
    ) -> io::Result<()> {
        Ok(()) // no buffer-select receives here: `perform` refuses them
    }

    fn unregister_buf_ring(&mut self, _bgid: u16) -> io::Result<()> {
        Ok(())
    }
}

/// A proactor whose one loop drives a fake kernel completing in `order`.
fn proactor(order: Order) -> (Proactor, Arc<Mutex<Kernel>>) {
    let kernel = Arc::new(Mutex::new(Kernel {
        order,
        sq: Vec::new(),
        in_flight: Vec::new(),
        cq: VecDeque::new(),
    }));
    let for_ring = Arc::clone(&kernel);
    let make = MakeRing(std::sync::Arc::new(move || {
        Ok(Box::new(FakeRing(Arc::clone(&for_ring))) as Box<dyn Ring>)
    }));
    let p = Proactor::builder()
        .ring(make)
        .recv_buffers(1, 8)
        .build()
        .expect("proactor on the fake kernel");
    (p, kernel)
}

/// One end of a socket pair as a connection of `p`; the other end, blocking, for the peer.
fn adopt(p: &Proactor) -> (Conn, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_nonblocking(true).expect("nonblocking");
    let conn = p
        .adopt(Stream::Unix(mio::net::UnixStream::from_std(ours)))
        .expect("adopt");
    (conn, theirs)
}

/// The peer ends its stream (a closing connection lingers until then), the loop shuts down
/// and is joined; checks the kernel holds nothing, and returns what the peer received before
/// the loop's end of stream.
fn finish(p: Proactor, kernel: &Arc<Mutex<Kernel>>, theirs: UnixStream) -> Vec<u8> {
    theirs
        .shutdown(std::net::Shutdown::Write)
        .expect("the peer ends its stream");
    p.shutdown(Duration::ZERO);
    p.join().expect("the loop ends");
    {
        let k = kernel.lock();
        assert!(
            k.settled(),
            "the loop ended with operations the kernel still holds: sq {:?}, in flight {:?}, cq {:?}",
            k.sq,
            k.in_flight,
            k.cq
        );
    }
    drain(theirs)
}

/// Reads the peer's end to EOF (the loop closed its descriptor) and returns what came.
fn drain(mut theirs: UnixStream) -> Vec<u8> {
    theirs
        .set_nonblocking(true)
        .expect("the peer end, non-blocking");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match theirs.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // Closed with unread input (the peer's byte of a cancelled read): a reset.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the descriptor is still open after the loop ended: {e}"),
        }
    }
}

type ReadOutcome = Outcome<Done, OpError, Vec<u8>>;

/// The buffer a read's outcome hands back, whatever the outcome; panics if it has none.
fn buffer_of(outcome: ReadOutcome) -> (Vec<u8>, usize, &'static str) {
    match outcome {
        Outcome::Completed(Ok(Done { buf, n })) => (buf, n, "done"),
        Outcome::CancelledAfterEffect(Ok(Done { buf, n })) => (buf, n, "done after cancel"),
        Outcome::Cancelled(buf) => (buf, 0, "cancelled"),
        Outcome::Completed(Err(OpError { buf, n, .. }))
        | Outcome::CancelledAfterEffect(Err(OpError { buf, n, .. })) => (buf, n, "failed"),
        other => panic!("the read was not answered with its buffer: {other:?}"),
    }
}

/// Runs `model` under loom once per completion order. A turn of the loop is a few hundred loom
/// operations, so the branch limit is raised from loom's default of 1,000.
fn both_orders(model: fn(Order)) {
    for order in [Order::Oldest, Order::Newest] {
        let mut builder = loom::model::Builder::new(); // reads LOOM_MAX_PREEMPTIONS
        builder.max_branches = 100_000;
        builder.check(move || model(order));
    }
}

/// A read initiated on another thread while the loop waits in the kernel: the loop is woken
/// (its eventfd read completes), submits the read, and answers it once, with the data.
#[test]
fn a_read_from_another_thread_wakes_the_loop_and_is_answered_once() {
    both_orders(|order| {
        let (p, kernel) = proactor(order);
        let (conn, mut theirs) = adopt(&p);
        theirs.write_all(b"hi").expect("peer write");
        let initiator = thread::spawn(move || {
            let buf = vec![0u8; 8];
            let ptr = buf.as_ptr() as usize;
            let out = conn.read_some(buf).wait();
            (conn, ptr, out)
        });
        let (conn, ptr, out) = initiator.join().unwrap();
        let (buf, n, how) = buffer_of(out);
        assert_eq!((how, &buf[..n]), ("done", &b"hi"[..]));
        assert_eq!(
            buf.as_ptr() as usize,
            ptr,
            "the caller's own buffer comes back"
        );
        assert!(!kernel.lock().holds(buf.as_ptr(), buf.len()));
        drop(conn);
        assert!(finish(p, &kernel, theirs).is_empty());
    });
}

/// The token's cancel races the data's arrival: the read is answered once, as cancelled or as
/// done (then with the data), always with the caller's buffer, and only once the kernel has
/// let go of it.
#[test]
fn a_cancel_racing_the_completion_answers_once_after_the_kernel_let_go() {
    both_orders(|order| {
        let (p, kernel) = proactor(order);
        let (conn, mut theirs) = adopt(&p);
        let buf = vec![0u8; 8];
        let ptr = buf.as_ptr() as usize;
        let read = conn.read_some(buf);
        let writer = thread::spawn(move || {
            theirs.write_all(b"x").expect("peer write");
            theirs
        });
        read.cancel();
        let (buf, n, how) = buffer_of(read.wait());
        assert!(
            !kernel.lock().holds(buf.as_ptr(), buf.len()),
            "the buffer came back ({how}) while the kernel still held it"
        );
        assert_eq!(
            buf.as_ptr() as usize,
            ptr,
            "the caller's own buffer comes back"
        );
        match how {
            "cancelled" => {}
            "done" | "done after cancel" => assert_eq!(&buf[..n], b"x"),
            other => panic!("unexpected outcome: {other}"),
        }
        let theirs = writer.join().unwrap();
        drop(conn);
        finish(p, &kernel, theirs);
    });
}

/// The last handle drops on another thread while a read waits in the kernel and a write is
/// queued: the read is answered with its buffer after the kernel let go; the write, accepted
/// before the close, goes out in full (a graceful close); then the loop shuts down its write
/// side and discards input until the peer's end of stream (lingering), and the descriptor
/// closes only once nothing of it is in flight.
#[test]
fn closing_with_operations_in_flight_answers_each_once_then_frees_the_descriptor() {
    both_orders(|order| {
        let (p, kernel) = proactor(order);
        let (conn, theirs) = adopt(&p);
        let read = conn.read_some(vec![0u8; 8]);
        let write = conn.write_all(b"bye".to_vec()).expect("queued");
        let closer = thread::spawn(move || drop(conn));
        let (buf, _, how) = buffer_of(read.wait());
        assert_ne!(how, "done", "the peer sent nothing");
        assert!(!kernel.lock().holds(buf.as_ptr(), buf.len()));
        match write.wait() {
            Outcome::Completed(Ok(Done { buf, n })) => {
                assert_eq!(n, 3, "the accepted write went out in full");
                assert!(!kernel.lock().holds(buf.as_ptr(), buf.len()));
            }
            other => panic!("a write accepted before the close was cut off: {other:?}"),
        }
        closer.join().unwrap();
        assert_eq!(
            finish(p, &kernel, theirs),
            b"bye",
            "what was written arrived"
        );
    });
}

/// Shutdown (no grace) from another thread while a read waits in the kernel: the loop cancels
/// it, answers it from its completion, and ends with an empty table and the descriptor closed.
#[test]
fn shutdown_with_a_read_in_flight_answers_it_and_ends_with_nothing_held() {
    both_orders(|order| {
        let (p, kernel) = proactor(order);
        let (conn, theirs) = adopt(&p);
        let read = conn.read_some(vec![0u8; 8]);
        let stopper = {
            let h = p.handle();
            thread::spawn(move || h.shutdown(Duration::ZERO))
        };
        let (buf, _, how) = buffer_of(read.wait());
        assert_ne!(how, "done", "the peer sent nothing");
        assert!(!kernel.lock().holds(buf.as_ptr(), buf.len()));
        stopper.join().unwrap();
        drop(conn);
        assert!(finish(p, &kernel, theirs).is_empty());
    });
}
