//! [`Deadline`]: work that can no longer be useful is not run.
//!
//! # Algorithm and invariants
//! - A dispatch whose own deadline has passed, or that waited in a queue longer than
//!   `max_wait` (from `queued_at`), is refused with `DeadlineExceeded` before it runs; the
//!   caller's token says so. A dispatch with neither is never refused.

use std::fmt;
use std::time::Duration;

use super::{Dispatch, Interceptor, Point, Reason, Rejection, applies};
use crate::clock::{Clock, SharedClock, SystemClock};

/// Deadlines: a dispatch whose deadline has passed, or that waited in a queue longer than
/// `max_wait`, is not run; its caller sees `DeadlineExceeded` (default points: pool job and
/// method request).
pub struct Deadline {
    max_wait: Option<Duration>,
    points: Option<Vec<Point>>,
    clock: SharedClock,
}

impl Default for Deadline {
    fn default() -> Self {
        Self::new()
    }
}

impl Deadline {
    /// Honours each dispatch's own deadline.
    pub fn new() -> Self {
        Self {
            max_wait: None,
            points: Some(vec![Point::PoolJob, Point::MethodRequest]),
            clock: crate::clock::shared(SystemClock),
        }
    }

    /// Also refuses work that waited longer than `max_wait` since it was queued.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Applies at these points.
    pub fn at(mut self, points: &[Point]) -> Self {
        self.points = Some(points.to_vec());
        self
    }

    /// The time source.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl Interceptor for Deadline {
    fn name(&self) -> &'static str {
        "deadline"
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        if !applies(&self.points, d.point) {
            return Ok(());
        }
        let now = self.clock.now();
        let late = d.deadline.is_some_and(|dl| now > dl)
            || matches!((d.queued_at, self.max_wait), (Some(q), Some(w)) if now.saturating_duration_since(q) > w);
        if late {
            Err(Rejection::new(self.name(), Reason::DeadlineExceeded))
        } else {
            Ok(())
        }
    }
}
