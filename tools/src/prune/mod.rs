//! `dla-tools prune`: structured channel pruning of an fp32 ONNX model,
//! without retraining, that makes it really faster on our runtime.
//!
//! Steps: a dependency analysis that ties channels across residual Adds and
//! keeps Concat offsets ([`deps`]) -> a score per channel group
//! ([`importance`]) -> a global ranking taken in `--round-to` chunks down to
//! a ratio or a GMAC target ([`select`]) -> the smaller ONNX ([`apply`]) ->
//! optional least-squares reconstruction of every layer whose input changed
//! ([`reconstruct`]), then the classifier fitted to the unpruned model's
//! class probabilities ([`classifier`]), and every Conv distilled at once
//! to them ([`crate::distill`]) -> a report: size, per-layer widths, agreement and mIoU
//! against the unpruned model on held-out data, and latency before/after
//! measured side by side.

mod apply;
mod classifier;
mod deps;
mod emphasis;
mod importance;
mod reconstruct;
mod select;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::backend::{Backend, TractBackend};
use dla_runtime::{Model, SegmenterOptions};
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use self::deps::{Analysis, ConvKind};
pub use self::importance::Importance;
use self::select::{Constraints, Stop};
use crate::dataset::Dataset;
use crate::eval::evaluate;
use crate::graph;
use crate::probe::{progress, InputMaker};

/// Metadata key of the pruning record in the output model.
pub const PRUNE_METADATA_KEY: &str = "dla_edge.pruning";

/// Arguments of `dla-tools prune`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "How it works:\n  \
    Channels that must go together are found on the ONNX graph itself: residual Adds tie\n  \
    their inputs' channels, Concat (DLA's Root and IDA nodes) keeps each input's offset,\n  \
    BatchNorm, ReLU, MaxPool, Resize and depthwise Conv/ConvTranspose follow their input.\n  \
    The model's input and output channels never change. Groups are ranked globally and\n  \
    removed in chunks of --round-to per layer until --ratio or --target-gmacs is met.\n  \
    --reconstruct then refits every layer whose input changed by least squares so that\n  \
    its outputs match the unpruned model's on the calibration images (no retraining);\n  \
    layers that feed a ReLU are fitted again against their error after it, and a\n  \
    bottleneck's last conv is fitted to the residual sum; then the classifier is fitted to\n  \
    the unpruned model's class probabilities; last, every Conv is fitted at once to those\n  \
    probabilities by gradient descent (--distill, label-free). Rare classes weigh more in the\n  \
    ranking and the refit (--class-balance), since mIoU counts every class alike. With\n  \
    --steps N it prunes and refits N times, ranking what is left on the refitted model.\n\n\
    Examples:\n  \
    dla-tools prune models/dla-tiny-seg.onnx tiny-p30.onnx --target-gmacs 70% --reconstruct\n  \
    dla-tools prune model.onnx small.onnx --ratio 0.3 --importance l1\n  \
    dla-tools prune model.onnx small.onnx --target-gmacs 2.5 --importance activation \\\n    \
    --calib my-frames/ --reconstruct --eval labelled-val/ --report prune.json\n  \
    dla-tools quantize small.onnx small-int8.onnx --calib synth:32   # then quantise it")]
