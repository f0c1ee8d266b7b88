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

/// A preset workload: the service the servers run, the work each request asks for, and how
/// the load is offered.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    /// The work mix (`None`: plain echo).
    pub work: Option<&'static str>,
    /// Half-sync's workers, when the work blocks (Little's law: 50 connections x 1 ms).
    pub sync_workers: Option<usize>,
    pub what: &'static str,
    /// A new connection per request.
    pub churn: bool,
    /// Idle connections held open while the active ones are measured.
    pub idle: usize,
    /// Open loop at this multiple of each model's measured capacity.
    pub overload: Option<f64>,
    /// The servers read a file that the page cache does not hold.
    pub file: bool,
}

const BASE: Preset = Preset {
    name: "echo",
    work: None,
    sync_workers: None,
    what: "plain echo: no work, no framing",
    churn: false,
    idle: 0,
    overload: None,
    file: false,
};

/// The presets `posa compare --workload` knows, in `--suite` order.
pub const PRESETS: &[Preset] = &[
    BASE,
    Preset {
        name: "cpu",
        work: Some("cpu:20us-50us"),
        what: "20-50 us of computation per request",
        ..BASE
    },
    Preset {
        name: "blocking",
        work: Some("block:1ms"),
        sync_workers: Some(32),
        what: "1 ms blocking wait per request (a database call's stand-in)",
        ..BASE
    },
    Preset {
        name: "heavy-tail",
        work: Some("99%cpu:10us,1%block:10ms"),
        sync_workers: Some(32),
        what: "99% 10 us of computation, 1% 10 ms blocking",
        ..BASE
    },
    Preset {
        name: "file",
        work: Some("file:4KiB-64KiB"),
        sync_workers: Some(32),
        what: "a 4-64 KiB read at a random offset of a file the page cache does not hold",
        file: true,
        ..BASE
    },
    Preset {
        name: "idle",
        what: "50 active echo connections measured while 10,000 idle ones are held open",
        idle: 10_000,
        ..BASE
    },
    Preset {
        name: "churn",
        what: "a new connection per request: connect, request, reply, close",
        churn: true,
        ..BASE
    },
    Preset {
        name: "overload",
        work: Some("cpu:20us-50us"),
        what: "open loop at 1.5x each model's measured capacity, 20-50 us of computation each",
        overload: Some(1.5),
        ..BASE
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
    /// Idle connections held open beside the measured ones.
    pub idle: usize,
    /// Open loop at this multiple of each model's capacity (measured in the warm-up).
    pub overload: Option<f64>,
    /// The work service's file (the `file` workload).
    pub work_file: Option<PathBuf>,
    pub out: PathBuf,
    /// Passed to each posa model's server (`--idle-timeout`): the cost of a per-connection
    /// timer re-armed on every read. The baselines have none.
    pub idle_timeout: Option<Duration>,
}

impl Plan {
    /// The plan for `preset` on top of `base` (its models, load shape and knobs).
    pub fn for_preset(base: &Plan, preset: &Preset) -> Result<Plan, String> {
        let mut plan = base.clone();
        plan.workload = preset.name.to_owned();
        plan.workload_what = preset.what.to_owned();
        plan.load.work = match preset.work {
            Some(mix) => Some(
                mix.parse()
                    .map_err(|e| format!("preset {}: {e}", preset.name))?,
            ),
            None => None,
        };
        plan.sync_workers = preset.sync_workers.or(base.sync_workers);
        plan.load.churn = preset.churn || base.load.churn;
        plan.idle = preset.idle.max(base.idle);
        plan.overload = preset.overload.or(base.overload);
        if plan.overload.is_some() && plan.warmup < Duration::from_millis(500) {
            plan.warmup = Duration::from_millis(500); // the capacity is measured there
        }
        if preset.file {
            plan.work_file = Some(make_cold_file(&base.out)?);
        }
        Ok(plan)
    }
}

/// The `file` workload's file: 64 MiB of data under `dir`, dropped from the page cache.
fn make_cold_file(dir: &Path) -> Result<PathBuf, String> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    const SIZE: usize = 64 << 20;
    let path = dir.join("work-file.bin");
    let fail = |e: io::Error| format!("cannot write the work file {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let fresh = std::fs::metadata(&path).map(|m| m.len() as usize == SIZE);
    if !matches!(fresh, Ok(true)) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(fail)?);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.write_all(&block).map_err(fail)?;
        }
        f.into_inner()
            .map_err(|e| fail(e.into_error()))?
            .sync_all()
            .map_err(fail)?;
    }
    let f = std::fs::File::open(&path).map_err(fail)?;
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the call.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(path)
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
    /// Connection attempts refused (churn, overload).
    pub refused: u64,
    /// Open loop: the offered rate, and p99 from the actual send (what a closed-loop tool
    /// would report) beside `p99_us`, from the intended send.
    pub offered_per_sec: Option<f64>,
    pub sent_p99_us: f64,
    /// The server's CPU time (user + system) over the measurement, per million messages.
    pub cpu_s_per_million: f64,
    /// With idle connections: the server's resident memory per idle connection, bytes.
    pub idle_bytes_per_conn: Option<f64>,
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
    pub refused: u64,
    /// With idle connections: resident bytes per idle connection.
    pub idle_bytes_per_conn: Option<Spread>,
    /// The server's peak resident memory over the whole run.
    pub peak_rss_kib: u64,
    /// What went wrong, if the model failed (it is then measured no further).
    pub failures: Vec<String>,
}

