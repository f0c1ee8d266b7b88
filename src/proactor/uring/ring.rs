//! What a ring loop needs of a ring: queue submissions, hand them to the kernel, wait for
//! completions, take them, and register the provided buffer ring. Production uses
//! `io_uring::IoUring` directly (static dispatch, nothing added to the hot path). A
//! `--cfg posa_loom` build holds a `Box<dyn Ring>` instead, so the loom models in
//! `loom-tests/tests/uring_loop.rs` run the production loop (operation table, cancellation,
//! close, teardown) against a fake kernel that completes the submitted operations in any
//! order.
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::io;
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue, types};

/// A submission queue entry, as the loop builds it (the `io-uring` crate's type).
pub type Sqe = squeue::Entry;

/// One completion: the submission's `user_data`, the operation's result (a byte count, or a
/// negated errno) and the completion flags (`MORE`, the selected buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// The `user_data` of the submission this answers.
    pub user_data: u64,
    /// The result: `>= 0` on success, `-errno` on failure.
    pub result: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

/// A ring as one loop thread drives it (it is the ring's only submitter).
pub trait Ring: Send {
    /// Queues `sqe` for submission; `false` if the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid, and its memory untouched by anyone else, until
    /// the operation's final completion has been taken.
    unsafe fn push(&mut self, sqe: &Sqe) -> bool;

    /// Hands what is queued to the kernel without waiting.
    fn submit(&mut self) -> io::Result<usize>;

    /// Hands what is queued to the kernel and waits for at least one completion, at most
    /// `timeout` (`None`: no limit). `ETIME` when the time ran out.
    fn submit_and_wait_timeout(&mut self, timeout: Option<Duration>) -> io::Result<usize>;

    /// The next completion the kernel has posted, if any.
    fn next_completion(&mut self) -> Option<Cqe>;

    /// Registers `entries` provided-buffer descriptors at `addr` as buffer group `bgid`.
    ///
    /// # Safety
    /// `addr` must point to `entries` mapped, page-aligned `io_uring_buf` descriptors that
    /// stay mapped until the group is unregistered or the ring dropped.
    unsafe fn register_buf_ring(&mut self, addr: u64, entries: u16, bgid: u16) -> io::Result<()>;

    /// Unregisters buffer group `bgid`.
    fn unregister_buf_ring(&mut self, bgid: u16) -> io::Result<()>;
}

impl Ring for IoUring {
    unsafe fn push(&mut self, sqe: &Sqe) -> bool {
        // SAFETY: the caller keeps what `sqe` points to valid until its final completion.
        unsafe { self.submission().push(sqe) }.is_ok()
    }

    fn submit(&mut self) -> io::Result<usize> {
        IoUring::submit(self)
    }

    fn submit_and_wait_timeout(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.submitter().submit_with_args(1, &args)
            }
            None => IoUring::submit_and_wait(self, 1),
        }
    }

    fn next_completion(&mut self) -> Option<Cqe> {
        self.completion().next().map(|c: cqueue::Entry| Cqe {
            user_data: c.user_data(),
            result: c.result(),
            flags: c.flags(),
        })
    }

    unsafe fn register_buf_ring(&mut self, addr: u64, entries: u16, bgid: u16) -> io::Result<()> {
        // SAFETY: the caller keeps the descriptors mapped as long as the group is registered.
        unsafe {
            self.submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)
        }
    }

    fn unregister_buf_ring(&mut self, bgid: u16) -> io::Result<()> {
        self.submitter().unregister_buf_ring(bgid)
    }
}

/// The ring a loop holds: the kernel's, or (in a `--cfg posa_loom` build) any [`Ring`].
#[cfg(not(posa_loom))]
pub(super) type LoopRing = IoUring;
/// The ring a loop holds: the kernel's, or (in a `--cfg posa_loom` build) any [`Ring`].
#[cfg(posa_loom)]
pub(super) type LoopRing = Box<dyn Ring>;

#[cfg(posa_loom)]
impl Ring for Box<dyn Ring> {
    unsafe fn push(&mut self, sqe: &Sqe) -> bool {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).push(sqe) }
    }
    fn submit(&mut self) -> io::Result<usize> {
        (**self).submit()
    }
    fn submit_and_wait_timeout(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        (**self).submit_and_wait_timeout(timeout)
    }
    fn next_completion(&mut self) -> Option<Cqe> {
        (**self).next_completion()
    }
    unsafe fn register_buf_ring(&mut self, addr: u64, entries: u16, bgid: u16) -> io::Result<()> {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).register_buf_ring(addr, entries, bgid) }
    }
    fn unregister_buf_ring(&mut self, bgid: u16) -> io::Result<()> {
        (**self).unregister_buf_ring(bgid)
    }
}

/// Makes a loop's ring on the loop's own thread: a loom model's fake kernel.
#[cfg(posa_loom)]
#[derive(Clone)]
#[allow(
    clippy::disallowed_types,
    reason = "a std Arc: the factory is made outside any loom model thread's state and only called"
)]
pub struct MakeRing(pub std::sync::Arc<dyn Fn() -> io::Result<Box<dyn Ring>> + Send + Sync>);

#[cfg(posa_loom)]
impl std::fmt::Debug for MakeRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeRing(..)")
    }
}
