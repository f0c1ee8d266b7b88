//! Question: what does the interceptor chain cost on a real dispatch path?
//!
//! The same echo workload (64 B, 100 connections, 8 messages in flight; and 64 B on one
//! connection) against posa `reactor` servers that differ only in their chain: none (the
//! default; an empty chain is the same `None`, so "empty" and "none" are one code path), one
//! no-op interceptor (the chain machinery: a clock read and two virtual calls per upcall and
//! per accept), and `Tracing` + `Metrics` (span per dispatch with no subscriber installed, plus
//! per-thread counters and an HDR histogram record). Ratios of time per message.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::intercept::{Chain, Interceptor};
use posa::intercept::{Metrics, Tracing};
use posa::server::Model;

#[path = "common/echo_client.rs"]
mod echo_client;
use echo_client::{Client, server_with};

/// Does nothing: measures the chain itself.
struct Noop;
impl Interceptor for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
}

fn bench(c: &mut Criterion) {
    let servers = [
        ("no_chain", server_with(Model::Reactor, 1, Chain::new())),
        (
            "noop_interceptor",
            server_with(Model::Reactor, 1, Chain::new().with(Noop)),
        ),
        (
            "tracing_metrics",
            server_with(
                Model::Reactor,
                1,
                Chain::new().with(Tracing).with(Metrics::new()),
            ),
        ),
    ];
    for (conns, depth) in [(1, 1), (100, 8)] {
        let mut g = c.benchmark_group(format!("intercept/echo_64B/{conns}conn/depth{depth}"));
        g.throughput(Throughput::Elements((conns * depth) as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(3));
        for (name, (_, addr)) in &servers {
            let mut client = Client::new(*addr, conns, 64, depth);
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