impl Row {
    fn new(model: String, samples: Vec<Sample>, peak_rss_kib: u64) -> Row {
        Row {
            msgs_per_sec: Spread::of(samples.iter().map(|s| s.msgs_per_sec)),
            p50_us: Spread::of(samples.iter().map(|s| s.p50_us)),
            p99_us: Spread::of(samples.iter().map(|s| s.p99_us)),
            cpu_s_per_million: Spread::of(samples.iter().map(|s| s.cpu_s_per_million)),
            errors: samples.iter().map(|s| s.errors).sum(),
            refused: samples.iter().map(|s| s.refused).sum(),
            idle_bytes_per_conn: samples
                .iter()
                .all(|s| s.idle_bytes_per_conn.is_some())
                .then(|| Spread::of(samples.iter().filter_map(|s| s.idle_bytes_per_conn))),
            model,
            samples,
            peak_rss_kib,
            failures: Vec::new(),
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
            "winner: {}, {:.2}x the {}",
            best.model,
            best.msgs_per_sec.median / r.msgs_per_sec.median,
            r.model
        ),
        _ => format!("winner: {}", best.model),
    }
}

/// Runs the plan; stops early (returning what was measured) when `stop` is set. Every
/// model's server runs for the whole plan (pinned away from the client); round 0 warms each
/// up (and measures its closed-loop capacity), then each round measures every model once, in
/// order, so drift on a shared machine hits every model alike.
pub fn run(plan: &Plan, stop: &Arc<AtomicBool>) -> io::Result<(Vec<Row>, Setup)> {
    let (mut servers, setup) = start_servers(plan)?;
    let bar = indicatif::ProgressBar::new((plan.models.len() * (plan.rounds + 1)) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    let mut capacity = vec![0.0f64; servers.len()];
    let mut rss_base = vec![0u64; servers.len()];
    // A model that fails (its server exits, refuses, breaks the protocol) is reported with
    // what went wrong; the others are still measured.
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); servers.len()];
    'rounds: for round in 0..=plan.rounds {
        for (i, server) in servers.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break 'rounds;
            }
            if !failures[i].is_empty() {
                continue; // this model failed: the others go on
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                failures[i].push(format!("the server exited ({status}) before round {round}"));
                continue;
            }
            let model = &plan.models[i];
            let mut cfg = plan.load.clone();
            cfg.addr = server.addr;
            let pid = server.child.id();
            // Round 0 warms every model up (connections, caches, the pool's threads) and
            // measures its closed-loop capacity.
            if round == 0 {
                bar.set_prefix(format!("{} {model} warm-up", plan.workload));
                if !plan.warmup.is_zero() {
                    cfg.duration = plan.warmup;
                    cfg.rate = None;
                    match load::run(&cfg, stop, |_| {}) {
                        Ok(r) => capacity[i] = r.msgs_per_sec(),
                        Err(e) => {
                            failures[i].push(format!("warm-up: {e}"));
                            bar.inc(1);
                            continue;
                        }
                    }
                }
                rss_base[i] = rss_kib(pid);
                bar.inc(1);
                continue;
            }
            bar.set_prefix(format!("{} {model} round {round}", plan.workload));
            if let Some(factor) = plan.overload
                && capacity[i] > 0.0
            {
                cfg.rate = Some(capacity[i] * factor);
            }
            // Idle connections first, then the server's memory once it has taken them in.
            let (idle, idle_failed) = load::open_idle(cfg.addr, plan.idle);
            let idle_bytes_per_conn = (plan.idle > 0).then(|| {
                let rss = settled_rss_kib(pid);
                rss.saturating_sub(rss_base[i]) as f64 * 1024.0 / idle.len().max(1) as f64
            });
            let cpu_before = cpu_time(pid);
            let report = load::run(&cfg, stop, |_| {});
            let cpu = cpu_time(pid).saturating_sub(cpu_before);
            drop(idle);
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    failures[i].push(format!("round {round}: {e}"));
                    bar.inc(1);
                    continue;
                }
            };
            bar.inc(1);
            let millions = report.messages as f64 / 1e6;
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            samples[i].push(Sample {
                msgs_per_sec: report.msgs_per_sec(),
                p50_us: us(report.percentile(0.5)),
                p99_us: us(report.percentile(0.99)),
                p999_us: us(report.percentile(0.999)),
                max_us: us(report.max()),
                errors: report.errors + idle_failed as u64,
                refused: report.refused,
                offered_per_sec: cfg.rate,
                sent_p99_us: us(report.percentile_sent(0.99)),
                cpu_s_per_million: if millions > 0.0 {
                    cpu.as_secs_f64() / millions
                } else {
                    0.0
                },
                idle_bytes_per_conn,
            });
        }
    }
    bar.finish_and_clear();
    let mut rows = Vec::new();
    let iter = servers
        .into_iter()
        .zip(&plan.models)
        .zip(samples)
        .zip(failures);
    for (((server, model), samples), failures) in iter {
        let usage = server.stop()?;
        if !samples.is_empty() || !failures.is_empty() {
            let mut row = Row::new(model.clone(), samples, usage.max_rss_kib);
            row.errors += failures.len() as u64;
            row.failures = failures;
            rows.push(row);
        }
    }
    if !rows.is_empty() && rows.iter().all(|r| r.samples.is_empty()) {
        let why: Vec<String> = rows
            .iter()
            .map(|r| format!("{}: {}", r.model, r.failures.join("; ")))
            .collect();
        return Err(io::Error::other(format!(
            "every model failed: {}",
            why.join(" | ")
        )));
    }
    Ok((rows, setup))
}

