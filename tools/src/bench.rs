//! `dla-tools bench`: end-to-end latency of a model on this machine: the
//! numbers that decide which board and thread count to use.
//!
//! With `--vs ENGINE` it is the measuring stick for our own backend: two
//! engines (by default tract and onnxruntime's CPU provider) run in one
//! process on the same input, interleaved run by run after warm-up, so load
//! from elsewhere on the machine hits both alike; it reports the network time
//! of each, the ratio, and whether both produce the same labels.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::backend::{describe_pinning, Backend, BackendConfig, BackendKind};
use dla_runtime::metrics::Agreement;
use dla_runtime::postprocess::argmax_into;
use dla_runtime::preprocess::Preprocessor;
use dla_runtime::source::Pacer;
use dla_runtime::synth::SynthGenerator;
use dla_runtime::{FrameRef, Model, Segmenter};
use indicatif::{ProgressBar, ProgressStyle};

use dla_runtime::backend::BackendArgs;

/// Arguments of `dla-tools bench`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-tools bench --model models/dla-tiny-seg.onnx --threads 1 --runs 50\n  \
    dla-tools bench --model models/dla-tiny-seg.onnx --threads 2 --vs ort      # tract vs onnxruntime\n  \
    dla-tools bench --model int8-tract.onnx --vs ort --vs-model int8-qdq.onnx  # each engine its own form\n  \
    dla-tools bench --model models/dla-tiny-seg.onnx --backend ort-cpu --ort-lib .venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0\n\n\
With --vs, only the network (backend run) is timed; pre- and post-processing are the same \
code for both engines. Runs alternate A, B, A, B so both see the same machine load. \
onnxruntime's worker threads do not spin between runs there (they would steal the cores \
from the engine being timed); --ort-spin turns spinning back on.")]
pub struct Args {
    /// ONNX model to benchmark.
    #[arg(long, short)]
    model: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    /// Timed runs (per engine with --vs).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Untimed runs first (caches, thread pools, lazy initialisation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Compare with a second engine on the same input: ort (= ort-cpu), ort-cuda,
    /// ort-tensorrt or tract. Same thread count; --backend is the first engine.
    #[arg(long, value_name = "ENGINE")]
    vs: Option<BackendKind>,
    /// With --vs: the model file the second engine runs (default: --model), e.g. a
    /// QDQ int8 model for onnxruntime against our tract-form int8 model.
    #[arg(long, value_name = "MODEL", requires = "vs")]
    vs_model: Option<PathBuf>,
    /// Let onnxruntime's idle threads spin (its default alone; off with --vs).
    #[arg(long)]
    ort_spin: bool,
    /// Frame size of the synthetic scene, WxH (default: the model's input
    /// size). A camera's size, e.g. 1280x720, times the resizing into the
    /// network and the upsampling of its labels too.
    #[arg(long, value_name = "WxH", value_parser = parse_frame, conflicts_with_all = ["vs", "profile"])]
    frame: Option<(u32, u32)>,
    /// Pace the timed frames as a camera does: start one every 1/FPS s and
    /// idle in between, instead of running them back to back. Threads that
    /// went idle can be slow to come back (a VM's idle vCPU, a core that
    /// clocked down), so a paced stream's frames may take longer than
    /// back-to-back ones; this measures what your camera's rate will see.
    #[arg(long, value_name = "FPS", value_parser = parse_fps, conflicts_with_all = ["vs", "profile"])]
    fps: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Time every node of tract's optimised plan instead (medians over the
    /// runs): totals per operator and the slowest nodes.
    #[arg(long, conflicts_with_all = ["json", "vs"])]
    profile: bool,
}

/// `WxH`, both at least 1.
fn parse_frame(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(format!("{text:?} is not WIDTHxHEIGHT, e.g. 1280x720")),
    }
}

/// A frame rate: a finite number of frames per second, at least
/// [`MIN_FPS`] (slower paces would wait minutes between frames).
fn parse_fps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(fps) if fps.is_finite() && fps >= MIN_FPS => Ok(fps),
        _ => Err(format!(
            "{text:?} is not a frame rate: a number of frames per second from {MIN_FPS} up, e.g. 15"
        )),
    }
}

/// The slowest pace `--fps` takes: one frame every 100 s.
const MIN_FPS: f64 = 0.01;

