//! [`Metrics`]: per-point counts and latency histograms.
//!
//! # Algorithm and invariants
//! - Every count and histogram is thread-specific storage ([`crate::tss`]): the dispatch path
//!   writes only its own thread's cells, no cache line is shared between threads; a snapshot
//!   folds all threads' cells.
//! - Each dispatch is counted once, under the outcome `after` reports (ok, error, panicked,
//!   rejected), with its duration in the point's histogram.

use std::fmt;
use std::time::Duration;

use super::{Dispatch, Ended, Interceptor, Point};
use crate::tss::{Counter, Histogram};

struct PointCells {
    ok: Counter,
    error: Counter,
    panicked: Counter,
    rejected: Counter,
    latency: Histogram,
}

/// Per-point counts and latency histograms on thread-specific storage (no shared writes on
/// the dispatch path), with a snapshot and a printable report.
pub struct Metrics {
    cells: Vec<PointCells>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics for every point.
    pub fn new() -> Self {
        Self {
            cells: Point::ALL
                .iter()
                .map(|_| PointCells {
                    ok: Counter::new(),
                    error: Counter::new(),
                    panicked: Counter::new(),
                    rejected: Counter::new(),
                    // 1 ns to 60 s at 2 significant digits: small enough for 7 per thread.
                    latency: Histogram::new(60_000_000_000, 2)
                        .unwrap_or_else(|_| Histogram::latency()),
                })
                .collect(),
        }
    }

    /// Everything counted so far, summed over threads.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            points: Point::ALL
                .iter()
                .zip(&self.cells)
                .map(|(p, c)| {
                    let h = c.latency.snapshot();
                    let q = |x| Duration::from_nanos(h.value_at_quantile(x));
                    (
                        *p,
                        PointStats {
                            ok: c.ok.sum(),
                            error: c.error.sum(),
                            panicked: c.panicked.sum(),
                            rejected: c.rejected.sum(),
                            p50: q(0.5),
                            p99: q(0.99),
                            max: Duration::from_nanos(h.max()),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Interceptor for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn after(&self, d: &Dispatch, outcome: Ended, took: Duration) {
        let c = &self.cells[d.point.index()];
        match outcome {
            Ended::Ok => c.ok.incr(),
            Ended::Error => c.error.incr(),
            Ended::Panicked => c.panicked.incr(),
            Ended::Rejected => {
                c.rejected.incr();
                return;
            }
        }
        c.latency
            .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
    }
}

/// One point's figures in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PointStats {
    /// Dispatches that succeeded.
    pub ok: u64,
    /// Dispatches that failed.
    pub error: u64,
    /// Dispatches that panicked.
    pub panicked: u64,
    /// Dispatches refused by an interceptor (counted only if this one saw them).
    pub rejected: u64,
    /// Median duration of the dispatches that ran.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

/// What [`Metrics::snapshot`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    points: Vec<(Point, PointStats)>,
}

impl MetricsSnapshot {
    /// One point's figures.
    pub fn point(&self, p: Point) -> PointStats {
        self.points
            .iter()
            .find(|(q, _)| *q == p)
            .map_or_else(PointStats::default, |(_, s)| *s)
    }
}

impl fmt::Display for MetricsSnapshot {
    /// A table of the points that saw any dispatch.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
            "point", "ok", "error", "panic", "reject", "p50", "p99", "max"
        )?;
        for (p, s) in &self.points {
            if s.ok + s.error + s.panicked + s.rejected == 0 {
                continue;
            }
            writeln!(
                f,
                "{:<20} {:>10} {:>8} {:>8} {:>8} {:>10.1?} {:>10.1?} {:>10.1?}",
                p.name(),
                s.ok,
                s.error,
                s.panicked,
                s.rejected,
                s.p50,
                s.p99,
                s.max
            )?;
        }
        Ok(())
    }
}
