//! Time and logical time: the [`Clock`] every posa timer takes, and Lamport and hybrid logical
//! clocks for ordering events across threads and processes.
//!
//! # `Clock`: time as a policy
//! Components that need time take a [`Clock`] (ACE's `Time_Policy`), so tests can swap the
//! system clock for a [`ManualClock`] that only moves when told: a pool, a timer queue or a
//! reactor then behaves deterministically in a test, on any number of threads (tokio's paused
//! time works only on its single-thread runtime).
//!
//! # Logical clocks
//! - [`LamportClock`]: a counter; `tick` for a local or send event, `receive` to merge a remote
//!   stamp. If event a happened before event b, then `stamp(a) < stamp(b)`.
//! - [`HybridClock`] (HLC, Kulkarni et al. 2014): a Lamport clock whose high bits follow
//!   physical time, so stamps are close to wall-clock time, yet stay monotonic when the wall
//!   clock steps back and still respect happened-before. A remote stamp further ahead than the
//!   configured maximum drift is refused with [`ClockError::Drift`] instead of dragging the
//!   local clock into the future.
//!
//! # Algorithm and invariants
//! Both are one `AtomicU64` updated by compare-and-swap, so any number of threads stamp without
//! a lock. An HLC stamp packs 48 bits of milliseconds since the Unix epoch above a 16-bit logical
//! counter; with that packing the HLC update rule is a single `max`:
//! `new = max(old + 1, remote + 1, pack(physical_now, 0))`. When the logical counter overflows,
//! the `+ 1` carries into the millisecond field (the clock runs one millisecond ahead of the wall
//! for that burst) and order is preserved. Every successful update stores a value strictly
//! greater than the one it read, so no two calls return the same stamp and no call returns a
//! stamp below one already returned.
//!
//! ```
//! use posa::clock::{HybridClock, LamportClock, ManualClock};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let (a, b) = (LamportClock::new(), LamportClock::new());
//! let sent = a.tick();
//! let received = b.receive(sent).unwrap();
//! assert!(sent < received);
//!
//! let wall = Arc::new(ManualClock::new());
//! let hlc = HybridClock::with_clock(Arc::clone(&wall), Duration::from_secs(1));
//! let t1 = hlc.now();
//! wall.step_wall_back(Duration::from_secs(30)); // an NTP step backwards
//! let t2 = hlc.now();
//! assert!(t2 > t1, "monotonic despite the wall clock");
//! ```

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::sync::atomic::{AtomicU64, Ordering};

/// A source of time: monotonic instants for timers, wall time for timestamps.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic time, for deadlines and timers. Never goes back.
    fn now(&self) -> Instant;
    /// Wall-clock time since the Unix epoch. May step back (NTP, an operator).
    fn unix_time(&self) -> Duration;
}

/// The operating system's clocks: `Instant::now()` and `SystemTime::now()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_time(&self) -> Duration {
        // A wall clock before 1970 is a misconfigured machine; treat it as the epoch.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock shared by the threads and timers that read it: what the reactor, Leader/Followers
/// and the interceptors take. A plain `std::sync::Arc` on purpose: a clock is a trait object
/// that is only read, and loom's `Arc` cannot hold an unsized value.
#[allow(clippy::disallowed_types, reason = "see SharedClock's docs")]
pub type SharedClock = std::sync::Arc<dyn Clock>;

/// `clock` as a [`SharedClock`].
#[allow(clippy::disallowed_types, reason = "see SharedClock's docs")]
pub fn shared(clock: impl Clock + 'static) -> SharedClock {
    std::sync::Arc::new(clock)
}

#[allow(clippy::disallowed_types, reason = "see SharedClock's docs")]
impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn unix_time(&self) -> Duration {
        (**self).unix_time()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn unix_time(&self) -> Duration {
        (**self).unix_time()
    }
}

/// Virtual time that moves only when a test says so, shared safely between threads.
///
/// Monotonic time starts at the instant of creation and moves with [`advance`](Self::advance);
/// wall time starts at the system's wall time and moves with `advance` too, and can also be
/// stepped on its own, backwards included ([`step_wall_back`](Self::step_wall_back)).
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    elapsed_nanos: AtomicU64,
    wall_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at the current instant and wall time, standing still.
    pub fn new() -> Self {
        Self::with_wall(SystemClock.unix_time())
    }

    /// A clock whose wall time starts at `unix_time` since the epoch.
    pub fn with_wall(unix_time: Duration) -> Self {
        Self {
            origin: Instant::now(),
            elapsed_nanos: AtomicU64::new(0),
            wall_nanos: AtomicU64::new(duration_nanos(unix_time)),
        }
    }

    /// Moves both monotonic and wall time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let n = duration_nanos(by);
        saturating_add(&self.elapsed_nanos, n);
        saturating_add(&self.wall_nanos, n);
    }

    /// Moves wall time forward by `by`, leaving monotonic time alone.
    pub fn step_wall_forward(&self, by: Duration) {
        saturating_add(&self.wall_nanos, duration_nanos(by));
    }

    /// Moves wall time back by `by` (not below the epoch), leaving monotonic time alone.
    pub fn step_wall_back(&self, by: Duration) {
        let n = duration_nanos(by);
        let _ = self
            .wall_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
    }

    /// Monotonic time elapsed since creation.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn unix_time(&self) -> Duration {
        Duration::from_nanos(self.wall_nanos.load(Ordering::Acquire))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn saturating_add(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_add(n))
    });
}

