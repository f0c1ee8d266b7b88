//! `posa`: the command-line front of the posa runtime.
//!
//! With no subcommand it prints the pattern catalogue: each POSA2 pattern, the module that
//! implements it, whether it is built yet, and its documentation page.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// POSA2 concurrency patterns as a small, measured, loom-verified runtime.
#[derive(Debug, Parser)]
#[command(name = "posa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the patterns, where each lives, and whether it is built yet (the default).
    Patterns {
        /// Show only the patterns that are built.
        #[arg(long)]
        built: bool,
    },
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
        name: "Reactor",
        module: "posa::reactor",
        built: false,
        doc: "docs/reactor.md",
    },
    Pattern {
        name: "Leader/Followers",
        module: "posa::reactor",
        built: false,
        doc: "docs/reactor.md",
    },
    Pattern {
        name: "Acceptor-Connector",
        module: "posa::net",
        built: false,
        doc: "docs/net.md",
    },
    Pattern {
        name: "Thread Pool with schedulers (FIFO, priority, deadline)",
        module: "posa::pool",
        built: false,
        doc: "docs/pool.md",
    },
    Pattern {
        name: "Active Object",
        module: "posa::active",
        built: false,
        doc: "docs/active.md",
    },
    Pattern {
        name: "Half-Sync/Half-Async",
        module: "posa::pool",
        built: false,
        doc: "docs/half-sync.md",
    },
    Pattern {
        name: "Proactor",
        module: "posa::proactor",
        built: false,
        doc: "docs/proactor.md",
    },
    Pattern {
        name: "Interceptor",
        module: "posa::intercept",
        built: false,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let only_built = match cli.command {
        None => false,
        Some(Command::Patterns { built }) => built,
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
