//! Interceptor: hooks before and after every dispatch, and ready-made reliability interceptors.
//!
//! A [`Chain`] of [`Interceptor`]s sits in the real dispatch paths: the reactor's upcalls
//! ([`Point::ReactorEvent`]), the thread pool's admission and job runs ([`Point::PoolSubmit`],
//! [`Point::PoolJob`]), the active object's method requests ([`Point::MethodRequest`]), the
//! acceptor's accepted connections ([`Point::Accept`]), the connector's attempts
//! ([`Point::Connect`]) and the proactor's completions ([`Point::ProactorCompletion`]).
//!
//! - `before` may reject with a typed [`Rejection`]: the caller sees it (a pool job's token
//!   answers `RunError::Rejected` or `RunError::DeadlineExceeded`, a submit returns
//!   `Refused::Rejected` with the job back, a connect fails with `ConnectError::Rejected`, an
//!   accepted connection is closed cleanly, a reactor upcall is skipped). Completions cannot be
//!   refused (that would lose them): there, `before` is advisory.
//! - `after` sees the [`Ended`] (ok, error, panicked, rejected) and the duration. When an
//!   interceptor rejects, those before it in the chain get `after(Rejected)`, so a bulkhead's
//!   count is given back.
//! - An empty chain is a `None`: the dispatch paths test one pointer and skip everything else.
//!
//! Ready-made, a file each: [`Tracing`], [`Metrics`],
//! [`RateLimit`] (token bucket, global or per peer),
//! [`Bulkhead`], [`CircuitBreaker`],
//! [`Deadline`], [`Causal`] (hybrid-logical-clock stamps
//! carried across pool jobs, so a trace can be ordered by happened-before).
//!
//! ```
//! use std::sync::Arc;
//! use posa::intercept::{Bulkhead, Chain, Metrics, Point};
//! use posa::pool::ThreadPool;
//! use posa::RunError;
//!
//! let metrics = Arc::new(Metrics::new());
//! let chain = Chain::new().with(Bulkhead::new(8)).with_shared(metrics.clone());
//! let pool = ThreadPool::builder().threads(1).interceptors(chain).build()?;
//! assert_eq!(pool.submit(|| 2 + 2).unwrap().wait().into_result().unwrap(), 4);
//! assert_eq!(metrics.snapshot().point(Point::PoolJob).ok, 1);
//! # Ok::<(), std::io::Error>(())
//! ```

mod bulkhead;
mod causal;
mod circuit_breaker;
mod deadline;
mod metrics;
mod rate_limit;
mod trace;

pub use bulkhead::Bulkhead;
pub use causal::Causal;
pub use circuit_breaker::{BreakerState, CircuitBreaker};
pub use deadline::Deadline;
pub use metrics::{Metrics, MetricsSnapshot, PointStats};
pub use rate_limit::RateLimit;
pub use trace::Tracing;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[allow(
    clippy::disallowed_types,
    reason = "a shared slice of trait objects, which loom's Arc cannot hold; immutable once built"
)]
use std::sync::Arc;

/// Where a dispatch happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// A reactor upcall (readiness, a timer, a wake-up).
    ReactorEvent,
    /// A proactor operation's completion being delivered.
    ProactorCompletion,
    /// A job being queued to a thread pool (admission).
    PoolSubmit,
    /// A pool job about to run.
    PoolJob,
    /// An active object's method request about to run on its servant.
    MethodRequest,
    /// A connection the acceptor just accepted.
    Accept,
    /// One attempt of the connector.
    Connect,
}

impl Point {
    /// Every point, in a fixed order.
    pub const ALL: [Point; 7] = [
        Point::ReactorEvent,
        Point::ProactorCompletion,
        Point::PoolSubmit,
        Point::PoolJob,
        Point::MethodRequest,
        Point::Accept,
        Point::Connect,
    ];

    /// A short name (`pool-job`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Point::ReactorEvent => "reactor-event",
            Point::ProactorCompletion => "proactor-completion",
            Point::PoolSubmit => "pool-submit",
            Point::PoolJob => "pool-job",
            Point::MethodRequest => "method-request",
            Point::Accept => "accept",
            Point::Connect => "connect",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is being dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    /// Where.
    pub point: Point,
    /// An id within the point (handler token, job sequence number, attempt number, ...).
    pub id: u64,
    /// The peer, where there is one.
    pub peer: Option<SocketAddr>,
    /// When the work was queued, where it waited.
    pub queued_at: Option<Instant>,
    /// When it must have started by, where one was given.
    pub deadline: Option<Instant>,
    /// A hybrid-logical-clock stamp carried from where the work was submitted
    /// ([`Causal`]), packed as in [`HlcTimestamp::to_u64`](crate::clock::HlcTimestamp).
    pub stamp: Option<u64>,
}

impl Dispatch {
    /// A dispatch at `point` with `id` and nothing else known.
    pub fn new(point: Point, id: u64) -> Self {
        Self {
            point,
            id,
            peer: None,
            queued_at: None,
            deadline: None,
            stamp: None,
        }
    }
}

pub use crate::error::{Reason, Rejection};

/// `true` if an interceptor configured for `points` (`None`: every point) applies at `p`.
fn applies(points: &Option<Vec<Point>>, p: Point) -> bool {
    points.as_ref().is_none_or(|ps| ps.contains(&p))
}

/// How a dispatch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It ran and succeeded.
    Ok,
    /// It ran and failed (an error result, a failed connect attempt).
    Error,
    /// It panicked.
    Panicked,
    /// An interceptor refused it.
    Rejected,
}

