//! The reactor's timer queue: one-shot and periodic timers, cheap to arm, re-arm and cancel.
//!
//! # Algorithm and invariants
//!
//! Timers live in a slab (`Vec<Entry>` plus a free list); a binary min-heap orders
//! `(deadline, slot, seq)` entries. Designed for the common case of an idle timeout that is
//! pushed later on every read and cancelled before it fires:
//! - **arm**: take a slot, push one heap entry: O(log n).
//! - **re-arm later** ([`TimerQueue::reset`] to a later deadline): write the new deadline into
//!   the slot, nothing else: O(1). When the old heap entry surfaces, the slot's later deadline
//!   is seen and the entry is pushed again once ("lazy re-arm").
//! - **re-arm earlier**: push a fresh entry with a new sequence number; the old one is stale.
//! - **cancel**: free the slot and bump its sequence number: O(1). Its heap entry is stale.
//! - A heap entry is live only if its `seq` equals its slot's `seq`; stale entries are dropped
//!   when they surface, and the heap is rebuilt from the live timers when stale entries outnumber
//!   live ones, so memory stays bounded by the number of armed timers.
//! - A [`TimerId`] carries its slot's generation, bumped when the slot is freed, so a stale id
//!   can never reset or cancel a timer that reused the slot.
//!
//! The queue is owned by one reactor thread and takes "now" as an argument, so it runs on any
//! [`Clock`](crate::clock::Clock), virtual time included.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Identifies an armed timer; stale ids (fired one-shots, cancelled timers) are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

/// What a periodic timer does when ticks were missed (the reactor was busy or asleep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// Fire once for every missed tick, back to back, keeping the original schedule.
    Burst,
    /// Fire once, then schedule the next tick a full period after *now* (the schedule shifts).
    #[default]
    Delay,
    /// Fire once, then skip to the next tick of the original schedule that is still ahead.
    Skip,
}

#[derive(Debug)]
struct Entry<O> {
    deadline: Instant,
    period: Option<(Duration, MissedTicks)>,
    owner: O,
    generation: u32,
    seq: u64,
    armed: bool,
}

/// A timer queue owned by one thread. `O` identifies who gets the expiry (a handler token).
#[derive(Debug)]
pub struct TimerQueue<O> {
    entries: Vec<Entry<O>>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    live: usize,
}

