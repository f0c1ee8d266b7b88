//! `posa`: the command-line front of the posa runtime.
//!
//! With no subcommand it runs `posa compare` with its defaults: every echo model under the same
//! load, side by side. `posa patterns` prints the pattern catalogue.

mod baselines;
mod compare;
mod load;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use posa::net::Addr;
use posa::server::{ConnConfig, Model, Server, ServerConfig};

/// POSA2 concurrency patterns as a small, measured, loom-verified runtime.
#[derive(Debug, Parser)]
#[command(name = "posa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Which concurrency model for this workload, on this machine? Starts each echo model in
    /// turn, drives it with the same load, prints them side by side (the default command).
    Compare(CompareArgs),
    /// A TCP echo load generator: closed loop, or open loop at a fixed rate (latency from the
    /// intended send time); checks every byte.
    Load(LoadArgs),
    /// List the patterns, where each lives, and whether it is built.
    Patterns {
        /// Show only the patterns that are built.
        #[arg(long)]
        built: bool,
    },
    /// Run the echo server (Ctrl-C or SIGTERM drains it gracefully). Logs follow RUST_LOG.
    EchoServer(EchoArgs),
    /// Watch files and directories: report changes and print what is appended to watched
    /// files, like `tail -F` (follows rotation and truncation). Ctrl-C to stop.
    Watch(WatchArgs),
}

/// The workload, shared by `compare` and `load`.
#[derive(Debug, Clone, clap::Args)]
struct Workload {
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop: offer this many messages a second in all (e.g. `20000`); latency is measured
    /// from each message's intended send time.
    #[arg(long, value_name = "MSGS/S", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Open loop: fixed (evenly spaced sends) or poisson (exponential gaps, same mean).
    #[arg(long, default_value = "fixed")]
    arrivals: load::Arrivals,
    /// A new connection for every message (connect, request, reply, close): measures the
    /// accept and connect path.
    #[arg(long)]
    churn: bool,
    /// Seconds to measure (compare: per model and round; default 5 for load, 2 for compare).
    #[arg(long, allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Send work requests instead of plain echo: each asks the server (run with `--service
    /// work`) for work drawn from this mix before it replies, e.g. `cpu:20us-50us`,
    /// `block:1ms`, `99%cpu:10us,1%block:10ms`. Messages must be at least 16 bytes.
    #[arg(long, value_name = "MIX")]
    work: Option<posa::server::WorkMix>,
}

impl Workload {
    fn config(
        &self,
        addr: std::net::SocketAddr,
        default_secs: f64,
    ) -> Result<load::LoadConfig, String> {
        if self.size == 0 || self.conns == 0 || self.pipeline == 0 {
            return Err("--size, --conns and --pipeline must be at least 1".into());
        }
        if self.conns > 10_000 || self.pipeline > 1024 || self.size > 16 << 20 {
            return Err("at most 10000 connections, 1024 in flight, 16 MiB messages".into());
        }
        if self.work.is_some() && self.size < posa::server::WORK_HEADER {
            return Err(format!(
                "--work needs --size of at least {} (the request header)",
                posa::server::WORK_HEADER
            ));
        }
        Ok(load::LoadConfig {
            addr,
            conns: self.conns,
            size: self.size,
            duration: positive_seconds("duration", self.duration.unwrap_or(default_secs))?,
            pipeline: self.pipeline,
            rate: self.rate,
            arrivals: self.arrivals,
            work: self.work.clone(),
            churn: self.churn,
        })
    }
}

