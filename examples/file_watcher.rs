//! A file watcher on inotify, as a real tool: reports create, modify, delete, move (paired),
//! attribute changes, and prints what is appended to watched files like `tail -F` (following
//! truncation and rotation, and files that do not exist yet).
//!
//! ```sh
//! cargo run --release --example file_watcher -- /var/log/syslog --model proactor
//! cargo run --release --example file_watcher -- ./logs --recursive --format json
//! ```
//! The reactor model reads the appended data in its handler; the proactor model gets it as the
//! completion of a file-read operation. Both print the same. Ctrl-C to stop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use posa::watch::{Format, Model};

#[derive(Parser)]
struct Args {
    /// Files or directories to watch.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// reactor or proactor.
    #[arg(long, default_value = "reactor")]
    model: Model,
    /// Watch sub-directories too.
    #[arg(long)]
    recursive: bool,
    /// text or json.
    #[arg(long, default_value = "text")]
    format: Format,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match posa::watch::run_until_signal(
        &args.paths,
        args.recursive,
        args.model,
        args.format,
        std::io::stdout(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_watcher: {e}");
            ExitCode::FAILURE
        }
    }
}
