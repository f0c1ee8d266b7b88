//! Question: what does it cost to run many tiny jobs through posa's pool, against what a user
//! would pick instead? 100,000 jobs (each adds to a counter) from submit to the last completion:
//! posa's default work-stealing pool with `execute` (fire and forget, a latch, like the peers)
//! and with `submit` (waiting on every job's token), the same timed, ordered FIFO and
//! priority (2 workers),
//! `rayon::spawn` + a latch (2 threads), a naive crossbeam-channel pool + a latch (2 workers),
//! and a `std::thread::spawn` per job (10,000 of those; times are per job throughout).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::pool::{Fifo, JobOptions, Priority, ThreadPool};

const JOBS: usize = 100_000;
/// A thread per job is ~100x slower: fewer of them, reported per job all the same.
const SPAWN_JOBS: usize = 10_000;

#[path = "common/channel_pool.rs"]
mod channel_pool;
#[path = "common/latch.rs"]
mod latch;
use channel_pool::ChannelPool;
use latch::Latch;

/// Submits `JOBS` jobs and waits on every token.
fn run_posa(b: &mut criterion::Bencher<'_>, pool: &ThreadPool) {
    let sum = Arc::new(AtomicUsize::new(0));
    b.iter(|| {
        let tokens: Vec<_> = (0..JOBS)
            .map(|i| {
                let sum = Arc::clone(&sum);
                pool.submit(move || sum.fetch_add(i, Ordering::Relaxed))
                    .expect("open")
            })
            .collect();
        for t in tokens {
            black_box(t.wait());
        }
    })
}

/// Like `run_posa`, with priorities `i % levels`.
fn run_priority(b: &mut criterion::Bencher<'_>, pool: &ThreadPool, levels: usize) {
    let sum = Arc::new(AtomicUsize::new(0));
    b.iter(|| {
        let tokens: Vec<_> = (0..JOBS)
            .map(|i| {
                let sum = Arc::clone(&sum);
                let options = JobOptions::priority((i % levels) as u8);
                pool.submit_with(options, move || sum.fetch_add(i, Ordering::Relaxed))
                    .expect("open")
            })
            .collect();
        for t in tokens {
            black_box(t.wait());
        }
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool/100k_tiny_jobs");
    g.throughput(Throughput::Elements(JOBS as u64));
    g.sample_size(10);

    let stealing = ThreadPool::builder()
        .threads(2)
        .capacity(JOBS)
        .build()
        .expect("pool");
    g.bench_function("posa_stealing", |b| run_posa(b, &stealing));
    g.bench_function("posa_stealing_execute_latch", |b| {
        let sum = Arc::new(AtomicUsize::new(0));
        b.iter(|| {
            let latch = Latch::new(JOBS);
            for i in 0..JOBS {
                let (sum, latch) = (Arc::clone(&sum), Arc::clone(&latch));
                stealing
                    .execute(move || {
                        sum.fetch_add(i, Ordering::Relaxed);
                        latch.count_down();
                    })
                    .expect("open");
            }
            latch.wait();
        })
    });

    let fifo = ThreadPool::builder()
        .threads(2)
        .capacity(JOBS)
        .scheduler(Fifo::default())
        .build()
        .expect("pool");
    g.bench_function("posa_fifo_ordered", |b| run_posa(b, &fifo));

    let timed = ThreadPool::builder()
        .threads(2)
        .capacity(JOBS)
        .timing(true)
        .build()
        .expect("pool");
    g.bench_function("posa_stealing_timed", |b| run_posa(b, &timed));

    let prio = ThreadPool::builder()
        .threads(2)
        .capacity(JOBS)
        .scheduler(Priority::new(4, None))
        .build()
        .expect("pool");
    // Four levels mixed: jobs run out of submission order, so the waiter (which waits on the
    // tokens in submission order) sleeps more often; one level isolates the scheduler's own cost.
    g.bench_function("posa_priority", |b| run_priority(b, &prio, 4));
    g.bench_function("posa_priority_one_level", |b| run_priority(b, &prio, 1));

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon");
    g.bench_function("rayon_spawn_latch", |b| {
        let sum = Arc::new(AtomicUsize::new(0));
        b.iter(|| {
            let latch = Latch::new(JOBS);
            for i in 0..JOBS {
                let (sum, latch) = (Arc::clone(&sum), Arc::clone(&latch));
                rayon.spawn(move || {
                    sum.fetch_add(i, Ordering::Relaxed);
                    latch.count_down();
                });
            }
            latch.wait();
        })
    });

    let naive = ChannelPool::new(2);
    g.bench_function("crossbeam_channel_pool_latch", |b| {
        let sum = Arc::new(AtomicUsize::new(0));
        b.iter(|| {
            let latch = Latch::new(JOBS);
            for i in 0..JOBS {
                let (sum, latch) = (Arc::clone(&sum), Arc::clone(&latch));
                naive.send(Box::new(move || {
                    sum.fetch_add(i, Ordering::Relaxed);
                    latch.count_down();
                }));
            }
            latch.wait();
        })
    });

    g.throughput(Throughput::Elements(SPAWN_JOBS as u64));
    g.bench_function("std_thread_spawn_per_job", |b| {
        let sum = Arc::new(AtomicUsize::new(0));
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let handles: Vec<_> = (0..SPAWN_JOBS)
                    .map(|i| {
                        let sum = Arc::clone(&sum);
                        std::thread::spawn(move || sum.fetch_add(i, Ordering::Relaxed))
                    })
                    .collect();
                for h in handles {
                    black_box(h.join().expect("job"));
                }
            }
            start.elapsed()
        })
    });
    g.finish();
    drop(naive); // joins its workers
}

criterion_group!(benches, bench);
criterion_main!(benches);
