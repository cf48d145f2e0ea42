//! `dla-tools quantize`: post-training int8 quantisation of an fp32 ONNX
//! segmentation model, calibrated on our own runtime, written in the form the
//! chosen backend runs fast (see [`plan`]), with a report of what it cost.
//!
//! Steps: optional cross-layer equalisation ([`equalize`]) -> calibration
//! statistics from tract ([`calibrate`], [`observer`]) -> a plan of scales
//! and int8 weights with bias correction ([`plan`]) -> optional automatic
//! mixed precision under an accuracy budget -> the ONNX file, its metadata
//! and a report (size, per-layer SQNR, agreement and mIoU on held-out data).

mod calibrate;
mod equalize;
mod observer;
mod plan;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgAction, Args as ClapArgs};
use dla_runtime::metrics::{sqnr_db, Agreement};
use dla_runtime::{Model, SegmenterOptions};
use serde::Serialize;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use self::calibrate::collect_stats;
use self::observer::Method;
use self::plan::{
    conv_sites, emit_integer, emit_qdq, ConvSite, Plan, PlanOptions, QParams, Target,
};
use crate::dataset::Dataset;
use crate::eval::evaluate;
use crate::graph;
use crate::probe::{progress, slice, InputMaker, Probe};

/// Metadata key of the quantisation record in the output model.
pub const QUANT_METADATA_KEY: &str = "dla_edge.quantization";

/// Arguments of `dla-tools quantize`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "What each target gets:\n  \
    tract     QLinearConv with ReLU and MaxPool folded, u8 activations, per-channel s8 weights\n            \
              (scalar zero point 0), int32 biases; Q/DQ only around Add, Concat, ConvTranspose.\n  \
    ort       QDQ: QuantizeLinear/DequantizeLinear around the same tensors, u8 activations,\n            \
              per-channel s8 weights and int32 biases (ONNX Runtime fuses them into QLinearConv).\n  \
    tensorrt  QDQ with symmetric s8 activations (zero point 0) and float biases.\n\n\
    Examples:\n  \
    dla-tools quantize models/dla-tiny-seg.onnx dla-tiny-int8.onnx --calib synth:32\n  \
    dla-tools quantize model.onnx model-int8.onnx --calib my-frames/ --eval val/ --method entropy\n  \
    dla-tools quantize model.onnx model-qdq.onnx --calib synth:32 --target ort --accuracy-budget 0.3")]
pub struct Args {
    /// The fp32 ONNX model (with a model card).
    input: PathBuf,
    /// Where to write the int8 model.
    output: PathBuf,
    /// Calibration images: a directory (any images; labelled layouts too) or
    /// synth:N[:SEED] generated scenes. 16-64 representative frames are enough.
    #[arg(long, default_value = "synth:32")]
    calib: String,
    /// Held-out labelled data for the report (mIoU, agreement against fp32).
    /// Default: synthetic scenes from the held-out seed; "none" skips it.
    #[arg(long, default_value = "synth:16:2")]
    eval: String,
    /// How activation ranges are chosen: minmax, percentile[:P] (default P 99.999) or entropy.
    #[arg(long, default_value = "minmax")]
    method: Method,
    /// One weight scale per output channel (true) or one per layer (false).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    per_channel: bool,
    /// Weight precision: 8 (`[-127, 127]`) or 7 (`[-63, 63]`). With 7-bit
    /// weights our tract backend uses a faster exact u8 x s8 kernel on x86
    /// AVX2 (no pair of products can overflow 16 bits); 8 keeps more accuracy.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    weight_bits: u8,
    /// The backend the model is for; decides the ONNX form (see below).
    #[arg(long, value_enum, default_value_t = Target::Tract)]
    target: Target,
    /// Conv nodes to keep in float, by name (comma-separated; see `--list`).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Keep the most sensitive layers in float until the mIoU lost on the
    /// calibration data is at most this many points (agreement with fp32
    /// stands in for mIoU when the calibration data has no labels).
    #[arg(long)]
    accuracy_budget: Option<f64>,
    /// Fold the expected error of the int8 weights into each bias.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    bias_correction: bool,
    /// Cross-layer equalisation of Conv-ReLU-Conv pairs before calibration.
    #[arg(long, default_value_t = false, action = ArgAction::Set)]
    equalize: bool,
    /// Calibration images on which the per-layer SQNR is measured (0 skips it;
    /// --accuracy-budget needs it to rank layers).
    #[arg(long, default_value_t = 8)]
    sqnr_images: usize,
    /// Threads for calibration and evaluation (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// List the Conv nodes (names for --exclude) and exit.
    #[arg(long)]
    list: bool,
}

