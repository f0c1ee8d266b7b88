//! [`Tracing`]: a `tracing` span per dispatch.
//!
//! # Algorithm and invariants
//! - `before` enters a span (`posa.dispatch`, with point, id, peer and causal stamp) and pushes
//!   it on a thread-local stack; `after` pops it, records outcome and duration, and exits it.
//!   Dispatches nest on a thread (a job that submits a job), so a stack, not a slot.
//! - A dispatch refused by a later interceptor still gets its `after`, so the stack never
//!   keeps a span past its dispatch.

use std::time::Duration;

use super::{Dispatch, Ended, Interceptor, Rejection};
use std::cell::RefCell;

crate::sync::const_thread_local! {
    static SPANS: RefCell<Vec<tracing::span::EnteredSpan>> = RefCell::new(Vec::new());
}

/// A `tracing` span per dispatch (`posa.dispatch`, with point, id, peer, stamp), entered for
/// its duration; the outcome and duration are recorded on it when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tracing;

impl Interceptor for Tracing {
    fn name(&self) -> &'static str {
        "tracing"
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        let span = tracing::info_span!(
            "posa.dispatch",
            point = %d.point,
            id = d.id,
            peer = ?d.peer,
            stamp = d.stamp,
            outcome = tracing::field::Empty,
            took_us = tracing::field::Empty,
        );
        SPANS.with(|s| s.borrow_mut().push(span.entered()));
        Ok(())
    }

    fn after(&self, _: &Dispatch, outcome: Ended, took: Duration) {
        if let Some(span) = SPANS.with(|s| s.borrow_mut().pop()) {
            span.record("outcome", tracing::field::debug(outcome));
            span.record("took_us", took.as_micros() as u64);
            drop(span); // exits
        }
    }
}
