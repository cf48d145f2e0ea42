//! `dla-tools`: the workstation side of dla-edge.
//!
//! One module per subcommand, each with `run(&Args)`; `main` only dispatches.

mod size;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Workstation tools for DLA segmentation models: make data, inspect and benchmark models.
#[derive(Debug, Parser)]
#[command(name = "dla-tools", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a deterministic synthetic street-scene dataset (images + trainId labels).
    Synth(synth::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Synth(args) => synth::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
