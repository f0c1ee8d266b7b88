//! The caller's side of accepting: [`Accepts`] initiates accept operations on a listener the
//! proactor watches; each completes with a connection already attached to one of the loops.
//!
//! # Invariants
//! - Outstanding accepts complete in the order they were initiated.
//! - Dropping [`Accepts`] closes the listener: accepts still waiting see `Abandoned`, and the
//!   loop closes its handler.
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

use std::io;

use super::conn::LoopWaker;
use super::ops::OpQueue;
use super::{AcceptToken, Conn};
use crate::act::{self, Completer};
use crate::net::Peer;
use std::sync::Arc;

/// An accept waiting for a connection.
pub(super) type AcceptCompleter = Completer<(Conn, Peer), io::Error>;

/// How the loops hold a listener's shared state (a std `Arc`, as for connections).
#[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
pub(super) type SharedAccept = Arc<AcceptShared>;

/// Accept operations on one listener, shared by [`Accepts`] and the loop's handler.
pub(super) struct AcceptShared {
    pub(super) queue: OpQueue<AcceptCompleter, LoopWaker>,
}

impl AcceptShared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(AcceptShared {
            queue: OpQueue::new(1, 0),
        })
    }
}

/// Initiates accepts on a listener the [`Proactor`](super::Proactor) watches. Dropping it
/// closes the listener.
pub struct Accepts {
    pub(super) shared: Arc<AcceptShared>,
}

impl Accepts {
    /// Accepts one connection; several may be outstanding (they complete in order).
    pub fn accept(&self) -> AcceptToken {
        let (c, token) = act::pair();
        let weak = Arc::downgrade(&self.shared);
        c.on_cancel(move || {
            if let Some(s) = weak.upgrade()
                && let (_, Some(w)) = s.queue.waker()
            {
                w.wake();
            }
        });
        match self.shared.queue.submit(c, 0) {
            Ok(Some(w)) => {
                w.wake();
            }
            Ok(None) => {}
            Err(refused) => refused.into_inner().complete(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener is closed",
            ))),
        }
        token
    }
}

impl Drop for Accepts {
    fn drop(&mut self) {
        let (waiting, waker) = self.shared.queue.close();
        drop(waiting); // their tokens see Abandoned
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl std::fmt::Debug for Accepts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accepts")
    }
}
