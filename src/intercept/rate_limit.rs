//! [`RateLimit`]: token buckets, one overall or one per peer address.
//!
//! # Algorithm and invariants
//! - A bucket holds at most `burst` tokens and refills at `rate` a second from the clock; a
//!   dispatch takes one token or is refused with `RateLimited`. Refill and take happen under
//!   one lock, so racing callers never take more tokens than there are.
//! - Per peer: buckets live in a map bounded by `max_peers`; when it is full, the bucket idle
//!   longest is evicted (a full bucket, so an evicted peer loses nothing), and memory stays
//!   bounded whatever the peers do.

use std::fmt;
use std::time::Instant;

use super::{Dispatch, Interceptor, Point, Reason, Rejection, applies};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::sync::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;

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
    clock: SharedClock,
    buckets: Mutex<Buckets>,
}

impl RateLimit {
    fn build(rate_per_sec: f64, burst: u32, per_peer: bool) -> Self {
        let clock: SharedClock = crate::clock::shared(SystemClock);
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
    pub fn clock(mut self, clock: SharedClock) -> Self {
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
