//! The loop's side of a listener on the emulated backend: accept until `WouldBlock` for as
//! many accept operations as wait, attaching each connection to a loop round-robin.
//!
//! # Invariants
//! - A connection is accepted only for a waiting accept operation: with none waiting, the
//!   listener's backlog holds connections, and memory does not grow.
//! - An accept error (EMFILE, say) completes one operation with the error; the caller
//!   decides whether to back off or give up, and the listener is not spun on.
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

use std::collections::VecDeque;
use std::io;

use super::super::accept::{AcceptCompleter, AcceptShared};
use super::super::conn::LoopWaker;
use super::Loops;
use crate::net::Listener;
use crate::reactor::{CloseReason, Context, EventHandler, Interest, Readiness};
use std::sync::Arc;

/// The loop's side of a listener.
pub(super) struct AcceptHandler {
    pub(super) listener: Listener,
    pub(super) shared: Arc<AcceptShared>,
    pub(super) waker: Option<LoopWaker>,
    pub(super) waiting: VecDeque<AcceptCompleter>,
    pub(super) loops: Arc<Loops>,
}

impl AcceptHandler {
    /// Accepts for every waiting accept operation until `WouldBlock`, taking the operations
    /// that completions issue meanwhile (an accept loop re-issues from its completion).
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(waker) = &self.waker else { return };
            if !self.shared.queue.take(waker, &mut self.waiting) {
                cx.close();
                return;
            }
            if self.waiting.is_empty() || !self.accept_waiting(cx) {
                return;
            }
        }
    }

    /// `true` if it completed something and the socket may have more.
    fn accept_waiting(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Some(c) = self.waiting.front() {
            if c.is_cancelled() {
                if let Some(c) = self.waiting.pop_front() {
                    c.cancel(());
                }
                continue;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let Some(c) = self.waiting.pop_front() else {
                        break;
                    };
                    c.complete(self.loops.attach(stream, peer, cx));
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The caller decides (EMFILE: back off; others: give up).
                    let Some(c) = self.waiting.pop_front() else {
                        break;
                    };
                    c.complete(Err(e));
                    return false;
                }
            }
        }
        progress
    }
}

impl EventHandler for AcceptHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        cx.register(&mut self.listener, Interest::READABLE)?;
        self.waker = Some(LoopWaker::Reactor(cx.waker()));
        self.pump(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        let (queued, _) = self.shared.queue.close();
        for c in self.waiting.drain(..).chain(queued) {
            c.cancel(());
        }
    }
}
