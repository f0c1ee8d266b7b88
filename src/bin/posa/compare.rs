//! `posa compare`: each echo model in turn, as a child process pinned away from the load
//! generator, under the same load; a side-by-side table, results JSON and an SVG chart.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub models: Vec<String>,
    pub load: LoadConfig,
    pub warmup: Duration,
    pub threads: usize,
    pub out: PathBuf,
    /// Passed to each posa model's server (`--idle-timeout`): the cost of a per-connection
    /// timer re-armed on every read. The baselines have none.
    pub idle_timeout: Option<Duration>,
}

/// One model's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub model: String,
    pub msgs_per_sec: f64,
    pub bytes_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub errors: u64,
    pub cpu_s_per_million: f64,
    pub peak_rss_kib: u64,
}

/// Where the client and the servers run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub cpus: usize,
    pub pinned: bool,
}

/// Runs the plan; stops early (returning what was measured) when `stop` is set.
pub fn run(plan: &Plan, stop: &Arc<AtomicBool>) -> io::Result<(Vec<Row>, Setup)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2 && pin(0, 0).is_ok(); // the client on CPU 0
    let setup = Setup { cpus, pinned };
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for model in &plan.models {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let server = Server::start(&exe, model, plan.threads, plan.idle_timeout)?;
        if pinned {
            // Servers on the other CPUs: client and server do not fight for one core.
            let _ = pin_range(server.child.id() as i32, 1, cpus);
        }
        let mut cfg = plan.load.clone();
        cfg.addr = server.addr;
        let result = (|| {
            if !plan.warmup.is_zero() {
                let mut warm = cfg.clone();
                warm.duration = plan.warmup;
                load::run(&warm, stop, |_| {})?;
            }
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix:>18} [{bar:40}] {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(model.clone());
            let report = load::run(&cfg, stop, |f| bar.set_position((f * 1000.0) as u64))?;
            bar.finish_and_clear();
            Ok::<_, io::Error>(report)
        })();
        let usage = server.stop()?;
        let report = result.map_err(|e| io::Error::new(e.kind(), format!("{model}: {e}")))?;
        let millions = report.messages as f64 / 1e6;
        rows.push(Row {
            model: model.clone(),
            msgs_per_sec: report.msgs_per_sec(),
            bytes_per_sec: report.bytes_per_sec(),
            p50: report.percentile(0.5),
            p99: report.percentile(0.99),
            p999: report.percentile(0.999),
            max: report.max(),
            errors: report.errors,
            cpu_s_per_million: if millions > 0.0 {
                usage.cpu.as_secs_f64() / millions
            } else {
                0.0
            },
            peak_rss_kib: usage.max_rss_kib,
        });
    }
    Ok((rows, setup))
}

struct Usage {
    cpu: Duration,
    max_rss_kib: u64,
}

/// A `posa echo-server` child process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(
        exe: &Path,
        model: &str,
        threads: usize,
        idle: Option<Duration>,
    ) -> io::Result<Server> {
        let idle = idle.map_or(0.0, |d| d.as_secs_f64()).to_string();
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
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
        Ok(Usage {
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
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

/// The side-by-side table.
pub fn table(rows: &[Row], plan: &Plan, setup: &Setup) -> String {
    let mut s = String::new();
    let l = &plan.load;
    let _ = writeln!(
        s,
        "posa compare: {} B messages, {} connections, {} in flight{}, {:.1?} per model after {:.1?} warm-up",
        l.size,
        l.conns,
        l.pipeline,
        l.rate
            .map(|r| format!(", open loop at {r:.0} msgs/s"))
            .unwrap_or_default(),
        l.duration,
        plan.warmup
    );
    let _ = writeln!(
        s,
        "machine: {} CPUs; {}; servers use {} threads{}",
        setup.cpus,
        if setup.pinned {
            "client pinned to CPU 0, server to the others"
        } else {
            "not pinned (one CPU, or pinning refused)"
        },
        plan.threads,
        plan.idle_timeout
            .map(|d| format!("; idle timeout {d:.0?} re-armed on every read (posa models)"))
            .unwrap_or_default()
    );
    let best = rows.iter().map(|r| r.msgs_per_sec).fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n{:<18} {:>11} {:>7} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>7}",
        "model",
        "msgs/s",
        "vs best",
        "p50",
        "p99",
        "p99.9",
        "max",
        "CPU s/Mmsg",
        "peak RSS",
        "errors"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<18} {:>11.0} {:>6.2}x {:>10.1?} {:>10.1?} {:>10.1?} {:>10.1?} {:>12.2} {:>7} MiB {:>7}",
            r.model,
            r.msgs_per_sec,
            if best > 0.0 {
                r.msgs_per_sec / best
            } else {
                0.0
            },
            r.p50,
            r.p99,
            r.p999,
            r.max,
            r.cpu_s_per_million,
            r.peak_rss_kib / 1024,
            r.errors
        );
    }
    s
}

/// The results as JSON.
pub fn json(rows: &[Row], plan: &Plan, setup: &Setup) -> String {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let l = &plan.load;
    let mut s = format!(
        "{{\"size\":{},\"conns\":{},\"pipeline\":{},\"rate\":{},\"seconds\":{:.3},\"cpus\":{},\"pinned\":{},\"threads\":{},\"models\":[",
        l.size,
        l.conns,
        l.pipeline,
        l.rate.map_or("null".to_owned(), |r| format!("{r}")),
        l.duration.as_secs_f64(),
        setup.cpus,
        setup.pinned,
        plan.threads
    );
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"model\":\"{}\",\"msgs_per_sec\":{:.1},\"bytes_per_sec\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"errors\":{},\"cpu_s_per_million\":{:.3},\"peak_rss_kib\":{}}}",
            r.model,
            r.msgs_per_sec,
            r.bytes_per_sec,
            us(r.p50),
            us(r.p99),
            us(r.p999),
            us(r.max),
            r.errors,
            r.cpu_s_per_million,
            r.peak_rss_kib
        );
    }
    s.push_str("]}\n");
    s
}

/// Two horizontal bar charts, throughput and p99, as one SVG. Hand-written: an SVG with
/// `<text>` needs no font files, which plotters' text layout does.
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
        w = left + width + 140.0
    );
    fn throughput(r: &Row) -> f64 {
        r.msgs_per_sec
    }
    fn p99_us(r: &Row) -> f64 {
        r.p99.as_secs_f64() * 1e6
    }
    type Panel = (&'static str, fn(&Row) -> f64, &'static str);
    let panels: [Panel; 2] = [
        (
            "throughput (msgs/s, higher is better)",
            throughput,
            "#4878a8",
        ),
        ("p99 latency (µs, lower is better)", p99_us, "#c8643c"),
    ];
    for (p, (name, value, color)) in panels.iter().enumerate() {
        let top = 40.0 + p as f64 * panel_h;
        let max = rows.iter().map(value).fold(0.0, f64::max).max(1e-9);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            top + 12.0,
            xml(name)
        );
        for (i, r) in rows.iter().enumerate() {
            let y = top + 22.0 + i as f64 * bar_h;
            let v = value(r);
            let w = (v / max * width).max(1.0);
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{left}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\">{:.0}</text>",
                left - 8.0,
                y + 14.0,
                xml(&r.model),
                y + 3.0,
                bar_h - 6.0,
                left + w + 6.0,
                y + 14.0,
                v
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
        "posa compare: {} B, {} connections, {} in flight, {} CPUs",
        l.size, l.conns, l.pipeline, setup.cpus
    );
    std::fs::write(&c, svg(rows, &title))?;
    Ok((j, c))
}
