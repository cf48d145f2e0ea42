//! `dla-tools inspect`: what is in a model file, before you run it. Works on
//! any ONNX file: one without a card shows the defaults it would run with,
//! one that cannot run here shows its graph and the reason.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args as ClapArgs;
use dla_runtime::model::{CardSource, GraphSummary, LoadOptions};
use dla_runtime::Model;

/// Arguments of `dla-tools inspect`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-tools inspect models/dla-tiny-seg.onnx\n  \
    dla-tools inspect models/dla-tiny-seg-int8.onnx --kernels   # what runs each conv on this CPU\n  \
    dla-tools inspect exported.onnx --card exported.card.json --card-json\n  \
    dla-tools inspect my-dynamic.onnx --input-size 640x352   # a model exported with free H/W")]
pub struct Args {
    /// ONNX model to describe (with or without a model card).
    model: PathBuf,
    /// Model card JSON to use instead of the one in the model.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Input size, WxH, to describe a model of free height and width at
    /// (default: its card's, else 512x256).
    #[arg(long, value_parser = dla_runtime::model::parse_input_size)]
    input_size: Option<(u32, u32)>,
    /// Print the full model card as JSON after the summary.
    #[arg(long)]
    card_json: bool,
    /// Also prepare the model for this CPU and list the micro-kernel each
    /// convolution runs on (e.g. NEON `sdot` on a Pi 5, `smull` on a Pi 4).
    #[arg(long)]
    kernels: bool,
}

/// Prints inputs, outputs, card, operator histogram, params and GMACs.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let options = LoadOptions {
        card_file: args.card.clone(),
        input_size: args.input_size,
        ..LoadOptions::default()
    };
    let model = match Model::load_with(&args.model, &options) {
        Ok(model) => model,
        Err(err) => {
            describe_unloadable(&args.model);
            return Err(err).context("it cannot run here");
        }
    };
    let card = model.card();
    let summary = model.summary();
    let (h, w) = model.input_size();
    let [n, c, oh, ow] = model.output_shape();
    // Marks what a card-less model runs with by default.
    let assumed = matches!(model.card_source(), CardSource::Assumed(_));
    let default = if assumed { "  (default)" } else { "" };
    println!("model      {}", args.model.display());
    println!("card       {}", card_source(&model));
    println!(
        "name       {}{}",
        card.name,
        if assumed { "  (the file name)" } else { "" }
    );
    if let Some(arch) = &card.architecture {
        let backbone = card.backbone.as_deref().unwrap_or("?");
        let ratio = card
            .down_ratio
            .map(|r| format!(", output stride {r}"))
            .unwrap_or_default();
        println!("arch       {arch} ({backbone}{ratio})");
    }
    let size_note = match (model.card_source(), model.free_size()) {
        (CardSource::Assumed(a), true) => format!("  ({})", a.size),
        (_, true) => "  (free in the graph; the card's size)".to_string(),
        _ => String::new(),
    };
    println!(
        "input      {} f32 1x3x{h}x{w}{size_note}",
        card.input.name.as_deref().unwrap_or("?"),
    );
    println!(
        "           {} {}, x/{} then mean {:?} std {:?}{default}",
        card.input.layout, card.input.color, card.input.scale, card.input.mean, card.input.std
    );
    println!(
        "output     {} f32 {n}x{c}x{oh}x{ow} logits",
        card.output.name.as_deref().unwrap_or("?")
    );
    println!("opset      {}", summary.opset);
    let nodes: usize = summary.op_histogram.values().sum();
    println!("ops        {nodes} nodes: {}", op_counts(summary));
    println!(
        "params     {} ({:.3} M)",
        summary.params,
        summary.params as f64 / 1e6
    );
    let gmacs = model.gmacs().context("counting multiply-accumulates")?;
    println!("compute    {gmacs:.2} GMAC at 1x3x{h}x{w}");
    let classes_note = match model.card_source() {
        CardSource::Assumed(a) if a.cityscapes => "  (default: Cityscapes, for 19 channels)",
        CardSource::Assumed(_) => "  (default: numbered)",
        _ => "",
    };
    println!("classes    {}{classes_note}", card.classes.len());
    for class in &card.classes {
        let [r, g, b] = class.color;
        println!("  {:>3}  #{r:02x}{g:02x}{b:02x}  {}", class.id, class.name);
    }
    if let Some(miou) = card.metrics.get("heldout_miou").and_then(|v| v.as_f64()) {
        println!("held-out mIoU {miou:.3} (from the model card)");
    }
    if args.kernels {
        let backend = dla_runtime::backend::TractBackend::new(&model, 1)
            .context("preparing the model for this CPU")?;
        for line in crate::kernels::summary(&backend)
            .into_iter()
            .chain(crate::kernels::per_node(&backend))
        {
            println!("{line}");
        }
    }
    if args.card_json {
        println!("{}", serde_json::to_string_pretty(card)?);
    }
    Ok(())
}

/// Where the card came from, in words.
fn card_source(model: &Model) -> String {
    match model.card_source() {
        CardSource::Metadata => "in the ONNX metadata".into(),
        CardSource::Sidecar(p) => format!("sidecar {}", p.display()),
        CardSource::File(p) => format!("{} (--card)", p.display()),
        CardSource::Given => "given".into(),
        CardSource::Assumed(_) => format!(
            "none: the defaults below are assumed; `dla-tools card {}` writes them down",
            model.path().display()
        ),
    }
}

/// What can be said of a model that does not load: its declared inputs and
/// outputs and its operators, read straight from the ONNX file.
fn describe_unloadable(path: &Path) {
    let Some(summary) = std::fs::read(path)
        .ok()
        .and_then(|b| GraphSummary::read(&b))
    else {
        return;
    };
    println!("model      {}", path.display());
    for input in &summary.inputs {
        println!("input      {}", input.describe());
    }
    for output in &summary.outputs {
        println!("output     {}", output.describe());
    }
    println!("opset      {}", summary.opset);
    println!("ops        {}", op_counts(&summary));
    println!("params     {}", summary.params);
}

/// `Conv 46, Relu 43, ...`: how many nodes of each operator.
fn op_counts(summary: &GraphSummary) -> String {
    let ops: Vec<String> = summary
        .op_histogram
        .iter()
        .map(|(op, k)| format!("{op} {k}"))
        .collect();
    ops.join(", ")
}
