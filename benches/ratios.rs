//! Question: what does one operation of posa's building blocks cost against what a user would
//! pick instead, measured so that a noisy, shared machine cannot decide the answer?
//!
//! Absolute times on a 2-core shared VM drift by 2x and more between runs (criterion's
//! numbers for the same code do). So the contenders of a group run interleaved: every round
//! runs each of them once, in an order rotated from round to round (A B C, B C A, C A B, ...),
//! and each comparison is the ratio of two contenders' times *in the same round*, reported as
//! the median over the rounds with its range (min-max) and interquartile range. Drift that
//! slows a whole round cancels out of its ratios.
//!
//! Groups (`--group`, default all):
//! - `pool`: 100,000 tiny jobs (each adds to a counter) through 2 workers: posa's default
//!   pool with `execute` (fire and forget) and with `submit` + waiting on every token, the
//!   ordered FIFO and priority pools, `rayon::spawn`, a bare crossbeam-channel pool; every
//!   fire-and-forget contender counts down a latch, which the round waits on.
//! - `pool-shapes`: where work stealing could earn its place: nested submissions (each of
//!   1,000 outer jobs submits 100 inner ones from its worker) and uneven jobs (one job in 64
//!   spins 20 us), default pool against the ordered FIFO pool and rayon.
//! - `act`: a request served on another thread, answered through posa's completion token
//!   against a crossbeam `bounded(1)` reply channel and a std `mpsc` one.
//! - `queue`: 20,000 messages through a capacity-64 queue, one producer and one consumer:
//!   posa's `BoundedQueue` against crossbeam `bounded` and std `sync_channel`.
//! - `tss`: 2 threads adding 200,000 times each: posa's per-thread `tss::Counter` against
//!   one shared `AtomicU64`.
//!
//! Usage: `cargo bench --bench ratios -- [--group G] [--rounds N] [--only NAME] [--json FILE]`.
//! `--only NAME` runs one contender in a loop (for `perf record` or `valgrind --tool=callgrind`).
//! `--test` (the test command's smoke run): two rounds at a tenth of the sizes, every
//! contender's result checked.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posa::pool::{Fifo, JobOptions, Priority, ThreadPool};

/// One contender: runs `n` operations and returns the time they took (set-up excluded).
type Run = Box<dyn FnMut(usize) -> Duration>;

struct Contender {
    name: &'static str,
    run: Run,
}

/// A group: its contenders, the operations per round, and the comparisons to report as
/// `(a, b)`: how many times b's time a's is, i.e. a's throughput over b's.
struct Group {
    name: &'static str,
    unit: &'static str,
    ops: usize,
    contenders: Vec<Contender>,
    compare: Vec<(&'static str, &'static str)>,
}

#[path = "common/channel_pool.rs"]
mod channel_pool;
#[path = "common/latch.rs"]
mod latch;
use channel_pool::ChannelPool;
use latch::Latch;

fn check(name: &str, got: u64, want: u64) {
    assert_eq!(
        got, want,
        "{name}: wrong result (the contender lost or repeated work)"
    );
}

