//! `dla-edge`: the on-board segmentation app.
//!
//! `main` parses arguments, sets up logging and hands each subcommand to its
//! module; the work itself lives in `dla-runtime`.

mod segment;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Semantic segmentation on edge boards with Deep Layer Aggregation (DLA) models.
///
/// Runs the shipped DLA-tiny model (built into this binary) or any ONNX
/// segmentation model with a model card, on the CPU via tract.
#[derive(Debug, Parser)]
#[command(name = "dla-edge", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment images (a file or a directory) and write overlays, colour masks and class-ID maps.
    Segment(segment::Args),
}

fn main() -> ExitCode {
    restore_sigpipe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Segment(args) => segment::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets `dla-x ... | head` end quietly like other Unix tools instead of
/// panicking on a closed stdout (Rust ignores SIGPIPE by default).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; it only
    // resets a signal disposition to the system default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
