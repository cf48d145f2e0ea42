//! `dla-tools eval`: how good a model is on labelled images (mIoU, per-class
//! IoU, pixel accuracy, confusion matrix), and how closely it follows a
//! reference model on the same inputs (argmax agreement, logit error): the
//! numbers that say whether quantising or pruning cost accuracy.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::backend::BackendConfig;
use dla_runtime::metrics::{Agreement, ConfusionMatrix};
use dla_runtime::postprocess::Upsampling;
use dla_runtime::{Model, Segmenter, SegmenterOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::dataset::Dataset;

use dla_runtime::backend::BackendArgs;

/// Arguments of `dla-tools eval`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Data layouts: synth:N[:SEED] (generated scenes), a `dla-tools synth` \
    directory (images/ + labels/), a Cityscapes directory (leftImg8bit/ + gtFine/ with \
    *_gtFine_labelTrainIds.png), or a plain image directory (only with --vs: no labels).\n\n\
    Examples:\n  \
    dla-tools synth --out val --count 50 --seed 2 && dla-tools eval --model models/dla-tiny-seg.onnx --data val\n  \
    dla-tools eval --model models/dla-tiny-seg-int8.onnx --vs models/dla-tiny-seg.onnx --data synth:20:2 --json\n  \
    dla-tools eval --model models/dla-tiny-seg.onnx --backend ort-cpu --vs models/dla-tiny-seg.onnx --data synth:5  # onnxruntime vs tract\n\n\
The --vs reference runs on tract unless --vs-backend says otherwise."
)]
pub struct Args {
    /// ONNX model to evaluate.
    #[arg(long, short)]
    model: PathBuf,
    /// Labelled images (see the layouts below).
    #[arg(long, short)]
    data: String,
    /// Reference model (e.g. the fp32 original of a quantised model): adds argmax
    /// agreement, logit error and the mIoU difference on the same inputs.
    #[arg(long)]
    vs: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Engine for the --vs reference (same threads and ONNX Runtime library).
    #[arg(long, default_value = "tract", value_name = "ENGINE")]
    vs_backend: dla_runtime::backend::BackendKind,
    /// How labels are brought from the model's output size to the label size.
    #[arg(long, default_value = "bilinear")]
    upsampling: Upsampling,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON report instead of tables.
    #[arg(long)]
    json: bool,
}

/// Quality of one model on a data set.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Mean IoU over the classes present in the ground truth.
    pub miou: Option<f64>,
    /// Fraction of labelled pixels right.
    pub pixel_accuracy: Option<f64>,
    /// IoU per class name (`null`: absent from the ground truth).
    pub per_class_iou: Vec<(String, Option<f64>)>,
    /// `[truth][predicted]` pixel counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Everything `eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: String,
    /// The data it ran on.
    pub data: String,
    /// Images evaluated.
    pub images: usize,
    /// Quality against the labels (`None` when the data has none).
    pub quality: Option<Quality>,
    /// The reference model, when one was given.
    pub reference: Option<String>,
    /// The reference's quality on the same labels.
    pub reference_quality: Option<Quality>,
    /// Agreement with the reference.
    pub agreement: Option<Agreement>,
}

impl EvalReport {
    /// mIoU lost against the reference, in points (percent of 1.0).
    pub fn miou_drop_points(&self) -> Option<f64> {
        let q = self.quality.as_ref()?.miou?;
        let r = self.reference_quality.as_ref()?.miou?;
        Some((r - q) * 100.0)
    }
}

fn quality(m: &ConfusionMatrix, model: &Model) -> Quality {
    Quality {
        miou: m.mean_iou(),
        pixel_accuracy: m.pixel_accuracy(),
        per_class_iou: model
            .card()
            .classes
            .iter()
            .enumerate()
            .map(|(c, info)| (info.name.clone(), m.iou(c)))
            .collect(),
        confusion: m.rows(),
    }
}

/// Runs `model` (and `reference`, if any) over `data` on tract and measures them.
pub fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    data: &Dataset,
    options: SegmenterOptions,
    progress: bool,
) -> anyhow::Result<EvalReport> {
    let tract = BackendConfig::tract(options.threads);
    evaluate_on(
        model,
        reference,
        data,
        (&tract, &tract),
        options.upsampling,
        progress,
    )
}

