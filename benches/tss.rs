//! Question: what does a contention-free per-thread counter buy over the shared alternatives?
//! posa `tss::Counter` vs one `AtomicU64` (fetch_add) vs `Mutex<u64>`, 2 threads each adding
//! 200,000 times; plus the single-thread cost of each.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::tss::Counter;

const PER_THREAD: u64 = 200_000;
const THREADS: u64 = 2;

fn contended<C: Send + Sync + 'static>(counter: C, add: fn(&C), read: fn(&C) -> u64) -> Duration {
    let c = Arc::new(counter);
    let start = Instant::now();
    let hs: Vec<_> = (0..THREADS)
        .map(|_| {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    add(&c);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("bench thread panicked");
    }
    let elapsed = start.elapsed();
    assert_eq!(read(&c), THREADS * PER_THREAD, "lost increments");
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter/2_threads");
    g.throughput(Throughput::Elements(THREADS * PER_THREAD));
    g.sample_size(20);
    g.bench_function("posa_tss_counter", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| contended(Counter::new(), |c| c.incr(), |c| c.sum()))
                .sum()
        })
    });
    g.bench_function("atomic_fetch_add", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    contended(
                        AtomicU64::new(0),
                        |c| {
                            c.fetch_add(1, Ordering::Relaxed);
                        },
                        |c| c.load(Ordering::Relaxed),
                    )
                })
                .sum()
        })
    });
    g.bench_function("mutex_u64", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    contended(
                        std::sync::Mutex::new(0u64),
                        |c| *c.lock().expect("poisoned") += 1,
                        |c| *c.lock().expect("poisoned"),
                    )
                })
                .sum()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("counter/1_thread");
    let counter = Counter::new();
    g.bench_function("posa_tss_counter", |b| b.iter(|| counter.incr()));
    let atomic = AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| atomic.fetch_add(1, Ordering::Relaxed))
    });
    let mutex = std::sync::Mutex::new(0u64);
    g.bench_function("mutex_u64", |b| {
        b.iter(|| *mutex.lock().expect("poisoned") += 1)
    });
    g.finish();
    black_box((counter.sum(), atomic.load(Ordering::Relaxed)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
