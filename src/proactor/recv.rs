//! Lent buffers for [`Conn::recv`](super::Conn::recv): the receive path that pins no memory
//! while a connection is idle.
//!
//! # Invariants
//! - A buffer is lent only to a receive that has data: the emulated backend takes one from its
//!   loop's pool after readiness and gives it back on `WouldBlock`; the io_uring backend lets
//!   the kernel pick one from a provided buffer ring when data arrives.
//! - A [`RecvBuf`] is the only owner of its bytes until it drops; dropping it returns the
//!   buffer to where it came from (the pool, or the ring, through the loop's return queue),
//!   from any thread. Pools are bounded: a buffer returned to a full pool is freed.

use std::fmt;
use std::io;
use std::ops::Deref;

use crate::act::{Completer, Token};
use crate::sync::{Arc, Mutex};

/// The token of a [`recv`](super::Conn::recv): the data, in a lent buffer.
pub type RecvToken = Token<RecvBuf, io::Error>;

pub(super) type RecvCompleter = Completer<RecvBuf, io::Error>;

/// Received bytes in a buffer lent by the proactor; it goes back when dropped. Dereferences to
/// the bytes received (empty at end of stream).
pub struct RecvBuf {
    inner: Inner,
}

enum Inner {
    Heap {
        buf: Vec<u8>,
        len: usize,
        pool: Arc<HeapPool>,
    },
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Ring(super::uring::RingBuf),
}

impl RecvBuf {
    pub(super) fn heap(buf: Vec<u8>, len: usize, pool: Arc<HeapPool>) -> Self {
        RecvBuf {
            inner: Inner::Heap { buf, len, pool },
        }
    }

    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub(super) fn ring(buf: super::uring::RingBuf) -> Self {
        RecvBuf {
            inner: Inner::Ring(buf),
        }
    }

    /// An empty buffer: end of stream.
    pub(super) fn eof() -> Self {
        RecvBuf {
            inner: Inner::Heap {
                buf: Vec::new(),
                len: 0,
                pool: Arc::new(HeapPool::new(0, 0)),
            },
        }
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Heap { buf, len, .. } => &buf[..*len],
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Inner::Ring(b) => b,
        }
    }
}

impl Drop for RecvBuf {
    #[allow(irrefutable_let_patterns)] // refutable when the io_uring backend is built
    fn drop(&mut self) {
        if let Inner::Heap { buf, pool, .. } = &mut self.inner {
            pool.put(std::mem::take(buf));
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf").field("len", &self.len()).finish()
    }
}

/// A bounded free list of equally sized buffers, shared by a loop and the buffers it lent.
pub(super) struct HeapPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
}

impl HeapPool {
    /// Buffers of `size` bytes; at most `keep` kept for reuse.
    pub(super) fn new(size: usize, keep: usize) -> Self {
        HeapPool {
            free: Mutex::new(Vec::new()),
            size: size.max(1),
            keep,
        }
    }

    /// A buffer of the pool's size, reused if one is free.
    pub(super) fn get(&self) -> Vec<u8> {
        self.free.lock().pop().unwrap_or_else(|| vec![0; self.size])
    }

    /// Gives `buf` back; freed if the pool is full or it is not one of the pool's.
    pub(super) fn put(&self, buf: Vec<u8>) {
        if buf.len() == self.size {
            let mut free = self.free.lock();
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-mutants (issue 14): the pool keeps at most `keep` buffers, and only its own size.
    #[test]
    fn the_heap_pool_keeps_at_most_its_bound_and_only_its_own_size() {
        let pool = HeapPool::new(8, 2);
        for _ in 0..3 {
            pool.put(vec![0; 8]);
        }
        pool.put(vec![0; 7]); // not one of the pool's
        assert_eq!(pool.free.lock().len(), 2, "kept up to the bound");
        assert!(pool.free.lock().iter().all(|b| b.len() == 8));
        let reused = pool.get();
        assert_eq!((reused.len(), pool.free.lock().len()), (8, 1));
    }
}