impl<O: Copy> Default for TimerQueue<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Copy> TimerQueue<O> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            live: 0,
        }
    }

    /// Timers armed now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// `true` if no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Arms a one-shot timer for `owner` at `deadline`.
    pub fn arm(&mut self, owner: O, deadline: Instant) -> TimerId {
        self.insert(owner, deadline, None)
    }

    /// Arms a periodic timer: first at `first`, then every `period` (at least 1 ns).
    pub fn arm_periodic(
        &mut self,
        owner: O,
        first: Instant,
        period: Duration,
        missed: MissedTicks,
    ) -> TimerId {
        let period = period.max(Duration::from_nanos(1));
        self.insert(owner, first, Some((period, missed)))
    }

    fn insert(
        &mut self,
        owner: O,
        deadline: Instant,
        period: Option<(Duration, MissedTicks)>,
    ) -> TimerId {
        let slot = match self.free.pop() {
            Some(slot) => {
                let e = &mut self.entries[slot as usize];
                e.deadline = deadline;
                e.period = period;
                e.owner = owner;
                e.seq += 1;
                e.armed = true;
                slot
            }
            None => {
                let slot = u32::try_from(self.entries.len()).expect("more than 2^32 timers");
                self.entries.push(Entry {
                    deadline,
                    period,
                    owner,
                    generation: 0,
                    seq: 0,
                    armed: true,
                });
                slot
            }
        };
        self.live += 1;
        let e = &self.entries[slot as usize];
        self.heap.push(Reverse((deadline, slot, e.seq)));
        TimerId {
            slot,
            generation: e.generation,
        }
    }

    fn entry_mut(&mut self, id: TimerId) -> Option<&mut Entry<O>> {
        self.entries
            .get_mut(id.slot as usize)
            .filter(|e| e.armed && e.generation == id.generation)
    }

    /// Moves an armed timer's (next) deadline. Later: O(1); earlier: one heap push.
    /// Returns `false` for a stale id.
    pub fn reset(&mut self, id: TimerId, deadline: Instant) -> bool {
        let Some(e) = self.entry_mut(id) else {
            return false;
        };
        let earlier = deadline < e.deadline;
        e.deadline = deadline;
        if earlier {
            e.seq += 1;
            let seq = e.seq;
            self.heap.push(Reverse((deadline, id.slot, seq)));
        }
        true
    }

    /// Disarms a timer. Returns `false` for a stale id (already fired or cancelled).
    pub fn cancel(&mut self, id: TimerId) -> bool {
        if self.entry_mut(id).is_none() {
            return false;
        }
        self.free_slot(id.slot);
        self.maybe_compact();
        true
    }

    /// Cancels every timer whose owner matches; returns how many.
    pub fn cancel_owned_by(&mut self, mut owned: impl FnMut(&O) -> bool) -> usize {
        let slots: Vec<u32> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.armed && owned(&e.owner))
            .map(|(i, _)| i as u32)
            .collect();
        for &slot in &slots {
            self.free_slot(slot);
        }
        self.maybe_compact();
        slots.len()
    }

    fn free_slot(&mut self, slot: u32) {
        let e = &mut self.entries[slot as usize];
        e.armed = false;
        e.generation = e.generation.wrapping_add(1);
        e.seq += 1;
        self.free.push(slot);
        self.live -= 1;
    }

    fn maybe_compact(&mut self) {
        if self.heap.len() > 2 * self.live + 64 {
            let live = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.armed)
                .map(|(i, e)| Reverse((e.deadline, i as u32, e.seq)));
            self.heap = live.collect();
        }
    }

    /// Drops stale entries at the top of the heap and re-queues lazily re-armed ones, so the top
    /// is the true next deadline.
    fn settle(&mut self) {
        while let Some(&Reverse((deadline, slot, seq))) = self.heap.peek() {
            let e = &self.entries[slot as usize];
            if !e.armed || e.seq != seq {
                self.heap.pop();
            } else if e.deadline > deadline {
                let next = e.deadline;
                self.heap.pop();
                self.heap.push(Reverse((next, slot, seq)));
            } else {
                return;
            }
        }
    }

    /// The earliest deadline of an armed timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.settle();
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Pops one timer due at `now` and returns its id and owner; periodic timers are re-armed
    /// per their [`MissedTicks`] policy. Call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<(TimerId, O)> {
        self.settle();
        let &Reverse((deadline, slot, _)) = self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        let e = &mut self.entries[slot as usize];
        let id = TimerId {
            slot,
            generation: e.generation,
        };
        let owner = e.owner;
        match e.period {
            None => self.free_slot(slot),
            Some((period, missed)) => {
                let next = match missed {
                    MissedTicks::Burst => deadline + period,
                    MissedTicks::Delay => now + period,
                    MissedTicks::Skip => {
                        let behind = now.saturating_duration_since(deadline).as_nanos();
                        let skipped = behind / period.as_nanos() + 1;
                        let skipped = u32::try_from(skipped).unwrap_or(u32::MAX);
                        deadline + period.saturating_mul(skipped)
                    }
                };
                e.deadline = next;
                e.seq += 1;
                let seq = e.seq;
                self.heap.push(Reverse((next, slot, seq)));
            }
        }
        Some((id, owner))
    }

    /// Entries in the heap, stale ones included (for tests and statistics).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(q: &mut TimerQueue<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| q.poll(now).map(|(_, o)| o)).collect()
    }

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.arm(3, t0 + ms(30));
        q.arm(1, t0 + ms(10));
        q.arm(2, t0 + ms(20));
        assert_eq!(q.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(drain(&mut q, t0 + ms(5)), Vec::<u32>::new());
        assert_eq!(drain(&mut q, t0 + ms(20)), vec![1, 2]);
        assert_eq!(drain(&mut q, t0 + ms(100)), vec![3]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_timer_moved_earlier_fires_at_its_new_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.arm(1, t0 + ms(10));
        assert!(q.reset(id, t0 + ms(5)));
        assert_eq!(q.next_deadline(), Some(t0 + ms(5)));
        assert_eq!(drain(&mut q, t0 + ms(6)), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn stale_heap_entries_are_dropped_and_compacted_away() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        // Earlier (a heap push), then later (lazy): the first entry is stale once settled.
        let id = q.arm(1, t0 + ms(10));
        assert!(q.reset(id, t0 + ms(5)));
        assert!(q.reset(id, t0 + ms(20)));
        assert_eq!(q.next_deadline(), Some(t0 + ms(20)));
        assert_eq!(q.heap_len(), 1, "the stale entry is dropped, not re-queued");
        // Many cancelled timers: the heap shrinks back near the live count.
        let ids: Vec<_> = (0..1000).map(|i| q.arm(i, t0 + ms(50))).collect();
        for id in ids {
            assert!(q.cancel(id));
        }
        assert!(q.heap_len() <= 2 * q.len() + 64, "heap {}", q.heap_len());
        assert_eq!(drain(&mut q, t0 + ms(100)), vec![1]);
    }

    #[test]
    fn cancel_and_stale_ids() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let a = q.arm(1, t0 + ms(10));
        assert!(q.cancel(a));
        assert!(!q.cancel(a), "second cancel is a no-op");
        let b = q.arm(2, t0 + ms(10)); // reuses the slot
        assert!(
            !q.reset(a, t0 + ms(1)),
            "a stale id cannot touch the new timer"
        );
        assert_eq!(drain(&mut q, t0 + ms(10)), vec![2]);
        assert!(!q.cancel(b), "fired one-shot is gone");
    }

    #[test]
    fn lazy_rearm_later_costs_no_heap_push_and_fires_at_the_new_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.arm(7, t0 + ms(10));
        for i in 1..=1000 {
            assert!(q.reset(id, t0 + ms(10 + i)));
        }
        assert_eq!(q.heap_len(), 1, "re-arming later must not grow the heap");
        assert_eq!(drain(&mut q, t0 + ms(500)), Vec::<u32>::new());
        assert_eq!(q.next_deadline(), Some(t0 + ms(1010)));
        assert_eq!(drain(&mut q, t0 + ms(1010)), vec![7]);
    }

    #[test]
    fn rearm_earlier_fires_once() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.arm(1, t0 + ms(100));
        q.reset(id, t0 + ms(5));
        assert_eq!(drain(&mut q, t0 + ms(1000)), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn heap_stays_bounded_under_arm_cancel_churn() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let keep: Vec<_> = (0..10).map(|i| q.arm(i, t0 + ms(1000))).collect();
        for i in 0..100_000 {
            let id = q.arm(99, t0 + ms(10 + i % 50));
            q.cancel(id);
        }
        assert_eq!(q.len(), 10);
        assert!(q.heap_len() <= 2 * 10 + 65, "heap grew to {}", q.heap_len());
        assert_eq!(drain(&mut q, t0 + ms(1000)).len(), keep.len());
    }

    #[test]
    fn periodic_missed_tick_policies() {
        let t0 = Instant::now();
        let p = ms(10);
        for (policy, fires, next) in [
            (MissedTicks::Burst, 4, t0 + ms(50)), // ticks at 10,20,30,40 all fire at 45
            (MissedTicks::Delay, 1, t0 + ms(55)), // one fire, next = now + period
            (MissedTicks::Skip, 1, t0 + ms(50)),  // one fire, next on the original grid
        ] {
            let mut q = TimerQueue::new();
            q.arm_periodic(0u32, t0 + p, p, policy);
            let n = drain(&mut q, t0 + ms(45)).len();
            assert_eq!(n, fires, "{policy:?}");
            assert_eq!(q.next_deadline(), Some(next), "{policy:?}");
        }
    }

    #[test]
    fn cancel_owned_by_disarms_a_handlers_timers() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.arm(1u32, t0 + ms(1));
        q.arm(2, t0 + ms(1));
        q.arm_periodic(1, t0 + ms(1), ms(1), MissedTicks::Skip);
        assert_eq!(q.cancel_owned_by(|o| *o == 1), 2);
        assert_eq!(drain(&mut q, t0 + ms(5)), vec![2]);
    }
}