/// Pins this thread (the client) to CPU 0 and starts every model's server on the other
/// CPUs, so client and servers do not fight for one core; describes the machine.
fn start_servers(plan: &Plan) -> io::Result<(Vec<Server>, Setup)> {
    let cpus = online_cpus();
    load::raise_fd_limit();
    let pinned = cpus >= 2 && pin(0, 0).is_ok();
    let setup = Setup::probe(cpus, pinned);
    let exe = std::env::current_exe()?;
    let mut servers = Vec::new();
    for model in &plan.models {
        let server = Server::start(&exe, model, plan)?;
        if pinned {
            let _ = pin_range(server.child.id() as i32, 1, cpus);
        }
        servers.push(server);
    }
    Ok((servers, setup))
}

/// The machine's online CPUs. Not `available_parallelism`: that is this process's affinity,
/// which the first measurement narrows to CPU 0 (the client's), so a second plan in the same
/// process (`--suite`) saw one CPU and ran servers and client on it.
fn online_cpus() -> usize {
    // SAFETY: sysconf only reads its argument.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// A process's resident memory now, KiB (0 if unreadable).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident memory once it stops growing (the server is still accepting and setting up
/// the connections just opened): read every 50 ms until two readings agree within 1%, for
/// at most 3 s. A measurement's wait, not a synchronisation.
fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(50));
        let now = rss_kib(pid);
        if now.abs_diff(last) * 100 <= last {
            return now;
        }
        last = now;
    }
    last
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
    fn start(exe: &Path, model: &str, plan: &Plan) -> io::Result<Server> {
        let service = if plan.load.work.is_some() {
            "work"
        } else {
            "echo"
        };
        let max_conns = (plan.idle + plan.load.conns + 100).max(10_000).to_string();
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
        let mut command = Command::new(exe);
        command.args([
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
            "--max-conns",
            &max_conns,
        ]);
        if let Some(file) = &plan.work_file {
            command.arg("--work-file").arg(file);
        }
        let mut child = command
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
        // Keep draining its stderr so it never blocks on a full pipe; keep the last lines for
        // `--out/<model>.log` (warnings only: RUST_LOG=warn), bounded.
        let log_path = plan.out.join(format!("{model}-{backend}.log"));
        std::thread::spawn(move || {
            let mut tail = std::collections::VecDeque::new();
            for line in lines.map_while(Result::ok) {
                if tail.len() == 200 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            if !tail.is_empty() {
                let _ = std::fs::create_dir_all(log_path.parent().unwrap_or(Path::new(".")));
                let text: Vec<String> = tail.into();
                let _ = std::fs::write(&log_path, text.join("\n") + "\n");
            }
        });
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
    let open_loop = rows
        .iter()
        .any(|r| r.samples.iter().any(|x| x.offered_per_sec.is_some()));
    let idle = rows.iter().any(|r| r.idle_bytes_per_conn.is_some());
    let refused = rows.iter().any(|r| r.refused > 0) || plan.load.churn;
    let mut extra_h = String::new();
    if open_loop {
        let _ = write!(extra_h, " {:>10} {:>14}", "offered/s", "p99 from send");
    }
    if idle {
        let _ = write!(extra_h, " {:>17}", "idle B/conn");
    }
    if refused {
        let _ = write!(extra_h, " {:>8}", "refused");
    }
    let _ = writeln!(
        s,
        "\n{:<16} {:>23} {:>7} {:>4} {:>19} {:>21} {:>11} {:>9} {:>6}{extra_h}",
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
        let mut extra = String::new();
        if open_loop {
            let offered = Spread::of(r.samples.iter().filter_map(|x| x.offered_per_sec));
            let sent = Spread::of(r.samples.iter().map(|x| x.sent_p99_us));
            let _ = write!(extra, " {:>10.0} {:>14.0}", offered.median, sent.median);
        }
        if idle {
            match &r.idle_bytes_per_conn {
                Some(b) => {
                    let _ = write!(
                        extra,
                        " {:>17}",
                        format!("{:.0} [{:.0}-{:.0}]", b.median, b.min, b.max)
                    );
                }
                None => extra.push_str(&format!(" {:>17}", "-")),
            }
        }
        if refused {
            let _ = write!(extra, " {:>8}", r.refused);
        }
        let _ = writeln!(
            s,
            "{:<16} {:>23} {:>6.2}x {:>4} {:>19} {:>21} {:>11.2} {:>5} MiB {:>6}{extra}",
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
    for r in rows.iter().filter(|r| !r.failures.is_empty()) {
        let _ = writeln!(s, "{} failed: {}", r.model, r.failures.join("; "));
    }
    let _ = writeln!(s, "{}", verdict(rows));
    s
}

/// The report as JSON (serde).
#[derive(Serialize)]
struct Report<'a> {
    workload: &'a str,
    what: &'a str,
    work: Option<String>,
    size: usize,
    conns: usize,
    pipeline: usize,
    rate: Option<f64>,
    arrivals: String,
    churn: bool,
    idle_conns: usize,
    overload: Option<f64>,
    seconds_per_round: f64,
    rounds: usize,
    threads: usize,
    sync_workers: Option<usize>,
    machine: &'a Setup,
    verdict: String,
    models: &'a [Row],
}

fn report<'a>(rows: &'a [Row], plan: &'a Plan, setup: &'a Setup) -> Report<'a> {
    let l = &plan.load;
    Report {
        workload: &plan.workload,
        what: &plan.workload_what,
        work: l.work.as_ref().map(|w| w.to_string()),
        size: l.size,
        conns: l.conns,
        pipeline: l.pipeline,
        rate: l.rate,
        arrivals: format!("{:?}", l.arrivals).to_lowercase(),
        churn: l.churn,
        idle_conns: plan.idle,
        overload: plan.overload,
        seconds_per_round: l.duration.as_secs_f64(),
        rounds: plan.rounds,
        threads: plan.threads,
        sync_workers: plan.sync_workers,
        machine: setup,
        verdict: verdict(rows),
        models: rows,
    }
}