/// Median and 90th percentile of a set of durations, in milliseconds.
fn stats(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.9))
}

fn progress(runs: usize, json: bool) -> ProgressBar {
    if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(runs as u64).with_style(
            ProgressStyle::with_template("bench {bar:40} {pos}/{len}").expect("static template"),
        )
    }
}

/// Runs the benchmark and prints medians, p90s and frames per second.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    match args.vs {
        Some(vs) => run_vs(args, vs),
        None => run_one(args),
    }
}

/// One engine, whole pipeline (pre, network, post).
fn run_one(args: &Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let config = args.backend.config(true);
    let threads = config.threads;
    if args.profile {
        return profile(&model, &config, args);
    }
    let mut segmenter = Segmenter::with_config(&model, &config, Default::default())
        .with_context(|| format!("preparing --backend {}", config.kind))?;
    let (h, w) = model.input_size();
    // A realistic scene, by default at the model's input size: what a matched
    // camera delivers.
    let (fw, fh) = args.frame.unwrap_or((w, h));
    let scene = SynthGenerator::new(0, fw, fh).frame(0);
    let frame = FrameRef::new(scene.width, scene.height, &scene.rgb)?;
    for _ in 0..args.warmup {
        segmenter.segment(frame)?;
    }
    let bar = progress(args.runs, args.json);
    let (mut pre, mut infer, mut post, mut total) = (vec![], vec![], vec![], vec![]);
    let mut pacer = args.fps.map(Pacer::new);
    for _ in 0..args.runs {
        if let Some(pacer) = &mut pacer {
            pacer.wait();
        }
        let t = segmenter.segment(frame)?.timings;
        pre.push(t.pre);
        infer.push(t.infer);
        post.push(t.post);
        total.push(t.total());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = [
        ("pre", stats(&mut pre)),
        ("infer", stats(&mut infer)),
        ("post", stats(&mut post)),
        ("total", stats(&mut total)),
    ];
    let fps = 1e3 / rows[3].1 .0;
    // Where the timed frames' argmax was taken: the engine's own, once the
    // warm-up checked it against ours, or ours.
    let argmax = if segmenter.labels_from_backend() {
        "engine"
    } else {
        "host"
    };
    if args.json {
        let mut obj = serde_json::json!({
            "model": args.model.display().to_string(),
            "backend": segmenter.backend_name(),
            "threads": threads,
            "input": [h, w],
            "frame": [fh, fw],
            "argmax": argmax,
            "runs": args.runs,
            "fps": fps,
            "paced_fps": args.fps,
            "pinned_cpus": segmenter.pinned_cpus(),
        });
        let kernels = crate::kernels::counts(&segmenter.conv_kernels());
        if !kernels.is_empty() {
            obj["cpu"] = dla_runtime::ops::kernels::Cpu::detect().describe().into();
            obj["kernels"] = serde_json::json!(kernels);
        }
        let placement = segmenter.placement();
        if !placement.is_empty() {
            obj["placement"] = placement
                .iter()
                .map(|p| (p.provider.clone(), serde_json::json!(p.nodes)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        for (name, (median, p90)) in rows {
            obj[name] = serde_json::json!({"median_ms": median, "p90_ms": p90});
        }
        println!("{obj}");
    } else {
        let paced = args
            .fps
            .map_or(String::new(), |f| format!(", paced at {f} fps"));
        println!(
            "{} on {} with {threads} thread(s){}, input {w}x{h}, frame {fw}x{fh}, argmax on the {argmax}, {} runs{paced}",
            model.card().name,
            segmenter.backend_description(),
            describe_pinning(segmenter.pinned_cpus()),
            args.runs
        );
        // What this CPU ran: a number means little without it.
        let kernels = crate::kernels::counts(&segmenter.conv_kernels());
        if !kernels.is_empty() {
            let on: Vec<String> = kernels.iter().map(|(k, n)| format!("{n} on {k}")).collect();
            println!(
                "convolutions: {} ({})",
                on.join(", "),
                dla_runtime::ops::kernels::Cpu::detect().describe()
            );
        }
        println!("{:<6} {:>10} {:>10}", "stage", "median ms", "p90 ms");
        for (name, (median, p90)) in rows {
            println!("{name:<6} {median:>10.2} {p90:>10.2}");
        }
        println!("{fps:.1} frames per second (median)");
    }
    Ok(())
}

/// `--profile`: per-node medians of the optimised tract plan.
fn profile(model: &Model, config: &BackendConfig, args: &Args) -> anyhow::Result<()> {
    use dla_runtime::backend::TractBackend;
    use std::collections::BTreeMap;

    let threads = config.threads;
    let mut backend = TractBackend::with_pinning(model, threads, config.pinning)?;
    let (h, w) = model.input_size();
    let scene = SynthGenerator::new(0, w, h).frame(0);
    let frame = FrameRef::new(scene.width, scene.height, &scene.rgb)?;
    Preprocessor::new(&model.card().input).run(frame, backend.input_mut())?;
    for _ in 0..args.warmup {
        backend.run()?;
    }
    let mut per_node: Vec<(String, String, Vec<Duration>, Vec<String>)> = Vec::new();
    for run in 0..args.runs {
        for (i, t) in backend.profile()?.into_iter().enumerate() {
            if run == 0 {
                per_node.push((t.name, t.op, vec![t.time], t.info));
            } else if let Some(slot) = per_node.get_mut(i) {
                slot.2.push(t.time);
            }
        }
    }
    let mut nodes: Vec<(String, String, f64, Vec<String>)> = per_node
        .into_iter()
        .map(|(name, op, mut times, info)| (name, op, stats(&mut times).0, info))
        .collect();
    let total: f64 = nodes.iter().map(|n| n.2).sum();
    let mut by_op: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (_, op, ms, _) in &nodes {
        let e = by_op.entry(op.clone()).or_default();
        e.0 += ms;
        e.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!(
        "{} with {threads} thread(s){}: {:.2} ms in {} nodes (sum of per-node medians over {} runs)",
        args.model.display(),
        describe_pinning(backend.pinned_cpus()),
        total,
        nodes.len(),
        args.runs
    );
    for line in crate::kernels::summary(&backend) {
        println!("{line}");
    }
    println!("{:>9} {:>6} {:>5}  operator", "ms", "%", "nodes");
    for (op, (ms, count)) in &by_op {
        println!("{ms:>9.2} {:>5.1}% {count:>5}  {op}", 100.0 * ms / total);
    }
    nodes.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("slowest nodes:");
    for (name, op, ms, info) in nodes.iter().take(25) {
        println!("{ms:>9.2} {:>5.1}%  {op:<24} {name}", 100.0 * ms / total);
        // Our operators' first line says what runs there (shape, kernel);
        // tract's own descriptions are long, so only at debug level.
        let ours = op.starts_with("Int8Conv") || op.starts_with("F32Conv");
        let shown = if log::log_enabled!(log::Level::Debug) {
            info.len()
        } else {
            usize::from(ours)
        };
        for line in info.iter().take(shown) {
            println!("                   {line}");
        }
    }
    Ok(())
}

/// One engine of a `--vs` comparison.
struct Side {
    model: Model,
    backend: Box<dyn Backend>,
    input: Vec<f32>,
    times: Vec<Duration>,
}

impl Side {
    fn new(path: &PathBuf, config: &BackendConfig, frame: FrameRef<'_>) -> anyhow::Result<Side> {
        let model = Model::load(path)?;
        let mut backend = config
            .build(&model)
            .with_context(|| format!("preparing {} for {}", config.kind, path.display()))?;
        let mut input = vec![0.0; backend.input_mut().len()];
        Preprocessor::new(&model.card().input).run(frame, &mut input)?;
        Ok(Side {
            model,
            backend,
            input,
            times: Vec::new(),
        })
    }

    /// Refills the input (untimed: the engine may reuse its buffer), then times one run.
    fn run(&mut self) -> anyhow::Result<Duration> {
        self.backend.input_mut().copy_from_slice(&self.input);
        let t = Instant::now();
        self.backend.run()?;
        Ok(t.elapsed())
    }
}

/// Two engines, interleaved, network time only.
fn run_vs(args: &Args, vs: BackendKind) -> anyhow::Result<()> {
    let ours_config = args.backend.config(args.ort_spin);
    let theirs_config = BackendConfig {
        kind: vs,
        ..ours_config.clone()
    };
    let threads = ours_config.threads;
    let vs_path = args.vs_model.clone().unwrap_or_else(|| args.model.clone());
    // The input comes from the first model's size; the second must match.
    let first = Model::load(&args.model)?;
    let (h, w) = first.input_size();
    drop(first);
    let scene = SynthGenerator::new(0, w, h).frame(0);
    let frame = FrameRef::new(scene.width, scene.height, &scene.rgb)?;
    let mut a = Side::new(&args.model, &ours_config, frame)?;
    let mut b = Side::new(&vs_path, &theirs_config, frame)?;
    if b.model.input_size() != (h, w) {
        let (bh, bw) = b.model.input_size();
        bail!(
            "{} takes {w}x{h} but {} takes {bw}x{bh}: --vs needs models with the same input size",
            args.model.display(),
            vs_path.display()
        );
    }
    for _ in 0..args.warmup {
        a.run()?;
        b.run()?;
    }
    let bar = progress(args.runs, args.json);
    for _ in 0..args.runs {
        let ta = a.run()?;
        a.times.push(ta);
        let tb = b.run()?;
        b.times.push(tb);
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Sanity: both engines label the (same) input alike.
    let (la, lb) = (a.backend.logits(), b.backend.logits());
    if (la.classes, la.height, la.width) != (lb.classes, lb.height, lb.width) {
        bail!(
            "outputs differ in shape: {}x{}x{} vs {}x{}x{}",
            la.classes,
            la.height,
            la.width,
            lb.classes,
            lb.height,
            lb.width
        );
    }
    let n = la.height * la.width;
    let (mut best, mut labels_a, mut labels_b) = (vec![0.0; n], vec![0u8; n], vec![0u8; n]);
    argmax_into(la, &mut best, &mut labels_a);
    argmax_into(lb, &mut best, &mut labels_b);
    let mut agreement = Agreement::default();
    agreement.add_labels(&labels_a, &labels_b)?;
    agreement.add_logits(la.data, lb.data)?;

    let (a_med, a_p90) = stats(&mut a.times);
    let (b_med, b_p90) = stats(&mut b.times);
    let (a_name, b_name) = (a.backend.name(), b.backend.name());
    let ort = ort_description();
    if args.json {
        let obj = serde_json::json!({
            "model": args.model.display().to_string(),
            "vs_model": vs_path.display().to_string(),
            "threads": threads,
            "input": [h, w],
            "runs": args.runs,
            "warmup": args.warmup,
            "timed": "network",
            "ours": {"backend": a_name, "median_ms": a_med, "p90_ms": a_p90},
            "theirs": {"backend": b_name, "median_ms": b_med, "p90_ms": b_p90},
            "ratio": a_med / b_med,
            "ratio_p90": a_p90 / b_p90,
            "argmax_agreement": agreement.ratio(),
            "logit_max_abs_diff": agreement.max_abs_diff,
            "onnxruntime": ort,
        });
        println!("{obj}");
    } else {
        println!(
            "{} ({}x{}), {threads} thread(s), {} interleaved runs after {} warm-up, network time",
            a.model.card().name,
            w,
            h,
            args.runs,
            args.warmup
        );
        if let Some(ort) = &ort {
            println!("onnxruntime: {ort}");
        }
        println!(
            "{:<13} {:>10} {:>10}  model",
            "engine", "median ms", "p90 ms"
        );
        println!(
            "{a_name:<13} {a_med:>10.2} {a_p90:>10.2}  {}",
            args.model.display()
        );
        println!(
            "{b_name:<13} {b_med:>10.2} {b_p90:>10.2}  {}",
            vs_path.display()
        );
        println!(
            "ratio {a_name} / {b_name}: {:.2}x (median), {:.2}x (p90)",
            a_med / b_med,
            a_p90 / b_p90
        );
        println!(
            "argmax agreement {:.4} % of {} pixels; logits max |diff| {:.2e}",
            agreement.ratio() * 100.0,
            agreement.pixels,
            agreement.max_abs_diff
        );
    }
    Ok(())
}

/// Which onnxruntime this process loaded, if any.
fn ort_description() -> Option<String> {
    #[cfg(feature = "ort")]
    {
        dla_runtime::backend::loaded_ort()
            .map(|(path, info)| format!("{} ({})", info.trim(), path.display()))
    }
    #[cfg(not(feature = "ort"))]
    None
}
