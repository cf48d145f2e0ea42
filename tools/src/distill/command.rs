//! `dla-tools distill`: fit a model's Conv weights to another model's class
//! probabilities on unlabelled images (see the module above).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use dla_runtime::Model;
use serde::Serialize;

use super::{distill, logits_tensor, Distillation, Options};
use crate::dataset::Dataset;
use crate::graph;
use crate::probe::InputMaker;
use crate::prune::{held_out, HeldOut};

/// Where the distillation's report goes in the model's metadata.
pub const DISTILL_METADATA_KEY: &str = "dla_edge.distillation";

/// Arguments of `dla-tools distill`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-tools distill tiny-p30.onnx tiny-p30-d.onnx --teacher models/dla-tiny-seg.onnx --epochs 3\n  \
    dla-tools distill small.onnx small-d.onnx --teacher big.onnx --data my-frames/ --eval labelled-val/\n\n\
    `dla-tools prune --distill N` runs the same fit as its last step.")]
pub struct Args {
    /// The model to fit (e.g. a pruned model), fp32 ONNX with a model card.
    input: PathBuf,
    /// Where to write the fitted model.
    output: PathBuf,
    /// The model whose class probabilities to match (e.g. the unpruned
    /// model). Its graph must name the logits tensor as `input`'s does.
    #[arg(long)]
    teacher: PathBuf,
    /// Unlabelled images: a directory or synth:N[:SEED]. Every 8th is held
    /// back to check that the fit generalises.
    #[arg(long, default_value = "synth:256")]
    data: String,
    /// Passes over the images.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: u32,
    /// Adam's peak step size (a cosine schedule takes it to 0).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Each pixel weighs frequency^-S of the teacher's class there (0: every pixel alike).
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    class_balance: f64,
    /// Held-out labelled data for the report (mIoU and agreement with the teacher); "none" skips it.
    #[arg(long, default_value = "synth:32:2")]
    eval: String,
    /// Threads (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    input: String,
    teacher: String,
    output: String,
    distillation: Distillation,
    held_out_before: Option<HeldOut>,
    held_out: Option<HeldOut>,
}

/// Runs `dla-tools distill`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    crate::outputs::check_writable(
        &args.input,
        std::iter::once(&args.output).chain(&args.report),
    )?;
    if !(0.0..=2.0).contains(&args.class_balance) {
        anyhow::bail!(
            "--class-balance {}: expected a strength between 0 and 2",
            args.class_balance
        );
    }
    if !(args.lr > 0.0 && args.lr < 1.0) {
        anyhow::bail!(
            "--lr {}: expected a step size between 0 and 1, e.g. 1e-4",
            args.lr
        );
    }
    let student = Model::load(&args.input)?;
    let teacher = Model::load(&args.teacher).context("--teacher")?;
    if student.input_size() != teacher.input_size() {
        anyhow::bail!(
            "{} takes {:?} images, --teacher {} {:?}: they must match",
            args.input.display(),
            student.input_size(),
            args.teacher.display(),
            teacher.input_size()
        );
    }
    if student.card().input != teacher.card().input {
        anyhow::bail!(
            "{} and --teacher {} want their input prepared differently (model cards: {:?} vs {:?}); \
             both must see the same tensor",
            args.input.display(),
            args.teacher.display(),
            student.card().input,
            teacher.card().input
        );
    }
    let (h, w) = student.input_size();
    let mut proto = graph::load(&args.input)?;
    crate::outputs::carry_card(&mut proto, &student)?;
    let teacher_proto = graph::load(&args.teacher)?;
    let logits = logits_tensor(&proto)?;
    let data = Dataset::open(&args.data, (w, h)).context("--data")?;
    let threads = args
        .threads
        .unwrap_or_else(dla_runtime::backend::default_threads)
        .max(1);
    let mut inputs = InputMaker::new(&student.card().input, (h, w));
    let opts = Options {
        epochs: args.epochs as usize,
        learning_rate: args.lr,
        batch: 4,
        class_balance: args.class_balance,
        threads,
    };
    let distillation = distill(
        &mut proto,
        &teacher_proto,
        &logits,
        &data,
        &mut inputs,
        opts,
    )?;
    let fitted = Model::from_bytes(&graph::to_bytes(&proto), &args.output, None)
        .context("the fitted model does not load in dla-runtime")?;
    let (mut held_out_before, mut held) = (None, None);
    if args.eval != "none" {
        let data = Dataset::open(&args.eval, (w, h)).context("--eval")?;
        held_out_before = Some(held_out(&student, &teacher, &data, threads)?);
        held = Some(held_out(&fitted, &teacher, &data, threads)?);
    }
    let report = Report {
        input: args.input.display().to_string(),
        teacher: args.teacher.display().to_string(),
        output: args.output.display().to_string(),
        distillation,
        held_out_before,
        held_out: held,
    };
    graph::set_metadata(
        &mut proto,
        DISTILL_METADATA_KEY,
        serde_json::to_string(&report)?,
    );
    std::fs::write(&args.output, graph::to_bytes(&proto))
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