pub struct Args {
    /// The fp32 ONNX model (with a model card).
    input: PathBuf,
    /// Where to write the pruned model.
    output: PathBuf,
    /// Fraction of the prunable channels to remove, in (0, 1).
    #[arg(long, conflicts_with = "target_gmacs", required_unless_present_any = ["target_gmacs", "list"])]
    ratio: Option<f64>,
    /// Remove channels until the model needs at most this much compute:
    /// GMACs at the model's input size (e.g. 2.6), or a share of the
    /// original (e.g. 70%).
    #[arg(long)]
    target_gmacs: Option<String>,
    /// How channels are ranked: activation (the signal each channel carries
    /// into the next layers on the calibration images; the most accurate so
    /// far), l1 / l2 filter norms (no data needed), or redundancy.
    #[arg(long, value_enum, default_value_t = Importance::Activation)]
    importance: Importance,
    /// Calibration images for --importance activation|redundancy and
    /// --reconstruct: a directory of images or synth:N[:SEED] generated scenes.
    #[arg(long, default_value = "synth:32")]
    calib: String,
    /// Refit every layer whose input changed by least squares on the
    /// calibration images, in dependency order, so that its outputs match the
    /// unpruned model's.
    #[arg(long)]
    reconstruct: bool,
    /// How much the data-driven ranking and --reconstruct favour rare classes: each output pixel weighs
    /// frequency^-S of its class in the unpruned model's predictions on the
    /// calibration images (0: every pixel alike, 1: inverse frequency). Rare,
    /// thin classes are where pruning loses its mIoU.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    class_balance: f64,
    /// What --reconstruct fits: `relu` fits each layer that feeds a ReLU a
    /// second time, against its error after the ReLU (negative outputs where
    /// the original is negative cost nothing; one more pass over the
    /// calibration images per stage); `linear` fits raw outputs only (faster).
    #[arg(long, value_enum, default_value_t = RefitKind::Relu, requires = "reconstruct")]
    refit: RefitKind,
    /// What --reconstruct fits the classifier to (the 1x1 Conv whose logits
    /// become the output): `probabilities`, the unpruned model's class
    /// probabilities (class-weighted KL divergence, after the least-squares
    /// fit: what decides each pixel's class is which logit is largest, not
    /// every logit's value; on DLA-tiny at -30 % GMACs: 1.73 mIoU points lost
    /// on 128 held-out scenes instead of 2.10);
    /// `logits`, its raw logits by least squares like every other layer.
    #[arg(long, value_enum, default_value_t = ClassifierFitKind::Probabilities, requires = "reconstruct")]
    classifier_fit: ClassifierFitKind,
    /// After the refits, fit every Conv of the pruned model at once to the
    /// unpruned model's class probabilities, for this many passes over
    /// --distill-data (label-free distillation by gradient descent; 0: off).
    /// Every 8th image is held back, and the result is kept only if their KL
    /// fell. Default: 3 with --reconstruct (on DLA-tiny at -30 % GMACs: 0.76
    /// mIoU points lost on 128 held-out scenes instead of 1.73; about 8
    /// minutes on 2 cores), else 0.
    #[arg(long, value_name = "EPOCHS")]
    distill: Option<usize>,
    /// Images for --distill: a directory or synth:N[:SEED]. It fits every
    /// weight at once, so it needs more images than the layer-wise refits.
    /// Default: synth:256 with --calib's seed when --calib is synthetic,
    /// else --calib.
    #[arg(long)]
    distill_data: Option<String>,
    /// Adam's peak step size for --distill.
    #[arg(long, default_value_t = 1e-4)]
    distill_lr: f64,
    /// Prune in this many steps, each removing its share of the target and
    /// (with --reconstruct) refitting: every step after the first ranks the
    /// channels left on the model the previous step pruned and refitted, so
    /// the ranking sees what the refits made up for. Every refit still
    /// targets the unpruned model. Each step costs one more ranking and
    /// reconstruction (on DLA-tiny at -30 % GMACs: 1 step lost 2.45 mIoU
    /// points, 2 lost 2.10, 3 lost 2.20).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    steps: u32,
    /// Rank by importance per multiply-accumulate saved, which favours the
    /// costly high-resolution layers (faster, but those are often fragile).
    #[arg(long)]
    per_mac: bool,
    /// Nodes whose input and output channels stay as they are (comma-separated; see --list).
    #[arg(long, value_delimiter = ',')]
    keep: Vec<String>,
    /// Widths stay multiples of this (or their original width), so SIMD kernels stay full.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    round_to: u32,
    /// Every layer keeps at least this fraction of its channels. Cutting a
    /// few layers deep costs more accuracy than cutting many a little (on
    /// DLA-tiny at -30 % GMACs: 0.25 lost 2.8 mIoU points, 0.5 lost 2.4, 0.75 lost 3.3).
    #[arg(long, default_value_t = 0.5)]
    min_keep: f64,
    /// Held-out labelled data for the report (mIoU and argmax agreement
    /// against the unpruned model); "none" skips it.
    #[arg(long, default_value = "synth:32:2")]
    eval: String,
    /// Timed inferences of each model (interleaved) for the latency
    /// comparison; 0 skips it.
    #[arg(long, default_value_t = 20)]
    bench_runs: usize,
    /// Threads for calibration, evaluation and the latency comparison (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// List the prunable convolutions and the channel groups, and exit.
    #[arg(long)]
    list: bool,
}