/// `posa compare` flags.
#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// Models to compare, comma-separated (default: all: reactor, reactor-pool,
    /// leader-followers, half-sync, proactor (emulated), proactor-uring, thread-per-conn,
    /// tokio).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// A preset workload: echo (plain echo), cpu (20-50 us of computation per request),
    /// blocking (1 ms blocking wait per request, a database call's stand-in), heavy-tail (99%
    /// 10 us of computation, 1% 10 ms blocking). Every model serves the same work service;
    /// half-sync gets 32 workers for the blocking presets. `--work` sets a mix of your own.
    #[arg(long, default_value = "echo")]
    workload: String,
    #[command(flatten)]
    load: Workload,
    /// Seconds of unmeasured load before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run every preset workload in turn and write one report (report.md with a table and a
    /// chart per workload, suite.json) into --out. Rounds of 1 s unless --duration says.
    #[arg(long)]
    suite: bool,
    /// Sweep the offered load: `rate` measures each model's capacity, then open-loop rates
    /// from 10% to 120% of it, and charts p50 and p99 against the offered load (sweep.svg).
    #[arg(long, value_parser = ["rate"])]
    sweep: Option<String>,
    /// Hold this many idle connections open while measuring (the `idle` preset: 10000).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Offer each model this multiple of its capacity (measured in the warm-up), open loop
    /// (the `overload` preset: 1.5).
    #[arg(long, value_parser = parse_rate)]
    overload: Option<f64>,
    /// Half-sync's workers (default: --threads; the blocking presets use 32).
    #[arg(long, value_parser = at_least_one)]
    sync_workers: Option<usize>,
    /// Measurements per model, interleaved round by round (A B C, A B C, ...); figures are
    /// the median with its min-max, and overlapping ranges are called a tie.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    rounds: usize,
    /// Threads for the multi-threaded models.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    threads: usize,
    /// Where to write results.json and chart.svg.
    #[arg(long, default_value = "target/posa-compare")]
    out: std::path::PathBuf,
    /// Give every connection of the posa models an idle timeout of SECS, re-armed on every
    /// read: measures the cost of a per-operation timeout on each model (0: none).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    idle_timeout: f64,
}

impl CompareArgs {
    /// What `posa` with no subcommand runs.
    fn defaults() -> Self {
        match Cli::try_parse_from(["posa", "compare"]).map(|c| c.command) {
            Ok(Some(Command::Compare(args))) => args,
            _ => unreachable!("`posa compare` parses with its defaults"),
        }
    }
}

/// `posa load` flags.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The echo server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    workload: Workload,
    /// Hold this many idle connections open (sending nothing) while measuring, at most
    /// 100000.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `posa watch` flags.
#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// Files or directories to watch (a file need not exist yet; its directory must).
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    /// Event-loop model: reactor (the handler reads the data) or proactor (file reads complete
    /// with the data). Both print the same.
    #[arg(long, default_value = "reactor")]
    model: posa::watch::Model,
    /// Watch sub-directories too, including ones created while watching.
    #[arg(long)]
    recursive: bool,
    /// Output: text (event lines, appended data verbatim) or json (one object per line).
    #[arg(long, default_value = "text")]
    format: posa::watch::Format,
}

/// `posa echo-server` flags.
#[derive(Debug, clap::Args)]
struct EchoArgs {
    /// Threading model: reactor (one thread), reactor-pool (one reactor per thread),
    /// leader-followers (threads take turns on one shared demultiplexer), half-sync (one
    /// reactor does the I/O, a pool of synchronous workers does the work) or proactor
    /// (initiate an operation, continue on its completion); baselines: thread-per-conn,
    /// tokio.
    #[arg(long, default_value = "reactor")]
    model: String,
    /// Threads for the reactor-pool, leader-followers and proactor models; workers for
    /// half-sync.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    threads: usize,
    /// The proactor's backend: auto (io_uring where the kernel allows it, else emulated),
    /// uring (io_uring or a clear error), emulated (readiness on reactors).
    #[arg(long, default_value = "auto")]
    backend: posa::proactor::Backend,
    /// Where to listen: IP:PORT or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: Addr,
    /// Most connections open at once; more are accepted and closed (after a short lingering
    /// close, so a request already sent does not turn the close into a reset).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    max_conns: usize,
    /// Close a connection idle for this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = non_negative_secs)]
    idle_timeout: f64,
    /// Most bytes buffered per connection for a slow reader.
    #[arg(long, default_value_t = 64 * 1024, value_parser = at_least_one)]
    buffer: usize,
    /// The service: echo (every byte back) or work (request/response: each request says
    /// what work to do before the reply; see `posa load --work`).
    #[arg(long, default_value = "echo", value_parser = ["echo", "work"])]
    service: String,
    /// The work service's file for `file` work (cold reads: each read range is dropped from
    /// the page cache again). At least 64 KiB.
    #[arg(long, value_name = "PATH")]
    work_file: Option<std::path::PathBuf>,
    /// Half-sync: synchronous workers (default: --threads).
    #[arg(long, value_parser = at_least_one)]
    sync_workers: Option<usize>,
    /// On SIGTERM or SIGINT, seconds to let open connections finish (their peers half-close and
    /// get every byte back) before the rest are closed; a second signal closes them at once.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true, value_parser = non_negative_secs)]
    drain_grace: f64,
    /// Every SECS seconds, print per-dispatch-point counts and latencies to stderr (0: never).
    #[arg(long, default_value_t = 0.0, value_name = "SECS", allow_negative_numbers = true, value_parser = non_negative_secs)]
    metrics: f64,
    /// Accept at most N new connections a second (token bucket, bursts of N), e.g. `100/s`.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    rate_limit: Option<f64>,
}

