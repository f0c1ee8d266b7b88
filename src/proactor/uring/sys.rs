//! The kernel side of the io_uring backend: ring setup with fallbacks, the probe, the
//! provided buffer ring, the eventfd. Every `unsafe` of the backend is here or in the loop's
//! one `push`, each with its argument.
#![cfg_attr(not(posa_loom), allow(unreachable_pub))]

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{IoUring, Probe, opcode, types};

use crate::sync::atomic::{AtomicBool, Ordering::SeqCst};
use crate::sync::{Mutex, dekker_fence};

/// Why the io_uring backend cannot run here: the probe's finding, in words a log line can
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// What failed ("ring setup", "opcode AcceptMulti", ...).
    pub what: String,
    /// The OS error number, when the kernel refused (ENOSYS: no io_uring; EPERM: a seccomp
    /// profile or `kernel.io_uring_disabled`; EINVAL: too old a kernel).
    pub errno: Option<i32>,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(e) => write!(
                f,
                "io_uring unavailable: {} failed: {}",
                self.what,
                io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "io_uring unavailable: {}", self.what),
        }
    }
}

impl std::error::Error for Unavailable {}

impl Unavailable {
    pub(super) fn new(what: impl Into<String>, e: &io::Error) -> Self {
        Unavailable {
            what: what.into(),
            errno: e.raw_os_error(),
        }
    }
}

/// A ring for one loop thread: single issuer with deferred task running where the kernel has
/// them (completions are then run only when this thread enters the kernel), plain otherwise.
pub(super) fn new_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(entries);
    match tuned {
        Ok(ring) => Ok(ring),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(cq).build(entries)
        }
        Err(e) => Err(e),
    }
}

/// What the backend needs of the kernel: a ring, the opcodes it issues, waits with a timeout
/// (`EXT_ARG`), no dropped completions (`NODROP`), and provided buffer rings.
pub(super) fn probe() -> Result<(), Unavailable> {
    let mut ring = new_ring(8).map_err(|e| Unavailable::new("ring setup", &e))?;
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(Unavailable {
            what: "the EXT_ARG feature (waits with a timeout)".into(),
            errno: None,
        });
    }
    if !params.is_feature_nodrop() {
        return Err(Unavailable {
            what: "the NODROP feature".into(),
            errno: None,
        });
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| Unavailable::new("the opcode probe", &e))?;
    let needed = [
        ("AcceptMulti", opcode::AcceptMulti::CODE),
        ("Recv", opcode::Recv::CODE),
        ("Send", opcode::Send::CODE),
        ("Read", opcode::Read::CODE),
        ("Connect", opcode::Connect::CODE),
        ("Shutdown", opcode::Shutdown::CODE),
        ("AsyncCancel", opcode::AsyncCancel::CODE),
    ];
    for (name, code) in needed {
        if !probe.is_supported(code) {
            return Err(Unavailable {
                what: format!("opcode {name}"),
                errno: None,
            });
        }
    }
    let bufs = BufRing::new(&mut ring, 1, 64)
        .map_err(|e| Unavailable::new("a provided buffer ring", &e))?;
    drop(ring); // the ring first: the kernel lets go of the buffer ring with it
    drop(bufs);
    Ok(())
}

/// A provided buffer ring: `count` buffers of `size` bytes the kernel picks from when data
/// arrives for a buffer-select receive. Only the loop thread adds buffers (it alone writes
/// the tail); buffers come back from any thread through [`Returns`].
pub(super) struct BufRing {
    /// The ring entries: page-aligned anonymous memory, registered with the kernel.
    entries: *mut types::BufRingEntry,
    map_len: usize,
    mask: u16,
    tail: u16,
    pub(super) slab: crate::sync::Arc<Slab>,
}

/// The buffers' memory. A buffer is owned by exactly one of: the kernel (in the ring), a
/// [`RingBuf`](super::RingBuf) (received data), or the return queue; never two at once.
///
/// A buffer comes back from any thread ([`give_back`](Self::give_back)) while the loop may be
/// parking receives for want of one ([`starve`](Self::starve)): a Dekker pair. The returner
/// pushes, then reads `starving`; the loop raises `starving`, then takes the returns once
/// more. Either the loop's take sees the buffer or the returner sees the flag and wakes it.
/// (Public only in a `--cfg posa_loom` build, for `loom-tests/tests/uring.rs`.)
pub struct Slab {
    ptr: *mut u8,
    pub(super) size: usize,
    count: usize,
    /// Buffer ids given back by dropped `RingBuf`s, for the loop to put back in the ring.
    returned: Mutex<Vec<u16>>,
    /// Raised by the loop while a receive waits for a buffer: a returning buffer then wakes it.
    starving: AtomicBool,
}

// SAFETY: the slab is plain memory; each buffer region is accessed by one owner at a time
// (see `Slab`'s docs): the kernel writes a region only while it is in the ring, a `RingBuf`
// reads it only after the kernel's completion handed it out and until the buffer is returned,
// and the return queue is a mutex.
unsafe impl Send for Slab {}
// SAFETY: as above; shared references only read regions their owner holds.
unsafe impl Sync for Slab {}

