//! `posa compare`: every model as a child process pinned away from the load generator, the
//! same service and load on each, measured round by round (A B C, A B C, ...); a side-by-side
//! table of medians with their min-max, a verdict that calls overlapping ranges a tie, the
//! results JSON (serde) and an SVG chart.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::load::{self, LoadConfig};

/// Every model `posa compare` knows, in its default order.
pub fn all_models() -> Vec<String> {
    let mut m: Vec<String> = [
        "reactor",
        "reactor-pool",
        "leader-followers",
        "half-sync",
        "proactor",
        "proactor-uring",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    m.extend(super::baselines::NAMES.iter().map(|s| s.to_string()));
    m
}

/// A preset workload: the service the servers run and the work each request asks for.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    /// The work mix (`None`: plain echo).
    pub work: Option<&'static str>,
    /// Half-sync's workers, when the work blocks (Little's law: 50 connections x 1 ms).
    pub sync_workers: Option<usize>,
    pub what: &'static str,
}

/// The presets `posa compare --workload` knows.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "echo",
        work: None,
        sync_workers: None,
        what: "plain echo: no work, no framing",
    },
    Preset {
        name: "cpu",
        work: Some("cpu:20us-50us"),
        sync_workers: None,
        what: "20-50 us of computation per request",
    },
    Preset {
        name: "blocking",
        work: Some("block:1ms"),
        sync_workers: Some(32),
        what: "1 ms blocking wait per request (a database call's stand-in)",
    },
    Preset {
        name: "heavy-tail",
        work: Some("99%cpu:10us,1%block:10ms"),
        sync_workers: Some(32),
        what: "99% 10 us of computation, 1% 10 ms blocking",
    },
];

/// The preset called `name`, or an error naming the known ones.
pub fn preset(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown workload {name:?}; known: {}", known.join(", "))
    })
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub models: Vec<String>,
    pub load: LoadConfig,
    /// The workload's name (a preset, or `custom` for `--work`), and what it is.
    pub workload: String,
    pub workload_what: String,
    pub warmup: Duration,
    /// Measurements per model, interleaved round by round (A B C, A B C, ...).
    pub rounds: usize,
    pub threads: usize,
    /// Half-sync's workers (default: `threads`).
    pub sync_workers: Option<usize>,
    pub out: PathBuf,
    /// Passed to each posa model's server (`--idle-timeout`): the cost of a per-connection
    /// timer re-armed on every read. The baselines have none.
    pub idle_timeout: Option<Duration>,
}

/// One measurement of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub msgs_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// The server's CPU time (user + system) over the measurement, per million messages.
    pub cpu_s_per_million: f64,
}

/// A figure over the rounds: median, min and max.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// Whether the two ranges overlap: a tie within the noise of these runs.
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

/// One model's figures over every round.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub samples: Vec<Sample>,
    pub msgs_per_sec: Spread,
    pub p50_us: Spread,
    pub p99_us: Spread,
    pub cpu_s_per_million: Spread,
    pub errors: u64,
    /// The server's peak resident memory over the whole run.
    pub peak_rss_kib: u64,
}

impl Row {
    fn new(model: String, samples: Vec<Sample>, peak_rss_kib: u64) -> Row {
        Row {
            msgs_per_sec: Spread::of(samples.iter().map(|s| s.msgs_per_sec)),
            p50_us: Spread::of(samples.iter().map(|s| s.p50_us)),
            p99_us: Spread::of(samples.iter().map(|s| s.p99_us)),
            cpu_s_per_million: Spread::of(samples.iter().map(|s| s.cpu_s_per_million)),
            errors: samples.iter().map(|s| s.errors).sum(),
            model,
            samples,
            peak_rss_kib,
        }
    }
}

/// Where the client and the servers run, and on what.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub cpus: usize,
    pub pinned: bool,
    pub kernel: String,
    pub cpu_model: String,
    /// `available`, or why not.
    pub io_uring: String,
    /// RLIMIT_MEMLOCK (soft), bytes; `None`: unlimited.
    pub memlock_bytes: Option<u64>,
}

impl Setup {
    fn probe(cpus: usize, pinned: bool) -> Setup {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let io_uring = match posa::proactor::io_uring_status() {
            Ok(()) => "available".to_owned(),
            Err(why) => why,
        };
        // SAFETY: an all-zero rlimit is a valid value of this plain C struct.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `lim` is valid for writes.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
        let memlock_bytes = (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur);
        Setup {
            cpus,
            pinned,
            kernel,
            cpu_model,
            io_uring,
            memlock_bytes,
        }
    }
}