/// A count of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number, got {s:?}: {e}")),
    }
}

/// Seconds: finite and not negative.
fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("expected seconds (0 or more), got {v}")),
        Err(e) => Err(format!("expected seconds, got {s:?}: {e}")),
    }
}

/// `N` or `N/s`, N > 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive rate like 100/s, got {s:?}")),
    }
}

/// A duration that must not be zero.
fn positive_seconds(what: &str, s: f64) -> Result<Duration, String> {
    match seconds(what, s)? {
        d if d.is_zero() => Err(format!("--{what} must be more than 0 seconds")),
        d => Ok(d),
    }
}

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("--{what} {s}: {e}"))
}

fn echo_server(args: EchoArgs) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .try_init();
    let service: Arc<dyn posa::net::Service> = match (args.service.as_str(), &args.work_file) {
        ("echo", None) => Arc::new(posa::server::EchoService),
        ("echo", Some(_)) => return Err("--work-file needs --service work".into()),
        (_, None) => Arc::new(posa::server::WorkService::new()),
        (_, Some(path)) => Arc::new(
            posa::server::WorkService::with_file(path)
                .map_err(|e| format!("--work-file {}: {e}", path.display()))?,
        ),
    };
    if baselines::NAMES.contains(&args.model.as_str()) {
        let addr = args.addr.to_string();
        return baselines::run(
            &args.model,
            &addr,
            args.threads,
            args.max_conns,
            args.buffer,
            service,
        )
        .map_err(|e| format!("{}: {e}", args.model));
    }
    let model: Model = args
        .model
        .parse()
        .map_err(|e| format!("{e}; baselines: {}", baselines::NAMES.join(", ")))?;
    let idle = seconds("idle-timeout", args.idle_timeout)?;
    let grace = seconds("drain-grace", args.drain_grace)?;
    let every = seconds("metrics", args.metrics)?;
    let mut chain = posa::intercept::Chain::new();
    if let Some(rate) = args.rate_limit {
        use posa::intercept::{Point, RateLimit};
        let burst = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        chain = chain.with(RateLimit::global(rate, burst).at(&[Point::Accept]));
    }
    let metrics = (!every.is_zero()).then(|| std::sync::Arc::new(posa::intercept::Metrics::new()));
    if let Some(m) = &metrics {
        chain = chain.with_shared(m.clone());
    }
    let config = ServerConfig {
        addr: args.addr,
        model,
        threads: args.threads,
        sync_workers: args.sync_workers,
        max_conns: args.max_conns,
        conn: ConnConfig {
            buffer: args.buffer,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            ..ConnConfig::default()
        },
        interceptors: chain,
        backend: args.backend,
        ..ServerConfig::default()
    };
    let model = config.model;
    let server = Server::serve(config, service).map_err(|e| format!("cannot start: {e}"))?;
    server
        .shutdown_on_signals(grace)
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    eprintln!(
        "posa echo-server: listening on {} (model {model}, {}, service {}); Ctrl-C to stop",
        server.local_addr(),
        server.describe(),
        args.service
    );
    let (accepts, echo) = (server.accept_stats(), server.conn_stats());
    // The periodic report: a thread that wakes every `every` until the server has stopped.
    let (stop_report, stopped) = std::sync::mpsc::channel::<()>();
    let reporter = metrics.map(|m| {
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                eprint!("posa echo-server: metrics\n{}", m.snapshot());
            }
        })
    });
    let reports = server.join().map_err(|e| format!("reactor failed: {e}"));
    drop(stop_report);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    let reports = reports?;
    let jobs_dropped: usize = reports.iter().map(|r| r.jobs_dropped).sum();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let bytes = echo.bytes.sum();
    eprintln!(
        "posa echo-server: stopped: {} connections accepted, {} refused at --max-conns, {} bytes echoed, \
         {} refused by --rate-limit; at shutdown {} connections finished on their own, {} forced at the deadline \
         ({jobs_dropped} posted jobs dropped)",
        load(&accepts.accepted),
        load(&accepts.rejected_limit),
        bytes,
        load(&accepts.rejected_intercept),
        echo.drained.sum(),
        echo.forced.sum(),
    );
    Ok(())
}

