//! Shutting a pool down: graceful (queued jobs still run) or `Now` (queued jobs are cancelled,
//! from every deque).
//!
//! # Invariants
//! - Either way no job is lost: each queued job runs or its token answers `Cancelled`.
//! - Every worker is joined; `Drop` shuts down `Now`, joins, and logs while a running job keeps
//!   it waiting rather than hanging silently.

use std::time::Duration;

use super::{DRAINING, Inner, RUNNING, STOPPING, Shutdown, ThreadPool};
use crate::sync::atomic::Ordering::SeqCst;
use crate::sync::dekker_fence;

impl Inner {
    /// Cancels every queued job (shutdown `Now`); returns how many.
    pub(super) fn cancel_queued(&self) -> usize {
        let mut cancelled = 0;
        while let Some(mut job) = self.take_any() {
            if job.task.header().holds_load {
                self.release();
            }
            job.task.cancel();
            self.stats.cancelled.incr();
            cancelled += 1;
        }
        cancelled
    }
}

impl ThreadPool {
    /// Shuts down and joins every worker; returns how many queued jobs were cancelled.
    pub fn shutdown(mut self, mode: Shutdown) -> usize {
        self.stop(mode)
    }

    /// Begins shutdown from any thread without waiting: intake stops at once (later submits get
    /// [`Refused::Closed`](crate::Refused::Closed)); with [`Shutdown::Now`] queued jobs are cancelled now. Returns
    /// how many were cancelled. Dropping or [`shutdown`](Self::shutdown) then joins the workers.
    pub fn close(&self, mode: Shutdown) -> usize {
        let inner = &self.inner;
        {
            let _ctl = inner.ctl.lock();
            match mode {
                Shutdown::Graceful => {
                    let _ = inner
                        .quiet
                        .phase
                        .compare_exchange(RUNNING, DRAINING, SeqCst, SeqCst);
                }
                Shutdown::Now => inner.quiet.phase.store(STOPPING, SeqCst),
            }
            dekker_fence(); // pairs with the fence in `push`
        }
        inner.work.notify_all();
        inner.room.notify_all();
        if mode == Shutdown::Graceful {
            return 0;
        }
        inner.cancel_queued()
    }

    pub(super) fn stop(&mut self, mode: Shutdown) -> usize {
        let n = self.close(mode);
        self.stopped = true;
        // Wait for the workers; say so while a long-running job keeps us waiting.
        let handles = loop {
            let mut ctl = self.inner.ctl.lock();
            let waited = ctl.wait_on_while_until(
                &self.inner.exited,
                crate::monitor::deadline_after(Duration::from_secs(5)),
                |c| c.alive > 0,
            );
            if waited.is_ok() {
                break std::mem::take(&mut ctl.handles);
            }
            tracing::warn!(
                pool = %self.inner.name,
                running = ctl.alive,
                "posa pool: still waiting for running jobs to finish before the pool can stop"
            );
        };
        for handle in handles.into_iter().flatten() {
            let _ = handle.join();
        }
        n
    }
}

impl Drop for ThreadPool {
    /// Cancels what is queued, waits for running jobs (logging while it waits), joins workers.
    fn drop(&mut self) {
        if !self.stopped {
            self.stop(Shutdown::Now);
        }
    }
}