/// Per-layer quantisation error, measured on calibration images.
#[derive(Debug, Clone, Serialize)]
struct LayerReport {
    name: String,
    /// SQNR of the layer's int8 output against fp32 (all error so far), dB.
    sqnr_db: f64,
    /// SQNR lost in this layer: input SQNR minus output SQNR, dB.
    own_loss_db: f64,
    float: bool,
}

/// What `quantize` measured and wrote.
#[derive(Debug, Clone, Serialize)]
struct QuantReport {
    input: String,
    output: String,
    target: Target,
    method: String,
    per_channel: bool,
    weight_bits: u8,
    bias_correction: bool,
    equalize: bool,
    calibration: String,
    calibration_images: usize,
    float_layers: Vec<String>,
    quantized_layers: usize,
    bytes_before: u64,
    /// Size of the written file (unknown inside the file's own metadata).
    bytes_after: Option<u64>,
    layers: Vec<LayerReport>,
    held_out: Option<HeldOut>,
}

#[derive(Debug, Clone, Serialize)]
struct HeldOut {
    data: String,
    images: usize,
    argmax_agreement: f64,
    logit_sqnr_db: f64,
    miou_fp32: Option<f64>,
    miou_int8: Option<f64>,
    miou_drop_points: Option<f64>,
}

const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "ConvInteger",
    "MatMulInteger",
    "QLinearMatMul",
];

/// Runs `dla-tools quantize`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    // Say so now, not after minutes of calibration.
    crate::outputs::check_writable(
        &args.input,
        std::iter::once(&args.output).chain(&args.report),
    )?;
    let model = Model::load(&args.input)?;
    let found: Vec<&str> = QUANTIZED_OPS
        .iter()
        .copied()
        .filter(|op| model.summary().op_histogram.contains_key(*op))
        .collect();
    if !found.is_empty() {
        bail!(
            "{}: is already quantised (it contains {}); quantise the fp32 original instead",
            args.input.display(),
            found.join(", ")
        );
    }
    let mut proto = graph::load(&args.input)?;
    crate::outputs::carry_card(&mut proto, &model)?;
    let sites = conv_sites(graph::graph(&proto));
    if args.list {
        for s in &sites {
            println!("{}", s.name);
        }
        return Ok(());
    }
    if sites.is_empty() {
        bail!(
            "{}: has no Conv with constant weights; nothing to quantise",
            args.input.display()
        );
    }
    let names: HashSet<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    if let Some(bad) = args.exclude.iter().find(|e| !names.contains(e.as_str())) {
        bail!(
            "--exclude {bad:?}: no Conv node has that name (`dla-tools quantize {} x --list` lists them)",
            args.input.display()
        );
    }
    let threads = args
        .threads
        .unwrap_or_else(dla_runtime::backend::default_threads)
        .max(1);
    let (h, w) = model.input_size();
    let calib = Dataset::open(&args.calib, (w, h)).context("--calib")?;
    let mut inputs = InputMaker::new(&model.card().input, (h, w));

    if args.equalize {
        let pairs = equalize::equalize(&mut proto)?;
        log::info!("cross-layer equalisation: {pairs} Conv-ReLU-Conv pairs rescaled");
    }
    let observed = Plan::tensors_to_observe(&sites);
    let probe = Probe::new(&proto, &observed, (h, w), threads)?;
    let stats = collect_stats(
        &probe,
        &observed,
        &calib,
        &mut inputs,
        args.method.needs_histogram(),
    )?;
    drop(probe);
    let options = PlanOptions {
        method: args.method,
        per_channel: args.per_channel,
        weight_max: (1i32 << (args.weight_bits - 1)) - 1,
        signed: args.target.signed_activations(),
        bias_correction: args.bias_correction,
    };
    let mut float_sites: HashSet<String> = args.exclude.iter().cloned().collect();
    let mut plan = Plan::build(&proto, sites.clone(), float_sites.clone(), &stats, options)?;
    if args.accuracy_budget.is_some() && args.sqnr_images == 0 {
        bail!("--accuracy-budget ranks layers by their SQNR: --sqnr-images must be at least 1");
    }
    let sample = calib.len().min(args.sqnr_images);
    let mut layers = if sample > 0 {
        layer_sqnr(&proto, &plan, &calib, sample, &mut inputs, threads)?
    } else {
        Vec::new()
    };

    if let Some(budget) = args.accuracy_budget {
        if budget < 0.0 {
            bail!("--accuracy-budget must be at least 0 (points of mIoU)");
        }
        let mut ranked: Vec<&LayerReport> = layers.iter().filter(|l| !l.float).collect();
        ranked.sort_by(|a, b| b.own_loss_db.total_cmp(&a.own_loss_db));
        let order: Vec<String> = ranked.iter().map(|l| l.name.clone()).collect();
        let reference = model.clone();
        let max_float = (sites.len() / 4).max(1);
        for k in 0..=max_float {
            if k > 0 {
                float_sites.insert(order[k - 1].clone());
                plan = Plan::build(&proto, sites.clone(), float_sites.clone(), &stats, options)?;
            }
            let candidate = emit(&proto, &plan, args.target)?;
            let loss = calibration_loss(&candidate, &reference, &args.output, &calib, threads)?;
            log::info!(
                "mixed precision: {} float layer(s): {loss:.3} points lost on the calibration data",
                float_sites.len()
            );
            if loss <= budget {
                break;
            }
            if k == max_float {
                log::warn!(
                    "accuracy budget {budget} not met with {} layers in float ({loss:.3} points lost); keeping that",
                    float_sites.len()
                );
            }
        }
        if float_sites.len() > args.exclude.len() {
            layers = layer_sqnr(&proto, &plan, &calib, sample, &mut inputs, threads)?;
        }
    }

    let mut out = emit(&proto, &plan, args.target)?;
    let bytes_before = std::fs::metadata(&args.input)
        .map(|m| m.len())
        .unwrap_or_default();
    let mut report = QuantReport {
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        target: args.target,
        method: args.method.label(),
        per_channel: args.per_channel,
        weight_bits: args.weight_bits,
        bias_correction: args.bias_correction,
        equalize: args.equalize,
        calibration: args.calib.clone(),
        calibration_images: calib.len(),
        float_layers: plan.float_sites.iter().cloned().collect(),
        quantized_layers: plan.quantized_sites().count(),
        bytes_before,
        bytes_after: None,
        layers,
        held_out: None,
    };
    report.float_layers.sort();
    update_card(&mut out, &model)?;
    if args.eval != "none" {
        report.held_out = Some(held_out(&out, &model, &args.output, &args.eval, threads)?);
    }
    graph::set_metadata(
        &mut out,
        QUANT_METADATA_KEY,
        serde_json::to_string(&report)?,
    );
    let bytes = graph::to_bytes(&out);
    report.bytes_after = Some(bytes.len() as u64);
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    print_report(&report);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn emit(proto: &ModelProto, plan: &Plan, target: Target) -> anyhow::Result<ModelProto> {
    if target.qdq() {
        emit_qdq(proto, plan, target)
    } else {
        emit_integer(proto, plan)
    }
}