/// The one-line verdict: a winner whose range clears every other model's, or the tie.
pub fn verdict(rows: &[Row]) -> String {
    let Some(best) = rows
        .iter()
        .max_by(|a, b| a.msgs_per_sec.median.total_cmp(&b.msgs_per_sec.median))
    else {
        return "no models measured".into();
    };
    let tied: Vec<&str> = rows
        .iter()
        .filter(|r| r.msgs_per_sec.overlaps(&best.msgs_per_sec))
        .map(|r| r.model.as_str())
        .collect();
    if tied.len() > 1 {
        return format!("tie within noise: {}", tied.join(", "));
    }
    let against = rows
        .iter()
        .find(|r| r.model == "reactor" && r.model != best.model)
        .or_else(|| {
            rows.iter()
                .filter(|r| r.model != best.model)
                .max_by(|a, b| a.msgs_per_sec.median.total_cmp(&b.msgs_per_sec.median))
        });
    match against {
        Some(r) if r.msgs_per_sec.median > 0.0 => format!(
            "winner: {}, {:.1}x the {}",
            best.model,
            best.msgs_per_sec.median / r.msgs_per_sec.median,
            r.model
        ),
        _ => format!("winner: {}", best.model),
    }
}

/// Runs the plan; stops early (returning what was measured) when `stop` is set. Every
/// model's server runs for the whole plan (pinned away from the client); each round measures
/// every model once, in order, so drift on a shared machine hits every model alike.
pub fn run(plan: &Plan, stop: &Arc<AtomicBool>) -> io::Result<(Vec<Row>, Setup)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2 && pin(0, 0).is_ok(); // the client on CPU 0
    let setup = Setup::probe(cpus, pinned);
    let exe = std::env::current_exe()?;
    let service = if plan.load.work.is_some() {
        "work"
    } else {
        "echo"
    };
    let mut servers = Vec::new();
    for model in &plan.models {
        let server = Server::start(&exe, model, plan, service)?;
        if pinned {
            // Servers on the other CPUs: client and server do not fight for one core.
            let _ = pin_range(server.child.id() as i32, 1, cpus);
        }
        servers.push(server);
    }
    let bar = indicatif::ProgressBar::new((plan.models.len() * (plan.rounds + 1)) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    let mut failed = None;
    'rounds: for round in 0..=plan.rounds {
        for (i, server) in servers.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let model = &plan.models[i];
            let mut cfg = plan.load.clone();
            cfg.addr = server.addr;
            // Round 0 warms every model up (connections, caches, the pool's threads).
            if round == 0 {
                bar.set_prefix(format!("{model} warm-up"));
                if !plan.warmup.is_zero() {
                    cfg.duration = plan.warmup;
                    if let Err(e) = load::run(&cfg, stop, |_| {}) {
                        failed = Some(io::Error::new(e.kind(), format!("{model}: {e}")));
                        break 'rounds;
                    }
                }
                bar.inc(1);
                continue;
            }
            bar.set_prefix(format!("{model} round {round}"));
            let cpu_before = cpu_time(server.child.id());
            let report = match load::run(&cfg, stop, |_| {}) {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(io::Error::new(e.kind(), format!("{model}: {e}")));
                    break 'rounds;
                }
            };
            let cpu = cpu_time(server.child.id()).saturating_sub(cpu_before);
            bar.inc(1);
            let millions = report.messages as f64 / 1e6;
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            samples[i].push(Sample {
                msgs_per_sec: report.msgs_per_sec(),
                p50_us: us(report.percentile(0.5)),
                p99_us: us(report.percentile(0.99)),
                p999_us: us(report.percentile(0.999)),
                max_us: us(report.max()),
                errors: report.errors,
                cpu_s_per_million: if millions > 0.0 {
                    cpu.as_secs_f64() / millions
                } else {
                    0.0
                },
            });
        }
    }
    bar.finish_and_clear();
    let mut rows = Vec::new();
    for ((server, model), samples) in servers.into_iter().zip(&plan.models).zip(samples) {
        let usage = server.stop()?;
        if !samples.is_empty() {
            rows.push(Row::new(model.clone(), samples, usage.max_rss_kib));
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((rows, setup)),
    }
}

/// A process's CPU time (user + system) so far, from /proc (zero if unreadable).
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
}

struct Usage {
    max_rss_kib: u64,
}

