//! Completion dispatch: where a finished operation's completion handler runs, and who
//! watches it.
//!
//! # Invariants
//! - Every delivery runs exactly once: on the loop thread ([`CompleteOn::Loop`]), or on a pool
//!   worker ([`CompleteOn::Pool`]); if the pool refuses the job it runs here, and if the pool
//!   cancels it (shut down `Now`) it runs on the thread that drops the job. A completion is
//!   never lost to a pool's shutdown: the delivery guard runs it on drop.
//! - Interceptors observe each delivery; they cannot refuse one (that would lose a buffer), so
//!   a rejection is logged and the completion delivered anyway.

use std::fmt;
use std::io;

use super::{Done, OpCompleter, OpError};
use crate::pool::ThreadPool;
use crate::sync::Arc;

/// Where completions are delivered.
#[derive(Clone, Default)]
pub enum CompleteOn {
    /// On the loop thread that finished the operation (the default; no hand-off).
    #[default]
    Loop,
    /// Handed to this pool: completion handlers (`on_complete`) run on its workers. If the
    /// pool refuses (full or shut down), the completion is delivered on the loop thread.
    Pool(Arc<ThreadPool>),
}

impl fmt::Debug for CompleteOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompleteOn::Loop => "Loop",
            CompleteOn::Pool(_) => "Pool",
        })
    }
}

/// Runs its delivery when dropped, unless already run: a pool that cancels or refuses the
/// delivery job drops it, and so delivers it all the same.
struct DeliverOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for DeliverOnDrop {
    fn drop(&mut self) {
        if let Some(deliver) = self.0.take() {
            deliver();
        }
    }
}

impl CompleteOn {
    /// Runs `deliver` (which states an outcome) per this policy, exactly once: on this thread
    /// for [`CompleteOn::Loop`]; on a pool worker for [`CompleteOn::Pool`], or here if the pool
    /// refuses it, or on the thread that shuts the pool down if it cancels it.
    pub fn run(&self, deliver: impl FnOnce() + Send + 'static) {
        match self {
            CompleteOn::Loop => deliver(),
            CompleteOn::Pool(pool) => {
                let guard = DeliverOnDrop(Some(Box::new(deliver)));
                // Fire and forget (no token to allocate): a refused or cancelled job drops
                // the guard, which delivers on the dropping thread.
                if let Err(refused) = pool.execute(move || drop(guard)) {
                    drop(refused.into_inner());
                }
            }
        }
    }
}

/// Where completions go, and who watches them ([`Point::ProactorCompletion`]
/// (crate::intercept::Point)): interceptors observe each delivery; they cannot refuse one
/// (that would lose a buffer), so a rejection is logged and the completion delivered anyway.
#[derive(Clone, Default)]
pub(super) struct Delivery {
    pub(super) on: CompleteOn,
    pub(super) chain: crate::intercept::Chain,
}

impl Delivery {
    pub(super) fn run(&self, deliver: impl FnOnce() + Send + 'static) {
        if self.chain.is_empty() {
            return self.on.run(deliver);
        }
        let chain = self.chain.clone();
        self.on.run(move || {
            use crate::intercept::{Dispatch, Ended, Point};
            let d = Dispatch::new(Point::ProactorCompletion, 0);
            if let Err(why) = chain.before(&d) {
                tracing::debug!(%why, "proactor: an interceptor refused a completion; delivered anyway");
                deliver();
                return;
            }
            let started = std::time::Instant::now();
            deliver();
            chain.after(&d, Ended::Ok, started.elapsed());
        });
    }

    pub(super) fn complete(&self, c: OpCompleter, result: Result<Done, OpError>) {
        self.run(move || c.complete(result));
    }

    pub(super) fn stop(&self, c: OpCompleter, buf: Vec<u8>, n: usize, why: io::ErrorKind) {
        if n == 0 {
            self.run(move || c.cancel(buf));
        } else {
            let error = io::Error::from(why);
            self.complete(c, Err(OpError { error, buf, n }));
        }
    }
}