impl Slab {
    /// `count` buffers of `size` bytes, zeroed.
    pub fn new(count: usize, size: usize) -> io::Result<Slab> {
        let layout = std::alloc::Layout::from_size_align(size.max(1) * count.max(1), 64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: a non-zero size (count, size >= 1).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        Ok(Slab {
            ptr,
            size: size.max(1),
            count: count.max(1),
            returned: Mutex::new(Vec::new()),
            starving: AtomicBool::new(false),
        })
    }

    /// Any thread: buffer `bid` is free again. `true` if the loop waits for a buffer and must
    /// be woken.
    pub fn give_back(&self, bid: u16) -> bool {
        self.returned.lock().push(bid);
        dekker_fence(); // pairs with the fence in `starve`
        self.starving.load(SeqCst)
    }

    /// Loop side: a receive found no buffer. Raises the flag, then takes the returns once more
    /// (a buffer given back before the flag was up woke no one).
    pub fn starve(&self) -> Vec<u16> {
        self.starving.store(true, SeqCst);
        dekker_fence(); // pairs with the fence in `give_back`
        self.take_returned()
    }

    /// Loop side: no receive waits for a buffer any more.
    pub fn unstarve(&self) {
        self.starving.store(false, SeqCst);
    }

    /// Loop side: the buffers given back since the last take.
    pub fn take_returned(&self) -> Vec<u16> {
        std::mem::take(&mut *self.returned.lock())
    }

    /// Bytes `0..len` of buffer `bid`.
    ///
    /// # Safety
    /// The caller must own buffer `bid` (it came out of a completion and was not returned).
    pub(super) unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let off = usize::from(bid) * self.size;
        debug_assert!(usize::from(bid) < self.count && len <= self.size);
        // SAFETY: `bid < count` keeps the region inside the allocation; the caller owns it, so
        // the kernel is not writing it.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len.min(self.size)) }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.size * self.count, 64)
            .expect("the layout allocated in BufRing::new");
        // SAFETY: allocated in `BufRing::new` with this layout; the last owner (an `Arc`) is
        // dropping it, after the ring that could write to it has been torn down.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

// SAFETY: the entries mapping is owned by this value alone and written only through `&mut
// self`; moving it to the loop thread that will own it moves that exclusive access.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Registers a ring of `count` (rounded up to a power of two) buffers of `size` bytes as
    /// buffer group 0 of `ring`, all given to the kernel.
    pub(super) fn new<R: super::ring::Ring + ?Sized>(
        ring: &mut R,
        count: usize,
        size: usize,
    ) -> io::Result<BufRing> {
        let count = count.clamp(1, 32768).next_power_of_two();
        let entries_len = count * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; no file, no address hint. Checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slab = match Slab::new(count, size) {
            Ok(slab) => slab,
            Err(e) => {
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(map, entries_len) };
                return Err(e);
            }
        };
        let mut buf_ring = BufRing {
            entries: map.cast(),
            map_len: entries_len,
            mask: (count - 1) as u16,
            tail: 0,
            slab: crate::sync::Arc::new(slab),
        };
        // SAFETY: the entries stay mapped until `Drop`, which comes after the ring that uses
        // them is dropped or the group unregistered (`RingLoop` tears down in that order).
        unsafe { ring.register_buf_ring(map as u64, count as u16, 0)? };
        for bid in 0..count {
            buf_ring.push(bid as u16);
        }
        buf_ring.publish();
        Ok(buf_ring)
    }

    /// Puts buffer `bid` in the next ring slot (visible to the kernel after `publish`).
    pub(super) fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let size = self.slab.size;
        // SAFETY: `slot <= mask < count` entries are mapped; only this thread writes entries,
        // and a slot past the published tail is not read by the kernel.
        let entry = unsafe { &mut *self.entries.add(slot) };
        // SAFETY: `bid < count`: the offset stays in the slab.
        let addr = unsafe { self.slab.ptr.add(usize::from(bid) * size) };
        entry.set_addr(addr as u64);
        entry.set_len(size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel (a release store of the tail).
    pub(super) fn publish(&mut self) {
        // SAFETY: the tail field overlays the first entry's reserved field; the entries are
        // mapped and initialized. The kernel reads it with acquire semantics.
        let tail = unsafe { types::BufRingEntry::tail(self.entries) }
            as *const std::sync::atomic::AtomicU16;
        // SAFETY: a u16 at an aligned address inside the mapping; AtomicU16 has its layout.
        unsafe { (*tail).store(self.tail, std::sync::atomic::Ordering::Release) };
    }

    /// Puts every returned buffer back in the ring. Returns how many.
    pub(super) fn recycle(&mut self) -> usize {
        let returned = self.slab.take_returned();
        self.refill(returned)
    }

    /// Puts `bids` back in the ring. Returns how many.
    pub(super) fn refill(&mut self, bids: Vec<u16>) -> usize {
        let n = bids.len();
        for bid in bids {
            self.push(bid);
        }
        if n > 0 {
            self.publish();
        }
        n
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the loop unregisters the group (or has dropped the
        // ring) before dropping this.
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}

/// An eventfd other threads write to wake the loop, which keeps a read of it in flight.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to the eventfd's counter (its read completes).
pub(super) fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. EAGAIN (the counter at
    // its maximum) means a wake-up is pending anyway.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// The raw descriptor of `fd` as io_uring's operand.
pub(super) fn fd(fd: RawFd) -> types::Fd {
    types::Fd(fd)
}