/// The sum every tiny-job contender must reach for `n` jobs adding `i`.
fn triangle(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

/// One tiny job: adds its index to a sum and counts down the round's latch; one in
/// `spin_every` first spins 20 us (uneven jobs). A concrete type, so every contender moves the
/// same closure into its pool (no extra box for some and not others).
struct TinyJob {
    i: usize,
    sum: Arc<AtomicU64>,
    latch: Arc<Latch>,
    spin_every: usize,
}

impl TinyJob {
    fn run(self) {
        if self.spin_every != EVEN && self.i.is_multiple_of(self.spin_every) {
            spin(Duration::from_micros(20));
        }
        self.sum.fetch_add(self.i as u64, Ordering::Relaxed);
        self.latch.count_down();
    }
}

/// A fire-and-forget contender: `spawn` hands each of a round's `n` jobs to the pool under
/// test; the round ends when the latch reaches zero, and the sum is checked.
fn fire_and_forget(
    name: &'static str,
    spin_every: usize,
    mut spawn: impl FnMut(TinyJob) + 'static,
) -> Contender {
    Contender {
        name,
        run: Box::new(move |n| {
            let sum = Arc::new(AtomicU64::new(0));
            let latch = Latch::new(n);
            let start = Instant::now();
            for i in 0..n {
                spawn(TinyJob {
                    i,
                    sum: Arc::clone(&sum),
                    latch: Arc::clone(&latch),
                    spin_every,
                });
            }
            latch.wait();
            let took = start.elapsed();
            check(name, sum.load(Ordering::Relaxed), triangle(n));
            took
        }),
    }
}

/// Jobs never spin.
const EVEN: usize = 0;
/// One job in this many spins 20 us (78 ns a job on average).
const UNEVEN: usize = 256;

fn pool_posa_execute(name: &'static str, pool: ThreadPool, priorities: u8) -> Contender {
    fire_and_forget(name, EVEN, move |job| {
        let options = JobOptions::priority((job.i % priorities as usize) as u8);
        pool.execute_with(options, move || job.run()).expect("open");
    })
}

fn pool_posa_submit(name: &'static str, pool: ThreadPool, priorities: u8) -> Contender {
    Contender {
        name,
        run: Box::new(move |n| {
            let sum = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let tokens: Vec<_> = (0..n)
                .map(|i| {
                    let sum = Arc::clone(&sum);
                    let options = JobOptions::priority((i % priorities as usize) as u8);
                    pool.submit_with(options, move || sum.fetch_add(i as u64, Ordering::Relaxed))
                        .expect("open")
                })
                .collect();
            for t in tokens {
                black_box(t.wait().into_result().expect("ran"));
            }
            let took = start.elapsed();
            check(name, sum.load(Ordering::Relaxed), triangle(n));
            took
        }),
    }
}

fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon")
}

fn rayon_spawn(name: &'static str, spin_every: usize) -> Contender {
    let pool = rayon_pool();
    fire_and_forget(name, spin_every, move |job| pool.spawn(move || job.run()))
}

fn channel_pool(name: &'static str) -> Contender {
    let pool = ChannelPool::new(2);
    fire_and_forget(name, EVEN, move |job| {
        pool.send(Box::new(move || job.run()))
    })
}

fn posa_pool(ordered: Option<&str>, capacity: usize) -> ThreadPool {
    let b = ThreadPool::builder().threads(2).capacity(capacity);
    match ordered {
        None => b.build(),
        Some("fifo") => b.scheduler(Fifo::default()).build(),
        Some(_) => b.scheduler(Priority::new(4, None)).build(),
    }
    .expect("pool")
}

fn pool_group(scale: usize) -> Group {
    let ops = 100_000 / scale;
    Group {
        name: "pool",
        unit: "job",
        ops,
        contenders: vec![
            pool_posa_execute("posa_execute", posa_pool(None, ops), 1),
            pool_posa_submit("posa_submit_wait", posa_pool(None, ops), 1),
            pool_posa_execute("posa_fifo_execute", posa_pool(Some("fifo"), ops), 1),
            pool_posa_submit("posa_fifo_submit_wait", posa_pool(Some("fifo"), ops), 1),
            pool_posa_execute("posa_priority_execute", posa_pool(Some("prio"), ops), 4),
            pool_posa_submit("posa_priority_submit_wait", posa_pool(Some("prio"), ops), 4),
            rayon_spawn("rayon_spawn", EVEN),
            channel_pool("crossbeam_channel_pool"),
        ],
        compare: vec![
            ("posa_execute", "rayon_spawn"),
            ("posa_execute", "crossbeam_channel_pool"),
            ("posa_submit_wait", "crossbeam_channel_pool"),
            ("posa_execute", "posa_fifo_execute"),
            ("posa_priority_execute", "posa_fifo_execute"),
            ("posa_priority_submit_wait", "posa_fifo_submit_wait"),
            ("posa_submit_wait", "posa_execute"),
        ],
    }
}

/// Nested: `n / 100` outer jobs each submit 100 tiny jobs from the worker that runs them.
/// `outer` queues an outer job from the benchmark's thread, `inner` a tiny job from a worker
/// (both contenders pay the same dynamic call for it).
fn nested(
    name: &'static str,
    mut outer: impl FnMut(Box<dyn FnOnce() + Send>) + 'static,
    inner: Arc<dyn Fn(TinyJob) + Send + Sync>,
) -> Contender {
    Contender {
        name,
        run: Box::new(move |n| {
            let outers = n / 100;
            let sum = Arc::new(AtomicU64::new(0));
            let latch = Latch::new(outers * 100);
            let start = Instant::now();
            for o in 0..outers {
                let (sum, latch, inner) =
                    (Arc::clone(&sum), Arc::clone(&latch), Arc::clone(&inner));
                outer(Box::new(move || {
                    for k in 0..100 {
                        inner(TinyJob {
                            i: o * 100 + k,
                            sum: Arc::clone(&sum),
                            latch: Arc::clone(&latch),
                            spin_every: EVEN,
                        });
                    }
                }));
            }
            latch.wait();
            let took = start.elapsed();
            check(name, sum.load(Ordering::Relaxed), triangle(outers * 100));
            took
        }),
    }
}