struct Pattern {
    name: &'static str,
    module: &'static str,
    built: bool,
    doc: &'static str,
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "Asynchronous Completion Token",
        module: "posa::act",
        built: true,
        doc: "docs/act.md",
    },
    Pattern {
        name: "Monitor Object (+ bounded queue)",
        module: "posa::monitor",
        built: true,
        doc: "docs/monitor.md",
    },
    Pattern {
        name: "Scoped / Strategized Locking, Thread-Safe Interface, Double-Checked Locking",
        module: "posa::monitor::locks",
        built: true,
        doc: "docs/monitor.md",
    },
    Pattern {
        name: "Re-entrant and reader-writer locks",
        module: "posa::monitor::locks",
        built: true,
        doc: "docs/monitor.md",
    },
    Pattern {
        name: "Thread-Specific Storage",
        module: "posa::tss",
        built: true,
        doc: "docs/tss.md",
    },
    Pattern {
        name: "Logical clocks (Lamport, hybrid) and Clock policy",
        module: "posa::clock",
        built: true,
        doc: "docs/clock.md",
    },
    Pattern {
        name: "Reactor (and reactor-per-thread pool)",
        module: "posa::reactor",
        built: true,
        doc: "docs/reactor.md",
    },
    Pattern {
        name: "Leader/Followers",
        module: "posa::reactor",
        built: true,
        doc: "docs/leader-followers.md",
    },
    Pattern {
        name: "Acceptor-Connector",
        module: "posa::net",
        built: true,
        doc: "docs/net.md",
    },
    Pattern {
        name: "Thread Pool with schedulers (work stealing, FIFO, LIFO, priority, deadline)",
        module: "posa::pool",
        built: true,
        doc: "docs/thread-pool.md",
    },
    Pattern {
        name: "Active Object",
        module: "posa::active",
        built: true,
        doc: "docs/active-object.md",
    },
    Pattern {
        name: "Half-Sync/Half-Async",
        module: "posa::half_sync",
        built: true,
        doc: "docs/half-sync.md",
    },
    Pattern {
        name: "Proactor",
        module: "posa::proactor",
        built: true,
        doc: "docs/proactor.md",
    },
    Pattern {
        name: "Interceptor (tracing, metrics, rate limit, bulkhead, breaker, deadline, HLC)",
        module: "posa::intercept",
        built: true,
        doc: "docs/interceptor.md",
    },
];

