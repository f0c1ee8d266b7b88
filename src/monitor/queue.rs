//! A bounded blocking FIFO queue: the classic Monitor Object.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::{Condition, Monitor, deadline_after};
use crate::error::Refused;

/// Why no item could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// The queue was empty (non-blocking take).
    Empty,
    /// The queue stayed empty until the deadline.
    Timeout,
    /// The queue is closed and drained.
    Closed,
}

impl fmt::Display for TakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TakeError::Empty => "queue is empty",
            TakeError::Timeout => "timed out waiting for an item",
            TakeError::Closed => "queue is closed and drained",
        })
    }
}

impl std::error::Error for TakeError {}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    closed: bool,
}

/// A bounded multi-producer multi-consumer FIFO queue with blocking, non-blocking and timed
/// put/take, and [`close`](Self::close).
///
/// Memory is bounded: the buffer is allocated once at `capacity` and never grows. After `close`
/// every waiter wakes; takers drain what remains and then see `None`/[`TakeError::Closed`];
/// putters get their item back in [`Refused::Closed`].
///
/// ```
/// use posa::Refused;
/// use posa::monitor::BoundedQueue;
///
/// let q = BoundedQueue::new(1);
/// q.put("a").unwrap();
/// assert!(matches!(q.try_put("b"), Err(Refused::Full("b"))));
/// q.close();
/// assert_eq!(q.take(), Some("a")); // drains what remains
/// assert_eq!(q.take(), None);
/// ```
pub struct BoundedQueue<T> {
    monitor: Monitor<State<T>>,
    not_empty: Condition,
    not_full: Condition,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items.
    ///
    /// # Panics
    /// If `capacity` is 0 (a rendezvous channel is a different pattern).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "BoundedQueue capacity must be at least 1");
        Self {
            monitor: Monitor::new(State {
                items: VecDeque::with_capacity(capacity),
                capacity,
                closed: false,
            }),
            not_empty: Condition::new(),
            not_full: Condition::new(),
        }
    }

    /// Puts `item`, blocking while the queue is full.
    pub fn put(&self, item: T) -> Result<(), Refused<T>> {
        self.put_until(item, None)
    }

    /// Puts `item` if there is room now.
    pub fn try_put(&self, item: T) -> Result<(), Refused<T>> {
        let mut g = self.monitor.lock();
        if g.closed {
            return Err(Refused::Closed(item));
        }
        if g.items.len() == g.capacity {
            return Err(Refused::Full(item));
        }
        g.items.push_back(item);
        drop(g);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Puts `item`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), Refused<T>> {
        self.put_until(item, deadline_after(timeout))
    }

    /// Puts `item`, waiting until `deadline` at most for room (`None`: no deadline).
    pub fn put_until(&self, item: T, deadline: Option<Instant>) -> Result<(), Refused<T>> {
        let mut g = self.monitor.lock();
        let waited = g.wait_on_while_until(&self.not_full, deadline, |s| {
            !s.closed && s.items.len() == s.capacity
        });
        if g.closed {
            return Err(Refused::Closed(item));
        }
        if waited.is_err() {
            return Err(Refused::Timeout(item));
        }
        g.items.push_back(item);
        drop(g);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes the oldest item, blocking while the queue is empty; `None` once closed and drained.
    pub fn take(&self) -> Option<T> {
        self.take_until(None).ok()
    }

    /// Takes the oldest item if there is one now.
    pub fn try_take(&self) -> Result<T, TakeError> {
        let mut g = self.monitor.lock();
        match g.items.pop_front() {
            Some(item) => {
                drop(g);
                self.not_full.notify_one();
                Ok(item)
            }
            None if g.closed => Err(TakeError::Closed),
            None => Err(TakeError::Empty),
        }
    }

    /// Takes the oldest item, waiting at most `timeout` for one.
    pub fn take_timeout(&self, timeout: Duration) -> Result<T, TakeError> {
        self.take_until(deadline_after(timeout))
    }

    /// Takes the oldest item, waiting until `deadline` at most (`None`: no deadline).
    pub fn take_until(&self, deadline: Option<Instant>) -> Result<T, TakeError> {
        let mut g = self.monitor.lock();
        let waited = g.wait_on_while_until(&self.not_empty, deadline, |s| {
            !s.closed && s.items.is_empty()
        });
        match g.items.pop_front() {
            Some(item) => {
                drop(g);
                self.not_full.notify_one();
                Ok(item)
            }
            None if waited.is_err() => Err(TakeError::Timeout),
            None => Err(TakeError::Closed),
        }
    }

    /// Closes the queue and wakes every waiter. Idempotent; items already queued stay takeable.
    pub fn close(&self) {
        self.monitor.with(|s| s.closed = true);
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// `true` once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.monitor.lock().closed
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.monitor.lock().items.len()
    }

    /// `true` if no item is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given at construction.
    pub fn capacity(&self) -> usize {
        self.monitor.lock().capacity
    }
}

impl<T> fmt::Debug for BoundedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.monitor.lock();
        f.debug_struct("BoundedQueue")
            .field("len", &g.items.len())
            .field("capacity", &g.capacity)
            .field("closed", &g.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, thread};

    #[test]
    fn a_queue_reports_its_length_capacity_and_state() {
        let q = BoundedQueue::new(3);
        assert_eq!(
            (q.len(), q.capacity(), q.is_empty(), q.is_closed()),
            (0, 3, true, false)
        );
        q.put(1).unwrap();
        q.put(2).unwrap();
        assert_eq!((q.len(), q.is_empty()), (2, false));
        assert!(format!("{q:?}").starts_with("BoundedQueue"), "{q:?}");
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.len(), 2, "close keeps what was queued");
    }

    #[test]
    fn fifo_order_and_bound() {
        let q = BoundedQueue::new(2);
        q.put(1).unwrap();
        q.put(2).unwrap();
        assert_eq!(q.try_put(3), Err(Refused::Full(3)));
        assert_eq!(
            q.put_timeout(3, Duration::from_millis(1)),
            Err(Refused::Timeout(3))
        );
        assert_eq!(q.take(), Some(1));
        assert_eq!(q.try_take(), Ok(2));
        assert_eq!(q.try_take(), Err(TakeError::Empty));
        assert_eq!(
            q.take_timeout(Duration::from_millis(1)),
            Err(TakeError::Timeout)
        );
    }

    #[test]
    fn close_wakes_blocked_taker_and_returns_items_to_putters() {
        let q = Arc::new(BoundedQueue::<u32>::new(1));
        let q2 = Arc::clone(&q);
        let taker = thread::spawn(move || q2.take());
        q.close();
        assert_eq!(taker.join().unwrap(), None);
        assert_eq!(q.put(5), Err(Refused::Closed(5)));
        assert_eq!(q.try_take(), Err(TakeError::Closed));
    }

    #[test]
    fn close_wakes_blocked_putter_with_its_item() {
        let q = Arc::new(BoundedQueue::new(1));
        q.put(1).unwrap();
        let q2 = Arc::clone(&q);
        let putter = thread::spawn(move || q2.put(2));
        q.close();
        assert_eq!(putter.join().unwrap(), Err(Refused::Closed(2)));
        assert_eq!(q.take(), Some(1));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn many_producers_and_consumers_lose_and_duplicate_nothing() {
        const PER: u64 = 2_000;
        let q = Arc::new(BoundedQueue::new(4));
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    for i in 0..PER {
                        q.put(p * PER + i).unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(v) = q.take() {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        q.close();
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..3 * PER).collect::<Vec<_>>());
    }
}
