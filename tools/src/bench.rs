//! `dla-tools bench`: end-to-end latency of a model on this machine: the
//! numbers that decide which board and thread count to use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args as ClapArgs;
use dla_runtime::synth::SynthGenerator;
use dla_runtime::{FrameRef, Model, Segmenter, SegmenterOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `dla-tools bench`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Example:\n  dla-tools bench --model models/dla-tiny-seg.onnx --threads 1 --runs 50"
)]
pub struct Args {
    /// ONNX model to benchmark.
    #[arg(long, short)]
    model: PathBuf,
    /// Inference threads (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Timed runs.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Untimed runs first (caches, thread pools, lazy initialisation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Time every node of tract's optimised plan instead (medians over the
    /// runs): totals per operator and the slowest nodes.
    #[arg(long, conflicts_with = "json")]
    profile: bool,
}

/// Median and 90th percentile of a set of durations.
fn stats(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.9))
}

/// Runs the benchmark and prints medians, p90s and frames per second.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let model = Model::load(&args.model)?;
    let threads = args
        .threads
        .unwrap_or_else(dla_runtime::backend::default_threads);
    if args.profile {
        return profile(&model, threads, args);
    }
    let mut segmenter = Segmenter::new(
        &model,
        SegmenterOptions {
            threads,
            ..Default::default()
        },
    )?;
    let (h, w) = model.input_size();
    // A realistic scene at the model's input size: what a matched camera delivers.
    let scene = SynthGenerator::new(0, w, h).frame(0);
    let frame = FrameRef::new(scene.width, scene.height, &scene.rgb)?;
    for _ in 0..args.warmup {
        segmenter.segment(frame)?;
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.runs as u64).with_style(
            ProgressStyle::with_template("bench {bar:40} {pos}/{len}").expect("static template"),
        )
    };
    let (mut pre, mut infer, mut post, mut total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
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
    if args.json {
        let mut obj = serde_json::json!({
            "model": args.model.display().to_string(),
            "backend": segmenter.backend_name(),
            "threads": threads,
            "input": [h, w],
            "runs": args.runs,
            "fps": fps,
        });
        for (name, (median, p90)) in rows {
            obj[name] = serde_json::json!({"median_ms": median, "p90_ms": p90});
        }
        println!("{obj}");
    } else {
        println!(
            "{} on {} with {threads} thread(s), input {w}x{h}, {} runs",
            model.card().name,
            segmenter.backend_name(),
            args.runs
        );
        println!("{:<6} {:>10} {:>10}", "stage", "median ms", "p90 ms");
        for (name, (median, p90)) in rows {
            println!("{name:<6} {median:>10.2} {p90:>10.2}");
        }
        println!("{fps:.1} frames per second (median)");
    }
    Ok(())
}

/// `--profile`: per-node medians of the optimised tract plan.
fn profile(model: &Model, threads: usize, args: &Args) -> anyhow::Result<()> {
    use dla_runtime::backend::{Backend, TractBackend};
    use dla_runtime::preprocess::Preprocessor;
    use std::collections::BTreeMap;

    let mut backend = TractBackend::new(model, threads.max(1))?;
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
        "{} with {threads} thread(s): {:.2} ms in {} nodes (sum of per-node medians over {} runs)",
        args.model.display(),
        total,
        nodes.len(),
        args.runs
    );
    println!("{:>9} {:>6} {:>5}  operator", "ms", "%", "nodes");
    for (op, (ms, count)) in &by_op {
        println!("{ms:>9.2} {:>5.1}% {count:>5}  {op}", 100.0 * ms / total);
    }
    nodes.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("slowest nodes:");
    for (name, op, ms, info) in nodes.iter().take(25) {
        println!("{ms:>9.2} {:>5.1}%  {op:<24} {name}", 100.0 * ms / total);
        if log::log_enabled!(log::Level::Debug) {
            for line in info {
                println!("                   {line}");
            }
        }
    }
    Ok(())
}