fn nested_posa(name: &'static str, pool: ThreadPool) -> Contender {
    let pool = Arc::new(pool);
    let p = Arc::clone(&pool);
    nested(
        name,
        move |job| pool.execute(job).expect("open"),
        Arc::new(move |job: TinyJob| p.execute(move || job.run()).expect("open")),
    )
}

fn nested_rayon(name: &'static str) -> Contender {
    let pool = rayon_pool();
    nested(
        name,
        move |job| pool.spawn(job),
        // From inside the pool's worker, rayon::spawn queues on that pool.
        Arc::new(|job: TinyJob| rayon::spawn(move || job.run())),
    )
}

/// Spins for `d` (a job that computes, not one that sleeps).
fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Uneven jobs on posa's default pool (or any pool `execute` takes).
fn uneven_posa(name: &'static str, pool: ThreadPool) -> Contender {
    fire_and_forget(name, UNEVEN, move |job| {
        pool.execute(move || job.run()).expect("open")
    })
}

fn shapes_group(scale: usize) -> Group {
    let ops = 100_000 / scale;
    Group {
        name: "pool-shapes",
        unit: "job",
        ops,
        contenders: vec![
            nested_posa("nested_posa_stealing", posa_pool(None, ops)),
            nested_posa("nested_posa_fifo", posa_pool(Some("fifo"), ops)),
            nested_rayon("nested_rayon"),
            uneven_posa("uneven_posa_stealing", posa_pool(None, ops)),
            uneven_posa("uneven_posa_fifo", posa_pool(Some("fifo"), ops)),
            rayon_spawn("uneven_rayon", UNEVEN),
        ],
        compare: vec![
            ("nested_posa_stealing", "nested_posa_fifo"),
            ("nested_posa_stealing", "nested_rayon"),
            ("uneven_posa_stealing", "uneven_posa_fifo"),
            ("uneven_posa_stealing", "uneven_rayon"),
        ],
    }
}

/// A server thread answering requests; the reply path is what differs.
fn act_group(scale: usize) -> Group {
    use posa::act::{self, Completer};
    let ops = 20_000 / scale;

    fn served<R: Send + 'static>(
        name: &'static str,
        reply: fn(R, u64),
        ask: fn(&crossbeam_channel::Sender<(u64, R)>, u64) -> u64,
    ) -> Contender {
        let (tx, rx) = crossbeam_channel::bounded::<(u64, R)>(64);
        std::thread::spawn(move || {
            for (x, r) in rx {
                reply(r, x + 1);
            }
        });
        Contender {
            name,
            run: Box::new(move |n| {
                let mut sum = 0u64;
                let start = Instant::now();
                for i in 0..n {
                    sum += ask(&tx, i as u64);
                }
                let took = start.elapsed();
                check(name, sum, triangle(n) + n as u64);
                took
            }),
        }
    }
    Group {
        name: "act",
        unit: "request",
        ops,
        contenders: vec![
            served::<Completer<u64, ()>>(
                "posa_token",
                |c, v| c.complete(Ok(v)),
                |tx, x| {
                    let (c, t) = act::pair::<u64, ()>();
                    tx.send((x, c)).expect("server up");
                    t.wait().into_result().expect("answered")
                },
            ),
            served::<crossbeam_channel::Sender<u64>>(
                "crossbeam_bounded1",
                |c, v| c.send(v).expect("asker waits"),
                |tx, x| {
                    let (c, r) = crossbeam_channel::bounded(1);
                    tx.send((x, c)).expect("server up");
                    r.recv().expect("answered")
                },
            ),
            served::<std::sync::mpsc::SyncSender<u64>>(
                "std_sync_channel1",
                |c, v| c.send(v).expect("asker waits"),
                |tx, x| {
                    let (c, r) = std::sync::mpsc::sync_channel(1);
                    tx.send((x, c)).expect("server up");
                    r.recv().expect("answered")
                },
            ),
        ],
        compare: vec![
            ("posa_token", "crossbeam_bounded1"),
            ("posa_token", "std_sync_channel1"),
        ],
    }
}