/// The results as JSON.
pub fn json(rows: &[Row], plan: &Plan, setup: &Setup) -> String {
    let mut s = serde_json::to_string_pretty(&report(rows, plan, setup))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// `--suite`: report.md (a section per workload: what it is, the verdict, the table, the
/// chart) and suite.json (every workload's report) in `dir`.
pub fn write_suite(dir: &Path, done: &[(Plan, Vec<Row>, Setup)]) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let mut md = String::from("# posa compare --suite\n\n");
    if let Some((_, _, setup)) = done.first() {
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), Linux {}, io_uring {}; {}.\n",
            setup.cpus,
            setup.cpu_model,
            setup.kernel,
            setup.io_uring,
            if setup.pinned {
                "client pinned to CPU 0, servers to the others"
            } else {
                "not pinned"
            }
        );
    }
    let _ = writeln!(md, "| workload | verdict |\n|---|---|");
    for (plan, rows, _) in done {
        let _ = writeln!(md, "| {} | {} |", plan.workload, verdict(rows));
    }
    for (plan, rows, setup) in done {
        let _ = writeln!(
            md,
            "\n## {}\n\n{}.\n\n**{}**\n\n```text\n{}```\n\n![{}]({}/chart.svg)",
            plan.workload,
            plan.workload_what,
            verdict(rows),
            table(rows, plan, setup),
            plan.workload,
            plan.workload
        );
    }
    let reports: Vec<Report<'_>> = done
        .iter()
        .map(|(plan, rows, setup)| report(rows, plan, setup))
        .collect();
    let m = dir.join("report.md");
    let j = dir.join("suite.json");
    std::fs::write(&m, md)?;
    let mut json = serde_json::to_string_pretty(&reports).map_err(io::Error::other)?;
    json.push('\n');
    std::fs::write(&j, json)?;
    Ok((m, j))
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

