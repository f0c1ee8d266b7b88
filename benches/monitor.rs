//! Question: what does posa's Monitor-based bounded queue cost against the channels a user would
//! pick instead? posa `BoundedQueue` vs crossbeam `bounded` vs std `sync_channel`, capacity 64,
//! one producer/one consumer and two/two, 20,000 messages an iteration.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::monitor::BoundedQueue;

const MESSAGES: u64 = 20_000;
const CAPACITY: usize = 64;

/// Moves MESSAGES items from `producers` threads to `consumers` threads through one queue and
/// returns the wall time, thread start-up included (amortized over the messages).
fn run<Q: Send + Sync + 'static>(
    producers: u64,
    consumers: u64,
    queue: Q,
    put: fn(&Q, u64),
    take: fn(&Q) -> u64,
) -> Duration {
    let q = Arc::new(queue);
    let per_producer = MESSAGES / producers;
    let per_consumer = MESSAGES / consumers;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..producers {
        let q = Arc::clone(&q);
        handles.push(thread::spawn(move || {
            for i in 0..per_producer {
                put(&q, i);
            }
        }));
    }
    for _ in 0..consumers {
        let q = Arc::clone(&q);
        handles.push(thread::spawn(move || {
            let mut sum = 0u64;
            for _ in 0..per_consumer {
                sum = sum.wrapping_add(take(&q));
            }
            black_box(sum);
        }));
    }
    for h in handles {
        h.join().expect("bench thread panicked");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    for (label, p, n) in [("spsc", 1, 1), ("2p2c", 2, 2)] {
        let mut g = c.benchmark_group(format!("bounded_queue/{label}"));
        g.throughput(Throughput::Elements(MESSAGES));
        g.sample_size(20);
        g.bench_function("posa", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(
                            p,
                            n,
                            BoundedQueue::new(CAPACITY),
                            |q, v| q.put(v).expect("open"),
                            |q| q.take().expect("open"),
                        )
                    })
                    .sum()
            })
        });
        g.bench_function("crossbeam", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(
                            p,
                            n,
                            crossbeam_channel::bounded(CAPACITY),
                            |q, v| q.0.send(v).expect("open"),
                            |q| q.1.recv().expect("open"),
                        )
                    })
                    .sum()
            })
        });
        g.bench_function("std_sync_channel", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (tx, rx) = std::sync::mpsc::sync_channel(CAPACITY);
                        run(
                            p,
                            n,
                            (tx, std::sync::Mutex::new(rx)),
                            |q, v| q.0.send(v).expect("open"),
                            // std's Receiver is single-consumer: consumers share it by a mutex,
                            // which is what a user of std must do for MPMC.
                            |q| q.1.lock().expect("poisoned").recv().expect("open"),
                        )
                    })
                    .sum()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
