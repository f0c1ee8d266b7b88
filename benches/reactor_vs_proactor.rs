//! Question: what does each completion model cost against the reactor's readiness model, on
//! the same echo workload and the same machine? Three designs, one loop thread each:
//!
//! - `reactor`: readiness (mio/epoll); the handler reads and writes.
//! - `proactor_emulated`: the proactor on a reactor, as Boost.Asio does on epoll: operations
//!   are tried at once and wait for readiness on `WouldBlock`.
//! - `proactor_uring`: the proactor on io_uring: the kernel performs each receive and send and
//!   posts its completion (skipped, with the reason, where the kernel refuses io_uring).
//!
//! The client is a mio loop on the bench thread, pinned to the first core, the servers' loops
//! to the last; every connection keeps `depth` messages in flight (1: ping-pong; 8:
//! pipelined). An iteration is one round: every connection sends
//! `depth` messages and reads all of them back, checked byte for byte.
//!
//! Criterion gives each design's time per round. Then, outside criterion (skipped under
//! `--test`, the smoke run), the summary users come for: the designs interleaved round by
//! round (A B C, A B C, ...), each proactor's throughput as a ratio to the reactor's in the
//! same round, reported as the median with its min-max over the rounds, and the latency
//! distribution per message (HDR: p50/p99/p99.9/max).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use posa::proactor::{Backend, skip_without_io_uring};
use posa::server::{Model, Server, ServerConfig};

#[path = "common/echo_client.rs"]
mod echo_client;
use echo_client::{Client, start};

const CONFIGS: [(usize, usize, usize); 9] = [
    // (size, connections, depth)
    (64, 1, 1),
    (64, 100, 1),
    (64, 300, 1),
    (64, 1000, 1),
    (64, 100, 8),
    (4096, 1, 1),
    (4096, 100, 1),
    (4096, 1000, 1),
    (4096, 100, 8),
];

fn servers() -> Vec<(&'static str, (Server, std::net::SocketAddr))> {
    let one = |model, backend| {
        start(ServerConfig {
            model,
            threads: 1,
            backend,
            max_conns: 20_000,
            ..ServerConfig::default()
        })
    };
    let mut s = vec![
        ("reactor", one(Model::Reactor, Backend::Auto)),
        ("proactor_emulated", one(Model::Proactor, Backend::Emulated)),
    ];
    if skip_without_io_uring("benches/reactor_vs_proactor") {
        s.push(("proactor_uring", one(Model::Proactor, Backend::IoUring)));
    }
    s
}

fn bench(c: &mut Criterion) {
    raise_fd_limit();
    // Servers on the last core, the client (this thread) on the first: the loop threads
    // inherit the affinity their creator had. On 2 shared cores this keeps a ping-pong from
    // bouncing between "both on one core" and "one each" from run to run.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin(cores.saturating_sub(1));
    let servers = servers();
    pin(0);
    let smoke = std::env::args().any(|a| a == "--test");
    for (size, conns, depth) in CONFIGS {
        let mut g = c.benchmark_group(format!("rvp/{size}B/{conns}conn/depth{depth}"));
        g.throughput(Throughput::Elements((conns * depth) as u64));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(2));
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
    if smoke {
        return; // smoke run: no ratio or latency pass
    }
    summary(&servers);
}

/// Interleaved rounds: each design in turn, `ROUNDS` times; throughput ratios to the reactor
/// per round, median and range.
fn summary(servers: &[(&'static str, (Server, std::net::SocketAddr))]) {
    const ROUNDS: usize = 7;
    eprintln!(
        "\nreactor vs proactor: throughput ratio to the reactor (msgs/s), median [min-max] of {ROUNDS} interleaved rounds"
    );
    eprintln!(
        "{:<28} {}",
        "config",
        servers
            .iter()
            .skip(1)
            .map(|(n, _)| format!("{n:>26}"))
            .collect::<String>()
    );
    for (size, conns, depth) in CONFIGS {
        let mut clients: Vec<Client> = servers
            .iter()
            .map(|(_, (_, addr))| Client::new(*addr, conns, size, depth))
            .collect();
        // Enough rounds per turn for ~50 ms of work at the reactor's pace.
        let per_turn = (20_000 / (conns * depth)).clamp(3, 2_000);
        let mut rates = vec![Vec::new(); servers.len()];
        for client in &mut clients {
            for _ in 0..per_turn.min(50) {
                client.round(None); // warm up
            }
        }
        for _ in 0..ROUNDS {
            for (i, client) in clients.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..per_turn {
                    client.round(None);
                }
                let msgs = (per_turn * conns * depth) as f64;
                rates[i].push(msgs / start.elapsed().as_secs_f64());
            }
        }
        let mut row = format!("{:<28}", format!("{size}B {conns}conn depth{depth}"));
        for rate in rates.iter().skip(1) {
            let mut ratios: Vec<f64> = rate.iter().zip(&rates[0]).map(|(p, r)| p / r).collect();
            ratios.sort_by(f64::total_cmp);
            row.push_str(&format!(
                "{:>26}",
                format!(
                    "{:.2}x [{:.2}-{:.2}]",
                    ratios[ROUNDS / 2],
                    ratios[0],
                    ratios[ROUNDS - 1]
                )
            ));
        }
        let mut reactor = rates[0].clone();
        reactor.sort_by(f64::total_cmp);
        row.push_str(&format!("   (reactor {:.0} msgs/s)", reactor[ROUNDS / 2]));
        eprintln!("{row}");
    }
    eprintln!("\nlatency per message (round trip), 300 rounds after 30 warm-up rounds:");
    eprintln!(
        "config                          model                 p50       p99     p99.9       max"
    );
    for (size, conns, depth) in CONFIGS {
        for (name, (_, addr)) in servers {
            let mut client = Client::new(*addr, conns, size, depth);
            let rounds = if conns >= 1000 { 30 } else { 300 };
            for _ in 0..30 {
                client.round(None);
            }
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .expect("histogram bounds");
            for _ in 0..rounds {
                client.round(Some(&mut h));
            }
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            eprintln!(
                "{:<31} {:<19} {:>7.1}µs {:>7.1}µs {:>7.1}µs {:>7.1}µs",
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

/// Pins the calling thread to `cpu` (best effort: an error leaves it unpinned).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it;
    // sched_setaffinity reads it. pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// 1,000 connections need 2,000+ descriptors (both ends live in this process).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < 8192 {
            lim.rlim_cur = lim.rlim_max.min(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