/// A remote timestamp could not be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockError {
    /// The remote HLC stamp is further ahead of local physical time than the allowed drift.
    Drift {
        /// Remote stamp's physical part, ms since the epoch.
        remote_ms: u64,
        /// Local physical time, ms since the epoch.
        local_ms: u64,
        /// The configured maximum drift, in ms.
        max_drift_ms: u64,
    },
    /// The remote stamp is beyond the range this clock can advance past (a Lamport stamp of
    /// 2^63 or more, an HLC stamp at the top of its range): accepting it would overflow.
    OutOfRange {
        /// The refused raw value.
        value: u64,
    },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::Drift {
                remote_ms,
                local_ms,
                max_drift_ms,
            } => write!(
                f,
                "remote timestamp is {} ms ahead of local time (max drift {max_drift_ms} ms)",
                remote_ms.saturating_sub(*local_ms)
            ),
            ClockError::OutOfRange { value } => {
                write!(f, "remote timestamp {value} is out of range")
            }
        }
    }
}

impl std::error::Error for ClockError {}

/// A Lamport timestamp: totally ordered, consistent with happened-before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LamportTime(pub u64);

/// Largest remote Lamport stamp accepted (2^63 - 1): leaves 2^63 local ticks before overflow.
const LAMPORT_MAX_REMOTE: u64 = (1 << 63) - 1;

/// A Lamport logical clock usable from many threads without a lock.
#[derive(Debug, Default)]
pub struct LamportClock {
    counter: AtomicU64,
}

impl LamportClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps a local event (or a send): strictly greater than every earlier stamp of this clock.
    #[inline]
    pub fn tick(&self) -> LamportTime {
        LamportTime(self.counter.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Merges a remote stamp on receipt and stamps the receive event:
    /// `max(local, remote) + 1`.
    pub fn receive(&self, remote: LamportTime) -> Result<LamportTime, ClockError> {
        if remote.0 > LAMPORT_MAX_REMOTE {
            return Err(ClockError::OutOfRange { value: remote.0 });
        }
        let mut current = self.counter.load(Ordering::Acquire);
        loop {
            let next = current.max(remote.0) + 1;
            match self.counter.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(LamportTime(next)),
                Err(seen) => current = seen,
            }
        }
    }

    /// The latest stamp issued (without issuing one).
    pub fn current(&self) -> LamportTime {
        LamportTime(self.counter.load(Ordering::Acquire))
    }
}

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const MAX_PHYSICAL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid logical clock timestamp: 48 bits of milliseconds since the Unix epoch, then a 16-bit
/// logical counter. Ordered by `(physical, logical)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HlcTimestamp(pub u64);

impl HlcTimestamp {
    /// A stamp from its parts (the physical part is truncated to 48 bits).
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Self(((physical_ms & MAX_PHYSICAL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter within the millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:05}", self.physical_ms(), self.logical())
    }
}

/// A hybrid logical clock over a [`Clock`]'s wall time, lock-free. See the [module docs](self).
#[derive(Debug)]
pub struct HybridClock<C: Clock = SystemClock> {
    state: AtomicU64,
    clock: C,
    max_drift_ms: u64,
}

impl HybridClock<SystemClock> {
    /// An HLC on the system wall clock that refuses remote stamps more than `max_drift` ahead.
    pub fn new(max_drift: Duration) -> Self {
        Self::with_clock(SystemClock, max_drift)
    }
}

impl<C: Clock> HybridClock<C> {
    /// An HLC on `clock`'s wall time.
    pub fn with_clock(clock: C, max_drift: Duration) -> Self {
        Self {
            state: AtomicU64::new(0),
            clock,
            max_drift_ms: u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn physical_ms(&self) -> u64 {
        u64::try_from(self.clock.unix_time().as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_PHYSICAL_MS)
    }

    /// Stamps a local or send event.
    pub fn now(&self) -> HlcTimestamp {
        let floor = HlcTimestamp::new(self.physical_ms(), 0).0;
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            // `current` never reaches u64::MAX: the physical part is capped one below the top
            // and a merge refuses stamps that would pass it.
            let next = (current + 1).max(floor);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return HlcTimestamp(next),
                Err(seen) => current = seen,
            }
        }
    }