/// What a reconstruction fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefitKind {
    /// Each layer's raw outputs, by least squares.
    Linear,
    /// Layers that feed a ReLU: their outputs after it (two passes).
    Relu,
}

/// What --reconstruct fits the classifier to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierFitKind {
    /// The unpruned model's class probabilities (after the least-squares fit).
    Probabilities,
    /// Its logits, by least squares only.
    Logits,
}

/// One convolution's width before and after.
#[derive(Debug, Clone, Serialize)]
struct LayerWidth {
    name: String,
    op: String,
    depthwise: bool,
    inputs: [usize; 2],
    outputs: [usize; 2],
    /// Output error against the unpruned layer on the calibration samples
    /// (residual / output energy), before and after the refit.
    refit: Option<reconstruct::FitError>,
}

/// Quality on held-out data against the unpruned model.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeldOut {
    data: String,
    images: usize,
    argmax_agreement: f64,
    miou_unpruned: Option<f64>,
    miou_pruned: Option<f64>,
    miou_drop_points: Option<f64>,
}

/// Inference latency of both models, measured interleaved in one run.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    backend: String,
    threads: usize,
    runs: usize,
    median_ms_unpruned: f64,
    median_ms_pruned: f64,
    speedup: f64,
}

/// What `prune` did and measured.
#[derive(Debug, Clone, Serialize)]
struct PruneReport {
    input: String,
    output: String,
    importance: Importance,
    stop: String,
    /// Prune-and-refit steps taken to get there.
    steps: u32,
    round_to: u32,
    min_keep: f64,
    reconstruct: bool,
    /// What the reconstruction fitted (with `reconstruct`).
    refit: Option<RefitKind>,
    /// The classifier's refit to the unpruned model's class probabilities
    /// (with `reconstruct`, unless `--classifier-fit logits`).
    classifier: Option<classifier::ClassifierFit>,
    /// The label-free distillation after the refits (with `--distill`).
    distill: Option<crate::distill::Distillation>,
    /// `--class-balance` strength (0 when no calibration data was used).
    class_balance: f64,
    calibration: Option<String>,
    calibration_images: usize,
    groups: usize,
    groups_removed: usize,
    params_before: u64,
    params_after: u64,
    gmacs_before: f64,
    gmacs_after: f64,
    /// Whether the target was met (false: every layer reached its minimum width first).
    target_reached: bool,
    seconds: f64,
    layers: Vec<LayerWidth>,
    /// What stayed unpruned, and why.
    kept: Vec<String>,
    /// The same channels removed without reconstruction (only with --reconstruct).
    held_out_without_reconstruction: Option<HeldOut>,
    held_out: Option<HeldOut>,
    latency: Option<Latency>,
}

