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