/// Renames the card (`-int8`) so reports and viewers tell the models apart.
fn update_card(out: &mut ModelProto, model: &Model) -> anyhow::Result<()> {
    let mut card = model.card().clone();
    if !card.name.ends_with("-int8") {
        card.name.push_str("-int8");
    }
    graph::set_metadata(
        out,
        dla_runtime::model::CARD_METADATA_KEY,
        serde_json::to_string(&card)?,
    );
    Ok(())
}

fn dequantized(t: &TValue, p: QParams) -> anyhow::Result<Vec<f32>> {
    let zp = p.zero_point as f32;
    Ok(if p.signed {
        slice::<i8>(t)?
            .iter()
            .map(|&q| (f32::from(q) - zp) * p.scale)
            .collect()
    } else {
        slice::<u8>(t)?
            .iter()
            .map(|&q| (f32::from(q) - zp) * p.scale)
            .collect()
    })
}

/// SQNR of every quantised layer's output (and input) on `n` calibration
/// images, running the integer form on tract beside the fp32 graph.
fn layer_sqnr(
    proto: &ModelProto,
    plan: &Plan,
    data: &Dataset,
    n: usize,
    inputs: &mut InputMaker,
    threads: usize,
) -> anyhow::Result<Vec<LayerReport>> {
    let sites: Vec<&ConvSite> = plan.quantized_sites().collect();
    let mut tensors: Vec<String> = Vec::new();
    for s in &sites {
        for t in [&s.input, &s.output] {
            if !tensors.contains(t) {
                tensors.push(t.clone());
            }
        }
    }
    let (h, w) = inputs.size();
    let float_probe = Probe::new(proto, &tensors, (h, w), threads)?;
    let int_model = emit_integer(proto, plan)?;
    let q_names: Vec<String> = tensors.iter().map(|t| format!("{t}_quantized")).collect();
    let int_probe =
        Probe::new(&int_model, &q_names, (h, w), threads).context("planning the integer model")?;
    let mut sums: HashMap<&str, (f64, f64)> = HashMap::new();
    let bar = progress(n, "layer SQNR");
    for i in 0..n {
        let x = inputs.tensor(data, i)?;
        let f = float_probe.run(x.clone())?;
        let q = int_probe.run(x)?;
        for ((t, fv), qv) in tensors.iter().zip(&f).zip(&q) {
            let reference = slice::<f32>(fv)?;
            let approx = dequantized(qv, plan.params[t])?;
            let e = sums.entry(t.as_str()).or_default();
            for (&r, &a) in reference.iter().zip(&approx) {
                e.0 += f64::from(r) * f64::from(r);
                e.1 += f64::from(r - a) * f64::from(r - a);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let db = |t: &str| sums.get(t).map_or(f64::INFINITY, |&(s, e)| sqnr_db(s, e));
    Ok(plan
        .sites
        .iter()
        .map(|s| {
            let float = plan.float_sites.contains(&s.name);
            let (out, inp) = if float {
                (f64::INFINITY, f64::INFINITY)
            } else {
                (db(&s.output), db(&s.input))
            };
            LayerReport {
                name: s.name.clone(),
                sqnr_db: out,
                own_loss_db: if out.is_finite() && inp.is_finite() {
                    inp - out
                } else if out.is_finite() {
                    60.0 - out
                } else {
                    0.0
                },
                float,
            }
        })
        .collect())
}

fn model_from(proto: &ModelProto, origin: &Path) -> anyhow::Result<Model> {
    Model::from_bytes(&graph::to_bytes(proto), origin, None)
        .context("the quantised model does not load in dla-runtime")
}

/// mIoU points lost against fp32 on the calibration data (labels), or
/// `100 * (1 - argmax agreement)` when it has none.
fn calibration_loss(
    candidate: &ModelProto,
    reference: &Model,
    origin: &Path,
    data: &Dataset,
    threads: usize,
) -> anyhow::Result<f64> {
    let model = model_from(candidate, origin)?;
    let options = SegmenterOptions {
        threads,
        ..Default::default()
    };
    let r = evaluate(&model, Some(reference), data, options, true)?;
    Ok(match r.miou_drop_points() {
        Some(d) => d.max(0.0),
        None => 100.0 * (1.0 - r.agreement.as_ref().map_or(0.0, Agreement::ratio)),
    })
}

fn held_out(
    out: &ModelProto,
    reference: &Model,
    output: &Path,
    spec: &str,
    threads: usize,
) -> anyhow::Result<HeldOut> {
    let model = model_from(out, output)?;
    let (h, w) = reference.input_size();
    let data = Dataset::open(spec, (w, h)).context("--eval")?;
    let options = SegmenterOptions {
        threads,
        ..Default::default()
    };
    let r = evaluate(&model, Some(reference), &data, options, true)?;
    let a = r.agreement.clone().unwrap_or_default();
    Ok(HeldOut {
        data: spec.to_string(),
        images: r.images,
        argmax_agreement: a.ratio(),
        logit_sqnr_db: a.sqnr_db(),
        miou_fp32: r.reference_quality.as_ref().and_then(|q| q.miou),
        miou_int8: r.quality.as_ref().and_then(|q| q.miou),
        miou_drop_points: r.miou_drop_points(),
    })
}

fn print_report(r: &QuantReport) {
    println!("{} -> {} (target {:?})", r.input, r.output, r.target);
    println!(
        "method {}, {} weights, bias correction {}, equalisation {}, calibration {} ({} images)",
        r.method,
        if r.per_channel {
            "per-channel"
        } else {
            "per-tensor"
        },
        if r.bias_correction { "on" } else { "off" },
        if r.equalize { "on" } else { "off" },
        r.calibration,
        r.calibration_images
    );
    println!(
        "size {:.2} MB -> {:.2} MB ({:.2}x smaller)",
        r.bytes_before as f64 / 1e6,
        r.bytes_after.unwrap_or_default() as f64 / 1e6,
        r.bytes_before as f64 / r.bytes_after.unwrap_or_default().max(1) as f64
    );
    println!(
        "layers: {} int8, {} float{}",
        r.quantized_layers,
        r.float_layers.len(),
        if r.float_layers.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.float_layers.join(", "))
        }
    );
    println!("per-layer SQNR of the int8 output vs fp32 (dB; 'own' = lost in this layer):");
    for l in &r.layers {
        if l.float {
            println!("  {:>6}          {}", "float", l.name);
        } else {
            println!(
                "  {:>6.1} own {:>4.1}  {}",
                l.sqnr_db, l.own_loss_db, l.name
            );
        }
    }
    if let Some(h) = &r.held_out {
        println!(
            "held-out {} ({} images): argmax agreement with fp32 {:.3} %, logit SQNR {:.1} dB",
            h.data,
            h.images,
            h.argmax_agreement * 100.0,
            h.logit_sqnr_db
        );
        if let (Some(f), Some(q), Some(d)) = (h.miou_fp32, h.miou_int8, h.miou_drop_points) {
            println!(
                "held-out mIoU: fp32 {:.2} %, int8 {:.2} % ({:+.2} points)",
                f * 100.0,
                q * 100.0,
                -d
            );
        }
    }
}
