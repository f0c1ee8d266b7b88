//! Ready-made interceptors: the reliability patterns, each a small [`Interceptor`].
//!
//! Time comes from a [`Clock`] (default: the system's), so tests drive refills, cool-downs and
//! deadlines with a [`ManualClock`](crate::clock::ManualClock) instead of sleeping.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Dispatch, Interceptor, Outcome, Point, Reason, Rejection};
use crate::clock::{Clock, HlcTimestamp, HybridClock, SystemClock};
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::tss::{Counter, Histogram};

fn applies(points: &Option<Vec<Point>>, p: Point) -> bool {
    points.as_ref().is_none_or(|ps| ps.contains(&p))
}

// ---------------------------------------------------------------------------------------------

std::thread_local! {
    static SPANS: RefCell<Vec<tracing::span::EnteredSpan>> = const { RefCell::new(Vec::new()) };
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

    fn after(&self, _: &Dispatch, outcome: Outcome, took: Duration) {
        if let Some(span) = SPANS.with(|s| s.borrow_mut().pop()) {
            span.record("outcome", tracing::field::debug(outcome));
            span.record("took_us", took.as_micros() as u64);
            drop(span); // exits
        }
    }
}

// ---------------------------------------------------------------------------------------------

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

    fn after(&self, d: &Dispatch, outcome: Outcome, took: Duration) {
        let c = &self.cells[d.point.index()];
        match outcome {
            Outcome::Ok => c.ok.incr(),
            Outcome::Error => c.error.incr(),
            Outcome::Panicked => c.panicked.incr(),
            Outcome::Rejected => {
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

// ---------------------------------------------------------------------------------------------

/// A token bucket: `burst` tokens at most, refilled at `rate` a second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

struct Buckets {
    global: Bucket,
    peers: HashMap<IpAddr, Bucket>,
}

/// Rate limiting with a token bucket, global or per peer address (default points: accept and
/// pool submit).
///
/// Per peer, at most `max_peers` buckets are kept: when full, buckets that have refilled
/// completely (idle peers) are dropped; if none has, new peers share the global bucket. Memory
/// stays bounded whatever a hostile client does with source addresses.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    per_peer: bool,
    max_peers: usize,
    points: Option<Vec<Point>>,
    clock: Arc<dyn Clock>,
    buckets: Mutex<Buckets>,
}

impl RateLimit {
    fn build(rate_per_sec: f64, burst: u32, per_peer: bool) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let burst = f64::from(burst.max(1));
        let now = clock.now();
        Self {
            rate: rate_per_sec.max(0.0),
            burst,
            per_peer,
            max_peers: 10_000,
            points: Some(vec![Point::Accept, Point::PoolSubmit]),
            clock,
            buckets: Mutex::new(Buckets {
                global: Bucket::full(burst, now),
                peers: HashMap::new(),
            }),
        }
    }

    /// `rate_per_sec` dispatches a second overall, bursts of up to `burst`.
    pub fn global(rate_per_sec: f64, burst: u32) -> Self {
        Self::build(rate_per_sec, burst, false)
    }

    /// `rate_per_sec` a second for each peer address, bursts of up to `burst`.
    pub fn per_peer(rate_per_sec: f64, burst: u32) -> Self {
        Self::build(rate_per_sec, burst, true)
    }

    /// Applies at these points only (default: accept and pool submit).
    pub fn at(mut self, points: &[Point]) -> Self {
        self.points = Some(points.to_vec());
        self
    }

    /// Peer buckets kept at most (default 10,000).
    pub fn max_peers(mut self, max: usize) -> Self {
        self.max_peers = max.max(1);
        self
    }

    /// The time source (tests use a `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        self.clock = clock;
        let mut b = self.buckets.lock();
        b.global = Bucket::full(self.burst, now);
        b.peers.clear();
        drop(b);
        self
    }

    /// Takes a token for `peer` (or the global bucket); `true` if there was one.
    pub fn try_acquire(&self, peer: Option<IpAddr>) -> bool {
        let now = self.clock.now();
        let (rate, burst) = (self.rate, self.burst);
        let mut b = self.buckets.lock();
        let Some(ip) = peer.filter(|_| self.per_peer) else {
            return b.global.take(now, rate, burst);
        };
        if !b.peers.contains_key(&ip) && b.peers.len() >= self.max_peers {
            b.peers
                .retain(|_, bucket| !bucket.is_full(now, rate, burst));
            if b.peers.len() >= self.max_peers {
                return b.global.take(now, rate, burst);
            }
        }
        b.peers
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst)
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("per_peer", &self.per_peer)
            .finish()
    }
}

impl Interceptor for RateLimit {
    fn name(&self) -> &'static str {
        "rate-limit"
    }

    fn before(&self, d: &Dispatch) -> Result<(), Rejection> {
        if !applies(&self.points, d.point) || self.try_acquire(d.peer.map(|a| a.ip())) {
            Ok(())
        } else {
            Err(Rejection::new(self.name(), Reason::RateLimited))
        }
    }
}

// ---------------------------------------------------------------------------------------------

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

    fn after(&self, d: &Dispatch, _: Outcome, _: Duration) {
        if applies(&self.points, d.point) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

// ---------------------------------------------------------------------------------------------

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
    clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
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
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
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

    fn after(&self, d: &Dispatch, outcome: Outcome, _: Duration) {
        if !applies(&self.points, d.point) {
            return;
        }
        let mut s = self.state.lock();
        let failed = match outcome {
            Outcome::Ok => false,
            Outcome::Error | Outcome::Panicked => true,
            Outcome::Rejected => {
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

// ---------------------------------------------------------------------------------------------

/// Deadlines: a dispatch whose deadline has passed, or that waited in a queue longer than
/// `max_wait`, is not run; its caller sees `DeadlineExceeded` (default points: pool job and
/// method request).
pub struct Deadline {
    max_wait: Option<Duration>,
    points: Option<Vec<Point>>,
    clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
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
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
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

// ---------------------------------------------------------------------------------------------

std::thread_local! {
    static CURRENT_STAMP: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Causal tracing: work submitted anywhere is stamped with the hybrid logical clock; when it
/// is dispatched, the stamp is merged into the clock (so everything the job does, and submits,
/// is stamped later than what caused it) and becomes the thread's current stamp, which the
/// [`Tracing`] span and [`Causal::current`] show. Sorting a trace by stamp orders it by
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

    fn after(&self, _: &Dispatch, _: Outcome, _: Duration) {
        CURRENT_STAMP.with(|c| c.set(None));
    }
}
