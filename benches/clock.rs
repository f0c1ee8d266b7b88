//! Question: what does a logical-clock stamp cost over a bare atomic increment?
//! `LamportClock::tick` and `HybridClock::now` vs `AtomicU64::fetch_add` (and, for the HLC, the
//! wall-clock read it cannot avoid), on one thread and with 2 threads stamping the same clock
//! (100,000 stamps each).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::clock::{HybridClock, LamportClock, LamportTime};

const PER_THREAD: u64 = 100_000;

fn two_threads<C: Send + Sync + 'static>(clock: C, stamp: fn(&C)) -> Duration {
    let c = Arc::new(clock);
    let start = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    stamp(&c);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("bench thread panicked");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stamp/1_thread");
    let lamport = LamportClock::new();
    g.bench_function("lamport_tick", |b| b.iter(|| black_box(lamport.tick())));
    let raw = AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(raw.fetch_add(1, Ordering::AcqRel)))
    });
    let hlc = HybridClock::new(Duration::from_secs(1));
    g.bench_function("hlc_now", |b| b.iter(|| black_box(hlc.now())));
    // What every HLC stamp must pay: one read of the wall clock.
    g.bench_function("system_time_now", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()))
    });
    g.bench_function("lamport_receive", |b| {
        b.iter(|| black_box(lamport.receive(LamportTime(black_box(5)))))
    });
    g.finish();

    let mut g = c.benchmark_group("stamp/2_threads");
    g.throughput(Throughput::Elements(2 * PER_THREAD));
    g.sample_size(20);
    g.bench_function("lamport_tick", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    two_threads(LamportClock::new(), |c| {
                        black_box(c.tick());
                    })
                })
                .sum()
        })
    });
    g.bench_function("atomic_fetch_add", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    two_threads(AtomicU64::new(0), |c| {
                        black_box(c.fetch_add(1, Ordering::AcqRel));
                    })
                })
                .sum()
        })
    });
    g.bench_function("hlc_now", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    two_threads(HybridClock::new(Duration::from_secs(1)), |c| {
                        black_box(c.now());
                    })
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
