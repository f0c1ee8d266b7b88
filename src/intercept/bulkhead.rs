//! [`Bulkhead`]: at most `max` dispatches in flight at once.
//!
//! # Algorithm and invariants
//! - Admission is one compare-and-swap below `max` (never a check and a separate add, which
//!   would let racing callers overshoot); `after` gives the place back for every dispatch that
//!   was admitted, and only for those.

use std::time::Duration;

use super::{Dispatch, Ended, Interceptor, Point, Reason, Rejection, applies};
use crate::sync::atomic::{AtomicUsize, Ordering};

/// A bulkhead: at most `max` dispatches in flight at once (at the given points; default all).
#[derive(Debug)]
pub struct Bulkhead {
    max: usize,
    points: Option<Vec<Point>>,
    in_flight: AtomicUsize,
}

impl Bulkhead {
    /// At most `max` (at least 1) in flight.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            points: None,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Counts only these points.
    pub fn at(mut self, points: &[Point]) -> Self {
        self.points = Some(points.to_vec());
        self
    }

    /// In flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Interceptor for Bulkhead {
    fn name(&self) -> &'static str {
        "bulkhead"
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        if !applies(&self.points, d.point) {
            return Ok(());
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::new(self.name(), Reason::Overloaded));
        }
        Ok(())
    }

    fn after(&self, d: &Dispatch, _: Ended, _: Duration) {
        if applies(&self.points, d.point) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
