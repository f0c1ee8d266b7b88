//! [`CircuitBreaker`]: stop calling what keeps failing.
//!
//! # Algorithm and invariants
//! - Closed: outcomes go into a window of the last `window` results; once it holds at least
//!   `min_samples` and the failure share reaches `threshold`, the circuit opens.
//! - Open: every dispatch is refused at once until `cool_down` has passed on the clock.
//! - Half-open: exactly one probe goes through (others are refused while it runs); its
//!   success closes the circuit with a fresh window, its failure opens it again.
//! - All transitions happen under one lock, so two threads cannot both become the probe.

use std::fmt;
use std::time::{Duration, Instant};

use super::{Dispatch, Ended, Interceptor, Point, Reason, Rejection, applies};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::sync::Mutex;
use std::collections::VecDeque;

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Dispatches go through; outcomes are counted.
    Closed,
    /// Dispatches are refused until the cool-down ends.
    Open,
    /// One probe is let through; its outcome closes or re-opens the circuit.
    HalfOpen,
}

enum Cb {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

struct CbState {
    state: Cb,
    /// The last `window` outcomes, `true` for a failure.
    window: VecDeque<bool>,
}

/// A circuit breaker (default point: connect): closed while the failure rate over the last
/// `window` outcomes (once at least `min_samples` are in) stays below `threshold`; then open
/// for `cool_down`, refusing at once; then half-open: one probe goes through, a success closes
/// the circuit, a failure opens it again.
pub struct CircuitBreaker {
    window: usize,
    min_samples: usize,
    threshold: f64,
    cool_down: Duration,
    points: Option<Vec<Point>>,
    clock: SharedClock,
    state: Mutex<CbState>,
}

impl CircuitBreaker {
    /// Opens when at least `threshold` (0..=1) of the last `window` outcomes failed (with at
    /// least `window / 2` samples), for `cool_down`.
    pub fn new(window: usize, threshold: f64, cool_down: Duration) -> Self {
        let window = window.max(1);
        Self {
            window,
            min_samples: (window / 2).max(1),
            threshold: threshold.clamp(0.0, 1.0),
            cool_down,
            points: Some(vec![Point::Connect]),
            clock: crate::clock::shared(SystemClock),
            state: Mutex::new(CbState {
                state: Cb::Closed,
                window: VecDeque::with_capacity(window),
            }),
        }
    }

    /// Outcomes needed before the rate counts (default: half the window).
    pub fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n.clamp(1, self.window);
        self
    }

    /// Applies at these points (default: connect).
    pub fn at(mut self, points: &[Point]) -> Self {
        self.points = Some(points.to_vec());
        self
    }

    /// The time source (tests use a `ManualClock`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The state now (an open circuit whose cool-down is over reads as half-open).
    pub fn state(&self) -> BreakerState {
        let s = self.state.lock();
        match s.state {
            Cb::Closed => BreakerState::Closed,
            Cb::Open { until } if self.clock.now() < until => BreakerState::Open,
            Cb::Open { .. } | Cb::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn open(&self, s: &mut CbState) {
        s.state = Cb::Open {
            until: self.clock.now() + self.cool_down,
        };
        s.window.clear();
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .finish()
    }
}

impl Interceptor for CircuitBreaker {
    fn name(&self) -> &'static str {
        "circuit-breaker"
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        if !applies(&self.points, d.point) {
            return Ok(());
        }
        let mut s = self.state.lock();
        let refuse = Err(Rejection::new(self.name(), Reason::CircuitOpen));
        match s.state {
            Cb::Closed => Ok(()),
            Cb::Open { until } if self.clock.now() < until => refuse,
            Cb::Open { .. } | Cb::HalfOpen { probing: false } => {
                s.state = Cb::HalfOpen { probing: true };
                Ok(()) // the probe
            }
            Cb::HalfOpen { probing: true } => refuse,
        }
    }

    fn after(&self, d: &Dispatch, outcome: Ended, _: Duration) {
        if !applies(&self.points, d.point) {
            return;
        }
        let mut s = self.state.lock();
        let failed = match outcome {
            Ended::Ok => false,
            Ended::Error | Ended::Panicked => true,
            Ended::Rejected => {
                // Refused after we let it through: the probe did not happen.
                if let Cb::HalfOpen { probing: true } = s.state {
                    s.state = Cb::HalfOpen { probing: false };
                }
                return;
            }
        };
        match s.state {
            Cb::HalfOpen { .. } => {
                if failed {
                    self.open(&mut s);
                } else {
                    s.state = Cb::Closed;
                    s.window.clear();
                }
            }
            Cb::Closed => {
                if s.window.len() == self.window {
                    s.window.pop_front();
                }
                s.window.push_back(failed);
                let n = s.window.len();
                let failures = s.window.iter().filter(|f| **f).count();
                if n >= self.min_samples && failures as f64 >= self.threshold * n as f64 {
                    self.open(&mut s);
                }
            }
            Cb::Open { .. } => {} // an outcome of something let through before it opened
        }
    }
}
