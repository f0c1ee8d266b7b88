//! The `posa` binary as users run it: `compare` over child-process servers, `load` against a
//! running server, and clear errors for bad input.

use std::process::Command;

use posa::net::Addr;
use posa::server::{Model, Server, ServerConfig};

fn posa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_posa"))
}

/// Every preset at tiny durations: a row per model, 0 errors, the JSON parses (with the
/// machine and a verdict), the SVG is written.
#[test]
fn compare_runs_every_preset_side_by_side_and_writes_results_and_a_chart() {
    for workload in [
        "echo",
        "cpu",
        "blocking",
        "heavy-tail",
        "file",
        "idle",
        "churn",
        "overload",
    ] {
        // 10,000 idle connections are held per model and round: one model, one round.
        let (models, rounds) = match workload {
            "idle" => (&["reactor"][..], 1),
            _ => (&["reactor", "half-sync", "thread-per-conn"][..], 2),
        };
        let out = std::env::temp_dir().join(format!(
            "posa-compare-test-{}-{workload}",
            std::process::id()
        ));
        let run = posa()
            .args([
                "compare",
                "--workload",
                workload,
                "--models",
                &models.join(","),
                "--duration",
                "0.2",
                "--rounds",
                &rounds.to_string(),
                "--warmup",
                "0",
                "--conns",
                "4",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{workload}: {stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains(&format!("workload {workload}")), "{stdout}");
        assert!(
            stdout.contains("winner: ") || stdout.contains("tie within noise: "),
            "{stdout}"
        );
        for model in models {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(model) && l.contains("x ")),
                "{workload}: no row for {model}:\n{stdout}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .expect("results.json parses");
        assert_eq!(json["workload"], workload);
        assert_eq!(json["rounds"], rounds);
        assert!(json["machine"]["kernel"].is_string() && json["machine"]["cpus"].is_u64());
        assert!(json["verdict"].is_string());
        let rows = json["models"].as_array().unwrap();
        assert_eq!(rows.len(), models.len());
        for row in rows {
            assert_eq!(row["errors"], 0, "{workload}: {row}");
            let samples = row["samples"].as_array().unwrap();
            assert_eq!(samples.len(), rounds, "{row}");
            match workload {
                "idle" => assert!(row["idle_bytes_per_conn"]["median"].as_f64() > Some(0.0)),
                "overload" => assert!(samples[0]["offered_per_sec"].as_f64() > Some(0.0)),
                _ => assert!(samples[0]["offered_per_sec"].is_null(), "{row}"),
            }
            let m = &row["msgs_per_sec"];
            assert!(m["min"].as_f64() <= m["median"].as_f64(), "{row}");
            assert!(m["median"].as_f64() <= m["max"].as_f64(), "{row}");
        }
        // That the comparison served at all (not each model in each 0.2 s round: on a loaded
        // 2-core machine an overload round at 144 msg/s once served nothing in its window).
        let served: f64 = rows
            .iter()
            .filter_map(|r| r["msgs_per_sec"]["max"].as_f64())
            .sum();
        assert!(served > 0.0, "{workload}: nothing was served by any model");
        let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(models[models.len() - 1]));
        let _ = std::fs::remove_dir_all(out);
    }
}

/// `--sweep rate`: a curve per model from 10% to 120% of its capacity, JSON and chart.
#[test]
fn a_rate_sweep_charts_latency_against_offered_load() {
    let out = std::env::temp_dir().join(format!("posa-sweep-test-{}", std::process::id()));
    let run = posa()
        .args([
            "compare",
            "--sweep",
            "rate",
            "--workload",
            "cpu",
            "--models",
            "reactor",
            "--duration",
            "0.1",
            "--conns",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let points = json["models"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    assert_eq!(points[0]["fraction"], 0.1);
    assert_eq!(points[7]["fraction"], 1.2);
    // Each point was offered load and broke nothing. Whether a reply came back inside one
    // 0.1 s window is timing, not behaviour (a loaded machine once left the first, 10% point
    // without one): only the sweep as a whole must have served requests.
    let mut served = 0.0;
    for p in points {
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["offered_per_sec"].as_f64() > Some(0.0), "{p}");
        served += p["achieved_per_sec"].as_f64().expect("a number");
    }
    assert!(served > 0.0, "no step of the sweep was served: {points:?}");
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn load_drives_a_server_and_reports_json() {
    let server = Server::start(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model: Model::ReactorPool,
        ..ServerConfig::default()
    })
    .unwrap();
    let Addr::Tcp(addr) = server.local_addr().clone() else {
        unreachable!()
    };
    for extra in [&["--pipeline", "4"][..], &["--rate", "2000"][..]] {
        let run = posa()
            .args([
                "load",
                "--addr",
                &addr.to_string(),
                "--conns",
                "3",
                "--duration",
                "0.3",
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let json = String::from_utf8(run.stdout).unwrap();
        let field = |name: &str| -> f64 {
            let at = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            json[at..]
                .split([',', '}'])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(field("messages") > 0.0, "{json}");
        assert_eq!(field("errors"), 0.0, "{json}");
        assert_eq!(json.contains("\"open_loop\":true"), extra[0] == "--rate");
    }
    server.shutdown(std::time::Duration::from_secs(1));
    server.join().unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let run = posa()
        .args(["compare", "--models", "nonsense"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("unknown model \"nonsense\""), "{err}");
    // The workload knobs: each refused with what is wrong, before anything runs.
    for (args, says) in [
        (
            &["compare", "--workload", "disk"][..],
            "unknown workload \"disk\"",
        ),
        (
            &["compare", "--work", "gpu:1ms"][..],
            "unknown kind \"gpu\"",
        ),
        (&["compare", "--work", "cpu:10"][..], "needs a unit"),
        (
            &["compare", "--work", "cpu:50us-20us"][..],
            "low above high",
        ),
        (
            &["compare", "--workload", "cpu", "--work", "cpu:1ms"][..],
            "either --workload or the knobs",
        ),
        (&["compare", "--duration", "0"][..], "more than 0 seconds"),
        (&["compare", "--duration", "-1"][..], "--duration -1"),
        (&["compare", "--rounds", "0"][..], "at least 1"),
        (
            &["compare", "--sweep", "latency"][..],
            "invalid value 'latency'",
        ),
        (
            &["compare", "--sweep", "rate", "--rate", "100"][..],
            "takes no --rate",
        ),
        (
            &["compare", "--suite", "--work", "cpu:1ms"][..],
            "--suite runs every preset",
        ),
        (
            &["compare", "--arrivals", "bursty"][..],
            "expected fixed or poisson",
        ),
        (&["compare", "--rate", "0"][..], "positive rate"),
        (
            &["load", "--work", "cpu:1ms", "--size", "8"][..],
            "at least 16",
        ),
    ] {
        let run = posa().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let run = posa().args(["load", "--conns", "0"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("at least 1"));
    let run = posa()
        .args(["load", "--addr", "127.0.0.1:1", "--duration", "0.1"])
        .output()
        .unwrap();
    assert!(!run.status.success(), "nothing listens on port 1");
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot load"));
    // echo-server: each bad value is refused at start with what is wrong, before it listens.
    for (flag, value, says) in [
        ("--buffer", "0", "must be at least 1"),
        ("--threads", "0", "must be at least 1"),
        ("--max-conns", "0", "must be at least 1"),
        ("--drain-grace", "-1", "expected seconds (0 or more)"),
        ("--idle-timeout", "-0.5", "expected seconds (0 or more)"),
        (
            "--rate-limit",
            "fast",
            "expected a positive rate like 100/s",
        ),
        ("--rate-limit", "0/s", "expected a positive rate like 100/s"),
    ] {
        let run = posa()
            .args(["echo-server", "--addr", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{flag} {value} was accepted: {err}");
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
        assert!(!err.contains("listening on"), "{flag} {value}: {err}");
    }
}

#[test]
fn watch_says_a_missing_path_will_be_followed_and_refuses_a_missing_directory() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("posa-cli-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("not-yet.log");
    let mut child = posa()
        .arg("watch")
        .arg(&missing)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in lines.by_ref().take(1000) {}
    child.wait().unwrap();
    assert!(
        first.contains("does not exist yet") && first.contains("not-yet.log"),
        "{first}"
    );
    let run = posa()
        .arg("watch")
        .arg(dir.join("no-such-dir").join("x.log"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `posa echo-server --model proactor --backend <backend>` with `env`, returns the line
/// that says where it listens and on what, then stops it with SIGTERM.
fn proactor_server_banner(backend: &str, env: &[(&str, &str)]) -> String {
    use std::io::BufRead;
    let mut child = posa()
        .args([
            "echo-server",
            "--model",
            "proactor",
            "--addr",
            "127.0.0.1:0",
        ])
        .args(["--backend", backend, "--drain-grace", "0"])
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let banner = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .unwrap_or_default();
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Read to the end (bounded by the child's exit), as a terminal would.
    for _ in lines.by_ref().take(1000) {}
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {banner}");
    banner
}

#[test]
fn echo_server_says_which_proactor_backend_is_live_and_refuses_an_unavailable_one() {
    let off = [("POSA_IO_URING", "off")];
    let banner = proactor_server_banner("auto", &off);
    assert!(banner.contains("proactor/emulated"), "{banner}");
    let banner = proactor_server_banner("emulated", &[]);
    assert!(banner.contains("proactor/emulated"), "{banner}");
    if posa::proactor::skip_without_io_uring("echo_server_on_io_uring") {
        let banner = proactor_server_banner("auto", &[]);
        assert!(banner.contains("proactor/uring"), "{banner}");
    }
    let refused = posa()
        .args(["echo-server", "--model", "proactor", "--backend", "uring"])
        .args(["--addr", "127.0.0.1:0"])
        .envs(off)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("io_uring disabled by POSA_IO_URING=off"),
        "{stderr}"
    );
    let bad = posa()
        .args(["echo-server", "--model", "proactor", "--backend", "epoll"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("unknown backend"),
        "{stderr}"
    );
}
