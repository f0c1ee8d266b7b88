//! Property tests of the pool's scheduling strategies, on the strategies themselves: for any mix
//! of jobs, each pops in the order it promises; aging bounds a low-priority job's wait.

use std::time::{Duration, Instant};

use posa::pool::{EarliestDeadline, Fifo, JobMeta, Lifo, Priority, Queued, Scheduler};
use proptest::prelude::*;

fn jobs() -> impl Strategy<Value = Vec<(u8, Option<u16>)>> {
    prop::collection::vec((0u8..4, prop::option::of(0u16..50)), 0..60)
}

fn fill<S: Scheduler<u64>>(mut s: S, t0: Instant, spec: &[(u8, Option<u16>)]) -> Vec<JobMeta> {
    for (seq, &(priority, deadline)) in spec.iter().enumerate() {
        let meta = JobMeta {
            seq: seq as u64,
            priority,
            deadline: deadline.map(|ms| t0 + Duration::from_millis(u64::from(ms))),
            enqueued: t0,
        };
        s.push(Queued {
            meta,
            job: seq as u64,
        });
    }
    std::iter::from_fn(|| s.pop(t0).map(|q| q.meta)).collect()
}

proptest! {
    #[test]
    fn each_scheduler_pops_in_its_promised_order(spec in jobs()) {
        let t0 = Instant::now();
        let seqs = |v: Vec<JobMeta>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        let n = spec.len() as u64;

        prop_assert_eq!(seqs(fill(Fifo::default(), t0, &spec)), (0..n).collect::<Vec<_>>());
        prop_assert_eq!(seqs(fill(Lifo::default(), t0, &spec)), (0..n).rev().collect::<Vec<_>>());

        let by_priority = fill(Priority::new(4, None), t0, &spec);
        for w in by_priority.windows(2) {
            prop_assert!(
                (w[0].priority, std::cmp::Reverse(w[0].seq)) > (w[1].priority, std::cmp::Reverse(w[1].seq)),
                "priority order broken: {:?} before {:?}", w[0], w[1]
            );
        }
        prop_assert_eq!(by_priority.len(), spec.len());

        let by_deadline = fill(EarliestDeadline::default(), t0, &spec);
        let key = |m: &JobMeta| (m.deadline.is_none(), m.deadline, m.seq);
        for w in by_deadline.windows(2) {
            prop_assert!(key(&w[0]) < key(&w[1]), "EDF order broken: {:?} before {:?}", w[0], w[1]);
        }
        prop_assert_eq!(by_deadline.len(), spec.len());
    }

    #[test]
    fn aging_lets_a_long_waiting_low_priority_job_overtake(fresh_high in 1usize..40, levels in 2u8..8) {
        let aging = Duration::from_millis(10);
        let t0 = Instant::now();
        let mut s = Priority::new(levels, Some(aging));
        s.push(Queued { meta: JobMeta { seq: 0, priority: 0, deadline: None, enqueued: t0 }, job: 0u64 });
        // It has waited one aging step per level above it, plus one: it now outranks the top.
        let now = t0 + aging * u32::from(levels);
        for i in 0..fresh_high {
            let meta = JobMeta { seq: 1 + i as u64, priority: levels - 1, deadline: None, enqueued: now };
            s.push(Queued { meta, job: 1 + i as u64 });
        }
        prop_assert_eq!(s.pop(now).map(|q| q.meta.seq), Some(0));
        // without aging it would wait behind every one of them
        let mut strict = Priority::new(levels, None);
        strict.push(Queued { meta: JobMeta { seq: 0, priority: 0, deadline: None, enqueued: t0 }, job: 0u64 });
        strict.push(Queued { meta: JobMeta { seq: 1, priority: levels - 1, deadline: None, enqueued: now }, job: 1 });
        prop_assert_eq!(strict.pop(now).map(|q| q.meta.seq), Some(1));
    }
}