/// Hooks around a dispatch. Both default to doing nothing.
pub trait Interceptor: Send + Sync + 'static {
    /// A short name, used in rejections and reports.
    fn name(&self) -> &'static str;

    /// Before the dispatch: `Err` refuses it.
    fn before(&self, dispatch: &Dispatch) -> Result<(), Rejection> {
        let _ = dispatch;
        Ok(())
    }

    /// After the dispatch (or after a rejection by a later interceptor).
    fn after(&self, dispatch: &Dispatch, outcome: Ended, took: Duration) {
        let _ = (dispatch, outcome, took);
    }

    /// A stamp to carry with work submitted now (see [`Causal`]); `None` by default.
    fn stamp(&self) -> Option<u64> {
        None
    }
}

/// An ordered list of interceptors; cheap to clone (shared). See the [module docs](self).
#[derive(Clone, Default)]
#[allow(
    clippy::disallowed_types,
    reason = "a shared slice of trait objects, which loom's Arc cannot hold; immutable once built"
)]
pub struct Chain(Option<Arc<[Arc<dyn Interceptor>]>>);

#[allow(
    clippy::disallowed_types,
    reason = "a shared slice of trait objects, which loom's Arc cannot hold; immutable once built"
)]
impl Chain {
    /// An empty chain: costs one pointer test per dispatch.
    pub fn new() -> Self {
        Self(None)
    }

    /// This chain with `interceptor` appended.
    pub fn with(self, interceptor: impl Interceptor) -> Self {
        self.with_shared(Arc::new(interceptor))
    }

    /// This chain with a shared interceptor appended (keep a clone to read it, e.g. metrics).
    pub fn with_shared(self, interceptor: Arc<dyn Interceptor>) -> Self {
        let mut list: Vec<Arc<dyn Interceptor>> = self.0.map(|l| l.to_vec()).unwrap_or_default();
        list.push(interceptor);
        Self(Some(list.into()))
    }

    /// `true` if it holds no interceptor.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Runs every `before` in order; on a rejection, the ones that passed get
    /// `after(Rejected)` and the rejection is returned.
    pub fn before(&self, dispatch: &Dispatch) -> Result<(), Rejection> {
        let Some(list) = &self.0 else { return Ok(()) };
        for (i, icp) in list.iter().enumerate() {
            if let Err(rejection) = icp.before(dispatch) {
                for passed in list[..i].iter().rev() {
                    passed.after(dispatch, Ended::Rejected, Duration::ZERO);
                }
                return Err(rejection);
            }
        }
        Ok(())
    }

    /// Runs every `after`, in reverse order.
    pub fn after(&self, dispatch: &Dispatch, outcome: Ended, took: Duration) {
        if let Some(list) = &self.0 {
            for icp in list.iter().rev() {
                icp.after(dispatch, outcome, took);
            }
        }
    }

    /// The first stamp an interceptor offers for work submitted now.
    pub fn stamp(&self) -> Option<u64> {
        self.0.as_ref()?.iter().find_map(|i| i.stamp())
    }

    /// `before`, then `run` (which says how it went), then `after` with the time it took.
    pub fn around<R>(
        &self,
        dispatch: &Dispatch,
        run: impl FnOnce() -> (R, Ended),
    ) -> Result<R, Rejection> {
        if self.is_empty() {
            return Ok(run().0);
        }
        self.before(dispatch)?;
        let started = Instant::now();
        let (r, outcome) = run();
        self.after(dispatch, outcome, started.elapsed());
        Ok(r)
    }

    /// The interceptors' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0
            .as_ref()
            .map(|l| l.iter().map(|i| i.name()).collect())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Chain").field(&self.names()).finish()
    }
}

#[cfg(test)]
mod behaviour_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Log(&'static str, Arc<Mutex<Vec<String>>>, bool);
    impl Interceptor for Log {
        fn name(&self) -> &'static str {
            self.0
        }
        fn before(&self, _: &Dispatch) -> Result<(), Rejection> {
            self.1.lock().unwrap().push(format!("{} before", self.0));
            if self.2 {
                Err(Rejection::new(self.0, Reason::Overloaded))
            } else {
                Ok(())
            }
        }
        fn after(&self, _: &Dispatch, outcome: Ended, _: Duration) {
            self.1
                .lock()
                .unwrap()
                .push(format!("{} after {outcome:?}", self.0));
        }
    }

    #[test]
    fn befores_in_order_afters_in_reverse_and_a_rejection_unwinds_the_passed_ones() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain =
            Chain::new()
                .with(Log("a", log.clone(), false))
                .with(Log("b", log.clone(), false));
        let d = Dispatch::new(Point::PoolJob, 1);
        assert_eq!(chain.around(&d, || (7, Ended::Ok)), Ok(7));
        assert_eq!(
            *log.lock().unwrap(),
            ["a before", "b before", "b after Ok", "a after Ok"]
        );
        log.lock().unwrap().clear();
        let chain = chain.with(Log("c", log.clone(), true));
        let err = chain.around(&d, || (0, Ended::Ok)).unwrap_err();
        assert_eq!(err, Rejection::new("c", Reason::Overloaded));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "a before",
                "b before",
                "c before",
                "b after Rejected",
                "a after Rejected"
            ]
        );
        assert!(Chain::new().is_empty());
        assert_eq!(chain.names(), ["a", "b", "c"]);
    }
}