/// The offered loads of `--sweep rate`, as fractions of each model's capacity.
pub const SWEEP: [f64; 8] = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.2];

/// One point of a latency-versus-offered-load curve.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub fraction: f64,
    pub offered_per_sec: f64,
    pub achieved_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// One model's curve.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub model: String,
    /// Closed-loop messages a second in the warm-up: 100% on the curve.
    pub capacity_per_sec: f64,
    pub points: Vec<SweepPoint>,
}

/// `--sweep rate`: each model's capacity (closed loop, in its warm-up), then open-loop rates
/// from 10% to 120% of it, the models interleaved at every step.
pub fn sweep(plan: &Plan, stop: &Arc<AtomicBool>) -> io::Result<(Vec<SweepRow>, Setup)> {
    let (servers, setup) = start_servers(plan)?;
    let bar = indicatif::ProgressBar::new((plan.models.len() * (SWEEP.len() + 1)) as u64);
    let mut rows: Vec<SweepRow> = Vec::new();
    for (server, model) in servers.iter().zip(&plan.models) {
        let mut cfg = plan.load.clone();
        cfg.addr = server.addr;
        cfg.rate = None;
        cfg.duration = plan.warmup.max(Duration::from_millis(500));
        let capacity = load::run(&cfg, stop, |_| {})
            .map_err(|e| io::Error::new(e.kind(), format!("{model}: {e}")))?
            .msgs_per_sec();
        bar.inc(1);
        rows.push(SweepRow {
            model: model.clone(),
            capacity_per_sec: capacity,
            points: Vec::new(),
        });
    }
    'steps: for fraction in SWEEP {
        for (server, row) in servers.iter().zip(rows.iter_mut()) {
            if stop.load(Ordering::Relaxed) {
                break 'steps;
            }
            let mut cfg = plan.load.clone();
            cfg.addr = server.addr;
            let offered = (row.capacity_per_sec * fraction).max(1.0);
            cfg.rate = Some(offered);
            let r = load::run(&cfg, stop, |_| {})
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", row.model)))?;
            bar.inc(1);
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            row.points.push(SweepPoint {
                fraction,
                offered_per_sec: offered,
                achieved_per_sec: r.msgs_per_sec(),
                p50_us: us(r.percentile(0.5)),
                p99_us: us(r.percentile(0.99)),
                errors: r.errors,
            });
        }
    }
    bar.finish_and_clear();
    for server in servers {
        server.stop()?;
    }
    Ok((rows, setup))
}

