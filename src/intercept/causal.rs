//! [`Causal`]: order a trace by happened-before across threads.
//!
//! # Algorithm and invariants
//! - Work submitted anywhere is stamped with the hybrid logical clock ([`HybridClock`]); when
//!   it is dispatched the stamp is merged into the clock, so everything the job does, and
//!   submits, is stamped later than what caused it.
//! - The stamp becomes the thread's current stamp for the dispatch and is restored after, so
//!   nested dispatches see their own.

use std::fmt;
use std::time::Duration;

use super::{Dispatch, Ended, Interceptor, Rejection};
use crate::clock::{HlcTimestamp, HybridClock};

crate::sync::const_thread_local! {
    static CURRENT_STAMP: std::cell::Cell<Option<u64>> = std::cell::Cell::new(None);
}

/// Causal tracing: work submitted anywhere is stamped with the hybrid logical clock; when it
/// is dispatched, the stamp is merged into the clock (so everything the job does, and submits,
/// is stamped later than what caused it) and becomes the thread's current stamp, which the
/// [`Tracing`](super::Tracing) span and [`Causal::current`] show. Sorting a trace by stamp orders it by
/// happened-before across threads.
pub struct Causal {
    hlc: HybridClock,
}

impl Default for Causal {
    fn default() -> Self {
        Self::new()
    }
}

impl Causal {
    /// A causal stamper on the system clock, tolerating 1 s of drift in received stamps.
    pub fn new() -> Self {
        Self {
            hlc: HybridClock::new(Duration::from_secs(1)),
        }
    }

    /// The stamp of the dispatch running on this thread, if any.
    pub fn current() -> Option<HlcTimestamp> {
        CURRENT_STAMP.with(|c| c.get()).map(HlcTimestamp)
    }
}

impl fmt::Debug for Causal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Causal").finish()
    }
}

impl Interceptor for Causal {
    fn name(&self) -> &'static str {
        "causal"
    }

    fn stamp(&self) -> Option<u64> {
        // Submitted from inside a dispatch: later than that dispatch (the clock has merged it).
        Some(self.hlc.now().0)
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        let merged = match d.stamp {
            Some(s) => self
                .hlc
                .receive(HlcTimestamp(s))
                .unwrap_or_else(|_| self.hlc.now()),
            None => self.hlc.now(),
        };
        CURRENT_STAMP.with(|c| c.set(Some(merged.0)));
        Ok(())
    }

    fn after(&self, _: &Dispatch, _: Ended, _: Duration) {
        CURRENT_STAMP.with(|c| c.set(None));
    }
}
