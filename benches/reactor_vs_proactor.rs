//! Question: what does the proactor's completion model cost against the reactor's readiness
//! model, on the same echo workload and the same machine?
//!
//! Servers, on loopback, started once: posa `reactor` (1 thread), posa `proactor` (1 loop
//! thread, emulated on a reactor), and, for scale, posa `reactor-pool` and `proactor` with 2
//! threads each. The client is a mio loop on the bench thread; every connection keeps `depth`
//! messages in flight (1: ping-pong; 8: pipelined). An iteration is one round: every
//! connection sends `depth` messages and reads all of them back, checked byte for byte.
//!
//! Throughput comes from criterion (time per round, elements = messages). Latency is a
//! distribution: after the criterion groups, a fixed run per configuration records each
//! message's round trip in an HDR histogram and prints p50/p99/p99.9/max (skipped under
//! `--test`, the smoke run).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::server::Model;

#[path = "common/echo_client.rs"]
mod echo_client;
use echo_client::{Client, server};

const CONFIGS: [(usize, usize, usize); 6] = [
    // (size, connections, depth)
    (64, 1, 1),
    (64, 100, 1),
    (64, 100, 8),
    (4096, 1, 1),
    (4096, 100, 1),
    (4096, 100, 8),
];

fn bench(c: &mut Criterion) {
    let servers = [
        ("reactor", server(Model::Reactor, 1)),
        ("proactor", server(Model::Proactor, 1)),
        ("reactor_pool_2", server(Model::ReactorPool, 2)),
        ("proactor_2", server(Model::Proactor, 2)),
    ];
    for (size, conns, depth) in CONFIGS {
        let mut g = c.benchmark_group(format!("rvp/{size}B/{conns}conn/depth{depth}"));
        g.throughput(Throughput::Elements((conns * depth) as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(3));
        for (name, (_, addr)) in &servers {
            let mut client = Client::new(*addr, conns, size, depth);
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.round(None);
                    }
                    start.elapsed()
                })
            });
        }
        g.finish();
    }
    if std::env::args().any(|a| a == "--test") {
        return; // smoke run: no latency pass
    }
    eprintln!("\nlatency per message (round trip), 300 rounds after 30 warm-up rounds:");
    eprintln!("config                          model            p50       p99     p99.9       max");
    for (size, conns, depth) in CONFIGS {
        for (name, (_, addr)) in &servers {
            let mut client = Client::new(*addr, conns, size, depth);
            for _ in 0..30 {
                client.round(None);
            }
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .expect("histogram bounds");
            for _ in 0..300 {
                client.round(Some(&mut h));
            }
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            eprintln!(
                "{:<31} {:<14} {:>7.1}µs {:>7.1}µs {:>7.1}µs {:>7.1}µs",
                format!("{size}B {conns}conn depth{depth}"),
                name,
                us(0.5),
                us(0.99),
                us(0.999),
                h.max() as f64 / 1000.0
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