    /// Merges a remote stamp on receipt and stamps the receive event, or refuses a stamp too far
    /// ahead of local physical time (the local clock is then unchanged).
    pub fn receive(&self, remote: HlcTimestamp) -> Result<HlcTimestamp, ClockError> {
        let local_ms = self.physical_ms();
        if remote.physical_ms() > local_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockError::Drift {
                remote_ms: remote.physical_ms(),
                local_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        if remote.0 >= HlcTimestamp::new(MAX_PHYSICAL_MS, u16::MAX).0 - 1 {
            return Err(ClockError::OutOfRange { value: remote.0 });
        }
        let floor = HlcTimestamp::new(local_ms, 0).0;
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = (current + 1).max(remote.0 + 1).max(floor);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(HlcTimestamp(next)),
                Err(seen) => current = seen,
            }
        }
    }

    /// The latest stamp issued (without issuing one).
    pub fn current(&self) -> HlcTimestamp {
        HlcTimestamp(self.state.load(Ordering::Acquire))
    }

    /// The clock this HLC reads physical time from.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamport_receive_jumps_past_remote() {
        let c = LamportClock::new();
        assert_eq!(c.tick(), LamportTime(1));
        assert_eq!(c.receive(LamportTime(10)).unwrap(), LamportTime(11));
        assert_eq!(c.receive(LamportTime(3)).unwrap(), LamportTime(12));
        assert_eq!(c.current(), LamportTime(12));
    }

    #[test]
    fn lamport_refuses_stamps_that_would_overflow() {
        let c = LamportClock::new();
        assert_eq!(
            c.receive(LamportTime(u64::MAX)),
            Err(ClockError::OutOfRange { value: u64::MAX })
        );
        assert_eq!(c.current(), LamportTime(0));
    }

    #[test]
    fn hlc_follows_wall_time_and_counts_within_a_millisecond() {
        let wall = ManualClock::with_wall(Duration::from_millis(5_000));
        let h = HybridClock::with_clock(&wall, Duration::from_secs(1));
        assert_eq!(h.now(), HlcTimestamp::new(5_000, 0));
        assert_eq!(h.now(), HlcTimestamp::new(5_000, 1));
        wall.advance(Duration::from_millis(2));
        assert_eq!(h.now(), HlcTimestamp::new(5_002, 0));
    }

    #[test]
    fn hlc_stays_monotonic_when_wall_steps_back() {
        let wall = ManualClock::with_wall(Duration::from_millis(5_000));
        let h = HybridClock::with_clock(&wall, Duration::from_secs(1));
        let a = h.now();
        wall.step_wall_back(Duration::from_millis(1_000));
        let b = h.now();
        assert!(b > a);
        assert_eq!(b.physical_ms(), 5_000);
    }

    #[test]
    fn hlc_merges_remote_and_refuses_excess_drift() {
        let wall = ManualClock::with_wall(Duration::from_millis(5_000));
        let h = HybridClock::with_clock(&wall, Duration::from_millis(100));
        let remote = HlcTimestamp::new(5_050, 7);
        assert_eq!(h.receive(remote).unwrap(), HlcTimestamp::new(5_050, 8));
        let too_far = HlcTimestamp::new(5_200, 0);
        let before = h.current();
        assert_eq!(
            h.receive(too_far),
            Err(ClockError::Drift {
                remote_ms: 5_200,
                local_ms: 5_000,
                max_drift_ms: 100
            })
        );
        assert_eq!(
            h.current(),
            before,
            "a refused stamp leaves the clock alone"
        );
    }

    #[test]
    fn hlc_logical_overflow_carries_into_physical() {
        let wall = ManualClock::with_wall(Duration::from_millis(1_000));
        let h = HybridClock::with_clock(&wall, Duration::from_secs(1));
        h.receive(HlcTimestamp::new(1_000, u16::MAX - 1)).unwrap();
        let next = h.now();
        assert_eq!(next, HlcTimestamp::new(1_001, 0));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(3));
        assert_eq!(c.now() - t0, Duration::from_secs(3));
        let w = c.unix_time();
        c.step_wall_back(Duration::from_secs(1));
        assert_eq!(c.unix_time(), w - Duration::from_secs(1));
        assert_eq!(
            c.now() - t0,
            Duration::from_secs(3),
            "wall steps leave monotonic time"
        );
    }
}