/// Runs `dla-tools prune`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::outputs::check_writable(
        &args.input,
        std::iter::once(&args.output).chain(&args.report),
    )?;
    if let Some(r) = args.ratio {
        if !(r > 0.0 && r < 1.0) {
            bail!("--ratio {r}: expected a fraction of the channels strictly between 0 and 1, e.g. 0.3");
        }
    }
    if !(0.0..=2.0).contains(&args.class_balance) {
        bail!(
            "--class-balance {}: expected a strength between 0 (every pixel alike) and 2; 1 is inverse class frequency",
            args.class_balance
        );
    }
    if !(0.0..=1.0).contains(&args.min_keep) {
        bail!(
            "--min-keep {}: expected a fraction between 0 and 1",
            args.min_keep
        );
    }
    let model = Model::load(&args.input)?;
    for op in [
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "ConvInteger",
    ] {
        if model.summary().op_histogram.contains_key(op) {
            bail!(
                "{}: is quantised (it contains {op}); prune the fp32 model, then quantise the result",
                args.input.display()
            );
        }
    }
    let mut proto = graph::load(&args.input)?;
    crate::outputs::carry_card(&mut proto, &model)?;
    let (h, w) = model.input_size();
    let analysis = deps::analyse(&proto, (h, w), &args.keep)
        .with_context(|| format!("analysing {}", args.input.display()))?;
    if analysis.convs.is_empty() {
        bail!(
            "{}: no Conv has its weights as initializers; pruning needs constant weights \
             (export with the weights inside the model, e.g. torch.onnx.export(..., \
             do_constant_folding=True))",
            args.input.display()
        );
    }
    if args.list {
        print_list(&analysis);
        return Ok(());
    }
    if analysis.groups.is_empty() {
        bail!(
            "{}: no channel can be removed:\n  {}",
            args.input.display(),
            analysis.notes.join("\n  ")
        );
    }
    for note in &analysis.notes {
        log::warn!("{note}");
    }
    let threads = args
        .threads
        .unwrap_or_else(dla_runtime::backend::default_threads)
        .max(1);
    let macs_before = analysis.macs(&vec![false; analysis.groups.len()]);
    let gmacs_before = model.gmacs()?;
    let stop = match (args.ratio, &args.target_gmacs) {
        (Some(r), _) => Stop::Ratio(r),
        (None, Some(t)) => Stop::Macs(target_macs(t, gmacs_before, macs_before)?),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let needs_data = args.reconstruct
        || matches!(
            args.importance,
            Importance::Activation | Importance::Redundancy
        );
    let opts = reconstruct::Options {
        samples_per_image: 1024,
        ridge: 1e-3,
        threads,
        memory_bytes: 2 << 30,
        relu_aware: args.refit == RefitKind::Relu,
    };
    let calib = needs_data
        .then(|| Dataset::open(&args.calib, (w, h)).context("--calib"))
        .transpose()?;
    let mut inputs = InputMaker::new(&model.card().input, (h, w));
    let emphasis = match &calib {
        Some(data) if args.class_balance > 0.0 => Some(
            emphasis::Emphasis::measure(&proto, data, &mut inputs, threads, args.class_balance)
                .context("weighing the calibration pixels by class (--class-balance 0 skips it)")?,
        ),
        _ => None,
    };

    let constraints = Constraints {
        per_mac: args.per_mac,
        round_to: args.round_to as usize,
        min_keep: args.min_keep,
    };
    let data = calib.as_ref().map(|c| (c, emphasis.as_ref()));
    let steps = args.steps.max(1);
    let mut selection = None;
    let mut refits = HashMap::new();
    let mut fit_errors = HashMap::new();
    for step in 1..=steps {
        let removed = selection.as_ref().map_or_else(
            || vec![false; analysis.groups.len()],
            |s: &select::Selection| s.removed.clone(),
        );
        let scores = if step == 1 {
            score(args.importance, &proto, &analysis, data, &mut inputs, opts)?
        } else {
            // Rank what is left on the model as the last step left it.
            let current = apply::apply(&proto, &analysis, &removed, &refits)?;
            let now = deps::analyse(&current, (h, w), &args.keep)
                .context("analysing the model after the previous step")?;
            let scores = score(args.importance, &current, &now, data, &mut inputs, opts)?;
            carry_scores(&analysis, &removed, &now, &scores)
        };
        let stop = stop.share(step, steps, macs_before);
        if steps > 1 {
            log::info!("step {step}/{steps}: pruning to {}", describe(stop));
        }
        let chosen = select::select(&analysis, &scores, stop, constraints);
        if args.reconstruct {
            (refits, fit_errors) = reconstruct::reconstruct(
                &proto,
                &analysis,
                &chosen.removed,
                (calib.as_ref().expect("opened above"), emphasis.as_ref()),
                &mut inputs,
                opts,
            )?;
        }
        selection = Some(chosen);
    }
    let selection = selection.expect("at least one step");
    let mut classifier_fit = None;
    if args.reconstruct && args.classifier_fit == ClassifierFitKind::Probabilities {
        match classifier::find(&proto, &analysis) {
            Some(c) => {
                let fit = classifier::refit(
                    &proto,
                    &analysis,
                    c,
                    &selection.removed,
                    &mut refits,
                    (
                        calib.as_ref().expect("opened above"),
                        &mut inputs,
                        emphasis.as_ref(),
                    ),
                    threads,
                )
                .with_context(|| {
                    format!(
                        "refitting {} to class probabilities",
                        analysis.convs[c].name
                    )
                })?;
                classifier_fit = Some(fit);
            }
            None => log::warn!(
                "no 1x1 classifier Conv feeds the output directly (or through up-sampling): \
                 the classifier keeps its least-squares fit"
            ),
        }
    }
    if !selection.reached {
        log::warn!(
            "every layer reached its minimum width (--min-keep {}) before the target; \
             stopping at {:.3} GMACs",
            args.min_keep,
            selection.macs as f64 / 1e9
        );
    }
    let removed = &selection.removed;
    let mut out = apply::apply(&proto, &analysis, removed, &refits)?;
    let mut distillation = None;
    let epochs = args.distill.unwrap_or(if args.reconstruct { 3 } else { 0 });
    if epochs > 0 {
        let spec = distill_data(args);
        let data = Dataset::open(&spec, (w, h)).context("--distill-data")?;
        let logits = crate::distill::logits_tensor(&proto)?;
        let opts = crate::distill::Options {
            epochs,
            learning_rate: args.distill_lr,
            batch: 4,
            class_balance: args.class_balance,
            threads,
        };
        distillation = Some(
            crate::distill::distill(&mut out, &proto, &logits, &data, &mut inputs, opts)
                .context("distilling the pruned model (--distill 0 skips it)")?,
        );
    }
    let pruned = Model::from_bytes(&graph::to_bytes(&out), &args.output, None)
        .context("the pruned model does not load in dla-runtime")?;

    let mut report = PruneReport {
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        importance: args.importance,
        stop: describe(stop),
        steps,
        round_to: args.round_to,
        min_keep: args.min_keep,
        reconstruct: args.reconstruct,
        refit: args.reconstruct.then_some(args.refit),
        classifier: classifier_fit,
        distill: distillation,
        class_balance: if emphasis.is_some() {
            args.class_balance
        } else {
            0.0
        },
        calibration: calib.as_ref().map(|c| c.spec().to_string()),
        calibration_images: calib.as_ref().map_or(0, Dataset::len),
        groups: analysis.groups.len(),
        groups_removed: removed.iter().filter(|&&r| r).count(),
        params_before: model.summary().params,
        params_after: pruned.summary().params,
        gmacs_before,
        gmacs_after: pruned.gmacs()?,
        target_reached: selection.reached,
        seconds: 0.0,
        layers: widths(&analysis, removed, &fit_errors),
        kept: analysis.notes.clone(),
        held_out_without_reconstruction: None,
        held_out: None,
        latency: None,
    };
    if args.eval != "none" {
        let data = Dataset::open(&args.eval, (w, h)).context("--eval")?;
        if args.reconstruct {
            let plain = apply::apply(&proto, &analysis, removed, &HashMap::new())?;
            let plain = Model::from_bytes(&graph::to_bytes(&plain), &args.output, None)?;
            report.held_out_without_reconstruction =
                Some(held_out(&plain, &model, &data, threads)?);
        }
        report.held_out = Some(held_out(&pruned, &model, &data, threads)?);
    }
    if args.bench_runs > 0 {
        report.latency = Some(latency(&model, &pruned, args.bench_runs, threads)?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    update_card(&mut out, &model, &report)?;
    graph::set_metadata(
        &mut out,
        PRUNE_METADATA_KEY,
        serde_json::to_string(&report)?,
    );
    std::fs::write(&args.output, graph::to_bytes(&out))
        .with_context(|| format!("writing {}", args.output.display()))?;
    print_report(&report);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `--distill-data`, or its default: 256 synthetic scenes with `--calib`'s
/// seed, or `--calib` itself when it is a directory.
fn distill_data(args: &Args) -> String {
    if let Some(d) = &args.distill_data {
        return d.clone();
    }
    match args.calib.strip_prefix("synth:").map(|r| r.split_once(':')) {
        Some(Some((_, seed))) => format!("synth:256:{seed}"),
        Some(None) => "synth:256".to_string(),
        None => args.calib.clone(),
    }
}

/// The scores `importance` gives `a`'s groups on `model`.
fn score(
    importance: Importance,
    model: &ModelProto,
    a: &Analysis,
    data: Option<(&Dataset, Option<&emphasis::Emphasis>)>,
    inputs: &mut InputMaker,
    opts: reconstruct::Options,
) -> anyhow::Result<Vec<f64>> {
    let data = || data.context("this importance needs calibration data");
    match importance {
        Importance::L1 => importance::magnitude(model, a, 1),
        Importance::L2 => importance::magnitude(model, a, 2),
        Importance::Activation => importance::activation(model, a, data()?, inputs, opts.threads),
        Importance::Redundancy => importance::redundancy(model, a, data()?, inputs, opts),
    }
}

/// Scores of the original analysis `a`'s groups, from `scores` of `now`'s
/// groups (the analysis of the model with `removed` gone, whose channels
/// keep their order): removed groups come first (negative infinity), so a
/// later step's selection starts with what earlier steps took.
fn carry_scores(a: &Analysis, removed: &[bool], now: &Analysis, scores: &[f64]) -> Vec<f64> {
    let by_name: HashMap<&str, usize> = a
        .convs
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // A group the new analysis cannot score stays.
    let mut out = vec![f64::INFINITY; a.groups.len()];
    for (g, group) in now.groups.iter().enumerate() {
        let Some(&(c, channel)) = group.members.first() else {
            continue;
        };
        let Some(&original) = by_name.get(now.convs[c].name.as_str()) else {
            continue;
        };
        let (_, keep_out) = apply::conv_keep(a, original, removed);
        let group = keep_out.get(channel).and_then(|&o| {
            a.tensors
                .get(&a.convs[original].output)
                .and_then(|t| t.get(o).copied().flatten())
        });
        if let Some(group) = group {
            out[group] = scores[g];
        }
    }
    for (s, &r) in out.iter_mut().zip(removed) {
        if r {
            *s = f64::NEG_INFINITY;
        }
    }
    out
}

/// How the report and the log name a stop condition.
fn describe(stop: Stop) -> String {
    match stop {
        Stop::Ratio(r) => format!("ratio {r}"),
        Stop::Macs(m) => format!("target {:.3} GMACs", m as f64 / 1e9),
    }
}

/// `--target-gmacs`: absolute GMACs, or a share of the original with `%`.
/// The analysis counts only convolutions; the target is scaled onto its count.
fn target_macs(spec: &str, gmacs: f64, conv_macs: u64) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "--target-gmacs {spec:?}: expected GMACs below the model's {gmacs:.3} (e.g. {:.2}) or a share such as 70%",
            gmacs * 0.7
        )
    };
    let share = match spec.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => spec.trim().parse::<f64>().map_err(|_| bad())? / gmacs,
    };
    if !(share > 0.0 && share < 1.0) {
        return Err(bad());
    }
    Ok((conv_macs as f64 * share) as u64)
}