fn print_patterns(out: &mut impl Write, only_built: bool) -> io::Result<()> {
    writeln!(
        out,
        "posa {}: POSA2 concurrency patterns\n",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(
        out,
        "{:<8} {:<78} {:<22} doc",
        "status", "pattern", "module"
    )?;
    for p in PATTERNS.iter().filter(|p| p.built || !only_built) {
        let status = if p.built { "built" } else { "planned" };
        writeln!(out, "{status:<8} {:<78} {:<22} {}", p.name, p.module, p.doc)?;
    }
    writeln!(
        out,
        "\nProofs: scripts/test.sh runs the loom models. Benchmarks: cargo bench. \
         Subcommands: posa --help."
    )
}

fn run_compare(args: CompareArgs) -> Result<(), String> {
    let models = if args.models.is_empty() {
        compare::all_models()
    } else {
        let known = compare::all_models();
        for m in &args.models {
            if !known.contains(m) {
                return Err(format!("unknown model {m:?}; known: {}", known.join(", ")));
            }
        }
        args.models.clone()
    };
    let preset = compare::preset(&args.workload)?;
    let load = args.load.config(
        ([127, 0, 0, 1], 0).into(),
        if args.suite { 1.0 } else { 2.0 },
    )?;
    let custom = load.work.is_some() || args.idle > 0 || args.overload.is_some() || load.churn;
    if custom && args.workload != "echo" {
        return Err(
            "give either --workload or the knobs (--work, --idle, --overload, --churn), not both"
                .into(),
        );
    }
    if args.suite && custom {
        return Err(
            "--suite runs every preset; it takes no --work, --idle, --overload or --churn".into(),
        );
    }
    if args.overload.is_some() && load.rate.is_some() {
        return Err("--overload sets each model's rate; give it or --rate, not both".into());
    }
    let base = compare::Plan {
        models,
        load,
        workload: "custom".to_owned(),
        workload_what: "a workload of your own".to_owned(),
        warmup: seconds("warmup", args.warmup)?,
        rounds: args.rounds,
        threads: args.threads,
        sync_workers: args.sync_workers,
        idle: args.idle,
        overload: args.overload,
        work_file: None,
        out: args.out.clone(),
        idle_timeout: Some(seconds("idle-timeout", args.idle_timeout)?).filter(|d| !d.is_zero()),
    };
    // Ctrl-C: stop the current measurement and print what was measured so far.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    if args.suite {
        if args.sweep.is_some() {
            return Err("give --suite or --sweep, not both".into());
        }
        return run_suite(&base, &stop);
    }
    let plan = if custom {
        base
    } else {
        compare::Plan::for_preset(&base, preset)?
    };
    if args.sweep.is_some() {
        if plan.load.rate.is_some() || plan.overload.is_some() {
            return Err("--sweep rate sets the rates; it takes no --rate or --overload".into());
        }
        eprintln!(
            "posa compare --sweep rate: workload {}, {} models x {} steps, about {:.0} s",
            plan.workload,
            plan.models.len(),
            compare::SWEEP.len(),
            plan.models.len() as f64
                * (plan.load.duration.as_secs_f64() * compare::SWEEP.len() as f64 + 0.5)
                * 1.05
        );
        let (rows, setup) = compare::sweep(&plan, &stop).map_err(|e| e.to_string())?;
        print!("{}", compare::sweep_table(&rows, &plan, &setup));
        let (json, chart) =
            compare::write_sweep(&plan.out, &rows, &plan, &setup).map_err(|e| e.to_string())?;
        println!("results: {}  chart: {}", json.display(), chart.display());
        return Ok(());
    }
    let estimate = |p: &compare::Plan| {
        p.models.len() as f64
            * (p.load.duration.as_secs_f64() * p.rounds as f64 + p.warmup.as_secs_f64())
            * 1.05
    };
    eprintln!(
        "posa compare: workload {}, {} models x {} rounds, about {:.0} s (posa compare --help for the knobs)",
        plan.workload,
        plan.models.len(),
        plan.rounds,
        estimate(&plan)
    );
    let (rows, setup) = compare::run(&plan, &stop).map_err(|e| e.to_string())?;
    print!("{}", compare::table(&rows, &plan, &setup));
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        println!("(stopped early: the rows above are what was measured)");
    }
    let (json, chart) =
        compare::write_out(&plan.out, &rows, &plan, &setup).map_err(|e| e.to_string())?;
    println!("results: {}  chart: {}", json.display(), chart.display());
    Ok(())
}