/// One producer, one consumer, through a queue of 64.
fn queue_group(scale: usize) -> Group {
    use posa::monitor::BoundedQueue;
    let ops = 20_000 / scale;

    fn one_to_one<Q: Send + Sync + 'static>(
        name: &'static str,
        make: fn() -> Q,
        put: fn(&Q, u64),
        take: fn(&Q) -> u64,
    ) -> Contender {
        Contender {
            name,
            run: Box::new(move |n| {
                let q = Arc::new(make());
                let consumer = {
                    let q = Arc::clone(&q);
                    std::thread::spawn(move || (0..n).map(|_| take(&q)).sum::<u64>())
                };
                let start = Instant::now();
                for i in 0..n {
                    put(&q, i as u64);
                }
                let sum = consumer.join().expect("consumer");
                let took = start.elapsed();
                check(name, sum, triangle(n));
                took
            }),
        }
    }
    type Chan<T> = (crossbeam_channel::Sender<T>, crossbeam_channel::Receiver<T>);
    type StdChan<T> = (
        std::sync::mpsc::SyncSender<T>,
        Mutex<std::sync::mpsc::Receiver<T>>,
    );
    Group {
        name: "queue",
        unit: "message",
        ops,
        contenders: vec![
            one_to_one::<BoundedQueue<u64>>(
                "posa_bounded_queue",
                || BoundedQueue::new(64),
                |q, v| q.put(v).expect("open"),
                |q| q.take().expect("open"),
            ),
            one_to_one::<Chan<u64>>(
                "crossbeam_bounded",
                || crossbeam_channel::bounded(64),
                |q, v| q.0.send(v).expect("open"),
                |q| q.1.recv().expect("open"),
            ),
            one_to_one::<StdChan<u64>>(
                "std_sync_channel",
                || {
                    let (tx, rx) = std::sync::mpsc::sync_channel(64);
                    (tx, Mutex::new(rx))
                },
                |q, v| q.0.send(v).expect("open"),
                |q| q.1.lock().expect("rx").recv().expect("open"),
            ),
        ],
        compare: vec![
            ("posa_bounded_queue", "crossbeam_bounded"),
            ("posa_bounded_queue", "std_sync_channel"),
        ],
    }
}

/// Two threads adding to one count.
fn tss_group(scale: usize) -> Group {
    let ops = 400_000 / scale;

    fn two_threads<C: Send + Sync + 'static>(
        name: &'static str,
        make: fn() -> C,
        add: fn(&C),
        read: fn(&C) -> u64,
    ) -> Contender {
        Contender {
            name,
            run: Box::new(move |n| {
                let c = Arc::new(make());
                let start = Instant::now();
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        let c = Arc::clone(&c);
                        std::thread::spawn(move || {
                            for _ in 0..n / 2 {
                                add(&c);
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().expect("adder");
                }
                let total = read(&c);
                let took = start.elapsed();
                check(name, total, (n / 2 * 2) as u64);
                took
            }),
        }
    }
    Group {
        name: "tss",
        unit: "add",
        ops,
        contenders: vec![
            two_threads::<posa::tss::Counter>(
                "posa_tss_counter",
                posa::tss::Counter::new,
                |c| c.incr(),
                |c| c.sum(),
            ),
            two_threads::<AtomicU64>(
                "shared_atomic",
                || AtomicU64::new(0),
                |c| {
                    c.fetch_add(1, Ordering::Relaxed);
                },
                |c| c.load(Ordering::Relaxed),
            ),
        ],
        compare: vec![("posa_tss_counter", "shared_atomic")],
    }
}

/// Builds a group at a size divided by the scale.
type MakeGroup = fn(usize) -> Group;

/// Median, min, max, and the interquartile range of `xs`.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    q1: f64,
    q3: f64,
}

fn spread(xs: &[f64]) -> Spread {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Spread {
        median: at(0.5),
        min: v[0],
        max: v[v.len() - 1],
        q1: at(0.25),
        q3: at(0.75),
    }
}