fn widths(
    a: &Analysis,
    removed: &[bool],
    fit_errors: &HashMap<usize, reconstruct::FitError>,
) -> Vec<LayerWidth> {
    a.convs
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let (cin, cout) = c.channels();
            let (keep_in, keep_out) = apply::conv_keep(a, ci, removed);
            LayerWidth {
                name: c.name.clone(),
                op: format!("{:?}", c.op),
                depthwise: c.kind == ConvKind::Depthwise,
                inputs: [cin, keep_in.len()],
                outputs: [cout, keep_out.len()],
                refit: fit_errors.get(&ci).copied(),
            }
        })
        .collect()
}

/// `pruned`'s arg-max agreement with `reference` and both models' mIoU on `data`.
pub(crate) fn held_out(
    pruned: &Model,
    reference: &Model,
    data: &Dataset,
    threads: usize,
) -> anyhow::Result<HeldOut> {
    let options = SegmenterOptions {
        threads,
        ..Default::default()
    };
    let r = evaluate(pruned, Some(reference), data, options, true)?;
    Ok(HeldOut {
        data: data.spec().to_string(),
        images: r.images,
        argmax_agreement: r.agreement.as_ref().map_or(0.0, |a| a.ratio()),
        miou_unpruned: r.reference_quality.as_ref().and_then(|q| q.miou),
        miou_pruned: r.quality.as_ref().and_then(|q| q.miou),
        miou_drop_points: r.miou_drop_points(),
    })
}

