//! `dla-tools`: the workstation side of dla-edge.
//!
//! One module per subcommand, each with `run(&Args)`; `main` only dispatches.

mod bench;
mod bundle;
mod card;
mod class_balance;
mod dataset;
mod distill;
mod eval;
mod flash;
mod graph;
mod inspect;
mod kernels;
mod outputs;
mod probe;
mod prune;
mod quantize;
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
    /// Describe a model: inputs, outputs, model card, operators, parameters and GMACs.
    Inspect(inspect::Args),
    /// Write, correct or check a model's card (classes, normalisation, size), as a sidecar or in the ONNX.
    Card(card::Args),
    /// Measure a model's latency (pre, inference, post) and frames per second on this machine.
    Bench(bench::Args),
    /// Measure segmentation quality (mIoU, per-class IoU, confusion) and agreement with a reference model.
    Eval(eval::Args),
    /// Quantise an fp32 model to int8 for a backend (tract, ort, tensorrt), calibrated on images.
    Quantize(quantize::Args),
    /// Remove whole channels from an fp32 model (no retraining) so it runs faster; report what it cost.
    Prune(prune::Args),
    /// Fit a model (e.g. a pruned one) to another's class probabilities on unlabelled images.
    Distill(distill::Args),
    /// Build dla-edge for a board and package it with models, config and service (folder, .tar.gz, .deb).
    Bundle(bundle::Args),
    /// Copy a bundle to a board over ssh, install and start it, and report the board's first FPS.
    Flash(flash::Args),
}

fn main() -> ExitCode {
    restore_sigpipe();
    // tract warns about every opset newer than it was tested with (PyTorch's
    // exporter writes 20); the load says plainly if a model cannot run.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,tract_onnx::model=error"),
    )
    .init();
    dla_runtime::heap::retain_freed_memory();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Card(args) => card::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Prune(args) => prune::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Flash(args) => flash::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
