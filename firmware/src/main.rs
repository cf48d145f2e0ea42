//! `dla-edge`: the on-board segmentation app.
//!
//! `main` parses arguments, sets up logging and hands each subcommand to its
//! module; the work itself lives in `dla-runtime`.

mod actions;
#[cfg(feature = "v4l")]
mod camera;
mod config;
mod events;
mod gpio;
mod rules;
mod run;
mod segment;
mod stream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Semantic segmentation on edge boards with Deep Layer Aggregation (DLA) models.
///
/// Runs the shipped DLA-tiny model (built into this binary) or any ONNX
/// segmentation model with a model card, on the CPU via tract, or, in builds
/// with the `ort` feature, on ONNX Runtime (CPU, CUDA, TensorRT).
#[derive(Debug, Parser)]
#[command(name = "dla-edge", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live segmentation from a camera, pipe, stream, files or the demo, with a web viewer.
    Stream(stream::Args),
    /// Segment images (a file or a directory) and write overlays, colour masks and class-ID maps.
    Segment(segment::Args),
    /// The service: run what a configuration file says (source, model, viewer, GPIO rules).
    Run(run::RunArgs),
    /// Check a configuration file (every key, the model's class names, pins) without running.
    CheckConfig(run::CheckArgs),
    /// List V4L2 cameras and the MJPEG/YUYV modes they offer.
    Cameras,
}

fn main() -> ExitCode {
    restore_sigpipe();
    // tract warns about every opset newer than it was tested with (PyTorch's
    // exporter writes 20); the load says plainly if a model cannot run.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,tract_onnx::model=error"),
    )
    .init();
    dla_runtime::heap::retain_freed_memory();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Stream(args) => stream::run(args),
        Command::Segment(args) => segment::run(args),
        Command::Run(args) => run::run(args),
        Command::CheckConfig(args) => run::check(args),
        Command::Cameras => cameras(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `dla-edge cameras`.
fn cameras() -> anyhow::Result<ExitCode> {
    #[cfg(feature = "v4l")]
    {
        camera::list()?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "v4l"))]
    anyhow::bail!(
        "this dla-edge was built without camera support; rebuild with \
         `cargo build -p dla-firmware --features v4l`"
    )
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