/// Median inference time of both models on tract, runs interleaved so both
/// see the same machine load.
fn latency(before: &Model, after: &Model, runs: usize, threads: usize) -> anyhow::Result<Latency> {
    let mut a = TractBackend::new(before, threads)?;
    let mut b = TractBackend::new(after, threads)?;
    for backend in [&mut a, &mut b] {
        backend.input_mut().fill(0.5);
        backend.run()?;
    }
    let (mut ta, mut tb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let bar = progress(runs, "latency");
    for _ in 0..runs {
        for (backend, times) in [(&mut a, &mut ta), (&mut b, &mut tb)] {
            let t = Instant::now();
            backend.run()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut ta), median(&mut tb));
    Ok(Latency {
        backend: "tract".into(),
        threads,
        runs,
        median_ms_unpruned: ma,
        median_ms_pruned: mb,
        speedup: ma / mb,
    })
}

/// Names the card `-pruned` and keeps the unpruned model's metrics apart.
fn update_card(out: &mut ModelProto, model: &Model, r: &PruneReport) -> anyhow::Result<()> {
    let mut card = model.card().clone();
    if !card.name.contains("-pruned") {
        card.name.push_str("-pruned");
    }
    card.params = Some(r.params_after);
    card.gmac = Some(r.gmacs_after);
    card.metrics = serde_json::json!({
        "before_pruning": card.metrics,
        "pruning": {
            "gmacs": [r.gmacs_before, r.gmacs_after],
            "held_out": r.held_out,
        },
    });
    graph::set_metadata(
        out,
        dla_runtime::model::CARD_METADATA_KEY,
        serde_json::to_string(&card)?,
    );
    Ok(())
}

fn print_list(a: &Analysis) {
    println!("prunable convolutions (name, op, in -> out channels, coupled component):");
    let mut component_of = vec![None; a.convs.len()];
    for (ci, comp) in a.components.iter().enumerate() {
        for &c in &comp.convs {
            component_of[c] = Some(ci);
        }
    }
    for (ci, c) in a.convs.iter().enumerate() {
        let (cin, cout) = c.channels();
        println!(
            "  {:<40} {:<13} {:>4} -> {:<4} {}",
            c.name,
            if c.kind == ConvKind::Depthwise {
                format!("{:?} dw", c.op)
            } else {
                format!("{:?}", c.op)
            },
            cin,
            cout,
            component_of[ci].map_or_else(|| "-".into(), |k| format!("c{k}"))
        );
    }
    println!(
        "{} prunable channel groups in {} components",
        a.groups.len(),
        a.components.len()
    );
    for note in &a.notes {
        println!("kept: {note}");
    }
}

fn print_report(r: &PruneReport) {
    println!("{} -> {} ({})", r.input, r.output, r.stop);
    println!(
        "importance {:?}, round to {}, min keep {}, reconstruction {}, class balance {}{}",
        r.importance,
        r.round_to,
        r.min_keep,
        match r.refit {
            Some(RefitKind::Relu) => "on (after ReLU)",
            Some(RefitKind::Linear) => "on (linear)",
            None => "off",
        },
        r.class_balance,
        r.calibration.as_ref().map_or_else(String::new, |c| format!(
            ", calibration {c} ({} images)",
            r.calibration_images
        ))
    );
    println!(
        "channel groups removed {} of {}{}",
        r.groups_removed,
        r.groups,
        if r.target_reached {
            ""
        } else {
            " (target not reached: every layer at its minimum width)"
        }
    );
    println!(
        "params {:.3} M -> {:.3} M ({:+.1} %)",
        r.params_before as f64 / 1e6,
        r.params_after as f64 / 1e6,
        pct_change(r.params_before as f64, r.params_after as f64)
    );
    println!(
        "compute {:.3} -> {:.3} GMACs ({:+.1} %)",
        r.gmacs_before,
        r.gmacs_after,
        pct_change(r.gmacs_before, r.gmacs_after)
    );
    println!("layer widths (in, out channels; refitted layers: output error vs unpruned, before -> after the refit):");
    for l in r
        .layers
        .iter()
        .filter(|l| l.inputs[0] != l.inputs[1] || l.outputs[0] != l.outputs[1])
    {
        println!(
            "  {:<40} {:>4} -> {:<4} {:>4} -> {:<4}{}",
            l.name,
            l.inputs[0],
            l.inputs[1],
            l.outputs[0],
            l.outputs[1],
            l.refit.map_or_else(String::new, |e| format!(
                "  error {:.4} -> {:.4}{}",
                e.before,
                e.after,
                if e.after_relu { " after ReLU" } else { "" }
            ))
        );
    }
    let unchanged = r
        .layers
        .iter()
        .filter(|l| l.inputs[0] == l.inputs[1] && l.outputs[0] == l.outputs[1])
        .count();
    println!("  ({unchanged} layers unchanged)");
    if let Some(c) = &r.classifier {
        println!(
            "classifier {} then fitted to class probabilities (from its least-squares fit above) \
             on {} positions: KL {:.4} -> {:.4}, arg-max agreement {:.2} % -> {:.2} % ({:.1} s)",
            c.layer,
            c.positions,
            c.kl_before,
            c.kl_after,
            c.agreement_before * 100.0,
            c.agreement_after * 100.0,
            c.seconds
        );
    }
    if let Some(d) = &r.distill {
        print!(
            "distilled: every Conv fitted to class probabilities at {} on {} images ({} epochs, {} steps, {:.0} s): \
             training KL {}",
            d.logits,
            d.train_images,
            d.epochs,
            d.steps,
            d.seconds,
            d.train_kl.iter().map(|k| format!("{k:.4}")).collect::<Vec<_>>().join(" -> ")
        );
        if let (Some(b), Some(a)) = (d.validation_kl_before, d.validation_kl_after) {
            print!(
                "; {} held-back images: KL {b:.4} -> {a:.4}",
                d.validation_images
            );
        }
        println!(
            "{}",
            if d.kept {
                ""
            } else {
                " (not kept: the held-back KL did not fall, or their agreement did)"
            }
        );
    }
    for k in &r.kept {
        println!("kept: {k}");
    }
    let show = |label: &str, h: &HeldOut| {
        print!(
            "held-out {} ({} images){label}: argmax agreement {:.3} %",
            h.data,
            h.images,
            h.argmax_agreement * 100.0
        );
        if let (Some(a), Some(b), Some(d)) = (h.miou_unpruned, h.miou_pruned, h.miou_drop_points) {
            print!(
                ", mIoU {:.2} % -> {:.2} % ({:+.2} points)",
                a * 100.0,
                b * 100.0,
                -d
            );
        }
        println!();
    };
    if let Some(h) = &r.held_out_without_reconstruction {
        show(" without reconstruction", h);
    }
    if let Some(h) = &r.held_out {
        show("", h);
    }
    if let Some(l) = &r.latency {
        println!(
            "latency on {} ({} thread(s), median of {} interleaved runs): {:.2} ms -> {:.2} ms ({:.2}x faster)",
            l.backend, l.threads, l.runs, l.median_ms_unpruned, l.median_ms_pruned, l.speedup
        );
    }
    println!("{:.1} s", r.seconds);
}

fn pct_change(before: f64, after: f64) -> f64 {
    100.0 * (after - before) / before.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(conv name, bias)` of a group's first member: a pruned model keeps
    /// both as they were for every channel it kept (without refits).
    fn identity(model: &ModelProto, a: &Analysis, g: usize) -> (String, f32) {
        let (c, o) = a.groups[g].members[0];
        let conv = &a.convs[c];
        let inits = graph::initializers(graph::graph(model));
        let bias = conv.bias.as_ref().expect("DLA-tiny's convs have biases");
        let (_, values) = graph::tensor_f32(inits[bias.as_str()]).unwrap();
        (conv.name.clone(), values[o])
    }

    #[test]
    fn a_later_step_scores_each_original_group_from_its_own_channel() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx");
        let proto = graph::load(&path).unwrap();
        let size = Model::load(&path).unwrap().input_size();
        let a = deps::analyse(&proto, size, &[]).unwrap();
        let removed: Vec<bool> = (0..a.groups.len()).map(|g| g % 3 == 0).collect();
        let pruned = apply::apply(&proto, &a, &removed, &HashMap::new()).unwrap();
        let now = deps::analyse(&pruned, size, &[]).unwrap();
        assert_eq!(
            now.groups.len(),
            removed.iter().filter(|&&r| !r).count(),
            "the pruned model has one group per kept group"
        );
        // Score each new group by its own index, then check where it landed.
        let scores: Vec<f64> = (0..now.groups.len()).map(|g| g as f64).collect();
        let carried = carry_scores(&a, &removed, &now, &scores);
        for (g, &score) in carried.iter().enumerate() {
            if removed[g] {
                assert_eq!(score, f64::NEG_INFINITY, "group {g} was removed");
                continue;
            }
            assert!(score.is_finite(), "group {g} got no score");
            assert_eq!(
                identity(&proto, &a, g),
                identity(&pruned, &now, score as usize),
                "group {g}"
            );
        }
    }
}