struct Args {
    groups: Vec<String>,
    rounds: usize,
    only: Option<String>,
    json: Option<String>,
    smoke: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        groups: Vec::new(),
        rounds: 30,
        only: None,
        json: None,
        smoke: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--test" => args.smoke = true,
            "--bench" => {} // cargo bench passes it
            "--group" => args.groups.push(value("--group")?),
            "--rounds" => {
                let v = value("--rounds")?;
                args.rounds = match v.parse() {
                    Ok(n) if n >= 3 => n,
                    _ => return Err(format!("--rounds {v}: a whole number, at least 3")),
                };
            }
            "--only" => args.only = Some(value("--only")?),
            "--json" => args.json = Some(value("--json")?),
            other if other.starts_with('-') => return Err(format!("unknown flag {other}")),
            _ => {} // a criterion-style filter: ignored, groups are chosen with --group
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ratios: {e}");
            std::process::exit(2);
        }
    };
    let scale = if args.smoke { 10 } else { 1 };
    let rounds = if args.smoke { 2 } else { args.rounds };
    let makers: [(&str, MakeGroup); 5] = [
        ("pool", pool_group),
        ("pool-shapes", shapes_group),
        ("act", act_group),
        ("queue", queue_group),
        ("tss", tss_group),
    ];
    for g in &args.groups {
        if !makers.iter().any(|(name, _)| name == g) {
            eprintln!("ratios: unknown group {g} (pool, pool-shapes, act, queue, tss)");
            std::process::exit(2);
        }
    }
    let mut report = BTreeMap::new();
    for (name, make) in makers {
        if !args.groups.is_empty() && !args.groups.iter().any(|g| g == name) {
            continue;
        }
        let mut group = make(scale);
        if let Some(only) = &args.only {
            let Some(c) = group.contenders.iter_mut().find(|c| c.name == only) else {
                continue;
            };
            let started = Instant::now();
            let mut runs = 0u32;
            while runs < 3 || started.elapsed() < Duration::from_secs(2) {
                (c.run)(group.ops);
                runs += 1;
            }
            println!("{only}: {runs} runs of {} {}s", group.ops, group.unit);
            continue;
        }
        report.insert(name, run_group(&mut group, rounds, args.smoke));
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("serializable");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("ratios: cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

fn run_group(group: &mut Group, rounds: usize, smoke: bool) -> serde_json::Value {
    let k = group.contenders.len();
    // One warm-up round (thread start-up, page faults, lazy statics), not recorded.
    for c in &mut group.contenders {
        (c.run)(group.ops);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (r + j) % k;
            let took = (group.contenders[i].run)(group.ops);
            times[i].push(took.as_secs_f64() * 1e9 / group.ops as f64);
        }
    }
    let index = |name: &str| {
        group
            .contenders
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("comparison names unknown contender {name}"))
    };
    println!(
        "\n{} ({} {}s a round, {rounds} rounds interleaved, rotated order)",
        group.name, group.ops, group.unit
    );
    println!(
        "  {:<28} {:>12} {:>22}",
        "contender",
        format!("ns/{}", group.unit),
        "[min-max]"
    );
    let mut contenders = serde_json::Map::new();
    for (c, t) in group.contenders.iter().zip(&times) {
        let s = spread(t);
        println!(
            "  {:<28} {:>12.1} {:>22}",
            c.name,
            s.median,
            format!("[{:.1}-{:.1}]", s.min, s.max)
        );
        contenders.insert(
            c.name.to_owned(),
            serde_json::json!({"ns_per_op": {"median": s.median, "min": s.min, "max": s.max}}),
        );
        if smoke {
            println!("Testing ratios/{}/{}\nSuccess", group.name, c.name);
        }
    }
    println!(
        "  throughput ratio (a over b, per round)             median   [IQR]          [min-max]"
    );
    let mut comparisons = Vec::new();
    for (a, b) in &group.compare {
        let (ia, ib) = (index(a), index(b));
        let ratios: Vec<f64> = times[ib]
            .iter()
            .zip(&times[ia])
            .map(|(tb, ta)| tb / ta)
            .collect();
        let s = spread(&ratios);
        println!(
            "  {:<50} {:>6.2}x  [{:.2}-{:.2}]  [{:.2}-{:.2}]",
            format!("{a} / {b}"),
            s.median,
            s.q1,
            s.q3,
            s.min,
            s.max
        );
        comparisons.push(serde_json::json!({
            "a": a, "b": b, "median": s.median, "q1": s.q1, "q3": s.q3, "min": s.min, "max": s.max,
        }));
    }
    serde_json::json!({"unit": group.unit, "ops": group.ops, "rounds": rounds,
        "contenders": contenders, "comparisons": comparisons})
}
