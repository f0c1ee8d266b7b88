//! The `posa` binary as users run it: `compare` over child-process servers, `load` against a
//! running server, and clear errors for bad input.

use std::process::Command;

use posa::net::Addr;
use posa::server::{Model, Server, ServerConfig};

fn posa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_posa"))
}

#[test]
fn compare_runs_models_side_by_side_and_writes_results_and_a_chart() {
    let out = std::env::temp_dir().join(format!("posa-compare-test-{}", std::process::id()));
    let run = posa()
        .args([
            "compare",
            "--models",
            "reactor,thread-per-conn",
            "--duration",
            "0.3",
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
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for model in ["reactor", "thread-per-conn"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(model) && l.contains("x "))
            .unwrap_or_else(|| panic!("no row for {model}:\n{stdout}"));
        let errors: u64 = row.split_whitespace().last().unwrap().parse().unwrap();
        assert_eq!(errors, 0, "{row}");
    }
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert!(json.contains("\"model\":\"reactor\"") && json.contains("\"msgs_per_sec\":"));
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("thread-per-conn"));
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
    let run = posa().args(["load", "--conns", "0"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("at least 1"));
    let run = posa()
        .args(["load", "--addr", "127.0.0.1:1", "--duration", "0.1"])
        .output()
        .unwrap();
    assert!(!run.status.success(), "nothing listens on port 1");
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot load"));
}