/// A `posa echo-server` child process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(exe: &Path, model: &str, plan: &Plan, service: &str) -> io::Result<Server> {
        let idle = plan
            .idle_timeout
            .map_or(0.0, |d| d.as_secs_f64())
            .to_string();
        let threads = plan.threads;
        let workers = plan.sync_workers.unwrap_or(threads);
        // `proactor` is the emulated backend, `proactor-uring` the io_uring one, side by side.
        let (model, backend) = match model {
            "proactor" => ("proactor", "emulated"),
            "proactor-uring" => ("proactor", "uring"),
            other => (other, "auto"),
        };
        let mut child = Command::new(exe)
            .args([
                "echo-server",
                "--model",
                model,
                "--backend",
                backend,
                "--addr",
                "127.0.0.1:0",
                "--threads",
                &threads.to_string(),
                "--drain-grace",
                "0.2",
                "--idle-timeout",
                &idle,
                "--service",
                service,
                "--sync-workers",
                &workers.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr from the server"))?;
        let mut lines = BufReader::new(stderr).lines();
        // The server says where it listens; read at most a few lines for it.
        let mut addr = None;
        for line in lines.by_ref().take(20) {
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                break;
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        match addr {
            Some(addr) => Ok(Server { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other(format!(
                    "model {model}: the server did not start"
                )))
            }
        }
    }

    /// SIGTERM, then wait and collect its CPU time and peak RSS.
    fn stop(mut self) -> io::Result<Usage> {
        let pid = self.child.id() as i32;
        // SAFETY: `pid` is our own child, not yet reaped (we reap it just below).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let mut status = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r < 0 {
            let e = io::Error::last_os_error();
            let _ = self.child.kill();
            return Err(e);
        }
        Ok(Usage {
            max_rss_kib: usage.ru_maxrss as u64,
        })
    }
}

fn pin(pid: i32, cpu: usize) -> io::Result<()> {
    pin_range(pid, cpu, cpu + 1)
}

/// Restricts `pid` (0: this thread) to CPUs `from..to`.
fn pin_range(pid: i32, from: usize, to: usize) -> io::Result<()> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in from..to {
        // SAFETY: `cpu` is below the number of CPUs, far below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid, initialised cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The side-by-side table: medians with their min-max, then the verdict.
pub fn table(rows: &[Row], plan: &Plan, setup: &Setup) -> String {
    let mut s = String::new();
    let l = &plan.load;
    let _ = writeln!(
        s,
        "posa compare: workload {}: {} ({}), {} B messages, {} connections, {} in flight{}; \
         {} rounds of {:.1?} per model, interleaved, after {:.1?} warm-up",
        plan.workload,
        plan.workload_what,
        l.work
            .as_ref()
            .map_or_else(|| "echo".to_owned(), |w| w.to_string()),
        l.size,
        l.conns,
        l.pipeline,
        l.rate
            .map(|r| format!(", open loop at {r:.0} msgs/s"))
            .unwrap_or_default(),
        plan.rounds,
        l.duration,
        plan.warmup
    );
    let _ = writeln!(
        s,
        "machine: {} CPUs ({}), Linux {}; io_uring {}; {}; servers use {} threads{}{}",
        setup.cpus,
        setup.cpu_model,
        setup.kernel,
        setup.io_uring,
        if setup.pinned {
            "client pinned to CPU 0, servers to the others"
        } else {
            "not pinned (one CPU, or pinning refused)"
        },
        plan.threads,
        plan.sync_workers
            .map(|n| format!(" (half-sync: {n} workers)"))
            .unwrap_or_default(),
        plan.idle_timeout
            .map(|d| format!("; idle timeout {d:.0?} re-armed on every read (posa models)"))
            .unwrap_or_default()
    );
    let best = rows
        .iter()
        .max_by(|a, b| a.msgs_per_sec.median.total_cmp(&b.msgs_per_sec.median));
    let _ = writeln!(
        s,
        "\n{:<16} {:>23} {:>7} {:>4} {:>19} {:>21} {:>11} {:>9} {:>6}",
        "model",
        "msgs/s [min-max]",
        "vs best",
        "",
        "p50 us [min-max]",
        "p99 us [min-max]",
        "CPU s/Mmsg",
        "peak RSS",
        "errors"
    );
    for r in rows {
        let m = &r.msgs_per_sec;
        let (ratio, tie) = match best {
            Some(b) if b.msgs_per_sec.median > 0.0 => (
                m.median / b.msgs_per_sec.median,
                b.model != r.model && m.overlaps(&b.msgs_per_sec),
            ),
            _ => (0.0, false),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>23} {:>6.2}x {:>4} {:>19} {:>21} {:>11.2} {:>5} MiB {:>6}",
            r.model,
            format!("{:.0} [{:.0}-{:.0}]", m.median, m.min, m.max),
            ratio,
            if tie { "tie" } else { "" },
            format!(
                "{:.0} [{:.0}-{:.0}]",
                r.p50_us.median, r.p50_us.min, r.p50_us.max
            ),
            format!(
                "{:.0} [{:.0}-{:.0}]",
                r.p99_us.median, r.p99_us.min, r.p99_us.max
            ),
            r.cpu_s_per_million.median,
            r.peak_rss_kib / 1024,
            r.errors
        );
    }
    let _ = writeln!(s, "{}", verdict(rows));
    s
}