/// The sweep as a table: per model, each step's offered and achieved rate and latency.
pub fn sweep_table(rows: &[SweepRow], plan: &Plan, setup: &Setup) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "posa compare --sweep rate: workload {} ({}), {} connections, {:.1?} per step; {} CPUs, Linux {}",
        plan.workload,
        plan.workload_what,
        plan.load.conns,
        plan.load.duration,
        setup.cpus,
        setup.kernel
    );
    for r in rows {
        let _ = writeln!(
            s,
            "\n{} (capacity {:.0} msgs/s closed loop)\n{:>6} {:>11} {:>11} {:>10} {:>10} {:>6}",
            r.model,
            r.capacity_per_sec,
            "load",
            "offered/s",
            "achieved/s",
            "p50 us",
            "p99 us",
            "errors"
        );
        for p in &r.points {
            let _ = writeln!(
                s,
                "{:>5.0}% {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>6}",
                p.fraction * 100.0,
                p.offered_per_sec,
                p.achieved_per_sec,
                p.p50_us,
                p.p99_us,
                p.errors
            );
        }
    }
    s
}

/// Latency versus offered load, p99 (solid) and p50 (dashed) per model, log scale: the chart
/// wrk2 users read first.
pub fn sweep_svg(rows: &[SweepRow], title: &str) -> String {
    const COLORS: [&str; 9] = [
        "#4878a8", "#c8643c", "#58a058", "#a05898", "#b8a030", "#404040", "#30a0b0", "#d04060",
        "#8060c0",
    ];
    let (left, top, w, h) = (70.0, 40.0, 520.0, 300.0);
    let values = rows
        .iter()
        .flat_map(|r| r.points.iter())
        .flat_map(|p| [p.p50_us, p.p99_us])
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 {
        (1.0, 10.0)
    } else {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil()).max(lo * 10.0),
        )
    };
    let x = |f: f64| left + f / 1.2 * w;
    let y = |v: f64| top + h - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * h;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered load (% of each model's capacity)</text>\n",
        left + w + 170.0,
        top + h + 50.0,
        xml(title),
        top + h,
        left + w,
        top + h,
        top + h,
        left + w / 2.0,
        top + h + 40.0
    );
    for f in SWEEP {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>",
            x(f),
            top + h + 16.0,
            f * 100.0
        );
    }
    let mut decade = lo;
    while decade <= hi * 1.001 {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} us</text>",
            left - 6.0,
            y(decade) + 4.0,
            decade
        );
        decade *= 10.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (dash, value) in [("", 0usize), (" stroke-dasharray=\"4 3\"", 1)] {
            let pts: Vec<String> = r
                .points
                .iter()
                .map(|p| {
                    let v = if value == 0 { p.p99_us } else { p.p50_us };
                    format!("{:.1},{:.1}", x(p.fraction), y(v))
                })
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                pts.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            left + w + 12.0,
            top + 14.0 + i as f64 * 16.0,
            xml(&r.model)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\">solid p99, dashed p50</text>",
        left + w + 12.0,
        top + 20.0 + rows.len() as f64 * 16.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes sweep.json and sweep.svg into `dir`.
pub fn write_sweep(
    dir: &Path,
    rows: &[SweepRow],
    plan: &Plan,
    setup: &Setup,
) -> io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let j = dir.join("sweep.json");
    let c = dir.join("sweep.svg");
    let json = serde_json::json!({
        "workload": plan.workload,
        "what": plan.workload_what,
        "conns": plan.load.conns,
        "seconds_per_step": plan.load.duration.as_secs_f64(),
        "machine": setup,
        "models": rows,
    });
    std::fs::write(&j, format!("{json:#}\n"))?;
    let title = format!(
        "latency vs offered load, workload {}, {} connections",
        plan.workload, plan.load.conns
    );
    std::fs::write(&c, sweep_svg(rows, &title))?;
    Ok((j, c))
}