/// `posa compare --suite`: every preset in turn, one report.
fn run_suite(base: &compare::Plan, stop: &Arc<AtomicBool>) -> Result<(), String> {
    let plans = compare::PRESETS
        .iter()
        .map(|p| {
            let mut plan = compare::Plan::for_preset(base, p)?;
            plan.out = base.out.join(p.name);
            Ok(plan)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let seconds: f64 = plans
        .iter()
        .map(|p| {
            p.models.len() as f64
                * (p.load.duration.as_secs_f64() * p.rounds as f64 + p.warmup.as_secs_f64())
        })
        .sum();
    eprintln!(
        "posa compare --suite: {} workloads x {} models x {} rounds, about {:.0} s",
        plans.len(),
        base.models.len(),
        base.rounds,
        seconds * 1.15
    );
    let mut done = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        eprintln!(
            "[{}/{}] {}: {}",
            i + 1,
            plans.len(),
            plan.workload,
            plan.workload_what
        );
        let (rows, setup) =
            compare::run(plan, stop).map_err(|e| format!("{}: {e}", plan.workload))?;
        println!("{}", compare::table(&rows, plan, &setup));
        compare::write_out(&plan.out, &rows, plan, &setup).map_err(|e| e.to_string())?;
        done.push((plan.clone(), rows, setup));
    }
    let (md, json) = compare::write_suite(&base.out, &done).map_err(|e| e.to_string())?;
    println!("report: {}  results: {}", md.display(), json.display());
    Ok(())
}

fn run_load(args: LoadArgs) -> Result<(), String> {
    let config = args.workload.config(args.addr, 5.0)?;
    if args.idle > 100_000 {
        return Err("--idle: at most 100000 connections".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
    let (idle, failed) = load::open_idle(args.addr, args.idle);
    if failed > 0 {
        eprintln!(
            "posa load: {failed} of {} idle connections could not be opened",
            args.idle
        );
    }
    let report =
        load::run(&config, &stop, |_| {}).map_err(|e| format!("cannot load {}: {e}", args.addr))?;
    drop(idle);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fail = |what: &str, e: String| {
        eprintln!("posa {what}: {e}");
        ExitCode::FAILURE
    };
    let only_built = match cli.command {
        None => {
            return match run_compare(CompareArgs::defaults()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("compare", e),
            };
        }
        Some(Command::Compare(args)) => {
            return run_compare(args).map_or_else(|e| fail("compare", e), |()| ExitCode::SUCCESS);
        }
        Some(Command::Load(args)) => {
            return run_load(args).map_or_else(|e| fail("load", e), |()| ExitCode::SUCCESS);
        }
        Some(Command::Patterns { built }) => built,
        Some(Command::Watch(args)) => {
            // As `tail -F` does: say which paths are not there yet (their directory must be;
            // the watcher refuses a path whose directory is missing, with the reason).
            for path in args.paths.iter().filter(|p| !p.exists()) {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => std::path::Path::new("."),
                };
                if dir.is_dir() {
                    eprintln!(
                        "posa watch: {} does not exist yet; it will be followed once it appears",
                        path.display()
                    );
                }
            }
            let result = posa::watch::run_until_signal(
                &args.paths,
                args.recursive,
                args.model,
                args.format,
                io::stdout(),
            );
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("posa watch: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::EchoServer(args)) => {
            return match echo_server(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("posa echo-server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let stdout = io::stdout();
    match print_patterns(&mut stdout.lock(), only_built) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`posa | head`) is not an error worth a panic.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posa: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_lists_built_patterns_with_existing_doc_pages() {
        let mut out = Vec::new();
        print_patterns(&mut out, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Asynchronous Completion Token"));
        assert!(!text.contains("planned"));
        for p in PATTERNS.iter().filter(|p| p.built) {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p.doc);
            assert!(path.exists(), "{} names a missing page {}", p.name, p.doc);
        }
    }

    #[test]
    fn cli_parses_default_and_subcommand() {
        assert!(Cli::try_parse_from(["posa"]).unwrap().command.is_none());
        let cli = Cli::try_parse_from(["posa", "patterns", "--built"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Patterns { built: true })
        ));
        assert!(Cli::try_parse_from(["posa", "no-such-command"]).is_err());
    }
}