/// The report as JSON (serde).
#[derive(Serialize)]
struct Report<'a> {
    workload: &'a str,
    work: Option<String>,
    size: usize,
    conns: usize,
    pipeline: usize,
    rate: Option<f64>,
    seconds_per_round: f64,
    rounds: usize,
    threads: usize,
    sync_workers: Option<usize>,
    machine: &'a Setup,
    verdict: String,
    models: &'a [Row],
}

/// The results as JSON.
pub fn json(rows: &[Row], plan: &Plan, setup: &Setup) -> String {
    let l = &plan.load;
    let report = Report {
        workload: &plan.workload,
        work: l.work.as_ref().map(|w| w.to_string()),
        size: l.size,
        conns: l.conns,
        pipeline: l.pipeline,
        rate: l.rate,
        seconds_per_round: l.duration.as_secs_f64(),
        rounds: plan.rounds,
        threads: plan.threads,
        sync_workers: plan.sync_workers,
        machine: setup,
        verdict: verdict(rows),
        models: rows,
    };
    let mut s =
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Two horizontal bar charts, throughput and p99, as one SVG: a bar to each model's median,
/// a whisker over its min-max. Hand-written: an SVG with `<text>` needs no font files, which
/// plotters' text layout does.
pub fn svg(rows: &[Row], title: &str) -> String {
    let bar_h = 22.0;
    let left = 150.0;
    let width = 420.0;
    let panel_h = 40.0 + bar_h * rows.len() as f64;
    let total_h = panel_h * 2.0 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{total_h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n",
        xml(title),
        w = left + width + 160.0
    );
    fn throughput(r: &Row) -> Spread {
        r.msgs_per_sec
    }
    fn p99_us(r: &Row) -> Spread {
        r.p99_us
    }
    type Panel = (&'static str, fn(&Row) -> Spread, &'static str);
    let panels: [Panel; 2] = [
        (
            "throughput (msgs/s, higher is better; whisker: min-max over rounds)",
            throughput,
            "#4878a8",
        ),
        ("p99 latency (µs, lower is better)", p99_us, "#c8643c"),
    ];
    for (p, (name, value, color)) in panels.iter().enumerate() {
        let top = 40.0 + p as f64 * panel_h;
        let max = rows
            .iter()
            .map(|r| value(r).max)
            .fold(0.0, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            top + 12.0,
            xml(name)
        );
        for (i, r) in rows.iter().enumerate() {
            let y = top + 22.0 + i as f64 * bar_h;
            let v = value(r);
            let w = (v.median / max * width).max(1.0);
            let (lo, hi) = (v.min / max * width + left, v.max / max * width + left);
            let mid = y + 3.0 + (bar_h - 6.0) / 2.0;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{left}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"/>\
                 <line x1=\"{lo:.1}\" y1=\"{mid:.1}\" x2=\"{hi:.1}\" y2=\"{mid:.1}\" stroke=\"black\"/>\
                 <text x=\"{}\" y=\"{}\">{:.0}</text>",
                left - 8.0,
                y + 14.0,
                xml(&r.model),
                y + 3.0,
                bar_h - 6.0,
                hi.max(left + w) + 6.0,
                y + 14.0,
                v.median
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes results JSON and the chart into `dir`; returns their paths.
pub fn write_out(
    dir: &Path,
    rows: &[Row],
    plan: &Plan,
    setup: &Setup,
) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let j = dir.join("results.json");
    let c = dir.join("chart.svg");
    std::fs::write(&j, json(rows, plan, setup))?;
    let l = &plan.load;
    let title = format!(
        "posa compare, {}: {} B, {} connections, {} in flight, {} rounds, {} CPUs",
        plan.workload, l.size, l.conns, l.pipeline, plan.rounds, setup.cpus
    );
    std::fs::write(&c, svg(rows, &title))?;
    Ok((j, c))
}
