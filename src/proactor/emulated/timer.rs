//! Timers on the emulated backend: one handler per loop arms the loop's timer queue for each
//! timer operation.
//!
//! # Invariants
//! - A timer completes once: `Completed` when it fires, `Cancelled` when its token was dropped
//!   or cancelled first (the cancel hook wakes the handler, which disarms it), or at shutdown.
#![allow(
    clippy::disallowed_types,
    reason = "cancel hooks hold Weak references to connection state; loom has no Weak, and this state runs only on mio, never under loom (its cross-thread part, OpQueue, is modelled)"
)]

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use super::super::ops::OpQueue;
use crate::act::Completer;
use crate::reactor::{CloseReason, Context, EventHandler, HandlerWaker, Readiness, TimerId};
use std::sync::Arc;

/// A timer waiting to fire.
pub(super) type TimerCompleter = Completer<(), std::convert::Infallible>;

/// Timers of one loop.
pub(super) struct TimerShared {
    pub(super) queue: OpQueue<(Duration, TimerCompleter), HandlerWaker>,
}

pub(super) struct TimerHandler {
    pub(super) shared: Arc<TimerShared>,
    pub(super) waker: Option<HandlerWaker>,
    pub(super) incoming: VecDeque<(Duration, TimerCompleter)>,
    pub(super) armed: Vec<(TimerId, TimerCompleter)>,
}

impl TimerHandler {
    fn pump(&mut self, cx: &mut Context<'_>) {
        let Some(waker) = &self.waker else { return };
        self.shared.queue.take(waker, &mut self.incoming);
        for (after, c) in self.incoming.drain(..) {
            let id = cx.set_timer(after);
            self.armed.push((id, c));
        }
        // Cancelled timers: stop them and answer their tokens.
        let mut i = 0;
        while i < self.armed.len() {
            if self.armed[i].1.is_cancelled() {
                let (id, c) = self.armed.swap_remove(i);
                cx.cancel_timer(id);
                c.cancel(());
            } else {
                i += 1;
            }
        }
    }
}

impl EventHandler for TimerHandler {
    fn open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.waker = Some(cx.waker());
        self.pump(cx);
        Ok(())
    }

    fn ready(&mut self, _: Readiness, cx: &mut Context<'_>) {
        self.pump(cx);
    }

    fn timeout(&mut self, timer: TimerId, _: &mut Context<'_>) {
        if let Some(i) = self.armed.iter().position(|(id, _)| *id == timer) {
            let (_, c) = self.armed.swap_remove(i);
            c.complete(Ok(()));
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) {
        cx.close();
    }

    fn close(&mut self, _: &CloseReason, _: &mut Context<'_>) {
        let (queued, _) = self.shared.queue.close();
        let armed = self.armed.drain(..).map(|(_, c)| c);
        let waiting = self.incoming.drain(..).chain(queued).map(|(_, c)| c);
        for c in armed.chain(waiting) {
            c.cancel(());
        }
    }
}