/// Like [`evaluate`], with the model on `engines.0` and the reference on `engines.1`.
pub fn evaluate_on(
    model: &Model,
    reference: Option<&Model>,
    data: &Dataset,
    engines: (&BackendConfig, &BackendConfig),
    upsampling: Upsampling,
    progress: bool,
) -> anyhow::Result<EvalReport> {
    let labelled = data.labelled();
    if !labelled && reference.is_none() {
        bail!(
            "{}: has no label maps (expected images/ + labels/, Cityscapes gtFine/ \
             or synth:N); without labels only --vs comparisons are possible",
            data.spec()
        );
    }
    let classes = model.card().classes.len();
    if let Some(r) = reference {
        if r.card().classes.len() != classes {
            bail!(
                "{} has {} classes but the reference {} has {}",
                model.path().display(),
                classes,
                r.path().display(),
                r.card().classes.len()
            );
        }
    }
    let ignore = model.card().ignore_index;
    let mut segmenter = Segmenter::with_config(model, engines.0, upsampling)
        .with_context(|| format!("--backend {}", engines.0.kind))?;
    let mut ref_segmenter = reference
        .map(|r| Segmenter::with_config(r, engines.1, upsampling))
        .transpose()
        .with_context(|| format!("--vs-backend {}", engines.1.kind))?;
    if let Some(rs) = ref_segmenter.as_mut() {
        // The comparison reads both models' logits on every image.
        rs.keep_logits(true);
        segmenter.keep_logits(true);
    }
    let mut confusion = ConfusionMatrix::new(classes);
    let mut ref_confusion = ConfusionMatrix::new(classes);
    let mut agreement = Agreement::default();
    let mut ref_labels = Vec::new();
    let mut ref_logits = Vec::new();
    let bar = if progress {
        ProgressBar::new(data.len() as u64).with_style(
            ProgressStyle::with_template("eval {bar:40} {pos}/{len} [{elapsed} < {eta}]")
                .expect("static template"),
        )
    } else {
        ProgressBar::hidden()
    };
    for i in 0..data.len() {
        let sample = data.load(i)?;
        let frame = sample.image.frame();
        if let Some(rs) = ref_segmenter.as_mut() {
            let seg = rs.segment(frame)?;
            ref_labels.clear();
            ref_labels.extend_from_slice(seg.labels);
            if let Some(truth) = &sample.labels {
                ref_confusion
                    .add(truth, &ref_labels, ignore)
                    .with_context(|| format!("reference on {}", sample.name))?;
            }
            ref_logits.clear();
            let logits = rs.logits().context("the reference kept no logits")?;
            ref_logits.extend_from_slice(logits.data);
        }
        let seg = segmenter.segment(frame)?;
        if let Some(truth) = &sample.labels {
            confusion
                .add(truth, seg.labels, ignore)
                .with_context(|| sample.name.clone())?;
        }
        if ref_segmenter.is_some() {
            agreement.add_labels(&ref_labels, seg.labels)?;
            agreement
                .add_logits(
                    &ref_logits,
                    segmenter.logits().context("the model kept no logits")?.data,
                )
                .with_context(|| format!("comparing logits on {}", sample.name))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(EvalReport {
        model: model.path().display().to_string(),
        data: data.spec().to_string(),
        images: data.len(),
        quality: labelled.then(|| quality(&confusion, model)),
        reference: reference.map(|r| r.path().display().to_string()),
        reference_quality: (labelled && reference.is_some())
            .then(|| quality(&ref_confusion, model)),
        agreement: reference.is_some().then_some(agreement),
    })
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}", v * 100.0))
}

/// Prints a report as a human reads it.
pub fn print_report(r: &EvalReport) {
    println!("model      {}", r.model);
    println!("data       {} ({} images)", r.data, r.images);
    if let Some(q) = &r.quality {
        print!("mIoU       {} %", pct(q.miou));
        if let Some(rq) = &r.reference_quality {
            print!("   (reference {} %", pct(rq.miou));
            if let Some(d) = r.miou_drop_points() {
                print!(", drop {d:+.2} points");
            }
            print!(")");
        }
        println!();
        println!("pixel acc  {} %", pct(q.pixel_accuracy));
        println!("per-class IoU (%):");
        for (i, (name, iou)) in q.per_class_iou.iter().enumerate() {
            if let Some(iou) = iou {
                let reference = r
                    .reference_quality
                    .as_ref()
                    .and_then(|rq| rq.per_class_iou[i].1)
                    .map(|v| format!("   reference {:6.2}", v * 100.0))
                    .unwrap_or_default();
                println!("  {i:>2} {name:<14} {:6.2}{reference}", iou * 100.0);
            }
        }
    }
    if let Some(a) = &r.agreement {
        println!(
            "vs {}: argmax agreement {:.3} % of {} pixels; logits max |diff| {:.4}, mean |diff| {:.5}, SQNR {:.1} dB",
            r.reference.as_deref().unwrap_or("reference"),
            a.ratio() * 100.0,
            a.pixels,
            a.max_abs_diff,
            a.mean_abs_diff(),
            a.sqnr_db()
        );
    }
}

/// Runs `dla-tools eval`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let reference = args.vs.as_ref().map(Model::load).transpose()?;
    let (h, w) = model.input_size();
    let mut data = Dataset::open(&args.data, (w, h))?;
    if let Some(n) = args.limit {
        if n == 0 {
            bail!("--limit must be at least 1");
        }
        data.truncate(n);
    }
    let engine = args.backend.config(true);
    let reference_engine = BackendConfig {
        kind: args.vs_backend,
        ..engine.clone()
    };
    let report = evaluate_on(
        &model,
        reference.as_ref(),
        &data,
        (&engine, &reference_engine),
        args.upsampling,
        !args.json,
    )?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let (Some(a), Some(obj)) = (&report.agreement, value.as_object_mut()) {
            obj.insert(
                "agreement_summary".into(),
                serde_json::json!({
                    "argmax_agreement": a.ratio(),
                    "logit_mean_abs_diff": a.mean_abs_diff(),
                    "logit_sqnr_db": a.sqnr_db(),
                    "miou_drop_points": report.miou_drop_points(),
                }),
            );
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&report);
    }
    Ok(())
}
